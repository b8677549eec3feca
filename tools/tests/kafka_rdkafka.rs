//! The end-to-end scenario through the `rdkafka` crate (librdkafka built from source by
//! rdkafka-sys) against a real `ringlog serve` process: CreateTopics, keyed messages with headers
//! and explicit timestamps, null keys and values, a 1 MiB message, gzip/snappy/lz4/zstd batches and
//! the idempotent producer, each read back with a `BaseConsumer` assigned to every partition from
//! the beginning (no group, no commits) and compared field by field.
//!
//! Needs nothing outside cargo, so it never skips.

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::util::Timeout;
use rdkafka::{Offset, Timestamp, TopicPartitionList};

use common::rdkafka::client_config;
use common::{unique_topic, Broker};

/// Partitions of the multi-partition topics.
const PARTITIONS: i32 = 3;
const KEYED_COUNT: usize = 300;
/// Distinct keys among the keyed messages, so several messages share each key.
const KEY_SPACE: usize = 37;
const NULL_KEY_COUNT: usize = 10;
const BIG_VALUE_BYTES: usize = 1 << 20;
/// max.message.bytes of the large-message topic and the producer's message.max.bytes: Kafka's
/// default (1 MiB + 12) is one record batch header too small for a 1 MiB value.
const BIG_MAX_MESSAGE_BYTES: usize = 8 << 20;
const CODEC_COUNT: usize = 200;
const CODECS: [&str; 4] = ["gzip", "snappy", "lz4", "zstd"];
const IDEMPOTENT_COUNT: usize = 1000;
/// Timestamps are set ten minutes in the past: inside any broker's accepted window, and far from
/// the broker's clock, so a broker that overwrote them would be caught.
const TIMESTAMP_AGE_MS: i64 = 10 * 60 * 1000;
/// Bounds of the client operations.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const FLUSH_TIMEOUT: Duration = Duration::from_secs(90);

/// A key or value that may be null.
type OptionalBytes<'a> = Option<&'a [u8]>;

