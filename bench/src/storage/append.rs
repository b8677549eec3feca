//! Durable append throughput: each shard opens its own partition log and runs a fixed number of
//! appenders that append the same prebuilt batch back to back, each append returning once it is
//! fdatasync'd. Concurrent appenders on a shard share fdatasyncs (group commit), which is what
//! lets appends keep up with a disk whose fdatasync is slow.
//!
//! The harness's own work per append is a counter check, two clock reads and one histogram
//! increment, so its CPU cost stays far below the engine's.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use ringlog_engine::cache::BatchCache;
use ringlog_engine::config::LogConfig;
use ringlog_engine::log::{LogOptions, PartitionLog};
use ringlog_engine::rt::fs::Storage;
use ringlog_engine::rt::{self, run_shards, ShardContext, TaskClass};
use ringlog_engine::TopicPartition;
use serde::Serialize;

use super::read::{self, ReadKind, ReadResult, ReadSettings};
use super::{runtime_config, Limits, LEADER_EPOCH};
use crate::measure::{
    cpu_percent, mb_per_s, new_histogram, per_second, process_cpu, record, thread_cpu,
    LatencySummary,
};
use crate::watchdog;

/// Topic name of the benchmark's logs; shard `i` appends to partition `i`.
pub const TOPIC: &str = "bench";

/// What one append case does.
#[derive(Clone, Debug)]
pub struct AppendSettings {
    pub block_bytes: usize,
    pub shard_count: usize,
    pub appenders: usize,
    pub limits: Limits,
    pub cache_bytes: usize,
    /// Read back what was written afterwards (cached, then cold).
    pub read: Option<ReadSettings>,
    /// The task queue the appenders run in.
    pub task_class: TaskClass,
}

/// One append case, all shards together.
#[derive(Clone, Debug, Serialize)]
pub struct AppendResult {
    /// Which round of the run this is (set by the caller).
    pub round: usize,
    /// The watchdog had to wake a stalled shard during this case (set by the caller): the
    /// numbers include the stall and are left out of the summary.
    pub stalled: bool,
    pub shards: usize,
    pub block_bytes: usize,
    pub appenders_per_shard: usize,
    pub batches: u64,
    pub bytes: u64,
    /// From the first shard's start to the last shard's end.
    pub secs: f64,
    pub mb_per_s: f64,
    pub batches_per_s: f64,
    /// fdatasyncs as seen by the appenders: the number of times the durable end advanced.
    pub group_commits: u64,
    pub batches_per_group_commit: f64,
    /// Closed-loop append-to-durable time under saturation (all shards).
    pub append_latency: LatencySummary,
    pub per_shard_mb_per_s: Vec<f64>,
    /// Mean CPU of the shard threads, percent of a core.
    pub shard_cpu_percent: f64,
    /// CPU of the whole process (shards, glommio helpers, io_uring workers), percent of a core.
    pub process_cpu_percent: f64,
}

/// What one shard measured.
struct ShardOutput {
    started: Instant,
    finished: Instant,
    process_cpu_started: Duration,
    process_cpu_finished: Duration,
    thread_cpu: Duration,
    batches: u64,
    group_commits: u64,
    latency: Histogram<u64>,
    reads: Vec<ReadResult>,
}

/// Runs one append case (and its reads, if asked) in `dir`, one log per shard.
pub fn run(
    dir: &Path,
    batch: &Bytes,
    settings: &AppendSettings,
) -> anyhow::Result<(AppendResult, Vec<ReadResult>)> {
    let dir = dir.to_path_buf();
    let barrier = Arc::new(Barrier::new(settings.shard_count));
    let shard_settings = settings.clone();
    let template = batch.clone();
    let outputs = run_shards(&runtime_config(settings.shard_count), move |shard| {
        let dir = dir.clone();
        let barrier = Arc::clone(&barrier);
        let settings = shard_settings.clone();
        // A copy per shard: shards sharing one `Bytes` would bounce its reference count's cache
        // line between cores on every append.
        let batch = Bytes::copy_from_slice(&template);
        async move { run_on_shard(shard, &dir, batch, &settings, &barrier).await }
    })?;
    let outputs: Vec<ShardOutput> = outputs.into_iter().collect::<anyhow::Result<_>>()?;
    Ok(summarize(settings, outputs))
}

