//! The client subcommands (`topic`, `produce`, `consume`, `group`, `cluster`): they speak the
//! Kafka protocol through `ringlog_net::client`, so they work against any Kafka-compatible
//! broker, print tables (or `--json`), and exit with a status a script can act on. Only
//! `cluster info` also asks a Ringlog broker's admin HTTP API, for its shards, when it answers.

pub mod admin_http;
pub mod client;
pub mod cluster;
pub mod consume;
pub mod group;
pub mod output;
pub mod produce;
pub mod topic;

use std::fmt;

use clap::Args;

/// Exit statuses of the client subcommands, shown in `ringlog --help`.
pub const EXIT_FAILED: u8 = 1;
/// Bad arguments; clap uses the same status for the errors it finds.
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNREACHABLE: u8 = 3;
pub const EXIT_NOT_FOUND: u8 = 4;

/// What `ringlog --help` says about exit statuses.
pub const EXIT_STATUS_HELP: &str = "Exit status of the client commands: 0 done; 1 the cluster \
refused or an operation failed; 2 bad arguments; 3 no broker could be reached; 4 the topic or \
group does not exist.";

/// The bootstrap brokers when neither `--brokers` nor `RINGLOG_BROKERS` names any: the address
/// `ringlog serve` listens on by default.
pub const BROKERS_DEFAULT: &str = "127.0.0.1:9092";

/// The client id the subcommands send, so a broker's logs and metrics can tell them apart.
pub const CLIENT_ID: &str = "ringlog-cli";

/// Names the bootstrap brokers when `--brokers` does not.
pub const BROKERS_ENV: &str = "RINGLOG_BROKERS";

/// Where the cluster is and how to print: shared by every client subcommand.
#[derive(Clone, Debug, Args)]
pub struct Connect {
    /// Bootstrap brokers, comma-separated HOST:PORT; any one that answers is enough
    /// [env: RINGLOG_BROKERS] [default: 127.0.0.1:9092]
    // Not clap's `env`: it would take an empty variable for an empty list instead of unset.
    #[arg(long, value_name = "HOST:PORT,...")]
    pub brokers: Option<String>,

    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

impl Connect {
    /// The bootstrap brokers' addresses: `--brokers`, else `RINGLOG_BROKERS` unless it is empty,
    /// else [`BROKERS_DEFAULT`]. A list that names none is a usage error.
    pub fn addresses(&self) -> CliResult<Vec<String>> {
        let list = match &self.brokers {
            Some(list) => list.clone(),
            None => env_setting(BROKERS_ENV)?.unwrap_or_else(|| BROKERS_DEFAULT.to_string()),
        };
        let addresses: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|address| !address.is_empty())
            .map(str::to_string)
            .collect();
        if addresses.is_empty() {
            return Err(CliError::usage(format!(
                "--brokers (or {BROKERS_ENV}) names no broker: {list:?}"
            )));
        }
        Ok(addresses)
    }
}

/// A failed client command: what went wrong, what to do about it, and the exit status.
#[derive(Debug)]
pub struct CliError {
    pub status: u8,
    pub message: String,
    pub hint: Option<String>,
}

impl CliError {
    pub fn failed(message: impl Into<String>) -> CliError {
        CliError {
            status: EXIT_FAILED,
            message: message.into(),
            hint: None,
        }
    }

    pub fn usage(message: impl Into<String>) -> CliError {
        CliError {
            status: EXIT_USAGE,
            message: message.into(),
            hint: None,
        }
    }

