//! The embedded broker used the way an application's tests use it, with the `rdkafka` crate:
//! start a broker inside the test, point a client at `broker.bootstrap()`, and let the broker
//! stop when it goes out of scope. The first test is the example the README shows.
//!
//! Also: two brokers at once in one process, a clean stop on drop (the logs' clean-shutdown
//! markers written, the port released, the records there for a broker restarted on the same
//! data), the builder's settings reaching the broker, and startup failures returned as errors.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use ringlog::EmbeddedBroker;

/// Partitions of the topics the tests create: more than one, so keys spread.
const PARTITIONS: i32 = 3;
/// Messages per test: enough to cover every partition, quick to check.
const MESSAGE_COUNT: usize = 100;
/// Distinct keys, so several messages share a key and their order can be checked.
const KEY_COUNT: usize = 7;
/// The bound on every client operation: a produce, a read, topic creation. Each takes
/// milliseconds on a broker in the same process; the rest is room for a loaded machine.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// One message: key, value.
type Keyed = (String, String);

/// A topic, messages produced to it, and the messages consumed back: the example.
#[test]
fn keyed_messages_produced_to_an_embedded_broker_are_consumed_back() {
    let broker = EmbeddedBroker::start().expect("the embedded broker starts");
    let bootstrap = broker.bootstrap();
    assert!(bootstrap.starts_with("127.0.0.1:"), "{bootstrap}");

    create_topic(&bootstrap, "orders", PARTITIONS);
    let sent = keyed_messages("order");
    produce(&bootstrap, "orders", &sent);
    let received = consume(&bootstrap, "orders", PARTITIONS, sent.len());

    assert_same_messages(&sent, &received);
    let data_dir = broker.data_dir().to_path_buf();
    assert!(
        data_dir.join("orders-0").is_dir(),
        "partition 0 lives in the data directory"
    );
    drop(broker);
    assert!(
        !data_dir.exists(),
        "the temporary data directory {} is removed after the broker stops",
        data_dir.display()
    );
}

#[test]
fn two_embedded_brokers_run_at_once_in_one_process() {
    let first = EmbeddedBroker::start().expect("the first broker starts");
    let second = EmbeddedBroker::start().expect("the second broker starts");
    assert_ne!(first.local_addr(), second.local_addr());
    assert_ne!(first.data_dir(), second.data_dir());

    // The same topic name on both: each broker must keep its own records.
    let to_first = keyed_messages("first");
    let to_second = keyed_messages("second");
    for (broker, messages) in [(&first, &to_first), (&second, &to_second)] {
        create_topic(&broker.bootstrap(), "shared-name", PARTITIONS);
        produce(&broker.bootstrap(), "shared-name", messages);
    }
    for (broker, messages) in [(&first, &to_first), (&second, &to_second)] {
        let received = consume(
            &broker.bootstrap(),
            "shared-name",
            PARTITIONS,
            messages.len(),
        );
        assert_same_messages(messages, &received);
    }
    first.stop().expect("the first broker stops cleanly");
    // The second one still serves after the first has stopped.
    let received = consume(
        &second.bootstrap(),
        "shared-name",
        PARTITIONS,
        to_second.len(),
    );
    assert_same_messages(&to_second, &received);
    second.stop().expect("the second broker stops cleanly");
}

#[test]
fn dropping_the_broker_stops_it_cleanly_and_a_restart_on_its_data_finds_the_records() {
    let data = tempfile::tempdir().expect("a data directory");
    let broker = EmbeddedBroker::builder()
        .data_dir(data.path())
        .start()
        .expect("the broker starts");
    let address = broker.local_addr();
    create_topic(&broker.bootstrap(), "kept", PARTITIONS);
    let sent = keyed_messages("kept");
    produce(&broker.bootstrap(), "kept", &sent);
    drop(broker);

    for partition in 0..PARTITIONS {
        let marker = data.path().join(format!("kept-{partition}/clean-shutdown"));
        assert!(
            marker.is_file(),
            "{} written by the clean stop",
            marker.display()
        );
    }
    assert_port_released(address);

    let restarted = EmbeddedBroker::builder()
        .data_dir(data.path())
        .start()
        .expect("a broker restarts on the same data");
    let received = consume(&restarted.bootstrap(), "kept", PARTITIONS, sent.len());
    assert_same_messages(&sent, &received);
    restarted
        .stop()
        .expect("the restarted broker stops cleanly");
    assert!(
        data.path().join("kept-0").is_dir(),
        "a data directory given to the builder is left in place"
    );
}