fn summarize(
    settings: &AppendSettings,
    outputs: Vec<ShardOutput>,
) -> (AppendResult, Vec<ReadResult>) {
    let first = outputs.iter().min_by_key(|output| output.started);
    let last = outputs.iter().max_by_key(|output| output.finished);
    let (elapsed, process_cpu) = match (first, last) {
        (Some(first), Some(last)) => (
            last.finished.saturating_duration_since(first.started),
            last.process_cpu_finished
                .saturating_sub(first.process_cpu_started),
        ),
        _ => (Duration::ZERO, Duration::ZERO),
    };
    let mut latency = new_histogram();
    let mut reads = Vec::new();
    let mut batches = 0;
    let mut group_commits = 0;
    let mut thread_cpu = Duration::ZERO;
    let mut per_shard_mb_per_s = Vec::new();
    for output in outputs {
        batches += output.batches;
        group_commits += output.group_commits;
        thread_cpu += output.thread_cpu;
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = latency.add(&output.latency);
        per_shard_mb_per_s.push(mb_per_s(
            output.batches * settings.block_bytes as u64,
            output.finished - output.started,
        ));
        reads.extend(output.reads);
    }
    let bytes = batches * settings.block_bytes as u64;
    let result = AppendResult {
        round: 0,
        stalled: false,
        shards: settings.shard_count,
        block_bytes: settings.block_bytes,
        appenders_per_shard: settings.appenders,
        batches,
        bytes,
        secs: elapsed.as_secs_f64(),
        mb_per_s: mb_per_s(bytes, elapsed),
        batches_per_s: per_second(batches as f64, elapsed),
        group_commits,
        batches_per_group_commit: batches as f64 / group_commits.max(1) as f64,
        append_latency: LatencySummary::of(&latency),
        per_shard_mb_per_s,
        shard_cpu_percent: cpu_percent(thread_cpu, elapsed) / settings.shard_count as f64,
        process_cpu_percent: cpu_percent(process_cpu, elapsed),
    };
    (result, reads)
}

/// The options of shard `shard_index`'s log in `shard_dir`.
pub fn log_options(
    shard_dir: &Path,
    shard_index: u16,
    cache: Option<Rc<BatchCache>>,
) -> LogOptions {
    LogOptions {
        storage: Storage::Real,
        dir: shard_dir.join(format!("{TOPIC}-{shard_index}")),
        topic_partition: TopicPartition::new(TOPIC, i32::from(shard_index)),
        config: LogConfig::default(),
        cache,
        auto_high_watermark: true,
        metrics: None,
    }
}

/// The data directory of one shard in a case directory.
pub fn shard_dir(case_dir: &Path, shard_index: u16) -> PathBuf {
    case_dir.join(format!("shard-{shard_index}"))
}

