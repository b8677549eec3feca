//! A partition's log: an ordered list of segments with offsets assigned on append (or kept as
//! the leader assigned them, on a follower), group-commit durability, reads by offset and by
//! timestamp, retention, DeleteRecords, truncation and the leader epoch cache (for
//! replication), clean shutdown and crash recovery.
//!
//! Concurrency: a log is owned by one shard and used by many tasks on it. State lives in a
//! `RefCell` that is never borrowed across an await. Appends do their bookkeeping synchronously
//! (validate, assign offsets, copy into the active segment's tail buffer) and then wait for
//! durability. The first waiter to find its data unwritten and no write in progress becomes the
//! flush leader: it writes everything buffered and runs one fdatasync for all waiters (group
//! commit), letting the next leader write while that fdatasync runs. Operations that
//! reshape the segment list (roll, truncate, retention, close) take the log exclusively; appends
//! wait for them to finish.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use event_listener::Event;

use crate::cache::{BatchCache, LogKey};
use crate::config::{FlushPolicy, LogConfig};
use crate::epochs::{
    read_epoch_file, scan_segment_epochs, write_epoch_file, EpochFile, LeaderEpochs,
};
use crate::error::{Error, Result};
use crate::format::{
    attributes, patch_batch, read_varint, set_log_append_time, split_batches, split_whole_batches,
    BatchInfo, FrameHeader, BATCH_HEADER_BYTES, FRAME_HEADER_BYTES, FRAME_MAGIC, FRAME_VERSION,
};
use crate::metrics::StorageMetrics;
use crate::rt::fs::Storage;
use crate::segment::{
    index_file_name, parse_log_file_name, ChunkReader, OpenKind, RecoveryReport, Segment,
};
use crate::types::TopicPartition;

/// Name of the clean-shutdown marker in a partition directory.
pub const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";
/// Name of the log-start-offset checkpoint (advanced by retention and DeleteRecords).
pub const LOG_START_OFFSET_FILE: &str = "log-start-offset";
/// Magic of the clean-shutdown marker: "RLC1".
const CLEAN_MAGIC: u32 = u32::from_le_bytes(*b"RLC1");
/// Magic of the log-start-offset checkpoint: "RLS1".
const START_MAGIC: u32 = u32::from_le_bytes(*b"RLS1");

/// A cold read fetches at least this much so a sequential consumer's next reads are served
/// from memory (direct I/O has no kernel read-ahead). 1 MiB is a typical fetch size and large
/// enough to run at sequential disk speed.
pub const READ_AHEAD_BYTES: usize = 1 << 20;

/// Under a relaxed flush policy, buffered appends are written (and synced) once the unwritten
/// tail reaches this size, bounding the memory a log holds outside the batch cache.
pub const TAIL_BUFFER_BYTES_MAX: u64 = 8 << 20;

/// How far a read may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadLimit {
    /// Consumers: up to the high watermark.
    HighWatermark,
    /// Followers and tools: up to the log end offset.
    LogEnd,
}

/// `message.timestamp.type` value under which the broker stamps batches with its own clock.
const LOG_APPEND_TIME: &str = "LogAppendTime";

/// What an append gate ([`PartitionLog::append_gated`]) decides.
#[derive(Debug)]
pub enum AppendGate<T> {
    /// Assign offsets and append.
    Append,
    /// Append nothing; the append returns `Ok(Err(value))`.
    Skip(T),
}

/// Result of an append: the offsets assigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendResult {
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_start_offset: i64,
    pub record_count: i64,
    /// The broker time stamped on the batches under `message.timestamp.type=LogAppendTime`;
    /// -1 under CreateTime.
    pub log_append_time_ms: i64,
}

/// Result of a read: whole batches, as stored (the bytes clients and followers receive).
#[derive(Clone, Debug, Default)]
pub struct ReadResult {
    pub batches: Vec<Bytes>,
    /// Offset after the last batch returned (the read's offset if none).
    pub next_offset: i64,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub from_cache: bool,
}

impl ReadResult {
    pub fn total_bytes(&self) -> usize {
        self.batches.iter().map(Bytes::len).sum()
    }
}

/// What opening a log found, for logs and tests.
#[derive(Clone, Debug, Default)]
pub struct LogRecovery {
    pub clean_shutdown: bool,
    pub segments: usize,
    pub segment_reports: Vec<(i64, RecoveryReport)>,
    /// The leader epoch checkpoint was missing or damaged and was rebuilt from the frames.
    pub leader_epochs_rebuilt: bool,
}

/// What a retention pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    pub rolled: bool,
}

/// Everything needed to open a log.
pub struct LogOptions {
    pub storage: Storage,
    pub dir: PathBuf,
    pub topic_partition: TopicPartition,
    pub config: LogConfig,
    pub cache: Option<Rc<BatchCache>>,
    /// Single-node (RF=1) logs move the high watermark to the durable end themselves; a
    /// replicated log leaves it to replication via [`PartitionLog::set_high_watermark`].
    pub auto_high_watermark: bool,
    /// The shard's storage measurements (fdatasync latency); `None` measures nothing.
    pub metrics: Option<Rc<StorageMetrics>>,
}

/// A partition log. Owned by the partition's shard.
pub struct PartitionLog {
    topic_partition: TopicPartition,
    dir: PathBuf,
    storage: Storage,
    cache: Option<Rc<BatchCache>>,
    cache_key: LogKey,
    auto_high_watermark: bool,
    metrics: Option<Rc<StorageMetrics>>,
    config: RefCell<LogConfig>,
    state: RefCell<State>,
    /// Notified when a flush ends (successfully or not).
    flushed: Event,
    /// Notified when an exclusive operation ends.
    released: Event,
    /// Orders appends by arrival (see [`PartitionLog::append_gated`]).
    append_line: AppendLine,
    /// Notified when the high watermark may have moved, the log was truncated or closed:
    /// long-polling fetches wait on it.
    data_changed: Event,
    /// Notified when the durable end offset moved, the log was truncated, closed or poisoned:
    /// a leader under a relaxed flush policy waits on it to learn its own durable end.
    durable_changed: Event,
}

/// Whose batches an append carries, which decides their offsets and leader epochs.
#[derive(Clone, Copy, Debug)]
enum AppendSource {
    /// A client's produce on the leader: offsets are assigned here and `leader_epoch` is
    /// patched into every batch.
    Leader { leader_epoch: i32 },
    /// A follower copying its leader's batches: offsets and epochs stay as the leader wrote
    /// them, and the bytes are stored verbatim.
    Replicated,
}

struct State {
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    log_end_offset: i64,
    /// Offsets below this are durable.
    durable_end_offset: i64,
    /// Offsets below this are written (their fdatasync may still be running).
    written_end_offset: i64,
    high_watermark: i64,
    /// A flush is writing the buffered tail. One write at a time; the next may start while
    /// the previous write's fdatasync runs.
    writing: bool,
    /// fdatasyncs running.
    syncs_in_flight: usize,
    exclusive: bool,
    closed: bool,
    poisoned: Option<String>,
    unflushed_messages: u64,
    last_flush_ms: i64,
    /// The last cold read: (segment base offset, position, bytes), for read-ahead.
    read_ahead: Option<(i64, u64, Bytes)>,
    /// The leader epoch cache, as checkpointed in [`crate::epochs::LEADER_EPOCH_FILE`].
    leader_epochs: LeaderEpochs,
    /// End of the last append made as leader. With `auto_high_watermark` the high watermark
    /// follows the durable end only up to here, so replicated appends never move it.
    leader_appended_end: i64,
    /// Truncations so far, so a waiter can tell that the log was cut under it.
    truncations: u64,
}

impl State {
    fn active(&self) -> &Segment {
        // A log always has an active segment until `close`, after which nothing calls this:
        // every entry point checks `closed` first.
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }
}

/// Releases a log's exclusive hold when dropped, whatever path the operation took.
struct ExclusiveGuard<'a> {
    log: &'a PartitionLog,
}

impl Drop for ExclusiveGuard<'_> {
    fn drop(&mut self) {
        self.log.state.borrow_mut().exclusive = false;
        self.log.released.notify(usize::MAX);
    }
}

/// A ticket line: appends take a ticket when called and assign offsets in ticket order.
#[derive(Default)]
struct AppendLine {
    next_ticket: Cell<u64>,
    shared: Rc<LineShared>,
}

