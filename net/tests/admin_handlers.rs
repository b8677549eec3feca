//! The admin APIs against an in-process broker over loopback: CreatePartitions,
//! DescribeConfigs, AlterConfigs, IncrementalAlterConfigs, DeleteRecords,
//! OffsetForLeaderEpoch and DescribeLogDirs, each with the Kafka error codes its failure cases
//! must give.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafka_protocol::ResponseError;
use ringlog_net::{BrokerConfig, Shutdown};

/// How long the broker may take to start accepting.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one request may take to be answered.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

const TOPIC: &str = "admin";
const NODE_ID: i32 = 1;

/// Kafka's resource types and config sources, as the responses carry them.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// An in-process broker on a loopback port the kernel picked and a temporary data directory,
/// stopped cleanly when dropped.
struct Broker {
    _data: tempfile::TempDir,
    running: Option<ringlog_net::server::Running>,
    stream: TcpStream,
    correlation_id: i32,
}

impl Broker {
    fn start() -> Broker {
        let data = tempfile::tempdir().expect("tempdir");
        let mut config = BrokerConfig::new(data.path());
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.cores = Some(2);
        config.node_id = NODE_ID;
        config.topic_defaults = vec![("segment.bytes".into(), "1048576".into())];
        let running = ringlog_net::server::start_within(config, Shutdown::new(), START_TIMEOUT)
            .expect("the broker starts");
        let stream = TcpStream::connect(running.local_addr()).expect("connect to the broker");
        stream
            .set_read_timeout(Some(RESPONSE_TIMEOUT))
            .expect("read timeout");
        Broker {
            _data: data,
            running: Some(running),
            stream,
            correlation_id: 0,
        }
    }

    fn call(&mut self, request: RequestKind, version: i16) -> ResponseKind {
        let key = api_key(&request);
        self.correlation_id += 1;
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("admin-test")))
            .encode(&mut frame, key.request_header_version(version))
            .expect("header encodes");
        request
            .encode(&mut frame, version)
            .expect("request encodes");
        let size = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        self.stream.write_all(&frame).expect("write");
        let mut prefix = [0_u8; 4];
        self.stream
            .read_exact(&mut prefix)
            .unwrap_or_else(|error| panic!("{key:?} v{version}: no response ({error})"));
        let mut body = vec![0_u8; i32::from_be_bytes(prefix) as usize];
        self.stream.read_exact(&mut body).expect("response body");
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, key.response_header_version(version))
            .expect("response header");
        assert_eq!(header.correlation_id, self.correlation_id);
        let response = ResponseKind::decode(key, &mut body, version).expect("response decodes");
        assert_eq!(body.remaining(), 0, "{key:?} v{version}: trailing bytes");
        response
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some(running) = self.running.take() {
            let outcome = running.stop();
            if !thread::panicking() {
                outcome.expect("broker stopped cleanly");
            }
        }
    }
}

fn api_key(request: &RequestKind) -> ApiKey {
    match request {
        RequestKind::CreateTopics(_) => ApiKey::CreateTopics,
        RequestKind::Produce(_) => ApiKey::Produce,
        RequestKind::Metadata(_) => ApiKey::Metadata,
        RequestKind::CreatePartitions(_) => ApiKey::CreatePartitions,
        RequestKind::DescribeConfigs(_) => ApiKey::DescribeConfigs,
        RequestKind::AlterConfigs(_) => ApiKey::AlterConfigs,
        RequestKind::IncrementalAlterConfigs(_) => ApiKey::IncrementalAlterConfigs,
        RequestKind::DeleteRecords(_) => ApiKey::DeleteRecords,
        RequestKind::OffsetForLeaderEpoch(_) => ApiKey::OffsetForLeaderEpoch,
        RequestKind::DescribeLogDirs(_) => ApiKey::DescribeLogDirs,
        other => panic!("no key for {other:?}"),
    }
}

fn name(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn topic_name(value: &str) -> TopicName {
    TopicName(name(value))
}

fn code(error: ResponseError) -> i16 {
    error.code()
}

fn create_topic(broker: &mut Broker, topic: &str, partitions: i32) {
    let request = CreateTopicsRequest::default().with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(topic_name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(1),
    ]);
    match broker.call(RequestKind::CreateTopics(request), 7) {
        ResponseKind::CreateTopics(response) => {
            assert_eq!(response.topics[0].error_code, 0, "{response:?}")
        }
        other => panic!("{other:?}"),
    }
}

