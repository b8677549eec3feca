//! `ringlog-bench storage`: how close durable appends come to what the disk can do. In one run,
//! on one disk, it measures raw sequential O_DIRECT writes (the baseline), durable appends
//! through `PartitionLog` from 1 and 2 shards, append-to-durable latency at a fraction of the
//! measured maximum rate, and cached and cold reads of what was written; then prints the
//! durable-append/raw ratios against the targets, a Markdown table, and optionally JSON.
//!
//! Numbers from one run are comparable with each other (same disk, same minute); numbers from
//! different runs on a shared machine are not, which is why everything runs in one process.

pub mod append;
pub mod latency;
pub mod raw;
pub mod read;
pub mod report;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use ringlog_engine::cache::BATCH_CACHE_BYTES_DEFAULT;
use ringlog_engine::format::build_batch;
use ringlog_engine::log::now_ms;
use ringlog_engine::rt::{RuntimeConfig, TaskClass};
use serde::Serialize;

use crate::machine::{ensure_on_disk, load_average, MachineInfo};
use crate::watchdog::{StallReport, Watchdog};

const KIB: usize = 1024;
const MIB: u64 = 1024 * 1024;

/// The throughput target: durable appends reach at least this fraction of the raw
/// durable write bandwidth (same block size, write + fdatasync per block)...
pub const TARGET_APPEND_RAW_RATIO: f64 = 0.80;
/// ...for batches of this size, where framing and per-append costs should be amortised.
pub const TARGET_RATIO_BLOCK_BYTES: usize = 256 * KIB;
/// The latency target: p99 append-to-durable at half the maximum rate.
pub const TARGET_P99_US: u64 = 2_000;

/// Where the default data directory goes: /var/tmp is on the root disk (not tmpfs) on the
/// machines we run on, and survives reboots less often than /tmp is cleaned.
const DEFAULT_PARENT_DIR: &str = "/var/tmp";

/// Appends and reads use one leader epoch; the benchmark never changes leaders.
pub const LEADER_EPOCH: i32 = 0;

/// A phase of the storage benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Raw sequential O_DIRECT writes through the engine's `rt::fs::File`.
    Raw,
    /// Durable appends through `PartitionLog`, saturated, from each shard count.
    Append,
    /// Append-to-durable latency from a paced open-loop appender.
    Latency,
    /// Cached and cold reads of what the 1-shard append case wrote.
    Read,
}

/// The shard task queue appends run in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Queue {
    /// Where the broker runs produce requests.
    Latency,
    /// Where the broker runs retention and compaction.
    Background,
}

impl Queue {
    fn task_class(self) -> TaskClass {
        match self {
            Queue::Latency => TaskClass::Latency,
            Queue::Background => TaskClass::Background,
        }
    }
}

/// Command-line arguments of `ringlog-bench storage`.
#[derive(Args, Clone, Debug, Serialize)]
pub struct StorageArgs {
    /// Directory for the benchmark's files, on the disk to measure (not tmpfs). Default: a new
    /// directory under /var/tmp, removed afterwards.
    #[arg(long)]
    pub dir: Option<PathBuf>,

    /// Block (= batch) sizes in KiB, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [16, 256])]
    pub block_kib: Vec<usize>,

    /// Shard counts for the append phase, comma-separated; each shard appends to its own log.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2])]
    pub shards: Vec<usize>,

    /// Concurrent appenders per shard in the throughput phase (they share fdatasyncs).
    #[arg(long, default_value_t = 8)]
    pub appenders: usize,

    /// Bytes each case writes per shard, in MiB (a case stops at this or --duration-secs).
    #[arg(long, default_value_t = 512)]
    pub volume_mib: u64,

    /// Longest a case may run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,

    /// The latency phase's rate as a fraction of the 1-shard maximum batches/s.
    #[arg(long, default_value_t = 0.5)]
    pub latency_load: f64,

    /// The latency phase's rate in batches/s, overriding --latency-load (needed when the
    /// append phase is not run).
    #[arg(long)]
    pub latency_rate: Option<f64>,

    /// Batch cache per shard, in MiB (the broker's default). Cached reads read the tail that
    /// fits in it, over and over, as many bytes as the case wrote.
    #[arg(long, default_value_t = BATCH_CACHE_BYTES_DEFAULT / (KIB * KIB))]
    pub cache_mib: usize,

    /// Bytes asked for by each read, in KiB (a consumer's fetch size).
    #[arg(long, default_value_t = 1024)]
    pub fetch_kib: usize,

