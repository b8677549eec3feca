//! Hostile and broken input on the Kafka port of a real `ringlog serve` process, over raw TCP.
//!
//! Malformed frames (absurd or negative sizes, unknown API keys, truncated frames, garbage,
//! absurd counts and string lengths inside a request) must close that one connection and nothing
//! else: the broker stays up and keeps serving its other connections, old and new. Record batches
//! that fail validation (bad CRC, wrong magic, a record count that does not match) must be refused
//! with Kafka's per-partition error codes and never become readable.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_request::ApiVersionsRequest;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreateTopicsRequest};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
};
use kafka_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use kafka_protocol::messages::{RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use common::{unique_topic, Broker};

/// How long the broker gets to close a connection after a malformed frame. It needs no time at
/// all; the bound is for a loaded CI machine.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Read and write timeout of the test's own connections.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a freshly created topic may take to accept writes.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Kafka error codes the tests expect.
const NONE: i16 = 0;
const CORRUPT_MESSAGE: i16 = 2;
const INVALID_RECORD: i16 = 87;

/// Offsets of record batch (magic 2) header fields, from Kafka's DefaultRecordBatch.
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
const RECORDS_COUNT_OFFSET: usize = 57;

/// Records in the test batch.
const BATCH_RECORDS: usize = 3;

/// The highest versions this test encodes: Produce and Fetch name topics by name up to v12 (v13
/// switched to topic ids).
const PRODUCE_VERSION_MAX: i16 = 12;
const FETCH_VERSION_MAX: i16 = 12;

/// One client connection speaking Kafka through `kafka-protocol`.
struct Connection {
    stream: TcpStream,
    correlation_id: i32,
    /// (api key, min version, max version) as the broker advertised them.
    versions: Vec<(i16, i16, i16)>,
}

impl Connection {
    fn open(addr: SocketAddr) -> Connection {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let mut connection = Connection {
            stream,
            correlation_id: 0,
            versions: Vec::new(),
        };
        let response = connection
            .call(0, &ApiVersionsRequest::default())
            .expect("ApiVersions v0");
        assert_eq!(response.error_code, NONE, "ApiVersions error code");
        connection.versions = response
            .api_keys
            .iter()
            .map(|api| (api.api_key, api.min_version, api.max_version))
            .collect();
        connection
    }

    /// The highest version of `R` both sides speak, capped at `cap`.
    fn version<R: Request>(&self, cap: i16) -> i16 {
        let (_, broker_min, broker_max) = self
            .versions
            .iter()
            .copied()
            .find(|(key, _, _)| *key == R::KEY)
            .unwrap_or_else(|| panic!("the broker does not advertise API key {}", R::KEY));
        let version = broker_max.min(cap).min(R::VERSIONS.max);
        assert!(
            version >= broker_min.max(R::VERSIONS.min),
            "no common version of API key {}: broker {broker_min}..={broker_max}, test up to {cap}",
            R::KEY
        );
        version
    }

    /// Sends `request` at `version` and reads its response.
    fn call<R: Request>(&mut self, version: i16, request: &R) -> Result<R::Response, String> {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("ringlog-bad-input")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .map_err(|error| format!("encode header: {error}"))?;
        request
            .encode(&mut body, version)
            .map_err(|error| format!("encode request: {error}"))?;
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(body.len() as i32);
        frame.put_slice(&body);
        self.stream
            .write_all(&frame)
            .map_err(|error| format!("write: {error}"))?;

        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .map_err(|error| format!("read size: {error}"))?;
        let size = i32::from_be_bytes(size);
        if !(4..=64 << 20).contains(&size) {
            return Err(format!("response size {size}"));
        }
        let mut payload = vec![0u8; size as usize];
        self.stream
            .read_exact(&mut payload)
            .map_err(|error| format!("read body: {error}"))?;
        let mut payload = Bytes::from(payload);
        let response_header =
            ResponseHeader::decode(&mut payload, R::Response::header_version(version))
                .map_err(|error| format!("decode response header: {error}"))?;
        if response_header.correlation_id != self.correlation_id {
            return Err(format!(
                "correlation id {}, expected {}",
                response_header.correlation_id, self.correlation_id
            ));
        }
        let response = R::Response::decode(&mut payload, version)
            .map_err(|error| format!("decode response: {error}"))?;
        if payload.has_remaining() {
            return Err(format!(
                "{} bytes left after the response",
                payload.remaining()
            ));
        }
        Ok(response)
    }
}

/// A request frame with a hand-made header: `api_key`, `api_version`, correlation id 7, client id
/// "bad", then `body`.
fn frame(api_key: i16, api_version: i16, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&api_key.to_be_bytes());
    payload.extend_from_slice(&api_version.to_be_bytes());
    payload.extend_from_slice(&7i32.to_be_bytes());
    payload.extend_from_slice(&3i16.to_be_bytes());
    payload.extend_from_slice(b"bad");
    payload.extend_from_slice(body);
    let mut framed = (payload.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&payload);
    framed
}