fn produce(broker: &mut Broker, topic: &str, partition: i32, count: usize) {
    let records: Vec<Record> = (0..count)
        .map(|index| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: index as i64,
            sequence: -1,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::from(format!("record {index}"))),
            headers: IndexMap::new(),
        })
        .collect();
    let mut batch = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut batch,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("batch encodes");
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(batch.freeze())),
            ])]);
    match broker.call(RequestKind::Produce(request), 9) {
        ResponseKind::Produce(response) => {
            let partition = &response.responses[0].partition_responses[0];
            assert_eq!(partition.error_code, 0, "{response:?}");
        }
        other => panic!("{other:?}"),
    }
}

fn partition_count(broker: &mut Broker, topic: &str) -> usize {
    let request = MetadataRequest::default().with_topics(Some(vec![
        metadata_request::MetadataRequestTopic::default().with_name(Some(topic_name(topic))),
    ]));
    match broker.call(RequestKind::Metadata(request), 12) {
        ResponseKind::Metadata(response) => response.topics[0].partitions.len(),
        other => panic!("{other:?}"),
    }
}

fn create_partitions(
    broker: &mut Broker,
    topics: Vec<create_partitions_request::CreatePartitionsTopic>,
    validate_only: bool,
) -> Vec<(String, i16, Option<String>)> {
    let request = CreatePartitionsRequest::default()
        .with_topics(topics)
        .with_timeout_ms(5000)
        .with_validate_only(validate_only);
    match broker.call(RequestKind::CreatePartitions(request), 3) {
        ResponseKind::CreatePartitions(response) => response
            .results
            .into_iter()
            .map(|result| {
                (
                    result.name.0.to_string(),
                    result.error_code,
                    result.error_message.map(|message| message.to_string()),
                )
            })
            .collect(),
        other => panic!("{other:?}"),
    }
}

fn grow(
    topic: &str,
    count: i32,
    brokers: Option<Vec<Vec<i32>>>,
) -> create_partitions_request::CreatePartitionsTopic {
    create_partitions_request::CreatePartitionsTopic::default()
        .with_name(topic_name(topic))
        .with_count(count)
        .with_assignments(brokers.map(|assignments| {
            assignments
                .into_iter()
                .map(|ids| {
                    create_partitions_request::CreatePartitionsAssignment::default()
                        .with_broker_ids(ids.into_iter().map(BrokerId).collect())
                })
                .collect()
        }))
}

#[test]
fn create_partitions_grows_topics_and_refuses_what_kafka_refuses() {
    let mut broker = Broker::start();
    create_topic(&mut broker, TOPIC, 1);
    create_topic(&mut broker, "other", 1);

    let results = create_partitions(&mut broker, vec![grow(TOPIC, 3, None)], true);
    assert_eq!(results[0].1, 0, "{results:?}");
    assert_eq!(
        partition_count(&mut broker, TOPIC),
        1,
        "validate_only changes nothing"
    );

    let results = create_partitions(&mut broker, vec![grow(TOPIC, 3, None)], false);
    assert_eq!(results[0].1, 0, "{results:?}");
    assert_eq!(results[0].2, None);
    assert_eq!(partition_count(&mut broker, TOPIC), 3);
    produce(&mut broker, TOPIC, 2, 1);

    let results = create_partitions(
        &mut broker,
        vec![
            grow(TOPIC, 2, None),
            grow("missing", 4, None),
            grow("other", 3, Some(vec![vec![NODE_ID], vec![NODE_ID]])),
            grow(TOPIC, 5, Some(vec![vec![NODE_ID], vec![NODE_ID + 1]])),
            grow(TOPIC, 5, Some(vec![vec![NODE_ID]])),
        ],
        false,
    );
    let codes: Vec<i16> = results.iter().map(|(_, code, _)| *code).collect();
    assert_eq!(
        codes,
        vec![
            code(ResponseError::InvalidRequest),
            code(ResponseError::UnknownTopicOrPartition),
            0,
            code(ResponseError::InvalidRequest),
            code(ResponseError::InvalidRequest),
        ],
        "{results:?}"
    );
    assert!(results
        .iter()
        .all(|(_, code, message)| (*code == 0) == message.is_none()));
    assert_eq!(partition_count(&mut broker, "other"), 3);

    let results = create_partitions(
        &mut broker,
        vec![
            grow(TOPIC, 2, None),
            grow("other", 5, Some(vec![vec![NODE_ID], vec![NODE_ID + 1]])),
            grow("other", 5, Some(vec![vec![NODE_ID]])),
        ],
        false,
    );
    let codes: Vec<i16> = results.iter().map(|(_, code, _)| *code).collect();
    assert_eq!(
        codes,
        vec![
            code(ResponseError::InvalidPartitions),
            code(ResponseError::InvalidRequest),
            code(ResponseError::InvalidRequest),
        ],
        "{results:?}"
    );
    let results = create_partitions(
        &mut broker,
        vec![grow(
            "other",
            5,
            Some(vec![vec![NODE_ID], vec![NODE_ID + 1]]),
        )],
        false,
    );
    assert_eq!(
        results[0].1,
        code(ResponseError::InvalidReplicaAssignment),
        "{results:?}"
    );
    let results = create_partitions(
        &mut broker,
        vec![grow("other", 5, Some(vec![vec![NODE_ID]]))],
        false,
    );
    assert_eq!(
        results[0].1,
        code(ResponseError::InvalidReplicaAssignment),
        "{results:?}"
    );
    assert_eq!(partition_count(&mut broker, "other"), 3);
}

