//! `ringlog-bench`: the command-line entry point of the benchmark harness. One subcommand per
//! kind of benchmark; Kafka workloads (produce/consume over the wire) will sit beside `storage`.

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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Storage(args) => ringlog_bench::storage::run(&args),
        Command::Kafka(args) => ringlog_bench::kafka::run(&args).map(|_| ()),
    }
}
