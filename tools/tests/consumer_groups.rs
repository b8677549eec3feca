//! Consumer groups end to end with real clients: three confluent-kafka consumers sharing a
//! 6-partition topic through the classic group protocol (assignment, a member leaving, commits,
//! committed offsets surviving a broker restart), static members restarting without a rebalance,
//! a SIGKILLed member's session expiring, the same group through KIP-848's consumer protocol
//! with both broker-side assignors, a kafka-python `KafkaConsumer(group_id=...)`, and `kcat -G`.
//! Each test starts its own broker process; every client run is bounded by the harness's timeout.

mod common;

use std::path::Path;
use std::process::Command;

use common::{run_ok, unique_topic, Broker};

const SCRIPT: &str = "groups_scenario.py";

/// Messages consumed by the group before the commit: 100 per partition, a few batches each.
const GROUP_COUNT: usize = 600;

/// Messages produced after the commit, which a resumed consumer must read and nothing else.
const EXTRA_COUNT: usize = 60;

/// Messages the kafka-python consumer reads.
const KAFKA_PYTHON_COUNT: usize = 300;

/// Messages the static members share while they restart.
const STATIC_COUNT: usize = 300;

/// Messages the expiry scenario produces: half before the child member is killed, half after.
const EXPIRY_COUNT: usize = 600;

/// Messages the KIP-848 group consumes.
const CONSUMER_PROTOCOL_COUNT: usize = 600;

/// Lines kcat reads as a group member.
const KCAT_LINES: usize = 200;

fn run_python(python: &Path, args: &[&str]) -> String {
    let mut command = Command::new(python);
    command
        .arg(common::clients_dir().join(SCRIPT))
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1");
    let output = run_ok(&format!("{SCRIPT} {}", args.join(" ")), &mut command, b"").stdout_text();
    print!("{output}");
    output
}

/// Three members split six partitions; one leaves and the other two take over; everything is
/// consumed and committed; after a clean restart a new member resumes at the committed offsets.
#[test]
fn confluent_group_rebalances_commits_and_resumes_after_restart() {
    let Some(python) = common::python_with(&["confluent_kafka"]) else {
        return;
    };
    let mut broker = Broker::start();
    let topic = unique_topic("groups");
    let group = format!("{topic}-group");
    let numbers = [GROUP_COUNT.to_string(), EXTRA_COUNT.to_string()];
    let output = run_python(
        &python,
        &[
            "rebalance",
            &broker.bootstrap(),
            &topic,
            &group,
            &numbers[0],
            &numbers[1],
        ],
    );
    assert!(output.contains("OK rebalance"), "{output}");
    broker.stop();
    broker.restart();
    let output = run_python(
        &python,
        &[
            "resume",
            &broker.bootstrap(),
            &topic,
            &group,
            &numbers[0],
            &numbers[1],
        ],
    );
    assert!(output.contains("OK resume"), "{output}");
    broker.assert_alive("after the consumer-group scenario");
    broker.stop();
}

/// Three static members (`group.instance.id`); each in turn closes, which sends no LeaveGroup,
/// and a new consumer with its instance id gets the same partitions back without the other two
/// seeing any rebalance.
#[test]
fn static_members_restart_without_a_rebalance() {
    let Some(python) = common::python_with(&["confluent_kafka"]) else {
        return;
    };
    let mut broker = Broker::start();
    let topic = unique_topic("groups-static");
    let group = format!("{topic}-group");
    let output = run_python(
        &python,
        &[
            "static",
            &broker.bootstrap(),
            &topic,
            &group,
            &STATIC_COUNT.to_string(),
        ],
    );
    assert!(output.contains("OK static"), "{output}");
    broker.assert_alive("after the static-membership scenario");
    broker.stop();
}

/// A member in a child process is SIGKILLed; the two others take its partitions over once its
/// session expires, and every message is consumed and committed.
#[test]
fn killed_member_session_expires_and_survivors_take_over() {
    let Some(python) = common::python_with(&["confluent_kafka"]) else {
        return;
    };
    let mut broker = Broker::start();
    let topic = unique_topic("groups-expiry");
    let group = format!("{topic}-group");
    let output = run_python(
        &python,
        &[
            "expiry",
            &broker.bootstrap(),
            &topic,
            &group,
            &EXPIRY_COUNT.to_string(),
        ],
    );
    assert!(output.contains("OK expiry"), "{output}");
    broker.assert_alive("after the session-expiry scenario");
    broker.stop();
}

/// The rebalance scenario through KIP-848's `group.protocol=consumer` with the broker-side
/// `assignor`, then DescribeConsumerGroups of the group.
fn consumer_protocol_group(assignor: &str) {
    let Some(python) = common::python_with(&["confluent_kafka"]) else {
        return;
    };
    let mut broker = Broker::start();
    let topic = unique_topic(&format!("groups-kip848-{assignor}"));
    let group = format!("{topic}-group");
    let output = run_python(
        &python,
        &[
            "consumer-protocol",
            &broker.bootstrap(),
            &topic,
            &group,
            assignor,
            &CONSUMER_PROTOCOL_COUNT.to_string(),
        ],
    );
    assert!(output.contains("OK consumer-protocol"), "{output}");
    broker.assert_alive("after the consumer-protocol scenario");
    broker.stop();
}

#[test]
fn consumer_protocol_group_with_uniform_assignor() {
    consumer_protocol_group("uniform");
}

#[test]
fn consumer_protocol_group_with_range_assignor() {
    consumer_protocol_group("range");
}

#[test]
fn kafka_python_group_consumes_and_commits() {
    let Some(python) = common::python_with(&["kafka", "confluent_kafka"]) else {
        return;
    };
    let mut broker = Broker::start();
    let topic = unique_topic("groups-kafka-python");
    let group = format!("{topic}-group");
    let output = run_python(
        &python,
        &[
            "kafka-python",
            &broker.bootstrap(),
            &topic,
            &group,
            &KAFKA_PYTHON_COUNT.to_string(),
        ],
    );
    assert!(output.contains("OK kafka-python"), "{output}");
    broker.stop();
}

/// `kcat -G group topic` joins a group, is assigned the topic's partitions and reads them.
#[test]
fn kcat_reads_as_a_group_member() {
    let Some(kcat) = common::kcat() else {
        return;
    };
    let mut broker = Broker::start();
    let topic = unique_topic("groups-kcat");
    let input: String = (0..KCAT_LINES)
        .map(|index| format!("line {index}\n"))
        .collect();
    let mut command = Command::new(&kcat);
    command.args(["-P", "-b", &broker.bootstrap(), "-t", &topic]);
    run_ok(
        &format!("kcat -P -t {topic}"),
        &mut command,
        input.as_bytes(),
    );
    let mut command = Command::new(&kcat);
    command.args([
        "-b",
        &broker.bootstrap(),
        "-G",
        &format!("{topic}-group"),
        &topic,
        "-o",
        "beginning",
        "-c",
        &KCAT_LINES.to_string(),
        "-q",
        "-f",
        "%s\n",
    ]);
    let output = run_ok(&format!("kcat -G {topic}-group {topic}"), &mut command, b"").stdout_text();
    assert_eq!(
        output.lines().count(),
        KCAT_LINES,
        "kcat -G read back:\n{}",
        common::tail(&output, 2048)
    );
    let mut read: Vec<&str> = output.lines().collect();
    read.sort_unstable();
    let mut want: Vec<&str> = input.lines().collect();
    want.sort_unstable();
    assert_eq!(read, want);
    println!("kcat -G: {KCAT_LINES} lines read as a group member");
    broker.stop();
}