/// A malformed input and whether the test closes its write side after sending it (for inputs that
/// are incomplete on purpose, a broker may fairly wait for the rest until the client hangs up).
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    shutdown_write: bool,
}

fn malformed_cases() -> Vec<Case> {
    let mut garbage = vec![0u8; 4096];
    fastrand::Rng::with_seed(0xbad_1234).fill(&mut garbage);

    // Metadata v1 (API key 3) whose topics array claims 0x7fffffff entries, followed by 3 bytes.
    let mut metadata_body = 0x7fff_ffffi32.to_be_bytes().to_vec();
    metadata_body.extend_from_slice(b"abc");

    // ApiVersions v0 whose header's client_id claims 32767 bytes and has 5.
    let mut huge_client_id = Vec::new();
    huge_client_id.extend_from_slice(&18i16.to_be_bytes());
    huge_client_id.extend_from_slice(&0i16.to_be_bytes());
    huge_client_id.extend_from_slice(&9i32.to_be_bytes());
    huge_client_id.extend_from_slice(&i16::MAX.to_be_bytes());
    huge_client_id.extend_from_slice(b"short");
    let mut huge_client_id_frame = (huge_client_id.len() as i32).to_be_bytes().to_vec();
    huge_client_id_frame.extend_from_slice(&huge_client_id);

    let mut truncated = 100i32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&frame(18, 0, &[])[4..]);
    truncated.truncate(4 + 10);

    vec![
        Case {
            name: "(a) frame length 0x7fffffff, over the 100 MiB request limit",
            bytes: [0x7f, 0xff, 0xff, 0xff, 0, 18, 0, 0].to_vec(),
            shutdown_write: false,
        },
        Case {
            name: "(b) negative frame length 0xffffffff",
            bytes: [0xff, 0xff, 0xff, 0xff, 0, 18, 0, 0].to_vec(),
            shutdown_write: false,
        },
        Case {
            name: "(c) unknown API key 9999 with a valid header",
            bytes: frame(9999, 0, &[]),
            shutdown_write: false,
        },
        Case {
            name: "(d) truncated frame: length 100, 10 bytes, then EOF",
            bytes: truncated,
            shutdown_write: true,
        },
        Case {
            name: "(e) 4 KiB of random bytes, then EOF",
            bytes: garbage,
            shutdown_write: true,
        },
        Case {
            name: "(f) Metadata v1 with a topics count of 0x7fffffff and 3 bytes of topics",
            bytes: frame(3, 1, &metadata_body),
            shutdown_write: false,
        },
        Case {
            name: "(g) request header with a client_id length of 32767 and 5 bytes",
            bytes: huge_client_id_frame,
            shutdown_write: false,
        },
    ]
}

/// Reads (and discards) until the broker closes the connection; panics if it is still open after
/// [`CLOSE_TIMEOUT`].
fn assert_closed_by_broker(stream: &mut TcpStream, case: &str) {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    let mut buffer = [0u8; 4096];
    let mut discarded = 0usize;
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return,
            Ok(count) => discarded += count,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            // A reset is a close too.
            Err(_) => return,
        }
        if Instant::now() >= deadline {
            panic!(
                "{case}: the broker kept the connection open for {CLOSE_TIMEOUT:?} \
                 ({discarded} bytes received)"
            );
        }
    }
}

