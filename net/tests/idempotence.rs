//! The idempotent producer against an in-process broker, with raw Produce requests: a retried
//! batch is acknowledged with its original offset and not written twice, a gap in sequence
//! numbers and an old epoch are refused, and all of it still holds after a clean restart and
//! after the producer state is rebuilt from the log.

mod common;

use bytes::{Bytes, BytesMut};
use common::{round_trip, InProcessBroker};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    create_topics_request::CreatableTopic, ApiKey, CreateTopicsRequest, ListOffsetsRequest,
    ProduceRequest, RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

const TOPIC: &str = "idempotent";
const PRODUCER_ID: i64 = 4242;

/// A batch of `count` records from the test producer with sequence `base_sequence`.
fn batch(epoch: i16, base_sequence: i32, count: i32) -> Bytes {
    let records: Vec<Record> = (0..count)
        .map(|index| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: PRODUCER_ID,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i64::from(index),
            sequence: base_sequence + index,
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::from(format!("k{}", base_sequence + index))),
            value: Some(Bytes::from_static(b"value")),
            headers: IndexMap::new(),
        })
        .collect();
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("batch encodes");
    out.freeze()
}

/// Produces `records` with acks=all; returns (error code, base offset).
fn produce(stream: &mut std::net::TcpStream, records: Bytes) -> (i16, i64) {
    let request = RequestKind::Produce(
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(records))])]),
    );
    match round_trip(stream, request, ApiKey::Produce, 9, 1) {
        ResponseKind::Produce(response) => {
            let partition = &response.responses[0].partition_responses[0];
            (partition.error_code, partition.base_offset)
        }
        other => panic!("{other:?}"),
    }
}

fn log_end(stream: &mut std::net::TcpStream) -> i64 {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let request = RequestKind::ListOffsets(ListOffsetsRequest::default().with_topics(vec![
        ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-1)]),
    ]));
    match round_trip(stream, request, ApiKey::ListOffsets, 5, 2) {
        ResponseKind::ListOffsets(response) => response.topics[0].partitions[0].offset,
        other => panic!("{other:?}"),
    }
}

/// Kafka's OUT_OF_ORDER_SEQUENCE_NUMBER and INVALID_PRODUCER_EPOCH.
const OUT_OF_ORDER_SEQUENCE: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;

#[test]
fn retries_are_deduplicated_and_gaps_refused_across_restarts() {
    let data = tempfile::tempdir().expect("tempdir");
    let broker = InProcessBroker::start(data.path());
    let mut stream = broker.connect();
    let create = RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_num_partitions(1)
            .with_replication_factor(1),
    ]));
    round_trip(&mut stream, create, ApiKey::CreateTopics, 5, 0);

    assert_eq!(produce(&mut stream, batch(0, 0, 3)), (0, 0));
    assert_eq!(produce(&mut stream, batch(0, 3, 2)), (0, 3));
    // A retry of the first batch: its original offset, nothing written.
    assert_eq!(produce(&mut stream, batch(0, 0, 3)), (0, 0));
    assert_eq!(log_end(&mut stream), 5);
    // A gap: sequence 9 after 4.
    assert_eq!(
        produce(&mut stream, batch(0, 9, 1)).0,
        OUT_OF_ORDER_SEQUENCE
    );
    assert_eq!(log_end(&mut stream), 5);
    drop(stream);
    broker.stop();
    let snapshot = data
        .path()
        .join(format!("{TOPIC}-0"))
        .join("producer-state.json");
    assert!(
        snapshot.exists(),
        "clean stop writes the producer-state snapshot"
    );

    // After a restart the producer state comes from the snapshot (and the batches after it).
    let broker = InProcessBroker::start(data.path());
    let mut stream = broker.connect();
    assert_eq!(
        produce(&mut stream, batch(0, 3, 2)),
        (0, 3),
        "retry after restart"
    );
    assert_eq!(
        produce(&mut stream, batch(0, 9, 1)).0,
        OUT_OF_ORDER_SEQUENCE
    );
    assert_eq!(produce(&mut stream, batch(0, 5, 1)), (0, 5));
    // A new epoch starts at sequence 0 and fences the old one.
    assert_eq!(produce(&mut stream, batch(1, 0, 1)), (0, 6));
    assert_eq!(
        produce(&mut stream, batch(0, 6, 1)).0,
        INVALID_PRODUCER_EPOCH
    );
    assert_eq!(log_end(&mut stream), 7);
    drop(stream);
    broker.stop();

    // A damaged snapshot is ignored: the state is rebuilt from every batch of the log.
    std::fs::write(&snapshot, b"garbage").expect("damage the snapshot");
    let broker = InProcessBroker::start(data.path());
    let mut stream = broker.connect();
    assert_eq!(
        produce(&mut stream, batch(1, 0, 1)),
        (0, 6),
        "retry after a full rebuild"
    );
    assert_eq!(
        produce(&mut stream, batch(0, 6, 1)).0,
        INVALID_PRODUCER_EPOCH
    );
    assert_eq!(produce(&mut stream, batch(1, 1, 1)), (0, 7));
    drop(stream);
    broker.stop();
}