#[derive(Default)]
struct LineShared {
    /// The ticket whose turn it is.
    serving: Cell<u64>,
    /// Tickets dropped before their turn came (their appends failed early or were cancelled);
    /// skipped when the line reaches them.
    abandoned: RefCell<Vec<u64>>,
    turn_passed: Event,
}

/// An append's place in the [`AppendLine`]; dropping it (done, failed or cancelled) passes the
/// turn on.
struct AppendTurn {
    ticket: u64,
    shared: Rc<LineShared>,
}

impl AppendLine {
    fn take_ticket(&self) -> AppendTurn {
        let ticket = self.next_ticket.get();
        self.next_ticket.set(ticket + 1);
        AppendTurn {
            ticket,
            shared: Rc::clone(&self.shared),
        }
    }

    fn is_turn(&self, turn: &AppendTurn) -> bool {
        self.shared.serving.get() == turn.ticket
    }

    async fn wait_for_turn(&self, turn: &AppendTurn) {
        loop {
            let listener = self.shared.turn_passed.listen();
            if self.is_turn(turn) {
                return;
            }
            listener.await;
        }
    }
}

impl Drop for AppendTurn {
    fn drop(&mut self) {
        let shared = &self.shared;
        if shared.serving.get() == self.ticket {
            shared.serving.set(self.ticket + 1);
        } else {
            shared.abandoned.borrow_mut().push(self.ticket);
        }
        let mut abandoned = shared.abandoned.borrow_mut();
        while let Some(index) = abandoned
            .iter()
            .position(|&ticket| ticket == shared.serving.get())
        {
            abandoned.swap_remove(index);
            shared.serving.set(shared.serving.get() + 1);
        }
        drop(abandoned);
        shared.turn_passed.notify(usize::MAX);
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

impl PartitionLog {
    /// Opens (recovering if needed) or creates the log in `options.dir`.
    pub async fn open(options: LogOptions) -> Result<(PartitionLog, LogRecovery)> {
        let LogOptions {
            storage,
            dir,
            topic_partition,
            config,
            cache,
            auto_high_watermark,
            metrics,
        } = options;
        if !storage.is_dir(&dir).await {
            storage.create_dir_all(&dir).await?;
            if let Some(parent) = dir.parent() {
                storage.sync_dir(parent).await?;
            }
        }
        let names = storage.list_dir(&dir).await?;
        let mut bases: Vec<i64> = names
            .iter()
            .filter_map(|name| parse_log_file_name(name))
            .collect();
        bases.sort_unstable();
        for name in &names {
            // Leftovers of interrupted atomic writes, and indexes whose segment is gone.
            let orphan_index = name.strip_suffix(".index").is_some_and(|stem| {
                !bases.iter().any(|base| index_file_name(*base) == *name) && stem.len() == 20
            });
            if name.ends_with(".tmp") || orphan_index {
                storage.remove_file(&dir.join(name)).await?;
            }
        }
        let mut recovery = LogRecovery::default();
        let clean = read_clean_marker(&storage, &dir).await;
        if clean.is_some() {
            // Remove the marker durably before anything is written, so a crash from here on is
            // seen as unclean.
            storage.remove_file(&dir.join(CLEAN_SHUTDOWN_FILE)).await?;
            storage.sync_dir(&dir).await?;
        }
        let mut log_start_offset = read_log_start(&storage, &dir).await.unwrap_or(0);
        let mut segments = BTreeMap::new();
        for (index, &base) in bases.iter().enumerate() {
            let last = index + 1 == bases.len();
            let kind = match clean {
                _ if !last => OpenKind::Sealed,
                Some(marker) if marker.active_base_offset == base => {
                    recovery.clean_shutdown = true;
                    OpenKind::ActiveClean {
                        end_position: marker.end_position,
                    }
                }
                _ => OpenKind::ActiveUnclean,
            };
            let (segment, report) = Segment::open(
                &storage,
                &dir,
                base,
                config.index_interval_bytes,
                config.segment_bytes,
                kind,
            )
            .await?;
            if kind == OpenKind::Sealed && report.rebuilt_index {
                // Write the rebuilt index back so the next open does not scan again.
                if let Some((bytes, _)) = segment.checkpoint() {
                    storage
                        .write_file_atomic(segment.index_path(), &bytes)
                        .await?;
                }
            }
            if let Some(previous) = segments.values().next_back().map(Segment::next_offset) {
                if previous != base {
                    return Err(Error::Corrupt {
                        path: segment.log_path().to_path_buf(),
                        position: 0,
                        reason: format!(
                            "segment starts at offset {base} but the previous one ends at {previous}"
                        ),
                    });
                }
            }
            recovery.segment_reports.push((base, report));
            segments.insert(base, segment);
        }
        if segments.is_empty() {
            let segment = Segment::create(
                &storage,
                &dir,
                log_start_offset,
                config.index_interval_bytes,
                config.segment_bytes,
            )
            .await?;
            segments.insert(log_start_offset, segment);
        }
        recovery.segments = segments.len();
        let first_base = segments.keys().next().copied().unwrap_or(0);
        let log_end_offset = segments
            .values()
            .next_back()
            .map_or(0, Segment::next_offset);
        log_start_offset = log_start_offset.max(first_base).min(log_end_offset);
        let (leader_epochs, leader_epochs_rebuilt) =
            open_leader_epochs(&storage, &dir, &segments, log_start_offset, log_end_offset).await?;
        recovery.leader_epochs_rebuilt = leader_epochs_rebuilt;
        let cache_key = cache.as_ref().map_or(0, |cache| cache.register_log());
        let log = PartitionLog {
            topic_partition,
            dir,
            storage,
            cache,
            cache_key,
            auto_high_watermark,
            metrics,
            config: RefCell::new(config),
            state: RefCell::new(State {
                segments,
                log_start_offset,
                log_end_offset,
                durable_end_offset: log_end_offset,
                written_end_offset: log_end_offset,
                high_watermark: if auto_high_watermark {
                    log_end_offset
                } else {
                    log_start_offset
                },
                writing: false,
                syncs_in_flight: 0,
                exclusive: false,
                closed: false,
                poisoned: None,
                unflushed_messages: 0,
                last_flush_ms: now_ms(),
                read_ahead: None,
                leader_epochs,
                leader_appended_end: log_end_offset,
                truncations: 0,
            }),
            flushed: Event::new(),
            released: Event::new(),
            data_changed: Event::new(),
            durable_changed: Event::new(),
            append_line: AppendLine::default(),
        };
        Ok((log, recovery))
    }

    pub fn topic_partition(&self) -> &TopicPartition {
        &self.topic_partition
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> LogConfig {
        self.config.borrow().clone()
    }

    pub fn set_config(&self, config: LogConfig) {
        *self.config.borrow_mut() = config;
    }

    pub fn log_start_offset(&self) -> i64 {
        self.state.borrow().log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.state.borrow().log_end_offset
    }

    pub fn durable_end_offset(&self) -> i64 {
        self.state.borrow().durable_end_offset
    }

    pub fn high_watermark(&self) -> i64 {
        self.state.borrow().high_watermark
    }

    /// How far past its written data the active segment's zeroed runway reaches (see
    /// [`crate::segment::Runway`]); 0 for a closed log.
    pub fn zeroed_ahead_bytes(&self) -> u64 {
        let state = self.state.borrow();
        state
            .segments
            .values()
            .next_back()
            .map_or(0, Segment::zeroed_ahead_bytes)
    }

    /// Sets the high watermark (replication); clamped to the log's durable end.
    pub fn set_high_watermark(&self, offset: i64) {
        let mut state = self.state.borrow_mut();
        state.high_watermark = offset.clamp(state.log_start_offset, state.durable_end_offset);
        drop(state);
        self.data_changed.notify(usize::MAX);
    }

    /// Returns once a consumer reading at `offset` has something new to see: the high
    /// watermark moved past `offset`, or the log was truncated, closed or poisoned. Callers bound
    /// the wait with a timeout (a fetch's `max_wait_ms`).
    pub async fn wait_for_data(&self, offset: i64) {
        loop {
            let listener = self.data_changed.listen();
            {
                let state = self.state.borrow();
                if state.high_watermark > offset
                    || state.closed
                    || state.poisoned.is_some()
                    || offset > state.log_end_offset
                {
                    return;
                }
            }
            listener.await;
        }
    }

    /// [`PartitionLog::wait_for_data`] for a follower's fetch, which reads up to the log end:
    /// returns once the log ends past `offset` (or was truncated below it, closed or
    /// poisoned). Callers bound the wait.
    pub async fn wait_for_log_end_past(&self, offset: i64) {
        loop {
            let listener = self.data_changed.listen();
            {
                let state = self.state.borrow();
                if state.log_end_offset != offset || state.closed || state.poisoned.is_some() {
                    return;
                }
            }
            listener.await;
        }
    }

    /// Returns once the durable end offset is past `offset`, or the log was closed, poisoned,
    /// or truncated so that it no longer reaches past `offset` (also if it does not already:
    /// `offset` beyond the log end). A leader under a relaxed flush policy (`flush.messages` >
    /// 1, `flush.ms`) waits here to learn that its own data became durable. Callers re-read
    /// the state they care about and bound the wait themselves.
    pub async fn wait_for_durable_end_past(&self, offset: i64) {
        let truncations = self.state.borrow().truncations;
        loop {
            let listener = self.durable_changed.listen();
            {
                let state = self.state.borrow();
                let cut_under = offset > state.log_end_offset
                    || (state.truncations != truncations && offset >= state.log_end_offset);
                if state.durable_end_offset > offset
                    || state.closed
                    || state.poisoned.is_some()
                    || cut_under
                {
                    return;
                }
            }
            listener.await;
        }
    }

    /// The leader epoch cache: `(epoch, start offset)` pairs, epochs and start offsets
    /// strictly increasing, each the first offset appended under its epoch (Kafka's
    /// `leader-epoch-checkpoint`).
    pub fn leader_epochs(&self) -> Vec<(i32, i64)> {
        self.state
            .borrow()
            .leader_epochs
            .entries()
            .iter()
            .map(|entry| (entry.epoch, entry.start_offset))
            .collect()
    }

    pub fn poisoned(&self) -> Option<String> {
        self.state.borrow().poisoned.clone()
    }

    /// Bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.state
            .borrow()
            .segments
            .values()
            .map(Segment::end_position)
            .sum()
    }

    pub fn segment_count(&self) -> usize {
        self.state.borrow().segments.len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_bases(&self) -> Vec<i64> {
        self.state.borrow().segments.keys().copied().collect()
    }

    fn poison_error(&self, reason: &str) -> Error {
        Error::Poisoned {
            path: self.dir.clone(),
            reason: reason.to_string(),
        }
    }

    fn check_writable(&self, state: &State) -> Result<()> {
        if let Some(reason) = &state.poisoned {
            return Err(self.poison_error(reason));
        }
        if state.closed {
            return Err(self.poison_error("log is closed"));
        }
        Ok(())
    }

    fn poison(&self, error: &Error) {
        let mut state = self.state.borrow_mut();
        if state.poisoned.is_none() {
            tracing::error!(log = %self.topic_partition, %error, "partition log poisoned");
            state.poisoned = Some(error.to_string());
        }
        drop(state);
        self.data_changed.notify(usize::MAX);
        self.durable_changed.notify(usize::MAX);
    }

    /// Appends a record set (one or more v2 RecordBatches as the client sent them), assigning
    /// offsets, and returns once it is durable under the log's flush policy.
    pub async fn append(&self, records: &Bytes, leader_epoch: i32) -> Result<AppendResult> {
        let outcome = self
            .append_gated(records, leader_epoch, |_, _| AppendGate::<()>::Append)
            .await?;
        Ok(outcome.unwrap_or_else(|()| unreachable!("the gate always appends")))
    }

    /// [`PartitionLog::append`] with a gate: after the batches are validated and just before
    /// offsets are assigned, `gate` sees them and the base offset they will get, with nothing
    /// able to append in between. The idempotent producer's sequence checks run there, so a
    /// check and the append it allows are one step. `AppendGate::Skip(value)` appends nothing and
    /// returns `Ok(Err(value))`.
    pub async fn append_gated<T>(
        &self,
        records: &Bytes,
        leader_epoch: i32,
        gate: impl FnOnce(&[(Bytes, BatchInfo)], i64) -> AppendGate<T>,
    ) -> Result<std::result::Result<AppendResult, T>> {
        // Take a place in line before anything can wait: appends are assigned offsets in the
        // order they were called, even when one of them waits for a roll or an exclusive
        // operation. A connection's pipelined produces (and an idempotent producer's sequence
        // numbers) depend on it.
        let turn = self.append_line.take_ticket();
        let batches = split_batches(records)?;
        self.append_in_turn(turn, batches, AppendSource::Leader { leader_epoch }, gate)
            .await
    }

    /// A follower's append: `records` are batches as its leader served them in a Fetch
    /// response, already carrying their offsets and `partitionLeaderEpoch`, stored byte for
    /// byte (nothing patched, no LogAppendTime stamping). Each whole batch is validated as
    /// [`PartitionLog::append`] validates a produce; an incomplete last batch (a leader cuts
    /// its response at the fetch's byte limit) is ignored, and if there is no whole batch
    /// nothing is appended and the result has `record_count` 0 and `base_offset` at the log
    /// end. The first batch must start at the log end offset and every next one right after
    /// the previous one, or [`Error::NonContiguousAppend`] is returned and nothing is
    /// appended: the caller drops what it already has and truncates on divergence. Durable
    /// under the flush policy like an append; never moves the high watermark, which followers
    /// learn from their leader ([`PartitionLog::set_high_watermark`]).
    pub async fn append_replicated(&self, records: &Bytes) -> Result<AppendResult> {
        let turn = self.append_line.take_ticket();
        let (batches, _incomplete_tail_bytes) = split_whole_batches(records)?;
        if batches.is_empty() {
            let state = self.state.borrow();
            self.check_writable(&state)?;
            return Ok(AppendResult {
                base_offset: state.log_end_offset,
                last_offset: state.log_end_offset - 1,
                log_start_offset: state.log_start_offset,
                record_count: 0,
                log_append_time_ms: -1,
            });
        }
        for pair in batches.windows(2) {
            let (previous, next) = (&pair[0].1, &pair[1].1);
            let expected = previous.base_offset + i64::from(previous.last_offset_delta) + 1;
            if next.base_offset != expected {
                return Err(Error::NonContiguousAppend {
                    expected,
                    got: next.base_offset,
                });
            }
        }
        let gate = |_: &[(Bytes, BatchInfo)], _| AppendGate::<std::convert::Infallible>::Append;
        let outcome = self
            .append_in_turn(turn, batches, AppendSource::Replicated, gate)
            .await?;
        Ok(outcome.unwrap_or_else(|never| match never {}))
    }

    /// What every append shares once its batches are split and validated: the size check, its
    /// turn in line, rolls and exclusive operations, the gate, the leader epochs, buffering,
    /// and durability under the flush policy.
    async fn append_in_turn<T>(
        &self,
        turn: AppendTurn,
        batches: Vec<(Bytes, BatchInfo)>,
        source: AppendSource,
        gate: impl FnOnce(&[(Bytes, BatchInfo)], i64) -> AppendGate<T>,
    ) -> Result<std::result::Result<AppendResult, T>> {
        let max_message_bytes = self.config.borrow().max_message_bytes;
        for (batch, _) in &batches {
            if batch.len() > max_message_bytes {
                return Err(Error::BatchTooLarge {
                    size: batch.len(),
                    max: max_message_bytes,
                });
            }
        }
        let incoming_bytes: u64 = batches
            .iter()
            .map(|(batch, _)| crate::format::frame_bytes_for(batch.len()) as u64)
            .sum();
        let incoming_records: i64 = batches
            .iter()
            .map(|(_, info)| i64::from(info.records_count))
            .sum();
        loop {
            let wait = {
                let state = self.state.borrow();
                self.check_writable(&state)?;
                state.exclusive.then(|| self.released.listen())
            };
            if let Some(listener) = wait {
                listener.await;
                continue;
            }
            if !self.append_line.is_turn(&turn) {
                self.append_line.wait_for_turn(&turn).await;
                continue;
            }
            if self.needs_roll(incoming_bytes, incoming_records) {
                self.roll().await?;
                continue;
            }
            break;
        }
        let next_offset = self.state.borrow().log_end_offset;
        if let AppendSource::Replicated = source {
            let got = batches[0].1.base_offset;
            if got != next_offset {
                return Err(Error::NonContiguousAppend {
                    expected: next_offset,
                    got,
                });
            }
        }
        if let AppendGate::Skip(value) = gate(&batches, next_offset) {
            return Ok(Err(value));
        }
        self.record_leader_epochs(&batches, source, next_offset)
            .await?;
        let result = match source {
            AppendSource::Leader { leader_epoch } => self.append_buffered(&batches, leader_epoch),
            AppendSource::Replicated => self.append_verbatim(&batches),
        };
        drop(turn);
        match self.config.borrow().flush_policy() {
            // Followers read up to the log end: they may fetch these batches while this log's
            // fdatasync runs, so the two disks' syncs overlap (`wait_for_log_end_past`).
            FlushPolicy::EveryAppend => {
                self.data_changed.notify(usize::MAX);
            }
            FlushPolicy::Relaxed { messages, .. } => {
                let mut state = self.state.borrow_mut();
                state.unflushed_messages += incoming_records as u64;
                if self.auto_high_watermark {
                    state.high_watermark = state.high_watermark.max(state.leader_appended_end);
                }
                let due = state.unflushed_messages >= messages
                    || state.active().unwritten_bytes() >= TAIL_BUFFER_BYTES_MAX;
                drop(state);
                self.data_changed.notify(usize::MAX);
                if !due {
                    return Ok(Ok(result));
                }
            }
        }
        self.sync_to(result.last_offset + 1).await?;
        Ok(Ok(result))
    }

    /// Records the leader epochs `batches` start (Kafka's `assign`) and checkpoints them
    /// durably before the batches are buffered, so no frame ever reaches the disk under an
    /// epoch the checkpoint lacks and opening a log needs no scan of its frames. The write
    /// happens only when an epoch begins (a leader change), under the exclusive hold, which
    /// keeps it apart from truncations and retention that rewrite the checkpoint too. Called
    /// in the append's turn with no await since the exclusive hold was last seen free.
    async fn record_leader_epochs(
        &self,
        batches: &[(Bytes, BatchInfo)],
        source: AppendSource,
        next_offset: i64,
    ) -> Result<()> {
        let planned = {
            let state = self.state.borrow();
            let current = &state.leader_epochs;
            let starts_epoch = match source {
                AppendSource::Leader { leader_epoch } => current.is_newer(leader_epoch),
                AppendSource::Replicated => batches
                    .iter()
                    .any(|(_, info)| current.is_newer(info.partition_leader_epoch)),
            };
            if !starts_epoch {
                return Ok(());
            }
            let mut planned = current.clone();
            match source {
                AppendSource::Leader { leader_epoch } => {
                    planned.assign(leader_epoch, next_offset);
                }
                AppendSource::Replicated => {
                    for (_, info) in batches {
                        planned.assign(info.partition_leader_epoch, info.base_offset);
                    }
                }
            }
            planned
        };
        let guard = self.exclusive_now();
        self.state.borrow_mut().leader_epochs = planned;
        let written = self.write_leader_epochs().await;
        drop(guard);
        if let Err(error) = &written {
            self.poison(error);
        }
        written?;
        // A flush may have failed while the checkpoint was written.
        let state = self.state.borrow();
        self.check_writable(&state)
    }

    /// Checkpoints the leader epoch cache. Called under the exclusive hold, so only one
    /// checkpoint write runs at a time.
    async fn write_leader_epochs(&self) -> Result<()> {
        let epochs = {
            let state = self.state.borrow();
            assert!(
                state.exclusive,
                "leader epochs written without the exclusive hold"
            );
            state.leader_epochs.clone()
        };
        write_epoch_file(&self.storage, &self.dir, &epochs).await
    }

    /// The synchronous part of an append: offsets, frames into the tail buffer, cache, index.
    fn append_buffered(&self, batches: &[(Bytes, BatchInfo)], leader_epoch: i32) -> AppendResult {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        let base_offset = state.log_end_offset;
        let log_append_time_ms =
            (self.config.borrow().message_timestamp_type == LOG_APPEND_TIME).then(now_ms);
        for (batch, info) in batches {
            let offset = state.log_end_offset;
            let mut patched = patch_batch(batch, offset, leader_epoch);
            let mut header = frame_header_for(info);
            header.base_offset = offset;
            header.leader_epoch = leader_epoch;
            if let Some(now) = log_append_time_ms {
                // Kafka's LogAppendTime: the broker's clock replaces the batch's timestamps
                // (type bit, max timestamp and so the CRC change; the records do not).
                set_log_append_time(&mut patched, now);
                header.first_timestamp = now;
                header.max_timestamp = now;
                header.batch_crc = BatchInfo::parse(&patched).map_or(info.crc, |info| info.crc);
            }
            self.buffer_frame(state, header, patched.freeze());
        }
        state.leader_appended_end = state.log_end_offset;
        AppendResult {
            base_offset,
            last_offset: state.log_end_offset - 1,
            log_start_offset: state.log_start_offset,
            record_count: state.log_end_offset - base_offset,
            log_append_time_ms: log_append_time_ms.unwrap_or(-1),
        }
    }

    /// The synchronous part of a replicated append: the leader's batches, as they are, into
    /// the tail buffer, cache and index.
    fn append_verbatim(&self, batches: &[(Bytes, BatchInfo)]) -> AppendResult {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        let base_offset = state.log_end_offset;
        for (batch, info) in batches {
            let mut header = frame_header_for(info);
            if info.attributes & attributes::TIMESTAMP_TYPE_LOG_APPEND != 0 {
                // Stamped by the leader: every record has the batch's max timestamp, and the
                // leader's frame says so too.
                header.first_timestamp = info.max_timestamp;
            }
            // A copy: a slice would keep the whole fetch response alive in the batch cache.
            self.buffer_frame(state, header, Bytes::copy_from_slice(batch));
        }
        AppendResult {
            base_offset,
            last_offset: state.log_end_offset - 1,
            log_start_offset: state.log_start_offset,
            record_count: state.log_end_offset - base_offset,
            log_append_time_ms: -1,
        }
    }

    /// Puts one frame at the log end: into the active segment's tail buffer and its index, and
    /// into the batch cache.
    fn buffer_frame(&self, state: &mut State, header: FrameHeader, batch: Bytes) {
        assert_eq!(
            header.base_offset, state.log_end_offset,
            "frames are contiguous"
        );
        state.active_mut().append(header, &batch);
        let last_offset = header.last_offset();
        if let Some(cache) = &self.cache {
            cache.insert(self.cache_key, header.base_offset, last_offset, batch);
        }
        state.log_end_offset = last_offset + 1;
    }

    fn needs_roll(&self, incoming_bytes: u64, incoming_records: i64) -> bool {
        let config = self.config.borrow();
        let state = self.state.borrow();
        if state.closed {
            return false;
        }
        let active = state.active();
        if active.is_empty() {
            return false;
        }
        let full = active.end_position() + incoming_bytes > config.segment_bytes;
        let offsets_overflow =
            state.log_end_offset + incoming_records - active.base_offset >= i64::from(u32::MAX);
        let aged = active
            .first_append_ms()
            .is_some_and(|first| now_ms().saturating_sub(first) >= config.segment_ms);
        full || offsets_overflow || aged
    }

    /// Waits until every offset below `target` is durable, leading a flush if its part of the
    /// log is not yet written and no other write is running.
    ///
    /// Flushes are pipelined: a flush writes the buffered tail, lets the next flush start
    /// writing, and then runs its own fdatasync, so the disk gets the next write while the
    /// previous fdatasync runs instead of write, sync, write, sync at queue depth one. Every
    /// write is followed by its own fdatasync, and an fdatasync covers every write that
    /// completed before it was issued, so whichever completes first the durable end only
    /// moves over written and synced bytes.
    pub async fn sync_to(&self, target: i64) -> Result<()> {
        loop {
            let listener = {
                let mut state = self.state.borrow_mut();
                if let Some(reason) = &state.poisoned {
                    return Err(self.poison_error(reason));
                }
                if state.durable_end_offset >= target {
                    return Ok(());
                }
                // Written already: its fdatasync is running and will wake us.
                if state.writing || state.written_end_offset >= target {
                    Some(self.flushed.listen())
                } else {
                    state.writing = true;
                    None
                }
            };
            match listener {
                Some(listener) => listener.await,
                None => {
                    // flush_once gives up `writing` itself, as soon as its write is done.
                    let result = self.flush_once().await;
                    self.flushed.notify(usize::MAX);
                    self.data_changed.notify(usize::MAX);
                    if let Err(error) = result {
                        self.poison(&error);
                        return Err(error);
                    }
                }
            }
        }
    }

    /// One group commit: write the active segment's buffered frames, hand the writing over to
    /// the next flush, then one fdatasync. Called with `writing` set; clears it on every path
    /// once its write is over, and never after another flush may have set it again.
    async fn flush_once(&self) -> Result<()> {
        let planned = {
            let mut state = self.state.borrow_mut();
            if state.closed {
                state.writing = false;
                return Err(self.poison_error("log is closed"));
            }
            let active = state.active();
            let planned = (active.flush_job(), state.log_end_offset, active.base_offset);
            if planned.0.is_none() {
                // Nothing unwritten. If no fdatasync is running either, everything is durable.
                state.writing = false;
                if state.syncs_in_flight == 0 {
                    let end_offset = planned.1;
                    state.written_end_offset = state.written_end_offset.max(end_offset);
                    self.mark_durable(&mut state, end_offset);
                }
            }
            planned
        };
        let (Some(mut job), end_offset, base) = planned else {
            return Ok(());
        };
        // A zero write running ahead of the appends must be over before data goes where it
        // writes (it cannot start again: the next one is planned only after this write).
        let job_end = job.position + job.len;
        loop {
            let overlap = self
                .state
                .borrow()
                .segments
                .get(&base)
                .and_then(|segment| segment.zero_overlap(job.position, job_end));
            match overlap {
                Some(listener) => listener.await,
                None => break,
            }
        }
        let written = job.write().await;
        {
            let mut state = self.state.borrow_mut();
            state.writing = false;
            if written.is_ok() {
                let reshaping = state.exclusive || state.closed;
                if let Some(segment) = state.segments.get_mut(&base) {
                    segment.on_written(&job);
                    if !reshaping {
                        if let Some(zero) = segment.runway_job() {
                            crate::rt::spawn_detached(crate::rt::TaskClass::Background, zero.run());
                        }
                    }
                }
                state.written_end_offset = state.written_end_offset.max(end_offset);
                state.syncs_in_flight += 1;
            }
        }
        self.flushed.notify(usize::MAX);
        written?;
        let sync_started = Instant::now();
        let synced = job.file.fdatasync().await;
        if let Some(metrics) = &self.metrics {
            metrics.fsync_latency.record(sync_started.elapsed());
        }
        let mut state = self.state.borrow_mut();
        state.syncs_in_flight -= 1;
        synced?;
        if let Some(segment) = state.segments.get_mut(&base) {
            segment.on_synced(job.end_position);
        }
        self.mark_durable(&mut state, end_offset);
        Ok(())
    }

    /// Stops the active segment's zeroing and waits for its zero write in flight, before the
    /// file is sealed, cut, closed or deleted. Called under the exclusive hold, so no flush
    /// plans another zero write until the runway is restarted.
    async fn stop_runway(&self) {
        let runway = self
            .state
            .borrow()
            .segments
            .values()
            .next_back()
            .map(Segment::runway);
        if let Some(runway) = runway {
            runway.stop().await;
        }
    }

    /// Offsets below `end_offset` are durable (never past the log end: a truncation may have
    /// cut the log while the fdatasync ran).
    fn mark_durable(&self, state: &mut State, end_offset: i64) {
        let end_offset = end_offset.min(state.log_end_offset);
        state.durable_end_offset = state.durable_end_offset.max(end_offset);
        if self.auto_high_watermark {
            let committed = state.durable_end_offset.min(state.leader_appended_end);
            state.high_watermark = state.high_watermark.max(committed);
        }
        state.unflushed_messages = 0;
        state.last_flush_ms = now_ms();
        self.durable_changed.notify(usize::MAX);
    }

    /// Syncs if the relaxed policy's `flush.ms` has passed. Called by the shard's background
    /// task; a no-op for logs that sync on every append.
    pub async fn flush_if_due(&self, now: i64) -> Result<()> {
        let target = {
            let state = self.state.borrow();
            let FlushPolicy::Relaxed { interval_ms, .. } = self.config.borrow().flush_policy()
            else {
                return Ok(());
            };
            let due = state.durable_end_offset < state.log_end_offset
                && now.saturating_sub(state.last_flush_ms)
                    >= interval_ms.min(i64::MAX as u64) as i64;
            if !due || state.poisoned.is_some() {
                return Ok(());
            }
            state.log_end_offset
        };
        self.sync_to(target).await
    }

    /// Waits for and takes the exclusive hold (no appends, no other reshaping).
    async fn exclusive(&self) -> Result<ExclusiveGuard<'_>> {
        loop {
            let listener = {
                let mut state = self.state.borrow_mut();
                if state.closed {
                    return Err(self.poison_error("log is closed"));
                }
                if !state.exclusive {
                    state.exclusive = true;
                    return Ok(ExclusiveGuard { log: self });
                }
                self.released.listen()
            };
            listener.await;
        }
    }

    /// Takes the exclusive hold that the caller just saw free, with no await since.
    fn exclusive_now(&self) -> ExclusiveGuard<'_> {
        let mut state = self.state.borrow_mut();
        assert!(
            !state.exclusive && !state.closed,
            "exclusive hold taken while not free"
        );
        state.exclusive = true;
        ExclusiveGuard { log: self }
    }

    /// Seals the active segment and starts a new one at the log end offset.
    pub async fn roll(&self) -> Result<()> {
        let _guard = self.exclusive().await?;
        let result = self.roll_locked().await;
        if let Err(error) = &result {
            self.poison(error);
        }
        result
    }

    async fn roll_locked(&self) -> Result<()> {
        if self.state.borrow().active().is_empty() {
            return Ok(());
        }
        let target = self.state.borrow().log_end_offset;
        self.sync_to(target).await?;
        self.stop_runway().await;
        let (file, index_path, index_bytes, end_position, base) = {
            let state = self.state.borrow();
            let active = state.active();
            let Some((bytes, _)) = active.checkpoint() else {
                return Err(self.poison_error("active segment not synced at roll"));
            };
            (
                active.file().clone(),
                active.index_path().to_path_buf(),
                bytes,
                active.end_position(),
                active.base_offset,
            )
        };
        Segment::seal_files(
            &self.storage,
            &file,
            &index_path,
            &index_bytes,
            end_position,
        )
        .await?;
        if let Some(segment) = self.state.borrow_mut().segments.get_mut(&base) {
            segment.mark_sealed();
        }
        let (interval, segment_bytes) = {
            let config = self.config.borrow();
            (config.index_interval_bytes, config.segment_bytes)
        };
        let segment =
            Segment::create(&self.storage, &self.dir, target, interval, segment_bytes).await?;
        self.state.borrow_mut().segments.insert(target, segment);
        Ok(())
    }

    /// Reads whole batches starting with the one holding `offset`, up to `max_bytes` (at least
    /// one batch, as Kafka does) and never past `limit`.
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        limit: ReadLimit,
    ) -> Result<ReadResult> {
        let (upper, mut result, plan) = {
            let mut state = self.state.borrow_mut();
            if offset < state.log_start_offset || offset > state.log_end_offset {
                return Err(Error::OffsetOutOfRange {
                    offset,
                    log_start_offset: state.log_start_offset,
                    log_end_offset: state.log_end_offset,
                });
            }
            let upper = match limit {
                ReadLimit::HighWatermark => state.high_watermark,
                ReadLimit::LogEnd => state.log_end_offset,
            };
            let mut result = ReadResult {
                batches: Vec::new(),
                next_offset: offset,
                high_watermark: state.high_watermark,
                log_start_offset: state.log_start_offset,
                log_end_offset: state.log_end_offset,
                from_cache: false,
            };
            if offset >= upper {
                return Ok(result);
            }
            if let Some(cache) = &self.cache {
                if let Some(read) = cache.read(self.cache_key, offset, max_bytes, upper) {
                    result.batches = read.batches;
                    result.next_offset = read.next_offset;
                    result.from_cache = true;
                    return Ok(result);
                }
            }
            let Some((&base, segment)) = state.segments.range(..=offset).next_back() else {
                return Ok(result);
            };
            let relative = u32::try_from(offset - base).unwrap_or(u32::MAX);
            let position = segment.index().position_for_offset(relative);
            let end = segment.end_position();
            // Serve from the read-ahead buffer when it covers the start of this read.
            if let Some((ahead_base, ahead_position, ahead)) = &state.read_ahead {
                let ahead_end = ahead_position + ahead.len() as u64;
                if *ahead_base == base
                    && *ahead_position <= position
                    && position + FRAME_HEADER_BYTES as u64 <= ahead_end
                {
                    let bytes = ahead.slice((position - ahead_position) as usize..);
                    if let Some((at, reason)) =
                        collect_frames(&bytes, offset, max_bytes, upper, &mut result)
                    {
                        let path = segment.log_path().to_path_buf();
                        return Err(Error::Corrupt {
                            path,
                            position: position + at,
                            reason,
                        });
                    }
                    if !result.batches.is_empty() {
                        return Ok(result);
                    }
                    result.next_offset = offset;
                }
            }
            let want = max_bytes
                .saturating_add(FRAME_HEADER_BYTES)
                .max(READ_AHEAD_BYTES);
            let want = want.min((end - position) as usize);
            let plan = segment.read_plan(position, want);
            state.read_ahead = None;
            (upper, result, (base, position, plan))
        };
        let (base, position, plan) = plan;
        let bytes = plan.execute().await?;
        let damaged = collect_frames(&bytes, offset, max_bytes, upper, &mut result);
        if let Some((at, reason)) = damaged {
            return Err(self.corrupt_at(base, position + at, reason));
        }
        if result.batches.is_empty() {
            // The wanted frame was cut off by the end of the read (a batch larger than the
            // read-ahead): read exactly that frame.
            if let Some((at, header)) = first_wanted_frame(&bytes, offset) {
                let plan = {
                    let state = self.state.borrow();
                    let Some(segment) = state.segments.get(&base) else {
                        return Ok(result);
                    };
                    segment.read_plan(position + at, header.frame_bytes() as usize)
                };
                let frame = plan.execute().await?;
                if let Some((_, reason)) =
                    collect_frames(&frame, offset, max_bytes, upper, &mut result)
                {
                    return Err(self.corrupt_at(base, position + at, reason));
                }
            }
        }
        if result.batches.is_empty() && offset < upper {
            let (at, reason) = first_problem(&bytes)
                .unwrap_or((0, format!("no frame holding offset {offset} below {upper}")));
            return Err(self.corrupt_at(base, position + at, reason));
        }
        self.state.borrow_mut().read_ahead = Some((base, position, bytes));
        Ok(result)
    }

