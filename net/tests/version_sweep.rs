//! Every served API at every served version, against an in-process broker: a default request
//! of that version must get a well-formed response of that version. This catches a handler
//! setting a field that does not exist in an old version (the encoder refuses it, and the
//! client would get no answer) and a decoder or header mismatch at any version.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use ringlog_net::apis::SERVED_APIS;
use ringlog_net::{BrokerConfig, Shutdown};

/// How long the broker may take to start accepting.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one request may take to be answered.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn connect(address: SocketAddr) -> TcpStream {
    let started = Instant::now();
    loop {
        match TcpStream::connect(address) {
            Ok(stream) => {
                stream
                    .set_read_timeout(Some(RESPONSE_TIMEOUT))
                    .expect("timeout");
                return stream;
            }
            Err(error) if started.elapsed() < START_TIMEOUT => {
                let _ = error;
                thread::sleep(Duration::from_millis(50));
            }
            Err(error) => panic!("broker did not start: {error}"),
        }
    }
}

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

fn round_trip(
    stream: &mut TcpStream,
    request: RequestKind,
    key: ApiKey,
    version: i16,
    correlation_id: i32,
) -> ResponseKind {
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("sweep")))
        .encode(&mut frame, key.request_header_version(version))
        .expect("header encodes");
    request
        .encode(&mut frame, version)
        .unwrap_or_else(|error| panic!("{key:?} v{version} request: {error}"));
    let size = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    stream.write_all(&frame).expect("write");
    let mut prefix = [0_u8; 4];
    stream
        .read_exact(&mut prefix)
        .unwrap_or_else(|error| panic!("{key:?} v{version}: no response ({error})"));
    let size = i32::from_be_bytes(prefix) as usize;
    let mut body = vec![0_u8; size];
    stream.read_exact(&mut body).expect("response body");
    let mut body = Bytes::from(body);
    let header = ResponseHeader::decode(&mut body, key.response_header_version(version))
        .expect("response header decodes");
    assert_eq!(header.correlation_id, correlation_id, "{key:?} v{version}");
    let response = ResponseKind::decode(key, &mut body, version)
        .unwrap_or_else(|error| panic!("{key:?} v{version} response: {error}"));
    assert_eq!(body.remaining(), 0, "{key:?} v{version}: trailing bytes");
    response
}

#[test]
fn every_served_api_answers_at_every_served_version() {
    let data = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut config = BrokerConfig::new(data.path());
    config.listen = SocketAddr::from(([127, 0, 0, 1], port));
    config.cores = Some(2);
    let shutdown = Shutdown::new();
    let stopper = shutdown.clone();
    let broker = thread::spawn(move || ringlog_net::server::run(config, shutdown));
    let mut stream = connect(SocketAddr::from(([127, 0, 0, 1], port)));
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
    stopper.trigger();
    broker
        .join()
        .expect("broker thread")
        .expect("broker stopped cleanly");
}
