//! End-to-end tests of `ringlog serve` with real, unmodified Kafka clients: confluent-kafka
//! (librdkafka) and kafka-python through the scripts in `tests/clients/`, and kcat. Each test
//! starts its own broker process on a loopback port and a temporary data directory.
//!
//! The clients come from `tools/test-all.sh` (kcat from apt, the Python ones in a venv named by
//! `RINGLOG_TEST_PYTHON`). Without them a test prints why and passes, unless
//! `RINGLOG_REQUIRE_CLIENTS=1`, as test-all.sh sets, makes it fail.

mod common;

use std::path::Path;
use std::process::Command;

use common::{run_ok, unique_topic, Broker};

const CONFLUENT_SCRIPT: &str = "confluent_scenario.py";
const KAFKA_PYTHON_SCRIPT: &str = "kafka_python_scenario.py";

/// Messages produced with acks=all before the SIGKILL: enough for many batches on each of the
/// three partitions, few enough to take a second or two.
const ACKS_ALL_COUNT: usize = 2000;

/// Lines kcat produces per topic.
const KCAT_LINES: usize = 500;

fn python_command(python: &Path, script: &str) -> Command {
    let mut command = Command::new(python);
    command
        .arg(common::clients_dir().join(script))
        // Keep the source tree clean of __pycache__.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1");
    command
}

fn run_python(python: &Path, script: &str, args: &[&str]) {
    let what = format!("{script} {}", args.join(" "));
    let output = run_ok(&what, python_command(python, script).args(args), b"");
    print!("{}", output.stdout_text());
}

#[test]
fn confluent_kafka_scenario() {
    let Some(python) = common::python_with(&["confluent_kafka"]) else {
        return;
    };
    let mut broker = Broker::start();
    let prefix = unique_topic("confluent");
    run_python(
        &python,
        CONFLUENT_SCRIPT,
        &["all", &broker.bootstrap(), &prefix],
    );
    broker.assert_alive("after the confluent-kafka scenario");
    broker.stop();
}

#[test]
fn kafka_python_scenario() {
    let Some(python) = common::python_with(&["kafka", "snappy", "lz4.frame", "zstandard"]) else {
        return;
    };
    let mut broker = Broker::start();
    let prefix = unique_topic("kafka-python");
    run_python(
        &python,
        KAFKA_PYTHON_SCRIPT,
        &["all", &broker.bootstrap(), &prefix],
    );
    broker.assert_alive("after the kafka-python scenario");
    broker.stop();
}

/// Every message acknowledged with acks=all is there after the broker is killed with SIGKILL and
/// restarted on the same data directory, in order; and again after a clean stop and restart.
#[test]
fn acks_all_messages_survive_sigkill() {
    let Some(python) = common::python_with(&["confluent_kafka"]) else {
        return;
    };
    let mut broker = Broker::start();
    let topic = unique_topic("acks-all");
    let record_dir = tempfile::tempdir().expect("tempdir");
    let record = record_dir.path().join("acknowledged.json");
    let record = record.to_str().expect("a UTF-8 temp path");
    run_python(
        &python,
        CONFLUENT_SCRIPT,
        &[
            "produce-acks-all",
            &broker.bootstrap(),
            &topic,
            &ACKS_ALL_COUNT.to_string(),
            record,
        ],
    );
    broker.kill();
    broker.restart();
    run_python(
        &python,
        CONFLUENT_SCRIPT,
        &["verify", &broker.bootstrap(), &topic, record],
    );
    broker.stop();
    broker.restart();
    run_python(
        &python,
        CONFLUENT_SCRIPT,
        &["verify", &broker.bootstrap(), &topic, record],
    );
    broker.stop();
}

fn kcat_produce(broker: &Broker, kcat: &Path, topic: &str, codec: Option<&str>, input: &str) {
    let mut command = Command::new(kcat);
    command.args(["-P", "-b", &broker.bootstrap(), "-t", topic, "-K:"]);
    if let Some(codec) = codec {
        command.args(["-z", codec]);
    }
    run_ok(
        &format!("kcat -P -t {topic} -z {codec:?}"),
        &mut command,
        input.as_bytes(),
    );
}

fn kcat_consume(broker: &Broker, kcat: &Path, topic: &str) -> String {
    let mut command = Command::new(kcat);
    command.args([
        "-C",
        "-b",
        &broker.bootstrap(),
        "-t",
        topic,
        "-o",
        "beginning",
        "-e",
        "-q",
        "-f",
        "%k:%s\n",
    ]);
    run_ok(&format!("kcat -C -t {topic}"), &mut command, b"").stdout_text()
}

fn kcat_lines(tag: &str) -> String {
    (0..KCAT_LINES)
        .map(|index| {
            format!(
                "key-{}:{tag} line {index} {}\n",
                index % 13,
                "z".repeat(index % 40)
            )
        })
        .collect()
}

/// Keyed lines through kcat, uncompressed and with each codec, on auto-created topics; read back
/// line for line; and `kcat -L` lists every topic.
#[test]
fn kcat_keyed_lines_with_each_codec() {
    let Some(kcat) = common::kcat() else {
        return;
    };
    let mut broker = Broker::start();
    let mut topics = Vec::new();
    for codec in [
        None,
        Some("gzip"),
        Some("snappy"),
        Some("lz4"),
        Some("zstd"),
    ] {
        let tag = codec.unwrap_or("none");
        let topic = unique_topic(&format!("kcat-{tag}"));
        let input = kcat_lines(tag);
        kcat_produce(&broker, &kcat, &topic, codec, &input);
        let output = kcat_consume(&broker, &kcat, &topic);
        if output != input {
            let first_difference = output
                .lines()
                .zip(input.lines())
                .position(|(got, want)| got != want);
            panic!(
                "kcat with codec {tag}: read {} lines back for {KCAT_LINES} produced; first \
                 differing line {first_difference:?}\n--- read (end) ---\n{}",
                output.lines().count(),
                common::tail(&output, 2048)
            );
        }
        println!("kcat codec {tag}: {KCAT_LINES} lines read back");
        topics.push(topic);
    }

    let mut command = Command::new(&kcat);
    command.args(["-L", "-b", &broker.bootstrap()]);
    let listing = run_ok("kcat -L", &mut command, b"").stdout_text();
    for topic in &topics {
        assert!(
            listing.contains(&format!("topic \"{topic}\" with 1 partitions")),
            "kcat -L does not list {topic} with 1 partition:\n{listing}"
        );
    }
    assert!(
        listing.contains(&format!("at {}", broker.bootstrap())),
        "kcat -L does not list a broker at {}:\n{listing}",
        broker.bootstrap()
    );
    broker.assert_alive("after the kcat runs");
    broker.stop();
}

/// The admin APIs (CreatePartitions, DescribeConfigs, AlterConfigs, IncrementalAlterConfigs,
/// DeleteRecords, ListOffsets, DescribeCluster, DescribeLogDirs, OffsetForLeaderEpoch) through
/// confluent-kafka's and kafka-python's admin clients.
#[test]
fn admin_apis_with_both_python_clients() {
    let Some(python) = common::python_with(&["confluent_kafka", "kafka"]) else {
        return;
    };
    let mut broker = Broker::start();
    run_python(&python, "admin_clients.py", &[&broker.bootstrap()]);
    broker.assert_alive("after the admin scenario");
    broker.stop();
}