    /// A corruption error naming the segment file of `base` and the position in it.
    fn corrupt_at(&self, base: i64, position: u64, reason: String) -> Error {
        let path = self.dir.join(crate::segment::log_file_name(base));
        tracing::error!(path = %path.display(), position, %reason, "corrupt frame read back");
        Error::Corrupt {
            path,
            position,
            reason,
        }
    }

    /// The first offset whose record timestamp is at or after `timestamp`, with that
    /// timestamp (ListOffsets by time). Uncompressed batches are resolved to the record;
    /// compressed ones to their first offset. `None` if no batch is that recent.
    pub async fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>> {
        let candidates: Vec<(i64, u64, u64)> = {
            let state = self.state.borrow();
            state
                .segments
                .iter()
                .filter(|(_, segment)| segment.max_timestamp() >= timestamp)
                .map(|(&base, segment)| {
                    (
                        base,
                        segment.index().position_for_timestamp(timestamp),
                        segment.end_position(),
                    )
                })
                .collect()
        };
        let upper = self.high_watermark();
        for (base, start, end) in candidates {
            let file = {
                let state = self.state.borrow();
                let Some(segment) = state.segments.get(&base) else {
                    continue;
                };
                segment.file().clone()
            };
            let mut reader = ChunkReader::new(file, end);
            let mut position = start;
            while position < end {
                let (header, payload) =
                    match crate::segment::read_valid_frame(&mut reader, position, None).await? {
                        Ok(frame) => frame,
                        Err(reason) => return Err(self.corrupt_at(base, position, reason)),
                    };
                if header.base_offset >= upper {
                    return Ok(None);
                }
                if header.max_timestamp >= timestamp {
                    return Ok(Some(
                        record_at_or_after(&payload, timestamp)
                            .unwrap_or((header.base_offset, header.max_timestamp)),
                    ));
                }
                position += header.frame_bytes();
            }
        }
        Ok(None)
    }

