//! The client subcommands (`ringlog topic | produce | consume | group | cluster`) run as the real
//! binary against a real `ringlog serve` process, with their tables, JSON and exit statuses
//! checked, including bad arguments and an unreachable broker.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{ringlog_command, run_bounded, unique_topic, Broker, RunOutput};

/// How long one CLI command may take: each is a few round trips to a local broker.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the following consumer may take to print what was produced.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(30);

/// The exit statuses the CLI documents.
const EXIT_FAILED: i32 = 1;
const EXIT_USAGE: i32 = 2;
const EXIT_UNREACHABLE: i32 = 3;
const EXIT_NOT_FOUND: i32 = 4;

/// Runs `ringlog ARGS --brokers BROKER` with `stdin`.
fn ringlog(broker: &str, args: &[&str], stdin: &[u8]) -> RunOutput {
    let mut command = ringlog_command();
    command.args(args).args(["--brokers", broker]);
    run_bounded(&mut command, stdin, COMMAND_TIMEOUT).unwrap_or_else(|failure| panic!("{failure}"))
}

/// Runs `ringlog ARGS` with the variables `env` set (and no other `RINGLOG_*` ones).
fn ringlog_env(args: &[&str], env: &[(&str, &str)]) -> RunOutput {
    let mut command = ringlog_command();
    command.args(args).envs(env.iter().copied());
    run_bounded(&mut command, b"", COMMAND_TIMEOUT).unwrap_or_else(|failure| panic!("{failure}"))
}

/// [`ringlog`], which must exit 0; returns stdout.
fn ok(broker: &str, args: &[&str], stdin: &[u8]) -> String {
    let output = ringlog(broker, args, stdin);
    assert!(
        output.status.success(),
        "ringlog {args:?} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        output.stdout_text(),
        output.stderr_text()
    );
    output.stdout_text()
}

/// [`ringlog`], which must exit with `status`; returns stderr.
fn fails(broker: &str, args: &[&str], status: i32) -> String {
    let output = ringlog(broker, args, b"");
    assert_eq!(
        output.status.code(),
        Some(status),
        "ringlog {args:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.stdout_text(),
        output.stderr_text()
    );
    output.stderr_text()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("not JSON ({error}): {text}"))
}

/// The rows of a table after its header, split on runs of spaces.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn topics_are_created_listed_described_altered_grown_and_deleted() {
    let broker = Broker::start();
    let address = broker.bootstrap();
    let b = address.as_str();
    let topic = unique_topic("cli-topic");

    let created = ok(
        b,
        &[
            "topic",
            "create",
            &topic,
            "-p",
            "3",
            "-c",
            "retention.ms=3600000",
        ],
        b"",
    );
    assert_eq!(rows(&created), vec![vec![topic.clone(), "created".into()]]);
    let again = fails(b, &["topic", "create", &topic], EXIT_FAILED);
    assert!(again.contains("TOPIC_ALREADY_EXISTS"), "{again}");
    assert!(
        again.contains("hint: `ringlog topic describe NAME`"),
        "{again}"
    );
    ok(b, &["topic", "create", &topic, "--if-not-exists"], b"");

    let listed = ok(b, &["topic", "list"], b"");
    assert!(
        rows(&listed).contains(&vec![topic.clone(), "3".into(), "1".into()]),
        "{listed}"
    );
    assert!(!listed.contains("__consumer_offsets"), "{listed}");
    let listed = json(&ok(b, &["topic", "list", "--json"], b""));
    let entry = listed
        .as_array()
        .expect("an array")
        .iter()
        .find(|entry| entry["name"] == topic.as_str())
        .expect("the topic is listed");
    assert_eq!(entry["partitions"], 3);

    let described = ok(b, &["topic", "describe", &topic], b"");
    assert!(
        described.contains("retention.ms  3600000  DYNAMIC_TOPIC_CONFIG"),
        "{described}"
    );
    assert!(described.contains("PARTITION  LEADER"), "{described}");
    let described = json(&ok(b, &["topic", "describe", &topic, "--json"], b""));
    assert_eq!(described["partitions"].as_array().map(Vec::len), Some(3));
    assert_eq!(described["partitions"][2]["high_watermark"], 0);
    assert_eq!(described["partitions"][0]["leader"], 1);

    ok(
        b,
        &[
            "topic",
            "alter-config",
            &topic,
            "--set",
            "retention.ms=1000",
            "--set",
            "cleanup.policy=compact",
        ],
        b"",
    );
    ok(
        b,
        &[
            "topic",
            "alter-config",
            &topic,
            "--delete",
            "cleanup.policy",
        ],
        b"",
    );
    let described = json(&ok(b, &["topic", "describe", &topic, "--json"], b""));
    let configs = described["configs"].as_array().expect("configs");
    let config = |name: &str| {
        configs
            .iter()
            .find(|config| config["name"] == name)
            .cloned()
    };
    assert_eq!(
        config("retention.ms").map(|c| c["value"].clone()),
        Some("1000".into())
    );
    assert!(config("cleanup.policy").is_none(), "{configs:?}");
    let bad = fails(
        b,
        &[
            "topic",
            "alter-config",
            &topic,
            "--set",
            "retention.ms=soon",
        ],
        EXIT_FAILED,
    );
    assert!(bad.contains("INVALID_CONFIG"), "{bad}");

    let grown = ok(b, &["topic", "add-partitions", &topic, "-n", "2"], b"");
    assert!(grown.contains("3 -> 5 partitions"), "{grown}");
    let described = json(&ok(b, &["topic", "describe", &topic, "--json"], b""));
    assert_eq!(described["partitions"].as_array().map(Vec::len), Some(5));

    let deleted = ok(b, &["topic", "delete", &topic], b"");
    assert_eq!(rows(&deleted), vec![vec![topic.clone(), "deleted".into()]]);
    let missing = fails(b, &["topic", "describe", &topic], EXIT_NOT_FOUND);
    assert!(missing.contains("does not exist"), "{missing}");
    fails(b, &["topic", "delete", &topic], EXIT_NOT_FOUND);
}