fn describe(
    broker: &mut Broker,
    resource_type: i8,
    resource: &str,
    keys: Option<Vec<&str>>,
    version: i16,
) -> describe_configs_response::DescribeConfigsResult {
    let request = DescribeConfigsRequest::default()
        .with_include_synonyms(true)
        .with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(name(resource))
                .with_configuration_keys(keys.map(|keys| keys.into_iter().map(name).collect())),
        ]);
    match broker.call(RequestKind::DescribeConfigs(request), version) {
        ResponseKind::DescribeConfigs(mut response) => response.results.remove(0),
        other => panic!("{other:?}"),
    }
}

/// (value, source) of config `key` of the topic.
fn topic_config(broker: &mut Broker, key: &str) -> (String, i8) {
    let result = describe(broker, RESOURCE_TOPIC, TOPIC, Some(vec![key]), 4);
    assert_eq!(result.error_code, 0, "{result:?}");
    assert_eq!(result.configs.len(), 1, "{result:?}");
    let config = &result.configs[0];
    (
        config
            .value
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        config.config_source,
    )
}

#[test]
fn describe_configs_reports_values_sources_and_types() {
    let mut broker = Broker::start();
    let request = CreateTopicsRequest::default().with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(topic_name(TOPIC))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(vec![create_topics_request::CreatableTopicConfig::default()
                .with_name(name("retention.ms"))
                .with_value(Some(name("60000")))]),
    ]);
    broker.call(RequestKind::CreateTopics(request), 7);

    for version in 1..=4 {
        let result = describe(&mut broker, RESOURCE_TOPIC, TOPIC, None, version);
        assert_eq!(result.error_code, 0, "v{version} {result:?}");
        assert_eq!(result.configs.len(), 12, "v{version}: every topic config");
    }
    let result = describe(&mut broker, RESOURCE_TOPIC, TOPIC, None, 4);
    let find = |key: &str| {
        result
            .configs
            .iter()
            .find(|config| config.name.as_str() == key)
            .unwrap_or_else(|| panic!("{key} listed"))
    };
    let retention = find("retention.ms");
    assert_eq!(retention.value.as_deref(), Some("60000"));
    assert_eq!(retention.config_source, SOURCE_TOPIC);
    assert_eq!(retention.config_type, 5, "LONG");
    assert_eq!(retention.synonyms.len(), 2, "{retention:?}");
    assert_eq!(retention.synonyms[1].name.as_str(), "log.retention.ms");
    let segment = find("segment.bytes");
    assert_eq!(segment.value.as_deref(), Some("1048576"));
    assert_eq!(segment.config_source, SOURCE_STATIC_BROKER);
    assert_eq!(segment.config_type, 3, "INT");
    let policy = find("cleanup.policy");
    assert_eq!(policy.config_source, SOURCE_DEFAULT);
    assert_eq!(policy.config_type, 7, "LIST");
    assert!(result
        .configs
        .iter()
        .all(|config| !config.read_only && !config.is_sensitive));

    let filtered = describe(
        &mut broker,
        RESOURCE_TOPIC,
        TOPIC,
        Some(vec!["segment.ms", "nope"]),
        4,
    );
    assert_eq!(filtered.configs.len(), 1);

    let missing = describe(&mut broker, RESOURCE_TOPIC, "missing", None, 4);
    assert_eq!(
        missing.error_code,
        code(ResponseError::UnknownTopicOrPartition)
    );
    assert!(missing.error_message.is_some());

    for resource in [NODE_ID.to_string(), String::new()] {
        let result = describe(&mut broker, RESOURCE_BROKER, &resource, None, 4);
        assert_eq!(result.error_code, 0, "{result:?}");
        let node = result
            .configs
            .iter()
            .find(|config| config.name.as_str() == "node.id")
            .expect("node.id listed");
        assert_eq!(node.value.as_deref(), Some("1"));
        assert_eq!(node.config_source, SOURCE_STATIC_BROKER);
        assert!(node.read_only);
    }
    let other_broker = describe(&mut broker, RESOURCE_BROKER, "7", None, 4);
    assert_eq!(other_broker.error_code, code(ResponseError::InvalidRequest));
    let group = describe(&mut broker, 3, "group", None, 4);
    assert_eq!(group.error_code, code(ResponseError::InvalidRequest));
}

