//! Append-to-durable latency at a fixed rate below the maximum: an open-loop pacer schedules
//! one append every `1 / rate` seconds and never waits for earlier appends to finish, so a slow
//! fdatasync delays later appends instead of silently lowering the offered load. Latency is
//! measured from each append's *scheduled* time (free of coordinated omission: it includes any
//! time the pacer itself ran late) and, for comparison, from when it was actually issued.

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use ringlog_engine::cache::BatchCache;
use ringlog_engine::log::PartitionLog;
use ringlog_engine::rt::fs::Storage;
use ringlog_engine::rt::{self, run_shards, TaskClass};
use serde::Serialize;

use super::append::{log_options, settle_closes, shard_dir};
use super::{runtime_config, Limits, LEADER_EPOCH};
use crate::measure::{
    cpu_percent, mb_per_s, new_histogram, per_second, record, thread_cpu, LatencySummary,
};
use crate::watchdog;

/// Appends in flight beyond which the case is abandoned as overloaded: at half of the measured
/// maximum there are a handful in flight, so thousands mean the log stopped keeping up, and
/// going on would only measure the queue.
const IN_FLIGHT_MAX: usize = 4096;

/// Appends slower than this (the p99 target) are kept individually, so the report can
/// say when the slow ones happened and where the log was at the time.
const SLOW_APPEND_US: u64 = super::TARGET_P99_US;

/// At most this many slow appends are kept (16 bytes each); beyond it only the histograms count.
const SLOW_APPENDS_KEPT_MAX: usize = 100_000;

/// Slow appends closer together than this (by scheduled time) belong to one episode: one stall
/// delays every append scheduled during it.
const EPISODE_GAP: Duration = Duration::from_millis(10);

/// Episodes listed in the report; the rest are only counted.
const EPISODES_LISTED_MAX: usize = 40;

/// How often the pacer checks whether the last appends have finished once all are issued.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(1);

/// What one latency case does.
#[derive(Clone, Debug)]
pub struct LatencySettings {
    pub block_bytes: usize,
    pub rate_batches_per_s: f64,
    /// The fraction of the measured maximum that `rate_batches_per_s` is (NaN if given).
    pub load_fraction: f64,
    pub limits: Limits,
    pub cache_bytes: usize,
    /// The task queue the appends run in.
    pub task_class: TaskClass,
}

/// One latency case.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyResult {
    /// The watchdog had to wake a stalled shard during this case (set by the caller).
    pub stalled: bool,
    pub block_bytes: usize,
    pub load_fraction: f64,
    pub target_batches_per_s: f64,
    pub achieved_batches_per_s: f64,
    pub achieved_mb_per_s: f64,
    pub appends: u64,
    pub secs: f64,
    /// From scheduled send time to the append returning (durable).
    pub from_schedule: LatencySummary,
    /// From the actual send to the append returning.
    pub from_send: LatencySummary,
    /// How late the pacer issued appends relative to their schedule (the harness's own delay).
    pub pacer_lag: LatencySummary,
    pub in_flight_max: usize,
    pub overloaded: bool,
    pub group_commits: u64,
    pub shard_cpu_percent: f64,
    /// Appends slower than the p99 target, grouped into episodes (stalls), oldest first.
    pub slow_episode_count: usize,
    pub slow_episodes: Vec<SlowEpisode>,
}

/// A run of appends slower than the target, scheduled close together: one stall.
#[derive(Clone, Debug, Serialize)]
pub struct SlowEpisode {
    /// Scheduled time of the first slow append, from the case's start.
    pub start_ms: f64,
    /// Scheduled time of the last slow append of the episode.
    pub end_ms: f64,
    pub appends: u64,
    pub max_us: u64,
    /// Log bytes before the episode's first append (offset x batch size): shows whether stalls
    /// line up with the segment's preallocation steps.
    pub log_bytes_at_start: u64,
}

/// One append slower than [`SLOW_APPEND_US`].
#[derive(Clone, Copy, Debug)]
struct SlowAppend {
    scheduled_us: u64,
    latency_us: u64,
    base_offset: i64,
}

