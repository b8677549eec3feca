//! The `ringlog` binary: the broker (`serve`) and the admin and inspection subcommands.
//! Each subcommand family lives in its own module; this file only parses the command line and
//! maps outcomes to exit codes.

mod inspect;
mod json;
mod logging;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ringlog",
    version,
    about = "Ringlog: a Kafka-compatible event streaming broker"
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
    /// are the flag names with `_` for `-`; the file may also hold a [topic_defaults] table of
    /// Kafka topic configs (e.g. "retention.ms" = "604800000") for topics created without them.
    Serve(Box<serve::ServeArgs>),
    /// Inspect partition logs on disk. Read-only: nothing is recovered, truncated or rewritten.
    #[command(subcommand)]
    Log(inspect::LogCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_filter_default = match cli.command {
        Command::Serve(_) => SERVE_LOG_FILTER_DEFAULT,
        Command::Log(_) => LOG_FILTER_DEFAULT,
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
    let outcome = match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Log(command) => inspect::run(command),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ringlog: {error:#}");
            ExitCode::FAILURE
        }
    }
}
