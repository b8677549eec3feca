//! The `ringlog` binary: the broker (`serve`), the Kafka client subcommands (`topic`,
//! `produce`, `consume`, `group`, `cluster`), the storage inspection ones (`log`) and a local
//! cluster for trying things out (`dev cluster`).
//! Each subcommand family lives in its own module; this file only parses the command line and
//! maps outcomes to exit codes.

mod cli;
mod dev;
mod inspect;
mod logging;
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
    /// Log lines as text for people (human) or one JSON object per line (json)
    /// [env: RINGLOG_LOG_FORMAT] [default: human]
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    log_format: Option<logging::LogFormat>,

    /// Which log lines to write: a level (off, error, warn, info, debug, trace) or a filter
    /// such as warn,ringlog_net=debug [env: RINGLOG_LOG_LEVEL, then RUST_LOG]
    /// [default: serve: info for Ringlog's crates, warn for the rest; other commands: warn]
    #[arg(long, global = true, value_name = "LEVEL_OR_FILTER", value_parser = logging::parse_level)]
    log_level: Option<String>,

    #[command(subcommand)]
    command: Command,
}

/// Log filter when neither --log-level, RINGLOG_LOG_LEVEL nor RUST_LOG is set: the one-shot
/// tools print only problems.
const LOG_FILTER_DEFAULT: &str = "warn";

/// Log filter for `serve` when none is set: a long-running broker's operators want its
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
    /// The cluster's brokers and controller, and a Ringlog broker's shards.
    #[command(subcommand)]
    Cluster(cli::cluster::ClusterCommand),
    /// Inspect partition logs on disk. Read-only: nothing is recovered, truncated or rewritten.
    #[command(subcommand)]
    Log(inspect::LogCommand),
    /// Tools for trying Ringlog out locally (`dev cluster`: an N-node cluster on loopback).
    #[command(subcommand)]
    Dev(dev::DevCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print every `ringlog serve` setting at its default, as a commented TOML config file.
    Default,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_filter_default = match cli.command {
        Command::Serve(_) => SERVE_LOG_FILTER_DEFAULT,
        _ => LOG_FILTER_DEFAULT,
    };
    let env = |name: &str| std::env::var_os(name);
    match logging::resolve(
        cli.log_format,
        cli.log_level.as_deref(),
        log_filter_default,
        &env,
    ) {
        Ok(settings) => logging::init(&settings),
        Err(error) => {
            eprintln!("ringlog: {error}");
            return ExitCode::from(logging::EXIT_STATUS_USAGE);
        }
    }
    let client_outcome = match cli.command {
        Command::Serve(args) => return report(serve::run(*args)),
        Command::Log(command) => return report(inspect::run(command)),
        Command::Dev(command) => return report(dev::run(command)),
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