/// Groups slow appends (in any order) into episodes.
fn episodes(mut slow: Vec<SlowAppend>, block_bytes: usize) -> Vec<SlowEpisode> {
    slow.sort_by_key(|append| append.scheduled_us);
    let gap_us = EPISODE_GAP.as_micros() as u64;
    let mut episodes: Vec<SlowEpisode> = Vec::new();
    let mut last_scheduled_us = 0;
    for append in slow {
        let ms = append.scheduled_us as f64 / 1000.0;
        match episodes.last_mut() {
            Some(episode) if append.scheduled_us - last_scheduled_us <= gap_us => {
                episode.end_ms = ms;
                episode.appends += 1;
                episode.max_us = episode.max_us.max(append.latency_us);
            }
            _ => episodes.push(SlowEpisode {
                start_ms: ms,
                end_ms: ms,
                appends: 1,
                max_us: append.latency_us,
                log_bytes_at_start: append.base_offset.max(0) as u64 * block_bytes as u64,
            }),
        }
        last_scheduled_us = append.scheduled_us;
    }
    episodes
}

/// Runs one latency case on one pinned shard, with a fresh log in `case_dir`.
pub fn run(
    case_dir: &Path,
    batch: &Bytes,
    settings: &LatencySettings,
) -> anyhow::Result<LatencyResult> {
    let case_dir = case_dir.to_path_buf();
    let shard_settings = settings.clone();
    let template = batch.clone();
    let mut outputs = run_shards(&runtime_config(1), move |_shard| {
        let case_dir = case_dir.clone();
        let settings = shard_settings.clone();
        let batch = Bytes::copy_from_slice(&template);
        async move { run_on_shard(&case_dir, batch, &settings).await }
    })?;
    outputs.pop().context("the shard returned nothing")?
}

async fn run_on_shard(
    case_dir: &Path,
    batch: Bytes,
    settings: &LatencySettings,
) -> anyhow::Result<LatencyResult> {
    let dir = shard_dir(case_dir, 0);
    Storage::Real.prime_data_dir(&dir).await?;
    let cache = BatchCache::new(settings.cache_bytes);
    let (log, _) = PartitionLog::open(log_options(&dir, 0, Some(cache))).await?;
    let log = Rc::new(log);
    let appends_max = settings
        .limits
        .blocks(settings.block_bytes)
        .min((settings.limits.duration.as_secs_f64() * settings.rate_batches_per_s).ceil() as u64)
        .max(1);
    let cpu_started = thread_cpu();
    let started = Instant::now();
    let state = Rc::new(PacerState::new(started));
    let pacer = rt::spawn(
        settings.task_class,
        pace(
            settings.task_class,
            Rc::clone(&log),
            batch,
            Rc::clone(&state),
            settings.rate_batches_per_s,
            appends_max,
            started,
        ),
    );
    let overloaded = pacer.await;
    while state.in_flight.get() > 0 {
        rt::sleep(DRAIN_POLL_INTERVAL).await;
    }
    let elapsed = state
        .last_done
        .get()
        .unwrap_or(started)
        .saturating_duration_since(started);
    let cpu = thread_cpu() - cpu_started;
    if let Some(error) = state.error.borrow_mut().take() {
        return Err(error);
    }
    log.close().await?;
    drop(log);
    settle_closes().await;
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    let appends = state.from_schedule.borrow().len();
    let from_schedule = LatencySummary::of(&state.from_schedule.borrow());
    let from_send = LatencySummary::of(&state.from_send.borrow());
    let pacer_lag = LatencySummary::of(&state.pacer_lag.borrow());
    let mut slow_episodes = episodes(state.slow.take(), settings.block_bytes);
    let slow_episode_count = slow_episodes.len();
    slow_episodes.truncate(EPISODES_LISTED_MAX);
    Ok(LatencyResult {
        stalled: false,
        block_bytes: settings.block_bytes,
        load_fraction: settings.load_fraction,
        target_batches_per_s: settings.rate_batches_per_s,
        achieved_batches_per_s: per_second(appends as f64, elapsed),
        achieved_mb_per_s: mb_per_s(appends * settings.block_bytes as u64, elapsed),
        appends,
        secs: elapsed.as_secs_f64(),
        from_schedule,
        from_send,
        pacer_lag,
        in_flight_max: state.in_flight_max.get(),
        overloaded,
        group_commits: state.group_commits.get(),
        shard_cpu_percent: cpu_percent(cpu, elapsed),
        slow_episode_count,
        slow_episodes,
    })
}