/// A topic to create: name, partitions, topic configs.
type TopicSpec = (String, i32, Vec<(&'static str, String)>);

/// One produced message and where the broker acknowledged it.
#[derive(Clone, Debug)]
struct Sent {
    index: usize,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
    timestamp_ms: i64,
    partition: i32,
    offset: i64,
}

/// One consumed message.
#[derive(Debug)]
struct Received {
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp: Timestamp,
}

fn message(index: usize, key: Option<&[u8]>, value: Option<&[u8]>, timestamp_ms: i64) -> Sent {
    Sent {
        index,
        key: key.map(<[u8]>::to_vec),
        value: value.map(<[u8]>::to_vec),
        headers: vec![("index".to_string(), index.to_string().into_bytes())],
        timestamp_ms,
        partition: -1,
        offset: -1,
    }
}

fn base_timestamp_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970");
    now.as_millis() as i64 - TIMESTAMP_AGE_MS
}

/// Shared keys, repeated and empty header values, then null keys, an empty key, an empty value
/// and a null value.
fn keyed_messages() -> Vec<Sent> {
    let base = base_timestamp_ms();
    let mut messages = Vec::new();
    for index in 0..KEYED_COUNT {
        let key = format!("key-{}", index % KEY_SPACE);
        let value = format!("rdkafka value {index} {}", ".".repeat(index % 64));
        let mut sent = message(
            index,
            Some(key.as_bytes()),
            Some(value.as_bytes()),
            base + index as i64,
        );
        sent.headers.extend([
            ("client".to_string(), b"rdkafka".to_vec()),
            ("repeated".to_string(), b"first".to_vec()),
            ("repeated".to_string(), b"second".to_vec()),
            ("empty".to_string(), Vec::new()),
        ]);
        messages.push(sent);
    }
    for null_key in 0..NULL_KEY_COUNT {
        let index = messages.len();
        let value = format!("null key {null_key}");
        messages.push(message(
            index,
            None,
            Some(value.as_bytes()),
            base + index as i64,
        ));
    }
    let specials: [(OptionalBytes, OptionalBytes); 4] = [
        (Some(b""), Some(b"empty key")),
        (Some(b"empty-value"), Some(b"")),
        (Some(b"null-value"), None),
        (None, Some(b"")),
    ];
    for (key, value) in specials {
        let index = messages.len();
        messages.push(message(index, key, value, base + index as i64));
    }
    messages
}

fn big_messages() -> Vec<Sent> {
    let base = base_timestamp_ms();
    let mut rng = fastrand::Rng::with_seed(20240601);
    let big: Vec<u8> = (0..BIG_VALUE_BYTES).map(|_| rng.u8(..)).collect();
    vec![
        message(0, Some(b"before"), Some(b"small before"), base),
        message(1, Some(b"big"), Some(&big), base + 1),
        message(2, Some(b"after"), Some(b"small after"), base + 2),
    ]
}

fn codec_messages(codec: &str) -> Vec<Sent> {
    let base = base_timestamp_ms();
    (0..CODEC_COUNT)
        .map(|index| {
            let key = format!("k{index}");
            let value = format!("{codec} message {index} ").repeat(20);
            let mut sent = message(
                index,
                Some(key.as_bytes()),
                Some(value.as_bytes()),
                base + index as i64,
            );
            sent.headers = vec![("codec".to_string(), codec.as_bytes().to_vec())];
            sent
        })
        .collect()
}

fn sequence_messages(stem: &str, count: usize) -> Vec<Sent> {
    let base = base_timestamp_ms();
    (0..count)
        .map(|index| {
            let key = format!("k{}", index % 11);
            let value = format!("{stem} {index}");
            message(
                index,
                Some(key.as_bytes()),
                Some(value.as_bytes()),
                base + index as i64,
            )
        })
        .collect()
}

/// A message's index, and its acknowledged partition and offset or the delivery error.
type DeliveryReport = (usize, Result<(i32, i64), String>);

/// Records every delivery report.
struct Deliveries {
    reports: Mutex<Vec<DeliveryReport>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<usize>;

    fn delivery(&self, result: &DeliveryResult<'_>, index: Box<usize>) {
        let outcome = match result {
            Ok(delivered) => Ok((delivered.partition(), delivered.offset())),
            Err((error, _)) => Err(error.to_string()),
        };
        self.reports
            .lock()
            .expect("no delivery callback panicked")
            .push((*index, outcome));
    }
}

/// Creates `topics` (name, partitions, configs) and waits until each has a leader on every
/// partition.
fn create_topics(bootstrap: &str, topics: &[TopicSpec]) {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap, &[])
        .create()
        .expect("create the admin client");
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions, configs)| {
            configs.iter().fold(
                NewTopic::new(name, *partitions, TopicReplication::Fixed(1)),
                |topic, (key, value)| topic.set(key, value),
            )
        })
        .collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(OPERATION_TIMEOUT))
        .request_timeout(Some(OPERATION_TIMEOUT));
    let results = futures_lite::future::block_on(admin.create_topics(&new_topics, &options))
        .expect("CreateTopics request");
    for result in results {
        if let Err((name, code)) = result {
            panic!("CreateTopics {name}: {code:?}");
        }
    }
    let deadline = Instant::now() + READ_TIMEOUT;
    loop {
        let metadata = admin
            .inner()
            .fetch_metadata(None, OPERATION_TIMEOUT)
            .expect("Metadata request");
        let missing: Vec<String> = topics
            .iter()
            .filter_map(|(name, partitions, _)| {
                let topic = metadata.topics().iter().find(|topic| topic.name() == name);
                match topic {
                    None => Some(format!("{name}: absent")),
                    Some(topic) if topic.error().is_some() => {
                        Some(format!("{name}: {:?}", topic.error()))
                    }
                    Some(topic) if topic.partitions().len() != *partitions as usize => {
                        Some(format!("{name}: {} partitions", topic.partitions().len()))
                    }
                    Some(topic) if topic.partitions().iter().any(|p| p.leader() < 0) => {
                        Some(format!("{name}: a partition has no leader"))
                    }
                    Some(_) => None,
                }
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "created topics not in Metadata with leaders: {missing:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Produces `messages` in order and fills in each one's acknowledged partition and offset; panics
/// on a delivery error or a message still undelivered after the flush.
fn produce(bootstrap: &str, topic: &str, messages: &mut [Sent], settings: &[(&str, &str)]) {
    let mut all_settings = vec![("message.timeout.ms", "60000"), ("linger.ms", "5")];
    all_settings.extend_from_slice(settings);
    let producer: BaseProducer<Deliveries> = client_config(bootstrap, &all_settings)
        .create_with_context(Deliveries {
            reports: Mutex::new(Vec::new()),
        })
        .expect("create the producer");
    for sent in messages.iter() {
        let headers = sent
            .headers
            .iter()
            .fold(OwnedHeaders::new(), |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(value),
                })
            });
        let mut record =
            BaseRecord::<[u8], [u8], Box<usize>>::with_opaque_to(topic, Box::new(sent.index))
                .headers(headers)
                .timestamp(sent.timestamp_ms);
        if let Some(key) = &sent.key {
            record = record.key(key);
        }
        if let Some(value) = &sent.value {
            record = record.payload(value);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    producer.poll(Duration::from_millis(100));
                }
                Err((error, _)) => panic!("producing message {} to {topic}: {error}", sent.index),
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Timeout::After(FLUSH_TIMEOUT))
        .unwrap_or_else(|error| panic!("flushing the producer of {topic}: {error}"));
    let reports = std::mem::take(
        &mut *producer
            .context()
            .reports
            .lock()
            .expect("no delivery callback panicked"),
    );
    assert_eq!(
        reports.len(),
        messages.len(),
        "{topic}: delivery reports for {} of {} messages",
        reports.len(),
        messages.len()
    );
    let errors: Vec<_> = reports
        .iter()
        .filter_map(|(index, outcome)| outcome.as_ref().err().map(|error| (index, error)))
        .collect();
    assert!(
        errors.is_empty(),
        "{topic}: {} delivery errors, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    for (index, outcome) in reports {
        if let Ok((partition, offset)) = outcome {
            messages[index].partition = partition;
            messages[index].offset = offset;
        }
    }
}

