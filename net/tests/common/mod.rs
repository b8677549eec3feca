//! An in-process broker for the net crate's integration tests, and raw Kafka requests to it.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use ringlog_net::{BrokerConfig, Shutdown};

/// How long the broker may take to start accepting: a fresh data directory takes well under a
/// second; the rest is room for a loaded two-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one request may take to be answered.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A broker running `ringlog_net::server::start` on threads of this process, on a loopback
/// port the kernel picked (port 0), so parallel tests never race for a port.
pub struct InProcessBroker {
    pub address: SocketAddr,
    running: Option<ringlog_net::server::Running>,
}

impl InProcessBroker {
    pub fn start(data_dir: &Path) -> InProcessBroker {
        InProcessBroker::start_with(data_dir, |_| {})
    }

    /// Starts a broker whose config `adjust` changes first.
    pub fn start_with(data_dir: &Path, adjust: impl FnOnce(&mut BrokerConfig)) -> InProcessBroker {
        let mut config = BrokerConfig::new(data_dir);
        adjust(&mut config);
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.cores = Some(2);
        let running = ringlog_net::server::start_within(config, Shutdown::new(), START_TIMEOUT)
            .expect("the broker starts");
        InProcessBroker {
            address: running.local_addr(),
            running: Some(running),
        }
    }

    pub fn connect(&self) -> TcpStream {
        connect(self.address)
    }

    /// Stops the broker cleanly and waits for it.
    pub fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().expect("broker stopped cleanly");
        }
    }
}

pub fn connect(address: SocketAddr) -> TcpStream {
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

pub fn round_trip(
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

/// A `StrBytes` from a `&str`.
pub fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

/// Creates `topic` with `partitions` partitions (CreateTopics v7) and returns its id.
pub fn create_topic(stream: &mut TcpStream, topic: &str, partitions: i32) -> uuid::Uuid {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
    let request = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(text(topic)))
        .with_num_partitions(partitions)
        .with_replication_factor(1)]);
    match round_trip(
        stream,
        RequestKind::CreateTopics(request),
        ApiKey::CreateTopics,
        7,
        0,
    ) {
        ResponseKind::CreateTopics(response) => {
            assert_eq!(response.topics[0].error_code, 0, "{response:?}");
            response.topics[0].topic_id
        }
        other => panic!("{other:?}"),
    }
}

/// An OffsetCommit of `offsets` (partition, offset) of `topic` at `version` (v9+: `epoch` is
/// the member epoch); returns each partition's error code.
pub fn offset_commit(
    stream: &mut TcpStream,
    version: i16,
    group: &str,
    member: (&str, i32),
    topic: &str,
    offsets: &[(i32, i64)],
) -> Vec<i16> {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{GroupId, OffsetCommitRequest, TopicName};
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_member_id(text(member.0))
        .with_generation_id_or_member_epoch(member.1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(text(topic)))
            .with_partitions(
                offsets
                    .iter()
                    .map(|(partition, offset)| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(*partition)
                            .with_committed_offset(*offset)
                    })
                    .collect(),
            )]);
    match round_trip(
        stream,
        RequestKind::OffsetCommit(request),
        ApiKey::OffsetCommit,
        version,
        1,
    ) {
        ResponseKind::OffsetCommit(response) => response.topics[0]
            .partitions
            .iter()
            .map(|partition| partition.error_code)
            .collect(),
        other => panic!("{other:?}"),
    }
}

/// OffsetFetch v9 of everything `group` committed, as a consumer-protocol `member` (id, epoch)
/// or as anyone: the committed offsets by partition index, or the group's error code.
pub fn offset_fetch(
    stream: &mut TcpStream,
    group: &str,
    member: Option<(&str, i32)>,
) -> Result<std::collections::BTreeMap<i32, i64>, i16> {
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
    use kafka_protocol::messages::{GroupId, OffsetFetchRequest};
    let mut asked = OffsetFetchRequestGroup::default()
        .with_group_id(GroupId(text(group)))
        .with_topics(None);
    if let Some((member_id, epoch)) = member {
        asked = asked
            .with_member_id(Some(text(member_id)))
            .with_member_epoch(epoch);
    }
    let request = OffsetFetchRequest::default().with_groups(vec![asked]);
    match round_trip(
        stream,
        RequestKind::OffsetFetch(request),
        ApiKey::OffsetFetch,
        9,
        2,
    ) {
        ResponseKind::OffsetFetch(response) => {
            let group = &response.groups[0];
            if group.error_code != 0 {
                return Err(group.error_code);
            }
            Ok(group
                .topics
                .iter()
                .flat_map(|topic| &topic.partitions)
                .map(|partition| (partition.partition_index, partition.committed_offset))
                .collect())
        }
        other => panic!("{other:?}"),
    }
}

/// One ConsumerGroupHeartbeat (v1).
pub fn consumer_heartbeat(
    stream: &mut TcpStream,
    request: kafka_protocol::messages::ConsumerGroupHeartbeatRequest,
) -> kafka_protocol::messages::ConsumerGroupHeartbeatResponse {
    match round_trip(
        stream,
        RequestKind::ConsumerGroupHeartbeat(request),
        ApiKey::ConsumerGroupHeartbeat,
        1,
        3,
    ) {
        ResponseKind::ConsumerGroupHeartbeat(response) => response,
        other => panic!("{other:?}"),
    }
}

/// A first ConsumerGroupHeartbeat (epoch 0) of `member` subscribing to `topics`.
pub fn consumer_join(
    group: &str,
    member: &str,
    topics: &[&str],
) -> kafka_protocol::messages::ConsumerGroupHeartbeatRequest {
    use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, GroupId, TopicName};
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_member_id(text(member))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(
            topics.iter().map(|topic| TopicName(text(topic))).collect(),
        ))
        .with_topic_partitions(Some(Vec::new()))
}
