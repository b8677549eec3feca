//! The real `ringlog` binary's log options: `serve --log-format json` writes nothing but JSON
//! lines on stderr, from start to a SIGTERM stop; `--log-level` beats `RUST_LOG`; and a bad
//! value, on the command line or in the environment, is a usage error (exit status 2) naming
//! where it came from.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{ringlog_command, run_bounded, Broker};

/// How long a `ringlog` call that fails at argument parsing may take.
const USAGE_ERROR_TIMEOUT: Duration = Duration::from_secs(30);

/// clap's exit status for a usage error, which bad log settings share.
const EXIT_STATUS_USAGE: i32 = 2;

/// The lines of the broker's stderr file after it stopped.
fn stderr_lines(broker: &Broker) -> Vec<String> {
    let text = std::fs::read_to_string(broker.stderr_path()).expect("read the broker's stderr");
    text.lines().map(str::to_string).collect()
}

#[test]
fn serve_with_log_format_json_writes_one_json_object_per_line() {
    // RUST_LOG=info: the level must not depend on the test's environment, and is below debug so
    // the absence of debug lines shows the filter applies.
    let mut broker = Broker::start_logging(&["--log-format", "json"], Some("info"));
    broker.stop();
    let lines = stderr_lines(&broker);
    assert!(!lines.is_empty(), "the broker logged nothing");
    let mut messages = Vec::new();
    for line in &lines {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
        for field in ["timestamp", "level", "target"] {
            assert!(object[field].is_string(), "no {field}: {line}");
        }
        let level = object["level"].as_str().unwrap_or_default();
        assert!(
            ["ERROR", "WARN", "INFO"].contains(&level),
            "a {level} line under RUST_LOG=info: {line}"
        );
        let message = object["fields"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no fields.message: {line}"));
        messages.push(message.to_string());
    }
    for expected in [
        "starting broker",
        "accepting Kafka connections",
        "broker stopped",
    ] {
        assert!(
            messages.iter().any(|message| message == expected),
            "no \"{expected}\" line among {messages:?}"
        );
    }
    let starting = lines
        .iter()
        .find(|line| line.contains("\"starting broker\"") && line.contains("data_dir"))
        .expect("a starting broker line");
    let starting: serde_json::Value = serde_json::from_str(starting).expect("JSON");
    assert_eq!(
        starting["fields"]["data_dir"].as_str(),
        Some(broker.data_dir().display().to_string().as_str()),
        "fields carry the event's values"
    );
}

#[test]
fn log_level_debug_beats_rust_log() {
    let mut broker = Broker::start_logging(&["--log-level", "debug"], Some("error"));
    broker.stop();
    let lines = stderr_lines(&broker);
    // NO_COLOR is set by the harness, so the level stands alone between spaces.
    assert!(
        lines.iter().any(|line| line.contains(" DEBUG ")),
        "no DEBUG line under --log-level debug:\n{}",
        lines.join("\n")
    );
    assert!(
        lines.iter().any(|line| line.contains("starting broker")),
        "no info lines under --log-level debug (RUST_LOG=error must not apply)"
    );
}

/// Runs `ringlog ARGS` with `env` added, expecting a usage error; returns its stderr.
fn usage_error(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = ringlog_command();
    command
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    let output = run_bounded(&mut command, b"", USAGE_ERROR_TIMEOUT)
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(
        output.status.code(),
        Some(EXIT_STATUS_USAGE),
        "{args:?} {env:?}: {}",
        output.stderr_text()
    );
    output.stderr_text()
}

#[test]
fn bad_log_settings_are_usage_errors_naming_their_source() {
    // `log verify` of a missing directory would fail later with status 1; a usage error must
    // stop it first.
    let missing = "/nonexistent/ringlog-log-format-test";
    let stderr = usage_error(&["--log-format", "xml", "log", "verify", missing], &[]);
    assert!(stderr.contains("--log-format"), "{stderr}");
    let stderr = usage_error(&["log", "verify", missing, "--log-level", "degub"], &[]);
    assert!(
        stderr.contains("--log-level") && stderr.contains("degub"),
        "{stderr}"
    );
    let stderr = usage_error(
        &["log", "verify", missing],
        &[("RINGLOG_LOG_FORMAT", "xml")],
    );
    assert!(
        stderr.contains("RINGLOG_LOG_FORMAT") && stderr.contains("xml"),
        "{stderr}"
    );
    let stderr = usage_error(
        &["log", "verify", missing],
        &[("RINGLOG_LOG_LEVEL", "loud")],
    );
    assert!(stderr.contains("RINGLOG_LOG_LEVEL"), "{stderr}");
    let stderr = usage_error(&["log", "verify", missing], &[("RUST_LOG", "ringlog=loud")]);
    assert!(stderr.contains("RUST_LOG"), "{stderr}");
}
