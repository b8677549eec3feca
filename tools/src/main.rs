//! The `ringlog` binary: the broker (`serve`), the Kafka client subcommands (`topic`,
//! `produce`, `consume`, `group`, `cluster`) and the storage inspection ones (`log`).
//! Each subcommand family lives in its own module; this file only parses the command line and
//! maps outcomes to exit codes.

mod cli;
mod inspect;
mod json;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ringlog",
    version,
    about = "Ringlog: a Kafka-compatible event streaming broker",
    after_help = cli::EXIT_STATUS_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Log filter when RUST_LOG is unset: the one-shot tools print only problems.
const LOG_FILTER_DEFAULT: &str = "warn";

/// Log filter for `serve` when RUST_LOG is unset: a long-running broker's operators want its
/// lifecycle (settings, listeners, shutdown) in the log, but not its dependencies' chatter.
const SERVE_LOG_FILTER_DEFAULT: &str =
    "warn,ringlog=info,ringlog_net=info,ringlog_cluster=info,ringlog_engine=info";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker until SIGTERM or SIGINT (a second one exits at once).
    ///
    /// Each setting is taken from, in order of precedence: its flag, the TOML file named by
    /// --config (or RINGLOG_CONFIG), its RINGLOG_* environment variable, its default. File keys
    /// are the flag names with `_` for `-` (`ringlog config default` prints them all), or Kafka's
    /// broker config names, quoted ("num.partitions", "log.retention.hours", ...); a
    /// [topic_defaults] table holds Kafka topic configs for topics created without them.
    Serve(Box<serve::ServeArgs>),
    /// Print the broker's configuration file with every default (`config default`).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Create, list, describe, delete and change topics (any Kafka-compatible cluster).
    #[command(subcommand)]
    Topic(cli::topic::TopicCommand),
    /// Write lines of stdin to a topic as records.
    Produce(cli::produce::ProduceArgs),
    /// Read records from a topic, alone or in a consumer group.
    Consume(cli::consume::ConsumeArgs),
    /// List, describe and delete consumer groups; reset their offsets.
    #[command(subcommand)]
    Group(cli::group::GroupCommand),
    /// The cluster's brokers and controller.
    #[command(subcommand)]
    Cluster(cli::cluster::ClusterCommand),
    /// Inspect partition logs on disk. Read-only: nothing is recovered, truncated or rewritten.
    #[command(subcommand)]
    Log(inspect::LogCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print every `ringlog serve` setting at its default, as a commented TOML config file.
    Default,
}

/// Colours in log lines only on a terminal, and not when `NO_COLOR` is set to anything but the
/// empty string (no-color.org): a log file, a pipe or the journal gets plain text.
fn log_colours(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|value| value.is_empty())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_filter_default = match cli.command {
        Command::Serve(_) => SERVE_LOG_FILTER_DEFAULT,
        _ => LOG_FILTER_DEFAULT,
    };
    let colours = log_colours(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colours)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log_filter_default)),
        )
        .init();
    let client_outcome = match cli.command {
        Command::Serve(args) => return report(serve::run(*args)),
        Command::Log(command) => return report(inspect::run(command)),
        Command::Config(ConfigCommand::Default) => cli::output::print(&serve::default_file()),
        Command::Topic(command) => cli::topic::run(command),
        Command::Produce(args) => cli::produce::run(args),
        Command::Consume(args) => cli::consume::run(args),
        Command::Group(command) => cli::group::run(command),
        Command::Cluster(command) => cli::cluster::run(command),
    };
    match client_outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ringlog: {error}");
            ExitCode::from(error.status)
        }
    }
}

/// The exit status of `serve` and `log`, which report their own failures as `anyhow` chains.
fn report(outcome: anyhow::Result<ExitCode>) -> ExitCode {
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ringlog: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(log_colours(true, None));
        assert!(log_colours(true, Some(OsStr::new(""))));
        assert!(!log_colours(true, Some(OsStr::new("1"))));
        assert!(!log_colours(false, None));
        assert!(!log_colours(false, Some(OsStr::new(""))));
    }
}