fn assert_serving(broker: &mut Broker, old: &mut Connection, case: &str) {
    broker.assert_alive(&format!("after {case}"));
    match common::api_versions_v0(broker.addr(), IO_TIMEOUT) {
        Ok((NONE, keys)) if keys.contains(&common::API_VERSIONS_KEY) => {}
        other => panic!("{case}: ApiVersions on a new connection returned {other:?}"),
    }
    match old.call(0, &ApiVersionsRequest::default()) {
        Ok(response) if response.error_code == NONE => {}
        other => panic!("{case}: ApiVersions on a connection opened before returned {other:?}"),
    }
}

#[test]
fn malformed_frames_close_only_their_connection() {
    let mut broker = Broker::start();
    let mut old = Connection::open(broker.addr());
    for case in malformed_cases() {
        let mut stream = TcpStream::connect_timeout(&broker.addr(), IO_TIMEOUT).expect("connect");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        // The broker may close the connection before it has read everything: a failed write is
        // not the test's concern, the close is.
        let _ = stream.write_all(&case.bytes);
        if case.shutdown_write {
            let _ = stream.shutdown(Shutdown::Write);
        }
        assert_closed_by_broker(&mut stream, case.name);
        assert_serving(&mut broker, &mut old, case.name);
        println!("{}: connection closed, broker still serving", case.name);
    }
    // Every case again at once, on parallel connections.
    let mut streams: Vec<(TcpStream, Case)> = malformed_cases()
        .into_iter()
        .map(|case| {
            let mut stream =
                TcpStream::connect_timeout(&broker.addr(), IO_TIMEOUT).expect("connect");
            stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
            let _ = stream.write_all(&case.bytes);
            if case.shutdown_write {
                let _ = stream.shutdown(Shutdown::Write);
            }
            (stream, case)
        })
        .collect();
    for (stream, case) in streams.iter_mut() {
        assert_closed_by_broker(stream, case.name);
    }
    assert_serving(&mut broker, &mut old, "all cases at once");
    broker.stop();
}

/// A valid magic-2 batch of [`BATCH_RECORDS`] uncompressed records.
fn valid_batch() -> BytesMut {
    let records: Vec<Record> = (0..BATCH_RECORDS)
        .map(|index| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: index as i64,
            sequence: -1,
            timestamp: 1_700_000_000_000 + index as i64,
            key: Some(Bytes::from(format!("key-{index}"))),
            value: Some(Bytes::from(format!("value-{index}"))),
            headers: Default::default(),
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
    .expect("encode a record batch");
    batch
}

/// Recomputes a magic-2 batch's CRC-32C (over everything from the attributes on).
fn fix_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

fn produce(connection: &mut Connection, topic: &str, batch: &[u8]) -> (i16, i64) {
    let version = connection.version::<ProduceRequest>(PRODUCE_VERSION_MAX);
    let request = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::copy_from_slice(batch)))])]);
    let response = connection
        .call(version, &request)
        .unwrap_or_else(|error| panic!("Produce v{version}: {error}"));
    assert_eq!(response.responses.len(), 1, "Produce response topics");
    let partitions = &response.responses[0].partition_responses;
    assert_eq!(partitions.len(), 1, "Produce response partitions");
    (partitions[0].error_code, partitions[0].base_offset)
}

fn latest_offset(connection: &mut Connection, topic: &str) -> (i16, i64) {
    let version = connection.version::<ListOffsetsRequest>(ListOffsetsRequest::VERSIONS.max);
    let request = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_isolation_level(0)
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_current_leader_epoch(-1)
                .with_timestamp(-1)])]);
    let response = connection
        .call(version, &request)
        .unwrap_or_else(|error| panic!("ListOffsets v{version}: {error}"));
    let partition = &response.topics[0].partitions[0];
    (partition.error_code, partition.offset)
}

/// Fetches partition 0 from offset 0 and returns every record in it.
fn fetch_all(connection: &mut Connection, topic: &str) -> Vec<Record> {
    let version = connection.version::<FetchRequest>(FETCH_VERSION_MAX);
    let request = FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(200)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_current_leader_epoch(-1)
                .with_fetch_offset(0)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(1 << 20)])]);
    let response = connection
        .call(version, &request)
        .unwrap_or_else(|error| panic!("Fetch v{version}: {error}"));
    assert_eq!(response.error_code, NONE, "Fetch top-level error code");
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.error_code, NONE, "Fetch partition error code");
    let mut records = partition.records.clone().unwrap_or_default();
    let mut all = Vec::new();
    while records.has_remaining() {
        let set = RecordBatchDecoder::decode(&mut records).expect("decode fetched records");
        all.extend(set.records);
    }
    all
}