#[test]
fn the_builder_settings_reach_the_broker() {
    let broker = EmbeddedBroker::builder()
        .cores(2)
        .num_partitions(4)
        .topic_default("retention.ms", "3600000")
        .start()
        .expect("the broker starts");
    // Produce to a topic nobody created: auto-created with num_partitions partitions.
    produce(&broker.bootstrap(), "auto", &keyed_messages("auto"));
    let admin = admin(&broker.bootstrap());
    let metadata = admin
        .inner()
        .fetch_metadata(Some("auto"), CLIENT_TIMEOUT)
        .expect("Metadata");
    assert_eq!(metadata.topics()[0].partitions().len(), 4);
    let options = AdminOptions::new().request_timeout(Some(CLIENT_TIMEOUT));
    let configs = futures_lite::future::block_on(
        admin.describe_configs(&[ResourceSpecifier::Topic("auto")], &options),
    )
    .expect("DescribeConfigs");
    let config = configs[0].as_ref().expect("the topic's configs");
    let retention = config
        .get("retention.ms")
        .expect("retention.ms is described");
    assert_eq!(retention.value.as_deref(), Some("3600000"));
    broker.stop().expect("the broker stops cleanly");

    let broker = EmbeddedBroker::builder()
        .auto_create_topics(false)
        .start()
        .expect("the broker starts");
    let metadata = admin_metadata(&broker.bootstrap(), "never-created");
    assert_eq!(
        metadata.topics()[0].error().map(RDKafkaErrorCode::from),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition),
        "no topic is created on Metadata with auto_create_topics(false)"
    );
}

#[test]
fn a_broker_that_cannot_start_returns_an_error() {
    let data = tempfile::tempdir().expect("a directory");
    let not_a_directory = data.path().join("file");
    std::fs::write(&not_a_directory, b"in the way").expect("write a file");
    let error = EmbeddedBroker::builder()
        .data_dir(&not_a_directory)
        .start()
        .expect_err("a data directory that is a file");
    assert!(
        error
            .to_string()
            .contains(&not_a_directory.display().to_string()),
        "the error names the path: {error}"
    );

    let running = EmbeddedBroker::builder()
        .data_dir(data.path().join("locked"))
        .start()
        .expect("the first broker starts");
    let error = EmbeddedBroker::builder()
        .data_dir(running.data_dir())
        .start()
        .expect_err("a second broker on a locked data directory");
    assert!(
        matches!(
            error,
            ringlog::Error::Broker(ringlog_net::Error::DataDirLocked { .. })
        ),
        "{error}"
    );
    running.stop().expect("the first broker stops cleanly");
}

/// `MESSAGE_COUNT` messages over `KEY_COUNT` keys, values naming `stem` and their index.
fn keyed_messages(stem: &str) -> Vec<Keyed> {
    (0..MESSAGE_COUNT)
        .map(|index| {
            (
                format!("key-{}", index % KEY_COUNT),
                format!("{stem} {index}"),
            )
        })
        .collect()
}

fn client(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    config
}

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    client(bootstrap).create().expect("an admin client")
}

/// Metadata for `topic` alone, asked without creating it.
fn admin_metadata(bootstrap: &str, topic: &str) -> rdkafka::metadata::Metadata {
    let consumer: BaseConsumer = client(bootstrap)
        .set("allow.auto.create.topics", "true")
        .create()
        .expect("a client");
    consumer
        .fetch_metadata(Some(topic), CLIENT_TIMEOUT)
        .expect("Metadata")
}

fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let options = AdminOptions::new()
        .operation_timeout(Some(CLIENT_TIMEOUT))
        .request_timeout(Some(CLIENT_TIMEOUT));
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let results =
        futures_lite::future::block_on(admin(bootstrap).create_topics(&[new_topic], &options))
            .expect("CreateTopics");
    for result in results {
        if let Err((name, code)) = result {
            panic!("CreateTopics {name}: {code:?}");
        }
    }
}

/// Produces `messages` in order and waits until every one is acknowledged.
fn produce(bootstrap: &str, topic: &str, messages: &[Keyed]) {
    let producer: BaseProducer = client(bootstrap)
        .set("message.timeout.ms", "30000")
        .create()
        .expect("a producer");
    for (key, value) in messages {
        let mut record = BaseRecord::to(topic).key(key).payload(value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    producer.poll(Duration::from_millis(10));
                }
                Err((error, _)) => panic!("producing to {topic}: {error}"),
            }
        }
    }
    producer
        .flush(CLIENT_TIMEOUT)
        .unwrap_or_else(|error| panic!("flushing to {topic}: {error}"));
    assert_eq!(producer.in_flight_count(), 0, "every message acknowledged");
}

/// Reads `count` messages of `topic`'s `partitions` from the beginning: (partition, key, value)
/// in each partition's offset order.
fn consume(bootstrap: &str, topic: &str, partitions: i32, count: usize) -> Vec<(i32, Keyed)> {
    let consumer: BaseConsumer = client(bootstrap)
        // librdkafka wants a group id; with assign() and no commits no group is used.
        .set("group.id", "embedded-test")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .expect("assign a partition");
    }
    consumer.assign(&assignment).expect("assign");
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut received = Vec::with_capacity(count);
    while received.len() < count {
        assert!(
            Instant::now() < deadline,
            "{topic}: {} of {count} messages read within {CLIENT_TIMEOUT:?}",
            received.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.unwrap_or_else(|error| panic!("reading {topic}: {error}"));
        let text =
            |bytes: Option<&[u8]>| String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned();
        received.push((
            message.partition(),
            (text(message.key()), text(message.payload())),
        ));
    }
    // Nothing beyond what was produced.
    if let Some(Ok(extra)) = consumer.poll(Duration::from_millis(500)) {
        panic!("{topic}: an extra message at offset {}", extra.offset());
    }
    received
}

/// Every sent message came back exactly once, each key from one partition, and the messages of a
/// key in the order they were sent.
fn assert_same_messages(sent: &[Keyed], received: &[(i32, Keyed)]) {
    let mut sent_sorted = sent.to_vec();
    sent_sorted.sort();
    let mut received_sorted: Vec<Keyed> = received.iter().map(|(_, keyed)| keyed.clone()).collect();
    received_sorted.sort();
    assert_eq!(
        received_sorted, sent_sorted,
        "the messages read back are the ones sent"
    );

    let mut by_key: BTreeMap<&str, (i32, Vec<&str>)> = BTreeMap::new();
    for (partition, (key, value)) in received {
        let entry = by_key.entry(key).or_insert((*partition, Vec::new()));
        assert_eq!(
            entry.0, *partition,
            "key {key} was read from two partitions"
        );
        entry.1.push(value);
    }
    for (key, (_, values)) in by_key {
        let sent_values: Vec<&str> = sent
            .iter()
            .filter(|(sent_key, _)| sent_key == key)
            .map(|(_, value)| value.as_str())
            .collect();
        assert_eq!(values, sent_values, "key {key}: messages in the order sent");
    }
}

/// Nothing listens on `address` any more and the port can be bound again.
fn assert_port_released(address: SocketAddr) {
    let refused = TcpStream::connect_timeout(&address, Duration::from_secs(1));
    assert!(refused.is_err(), "something still accepts on {address}");
    TcpListener::bind(address).unwrap_or_else(|error| panic!("binding {address} again: {error}"));
}