    /// The offset and timestamp of the batch with the largest timestamp (ListOffsets
    /// MAX_TIMESTAMP, resolved to the batch's last offset). `None` for an empty log.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let state = self.state.borrow();
        state
            .segments
            .values()
            .filter(|segment| !segment.is_empty())
            .max_by_key(|segment| segment.max_timestamp())
            .map(|segment| (segment.offset_of_max_timestamp(), segment.max_timestamp()))
    }

    /// DeleteRecords: advances the log start offset to `offset` (-1: the high watermark) and
    /// deletes segments wholly below it. Returns the new log start offset.
    pub async fn delete_records(&self, offset: i64) -> Result<i64> {
        let _guard = self.exclusive().await?;
        let new_start = {
            let state = self.state.borrow();
            let target = if offset == -1 {
                state.high_watermark
            } else {
                offset
            };
            if target < 0 || target > state.high_watermark {
                return Err(Error::OffsetOutOfRange {
                    offset,
                    log_start_offset: state.log_start_offset,
                    log_end_offset: state.high_watermark,
                });
            }
            target.max(state.log_start_offset)
        };
        self.advance_log_start(new_start).await?;
        self.delete_segments_below_start().await?;
        Ok(new_start)
    }

    async fn advance_log_start(&self, new_start: i64) -> Result<()> {
        if new_start <= self.state.borrow().log_start_offset {
            return Ok(());
        }
        write_log_start(&self.storage, &self.dir, new_start).await?;
        self.state.borrow_mut().log_start_offset = new_start;
        if let Some(cache) = &self.cache {
            cache.remove_below(self.cache_key, new_start);
        }
        // Kafka's truncateFromStart. If a crash comes first, opening moves the entries the same
        // way from the log start checkpoint just written.
        let moved = self
            .state
            .borrow_mut()
            .leader_epochs
            .truncate_from_start(new_start);
        if moved {
            self.write_leader_epochs().await?;
        }
        Ok(())
    }

    /// Deletes sealed segments whose offsets are all below the log start offset.
    async fn delete_segments_below_start(&self) -> Result<(usize, u64)> {
        let doomed: Vec<i64> = {
            let state = self.state.borrow();
            let bases: Vec<i64> = state.segments.keys().copied().collect();
            bases
                .windows(2)
                .filter(|pair| pair[1] <= state.log_start_offset)
                .map(|pair| pair[0])
                .collect()
        };
        self.delete_segments(&doomed).await
    }

    async fn delete_segments(&self, bases: &[i64]) -> Result<(usize, u64)> {
        let mut bytes = 0;
        for base in bases {
            let removed = self.state.borrow_mut().segments.remove(base);
            let Some(segment) = removed else { continue };
            bytes += segment.end_position();
            {
                let mut state = self.state.borrow_mut();
                if state
                    .read_ahead
                    .as_ref()
                    .is_some_and(|(ahead, _, _)| ahead == base)
                {
                    state.read_ahead = None;
                }
            }
            Segment::delete_files(&self.storage, segment.log_path(), segment.index_path()).await?;
        }
        if !bases.is_empty() {
            self.storage.sync_dir(&self.dir).await?;
        }
        Ok((bases.len(), bytes))
    }

    /// One retention pass (background work): deletes sealed segments past `retention.ms` or
    /// beyond `retention.bytes`, oldest first, and rolls the active segment past `segment.ms`.
    pub async fn apply_retention(&self, now: i64) -> Result<RetentionReport> {
        let mut report = RetentionReport::default();
        if self.needs_roll(0, 0) {
            self.roll().await?;
            report.rolled = true;
        }
        let _guard = self.exclusive().await?;
        let config = self.config.borrow().clone();
        let doomed: Vec<i64> = {
            let state = self.state.borrow();
            let sealed: Vec<&Segment> = state.segments.values().filter(|s| s.is_sealed()).collect();
            let mut excess = if config.retention_bytes >= 0 {
                let total: u64 = state.segments.values().map(Segment::end_position).sum();
                total as i64 - config.retention_bytes
            } else {
                0
            };
            let mut doomed = Vec::new();
            for segment in sealed {
                let expired = config.retention_ms >= 0
                    && now.saturating_sub(segment.max_timestamp()) > config.retention_ms;
                let over_size = excess - segment.end_position() as i64 >= 0 && excess > 0;
                if !(expired || over_size) {
                    break;
                }
                excess -= segment.end_position() as i64;
                doomed.push(segment.base_offset);
            }
            doomed
        };
        if let Some(&last_doomed) = doomed.last() {
            let next_base = {
                let state = self.state.borrow();
                state
                    .segments
                    .range(last_doomed + 1..)
                    .next()
                    .map(|(&base, _)| base)
            };
            if let Some(next_base) = next_base {
                self.advance_log_start(next_base).await?;
            }
        }
        let (deleted, bytes) = self.delete_segments(&doomed).await?;
        report.segments_deleted = deleted;
        report.bytes_deleted = bytes;
        Ok(report)
    }

    /// Removes every batch at or past `offset` (a follower truncating after a leader change).
    /// A batch holding `offset` is removed whole, so the new log end may be below `offset`.
    pub async fn truncate_to(&self, offset: i64) -> Result<i64> {
        let _guard = self.exclusive().await?;
        let result = self.truncate_locked(offset).await;
        if let Err(error) = &result {
            self.poison(error);
        }
        result
    }

    async fn truncate_locked(&self, offset: i64) -> Result<i64> {
        let end = self.state.borrow().log_end_offset;
        if offset >= end {
            // No batch goes, but an epoch recorded at the log end by an append that then
            // appended nothing may.
            let trimmed = self
                .state
                .borrow_mut()
                .leader_epochs
                .truncate_from_end(offset);
            if trimmed {
                self.write_leader_epochs().await?;
            }
            return Ok(end);
        }
        self.sync_to(end).await?;
        self.stop_runway().await;
        let offset = offset.max(self.state.borrow().log_start_offset);
        let (doomed, keeper): (Vec<i64>, Option<i64>) = {
            let state = self.state.borrow();
            let doomed = state
                .segments
                .range(offset..)
                .map(|(&base, _)| base)
                .collect();
            let keeper = state
                .segments
                .range(..offset)
                .next_back()
                .map(|(&base, _)| base);
            (doomed, keeper)
        };
        let (interval, segment_bytes) = {
            let config = self.config.borrow();
            (config.index_interval_bytes, config.segment_bytes)
        };
        let removing_all = keeper.is_none();
        self.delete_segments(&doomed).await?;
        if removing_all {
            let segment =
                Segment::create(&self.storage, &self.dir, offset, interval, segment_bytes).await?;
            self.state.borrow_mut().segments.insert(offset, segment);
        } else if let Some(base) = keeper {
            let removed = self.state.borrow_mut().segments.remove(&base);
            let Some(mut segment) = removed else {
                return Ok(end);
            };
            let (position, new_end) = find_cut(&segment, offset).await?;
            if segment.is_sealed() {
                segment.reopen_for_append().await?;
            }
            // The segment's index checkpoint describes frames that are about to go: remove
            // it durably, or recovery after a crash would trust it.
            if self.storage.exists(segment.index_path()).await {
                self.storage.remove_file(segment.index_path()).await?;
                self.storage.sync_dir(&self.dir).await?;
            }
            segment.truncate_to_position(position, new_end).await?;
            self.state.borrow_mut().segments.insert(base, segment);
        }
        let new_end = self.state.borrow().active().next_offset();
        if self.state.borrow().log_start_offset > new_end {
            // The batch holding the old log start was cut: the log now starts at its end.
            write_log_start(&self.storage, &self.dir, new_end).await?;
        }
        // After the data is cut and synced: a crash before this write leaves entries past the
        // recovered end, which opening drops; the other order could lose an epoch of batches
        // that survived.
        let trimmed = self
            .state
            .borrow_mut()
            .leader_epochs
            .truncate_from_end(offset.min(new_end));
        if trimmed {
            self.write_leader_epochs().await?;
        }
        let mut state = self.state.borrow_mut();
        state.log_end_offset = new_end;
        state.durable_end_offset = new_end;
        state.written_end_offset = new_end;
        state.high_watermark = state.high_watermark.min(new_end);
        state.leader_appended_end = state.leader_appended_end.min(new_end);
        state.log_start_offset = state.log_start_offset.min(new_end);
        state.truncations += 1;
        state.read_ahead = None;
        if let Some(cache) = &self.cache {
            cache.remove_from(self.cache_key, new_end);
        }
        drop(state);
        self.data_changed.notify(usize::MAX);
        self.durable_changed.notify(usize::MAX);
        Ok(new_end)
    }

    /// Clean shutdown: sync everything, checkpoint the active segment's index, and write the
    /// marker that lets the next open skip validation. The log accepts nothing afterwards.
    pub async fn close(&self) -> Result<()> {
        let guard = self.exclusive().await?;
        let poisoned = self.state.borrow().poisoned.is_some();
        if !poisoned {
            let end = self.state.borrow().log_end_offset;
            self.sync_to(end).await?;
            let (index_path, index_bytes, marker) = {
                let state = self.state.borrow();
                let active = state.active();
                let Some((bytes, _)) = active.checkpoint() else {
                    return Err(self.poison_error("active segment not synced at close"));
                };
                let marker = CleanMarker {
                    active_base_offset: active.base_offset,
                    end_position: active.end_position(),
                    log_end_offset: state.log_end_offset,
                };
                (active.index_path().to_path_buf(), bytes, marker)
            };
            self.storage
                .write_file_atomic(&index_path, &index_bytes)
                .await?;
            self.storage
                .write_file_atomic(&self.dir.join(CLEAN_SHUTDOWN_FILE), &marker.encode())
                .await?;
        }
        self.state.borrow_mut().closed = true;
        self.data_changed.notify(usize::MAX);
        self.durable_changed.notify(usize::MAX);
        self.stop_runway().await;
        self.close_files().await?;
        drop(guard);
        if let Some(cache) = &self.cache {
            cache.remove_log(self.cache_key);
        }
        Ok(())
    }

    /// Closes every segment file now: a dropped glommio file is only closed at the executor's
    /// next I/O cycle, which never comes if the shard is exiting.
    async fn close_files(&self) -> Result<()> {
        let segments = std::mem::take(&mut self.state.borrow_mut().segments);
        self.state.borrow_mut().read_ahead = None;
        for segment in segments.into_values() {
            segment.into_file().close().await?;
        }
        Ok(())
    }

    /// Deletes the log's files (DeleteTopics). The log must not be used afterwards.
    pub async fn delete(&self) -> Result<()> {
        let _guard = self.exclusive().await?;
        self.state.borrow_mut().closed = true;
        self.data_changed.notify(usize::MAX);
        self.durable_changed.notify(usize::MAX);
        self.stop_runway().await;
        if let Some(cache) = &self.cache {
            cache.remove_log(self.cache_key);
        }
        self.storage.remove_dir_all(&self.dir).await?;
        if let Some(parent) = self.dir.parent() {
            self.storage.sync_dir(parent).await?;
        }
        Ok(())
    }
}