fn alter(
    broker: &mut Broker,
    resource_type: i8,
    resource: &str,
    configs: &[(&str, Option<&str>)],
    validate_only: bool,
) -> (i16, Option<String>) {
    let request = AlterConfigsRequest::default()
        .with_validate_only(validate_only)
        .with_resources(vec![alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(name(resource))
            .with_configs(
                configs
                    .iter()
                    .map(|(key, value)| {
                        alter_configs_request::AlterableConfig::default()
                            .with_name(name(key))
                            .with_value(value.map(name))
                    })
                    .collect(),
            )]);
    match broker.call(RequestKind::AlterConfigs(request), 2) {
        ResponseKind::AlterConfigs(response) => {
            let result = &response.responses[0];
            assert_eq!(result.resource_name.as_str(), resource);
            assert_eq!(result.resource_type, resource_type);
            (
                result.error_code,
                result.error_message.as_ref().map(ToString::to_string),
            )
        }
        other => panic!("{other:?}"),
    }
}

fn incremental(
    broker: &mut Broker,
    resource_type: i8,
    resource: &str,
    configs: &[(&str, i8, Option<&str>)],
) -> (i16, Option<String>) {
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        incremental_alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(name(resource))
            .with_configs(
                configs
                    .iter()
                    .map(|(key, operation, value)| {
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(name(key))
                            .with_config_operation(*operation)
                            .with_value(value.map(name))
                    })
                    .collect(),
            ),
    ]);
    match broker.call(RequestKind::IncrementalAlterConfigs(request), 1) {
        ResponseKind::IncrementalAlterConfigs(response) => {
            let result = &response.responses[0];
            (
                result.error_code,
                result.error_message.as_ref().map(ToString::to_string),
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn alter_configs_replace_and_incremental_edits() {
    let mut broker = Broker::start();
    create_topic(&mut broker, TOPIC, 1);

    let ok = (0, None);
    assert_eq!(
        alter(
            &mut broker,
            RESOURCE_TOPIC,
            TOPIC,
            &[("retention.ms", Some("1000"))],
            true
        ),
        ok
    );
    assert_eq!(
        topic_config(&mut broker, "retention.ms").1,
        SOURCE_DEFAULT,
        "validate_only"
    );
    assert_eq!(
        alter(
            &mut broker,
            RESOURCE_TOPIC,
            TOPIC,
            &[("retention.ms", Some("1000")), ("segment.ms", Some("5000"))],
            false
        ),
        ok
    );
    assert_eq!(
        topic_config(&mut broker, "retention.ms"),
        ("1000".into(), SOURCE_TOPIC)
    );
    // Non-incremental: what is not given goes back to its default.
    assert_eq!(
        alter(
            &mut broker,
            RESOURCE_TOPIC,
            TOPIC,
            &[("segment.ms", Some("6000"))],
            false
        ),
        ok
    );
    assert_eq!(topic_config(&mut broker, "retention.ms").1, SOURCE_DEFAULT);
    assert_eq!(
        topic_config(&mut broker, "segment.ms"),
        ("6000".into(), SOURCE_TOPIC)
    );

    let refused = |result: (i16, Option<String>), error: ResponseError| {
        assert_eq!(result.0, code(error), "{result:?}");
        assert!(result.1.is_some(), "a message says why");
    };
    refused(
        alter(
            &mut broker,
            RESOURCE_TOPIC,
            TOPIC,
            &[("retention.ms", Some("soon"))],
            false,
        ),
        ResponseError::InvalidConfig,
    );
    refused(
        alter(
            &mut broker,
            RESOURCE_TOPIC,
            TOPIC,
            &[("no.such.config", Some("1"))],
            false,
        ),
        ResponseError::InvalidConfig,
    );
    refused(
        alter(
            &mut broker,
            RESOURCE_TOPIC,
            "missing",
            &[("retention.ms", Some("1"))],
            false,
        ),
        ResponseError::UnknownTopicOrPartition,
    );
    refused(
        alter(
            &mut broker,
            RESOURCE_BROKER,
            "1",
            &[("num.partitions", Some("3"))],
            false,
        ),
        ResponseError::InvalidRequest,
    );
    assert_eq!(
        topic_config(&mut broker, "segment.ms"),
        ("6000".into(), SOURCE_TOPIC)
    );

    // SET 0, DELETE 1, APPEND 2, SUBTRACT 3.
    assert_eq!(
        incremental(
            &mut broker,
            RESOURCE_TOPIC,
            TOPIC,
            &[("retention.ms", 0, Some("2000"))]
        ),
        ok
    );
    assert_eq!(
        topic_config(&mut broker, "retention.ms"),
        ("2000".into(), SOURCE_TOPIC)
    );
    assert_eq!(
        topic_config(&mut broker, "segment.ms"),
        ("6000".into(), SOURCE_TOPIC),
        "kept"
    );
    assert_eq!(
        incremental(
            &mut broker,
            RESOURCE_TOPIC,
            TOPIC,
            &[("segment.ms", 1, None)]
        ),
        ok
    );
    assert_eq!(topic_config(&mut broker, "segment.ms").1, SOURCE_DEFAULT);
    assert_eq!(
        incremental(
            &mut broker,
            RESOURCE_TOPIC,
            TOPIC,
            &[("cleanup.policy", 2, Some("compact"))]
        ),
        ok
    );
    assert_eq!(
        topic_config(&mut broker, "cleanup.policy"),
        ("compact,delete".into(), SOURCE_TOPIC)
    );
    assert_eq!(
        incremental(
            &mut broker,
            RESOURCE_TOPIC,
            TOPIC,
            &[("cleanup.policy", 3, Some("delete"))]
        ),
        ok
    );
    assert_eq!(
        topic_config(&mut broker, "cleanup.policy"),
        ("compact".into(), SOURCE_TOPIC)
    );
    refused(
        incremental(
            &mut broker,
            RESOURCE_TOPIC,
            TOPIC,
            &[("retention.ms", 2, Some("1"))],
        ),
        ResponseError::InvalidConfig,
    );
    refused(
        incremental(
            &mut broker,
            RESOURCE_TOPIC,
            TOPIC,
            &[("retention.ms", 0, Some("-7"))],
        ),
        ResponseError::InvalidConfig,
    );
    refused(
        incremental(
            &mut broker,
            RESOURCE_TOPIC,
            "missing",
            &[("retention.ms", 0, Some("1"))],
        ),
        ResponseError::UnknownTopicOrPartition,
    );
    refused(
        incremental(
            &mut broker,
            RESOURCE_BROKER,
            "1",
            &[("num.partitions", 0, Some("3"))],
        ),
        ResponseError::InvalidRequest,
    );
    assert_eq!(
        topic_config(&mut broker, "retention.ms"),
        ("2000".into(), SOURCE_TOPIC)
    );
}

fn delete_records(broker: &mut Broker, partitions: &[(&str, i32, i64)]) -> Vec<(i16, i64)> {
    let request = DeleteRecordsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(
            partitions
                .iter()
                .map(|(topic, partition, offset)| {
                    delete_records_request::DeleteRecordsTopic::default()
                        .with_name(topic_name(topic))
                        .with_partitions(vec![
                            delete_records_request::DeleteRecordsPartition::default()
                                .with_partition_index(*partition)
                                .with_offset(*offset),
                        ])
                })
                .collect(),
        );
    match broker.call(RequestKind::DeleteRecords(request), 2) {
        ResponseKind::DeleteRecords(response) => response
            .topics
            .iter()
            .map(|topic| {
                (
                    topic.partitions[0].error_code,
                    topic.partitions[0].low_watermark,
                )
            })
            .collect(),
        other => panic!("{other:?}"),
    }
}

fn epoch_end(broker: &mut Broker, partition: i32, current: i32, epoch: i32) -> (i16, i32, i64) {
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                .with_topic(topic_name(TOPIC))
                .with_partitions(vec![
                    offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                        .with_partition(partition)
                        .with_current_leader_epoch(current)
                        .with_leader_epoch(epoch),
                ]),
        ]);
    match broker.call(RequestKind::OffsetForLeaderEpoch(request), 4) {
        ResponseKind::OffsetForLeaderEpoch(response) => {
            let result = &response.topics[0].partitions[0];
            (result.error_code, result.leader_epoch, result.end_offset)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn delete_records_epochs_and_log_dirs() {
    let mut broker = Broker::start();
    create_topic(&mut broker, TOPIC, 2);
    produce(&mut broker, TOPIC, 0, 5);
    produce(&mut broker, TOPIC, 0, 5);

    assert_eq!(epoch_end(&mut broker, 0, -1, 0), (0, 0, 10));
    assert_eq!(epoch_end(&mut broker, 0, 0, 0), (0, 0, 10));
    assert_eq!(epoch_end(&mut broker, 1, -1, 0), (0, 0, 0));
    assert_eq!(epoch_end(&mut broker, 0, -1, 3), (0, -1, -1));
    assert_eq!(
        epoch_end(&mut broker, 0, 2, 0),
        (code(ResponseError::UnknownLeaderEpoch), -1, -1)
    );
    assert_eq!(
        epoch_end(&mut broker, 9, -1, 0),
        (code(ResponseError::UnknownTopicOrPartition), -1, -1)
    );

    assert_eq!(delete_records(&mut broker, &[(TOPIC, 0, 3)]), vec![(0, 3)]);
    assert_eq!(
        delete_records(&mut broker, &[(TOPIC, 0, 1)]),
        vec![(0, 3)],
        "never moves back"
    );
    assert_eq!(
        delete_records(
            &mut broker,
            &[(TOPIC, 0, 11), (TOPIC, 7, 0), ("missing", 0, 0)]
        ),
        vec![
            (code(ResponseError::OffsetOutOfRange), -1),
            (code(ResponseError::UnknownTopicOrPartition), -1),
            (code(ResponseError::UnknownTopicOrPartition), -1),
        ]
    );
    assert_eq!(
        delete_records(&mut broker, &[(TOPIC, 0, -1), (TOPIC, 1, -1)]),
        vec![(0, 10), (0, 0)]
    );

    for version in 1..=4 {
        let request = DescribeLogDirsRequest::default().with_topics(None);
        let response = match broker.call(RequestKind::DescribeLogDirs(request), version) {
            ResponseKind::DescribeLogDirs(response) => response,
            other => panic!("{other:?}"),
        };
        assert_eq!(response.results.len(), 1);
        let dir = &response.results[0];
        assert_eq!(dir.error_code, 0);
        assert!(dir.log_dir.starts_with('/'), "{}", dir.log_dir);
        // The internal `__consumer_offsets` topic is listed too; only the test's topic counts.
        let topics: Vec<_> = dir
            .topics
            .iter()
            .filter(|topic| topic.name.0.as_str() != "__consumer_offsets")
            .collect();
        assert_eq!(topics.len(), 1);
        let sizes: Vec<(i32, bool)> = topics[0]
            .partitions
            .iter()
            .map(|partition| (partition.partition_index, partition.partition_size > 0))
            .collect();
        assert_eq!(
            sizes,
            vec![(0, true), (1, sizes[1].1)],
            "partition 0 has data"
        );
        if version >= 4 {
            assert!(dir.total_bytes > 0 && dir.usable_bytes >= 0, "{dir:?}");
        }
    }
    let request = DescribeLogDirsRequest::default().with_topics(Some(vec![
        describe_log_dirs_request::DescribableLogDirTopic::default()
            .with_topic(topic_name(TOPIC))
            .with_partitions(vec![1, 5]),
    ]));
    match broker.call(RequestKind::DescribeLogDirs(request), 4) {
        ResponseKind::DescribeLogDirs(response) => {
            let topics = &response.results[0].topics;
            assert_eq!(topics.len(), 1);
            let indexes: Vec<i32> = topics[0]
                .partitions
                .iter()
                .map(|partition| partition.partition_index)
                .collect();
            assert_eq!(indexes, vec![1], "unknown partitions are left out");
        }
        other => panic!("{other:?}"),
    }
}
