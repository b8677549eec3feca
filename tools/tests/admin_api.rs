//! The admin port of a real `ringlog serve` process: health and readiness, then a topic produced
//! to and consumed by a group with the `rdkafka` crate, after which `/metrics` (read back with a
//! Prometheus text parser) must show at least that traffic on labelled per-shard series, and the
//! JSON endpoints must show the topic, its partitions' offsets and the group's lag. Garbage sent
//! to the admin port must leave the broker serving Kafka.
//!
//! Needs nothing outside cargo, so it never skips.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_parse::{Scrape, Value};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value as Json;

use common::rdkafka::client_config;
use common::{api_versions_ok, ringlog_command, unique_topic, Broker};

const PARTITIONS: i32 = 3;
const RECORDS: usize = 300;
/// Shards of the test broker (the harness runs `--cores 2`).
const SHARDS: usize = 2;
/// Bounds of client operations and of waiting for the broker to become ready or the group
/// to settle.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
const WAIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Each HTTP request's connect, read and write.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

fn http() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(HTTP_TIMEOUT).build()
}

/// GETs `path`; (status, Content-Type, body), whatever the status, or why there is none.
fn try_get(broker: &Broker, path: &str) -> Result<(u16, String, String), String> {
    let response = match http().get(&broker.admin_url(path)).call() {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(error) => return Err(format!("GET {path}: {error}")),
    };
    let status = response.status();
    let content_type = response.header("Content-Type").unwrap_or("").to_string();
    let body = response
        .into_string()
        .map_err(|error| format!("GET {path}: reading the body: {error}"))?;
    Ok((status, content_type, body))
}

fn get(broker: &Broker, path: &str) -> (u16, String, String) {
    try_get(broker, path).unwrap_or_else(|error| panic!("{error}"))
}

/// GETs a JSON endpoint that must answer 200.
fn get_json(broker: &Broker, path: &str) -> Json {
    let (status, content_type, body) = get(broker, path);
    assert_eq!(status, 200, "GET {path}: {body}");
    assert_eq!(content_type, "application/json", "GET {path}");
    serde_json::from_str(&body).unwrap_or_else(|error| panic!("GET {path}: {error}: {body}"))
}

fn create_topic(bootstrap: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap, &[])
        .create()
        .expect("create the admin client");
    let options = AdminOptions::new()
        .operation_timeout(Some(OPERATION_TIMEOUT))
        .request_timeout(Some(OPERATION_TIMEOUT));
    let new_topic =
        NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1)).set("retention.ms", "3600000");
    let results = futures_lite::future::block_on(admin.create_topics(&[new_topic], &options))
        .expect("CreateTopics request");
    for result in results {
        if let Err((name, code)) = result {
            panic!("CreateTopics {name}: {code:?}");
        }
    }
}

/// Delivery reports: (partition, offset) or the error.
struct Deliveries {
    reports: Mutex<Vec<Result<(i32, i64), String>>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let report = match result {
            Ok(delivered) => Ok((delivered.partition(), delivered.offset())),
            Err((error, _)) => Err(error.to_string()),
        };
        self.reports
            .lock()
            .expect("no delivery callback panicked")
            .push(report);
    }
}

