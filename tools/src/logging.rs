//! The log set-up every `ringlog` command shares: `tracing` lines on stderr, as text for people
//! (`--log-format human`) or one JSON object per line for log collectors (`json`), filtered by
//! a level or a filter from `--log-level`, `RINGLOG_LOG_LEVEL` or `RUST_LOG`.
//!
//! Precedence is flag > `RINGLOG_*` variable > `RUST_LOG` (the level only) > the command's
//! default. As in `serve`, a variable set to the empty string counts as unset, and Ringlog's own
//! variables are checked even when a flag overrides them, so a stale bad value surfaces now.
//! `RUST_LOG` is checked only when it is the one used: other programs read it too, and a value
//! meant for them should not stop a broker that was told its level otherwise.

use std::ffi::{OsStr, OsString};

use tracing_subscriber::EnvFilter;

/// The environment variable for `--log-format`.
pub const LOG_FORMAT_ENV: &str = "RINGLOG_LOG_FORMAT";

/// The environment variable for `--log-level`.
pub const LOG_LEVEL_ENV: &str = "RINGLOG_LOG_LEVEL";

/// The `tracing` ecosystem's own filter variable, read when Ringlog's is unset.
pub const RUST_LOG_ENV: &str = "RUST_LOG";

/// Exit status for a bad log setting: 2, what clap exits with for a usage error, so a bad
/// `RINGLOG_LOG_FORMAT` fails like a bad `--log-format`.
pub const EXIT_STATUS_USAGE: u8 = 2;

/// The levels a bare word in a filter may name (case does not matter).
const LEVEL_NAMES: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text: time, level, target, message and fields.
    Human,
    /// One JSON object per line: `timestamp`, `level`, `target`, and `fields` (with `message`).
    Json,
}

/// The log settings after every source has been looked at.
#[derive(Debug, PartialEq, Eq)]
pub struct LogSettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive list that parses.
    pub filter: String,
}

/// Resolves the format and filter from the flags (already checked by clap), the environment
/// (`env` looks a variable up; tests pass a map) and the command's default filter. The error
/// names the variable at fault.
pub fn resolve(
    format_flag: Option<LogFormat>,
    level_flag: Option<&str>,
    default_filter: &str,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<LogSettings, String> {
    let format_env = env_text(env, LOG_FORMAT_ENV)?
        .map(|text| {
            parse_format(&text).map_err(|reason| {
                format!(
                    "invalid value '{text}' for environment variable {LOG_FORMAT_ENV}: {reason}"
                )
            })
        })
        .transpose()?;
    let level_env = env_text(env, LOG_LEVEL_ENV)?
        .map(|text| {
            parse_level(&text).map_err(|reason| {
                format!("invalid value '{text}' for environment variable {LOG_LEVEL_ENV}: {reason}")
            })
        })
        .transpose()?;
    let filter = match (level_flag, level_env) {
        (Some(flag), _) => flag.to_string(),
        (None, Some(from_env)) => from_env,
        (None, None) => {
            match env_text(env, RUST_LOG_ENV)? {
                Some(text) => {
                    parse_rust_log(&text).map_err(|reason| {
                    format!("invalid value '{text}' for environment variable {RUST_LOG_ENV}: {reason}")
                })?;
                    text
                }
                None => default_filter.to_string(),
            }
        }
    };
    Ok(LogSettings {
        format: format_flag.or(format_env).unwrap_or(LogFormat::Human),
        filter,
    })
}

/// A variable's value as text; unset or empty is `None`, non-UTF-8 an error.
fn env_text(env: &dyn Fn(&str) -> Option<OsString>, name: &str) -> Result<Option<String>, String> {
    match env(name) {
        None => Ok(None),
        Some(value) if value.is_empty() => Ok(None),
        Some(value) => value
            .into_string()
            .map(Some)
            .map_err(|value| format!("environment variable {name} is not UTF-8: {value:?}")),
    }
}

fn parse_format(text: &str) -> Result<LogFormat, String> {
    <LogFormat as clap::ValueEnum>::from_str(text, true)
        .map_err(|_| "expected human or json".to_string())
}

/// `--log-level` and `RINGLOG_LOG_LEVEL`: a level, or a comma-separated `EnvFilter` list such
/// as `warn,ringlog_net=debug`. Stricter than `EnvFilter` in one way: a bare word must be a
/// level, because `EnvFilter` reads any other word as a target to log at every level, so a
/// misspelt level (`degub`) would silently log nothing.
pub fn parse_level(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err(format!(
            "expected a level ({}) or a filter such as warn,ringlog_net=debug",
            LEVEL_NAMES.join(", ")
        ));
    }
    for directive in text.split(',').map(str::trim) {
        let bare_word = !directive.is_empty() && !directive.contains(['=', '[']);
        if bare_word
            && !LEVEL_NAMES
                .iter()
                .any(|level| level.eq_ignore_ascii_case(directive))
        {
            return Err(format!(
                "'{directive}' is not a level ({}); to log one target, write {directive}=LEVEL",
                LEVEL_NAMES.join(", ")
            ));
        }
    }
    parse_rust_log(text)?;
    Ok(text.to_string())
}