/// Groups acknowledged messages by partition in offset order, checking the offsets are 0, 1, 2, ...
/// (fresh topics), one key always went to one partition, and each partition kept produce order.
fn expected_by_partition(topic: &str, messages: &[Sent]) -> BTreeMap<i32, Vec<Sent>> {
    let mut by_partition: BTreeMap<i32, Vec<Sent>> = BTreeMap::new();
    let mut key_partition: BTreeMap<Vec<u8>, i32> = BTreeMap::new();
    for sent in messages {
        if let Some(key) = &sent.key {
            let first = *key_partition.entry(key.clone()).or_insert(sent.partition);
            assert_eq!(
                first,
                sent.partition,
                "{topic}: key {:?} went to partitions {first} and {}",
                String::from_utf8_lossy(key),
                sent.partition
            );
        }
        by_partition
            .entry(sent.partition)
            .or_default()
            .push(sent.clone());
    }
    for (partition, group) in by_partition.iter_mut() {
        group.sort_by_key(|sent| sent.offset);
        let offsets: Vec<i64> = group.iter().map(|sent| sent.offset).collect();
        let want: Vec<i64> = (0..group.len() as i64).collect();
        assert_eq!(
            offsets, want,
            "{topic} partition {partition}: acknowledged offsets"
        );
        assert!(
            group.windows(2).all(|pair| pair[0].index < pair[1].index),
            "{topic} partition {partition}: produce order was not kept"
        );
    }
    by_partition
}