/// Produces [`RECORDS`] keyed records; returns the records per partition and the bytes of
/// their keys and values.
fn produce(bootstrap: &str, topic: &str) -> (BTreeMap<i32, i64>, u64) {
    let producer: BaseProducer<Deliveries> = client_config(
        bootstrap,
        &[("linger.ms", "5"), ("message.timeout.ms", "60000")],
    )
    .create_with_context(Deliveries {
        reports: Mutex::new(Vec::new()),
    })
    .expect("create the producer");
    let mut payload_bytes = 0;
    for index in 0..RECORDS {
        let key = format!("key-{index}");
        let value = format!("admin api value {index} {}", "x".repeat(index % 100));
        payload_bytes += (key.len() + value.len()) as u64;
        let mut record = BaseRecord::to(topic).key(&key).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((error, returned)) => {
                    // A full local queue: let deliveries drain it, then try again.
                    assert!(
                        matches!(
                            error,
                            KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
                        ),
                        "send: {error}"
                    );
                    producer.poll(Duration::from_millis(10));
                    record = returned;
                }
            }
        }
    }
    producer
        .flush(Timeout::After(OPERATION_TIMEOUT))
        .expect("flush the producer");
    let reports = producer
        .context()
        .reports
        .lock()
        .expect("no delivery callback panicked")
        .clone();
    assert_eq!(
        reports.len(),
        RECORDS,
        "every record gets a delivery report"
    );
    let mut per_partition = BTreeMap::new();
    for report in reports {
        let (partition, _) = report.unwrap_or_else(|error| panic!("delivery failed: {error}"));
        *per_partition.entry(partition).or_insert(0_i64) += 1;
    }
    (per_partition, payload_bytes)
}

/// Reads every record as a member of `group` (classic protocol, subscribed), commits one short
/// of each partition's end, and returns the consumer (still a member) for the group checks.
fn consume_and_commit(
    bootstrap: &str,
    topic: &str,
    group: &str,
    produced: &BTreeMap<i32, i64>,
) -> BaseConsumer {
    let consumer: BaseConsumer = client_config(
        bootstrap,
        &[
            ("group.id", group),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
            ("fetch.wait.max.ms", "100"),
            ("session.timeout.ms", "30000"),
        ],
    )
    .create()
    .expect("create the consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut received = 0;
    let deadline = Instant::now() + WAIT_TIMEOUT;
    while received < RECORDS {
        assert!(
            Instant::now() < deadline,
            "read {received} of {RECORDS} records in {WAIT_TIMEOUT:?}"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                assert_eq!(message.topic(), topic);
                received += 1;
            }
            Some(Err(error)) => panic!("consume: {error}"),
            None => {}
        }
    }
    let mut offsets = TopicPartitionList::new();
    for (partition, count) in produced {
        offsets
            .add_partition_offset(topic, *partition, Offset::Offset(count - 1))
            .expect("add an offset to commit");
    }
    consumer
        .commit(&offsets, CommitMode::Sync)
        .expect("commit offsets");
    consumer
}

/// Parses `/metrics`, checking that every sample line became a sample (the parser skips lines
/// it cannot read).
fn scrape(broker: &Broker) -> Scrape {
    let (status, content_type, body) = get(broker, "/metrics");
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let scrape = Scrape::parse(body.lines().map(|line| Ok(line.to_string())))
        .expect("the exposition parses");
    let sample_lines = body
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .count();
    // A histogram's _sum and _count are samples of their own; its buckets become one sample.
    let parsed: usize = scrape
        .samples
        .iter()
        .map(|sample| match &sample.value {
            Value::Histogram(buckets) => buckets.len(),
            _ => 1,
        })
        .sum();
    assert_eq!(parsed, sample_lines, "lines the parser skipped in\n{body}");
    scrape
}

/// The sum over shards of a counter or gauge, checking each shard has a sample of its own.
fn per_shard_total(scrape: &Scrape, metric: &str) -> f64 {
    let mut shards = Vec::new();
    let mut total = 0.0;
    for sample in scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == metric)
    {
        let value = match sample.value {
            Value::Counter(value) | Value::Gauge(value) => value,
            ref other => panic!("{metric} is {other:?}, not a counter or gauge"),
        };
        let shard = sample
            .labels
            .get("shard")
            .unwrap_or_else(|| panic!("{metric} has a sample without a shard label"));
        shards.push(shard.to_string());
        total += value;
    }
    shards.sort();
    shards.dedup();
    let expected: Vec<String> = (0..SHARDS).map(|shard| shard.to_string()).collect();
    assert_eq!(shards, expected, "{metric}'s shards");
    total
}