#[test]
fn produced_lines_are_consumed_with_keys_headers_and_positions() {
    let broker = Broker::start();
    let address = broker.bootstrap();
    let b = address.as_str();
    let topic = unique_topic("cli-records");
    ok(b, &["topic", "create", &topic, "-p", "2"], b"");

    // Keyed lines, a line without the separator, and an empty value, all to partition 1.
    let written = ok(
        b,
        &[
            "produce",
            &topic,
            "-K",
            ":",
            "-H",
            "source=cli",
            "-H",
            "n=1",
            "-p",
            "1",
        ],
        b"k1:first\nk2:second:with:colons\nunkeyed\nk3:\n",
    );
    assert_eq!(
        rows(&written),
        vec![vec!["1".to_string(), "4".into(), "0".into(), "3".into()]]
    );
    let read = ok(
        b,
        &[
            "consume",
            &topic,
            "-p",
            "1",
            "-e",
            "-f",
            "%p|%o|%k|%v|%h\\n",
        ],
        b"",
    );
    assert_eq!(
        read,
        "1|0|k1|first|source=cli,n=1\n1|1|k2|second:with:colons|source=cli,n=1\n\
         1|2||unkeyed|source=cli,n=1\n1|3|k3||source=cli,n=1\n"
    );

    // zstd batches, acks=1, JSON lines out.
    let values: Vec<String> = (0..50).map(|index| format!("zstd-{index}")).collect();
    ok(
        b,
        &[
            "produce",
            &topic,
            "-p",
            "0",
            "--compression",
            "zstd",
            "--acks",
            "1",
        ],
        (values.join("\n") + "\n").as_bytes(),
    );
    let lines = ok(b, &["consume", &topic, "-p", "0", "-e", "--json"], b"");
    let records: Vec<Value> = lines.lines().map(json).collect();
    assert_eq!(records.len(), 50);
    assert_eq!(records[7]["value"], "zstd-7");
    assert_eq!(records[7]["offset"], 7);
    assert_eq!(records[7]["partition"], 0);
    assert!(records[7]["key"].is_null());

    // Positions: an offset, --count, the end, a timestamp.
    let from_offset = ok(b, &["consume", &topic, "-p", "0", "-o", "45", "-e"], b"");
    assert_eq!(from_offset, "zstd-45\nzstd-46\nzstd-47\nzstd-48\nzstd-49\n");
    let counted = ok(b, &["consume", &topic, "-p", "0", "-c", "2"], b"");
    assert_eq!(counted, "zstd-0\nzstd-1\n");
    let at_end = ok(b, &["consume", &topic, "-o", "end", "-e"], b"");
    assert_eq!(at_end, "");
    let first = &records[0]["timestamp"];
    let from_time = ok(
        b,
        &[
            "consume",
            &topic,
            "-p",
            "0",
            "-o",
            &format!("@{first}"),
            "-e",
            "-c",
            "1",
        ],
        b"",
    );
    assert_eq!(from_time, "zstd-0\n");
    let future = ok(b, &["consume", &topic, "-o", "@99999999999999", "-e"], b"");
    assert_eq!(future, "");

    // acks=0 is fire and forget; the records still arrive.
    ok(
        b,
        &["produce", &topic, "-p", "0", "--acks", "0"],
        b"fire\nforget\n",
    );
    let deadline = Instant::now() + FOLLOW_TIMEOUT;
    loop {
        let tail = ok(b, &["consume", &topic, "-p", "0", "-o", "50", "-e"], b"");
        if tail == "fire\nforget\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "acks=0 records never arrived: {tail:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Keyed records without --partition: the same key always lands on the same partition.
    let keyed: String = (0..40)
        .map(|index| format!("key-{}:v{index}\n", index % 4))
        .collect();
    ok(b, &["produce", &topic, "-K", ":"], keyed.as_bytes());
    let read = ok(
        b,
        &["consume", &topic, "-e", "-o", "beginning", "-f", "%k %p\\n"],
        b"",
    );
    let mut partition_of_key = std::collections::BTreeMap::new();
    for line in read.lines().filter(|line| line.starts_with("key-")) {
        let (key, partition) = line.split_once(' ').expect("key and partition");
        let previous = partition_of_key.insert(key.to_string(), partition.to_string());
        assert!(
            previous.is_none_or(|p| p == partition),
            "{key} moved partitions"
        );
    }
    assert_eq!(partition_of_key.len(), 4, "{read}");
}

#[test]
fn groups_commit_show_lag_reset_and_delete() {
    let broker = Broker::start();
    let address = broker.bootstrap();
    let b = address.as_str();
    let topic = unique_topic("cli-groups");
    let group = unique_topic("cli-group");
    ok(b, &["topic", "create", &topic, "-p", "2"], b"");
    let lines: String = (0..10).map(|index| format!("m{index}\n")).collect();
    ok(b, &["produce", &topic, "-p", "0"], lines.as_bytes());
    ok(b, &["produce", &topic, "-p", "1"], lines.as_bytes());

    let read = ok(b, &["consume", &topic, "-g", &group, "-c", "15"], b"");
    assert_eq!(read.lines().count(), 15);
    let listed = ok(b, &["group", "list"], b"");
    assert!(
        rows(&listed)
            .iter()
            .any(|row| row[0] == group && row[1] == "Empty"),
        "{listed}"
    );
    let described = json(&ok(b, &["group", "describe", &group, "--json"], b""));
    let offsets = described["offsets"].as_array().expect("offsets");
    let committed: i64 = offsets
        .iter()
        .map(|entry| entry["committed_offset"].as_i64().expect("committed"))
        .sum();
    let lag: i64 = offsets
        .iter()
        .map(|entry| entry["lag"].as_i64().expect("lag"))
        .sum();
    assert_eq!((committed, lag), (15, 5), "{described}");
    let table = ok(b, &["group", "describe", &group], b"");
    assert!(table.contains("TOTAL-LAG    5"), "{table}");

    // The rest of the topic, then nothing more: the group resumes where it committed.
    let rest = ok(b, &["consume", &topic, "-g", &group, "-c", "5"], b"");
    assert_eq!(rest.lines().count(), 5);

    // A dry run changes nothing; --execute does.
    let plan = ok(
        b,
        &[
            "group",
            "reset-offsets",
            &group,
            "--topic",
            &topic,
            "--to-earliest",
        ],
        b"",
    );
    assert_eq!(
        rows(&plan),
        vec![
            vec![topic.clone(), "0".into(), "10".into(), "0".into()],
            vec![topic.clone(), "1".into(), "10".into(), "0".into()],
        ]
    );
    let described = json(&ok(b, &["group", "describe", &group, "--json"], b""));
    assert_eq!(described["offsets"][0]["committed_offset"], 10);
    ok(
        b,
        &[
            "group",
            "reset-offsets",
            &group,
            "--all-topics",
            "--to-offset",
            "7",
            "--execute",
        ],
        b"",
    );
    let again = ok(b, &["consume", &topic, "-g", &group, "-c", "6"], b"");
    let mut again: Vec<&str> = again.lines().collect();
    again.sort_unstable();
    assert_eq!(again, vec!["m7", "m7", "m8", "m8", "m9", "m9"]);
    ok(
        b,
        &[
            "group",
            "reset-offsets",
            &group,
            "--all-topics",
            "--to-datetime",
            "1970-01-01T00:00:00Z",
            "--execute",
        ],
        b"",
    );
    let described = json(&ok(b, &["group", "describe", &group, "--json"], b""));
    assert_eq!(described["offsets"][1]["committed_offset"], 0);
    fails(
        b,
        &[
            "group",
            "reset-offsets",
            &group,
            "--all-topics",
            "--to-datetime",
            "yesterday",
        ],
        EXIT_USAGE,
    );

    let deleted = ok(b, &["group", "delete", &group], b"");
    assert_eq!(rows(&deleted), vec![vec![group.clone(), "deleted".into()]]);
    fails(b, &["group", "describe", &group], EXIT_NOT_FOUND);
}

#[test]
fn a_following_consumer_prints_new_records_and_commits_on_interrupt() {
    let broker = Broker::start();
    let address = broker.bootstrap();
    let b = address.as_str();
    let topic = unique_topic("cli-follow");
    let group = unique_topic("cli-follower");
    ok(b, &["topic", "create", &topic, "-p", "1"], b"");

    let mut follower = ringlog_command()
        .args(["consume", &topic, "-g", &group, "--brokers", b])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the follower");
    let stdout = follower.stdout.take().expect("piped stdout");
    let (lines, received) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    // Produce only once the follower has joined, so "end" and "beginning" agree.
    std::thread::sleep(Duration::from_secs(2));
    ok(b, &["produce", &topic], b"one\ntwo\nthree\n");
    let mut seen = Vec::new();
    let deadline = Instant::now() + FOLLOW_TIMEOUT;
    while seen.len() < 3 && Instant::now() < deadline {
        if let Ok(line) = received.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
    }
    // SIGINT, as Ctrl-C sends: the follower commits, leaves and exits 0.
    // SAFETY: kill(2) on our own child's PID has no memory-safety preconditions.
    let signalled = unsafe { libc::kill(follower.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(signalled, 0);
    let status = common::wait_with_deadline(&mut follower, FOLLOW_TIMEOUT);
    let status = status.unwrap_or_else(|| {
        let _ = follower.kill();
        panic!("the follower did not exit after SIGINT");
    });
    let _ = reader.join();
    let mut stderr = String::new();
    if let Some(mut pipe) = follower.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    assert_eq!(seen, vec!["one", "two", "three"], "stderr: {stderr}");
    assert!(status.success(), "{status}: {stderr}");
    let described = json(&ok(b, &["group", "describe", &group, "--json"], b""));
    assert_eq!(described["state"], "Empty", "{described}");
    assert_eq!(
        described["offsets"][0]["committed_offset"], 3,
        "{described}"
    );
    let _ = std::io::stdout().flush();
}

/// The rows of the table that starts with the header cell `first` in `text`, split on runs of
/// spaces.
fn table_rows(text: &str, first: &str) -> Vec<Vec<String>> {
    let start = text
        .lines()
        .position(|line| line.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no table headed {first}:\n{text}"));
    text.lines()
        .skip(start + 1)
        .take_while(|line| !line.trim().is_empty())
        .map(|line| line.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn cluster_info_names_the_broker_controller_and_shards() {
    /// Shards of the harness's broker (`--cores 2`).
    const SHARDS: usize = 2;
    let broker = Broker::start();
    let address = broker.bootstrap();
    let b = address.as_str();
    let port = broker.addr().port().to_string();
    let admin = broker.admin_url("");
    let topic = unique_topic("cli-cluster");
    ok(b, &["topic", "create", &topic, "-p", "3"], b"");

    // Without an admin URL the default port of the --brokers host is tried; whatever answers
    // there (nothing, or another broker), the command succeeds.
    let guessed = ringlog(b, &["cluster", "info"], b"");
    assert!(guessed.status.success(), "{}", guessed.stderr_text());
    let info = guessed.stdout_text();
    assert!(info.contains("CONTROLLER  1"), "{info}");
    assert!(
        rows(&info)
            .iter()
            .any(|row| row.first().map(String::as_str) == Some("1*")
                && row.get(1).map(String::as_str) == Some("127.0.0.1")
                && row.get(2) == Some(&port)),
        "{info}"
    );
    if !info.contains("DISK-BYTES") {
        let note = guessed.stderr_text();
        assert!(
            note.contains("shards unknown") && note.contains("--admin-url"),
            "{note}"
        );
    }

    let info = ok(b, &["cluster", "info", "--admin-url", &admin], b"");
    let partitions: u64 = info
        .lines()
        .find_map(|line| line.strip_prefix("PARTITIONS"))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or_else(|| panic!("no PARTITIONS line:\n{info}"));
    let shards = table_rows(&info, "BROKER");
    assert_eq!(shards.len(), SHARDS, "{info}");
    for (index, shard) in shards.iter().enumerate() {
        assert_eq!(shard.len(), 6, "{info}");
        assert_eq!(shard[0], "1", "{info}");
        assert_eq!(shard[1], index.to_string(), "{info}");
        assert_eq!(shard[2], "yes", "{info}");
    }
    let on_shards: u64 = shards
        .iter()
        .map(|shard| shard[3].parse::<u64>().expect("a partition count"))
        .sum();
    assert_eq!(
        on_shards, partitions,
        "every partition is on a shard:\n{info}"
    );
    // The CLI's own connection is open while the shards count theirs.
    let connections: u64 = shards
        .iter()
        .map(|shard| shard[4].parse::<u64>().expect("a connection count"))
        .sum();
    assert!(connections >= 1, "{info}");

    let info = json(&ok(
        b,
        &["cluster", "info", "--json", "--admin-url", &admin],
        b"",
    ));
    assert_eq!(info["brokers"][0]["node_id"], 1);
    assert_eq!(info["brokers"][0]["controller"], true);
    assert!(info["cluster_id"].is_string(), "{info}");
    assert_eq!(info["admin_url"], admin.as_str(), "{info}");
    let shards = info["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), SHARDS, "{info}");
    let on_shards: u64 = shards
        .iter()
        .map(|shard| shard["partitions"].as_u64().expect("partitions"))
        .sum();
    assert_eq!(Some(on_shards), info["partitions"].as_u64(), "{info}");
    assert!(shards
        .iter()
        .all(|shard| shard["node_id"] == 1 && shard["partitions_offline"] == 0));

    // RINGLOG_ADMIN_URL does what --admin-url does; empty, it counts as unset.
    let from_env = ringlog_env(
        &["cluster", "info", "--brokers", b],
        &[("RINGLOG_ADMIN_URL", &admin)],
    );
    assert!(from_env.status.success(), "{}", from_env.stderr_text());
    assert_eq!(table_rows(&from_env.stdout_text(), "BROKER").len(), SHARDS);
    let empty = ringlog_env(
        &["cluster", "info", "--brokers", b],
        &[("RINGLOG_ADMIN_URL", "")],
    );
    assert!(empty.status.success(), "{}", empty.stderr_text());

    // An admin URL that was asked for must answer.
    let nowhere = fails(
        b,
        &["cluster", "info", "--admin-url", "127.0.0.1:1"],
        EXIT_UNREACHABLE,
    );
    assert!(
        nowhere.contains("http://127.0.0.1:1/api/v1/") && nowhere.contains("--admin-url"),
        "{nowhere}"
    );
    let from_env = ringlog_env(
        &["cluster", "info", "--brokers", b],
        &[("RINGLOG_ADMIN_URL", "http://127.0.0.1:1")],
    );
    assert_eq!(
        from_env.status.code(),
        Some(EXIT_UNREACHABLE),
        "{}",
        from_env.stderr_text()
    );
    // The Kafka port answers no HTTP; an HTTP server without the API is a failure.
    let not_http = fails(
        b,
        &["cluster", "info", "--admin-url", &format!("http://{b}")],
        EXIT_UNREACHABLE,
    );
    assert!(
        not_http.contains(&format!("http://{b}/api/v1/")),
        "{not_http}"
    );
    fails(
        b,
        &["cluster", "info", "--admin-url", "ftp://127.0.0.1:1"],
        EXIT_USAGE,
    );
}

#[test]
fn bad_arguments_and_an_unreachable_broker_fail_clearly() {
    // Port 1 on loopback: nothing listens there, and connecting is refused at once.
    let nowhere = "127.0.0.1:1";
    let unreachable = fails(nowhere, &["topic", "list"], EXIT_UNREACHABLE);
    assert!(
        unreachable.contains("connecting to 127.0.0.1:1"),
        "{unreachable}"
    );
    assert!(unreachable.contains("ringlog serve"), "{unreachable}");
    let unreachable = fails(
        "127.0.0.1:1,127.0.0.1:2",
        &["cluster", "info"],
        EXIT_UNREACHABLE,
    );
    assert!(
        unreachable.contains("none of the 2 brokers answered"),
        "{unreachable}"
    );

    let usage = fails(nowhere, &["consume", "t", "--from", "middle"], EXIT_USAGE);
    assert!(
        usage.contains("expected beginning, end, an offset, or @TIMESTAMP_MS"),
        "{usage}"
    );
    fails(
        nowhere,
        &["topic", "create", "t", "-c", "novalue"],
        EXIT_USAGE,
    );
    fails(
        nowhere,
        &["group", "reset-offsets", "g", "--topic", "t"],
        EXIT_USAGE,
    );
    fails(nowhere, &["consume", "t", "-g", "g", "-p", "0"], EXIT_USAGE);
    fails(nowhere, &["consume", "t", "-f", "%q"], EXIT_USAGE);

    // An empty RINGLOG_BROKERS counts as unset: the default broker, not an empty list. Whether
    // one runs there is not up to this test.
    let default = ringlog_env(&["topic", "list"], &[("RINGLOG_BROKERS", "")]);
    let stderr = default.stderr_text();
    assert!(
        default.status.success()
            || (default.status.code() == Some(EXIT_UNREACHABLE)
                && stderr.contains("127.0.0.1:9092")),
        "{}: {stderr}",
        default.status
    );
    fails("", &["topic", "list"], EXIT_USAGE);

    let broker = Broker::start();
    let address = broker.bootstrap();
    let b = address.as_str();
    let from_env = ringlog_env(&["topic", "list"], &[("RINGLOG_BROKERS", b)]);
    assert!(from_env.status.success(), "{}", from_env.stderr_text());
    let zero = fails(b, &["topic", "create", "t", "-p", "0"], EXIT_USAGE);
    assert!(zero.contains("at least 1 partition"), "{zero}");
    let nothing = fails(b, &["topic", "alter-config", "t"], EXIT_USAGE);
    assert!(
        nothing.contains("--set KEY=VALUE or --delete KEY"),
        "{nothing}"
    );
    let missing = fails(b, &["produce", "no-such-topic"], EXIT_NOT_FOUND);
    assert!(
        missing.contains("topic no-such-topic does not exist"),
        "{missing}"
    );
    fails(b, &["consume", "no-such-topic", "-e"], EXIT_NOT_FOUND);
    fails(b, &["group", "describe", "no-such-group"], EXIT_NOT_FOUND);
    let topic = unique_topic("cli-bad");
    ok(b, &["topic", "create", &topic, "-p", "1"], b"");
    let partition = fails(b, &["produce", &topic, "-p", "3"], EXIT_USAGE);
    assert!(partition.contains("has partitions 0 to 0"), "{partition}");
    let name = fails(b, &["topic", "create", "bad/name"], EXIT_FAILED);
    assert!(name.contains("INVALID_TOPIC_EXCEPTION"), "{name}");
}