fn create_topic(connection: &mut Connection, topic: &str) {
    let version = connection.version::<CreateTopicsRequest>(CreateTopicsRequest::VERSIONS.max);
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_num_partitions(1)
            .with_replication_factor(1)]);
    let response = connection
        .call(version, &request)
        .unwrap_or_else(|error| panic!("CreateTopics v{version}: {error}"));
    assert_eq!(
        response.topics[0].error_code, NONE,
        "CreateTopics {topic}: {:?}",
        response.topics[0].error_message
    );
    let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
    loop {
        let (error_code, offset) = latest_offset(connection, topic);
        if error_code == NONE {
            assert_eq!(offset, 0, "{topic}: latest offset of a new topic");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: ListOffsets still fails with {error_code} {TOPIC_READY_TIMEOUT:?} after \
             CreateTopics"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn invalid_record_batches_are_refused_and_never_readable() {
    let mut broker = Broker::start();
    let topic = unique_topic("bad-batches");
    let mut connection = Connection::open(broker.addr());
    create_topic(&mut connection, &topic);

    let valid = valid_batch();
    let mut cases: Vec<(&str, Vec<u8>, &[i16])> = Vec::new();

    let mut crc_field = valid.to_vec();
    crc_field[CRC_OFFSET] ^= 0xff;
    cases.push(("CRC field changed", crc_field, &[CORRUPT_MESSAGE]));

    let mut record_byte = valid.to_vec();
    let last = record_byte.len() - 1;
    record_byte[last] ^= 0x01;
    cases.push((
        "a record byte changed under the CRC",
        record_byte,
        &[CORRUPT_MESSAGE],
    ));

    let mut magic_1 = valid.to_vec();
    magic_1[MAGIC_OFFSET] = 1;
    cases.push((
        "magic 1 in Produce v3+",
        magic_1,
        &[CORRUPT_MESSAGE, INVALID_RECORD],
    ));

    for (label, count) in [
        ("record count larger than the records", BATCH_RECORDS + 2),
        ("record count smaller than the records", BATCH_RECORDS - 1),
    ] {
        let mut miscounted = valid.to_vec();
        miscounted[RECORDS_COUNT_OFFSET..RECORDS_COUNT_OFFSET + 4]
            .copy_from_slice(&(count as i32).to_be_bytes());
        fix_crc(&mut miscounted);
        cases.push((label, miscounted, &[INVALID_RECORD, CORRUPT_MESSAGE]));
    }

    for (label, batch, allowed) in &cases {
        let (error_code, base_offset) = produce(&mut connection, &topic, batch);
        assert!(
            allowed.contains(&error_code),
            "Produce of a batch with {label}: error code {error_code} (base offset \
             {base_offset}), expected one of {allowed:?}"
        );
        println!("{label}: refused with error code {error_code}");
        let (error_code, latest) = latest_offset(&mut connection, &topic);
        assert_eq!(
            (error_code, latest),
            (NONE, 0),
            "after a batch with {label}: ListOffsets latest"
        );
    }
    let fetched = fetch_all(&mut connection, &topic);
    assert!(
        fetched.is_empty(),
        "refused batches are readable: fetched {} records",
        fetched.len()
    );

    // The partition still takes a valid batch, at offset 0, and serves exactly it.
    let (error_code, base_offset) = produce(&mut connection, &topic, &valid);
    assert_eq!(
        (error_code, base_offset),
        (NONE, 0),
        "Produce of the valid batch"
    );
    assert_eq!(
        latest_offset(&mut connection, &topic),
        (NONE, BATCH_RECORDS as i64)
    );
    let fetched = fetch_all(&mut connection, &topic);
    let values: Vec<Option<Bytes>> = fetched.iter().map(|record| record.value.clone()).collect();
    let expected: Vec<Option<Bytes>> = (0..BATCH_RECORDS)
        .map(|index| Some(Bytes::from(format!("value-{index}"))))
        .collect();
    assert_eq!(values, expected, "fetched values");
    let offsets: Vec<i64> = fetched.iter().map(|record| record.offset).collect();
    assert_eq!(offsets, (0..BATCH_RECORDS as i64).collect::<Vec<_>>());

    broker.assert_alive("after the invalid batches");
    broker.stop();
}
