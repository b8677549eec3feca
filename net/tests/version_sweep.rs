//! Every served API at every served version, against an in-process broker: a default request
//! of that version must get a well-formed response of that version. This catches a handler
//! setting a field that does not exist in an old version (the encoder refuses it, and the
//! client would get no answer) and a decoder or header mismatch at any version.

mod common;

use common::{round_trip, InProcessBroker};
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use ringlog_net::apis::SERVED_APIS;

/// A request of `key` naming the sweep topic (partition 0) where the API takes topics, so the
/// per-partition parts of every response are encoded too.
fn request_for(key: ApiKey, version: i16, topic_id: u128) -> RequestKind {
    use kafka_protocol::messages::*;
    let topic = || TopicName(StrBytes::from_static_str(TOPIC));
    let name = || StrBytes::from_static_str(TOPIC);
    let group = || GroupId(StrBytes::from_static_str(GROUP));
    match key {
        ApiKey::Produce => {
            RequestKind::Produce(ProduceRequest::default().with_acks(1).with_topic_data(vec![
                produce_request::TopicProduceData::default()
                    .with_name(topic())
                    .with_topic_id(uuid::Uuid::from_u128(topic_id))
                    .with_partition_data(vec![produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(None)]),
            ]))
        }
        ApiKey::Fetch => {
            RequestKind::Fetch(FetchRequest::default().with_max_wait_ms(0).with_topics(
                vec![fetch_request::FetchTopic::default()
                .with_topic(topic())
                .with_topic_id(uuid::Uuid::from_u128(topic_id))
                .with_partitions(vec![fetch_request::FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)])],
            ))
        }
        ApiKey::ListOffsets => RequestKind::ListOffsets(ListOffsetsRequest::default().with_topics(
            vec![list_offsets_request::ListOffsetsTopic::default()
                .with_name(topic())
                .with_partitions(vec![list_offsets_request::ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-2)])],
        )),
        ApiKey::Metadata => {
            RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(topic())),
            ])))
        }
        ApiKey::ApiVersions => RequestKind::ApiVersions(
            ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("sweep"))
                .with_client_software_version(StrBytes::from_static_str("1")),
        ),
        ApiKey::CreateTopics => RequestKind::CreateTopics(
            CreateTopicsRequest::default()
                .with_validate_only(true)
                .with_topics(vec![create_topics_request::CreatableTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("sweep-validate")))
                    .with_num_partitions(1)
                    .with_replication_factor(1)]),
        ),
        ApiKey::DeleteTopics => RequestKind::DeleteTopics(DeleteTopicsRequest::default()),
        ApiKey::DeleteRecords => {
            RequestKind::DeleteRecords(DeleteRecordsRequest::default().with_topics(
                vec![delete_records_request::DeleteRecordsTopic::default()
                .with_name(topic())
                .with_partitions(vec![delete_records_request::DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(0)])],
            ))
        }
        ApiKey::InitProducerId => RequestKind::InitProducerId(
            InitProducerIdRequest::default()
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        ),
        ApiKey::OffsetForLeaderEpoch => RequestKind::OffsetForLeaderEpoch(
            OffsetForLeaderEpochRequest::default().with_topics(vec![
                offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                    .with_topic(topic())
                    .with_partitions(vec![
                        offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                            .with_partition(0)
                            .with_current_leader_epoch(-1)
                            .with_leader_epoch(0),
                    ]),
            ]),
        ),
        ApiKey::DescribeConfigs => {
            RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(name())
                    .with_configuration_keys(None),
            ]))
        }
        ApiKey::AlterConfigs => RequestKind::AlterConfigs(
            AlterConfigsRequest::default()
                .with_validate_only(true)
                .with_resources(vec![alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(name())]),
        ),
        ApiKey::DescribeLogDirs => {
            RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default().with_topics(None))
        }
        ApiKey::CreatePartitions => {
            RequestKind::CreatePartitions(CreatePartitionsRequest::default())
        }
        ApiKey::IncrementalAlterConfigs => RequestKind::IncrementalAlterConfigs(
            IncrementalAlterConfigsRequest::default()
                .with_validate_only(true)
                .with_resources(vec![
                    incremental_alter_configs_request::AlterConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(name()),
                ]),
        ),
        ApiKey::DescribeCluster => RequestKind::DescribeCluster(DescribeClusterRequest::default()),
        ApiKey::ElectLeaders => RequestKind::ElectLeaders(
            ElectLeadersRequest::default().with_topic_partitions(Some(vec![
                elect_leaders_request::TopicPartitions::default()
                    .with_topic(topic())
                    .with_partitions(vec![0]),
            ])),
        ),
        ApiKey::FindCoordinator => {
            let request = FindCoordinatorRequest::default();
            RequestKind::FindCoordinator(if version < 4 {
                request.with_key(StrBytes::from_static_str(GROUP))
            } else {
                request.with_coordinator_keys(vec![StrBytes::from_static_str(GROUP)])
            })
        }
        // An unknown member id is answered at once (a new member would be held for the initial
        // rebalance delay).
        ApiKey::JoinGroup => RequestKind::JoinGroup(
            JoinGroupRequest::default()
                .with_group_id(group())
                .with_session_timeout_ms(10_000)
                .with_member_id(StrBytes::from_static_str(UNKNOWN_MEMBER))
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
                )
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(bytes::Bytes::from_static(&[0, 0, 0, 0, 0, 0]))]),
        ),
        ApiKey::SyncGroup => RequestKind::SyncGroup(
            SyncGroupRequest::default()
                .with_group_id(group())
                .with_generation_id(1)
                .with_member_id(StrBytes::from_static_str(UNKNOWN_MEMBER)),
        ),
        ApiKey::Heartbeat => RequestKind::Heartbeat(
            HeartbeatRequest::default()
                .with_group_id(group())
                .with_generation_id(1)
                .with_member_id(StrBytes::from_static_str(UNKNOWN_MEMBER)),
        ),
        ApiKey::LeaveGroup => {
            let request = LeaveGroupRequest::default().with_group_id(group());
            RequestKind::LeaveGroup(if version < 3 {
                request.with_member_id(StrBytes::from_static_str(UNKNOWN_MEMBER))
            } else {
                request.with_members(vec![leave_group_request::MemberIdentity::default()
                    .with_member_id(StrBytes::from_static_str(UNKNOWN_MEMBER))])
            })
        }
        // A simple commit (no generation, no member), which an Empty group takes.
        ApiKey::OffsetCommit => RequestKind::OffsetCommit(
            OffsetCommitRequest::default()
                .with_group_id(group())
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(0),
                        ]),
                ]),
        ),
        ApiKey::OffsetFetch => {
            let request = OffsetFetchRequest::default();
            RequestKind::OffsetFetch(if version < 8 {
                request.with_group_id(group()).with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_name(topic())
                        .with_partition_indexes(vec![0]),
                ]))
            } else {
                request.with_groups(vec![
                    offset_fetch_request::OffsetFetchRequestGroup::default()
                        .with_group_id(group())
                        .with_topics(None),
                ])
            })
        }
        ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
        ApiKey::DescribeGroups => {
            RequestKind::DescribeGroups(DescribeGroupsRequest::default().with_groups(vec![group()]))
        }
        ApiKey::DeleteGroups => RequestKind::DeleteGroups(
            DeleteGroupsRequest::default()
                .with_groups_names(vec![GroupId(StrBytes::from_static_str("sweep-missing"))]),
        ),
        ApiKey::OffsetDelete => RequestKind::OffsetDelete(
            OffsetDeleteRequest::default()
                .with_group_id(group())
                .with_topics(vec![
                    offset_delete_request::OffsetDeleteRequestTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![
                            offset_delete_request::OffsetDeleteRequestPartition::default()
                                .with_partition_index(0),
                        ]),
                ]),
        ),
        // A join of the new protocol: every version joins as its own member.
        ApiKey::ConsumerGroupHeartbeat => RequestKind::ConsumerGroupHeartbeat(
            ConsumerGroupHeartbeatRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str(CONSUMER_GROUP)))
                .with_member_id(StrBytes::from_string(format!("sweep-member-v{version}")))
                .with_member_epoch(0)
                .with_rebalance_timeout_ms(30_000)
                .with_subscribed_topic_names(Some(vec![topic()]))
                .with_topic_partitions(Some(Vec::new())),
        ),
        ApiKey::ConsumerGroupDescribe => RequestKind::ConsumerGroupDescribe(
            ConsumerGroupDescribeRequest::default().with_group_ids(vec![
                GroupId(StrBytes::from_static_str(CONSUMER_GROUP)),
                group(),
            ]),
        ),
        other => panic!("no request for {other:?}"),
    }
}