    /// Check every batch read back by its CRC-32C (costs CPU; offsets and sizes are always
    /// checked).
    #[arg(long)]
    pub verify_reads: bool,

    /// Rounds of raw and append cases (interleaved per block size); the summary reports the
    /// median round. More rounds cost time but tame a noisy shared machine.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,

    /// The task queue appends run in (the broker runs produce in the latency queue).
    #[arg(long, value_enum, default_value_t = Queue::Latency)]
    pub queue: Queue,

    /// Phases to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_values = ["raw", "append", "latency", "read"])]
    pub phases: Vec<Phase>,

    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Keep the data directory's files afterwards.
    #[arg(long)]
    pub keep_files: bool,
}

impl StorageArgs {
    fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            !self.block_kib.is_empty(),
            "--block-kib needs at least one size"
        );
        for &block in &self.block_kib {
            ensure!(
                (4..=1024).contains(&block) && block % 4 == 0,
                "--block-kib {block}: sizes must be multiples of 4 KiB (direct I/O blocks) up \
                 to 1024 KiB (the engine's default max.message.bytes)"
            );
        }
        ensure!(
            self.shards.iter().all(|&count| count >= 1),
            "--shards must be at least 1"
        );
        ensure!(self.appenders >= 1, "--appenders must be at least 1");
        ensure!(self.volume_mib >= 1, "--volume-mib must be at least 1");
        ensure!(self.duration_secs > 0.0, "--duration-secs must be positive");
        ensure!(
            self.latency_load > 0.0 && self.latency_load <= 1.0,
            "--latency-load must be in (0, 1]"
        );
        if let Some(rate) = self.latency_rate {
            ensure!(rate > 0.0, "--latency-rate must be positive");
        }
        ensure!(self.fetch_kib >= 1, "--fetch-kib must be at least 1");
        ensure!(self.rounds >= 1, "--rounds must be at least 1");
        Ok(())
    }

    fn runs(&self, phase: Phase) -> bool {
        self.phases.contains(&phase)
    }

    pub fn limits(&self) -> Limits {
        Limits {
            volume_bytes: self.volume_mib * MIB,
            duration: Duration::from_secs_f64(self.duration_secs),
        }
    }
}

/// How much one case may do: whichever bound is reached first ends it.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub volume_bytes: u64,
    pub duration: Duration,
}

impl Limits {
    /// Whole blocks of `block_bytes` within the volume bound (at least one).
    pub fn blocks(&self, block_bytes: usize) -> u64 {
        (self.volume_bytes / block_bytes as u64).max(1)
    }
}

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub struct StorageReport {
    pub command: String,
    pub dir: PathBuf,
    pub machine: MachineInfo,
    pub args: StorageArgs,
    pub raw: Vec<raw::RawResult>,
    pub append: Vec<append::AppendResult>,
    pub latency: Vec<latency::LatencyResult>,
    pub read: Vec<read::ReadResult>,
    pub ratios: Vec<report::Ratio>,
    pub ratio_summaries: Vec<report::RatioSummary>,
    pub targets: Vec<report::TargetCheck>,
    /// Cases during which a shard stopped making progress and had to be woken (see
    /// `crate::watchdog`); their numbers are not valid.
    pub stalls: Vec<StallReport>,
    /// The 1/5/15-minute load averages at the start and the end: other work on the machine
    /// shows here.
    pub load_average_start: String,
    pub load_average_end: String,
}

/// Runs the storage benchmark as `args` say, printing results as they come and a summary.
pub fn run(args: &StorageArgs) -> anyhow::Result<()> {
    args.validate()?;
    let (dir, created) = data_dir(args.dir.as_deref())?;
    let outcome = run_in(args, &dir);
    if created && !args.keep_files {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("removing the data directory {}", dir.display()))?;
    }
    let report = outcome?;
    report::print(&report);
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("writing results to {}", path.display()))?;
        eprintln!("results written to {}", path.display());
    }
    Ok(())
}