    pub fn not_found(message: impl Into<String>, hint: impl Into<String>) -> CliError {
        CliError {
            status: EXIT_NOT_FOUND,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> CliError {
        self.hint = Some(hint.into());
        self
    }

    /// A Kafka error code a broker answered with, while doing `op`.
    pub fn kafka(op: impl Into<String>, code: i16, message: Option<String>) -> CliError {
        CliError::from_client(ringlog_net::Error::Kafka {
            op: op.into(),
            code,
            message,
        })
    }

    /// An error from the Kafka client, with the hint its kind calls for.
    pub fn from_client(error: ringlog_net::Error) -> CliError {
        use ringlog_net::Error;
        match &error {
            Error::Io { op, target, .. } => CliError {
                status: EXIT_UNREACHABLE,
                message: error.to_string(),
                hint: Some(
                    if op.starts_with("connecting") || op.starts_with("resolving") {
                        format!(
                        "is a Kafka broker running at {target}? Start one with `ringlog serve`, \
                         or point --brokers (or RINGLOG_BROKERS) at one"
                    )
                    } else {
                        format!("the connection to {target} failed; check the broker's log")
                    },
                ),
            },
            Error::Kafka { code, .. } => {
                let (status, hint) = kafka_hint(*code);
                CliError {
                    status,
                    message: error.to_string(),
                    hint: hint.map(str::to_string),
                }
            }
            _ => CliError::failed(error.to_string()),
        }
    }
}

impl From<ringlog_net::Error> for CliError {
    fn from(error: ringlog_net::Error) -> CliError {
        CliError::from_client(error)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(formatter, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

pub type CliResult<T = ()> = Result<T, CliError>;

/// Kafka error codes the hints know.
pub mod codes {
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const INVALID_TOPIC: i16 = 17;
    pub const RECORD_LIST_TOO_LARGE: i16 = 18;
    pub const NOT_ENOUGH_REPLICAS: i16 = 19;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_CONFIG: i16 = 40;
    pub const POLICY_VIOLATION: i16 = 44;
    pub const NON_EMPTY_GROUP: i16 = 68;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    pub const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
}

/// The exit status and advice for a Kafka error code.
fn kafka_hint(code: i16) -> (u8, Option<&'static str>) {
    match code {
        codes::UNKNOWN_TOPIC_OR_PARTITION => (
            EXIT_NOT_FOUND,
            Some("`ringlog topic list` shows the topics; `ringlog topic create NAME` makes one"),
        ),
        codes::GROUP_ID_NOT_FOUND => (
            EXIT_NOT_FOUND,
            Some("`ringlog group list` shows the groups"),
        ),
        codes::TOPIC_ALREADY_EXISTS => (
            EXIT_FAILED,
            Some("`ringlog topic describe NAME` shows it; `ringlog topic alter-config` changes its configs"),
        ),
        codes::INVALID_REPLICATION_FACTOR => (
            EXIT_FAILED,
            Some("--replicas cannot exceed the brokers in the cluster (`ringlog cluster info`)"),
        ),
        codes::INVALID_PARTITIONS => (
            EXIT_FAILED,
            Some("a topic has at least one partition, and partitions can be added, never removed"),
        ),
        codes::INVALID_CONFIG | codes::POLICY_VIOLATION => (
            EXIT_FAILED,
            Some("configs use Kafka's topic config names and values, e.g. retention.ms=86400000"),
        ),
        codes::INVALID_TOPIC => (
            EXIT_FAILED,
            Some("topic names are 1-249 characters of a-z, A-Z, 0-9, '.', '_' and '-'"),
        ),
        codes::NON_EMPTY_GROUP => (
            EXIT_FAILED,
            Some("the group still has members: stop its consumers first"),
        ),
        codes::MESSAGE_TOO_LARGE | codes::RECORD_LIST_TOO_LARGE => (
            EXIT_FAILED,
            Some("raise the topic's max.message.bytes, or send smaller records"),
        ),
        codes::NOT_ENOUGH_REPLICAS => (
            EXIT_FAILED,
            Some("fewer replicas are in sync than the topic's min.insync.replicas; retry, or use --acks 1"),
        ),
        codes::UNSUPPORTED_COMPRESSION_TYPE => (
            EXIT_FAILED,
            Some("the topic's compression.type refuses this codec; try another --compression"),
        ),
        _ => (EXIT_FAILED, None),
    }
}

/// The value of the environment variable `name`, if it is set and not empty: an empty variable
/// counts as unset, as it does for `serve`'s settings and the log settings.
pub fn env_setting(name: &str) -> CliResult<Option<String>> {
    match std::env::var(name) {
        Ok(value) if value.is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(CliError::usage(format!("{name} is not valid UTF-8")))
        }
    }
}

/// Parses `key=value`, for `--config` and `--set`.
pub fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_split_at_the_first_equals_sign() {
        assert_eq!(
            key_value("retention.ms=1000"),
            Ok(("retention.ms".into(), "1000".into()))
        );
        assert_eq!(key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(key_value("empty="), Ok(("empty".into(), String::new())));
        assert!(key_value("=x").is_err());
        assert!(key_value("novalue").is_err());
    }

    #[test]
    fn the_brokers_help_names_the_variable_and_the_default() {
        use clap::CommandFactory;

        #[derive(Debug, clap::Parser)]
        struct Probe {
            #[command(flatten)]
            connect: Connect,
        }
        let help = Probe::command().render_long_help().to_string();
        assert!(help.contains(&format!("[env: {BROKERS_ENV}]")), "{help}");
        assert!(
            help.contains(&format!("[default: {BROKERS_DEFAULT}]")),
            "{help}"
        );
    }

    #[test]
    fn brokers_split_on_commas_and_an_explicit_empty_list_is_a_usage_error() {
        let connect = |brokers: &str| Connect {
            brokers: Some(brokers.to_string()),
            json: false,
        };
        assert_eq!(
            connect(" a:1, ,b:2 ").addresses().ok(),
            Some(vec!["a:1".to_string(), "b:2".to_string()])
        );
        let error = connect(" , ").addresses().err().map(|error| error.status);
        assert_eq!(error, Some(EXIT_USAGE));
    }

    #[test]
    fn unreachable_brokers_say_what_to_do() {
        let error = CliError::from_client(ringlog_net::Error::Io {
            op: "connecting to",
            target: "127.0.0.1:1".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        });
        assert_eq!(error.status, EXIT_UNREACHABLE);
        assert!(error.to_string().contains("ringlog serve"), "{error}");
    }

    #[test]
    fn unknown_topics_exit_not_found() {
        let error = CliError::from_client(ringlog_net::Error::Kafka {
            op: "topic nope".into(),
            code: codes::UNKNOWN_TOPIC_OR_PARTITION,
            message: None,
        });
        assert_eq!(error.status, EXIT_NOT_FOUND);
        assert!(
            error.to_string().contains("UNKNOWN_TOPIC_OR_PARTITION"),
            "{error}"
        );
    }
}