async fn run_on_shard(
    shard: ShardContext,
    case_dir: &Path,
    batch: Bytes,
    settings: &AppendSettings,
    barrier: &Barrier,
) -> anyhow::Result<ShardOutput> {
    let shard_index = shard.shard_id.0;
    let dir = shard_dir(case_dir, shard_index);
    Storage::Real.prime_data_dir(&dir).await?;
    let cache = BatchCache::new(settings.cache_bytes);
    let (log, _) = PartitionLog::open(log_options(&dir, shard_index, Some(Rc::clone(&cache))))
        .await
        .with_context(|| format!("opening the log in {}", dir.display()))?;
    let log = Rc::new(log);
    // Start all shards' clocks together so the aggregate rate is over a shared window. Blocking
    // the executor thread here is fine: nothing runs on this shard yet.
    barrier.wait();

    let process_cpu_started = process_cpu();
    let thread_cpu_started = thread_cpu();
    let started = Instant::now();
    let plan = Rc::new(AppendPlan::new(
        settings.limits.blocks(settings.block_bytes),
        started + settings.limits.duration,
    ));
    let appenders: Vec<_> = (0..settings.appenders)
        .map(|_| {
            rt::spawn(
                settings.task_class,
                appender(Rc::clone(&log), batch.clone(), Rc::clone(&plan)),
            )
        })
        .collect();
    for appender in appenders {
        appender.await?;
    }
    let finished = Instant::now();
    let thread_cpu = thread_cpu() - thread_cpu_started;
    let process_cpu_finished = process_cpu();

    let mut reads = Vec::new();
    if let Some(read_settings) = &settings.read {
        let end = log.high_watermark();
        let from = read::first_cached_offset(end, settings.block_bytes, settings.cache_bytes);
        reads.push(
            read::read_back(
                &log,
                from,
                settings.block_bytes,
                read_settings,
                ReadKind::Cached,
                // As many bytes as the cold read will read: the whole case's volume.
                plan.completed.get() * settings.block_bytes as u64,
            )
            .await?,
        );
    }
    log.close().await?;
    drop(log);
    settle_closes().await;
    if let Some(read_settings) = &settings.read {
        // A new instance without a cache: every read goes to the disk (direct I/O, so no page
        // cache either), helped only by the log's own read-ahead.
        let (log, _) = PartitionLog::open(log_options(&dir, shard_index, None)).await?;
        reads.push(
            read::read_back(
                &log,
                0,
                settings.block_bytes,
                read_settings,
                ReadKind::Cold,
                0,
            )
            .await?,
        );
        log.close().await?;
        drop(log);
        settle_closes().await;
    }
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;

    let plan = Rc::try_unwrap(plan)
        .ok()
        .context("appenders still hold the plan")?;
    Ok(ShardOutput {
        started,
        finished,
        process_cpu_started,
        process_cpu_finished,
        thread_cpu,
        batches: plan.completed.get(),
        group_commits: plan.group_commits.get(),
        latency: plan.latency.into_inner(),
        reads,
    })
}

/// glommio closes a dropped file's descriptor at the executor's next I/O cycle; a shard that
/// ends right after dropping a log would leak the descriptors (and the disk space of deleted
/// segments) until the process exits. A short sleep runs that cycle.
const CLOSE_SETTLE: Duration = Duration::from_millis(5);

/// Lets glommio close the descriptors of files dropped on this shard.
pub async fn settle_closes() {
    rt::sleep(CLOSE_SETTLE).await;
}

/// The shared state of one shard's appenders: how much is left to do, and what was measured.
/// Owned by the shard.
struct AppendPlan {
    batches_max: u64,
    deadline: Instant,
    claimed: Cell<u64>,
    completed: Cell<u64>,
    durable_end_seen: Cell<i64>,
    group_commits: Cell<u64>,
    latency: RefCell<Histogram<u64>>,
}

impl AppendPlan {
    fn new(batches_max: u64, deadline: Instant) -> Self {
        AppendPlan {
            batches_max,
            deadline,
            claimed: Cell::new(0),
            completed: Cell::new(0),
            durable_end_seen: Cell::new(0),
            group_commits: Cell::new(0),
            latency: RefCell::new(new_histogram()),
        }
    }

    /// Takes one batch to append, if the case's volume and time allow.
    fn claim(&self) -> bool {
        if self.claimed.get() >= self.batches_max || Instant::now() >= self.deadline {
            return false;
        }
        self.claimed.set(self.claimed.get() + 1);
        true
    }

    fn complete(&self, elapsed: Duration, durable_end: i64) {
        self.completed.set(self.completed.get() + 1);
        record(&mut self.latency.borrow_mut(), elapsed);
        // Every waiter of one group commit sees the same new durable end (the next one cannot
        // finish without more I/O), so each advance is one fdatasync.
        if durable_end > self.durable_end_seen.get() {
            self.durable_end_seen.set(durable_end);
            self.group_commits.set(self.group_commits.get() + 1);
        }
    }
}

async fn appender(log: Rc<PartitionLog>, batch: Bytes, plan: Rc<AppendPlan>) -> anyhow::Result<()> {
    while plan.claim() {
        let sent = Instant::now();
        log.append(&batch, LEADER_EPOCH).await?;
        plan.complete(sent.elapsed(), log.durable_end_offset());
        watchdog::tick();
    }
    Ok(())
}