/// The frame header for a batch as it is, before the log sets anything: its own offsets,
/// timestamps, CRC-32C and leader epoch.
fn frame_header_for(info: &BatchInfo) -> FrameHeader {
    FrameHeader {
        magic: FRAME_MAGIC,
        version: FRAME_VERSION,
        flags: 0,
        base_offset: info.base_offset,
        first_timestamp: info.base_timestamp,
        max_timestamp: info.max_timestamp,
        last_offset_delta: info.last_offset_delta,
        record_count: info.records_count,
        payload_bytes: info.total_bytes() as u32,
        leader_epoch: info.partition_leader_epoch,
        batch_crc: info.crc,
        synced_position: 0,
        reserved: 0,
        header_crc: 0,
    }
}

/// Loads the leader epoch cache when a log is opened.
///
/// The checkpoint is written before any batch that starts an epoch is buffered (see
/// `PartitionLog::record_leader_epochs`), so it lacks no epoch of the frames recovery kept and
/// needs no scan of them. Entries at or past the recovered log end (their batches were lost in
/// a crash, or a truncation did not get to rewrite the checkpoint) are dropped, durably: an
/// append under an older epoch could otherwise make them valid again. A missing or damaged
/// checkpoint is rebuilt from the frame headers, which costs one read of the whole log, and
/// written back. Returns the entries and whether they were rebuilt.
async fn open_leader_epochs(
    storage: &Storage,
    dir: &Path,
    segments: &BTreeMap<i64, Segment>,
    log_start_offset: i64,
    log_end_offset: i64,
) -> Result<(LeaderEpochs, bool)> {
    let has_frames = segments.values().any(|segment| !segment.is_empty());
    let (mut epochs, rebuild) = match read_epoch_file(storage, dir).await? {
        EpochFile::Loaded(epochs) => (epochs, false),
        // A new log, or one whose frames all predate the checkpoint.
        EpochFile::Missing => (LeaderEpochs::default(), has_frames),
        EpochFile::Damaged(reason) => {
            tracing::warn!(dir = %dir.display(), %reason, "rebuilding damaged leader epoch checkpoint");
            (LeaderEpochs::default(), true)
        }
    };
    if rebuild {
        for segment in segments.values() {
            scan_segment_epochs(segment, &mut epochs).await?;
        }
    }
    let trimmed = epochs.truncate_from_end(log_end_offset);
    // An entry before the log start is harmless on disk: every open moves it the same way.
    epochs.truncate_from_start(log_start_offset);
    if rebuild || trimmed {
        write_epoch_file(storage, dir, &epochs).await?;
    }
    Ok((epochs, rebuild))
}