/// The topic every request names.
const TOPIC: &str = "sweep";

/// The consumer group every group request names.
const GROUP: &str = "sweep-group";

/// The consumer-protocol group (KIP-848) the new group APIs name.
const CONSUMER_GROUP: &str = "sweep-consumer-group";

/// A member id the group never gave out.
const UNKNOWN_MEMBER: &str = "sweep-unknown-member";

#[test]
fn every_served_api_answers_at_every_served_version() {
    let data = tempfile::tempdir().expect("tempdir");
    let broker = InProcessBroker::start(data.path());
    let mut stream = broker.connect();
    let create = RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![
            kafka_protocol::messages::create_topics_request::CreatableTopic::default()
                .with_name(kafka_protocol::messages::TopicName(StrBytes::from_static_str(TOPIC)))
                .with_num_partitions(1)
                .with_replication_factor(1),
        ]));
    let topic_id = match round_trip(&mut stream, create, ApiKey::CreateTopics, 7, 0) {
        ResponseKind::CreateTopics(response) => {
            assert_eq!(response.topics[0].error_code, 0, "{response:?}");
            response.topics[0].topic_id.as_u128()
        }
        other => panic!("{other:?}"),
    };
    let mut correlation_id = 0;
    let mut answered = 0;
    for api in SERVED_APIS {
        for version in api.min_version..=api.max_version {
            correlation_id += 1;
            let request = request_for(api.key, version, topic_id);
            round_trip(&mut stream, request, api.key, version, correlation_id);
            answered += 1;
        }
    }
    println!("{answered} API versions answered");
    drop(stream);
    broker.stop();
}