/// Reads `counts` (partition -> count) of `topic` from the beginning, then checks every
/// partition's watermarks are exactly (0, count).
fn read(
    bootstrap: &str,
    topic: &str,
    counts: &BTreeMap<i32, usize>,
    settings: &[(&str, &str)],
) -> BTreeMap<i32, Vec<Received>> {
    let mut all_settings = vec![
        // librdkafka wants a group id for a consumer; with assign() and no commits the group
        // coordinator is never needed.
        ("group.id", "ringlog-e2e-unused"),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", "error"),
        ("fetch.wait.max.ms", "100"),
    ];
    all_settings.extend_from_slice(settings);
    let consumer: BaseConsumer = client_config(bootstrap, &all_settings)
        .create()
        .expect("create the consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in counts.keys() {
        assignment
            .add_partition_offset(topic, *partition, Offset::Beginning)
            .expect("add a partition to the assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let mut received: BTreeMap<i32, Vec<Received>> = counts
        .keys()
        .map(|partition| (*partition, Vec::new()))
        .collect();
    let mut errors = Vec::new();
    let deadline = Instant::now() + READ_TIMEOUT;
    while counts
        .iter()
        .any(|(partition, count)| received[partition].len() < *count)
    {
        if Instant::now() > deadline {
            let progress: BTreeMap<i32, usize> = received
                .iter()
                .map(|(partition, records)| (*partition, records.len()))
                .collect();
            panic!(
                "{topic}: read {progress:?} in {READ_TIMEOUT:?}, expected {counts:?}; consumer \
                 errors: {errors:?}"
            );
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(error)) => {
                eprintln!("consumer error on {topic}: {error}");
                errors.push(error.to_string());
            }
            Some(Ok(consumed)) => {
                let headers = consumed
                    .headers()
                    .map(|headers| {
                        headers
                            .iter()
                            .map(|header| {
                                (header.key.to_string(), header.value.map(<[u8]>::to_vec))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                received
                    .entry(consumed.partition())
                    .or_default()
                    .push(Received {
                        offset: consumed.offset(),
                        key: consumed.key().map(<[u8]>::to_vec),
                        value: consumed.payload().map(<[u8]>::to_vec),
                        headers,
                        timestamp: consumed.timestamp(),
                    });
            }
        }
    }
    for (partition, count) in counts {
        let watermarks = consumer
            .fetch_watermarks(topic, *partition, OPERATION_TIMEOUT)
            .expect("ListOffsets");
        assert_eq!(
            watermarks,
            (0, *count as i64),
            "{topic} partition {partition}: watermarks"
        );
    }
    received
}

fn describe(bytes: &Option<Vec<u8>>) -> String {
    match bytes {
        None => "None".to_string(),
        Some(bytes) if bytes.len() <= 80 => format!("{:?}", String::from_utf8_lossy(bytes)),
        Some(bytes) => format!("<{} bytes>", bytes.len()),
    }
}

fn compare(
    topic: &str,
    expected: &BTreeMap<i32, Vec<Sent>>,
    received: &BTreeMap<i32, Vec<Received>>,
) {
    for (partition, got) in received {
        let empty = Vec::new();
        let want = expected.get(partition).unwrap_or(&empty);
        assert_eq!(
            got.len(),
            want.len(),
            "{topic} partition {partition}: messages read"
        );
        for (position, (sent, record)) in want.iter().zip(got).enumerate() {
            let place = format!(
                "{topic} partition {partition} offset {} (message {})",
                record.offset, sent.index
            );
            assert_eq!(record.offset, position as i64, "{place}: offset");
            assert!(
                record.key == sent.key,
                "{place}: key {}, expected {}",
                describe(&record.key),
                describe(&sent.key)
            );
            assert!(
                record.value == sent.value,
                "{place}: value {}, expected {}",
                describe(&record.value),
                describe(&sent.value)
            );
            let want_headers: Vec<(String, Option<Vec<u8>>)> = sent
                .headers
                .iter()
                .map(|(key, value)| (key.clone(), Some(value.clone())))
                .collect();
            assert_eq!(record.headers, want_headers, "{place}: headers");
            assert_eq!(
                record.timestamp,
                Timestamp::CreateTime(sent.timestamp_ms),
                "{place}: timestamp"
            );
        }
    }
}

/// Produces, reads back and compares; returns the count per partition.
fn produce_and_check(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    mut messages: Vec<Sent>,
    producer_settings: &[(&str, &str)],
    consumer_settings: &[(&str, &str)],
) -> BTreeMap<i32, usize> {
    produce(bootstrap, topic, &mut messages, producer_settings);
    let expected = expected_by_partition(topic, &messages);
    let counts: BTreeMap<i32, usize> = (0..partitions)
        .map(|partition| (partition, expected.get(&partition).map_or(0, Vec::len)))
        .collect();
    let received = read(bootstrap, topic, &counts, consumer_settings);
    compare(topic, &expected, &received);
    counts
}

#[test]
fn rdkafka_scenario() {
    let mut broker = Broker::start();
    let bootstrap = broker.bootstrap();
    let prefix = unique_topic("rdkafka");
    let keyed = format!("{prefix}-keyed");
    let big = format!("{prefix}-big");
    let idempotent = format!("{prefix}-idempotent");
    let mut topics = vec![
        (keyed.clone(), PARTITIONS, Vec::new()),
        (
            big.clone(),
            1,
            vec![("max.message.bytes", BIG_MAX_MESSAGE_BYTES.to_string())],
        ),
        (idempotent.clone(), PARTITIONS, Vec::new()),
    ];
    for codec in CODECS {
        topics.push((format!("{prefix}-{codec}"), 1, Vec::new()));
    }
    create_topics(&bootstrap, &topics);
    println!("CreateTopics: ok");

    let counts = produce_and_check(&bootstrap, &keyed, PARTITIONS, keyed_messages(), &[], &[]);
    println!("keyed messages, headers, timestamps, null keys and values: ok {counts:?}");

    let big_limit = BIG_MAX_MESSAGE_BYTES.to_string();
    produce_and_check(
        &bootstrap,
        &big,
        1,
        big_messages(),
        &[("message.max.bytes", &big_limit)],
        &[("fetch.message.max.bytes", "4194304")],
    );
    println!("1 MiB message: ok");

    for codec in CODECS {
        produce_and_check(
            &bootstrap,
            &format!("{prefix}-{codec}"),
            1,
            codec_messages(codec),
            &[("compression.type", codec), ("linger.ms", "50")],
            &[],
        );
        println!("{codec} batches: ok");
    }

    let counts = produce_and_check(
        &bootstrap,
        &idempotent,
        PARTITIONS,
        sequence_messages("idempotent", IDEMPOTENT_COUNT),
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("max.in.flight.requests.per.connection", "5"),
            ("linger.ms", "1"),
            ("batch.num.messages", "50"),
        ],
        &[],
    );
    println!("idempotent producer: ok {counts:?}");

    broker.assert_alive("after the rdkafka scenario");
    broker.stop();
}
