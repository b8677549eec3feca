//! The configuration file with the real binary: `ringlog config default` prints a file that
//! `ringlog serve --config` accepts; Kafka's broker config names in it take effect (a topic
//! created without a partition count gets `num.partitions`); an unknown key or a bad value
//! stops `serve` at start, with the key named and a non-zero exit.

mod common;

use std::time::Duration;

use common::{ringlog_command, run_bounded, unique_topic, Broker};

/// How long `ringlog serve` may take to refuse a file: it reads the file before anything else.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one CLI command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

fn write_file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write the config file");
    path.to_string_lossy().into_owned()
}

#[test]
fn the_default_file_is_accepted_and_kafka_names_take_effect() {
    let output = run_bounded(
        ringlog_command().args(["config", "default"]),
        b"",
        COMMAND_TIMEOUT,
    )
    .unwrap_or_else(|failure| panic!("{failure}"));
    assert!(output.status.success(), "{}", output.stderr_text());
    let default = output.stdout_text();
    assert!(default.contains("listen"), "{default}");

    // The default file with its `num_partitions` given under Kafka's name instead; the
    // harness's flags (ports, data directory) take precedence over the file's.
    assert!(default.contains("\nnum_partitions = 1\n"), "{default}");
    let dir = tempfile::tempdir().expect("a directory");
    let file = write_file(
        &dir,
        "ringlog.toml",
        &default.replace("\nnum_partitions = 1\n", "\n\"num.partitions\" = 3\n"),
    );
    let broker = Broker::start_with(&["--config", &file]);
    let topic = unique_topic("config-defaults");
    let created = run_bounded(
        ringlog_command()
            .args(["topic", "create", &topic, "--brokers"])
            .arg(broker.bootstrap()),
        b"",
        COMMAND_TIMEOUT,
    )
    .unwrap_or_else(|failure| panic!("{failure}"));
    assert!(created.status.success(), "{}", created.stderr_text());
    let described = run_bounded(
        ringlog_command()
            .args(["topic", "describe", &topic, "--json", "--brokers"])
            .arg(broker.bootstrap()),
        b"",
        COMMAND_TIMEOUT,
    )
    .unwrap_or_else(|failure| panic!("{failure}"));
    assert!(described.status.success(), "{}", described.stderr_text());
    let json: serde_json::Value =
        serde_json::from_str(&described.stdout_text()).expect("describe --json");
    assert_eq!(
        json["partitions"].as_array().map(Vec::len),
        Some(3),
        "num.partitions = 3 from the file: {json}"
    );
}

#[test]
fn unknown_keys_and_bad_values_stop_serve_naming_the_key() {
    let dir = tempfile::tempdir().expect("a directory");
    let cases = [
        ("unknown.toml", "retention_hours = 5\n", "retention_hours"),
        (
            "bad-kafka-value.toml",
            "\"num.partitions\" = \"many\"\n",
            "num.partitions",
        ),
        (
            "bad-topic-default.toml",
            "[topic_defaults]\n\"segment.bytes\" = \"tiny\"\n",
            "segment.bytes",
        ),
    ];
    for (name, text, key) in cases {
        let file = write_file(&dir, name, text);
        let data = dir.path().join(format!("{name}-data"));
        let output = run_bounded(
            ringlog_command()
                .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "off"])
                .arg("--config")
                .arg(&file)
                .arg("--data-dir")
                .arg(&data),
            b"",
            REFUSAL_TIMEOUT,
        )
        .unwrap_or_else(|failure| panic!("{name}: {failure}"));
        let stderr = output.stderr_text();
        assert!(!output.status.success(), "{name} was accepted: {stderr}");
        assert!(
            stderr.contains(key),
            "{name}: the error names {key}: {stderr}"
        );
    }
}