/// Finds where to cut a segment so that no batch at or past `offset` remains: the position of
/// the first frame whose last offset is >= `offset`, and that frame's base offset.
async fn find_cut(segment: &Segment, offset: i64) -> Result<(u64, i64)> {
    let relative = u32::try_from(offset - segment.base_offset).unwrap_or(u32::MAX);
    let mut position = segment.index().position_for_offset(relative);
    let end = segment.end_position();
    let mut reader = ChunkReader::new(segment.file().clone(), end);
    while position < end {
        let header = match crate::segment::read_valid_frame(&mut reader, position, None).await? {
            Ok((header, _)) => header,
            Err(reason) => {
                return Err(Error::Corrupt {
                    path: segment.log_path().to_path_buf(),
                    position,
                    reason,
                })
            }
        };
        if header.last_offset() >= offset {
            return Ok((position, header.base_offset));
        }
        position += header.frame_bytes();
    }
    Ok((end, segment.next_offset()))
}

/// Parses frames from `bytes` (which starts at a frame boundary, read from disk) into
/// `result`: skips batches below `offset`, and stops at `upper`, at `max_bytes` (after the first
/// batch), or at a frame cut off by the end of `bytes`. Every batch returned is checked against
/// its CRC-32C first (disk data is never served unchecked); a mismatch is returned as the
/// frame's position within `bytes` and the reason.
fn collect_frames(
    bytes: &Bytes,
    offset: i64,
    max_bytes: usize,
    upper: i64,
    result: &mut ReadResult,
) -> Option<(u64, String)> {
    let mut position = 0_usize;
    let mut total = 0;
    while position + FRAME_HEADER_BYTES <= bytes.len() {
        let Ok(header) = FrameHeader::decode(&bytes[position..]) else {
            return None;
        };
        if header.base_offset >= upper {
            return None;
        }
        let payload_start = position + FRAME_HEADER_BYTES;
        let payload_end = payload_start + header.payload_bytes as usize;
        if header.last_offset() >= offset {
            if payload_end > bytes.len() {
                return None;
            }
            if !result.batches.is_empty() && total + header.payload_bytes as usize > max_bytes {
                return None;
            }
            let payload = bytes.slice(payload_start..payload_end);
            if let Err(reason) = crate::segment::check_payload(&header, &payload, None) {
                return Some((position as u64, reason));
            }
            total += header.payload_bytes as usize;
            result.batches.push(payload);
            result.next_offset = header.last_offset() + 1;
        }
        position += header.frame_bytes() as usize;
    }
    None
}

