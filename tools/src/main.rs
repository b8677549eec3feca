//! The `ringlog` binary: the broker (`serve`, to come) and the admin and inspection subcommands.
//! Each subcommand family lives in its own module; this file only parses the command line and
//! maps outcomes to exit codes.

mod inspect;
mod json;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ringlog",
    version,
    about = "Ringlog: a Kafka-compatible event streaming broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect partition logs on disk. Read-only: nothing is recovered, truncated or rewritten.
    #[command(subcommand)]
    Log(inspect::LogCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let outcome = match cli.command {
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