/// Shared by the pacer and the appends it issues. Owned by the shard.
struct PacerState {
    from_schedule: RefCell<Histogram<u64>>,
    from_send: RefCell<Histogram<u64>>,
    pacer_lag: RefCell<Histogram<u64>>,
    in_flight: Cell<usize>,
    in_flight_max: Cell<usize>,
    last_done: Cell<Option<Instant>>,
    durable_end_seen: Cell<i64>,
    group_commits: Cell<u64>,
    error: RefCell<Option<anyhow::Error>>,
    started: Instant,
    slow: RefCell<Vec<SlowAppend>>,
}

impl PacerState {
    fn new(started: Instant) -> Self {
        PacerState {
            from_schedule: RefCell::new(new_histogram()),
            from_send: RefCell::new(new_histogram()),
            pacer_lag: RefCell::new(new_histogram()),
            in_flight: Cell::new(0),
            in_flight_max: Cell::new(0),
            last_done: Cell::new(None),
            durable_end_seen: Cell::new(0),
            group_commits: Cell::new(0),
            error: RefCell::new(None),
            started,
            slow: RefCell::new(Vec::new()),
        }
    }
}

/// Issues `appends_max` appends on a fixed schedule from `started`; returns true if it gave up
/// because too many were in flight. When it falls behind (a late timer, a busy shard), it
/// issues the overdue appends at once rather than shifting the schedule.
async fn pace(
    task_class: TaskClass,
    log: Rc<PartitionLog>,
    batch: Bytes,
    state: Rc<PacerState>,
    rate_batches_per_s: f64,
    appends_max: u64,
    started: Instant,
) -> bool {
    for index in 0..appends_max {
        let scheduled = started + Duration::from_secs_f64(index as f64 / rate_batches_per_s);
        let now = Instant::now();
        if scheduled > now {
            rt::sleep(scheduled - now).await;
        }
        if state.in_flight.get() >= IN_FLIGHT_MAX || state.error.borrow().is_some() {
            return true;
        }
        state.in_flight.set(state.in_flight.get() + 1);
        state
            .in_flight_max
            .set(state.in_flight_max.get().max(state.in_flight.get()));
        rt::spawn_detached(
            task_class,
            append_one(Rc::clone(&log), batch.clone(), Rc::clone(&state), scheduled),
        );
    }
    false
}

async fn append_one(
    log: Rc<PartitionLog>,
    batch: Bytes,
    state: Rc<PacerState>,
    scheduled: Instant,
) {
    let sent = Instant::now();
    let outcome = log.append(&batch, LEADER_EPOCH).await;
    let done = Instant::now();
    match outcome {
        Ok(appended) => {
            watchdog::tick();
            let latency = done - scheduled;
            record(&mut state.from_schedule.borrow_mut(), latency);
            let latency_us = latency.as_micros() as u64;
            let mut slow = state.slow.borrow_mut();
            if latency_us > SLOW_APPEND_US && slow.len() < SLOW_APPENDS_KEPT_MAX {
                slow.push(SlowAppend {
                    scheduled_us: scheduled
                        .saturating_duration_since(state.started)
                        .as_micros() as u64,
                    latency_us,
                    base_offset: appended.base_offset,
                });
            }
            drop(slow);
            record(&mut state.from_send.borrow_mut(), done - sent);
            record(
                &mut state.pacer_lag.borrow_mut(),
                sent.saturating_duration_since(scheduled),
            );
            let durable_end = log.durable_end_offset();
            if durable_end > state.durable_end_seen.get() {
                state.durable_end_seen.set(durable_end);
                state.group_commits.set(state.group_commits.get() + 1);
            }
        }
        Err(error) => {
            state.error.borrow_mut().get_or_insert(error.into());
        }
    }
    state.in_flight.set(state.in_flight.get() - 1);
    state.last_done.set(Some(done));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_appends_group_into_episodes() {
        let slow = |scheduled_us, latency_us, base_offset| SlowAppend {
            scheduled_us,
            latency_us,
            base_offset,
        };
        let found = episodes(
            vec![
                slow(20_000, 3_000, 10),
                slow(1_000, 5_000, 1),
                slow(4_000, 2_500, 2),
                slow(40_000, 9_000, 30),
            ],
            4096,
        );
        assert_eq!(found.len(), 3);
        assert_eq!(
            (
                found[0].appends,
                found[0].max_us,
                found[0].log_bytes_at_start
            ),
            (2, 5_000, 4096)
        );
        assert_eq!(found[0].end_ms, 4.0);
        assert_eq!((found[1].appends, found[2].max_us), (1, 9_000));
    }
}
