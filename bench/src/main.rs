//! `ringlog-bench`: the command-line entry point of the benchmark harness. One subcommand per
//! kind of benchmark: `storage` drives the engine directly, `kafka` runs one workload against any
//! Kafka broker over the wire, `compare` runs Ringlog and a peer broker side by side.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "ringlog-bench", about = "Ringlog benchmarks", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Storage engine micro-benchmark: raw O_DIRECT writes vs durable appends, latency at half
    /// load, and cached/cold reads, all on one disk in one run.
    Storage(ringlog_bench::storage::StorageArgs),
    /// A Kafka workload against a running broker: producers and consumers over the wire,
    /// throughput, publish and end-to-end latency percentiles, the broker's CPU and RSS.
    Kafka(ringlog_bench::kafka::KafkaArgs),
    /// Ringlog and a peer broker (Tansu) side by side: starts each on a free loopback port in
    /// turn, runs the same workloads, and checks the targets (results.json, .html, .md).
    Compare(ringlog_bench::kafka::compare::CompareArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Storage(args) => ringlog_bench::storage::run(&args),
        Command::Kafka(args) => {
            let result = ringlog_bench::kafka::run(&args)?;
            let errors: u64 = result.errors.iter().map(|error| error.count).sum();
            if errors > 0 {
                anyhow::bail!("the run had {errors} errors (listed above)");
            }
            Ok(())
        }
        Command::Compare(args) => ringlog_bench::kafka::compare::run(&args),
    }
}