/// The position within `bytes` and header of the first frame whose batch reaches `offset`.
fn first_wanted_frame(bytes: &Bytes, offset: i64) -> Option<(u64, FrameHeader)> {
    let mut position = 0_usize;
    while position + FRAME_HEADER_BYTES <= bytes.len() {
        let header = FrameHeader::decode(&bytes[position..]).ok()?;
        if header.last_offset() >= offset {
            return Some((position as u64, header));
        }
        position += header.frame_bytes() as usize;
    }
    None
}

/// Where and why the first frame header in `bytes` fails to decode, if one does.
fn first_problem(bytes: &Bytes) -> Option<(u64, String)> {
    let mut position = 0_usize;
    while position + FRAME_HEADER_BYTES <= bytes.len() {
        match FrameHeader::decode(&bytes[position..]) {
            Ok(header) => position += header.frame_bytes() as usize,
            Err(error) => {
                return Some((position as u64, format!("invalid frame header: {error:?}")))
            }
        }
    }
    None
}

/// For an uncompressed batch, the first record with timestamp >= `timestamp`: its offset and
/// timestamp. Reads each record's length, attributes, timestamp delta and offset delta only.
fn record_at_or_after(batch: &[u8], timestamp: i64) -> Option<(i64, i64)> {
    let info = BatchInfo::parse(batch).ok()?;
    if info.compression() != 0
        || info.attributes & crate::format::attributes::TIMESTAMP_TYPE_LOG_APPEND != 0
    {
        return None;
    }
    let mut body = batch.get(BATCH_HEADER_BYTES..)?;
    while !body.is_empty() {
        let (length, used) = read_varint(body).ok()?;
        let record = body.get(used..used + usize::try_from(length).ok()?)?;
        let fields = record.get(1..)?; // skip attributes
        let (timestamp_delta, used_delta) = read_varint(fields).ok()?;
        let (offset_delta, _) = read_varint(fields.get(used_delta..)?).ok()?;
        let record_timestamp = info.base_timestamp + timestamp_delta;
        if record_timestamp >= timestamp {
            return Some((info.base_offset + offset_delta, record_timestamp));
        }
        body = &body[used + record.len()..];
    }
    None
}