fn run_in(args: &StorageArgs, dir: &Path) -> anyhow::Result<StorageReport> {
    let machine = MachineInfo::probe(dir);
    eprintln!(
        "ringlog-bench storage: {} ({} {}), {} CPUs, kernel {}",
        dir.display(),
        machine.device,
        machine.fs_type,
        machine.nproc,
        machine.kernel
    );
    let limits = args.limits();
    let mut report = StorageReport {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        dir: dir.to_path_buf(),
        machine,
        args: args.clone(),
        raw: Vec::new(),
        append: Vec::new(),
        latency: Vec::new(),
        read: Vec::new(),
        ratios: Vec::new(),
        ratio_summaries: Vec::new(),
        targets: Vec::new(),
        stalls: Vec::new(),
        load_average_start: load_average(),
        load_average_end: String::new(),
    };
    let blocks: Vec<usize> = args.block_kib.iter().map(|kib| kib * KIB).collect();

    let mut shard_counts = if args.runs(Phase::Append) {
        args.shards.clone()
    } else {
        Vec::new()
    };
    // Reads read back what the 1-shard case wrote, so that case always runs for them.
    if args.runs(Phase::Read) && !shard_counts.contains(&1) {
        shard_counts.insert(0, 1);
    }
    // Each round measures every block size's raw baseline and appends back to back, so a
    // ratio compares cases seconds apart; several rounds show how much the machine's noise
    // moves the numbers, and the summary takes medians.
    for round in 0..args.rounds {
        for &block_bytes in &blocks {
            if args.runs(Phase::Raw) {
                let case = format!("round {round}: raw {} KiB", block_bytes / KIB);
                let case_dir = dir.join(format!("raw-{}k", block_bytes / KIB));
                let (results, stalled) = watched(&case, &mut report.stalls, || {
                    raw::run(&case_dir, block_bytes, limits)
                });
                for mut result in results? {
                    result.round = round;
                    result.stalled = stalled;
                    eprintln!("  {}", report::raw_line(&result));
                    report.raw.push(result);
                }
            }
            let batch = batch_of_size(block_bytes)?;
            for &shard_count in &shard_counts {
                let settings = append::AppendSettings {
                    block_bytes,
                    shard_count,
                    appenders: args.appenders,
                    limits,
                    cache_bytes: args.cache_mib * KIB * KIB,
                    read: (shard_count == 1 && args.runs(Phase::Read)).then_some(
                        read::ReadSettings {
                            fetch_bytes: args.fetch_kib * KIB,
                            verify: args.verify_reads,
                        },
                    ),
                    task_class: args.queue.task_class(),
                };
                let case = format!(
                    "round {round}: append {} KiB x{shard_count}",
                    block_bytes / KIB
                );
                let case_dir = dir.join(format!("append-{}k-{shard_count}s", block_bytes / KIB));
                let (outcome, stalled) = watched(&case, &mut report.stalls, || {
                    append::run(&case_dir, &batch, &settings)
                });
                let (mut result, reads) = outcome?;
                result.round = round;
                result.stalled = stalled;
                eprintln!("  {}", report::append_line(&result));
                report.append.push(result);
                for mut read in reads {
                    read.round = round;
                    read.stalled = stalled;
                    eprintln!("  {}", report::read_line(&read));
                    report.read.push(read);
                }
            }
        }
    }

    if args.runs(Phase::Latency) {
        for &block_bytes in &blocks {
            let rate = match args.latency_rate {
                Some(rate) => rate,
                None => {
                    let maxima: Vec<f64> = report
                        .append
                        .iter()
                        .filter(|result| {
                            result.shards == 1
                                && result.block_bytes == block_bytes
                                && !result.stalled
                        })
                        .map(|result| result.batches_per_s)
                        .collect();
                    let Some(max) = report::median(&maxima) else {
                        bail!("the latency phase needs the 1-shard append phase or --latency-rate");
                    };
                    max * args.latency_load
                }
            };
            let batch = batch_of_size(block_bytes)?;
            let settings = latency::LatencySettings {
                block_bytes,
                rate_batches_per_s: rate,
                load_fraction: args.latency_rate.map_or(args.latency_load, |_| f64::NAN),
                limits,
                cache_bytes: args.cache_mib * KIB * KIB,
                task_class: args.queue.task_class(),
            };
            let case = format!("latency {} KiB", block_bytes / KIB);
            let case_dir = dir.join(format!("latency-{}k", block_bytes / KIB));
            let (outcome, stalled) = watched(&case, &mut report.stalls, || {
                latency::run(&case_dir, &batch, &settings)
            });
            let mut result = outcome?;
            result.stalled = stalled;
            eprintln!("  {}", report::latency_line(&result));
            report.latency.push(result);
        }
    }

    report.ratios = report::ratios(&report);
    report.ratio_summaries = report::ratio_summaries(&report);
    report.targets = report::targets(&report);
    report.load_average_end = load_average();
    Ok(report)
}

