//! The network-namespace harness (`common::netns`) with real processes: a `ringlog serve` on one
//! host and the `ringlog` CLI on two others, across a bridge. Records produced from one host are
//! consumed on another; a partition cuts one client off (its connections no longer open) while
//! the broker's side keeps serving; healing restores it. The cluster tests build on this.
//!
//! Needs root, `ip` and `nft`; without them it skips, unless `RINGLOG_REQUIRE_CLIENTS` is set.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::netns::{self, Network};
use common::{missing_client, run_bounded, unique_topic, wait_with_deadline};

/// The broker's Kafka port on its host.
const KAFKA_PORT: u16 = 9092;
/// How long the broker may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one CLI command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a connection attempt across a partition is given before it counts as cut: on
/// this bridge an open path connects in well under a millisecond.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the broker gets to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

const BROKER_HOST: usize = 0;
const PRODUCER_HOST: usize = 1;
const CONSUMER_HOST: usize = 2;

/// Runs `ringlog ARGS --brokers BROKER` on `host`; its stdout, or a panic with its output.
fn ringlog(
    network: &Network,
    host: usize,
    broker: SocketAddr,
    args: &[&str],
    stdin: &[u8],
) -> String {
    let mut command = network.command(host, env!("CARGO_BIN_EXE_ringlog"));
    command.args(args).args(["--brokers", &broker.to_string()]);
    command.env_remove("RINGLOG_BROKERS");
    let output = run_bounded(&mut command, stdin, COMMAND_TIMEOUT)
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert!(
        output.status.success(),
        "ringlog {args:?} on host {host} failed ({})\n{}",
        output.status,
        output.stderr_text()
    );
    output.stdout_text()
}

/// The broker process, killed if the test fails before stopping it (a process left in a
/// namespace would outlive the test and keep the namespace alive).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The broker's log file, printed if the test fails.
struct LogOnPanic(std::path::PathBuf);

impl Drop for LogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.0).unwrap_or_default();
            eprintln!("--- broker log ---\n{}", common::tail(&text, 16 * 1024));
        }
    }
}

fn stop(broker: &mut Child) {
    // SAFETY: kill(2) on our own child's PID has no memory-safety preconditions.
    unsafe { libc::kill(broker.id() as libc::pid_t, libc::SIGTERM) };
    if wait_with_deadline(broker, STOP_TIMEOUT).is_none() {
        let _ = broker.kill();
        let _ = broker.wait();
        panic!("the broker did not stop within {STOP_TIMEOUT:?} of SIGTERM");
    }
}

#[test]
fn records_cross_the_bridge_and_a_partition_cuts_only_the_isolated_host() {
    if let Some(missing) = netns::unavailable() {
        missing_client(&missing);
        return;
    }
    let network = Network::create(3);
    let broker_address = SocketAddr::from((network.address(BROKER_HOST), KAFKA_PORT));
    let data = tempfile::Builder::new()
        .prefix("ringlog-netns-")
        .tempdir()
        .expect("a data directory");
    let log = LogOnPanic(data.path().join("broker.log"));
    let stderr = std::fs::File::create(&log.0).expect("create the broker's log");
    let mut broker = KillOnDrop(
        network
            .command(BROKER_HOST, env!("CARGO_BIN_EXE_ringlog"))
            .args(["serve", "--cores", "2", "--admin-listen", "off"])
            .arg("--listen")
            .arg(broker_address.to_string())
            .arg("--data-dir")
            .arg(data.path().join("data"))
            .env_remove("RINGLOG_BROKERS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start ringlog serve on the broker host"),
    );
    let deadline = Instant::now() + START_TIMEOUT;
    while !network.reaches(PRODUCER_HOST, broker_address, CONNECT_TIMEOUT) {
        assert!(
            Instant::now() < deadline,
            "the broker did not listen on {broker_address}"
        );
        assert!(
            broker.0.try_wait().expect("poll the broker").is_none(),
            "the broker exited"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let topic = unique_topic("netns");
    ringlog(
        &network,
        PRODUCER_HOST,
        broker_address,
        &["topic", "create", &topic, "-p", "1"],
        b"",
    );
    ringlog(
        &network,
        PRODUCER_HOST,
        broker_address,
        &["produce", &topic],
        b"one\ntwo\n",
    );
    let consumed = ringlog(
        &network,
        CONSUMER_HOST,
        broker_address,
        &["consume", &topic, "--from", "beginning", "--count", "2"],
        b"",
    );
    assert_eq!(consumed, "one\ntwo\n");

    // Cut the consumer's host off. The broker and the producer stay on one side.
    network.partition(&[BROKER_HOST, PRODUCER_HOST]);
    assert!(
        !network.reaches(CONSUMER_HOST, broker_address, CONNECT_TIMEOUT),
        "the isolated host still reaches the broker"
    );
    ringlog(
        &network,
        PRODUCER_HOST,
        broker_address,
        &["produce", &topic],
        b"three\n",
    );

    network.heal();
    assert!(
        network.reaches(CONSUMER_HOST, broker_address, CONNECT_TIMEOUT),
        "the healed host does not reach the broker"
    );
    let consumed = ringlog(
        &network,
        CONSUMER_HOST,
        broker_address,
        &["consume", &topic, "--from", "beginning", "--count", "3"],
        b"",
    );
    assert_eq!(consumed, "one\ntwo\nthree\n");

    stop(&mut broker.0);
    let namespace = network.namespace(BROKER_HOST);
    drop(network);
    let listed = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains(&namespace),
        "the namespaces are gone after the network is dropped"
    );
}