#[derive(Clone, Copy, Debug)]
struct CleanMarker {
    active_base_offset: i64,
    end_position: u64,
    log_end_offset: i64,
}

const CLEAN_MARKER_BYTES: usize = 32;

impl CleanMarker {
    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(CLEAN_MARKER_BYTES);
        bytes.extend_from_slice(&CLEAN_MAGIC.to_le_bytes());
        bytes.extend_from_slice(&self.active_base_offset.to_le_bytes());
        bytes.extend_from_slice(&self.end_position.to_le_bytes());
        bytes.extend_from_slice(&self.log_end_offset.to_le_bytes());
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Option<CleanMarker> {
        if bytes.len() != CLEAN_MARKER_BYTES {
            return None;
        }
        let crc = u32::from_le_bytes(bytes[28..32].try_into().ok()?);
        if crc32fast::hash(&bytes[..28]) != crc || bytes[..4] != CLEAN_MAGIC.to_le_bytes() {
            return None;
        }
        Some(CleanMarker {
            active_base_offset: i64::from_le_bytes(bytes[4..12].try_into().ok()?),
            end_position: u64::from_le_bytes(bytes[12..20].try_into().ok()?),
            log_end_offset: i64::from_le_bytes(bytes[20..28].try_into().ok()?),
        })
    }
}

async fn read_clean_marker(storage: &Storage, dir: &Path) -> Option<CleanMarker> {
    let bytes = storage
        .read_file(&dir.join(CLEAN_SHUTDOWN_FILE))
        .await
        .ok()??;
    let marker = CleanMarker::decode(&bytes);
    if marker.is_none() {
        tracing::warn!(dir = %dir.display(), "ignoring damaged clean-shutdown marker");
    }
    marker.filter(|marker| marker.log_end_offset >= 0)
}

async fn read_log_start(storage: &Storage, dir: &Path) -> Option<i64> {
    let bytes = storage
        .read_file(&dir.join(LOG_START_OFFSET_FILE))
        .await
        .ok()??;
    if bytes.len() != 16 || bytes[..4] != START_MAGIC.to_le_bytes() {
        return None;
    }
    let crc = u32::from_le_bytes(bytes[12..16].try_into().ok()?);
    if crc32fast::hash(&bytes[..12]) != crc {
        return None;
    }
    Some(i64::from_le_bytes(bytes[4..12].try_into().ok()?))
}

async fn write_log_start(storage: &Storage, dir: &Path, offset: i64) -> Result<()> {
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(&START_MAGIC.to_le_bytes());
    bytes.extend_from_slice(&offset.to_le_bytes());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    storage
        .write_file_atomic(&dir.join(LOG_START_OFFSET_FILE), &bytes)
        .await
}
