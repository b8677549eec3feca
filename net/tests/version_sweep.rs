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
fn request_for(key: ApiKey, topic_id: u128) -> RequestKind {
    use kafka_protocol::messages::*;
    let topic = || TopicName(StrBytes::from_static_str(TOPIC));
    let name = || StrBytes::from_static_str(TOPIC);
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
        other => panic!("no request for {other:?}"),
    }
}

/// The topic every request names.
const TOPIC: &str = "sweep";

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
            let request = request_for(api.key, topic_id);
            round_trip(&mut stream, request, api.key, version, correlation_id);
            answered += 1;
        }
    }
    println!("{answered} API versions answered");
    drop(stream);
    broker.stop();
}