/// `RUST_LOG` is read with `EnvFilter`'s own rules, as every other `tracing` program reads it.
fn parse_rust_log(text: &str) -> Result<(), String> {
    EnvFilter::builder()
        .parse(text)
        .map(drop)
        .map_err(|error| error.to_string())
}

/// Colours in log lines only on a terminal, and not when `NO_COLOR` is set to anything but the
/// empty string (no-color.org): a log file, a pipe or the journal gets plain text.
pub fn log_colours(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|value| value.is_empty())
}

/// Installs the process's log subscriber: lines on stderr in `settings`' format and filter.
pub fn init(settings: &LogSettings) {
    // `resolve` only returns filters that parse; should one not, logging at the default level
    // beats refusing to run.
    let filter = EnvFilter::builder()
        .parse(&settings.filter)
        .unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match settings.format {
        LogFormat::Human => {
            let colours = log_colours(
                std::io::IsTerminal::is_terminal(&std::io::stderr()),
                std::env::var_os("NO_COLOR").as_deref(),
            );
            builder.with_ansi(colours).init();
        }
        // Escape codes would corrupt the JSON strings, terminal or not.
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    const DEFAULT: &str = "warn,ringlog=info";

    fn resolved(
        format_flag: Option<LogFormat>,
        level_flag: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<LogSettings, String> {
        let env: Vec<(String, OsString)> = env
            .iter()
            .map(|(name, value)| (name.to_string(), OsString::from(value)))
            .collect();
        let lookup = |name: &str| {
            env.iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        resolve(format_flag, level_flag, DEFAULT, &lookup)
    }

    fn settings(format: LogFormat, filter: &str) -> LogSettings {
        LogSettings {
            format,
            filter: filter.to_string(),
        }
    }

    #[test]
    fn nothing_set_gives_human_lines_at_the_commands_default() {
        assert_eq!(
            resolved(None, None, &[]),
            Ok(settings(LogFormat::Human, DEFAULT))
        );
        // Empty variables count as unset.
        let empty = [
            (LOG_FORMAT_ENV, ""),
            (LOG_LEVEL_ENV, ""),
            (RUST_LOG_ENV, ""),
        ];
        assert_eq!(
            resolved(None, None, &empty),
            Ok(settings(LogFormat::Human, DEFAULT))
        );
    }

    #[test]
    fn the_format_flag_beats_the_environment() {
        let env = [(LOG_FORMAT_ENV, "json")];
        assert_eq!(
            resolved(None, None, &env).map(|s| s.format),
            Ok(LogFormat::Json)
        );
        assert_eq!(
            resolved(Some(LogFormat::Human), None, &env).map(|s| s.format),
            Ok(LogFormat::Human)
        );
        assert_eq!(
            resolved(None, None, &[(LOG_FORMAT_ENV, "JSON")]).map(|s| s.format),
            Ok(LogFormat::Json)
        );
    }

    #[test]
    fn the_level_comes_from_the_flag_then_ringlog_log_level_then_rust_log() {
        let both = [(LOG_LEVEL_ENV, "info"), (RUST_LOG_ENV, "trace")];
        assert_eq!(
            resolved(None, Some("debug"), &both).map(|s| s.filter),
            Ok("debug".into())
        );
        assert_eq!(
            resolved(None, None, &both).map(|s| s.filter),
            Ok("info".into())
        );
        assert_eq!(
            resolved(None, None, &[(RUST_LOG_ENV, "trace")]).map(|s| s.filter),
            Ok("trace".into())
        );
    }

    #[test]
    fn a_bad_environment_value_is_an_error_naming_the_variable() {
        let error = resolved(None, None, &[(LOG_FORMAT_ENV, "xml")]).expect_err("bad format");
        assert!(
            error.contains(LOG_FORMAT_ENV) && error.contains("'xml'"),
            "{error}"
        );
        assert!(error.contains("human or json"), "{error}");
        // Checked even when the flag overrides it.
        let error = resolved(Some(LogFormat::Json), None, &[(LOG_FORMAT_ENV, "xml")])
            .expect_err("bad format under a flag");
        assert!(error.contains(LOG_FORMAT_ENV), "{error}");

        let error = resolved(None, Some("info"), &[(LOG_LEVEL_ENV, "loud")])
            .expect_err("bad level under a flag");
        assert!(
            error.contains(LOG_LEVEL_ENV) && error.contains("'loud'"),
            "{error}"
        );

        let error =
            resolved(None, None, &[(RUST_LOG_ENV, "ringlog=loud")]).expect_err("bad RUST_LOG");
        assert!(error.contains(RUST_LOG_ENV), "{error}");
    }

    #[test]
    fn rust_log_is_only_checked_when_it_is_used() {
        let env = [(RUST_LOG_ENV, "ringlog=loud")];
        assert_eq!(
            resolved(None, Some("debug"), &env).map(|s| s.filter),
            Ok("debug".into())
        );
        let env = [(RUST_LOG_ENV, "ringlog=loud"), (LOG_LEVEL_ENV, "warn")];
        assert_eq!(
            resolved(None, None, &env).map(|s| s.filter),
            Ok("warn".into())
        );
        // RUST_LOG keeps EnvFilter's meaning: a bare word is a target there.
        assert_eq!(
            resolved(None, None, &[(RUST_LOG_ENV, "ringlog_net")]).map(|s| s.filter),
            Ok("ringlog_net".into())
        );
    }

    #[test]
    fn levels_and_filters_are_accepted_and_misspelt_levels_are_not() {
        for good in [
            "debug",
            "DEBUG",
            "off",
            "warn,ringlog_net=debug",
            "ringlog_engine::shard=trace",
        ] {
            assert_eq!(parse_level(good), Ok(good.to_string()), "{good}");
        }
        for (bad, says) in [
            ("degub", "'degub' is not a level"),
            ("warn,ringlog_net", "ringlog_net=LEVEL"),
            // EnvFilter's own error; clap and `resolve` put the value in front of it.
            ("ringlog_net=loud", ""),
            ("", "expected a level"),
            ("  ", "expected a level"),
        ] {
            let error = parse_level(bad).expect_err(bad);
            assert!(error.contains(says), "{bad:?}: {error}");
        }
    }

    #[test]
    fn bad_flags_are_usage_errors_naming_the_flag() {
        for (args, flag) in [
            (["ringlog", "--log-format", "xml", "serve"], "--log-format"),
            (["ringlog", "serve", "--log-level", "degub"], "--log-level"),
        ] {
            let error = crate::Cli::try_parse_from(args).expect_err("a bad flag");
            assert_eq!(error.exit_code(), i32::from(EXIT_STATUS_USAGE), "{args:?}");
            let message = error.to_string();
            assert!(message.contains(flag), "{args:?}: {message}");
        }
    }

    #[test]
    fn the_flags_go_before_or_after_the_subcommand() {
        for args in [
            vec![
                "ringlog",
                "--log-format",
                "json",
                "--log-level",
                "debug",
                "serve",
            ],
            vec![
                "ringlog",
                "serve",
                "--log-format",
                "json",
                "--log-level",
                "debug",
            ],
        ] {
            let cli = crate::Cli::try_parse_from(&args).expect("parses");
            assert_eq!(cli.log_format, Some(LogFormat::Json), "{args:?}");
            assert_eq!(cli.log_level.as_deref(), Some("debug"), "{args:?}");
        }
    }

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(log_colours(true, None));
        assert!(log_colours(true, Some(OsStr::new(""))));
        assert!(!log_colours(true, Some(OsStr::new("1"))));
        assert!(!log_colours(false, None));
        assert!(!log_colours(false, Some(OsStr::new(""))));
    }
}