/// Observations of a histogram over all shards (its +Inf bucket), checking `_count` agrees.
fn histogram_count(scrape: &Scrape, metric: &str) -> f64 {
    let mut total = 0.0;
    let mut shards = 0;
    for sample in scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == metric)
    {
        let Value::Histogram(buckets) = &sample.value else {
            panic!("{metric} is {:?}, not a histogram", sample.value);
        };
        let infinite = buckets
            .iter()
            .find(|bucket| bucket.less_than.is_infinite())
            .unwrap_or_else(|| panic!("{metric} has no +Inf bucket"));
        let shard = sample.labels.get("shard").expect("a shard label");
        let count = scrape
            .samples
            .iter()
            .find(|count| {
                count.metric == format!("{metric}_count")
                    && count.labels.get("shard") == Some(shard)
            })
            .unwrap_or_else(|| panic!("{metric}_count for shard {shard}"));
        assert!(
            matches!(count.value, Value::Untyped(value) if value == infinite.count),
            "{metric}: _count {:?} and the +Inf bucket {} differ",
            count.value,
            infinite.count
        );
        total += infinite.count;
        shards += 1;
    }
    assert_eq!(shards, SHARDS, "{metric} has one histogram per shard");
    total
}

/// Sends `bytes` to the admin port and returns what came back before the server closed.
fn send_raw(broker: &Broker, bytes: &[u8]) -> String {
    let mut stream =
        TcpStream::connect_timeout(&broker.admin_addr(), HTTP_TIMEOUT).expect("connect");
    stream
        .set_read_timeout(Some(HTTP_TIMEOUT))
        .expect("read timeout");
    // The server may close as soon as it has seen enough to refuse: later writes may fail.
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn admin_api_reports_health_metrics_topics_partitions_and_groups() {
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();

    // The harness waited for the admin port to accept; every shard may not serve yet.
    let deadline = Instant::now() + WAIT_TIMEOUT;
    loop {
        let (status, _, body) = get(&broker, "/api/v1/ready");
        if status == 200 {
            let ready: Json = serde_json::from_str(&body).expect("ready JSON");
            assert_eq!(ready["ready"], true);
            assert_eq!(ready["shards"].as_array().map(Vec::len), Some(SHARDS));
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "not ready: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get_json(&broker, "/api/v1/health")["status"], "ok");
    let brokers = get_json(&broker, "/api/v1/brokers");
    assert_eq!(brokers[0]["node_id"], 1);
    assert_eq!(brokers[0]["port"], broker.addr().port());
    assert_eq!(brokers[0]["shards"], SHARDS);

    let topic = unique_topic("admin-api");
    create_topic(&bootstrap, &topic);
    let (produced, payload_bytes) = produce(&bootstrap, &topic);
    let group = unique_topic("admin-api-group");
    let consumer = consume_and_commit(&bootstrap, &topic, &group, &produced);

    let metrics = scrape(&broker);
    let messages_in = per_shard_total(&metrics, "ringlog_messages_in_total");
    assert!(messages_in >= RECORDS as f64, "messages in {messages_in}");
    let bytes_in = per_shard_total(&metrics, "ringlog_bytes_in_total");
    assert!(
        bytes_in >= payload_bytes as f64,
        "bytes in {bytes_in} < payloads {payload_bytes}"
    );
    let messages_out = per_shard_total(&metrics, "ringlog_messages_out_total");
    assert!(
        messages_out >= RECORDS as f64,
        "messages out {messages_out}"
    );
    assert!(per_shard_total(&metrics, "ringlog_bytes_out_total") > 0.0);
    let produce_requests: f64 = metrics
        .samples
        .iter()
        .filter(|sample| {
            sample.metric == "ringlog_requests_total"
                && sample.labels.get("api") == Some("Produce")
                && sample.labels.get("error") == Some("NONE")
        })
        .map(|sample| match sample.value {
            Value::Counter(value) => value,
            _ => 0.0,
        })
        .sum();
    assert!(
        produce_requests >= 1.0,
        "Produce requests {produce_requests}"
    );
    assert!(histogram_count(&metrics, "ringlog_fsync_latency_seconds") > 0.0);
    assert!(histogram_count(&metrics, "ringlog_produce_latency_seconds") >= produce_requests);
    assert!(histogram_count(&metrics, "ringlog_fetch_latency_seconds") > 0.0);
    assert!(per_shard_total(&metrics, "ringlog_connections") >= 1.0);
    assert!(per_shard_total(&metrics, "ringlog_disk_bytes") > 0.0);
    // The topic's partitions plus the 8 `__consumer_offsets` ones, spread over the shards.
    let partitions: f64 = metrics
        .samples
        .iter()
        .filter(|sample| {
            sample.metric == "ringlog_partitions" && sample.labels.get("state") == Some("online")
        })
        .map(|sample| match sample.value {
            Value::Gauge(value) => value,
            _ => 0.0,
        })
        .sum();
    assert!(
        partitions >= f64::from(PARTITIONS),
        "partitions {partitions}"
    );
    per_shard_total(&metrics, "ringlog_batch_cache_hits_total");
    per_shard_total(&metrics, "ringlog_bus_messages_sent_total");

    let topics = get_json(&broker, "/api/v1/topics");
    let listed = topics
        .as_array()
        .and_then(|topics| topics.iter().find(|entry| entry["name"] == topic.as_str()))
        .unwrap_or_else(|| panic!("{topic} not in {topics}"));
    assert_eq!(listed["partitions"], PARTITIONS);
    assert_eq!(listed["configs"]["retention.ms"], "3600000");

    let partitions = get_json(&broker, "/api/v1/partitions");
    let ours: Vec<&Json> = partitions
        .as_array()
        .expect("a list of partitions")
        .iter()
        .filter(|entry| entry["topic"] == topic.as_str())
        .collect();
    assert_eq!(ours.len(), PARTITIONS as usize, "{partitions}");
    for entry in &ours {
        let index = entry["partition"].as_i64().expect("a partition index") as i32;
        let count = produced.get(&index).copied().unwrap_or(0);
        assert_eq!(entry["log_end_offset"], count, "{entry}");
        assert_eq!(entry["high_watermark"], count, "{entry}");
        assert_eq!(entry["log_start_offset"], 0, "{entry}");
        assert_eq!(entry["online"], true, "{entry}");
        assert!(entry["shard"]
            .as_u64()
            .is_some_and(|shard| shard < SHARDS as u64));
        if count > 0 {
            assert!(
                entry["size_bytes"].as_u64().is_some_and(|size| size > 0),
                "{entry}"
            );
        }
    }

    let shards = get_json(&broker, "/api/v1/shards");
    assert_eq!(shards.as_array().map(Vec::len), Some(SHARDS), "{shards}");
    let shard_messages_in: u64 = shards
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|shard| shard["messages_in"].as_u64())
        .sum();
    assert!(shard_messages_in >= RECORDS as u64, "{shards}");

    // The group is Stable with our member holding every partition; each partition with records
    // has lag 1 (committed one short of the end).
    let deadline = Instant::now() + WAIT_TIMEOUT;
    let listed = loop {
        consumer.poll(Duration::from_millis(50));
        let groups = get_json(&broker, "/api/v1/groups");
        let found = groups
            .as_array()
            .and_then(|groups| {
                groups
                    .iter()
                    .find(|entry| entry["group_id"] == group.as_str())
            })
            .cloned();
        if let Some(found) = found.filter(|found| found["state"] == "Stable") {
            break found;
        }
        assert!(Instant::now() < deadline, "{group} not Stable in {groups}");
    };
    assert_eq!(listed["type"], "classic", "{listed}");
    assert_eq!(listed["protocol_type"], "consumer", "{listed}");
    let members = listed["members"].as_array().expect("members");
    assert_eq!(members.len(), 1, "{listed}");
    let assigned: Vec<i64> = members[0]["assignment"]
        .as_array()
        .expect("a decoded assignment")
        .iter()
        .filter(|entry| entry["topic"] == topic.as_str())
        .flat_map(|entry| entry["partitions"].as_array().cloned().unwrap_or_default())
        .filter_map(|partition| partition.as_i64())
        .collect();
    assert_eq!(assigned.len(), PARTITIONS as usize, "{listed}");
    let offsets = listed["offsets"].as_array().expect("offsets");
    assert_eq!(offsets.len(), produced.len(), "{listed}");
    for entry in offsets {
        let index = entry["partition"].as_i64().expect("a partition index") as i32;
        let count = produced[&index];
        assert_eq!(entry["committed_offset"], count - 1, "{entry}");
        assert_eq!(entry["high_watermark"], count, "{entry}");
        assert_eq!(entry["lag"], 1, "{entry}");
    }
    drop(consumer);

    // HEAD has GET's headers and no body; the rest are refusals.
    let head = send_raw(
        &broker,
        b"HEAD /api/v1/health HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "HEAD carried a body: {head}");
    assert_eq!(get(&broker, "/nope").0, 404);
    let post = match http().post(&broker.admin_url("/metrics")).send_string("{}") {
        Err(ureq::Error::Status(status, _)) => status,
        other => panic!("POST /metrics: {other:?}"),
    };
    assert_eq!(post, 405);
}

#[test]
fn garbage_on_the_admin_port_leaves_the_broker_serving() {
    let mut broker = Broker::start();
    let oversized = format!(
        "GET /metrics HTTP/1.1\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"\x00\x00\x00\x10\x00\x12\x00\x00kafka on http\r\n\r\n".to_vec(),
            "400",
        ),
        (b"GET /metrics HTTP/7.0\r\n\r\n".to_vec(), "400"),
        (
            b"GET /metrics HTTP/1.1\r\nbad header\r\n\r\n".to_vec(),
            "400",
        ),
        (oversized.into_bytes(), "431"),
        ((0..=255_u8).cycle().take(20_000).collect(), "400"),
        (b"GET /metr".to_vec(), ""),
        (b"".to_vec(), ""),
    ];
    for (bytes, status) in &cases {
        let answer = send_raw(&broker, bytes);
        if status.is_empty() {
            assert!(
                answer.is_empty(),
                "an unfinished request was answered: {answer}"
            );
        } else {
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status} ")),
                "expected {status}, got {answer:?}"
            );
            assert!(answer.contains("Connection: close"), "{answer}");
        }
    }
    // Many connections at once, most left open and silent: the broker answers the admin port
    // and Kafka all the same.
    let idle: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect_timeout(&broker.admin_addr(), HTTP_TIMEOUT).ok())
        .collect();
    assert!(api_versions_ok(broker.addr(), HTTP_TIMEOUT));
    drop(idle);
    broker.assert_alive("after garbage on the admin port");
    assert!(api_versions_ok(broker.addr(), HTTP_TIMEOUT));
    let deadline = Instant::now() + WAIT_TIMEOUT;
    loop {
        let (status, _, _) = get(&broker, "/api/v1/health");
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "health answered {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
    broker.stop();
}

#[test]
fn an_admin_address_in_use_stops_the_broker_with_an_error_naming_it() {
    // Bound without SO_REUSEPORT, so the broker's bind (which sets it) is refused.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let taken = holder.local_addr().expect("local address").to_string();
    let data_dir = tempfile::tempdir().expect("data directory");
    let mut command = ringlog_command();
    command
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir.path())
        .args(["--listen", &format!("127.0.0.1:{}", common::free_port())])
        .args(["--cores", "2", "--admin-listen", &taken])
        .env("NO_COLOR", "1");
    let output = common::run_bounded(
        &mut command,
        b"",
        common::BROKER_START_TIMEOUT + common::BROKER_STOP_TIMEOUT,
    )
    .unwrap_or_else(|failure| panic!("the broker kept running: {failure}"));
    let stderr = output.stderr_text();
    assert!(
        !output.status.success(),
        "exited {}: {stderr}",
        output.status
    );
    assert!(
        stderr.contains(&taken) && stderr.contains("--admin-listen"),
        "the error does not name the admin address {taken}: {stderr}"
    );
    drop(holder);
}
