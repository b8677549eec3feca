//! The baseline: raw sequential O_DIRECT writes of whole blocks through the engine's own
//! `rt::fs::File` (io_uring, one write in flight), into a preallocated file, with no framing.
//! `durable` fdatasyncs after every write: the apples-to-apples baseline for durable appends of
//! the same block size. `nosync` writes everything and fdatasyncs once at the end, for context
//! (what the device streams). `durable_overwrite` rewrites blocks already written, which shows
//! what the filesystem's unwritten-extent conversion adds to each fdatasync.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use ringlog_engine::rt::fs::{File, OpenMode, Storage};
use ringlog_engine::rt::run_shards;
use serde::Serialize;

use super::{fill_incompressible, runtime_config, Limits};
use crate::measure::{
    cpu_percent, mb_per_s, new_histogram, per_second, record, thread_cpu, LatencySummary,
};
use crate::watchdog;

/// How a raw pass writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RawMode {
    /// fdatasync after every write, into freshly preallocated (unwritten) space.
    Durable,
    /// fdatasync after every write, over blocks the durable pass already wrote.
    DurableOverwrite,
    /// No fdatasync until one at the end (included in the time).
    NoSync,
}

impl RawMode {
    pub fn label(self) -> &'static str {
        match self {
            RawMode::Durable => "durable (write+fdatasync)",
            RawMode::DurableOverwrite => "durable, overwrite",
            RawMode::NoSync => "no fdatasync",
        }
    }
}

/// One raw pass.
#[derive(Clone, Debug, Serialize)]
pub struct RawResult {
    /// Which round of the run this is (set by the caller).
    pub round: usize,
    /// The watchdog had to wake a stalled shard during this case (set by the caller): the
    /// numbers include the stall and are left out of the summary.
    pub stalled: bool,
    pub block_bytes: usize,
    pub mode: RawMode,
    pub writes: u64,
    pub bytes: u64,
    pub secs: f64,
    pub mb_per_s: f64,
    pub writes_per_s: f64,
    pub write_mean_us: f64,
    pub fdatasync_mean_us: f64,
    /// Each write plus its fdatasync (write alone for `no_sync`).
    pub op_latency: LatencySummary,
    /// CPU of the shard thread, percent of a core.
    pub shard_cpu_percent: f64,
}

/// Runs the three raw passes with `block_bytes` blocks on one pinned shard, in `dir`.
pub fn run(dir: &Path, block_bytes: usize, limits: Limits) -> anyhow::Result<Vec<RawResult>> {
    let dir = dir.to_path_buf();
    let outputs = run_shards(&runtime_config(1), move |_shard| {
        let dir = dir.clone();
        async move { run_on_shard(&dir, block_bytes, limits).await }
    })?;
    let mut results = Vec::new();
    for output in outputs {
        results.extend(output?);
    }
    Ok(results)
}

async fn run_on_shard(
    dir: &Path,
    block_bytes: usize,
    limits: Limits,
) -> anyhow::Result<Vec<RawResult>> {
    let storage = Storage::Real;
    storage.prime_data_dir(dir).await?;
    let mut block = vec![0_u8; block_bytes];
    fill_incompressible(&mut block, block_bytes as u64);
    let blocks = limits.blocks(block_bytes);

    let path = dir.join("raw-durable.data");
    let file = preallocated(&storage, dir, &path, blocks * block_bytes as u64).await?;
    let durable = write_pass(&file, &block, blocks, limits.duration, RawMode::Durable).await?;
    // Over the same blocks: the extents are now written, so fdatasync has only data to flush.
    let overwrite = write_pass(
        &file,
        &block,
        durable.writes,
        limits.duration,
        RawMode::DurableOverwrite,
    )
    .await?;
    file.close().await?;
    storage.remove_file(&path).await?;

    let path = dir.join("raw-nosync.data");
    let file = preallocated(&storage, dir, &path, blocks * block_bytes as u64).await?;
    let nosync = write_pass(&file, &block, blocks, limits.duration, RawMode::NoSync).await?;
    file.close().await?;
    storage.remove_file(&path).await?;
    Ok(vec![durable, overwrite, nosync])
}

/// A new file with `bytes` reserved, its size and directory entry durable before any timing
/// starts, like a segment the engine has just created.
async fn preallocated(
    storage: &Storage,
    dir: &Path,
    path: &Path,
    bytes: u64,
) -> anyhow::Result<File> {
    let file = storage.open(path, OpenMode::Create).await?;
    file.truncate(0).await?;
    file.pre_allocate(bytes).await?;
    file.fdatasync().await?;
    storage.sync_dir(dir).await?;
    Ok(file)
}

/// Writes up to `blocks` blocks sequentially from position 0, one in flight, for at most
/// `duration`.
async fn write_pass(
    file: &File,
    block: &[u8],
    blocks: u64,
    duration: Duration,
    mode: RawMode,
) -> anyhow::Result<RawResult> {
    let sync_each = mode != RawMode::NoSync;
    let mut histogram = new_histogram();
    let mut write_time = Duration::ZERO;
    let mut sync_time = Duration::ZERO;
    let mut writes = 0_u64;
    let cpu_start = thread_cpu();
    let started = Instant::now();
    let deadline = started + duration;
    while writes < blocks && Instant::now() < deadline {
        let position = writes * block.len() as u64;
        let op_started = Instant::now();
        file.write_at(block, position)
            .await
            .with_context(|| format!("raw write at {position}"))?;
        let written = Instant::now();
        write_time += written - op_started;
        if sync_each {
            file.fdatasync().await?;
            sync_time += written.elapsed();
        }
        record(&mut histogram, op_started.elapsed());
        writes += 1;
        watchdog::tick();
    }
    let mut syncs = writes;
    if !sync_each {
        let sync_started = Instant::now();
        file.fdatasync().await?;
        sync_time += sync_started.elapsed();
        syncs = 1;
    }
    let elapsed = started.elapsed();
    let cpu = thread_cpu() - cpu_start;
    let bytes = writes * block.len() as u64;
    Ok(RawResult {
        round: 0,
        stalled: false,
        block_bytes: block.len(),
        mode,
        writes,
        bytes,
        secs: elapsed.as_secs_f64(),
        mb_per_s: mb_per_s(bytes, elapsed),
        writes_per_s: per_second(writes as f64, elapsed),
        write_mean_us: write_time.as_secs_f64() * 1e6 / writes.max(1) as f64,
        fdatasync_mean_us: sync_time.as_secs_f64() * 1e6 / syncs.max(1) as f64,
        op_latency: LatencySummary::of(&histogram),
        shard_cpu_percent: cpu_percent(cpu, elapsed),
    })
}
