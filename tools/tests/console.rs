//! The web console in a real browser: a real `ringlog serve` process with a topic, a producer
//! writing to it and a consumer group reading it (both the `ringlog` CLI, as separate
//! processes), and Debian's headless Chromium, driven by Playwright (`console/check.mjs`),
//! reading the console as a person would: the tables by their headings, which shard owns each
//! partition, the group's state, member and lag, the charts' lines and their live values, and
//! no errors in the page. A full-page screenshot is left in `target/console-test/`.
//!
//! Needs Node.js with `playwright-core` (`npm ci` in `tools/tests/console`) and Chromium;
//! `tools/test-all.sh` installs both. Without them the test skips, unless
//! `RINGLOG_REQUIRE_CLIENTS` is set.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::{missing_client, run_bounded, run_ok, unique_topic, wait_with_deadline, Broker};

const PARTITIONS: i32 = 3;
/// Shards of the test broker (the harness runs `--cores 2`).
const SHARDS: usize = 2;
/// The longest the background producer runs, whatever happens to the rest of the test.
const TRAFFIC_TIMEOUT: Duration = Duration::from_secs(120);
/// Between two produced lines: ~200 records a second, enough for every chart to move.
const TRAFFIC_INTERVAL: Duration = Duration::from_millis(5);
/// How long the browser check may take; it waits at most 20 s for any one thing.
const CHECK_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the producer and consumer get to exit once told to.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// The client id the `ringlog` CLI's consumer joins with.
const CLI_CLIENT_ID: &str = "ringlog-cli";
/// Overrides the Chromium binary (default: Debian's `/usr/bin/chromium`).
const CHROMIUM_ENV: &str = "RINGLOG_TEST_CHROMIUM";

fn console_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console")
}

/// Node.js, if it runs and `playwright-core` is installed next to the check script.
fn node() -> Option<PathBuf> {
    let runs = Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|output| output.status.success());
    if !runs {
        missing_client("node (Node.js)");
        return None;
    }
    if !console_dir()
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        missing_client("playwright-core (npm ci in tools/tests/console)");
        return None;
    }
    Some(PathBuf::from("node"))
}

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os(CHROMIUM_ENV)
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if path.exists() {
        Some(path)
    } else {
        missing_client(&format!("Chromium ({})", path.display()));
        None
    }
}

fn ringlog(bootstrap: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringlog"));
    command.args(args).args(["--brokers", bootstrap]);
    command.env_remove("RINGLOG_BROKERS");
    command
}

/// Sends SIGINT (as Ctrl-C does) to a child and waits for it; kills it if it does not exit.
fn interrupt(child: &mut Child, what: &str) {
    // SAFETY: kill(2) on our own child's PID has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    if wait_with_deadline(child, EXIT_TIMEOUT).is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the {what} did not exit within {EXIT_TIMEOUT:?} of SIGINT");
    }
}

/// Which shard owns each of `topic`'s partitions, from the admin API.
fn partition_shards(broker: &Broker, topic: &str) -> Vec<Value> {
    let body = ureq::get(&broker.admin_url("/api/v1/partitions"))
        .timeout(Duration::from_secs(10))
        .call()
        .expect("GET /api/v1/partitions")
        .into_string()
        .expect("read /api/v1/partitions");
    let partitions: Vec<Value> = serde_json::from_str(&body).expect("partitions JSON");
    partitions
        .iter()
        .filter(|partition| partition["topic"] == topic)
        .map(
            |partition| json!({ "partition": partition["partition"], "shard": partition["shard"] }),
        )
        .collect()
}

#[test]
fn the_console_shows_shards_topics_partitions_groups_and_live_charts() {
    let (Some(node), Some(chromium)) = (node(), chromium()) else {
        return;
    };
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    let topic = unique_topic("console");
    let group = unique_topic("console-group");
    run_ok(
        "ringlog topic create",
        &mut ringlog(
            &bootstrap,
            &[
                "topic",
                "create",
                &topic,
                "--partitions",
                &PARTITIONS.to_string(),
            ],
        ),
        b"",
    );

    // Traffic for the charts: keyed lines, so every partition gets some.
    let mut producer = ringlog(&bootstrap, &["produce", &topic, "--key-separator", ":"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start ringlog produce");
    let mut lines = producer.stdin.take().expect("piped stdin");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let started = Instant::now();
            let mut index = 0_u64;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < TRAFFIC_TIMEOUT {
                if writeln!(lines, "key-{}:value-{index}", index % 16).is_err() {
                    return;
                }
                index += 1;
                thread::sleep(TRAFFIC_INTERVAL);
            }
            // Dropping stdin ends the producer: it sends what it holds and exits.
        })
    };
    let mut consumer = ringlog(&bootstrap, &["consume", &topic, "--group", &group])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start ringlog consume --group");

    let expected = json!({
        "shards": SHARDS,
        "topic": topic,
        "partitions": partition_shards(&broker, &topic),
        "group": group,
        "client_id": CLI_CLIENT_ID,
    });
    assert_eq!(
        expected["partitions"].as_array().map(Vec::len),
        Some(PARTITIONS as usize),
        "{expected}"
    );
    let screenshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-test");
    std::fs::create_dir_all(&screenshots).expect("create target/console-test");
    let screenshot = screenshots.join("console.png");
    let mut check = Command::new(node);
    check
        .current_dir(console_dir())
        .arg("check.mjs")
        .arg(broker.admin_url("/"))
        .arg(expected.to_string())
        .arg(&screenshot)
        .env(CHROMIUM_ENV, &chromium);
    let outcome = run_bounded(&mut check, b"", CHECK_TIMEOUT);

    stop.store(true, Ordering::Relaxed);
    let _ = writer.join();
    let produced = wait_with_deadline(&mut producer, EXIT_TIMEOUT);
    interrupt(&mut consumer, "consumer");

    let output = outcome.unwrap_or_else(|failure| panic!("the browser check: {failure}"));
    print!("{}", output.stdout_text());
    assert!(
        output.status.success(),
        "the browser check failed ({}); screenshot in {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        screenshot.display(),
        output.stdout_text(),
        output.stderr_text()
    );
    assert!(
        produced.is_some_and(|status| status.success()),
        "the producer did not exit cleanly: {produced:?}"
    );
}