/// Thread names of the benchmark's shards (`RuntimeConfig::name` plus the shard index).
const SHARD_THREAD_NAME: &str = "bench-shard";

/// Runs one case under the stall watchdog, recording a stall if there was one. Returns the
/// case's output and whether it stalled.
fn watched<T>(
    case: &str,
    stalls: &mut Vec<StallReport>,
    run_case: impl FnOnce() -> T,
) -> (T, bool) {
    let watchdog = Watchdog::start(case, SHARD_THREAD_NAME);
    let output = run_case();
    let seen = watchdog.finish();
    let stalled = seen.nudges > 0;
    if stalled {
        stalls.push(seen);
    }
    (output, stalled)
}

/// The data directory to use, and whether this run created it (and so removes it).
fn data_dir(requested: Option<&Path>) -> anyhow::Result<(PathBuf, bool)> {
    let (dir, created) = match requested {
        Some(dir) => {
            let fresh = !dir.exists();
            (dir.to_path_buf(), fresh)
        }
        None => {
            let parent = Path::new(DEFAULT_PARENT_DIR);
            let parent = if parent.is_dir() {
                parent.to_path_buf()
            } else {
                std::env::current_dir()?
            };
            (
                parent.join(format!("ringlog-bench-{}", std::process::id())),
                true,
            )
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    ensure_on_disk(&dir)?;
    Ok((dir, created))
}

/// One shard per case thread, pinned like the broker's, with the broker's io memory and
/// preemption timer, so the engine runs as it would in production.
pub fn runtime_config(shard_count: usize) -> RuntimeConfig {
    RuntimeConfig {
        shard_count: Some(shard_count),
        name: String::from(SHARD_THREAD_NAME),
        ..RuntimeConfig::default()
    }
}

/// Fills `buffer` with bytes that do not compress or dedupe (xorshift64), so no layer below
/// can make the benchmark's writes cheaper than a real producer's.
pub fn fill_incompressible(buffer: &mut [u8], seed: u64) {
    let mut state = seed | 1;
    for chunk in buffer.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
}

/// Adjusting the payload to hit an exact batch size converges in one or two steps (only the
/// value-length varint can change width); more means a bug.
const BATCH_SIZE_ATTEMPTS_MAX: usize = 4;

/// A one-record Kafka v2 RecordBatch of exactly `batch_bytes` bytes, built with
/// `format::build_batch` around an incompressible payload: what a producer would send.
pub fn batch_of_size(batch_bytes: usize) -> anyhow::Result<Bytes> {
    let mut payload_bytes = batch_bytes;
    for _ in 0..BATCH_SIZE_ATTEMPTS_MAX {
        let mut payload = vec![0_u8; payload_bytes];
        fill_incompressible(&mut payload, batch_bytes as u64);
        let batch = build_batch(now_ms(), &[(None, Some(&payload))]);
        if batch.len() == batch_bytes {
            return Ok(batch);
        }
        let overhead = batch.len() - payload_bytes;
        ensure!(
            overhead < batch_bytes,
            "a {batch_bytes}-byte batch cannot hold a record"
        );
        payload_bytes = batch_bytes - overhead;
    }
    bail!("could not build a batch of exactly {batch_bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringlog_engine::format::validate_batch;

    #[test]
    fn batches_have_the_exact_size_and_are_valid() {
        for batch_bytes in [4 * KIB, 16 * KIB, 256 * KIB, 1024 * KIB] {
            let batch = batch_of_size(batch_bytes).expect("batch");
            assert_eq!(batch.len(), batch_bytes);
            let info = validate_batch(&batch).expect("valid");
            assert_eq!(info.records_count, 1);
        }
    }

    #[test]
    fn payload_does_not_repeat() {
        let mut buffer = vec![0_u8; 4096];
        fill_incompressible(&mut buffer, 7);
        assert_ne!(buffer[..2048], buffer[2048..]);
        assert!(buffer.iter().filter(|&&byte| byte == 0).count() < 64);
    }

    #[test]
    fn limits_count_whole_blocks() {
        let limits = Limits {
            volume_bytes: 10 * MIB,
            duration: Duration::from_secs(1),
        };
        assert_eq!(limits.blocks(256 * KIB), 40);
        assert_eq!(
            Limits {
                volume_bytes: 1,
                ..limits
            }
            .blocks(4096),
            1
        );
    }
}
