//! One segment of a partition log: a preallocated direct-I/O file of frames, the buffer of its
//! not-yet-written tail, its sparse index, and its recovery.
//!
//! Appends only copy into the tail buffer (no I/O). A flush writes the buffer from the start of
//! its first partially written block: direct I/O writes whole blocks, so the last partial block
//! is rewritten with more data by the next flush. A torn rewrite cannot damage acknowledged
//! data: the bytes before the old end are the same in the old and the new block.
//!
//! Methods here are synchronous, so the log can hold a segment inside a `RefCell` without ever
//! borrowing it across an await; the I/O they plan ([`FlushJob`], [`ReadPlan`], [`ZeroJob`])
//! runs after.
//!
//! The active segment of a busy log keeps a zeroed runway ahead of its appends (see
//! [`Runway`]): fallocate leaves unwritten extents, and on ext4 every direct write into one
//! converts extents and makes the next fdatasync write the inode too, while a write over blocks
//! already written needs only the data and the cache flush.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use event_listener::{Event, EventListener};

use crate::error::{Error, Result};
use crate::format::{
    frame_bytes_for, BatchInfo, FrameError, FrameHeader, FRAME_ALIGNMENT_BYTES, FRAME_HEADER_BYTES,
    FRAME_MAGIC, FRAME_VERSION,
};
use crate::index::{IndexCheckpoint, SegmentIndex};
use crate::rt::fs::{align_down, align_up, File, IoBuffer, OpenMode, Storage, DMA_ALIGNMENT_BYTES};

/// Disk is reserved for a segment in steps of this size rather than all of `segment.bytes` at
/// once, so a thousand mostly idle partitions do not pin a terabyte. 32 MiB makes the extent
/// metadata update (one journal commit) rare: once per 32 MiB of appends.
pub const FALLOCATE_STEP_BYTES: u64 = 32 << 20;

/// Small segments reserve no more than they can hold (rounded up to a DMA block).
fn allocation_step(segment_bytes: u64) -> u64 {
    FALLOCATE_STEP_BYTES.min(align_up(segment_bytes))
}

/// Zeroes are written ahead of the appends in writes of at most this size: large enough to
/// stream at the disk's sequential speed and to convert extents once per MiB rather than once
/// per flush, small enough to take 1/16 of a shard's registered io memory.
pub const ZERO_CHUNK_BYTES: u64 = 1 << 20;

/// The zeroed runway reaches at most this far past the last data write. At the ~1 GB/s this
/// disk streams, 8 MiB is ~8 ms of appends: time for several 1 MiB zero writes to stay ahead,
/// while a segment sealed right after a burst wastes at most this much zeroing.
pub const ZERO_RUNWAY_BYTES_MAX: u64 = 8 << 20;

/// A segment starts its runway only once it holds this much data, and the runway is never
/// longer than the data already written: an idle or slow partition writes no zeroes at all,
/// and a busy one at most doubles its disk writes for the first few MiB of a segment.
pub const ZERO_AFTER_BYTES: u64 = 1 << 20;

/// A segment zeroes ahead only while its flushes average less than this. Zeroing pays per
/// flush and costs per byte: an fdatasync after a write into unwritten space costs ~150 us more
/// (261 against 111 us, raw benchmark, 16 KiB), while zeroing a MiB costs a MiB of disk
/// bandwidth (~1 ms at the ~1 GB/s this disk streams). That breaks even at ~7 flushes per MiB,
/// ~150 KiB a flush. Measured with `ringlog-bench kafka`: 16 KiB batches to one partition went
/// 0.55 -> 0.92 M msg/s with zeroing; 512 KiB batches over 8 partitions lost ~15% of their MB/s.
pub const ZERO_FLUSH_BYTES_MAX: u64 = 128 << 10;

/// Weight of the newest flush in the running average of flush sizes: 1/8, so a few outliers
/// do not switch zeroing on or off.
const FLUSH_AVERAGE_WEIGHT_SHIFT: u32 = 3;

/// Zero writes in flight at once on one shard, over all its segments. Each holds a 1 MiB
/// buffer, so four bound the memory to a quarter of the shard's 16 MiB of io memory however
/// many partitions are busy; four 1 MiB writes also keep a disk streaming, and a segment
/// that finds no slot just writes into unwritten space for a flush or two.
pub const ZERO_WRITES_PER_SHARD_MAX: usize = 4;

thread_local! {
    /// Zero writes in flight on this thread's shard, and the most there ever were. One per
    /// shard.
    static ZERO_WRITES_IN_FLIGHT: Cell<usize> = const { Cell::new(0) };
    static ZERO_WRITES_IN_FLIGHT_PEAK: Cell<usize> = const { Cell::new(0) };
}

/// Recovery and verification read segments in chunks of this size: large enough to be
/// sequential at disk speed, small enough to bound memory while scanning a 1 GiB segment.
pub const SCAN_CHUNK_BYTES: usize = 4 << 20;

pub fn log_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.log")
}

pub fn index_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.index")
}

/// Parses a segment file name back into its base offset.
pub fn parse_log_file_name(name: &str) -> Option<i64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// How a segment is being reopened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenKind {
    /// A segment before the last one: it was synced and sealed before the next one was made, so
    /// any invalid frame in it is corruption.
    Sealed,
    /// The last segment after a clean shutdown, whose marker recorded where its frames end.
    ActiveClean { end_position: u64 },
    /// The last segment after a crash: validate from the index checkpoint, cut a torn tail.
    ActiveUnclean,
}

/// What recovery did to a segment, for logs and reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub frames_scanned: u64,
    pub used_index_checkpoint: bool,
    pub rebuilt_index: bool,
    /// Set when a torn tail was cut: (position, reason).
    pub truncated_at: Option<(u64, String)>,
}

/// One of the shard's [`ZERO_WRITES_PER_SHARD_MAX`] zero-write slots, given back when dropped,
/// whatever becomes of the write.
#[derive(Debug)]
struct ZeroSlot;

impl ZeroSlot {
    fn take() -> ZeroSlot {
        let in_flight = ZERO_WRITES_IN_FLIGHT.get() + 1;
        ZERO_WRITES_IN_FLIGHT.set(in_flight);
        ZERO_WRITES_IN_FLIGHT_PEAK.set(ZERO_WRITES_IN_FLIGHT_PEAK.get().max(in_flight));
        ZeroSlot
    }
}

impl Drop for ZeroSlot {
    fn drop(&mut self) {
        ZERO_WRITES_IN_FLIGHT.set(ZERO_WRITES_IN_FLIGHT.get() - 1);
    }
}

/// The most zero writes this thread's shard ever had in flight at once (at most
/// [`ZERO_WRITES_PER_SHARD_MAX`]).
pub fn zero_writes_in_flight_peak() -> usize {
    ZERO_WRITES_IN_FLIGHT_PEAK.get()
}

/// The zeroed space ahead of a segment's appends, shared by the segment and the background
/// task writing the zeroes. Owned by the partition's shard.
///
/// Why: fallocate reserves space as unwritten extents. On ext4 each direct write into them
/// converts extents at completion, and the fdatasync after it must also write the inode: the
/// raw benchmark measures 261 us per fdatasync after a 16 KiB write into unwritten space
/// against 111 us over written blocks, and the write itself is punted to an io-wq thread. The
/// same idea as PostgreSQL's `wal_init_zero`, but ahead of the writer instead of at file
/// creation, so a new segment costs nothing until it is busy.
///
/// Safety: a zero write must never land on data. Zeroes are only written at or past the padded
/// end of the last completed data write (positions the log has not written yet), and a data
/// write that would reach into the range being zeroed waits for that zero write first
/// ([`Segment::zero_overlap`]). Zeroes never go past the allocated length (so never past the
/// file's size), and everything that shrinks the file (seal, truncate, close) stops the runway
/// and waits for the write in flight first ([`Runway::stop`]).
#[derive(Default)]
pub struct Runway {
    /// Positions below this hold data or zeroes written by the log (initialized extents), as
    /// far as the runway knows.
    zeroed_to: Cell<u64>,
    /// The range a zero write is writing now.
    in_flight: Cell<Option<(u64, u64)>>,
    /// No more zero writes: the segment is being sealed, cut or closed, or a zero write failed.
    stopped: Cell<bool>,
    /// Notified when a zero write ends.
    done: Event,
}

impl Runway {
    /// Stops zeroing and waits for the zero write in flight, if any, to end.
    pub async fn stop(&self) {
        self.stopped.set(true);
        loop {
            if self.in_flight.get().is_none() {
                return;
            }
            let listener = self.done.listen();
            if self.in_flight.get().is_none() {
                return;
            }
            listener.await;
        }
    }

    /// Zeroes may be written again, from `written_to` on (after a truncation cut the file
    /// there).
    fn restart(&self, written_to: u64) {
        assert!(self.in_flight.get().is_none(), "runway restarted mid-write");
        self.zeroed_to
            .set(self.zeroed_to.get().min(align_down(written_to)));
        self.stopped.set(false);
    }
}

/// A zero write planned by [`Segment::runway_job`]; run it in the background.
pub struct ZeroJob {
    file: File,
    start: u64,
    end: u64,
    runway: Rc<Runway>,
    slot: ZeroSlot,
}

impl ZeroJob {
    /// Writes the zeroes and reports to the runway. A failed zero write only stops the runway:
    /// no data depends on it, and a failing disk fails the next data write on its own.
    pub async fn run(self) {
        let ZeroJob {
            file,
            start,
            end,
            runway,
            slot,
        } = self;
        let written = file.write_zeroes_at(start, (end - start) as usize).await;
        // Let go of the file before anyone waiting for this write can close it.
        drop(file);
        match written {
            Ok(()) => runway.zeroed_to.set(runway.zeroed_to.get().max(end)),
            Err(error) => {
                tracing::warn!(%error, "zeroing ahead of appends failed; no more zeroing here");
                runway.stopped.set(true);
            }
        }
        drop(slot);
        runway.in_flight.set(None);
        runway.done.notify(usize::MAX);
    }
}

/// One segment. Owned by the partition's shard.
pub struct Segment {
    pub base_offset: i64,
    log_path: PathBuf,
    index_path: PathBuf,
    file: File,
    /// End of the frames appended so far.
    end_position: u64,
    /// End of the frames handed to the disk by a completed write.
    written_position: u64,
    /// End of the frames known durable.
    synced_position: u64,
    /// Bytes reserved on disk (the file's length while active).
    allocated_bytes: u64,
    /// How much to reserve at a time: [`FALLOCATE_STEP_BYTES`], or less for small segments.
    allocation_step_bytes: u64,
    /// `segment.bytes` rounded up to a block: the segment rolls there, so neither the
    /// allocation ahead of the runway nor the zeroing goes further.
    segment_bytes_max: u64,
    runway: Rc<Runway>,
    /// [`ZERO_AFTER_BYTES`] and [`ZERO_CHUNK_BYTES`], scaled down for segments too small for
    /// them (a quarter and an eighth of the segment, at least a block), so that small test
    /// segments run the same zeroing as real ones.
    zero_after_bytes: u64,
    zero_chunk_bytes: u64,
    /// Running average of the bytes each flush wrote (see [`ZERO_FLUSH_BYTES_MAX`]).
    flush_bytes_average: u64,
    /// Frames from `tail_start` (block-aligned) to `end_position`, not yet wholly written.
    tail_start: u64,
    tail: Vec<u8>,
    next_offset: i64,
    max_timestamp: i64,
    offset_of_max_timestamp: i64,
    /// Wall-clock time of the first append (or of reopening a non-empty segment), for
    /// `segment.ms`. Record timestamps are not used: a producer replaying old data would
    /// otherwise roll a segment per batch.
    first_append_ms: Option<i64>,
    index: SegmentIndex,
    sealed: bool,
}

/// A write planned by [`Segment::flush_job`]: run it, then report back with
/// [`Segment::on_written`] and, after fdatasync, [`Segment::on_synced`].
pub struct FlushJob {
    pub file: File,
    pub position: u64,
    /// The frames from `position`, padded to a block; taken by [`FlushJob::write`].
    data: Option<IoBuffer>,
    /// Bytes written (`data`'s length).
    pub len: u64,
    pub end_position: u64,
    /// Reserve the file up to this size before writing.
    pub allocate_to: Option<u64>,
}

impl FlushJob {
    /// Runs the write; a job is written once.
    pub async fn write(&mut self) -> Result<()> {
        if let Some(size) = self.allocate_to {
            self.file.pre_allocate(size).await?;
        }
        let data = self.data.take().expect("a flush job is written once");
        self.file.write_buffer_at(data, self.position).await
    }
}

/// A read planned by [`Segment::read_plan`]: part from the file, part copied from the tail.
pub struct ReadPlan {
    file: File,
    disk: Option<(u64, usize)>,
    tail: Bytes,
}

impl ReadPlan {
    pub async fn execute(self) -> Result<Bytes> {
        let Some((position, len)) = self.disk else {
            return Ok(self.tail);
        };
        let from_disk = self.file.read_at(position, len).await?;
        if self.tail.is_empty() {
            return Ok(from_disk);
        }
        let mut joined = Vec::with_capacity(from_disk.len() + self.tail.len());
        joined.extend_from_slice(&from_disk);
        joined.extend_from_slice(&self.tail);
        Ok(Bytes::from(joined))
    }
}

impl Segment {
    /// Creates a new, empty active segment and makes its directory entry durable.
    pub async fn create(
        storage: &Storage,
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u64,
        segment_bytes: u64,
    ) -> Result<Segment> {
        let allocation_step_bytes = allocation_step(segment_bytes);
        let log_path = dir.join(log_file_name(base_offset));
        let index_path = dir.join(index_file_name(base_offset));
        if storage.exists(&index_path).await {
            storage.remove_file(&index_path).await?;
        }
        let file = storage.open(&log_path, OpenMode::Create).await?;
        file.truncate(0).await?;
        file.pre_allocate(allocation_step_bytes).await?;
        storage.sync_dir(dir).await?;
        Ok(Segment::empty(
            base_offset,
            log_path,
            index_path,
            file,
            index_interval_bytes,
            segment_bytes,
            allocation_step_bytes,
        ))
    }

    /// A segment with no frames over `file`, which has `allocated_bytes` reserved.
    fn empty(
        base_offset: i64,
        log_path: PathBuf,
        index_path: PathBuf,
        file: File,
        index_interval_bytes: u64,
        segment_bytes: u64,
        allocated_bytes: u64,
    ) -> Segment {
        Segment {
            base_offset,
            log_path,
            index_path,
            file,
            end_position: 0,
            written_position: 0,
            synced_position: 0,
            allocated_bytes,
            allocation_step_bytes: allocation_step(segment_bytes),
            segment_bytes_max: align_up(segment_bytes),
            runway: Rc::new(Runway::default()),
            zero_after_bytes: ZERO_AFTER_BYTES
                .min(align_up(segment_bytes / 4))
                .max(DMA_ALIGNMENT_BYTES),
            zero_chunk_bytes: ZERO_CHUNK_BYTES
                .min(align_up(segment_bytes / 8))
                .max(DMA_ALIGNMENT_BYTES),
            flush_bytes_average: 0,
            tail_start: 0,
            tail: Vec::new(),
            next_offset: base_offset,
            max_timestamp: i64::MIN,
            offset_of_max_timestamp: base_offset,
            first_append_ms: None,
            index: SegmentIndex::new(index_interval_bytes),
            sealed: false,
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn index_path(&self) -> &Path {
        &self.index_path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Gives up the segment, returning its file so the caller can close it explicitly.
    pub fn into_file(self) -> File {
        self.file
    }

    pub fn end_position(&self) -> u64 {
        self.end_position
    }

    pub fn synced_position(&self) -> u64 {
        self.synced_position
    }

    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    pub fn offset_of_max_timestamp(&self) -> i64 {
        self.offset_of_max_timestamp
    }

    pub fn first_append_ms(&self) -> Option<i64> {
        self.first_append_ms
    }

    pub fn is_empty(&self) -> bool {
        self.end_position == 0
    }

    pub fn is_sealed(&self) -> bool {
        self.sealed
    }

    pub fn index(&self) -> &SegmentIndex {
        &self.index
    }

    /// Bytes of tail buffer waiting to be written (for the log's buffer cap).
    pub fn unwritten_bytes(&self) -> u64 {
        self.end_position - self.written_position
    }

    /// Appends one frame to the tail buffer and the index. No I/O.
    pub fn append(&mut self, mut header: FrameHeader, batch: &[u8]) -> u64 {
        assert!(!self.sealed, "append to a sealed segment");
        assert_eq!(
            header.base_offset, self.next_offset,
            "frames must be contiguous"
        );
        assert_eq!(header.payload_bytes as usize, batch.len());
        header.synced_position = u32::try_from(self.synced_position).unwrap_or(u32::MAX);
        let position = self.end_position;
        let frame_bytes = frame_bytes_for(batch.len());
        self.tail.extend_from_slice(&header.encode());
        self.tail.extend_from_slice(batch);
        self.tail.resize(
            self.tail.len() + frame_bytes - FRAME_HEADER_BYTES - batch.len(),
            0,
        );
        self.end_position += frame_bytes as u64;
        debug_assert_eq!(self.tail_start + self.tail.len() as u64, self.end_position);
        self.record_frame(&header, position);
        position
    }

    fn record_frame(&mut self, header: &FrameHeader, position: u64) {
        let relative = u32::try_from(header.base_offset - self.base_offset).unwrap_or(u32::MAX);
        self.index.on_append(
            relative,
            position,
            header.frame_bytes(),
            header.max_timestamp,
        );
        self.next_offset = header.last_offset() + 1;
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max_timestamp = header.last_offset();
        }
        if self.first_append_ms.is_none() {
            self.first_append_ms = Some(crate::log::now_ms());
        }
    }

    /// Plans writing everything appended but not yet written. `None` when there is nothing.
    pub fn flush_job(&self) -> Option<FlushJob> {
        if self.written_position == self.end_position {
            return None;
        }
        let padded_len = align_up(self.tail.len() as u64) as usize;
        // Straight into the write's buffer: the tail is copied once per flush.
        let mut data = self.file.alloc_buffer(padded_len);
        let (frames, padding) = data.as_mut_slice().split_at_mut(self.tail.len());
        frames.copy_from_slice(&self.tail);
        padding.fill(0);
        let needed = self.tail_start + padded_len as u64;
        // Reserve the next step while the runway can still reach into it, so zeroing never
        // waits for the data to hit the end of the reserved space.
        let wanted = needed
            .saturating_add(ZERO_RUNWAY_BYTES_MAX)
            .min(self.segment_bytes_max)
            .max(needed);
        let allocate_to =
            (wanted > self.allocated_bytes).then(|| align_up(wanted) + self.allocation_step_bytes);
        Some(FlushJob {
            file: self.file.clone(),
            position: self.tail_start,
            data: Some(data),
            len: padded_len as u64,
            end_position: self.end_position,
            allocate_to,
        })
    }

    /// A planned write completed: drop the blocks that are now wholly on disk from the buffer.
    pub fn on_written(&mut self, job: &FlushJob) {
        if let Some(size) = job.allocate_to {
            self.allocated_bytes = self.allocated_bytes.max(size);
        }
        self.written_position = self.written_position.max(job.end_position);
        let flushed = job.len;
        self.flush_bytes_average = if self.flush_bytes_average == 0 {
            flushed
        } else {
            self.flush_bytes_average - (self.flush_bytes_average >> FLUSH_AVERAGE_WEIGHT_SHIFT)
                + (flushed >> FLUSH_AVERAGE_WEIGHT_SHIFT)
        };
        let new_start = align_down(job.end_position);
        if new_start > self.tail_start {
            let drained = (new_start - self.tail_start) as usize;
            self.tail.drain(..drained);
            self.tail_start = new_start;
        }
    }

    /// An fdatasync that followed the write of everything up to `end_position` completed.
    pub fn on_synced(&mut self, end_position: u64) {
        self.synced_position = self.synced_position.max(end_position);
    }

    /// The segment's runway, to stop it before the file is sealed, cut or closed.
    pub fn runway(&self) -> Rc<Runway> {
        Rc::clone(&self.runway)
    }

    /// Plans the next zero write, if the runway past the last data write is short and no zero
    /// write is running. Call after [`Segment::on_written`].
    pub fn runway_job(&self) -> Option<ZeroJob> {
        let runway = &self.runway;
        if self.sealed || runway.stopped.get() || runway.in_flight.get().is_some() {
            return None;
        }
        let written_to = align_up(self.written_position);
        if written_to < self.zero_after_bytes || self.flush_bytes_average >= ZERO_FLUSH_BYTES_MAX {
            return None;
        }
        // Zero a whole chunk once less than half the wanted runway is left, so each zero write
        // converts extents once for a MiB of appends rather than once per flush.
        let wanted = ZERO_RUNWAY_BYTES_MAX.min(written_to);
        let start = runway.zeroed_to.get().max(written_to);
        if start - written_to >= wanted / 2 {
            return None;
        }
        let end = (start + self.zero_chunk_bytes)
            .min(align_down(self.allocated_bytes))
            .min(self.segment_bytes_max);
        if end <= start || ZERO_WRITES_IN_FLIGHT.get() >= ZERO_WRITES_PER_SHARD_MAX {
            return None;
        }
        let slot = ZeroSlot::take();
        runway.in_flight.set(Some((start, end)));
        Some(ZeroJob {
            file: self.file.clone(),
            start,
            end,
            runway: Rc::clone(runway),
            slot,
        })
    }

    /// How far past the written data the zeroed runway reaches now.
    pub fn zeroed_ahead_bytes(&self) -> u64 {
        self.runway
            .zeroed_to
            .get()
            .saturating_sub(align_up(self.written_position))
    }

    /// A listener to wait on before writing `[position, end)`, if a zero write in flight
    /// overlaps it; check again after it fires.
    pub fn zero_overlap(&self, position: u64, end: u64) -> Option<EventListener> {
        let (start, stop) = self.runway.in_flight.get()?;
        (position < stop && start < end).then(|| self.runway.done.listen())
    }

    /// Plans reading `[position, position + len)` clipped to the frames appended.
    pub fn read_plan(&self, position: u64, len: usize) -> ReadPlan {
        let end = (position + len as u64).min(self.end_position);
        let position = position.min(end);
        let disk_end = end.min(self.tail_start);
        let disk = (disk_end > position).then(|| (position, (disk_end - position) as usize));
        let tail_from = position.max(self.tail_start);
        let tail = if end > tail_from {
            let start = (tail_from - self.tail_start) as usize;
            let stop = (end - self.tail_start) as usize;
            Bytes::copy_from_slice(&self.tail[start..stop])
        } else {
            Bytes::new()
        };
        ReadPlan {
            file: self.file.clone(),
            disk,
            tail,
        }
    }

    /// The index checkpoint describing the synced part of this segment.
    pub fn checkpoint(&self) -> Option<(Vec<u8>, IndexCheckpoint)> {
        if self.synced_position != self.end_position {
            return None;
        }
        let checkpoint = IndexCheckpoint {
            covered_position: self.end_position,
            next_offset: self.next_offset,
            max_timestamp: self.max_timestamp,
            offset_of_max_timestamp: self.offset_of_max_timestamp,
        };
        Some((self.index.encode(&checkpoint), checkpoint))
    }

    /// Seals a fully synced segment: trims its preallocated space and writes its index file.
    /// The caller must have synced everything (`synced_position == end_position`).
    pub async fn seal_files(
        storage: &Storage,
        file: &File,
        index_path: &Path,
        index_bytes: &[u8],
        end_position: u64,
    ) -> Result<()> {
        file.truncate(end_position).await?;
        file.fdatasync().await?;
        storage.write_file_atomic(index_path, index_bytes).await
    }

    pub fn mark_sealed(&mut self) {
        assert_eq!(
            self.synced_position, self.end_position,
            "sealing unsynced segment"
        );
        assert!(
            self.runway.in_flight.get().is_none(),
            "sealing a segment with a zero write in flight"
        );
        self.runway.stopped.set(true);
        self.sealed = true;
        self.allocated_bytes = self.end_position;
        self.tail = Vec::new();
        self.tail_start = self.end_position;
    }

    /// Makes a sealed segment active again (after a truncation made it the last one).
    pub async fn reopen_for_append(&mut self) -> Result<()> {
        self.sealed = false;
        self.load_tail().await
    }

    async fn load_tail(&mut self) -> Result<()> {
        self.tail_start = align_down(self.end_position);
        let len = (self.end_position - self.tail_start) as usize;
        let bytes = self.file.read_at(self.tail_start, len).await?;
        if bytes.len() != len {
            return Err(Error::Corrupt {
                path: self.log_path.clone(),
                position: self.tail_start,
                reason: format!("tail block: read {} of {len} bytes", bytes.len()),
            });
        }
        self.tail = bytes.to_vec();
        self.written_position = self.end_position;
        self.synced_position = self.end_position;
        Ok(())
    }

    /// Cuts the segment so its last frame is the one before `position` (a frame boundary):
    /// the file is truncated and synced, so stale frames can never be read back.
    pub async fn truncate_to_position(&mut self, position: u64, next_offset: i64) -> Result<()> {
        assert!(position <= self.end_position);
        self.runway.stop().await;
        self.file.truncate(position).await?;
        self.file.fdatasync().await?;
        self.runway.restart(position);
        self.allocated_bytes = position;
        self.end_position = position;
        self.next_offset = next_offset;
        self.index.truncate_to_position(position);
        self.rescan_stats().await?;
        self.load_tail().await
    }

    /// Recomputes timestamps and index entries after a truncation by rereading the frames
    /// past the last index entry that survived.
    async fn rescan_stats(&mut self) -> Result<()> {
        let start = self
            .index
            .entries()
            .last()
            .map_or(0, |entry| u64::from(entry.position));
        self.index.truncate_to_position(start);
        self.max_timestamp = self
            .index
            .entries()
            .last()
            .map_or(i64::MIN, |e| e.max_timestamp_before);
        let mut offset_of_max = self.base_offset;
        let mut reader = ChunkReader::new(self.file.clone(), self.end_position);
        let mut position = start;
        while position < self.end_position {
            let header = match read_valid_frame(&mut reader, position, None).await? {
                Ok((header, _)) => header,
                Err(reason) => {
                    return Err(Error::Corrupt {
                        path: self.log_path.clone(),
                        position,
                        reason,
                    })
                }
            };
            let relative = u32::try_from(header.base_offset - self.base_offset).unwrap_or(u32::MAX);
            self.index.on_append(
                relative,
                position,
                header.frame_bytes(),
                header.max_timestamp,
            );
            if header.max_timestamp > self.max_timestamp {
                self.max_timestamp = header.max_timestamp;
                offset_of_max = header.last_offset();
            }
            position += header.frame_bytes();
        }
        self.offset_of_max_timestamp = offset_of_max;
        if self.end_position == 0 {
            self.first_append_ms = None;
        }
        Ok(())
    }

    /// Reopens an existing segment file; see [`OpenKind`] for what is validated.
    pub async fn open(
        storage: &Storage,
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u64,
        segment_bytes: u64,
        kind: OpenKind,
    ) -> Result<(Segment, RecoveryReport)> {
        let log_path = dir.join(log_file_name(base_offset));
        let index_path = dir.join(index_file_name(base_offset));
        let file = storage.open(&log_path, OpenMode::ReadWrite).await?;
        let file_size = file.size().await?;
        let mut report = RecoveryReport::default();
        let checkpoint = match storage.read_file(&index_path).await {
            Ok(Some(bytes)) => SegmentIndex::decode(&bytes, index_interval_bytes)
                .ok()
                .filter(|(_, checkpoint)| checkpoint.covered_position <= file_size),
            _ => None,
        };
        let mut segment = Segment::empty(
            base_offset,
            log_path,
            index_path,
            file,
            index_interval_bytes,
            segment_bytes,
            file_size,
        );
        // Where the frames are known to end, if anything recorded it.
        let known_end = match kind {
            OpenKind::Sealed => Some(file_size),
            OpenKind::ActiveClean { end_position } => Some(end_position),
            OpenKind::ActiveUnclean => None,
        };
        let mut start = 0;
        if let Some((index, checkpoint)) = checkpoint {
            let usable = match known_end {
                Some(end) => checkpoint.covered_position == end,
                None => true,
            } && checkpoint_matches_log(
                &file_for_check(&segment),
                &index,
                &checkpoint,
                base_offset,
            )
            .await?;
            if usable {
                segment.index = index;
                segment.end_position = checkpoint.covered_position;
                segment.next_offset = checkpoint.next_offset;
                segment.max_timestamp = checkpoint.max_timestamp;
                segment.offset_of_max_timestamp = checkpoint.offset_of_max_timestamp;
                start = checkpoint.covered_position;
                report.used_index_checkpoint = true;
            }
        }
        if !report.used_index_checkpoint {
            report.rebuilt_index = true;
        }
        let scan_limit = known_end.unwrap_or(file_size);
        if start < scan_limit {
            segment
                .scan_from(start, scan_limit, known_end.is_some(), &mut report)
                .await?;
        }
        if segment.end_position > 0 && segment.first_append_ms.is_none() {
            segment.first_append_ms = Some(crate::log::now_ms());
        }
        segment.written_position = segment.end_position;
        segment.synced_position = segment.end_position;
        if kind == OpenKind::Sealed {
            segment.sealed = true;
            segment.tail_start = segment.end_position;
        } else {
            segment.load_tail().await?;
        }
        Ok((segment, report))
    }

    /// Validates frames from `start` up to `limit`. With `strict`, any invalid frame before
    /// `limit` is corruption. Otherwise the first invalid frame ends the log unless a valid
    /// frame further on proves the damaged one had been synced (see `classify_damage`).
    async fn scan_from(
        &mut self,
        start: u64,
        limit: u64,
        strict: bool,
        report: &mut RecoveryReport,
    ) -> Result<()> {
        let mut reader = ChunkReader::new(self.file.clone(), limit);
        let mut position = start;
        self.end_position = start;
        while position < limit {
            match read_valid_frame(&mut reader, position, Some(self.next_offset)).await? {
                Ok((header, _payload)) => {
                    report.frames_scanned += 1;
                    self.record_frame(&header, position);
                    position += header.frame_bytes();
                    self.end_position = position;
                }
                Err(reason) => {
                    if strict {
                        return Err(Error::Corrupt {
                            path: self.log_path.clone(),
                            position,
                            reason,
                        });
                    }
                    if let Some(proof) = classify_damage(&mut reader, position, limit).await? {
                        return Err(Error::Corrupt {
                            path: self.log_path.clone(),
                            position,
                            reason: format!("{reason}; {proof}"),
                        });
                    }
                    if reason != "end of data" {
                        report.truncated_at = Some((position, reason));
                    }
                    break;
                }
            }
        }
        if !strict && (report.truncated_at.is_some() || self.end_position < limit) {
            // Cut the file at the last valid frame so no stale bytes survive to be misread later.
            self.file.truncate(self.end_position).await?;
            self.file.fdatasync().await?;
            self.allocated_bytes = self.end_position;
        }
        Ok(())
    }

    /// Removes this segment's files.
    pub async fn delete_files(storage: &Storage, log_path: &Path, index_path: &Path) -> Result<()> {
        storage.remove_file(log_path).await?;
        if storage.exists(index_path).await {
            storage.remove_file(index_path).await?;
        }
        Ok(())
    }
}

fn file_for_check(segment: &Segment) -> File {
    segment.file.clone()
}

/// A checkpoint is trusted only if the frames from its last index entry up to its covered
/// position are valid and end exactly at its `next_offset`: cheap (at most one index interval
/// of reading) and it catches a checkpoint left over from before a truncation.
async fn checkpoint_matches_log(
    file: &File,
    index: &SegmentIndex,
    checkpoint: &IndexCheckpoint,
    base_offset: i64,
) -> Result<bool> {
    let (mut position, mut expected) = match index.entries().last() {
        Some(entry) => (
            u64::from(entry.position),
            base_offset + i64::from(entry.relative_offset),
        ),
        None => (0, base_offset),
    };
    let mut reader = ChunkReader::new(file.clone(), checkpoint.covered_position);
    while position < checkpoint.covered_position {
        match read_valid_frame(&mut reader, position, Some(expected)).await? {
            Ok((header, _)) => {
                position += header.frame_bytes();
                expected = header.last_offset() + 1;
            }
            Err(_) => return Ok(false),
        }
    }
    Ok(position == checkpoint.covered_position && expected == checkpoint.next_offset)
}

/// After an invalid frame at `damaged_at`, looks for a valid frame further on whose
/// `synced_position` lies past the damage: that frame was appended after the damaged bytes had
/// been synced, so they were acknowledged data and the damage is corruption. Valid frames that
/// do not prove this were part of the same unsynced write as the damage (a torn write lands its
/// blocks in any order) and are discarded with it. Returns the proof, if any.
async fn classify_damage(
    reader: &mut ChunkReader,
    damaged_at: u64,
    limit: u64,
) -> Result<Option<String>> {
    let from = damaged_at + FRAME_ALIGNMENT_BYTES as u64;
    let proof = find_valid_frame(reader, from, limit, |header| {
        u64::from(header.synced_position) > damaged_at
    })
    .await?;
    Ok(proof.map(|(position, header)| {
        format!(
            "a valid frame at position {position} (offset {}) was appended after position \
             {damaged_at} had been synced",
            header.base_offset
        )
    }))
}

/// The first valid frame at or after `from` (8-byte aligned positions, below `limit`) whose
/// header `accept`s. Scans chunk by chunk, probing the frame magic directly on each chunk, so
/// searching megabytes of preallocated zeros stays cheap. Used by recovery and by
/// `ringlog log verify`.
pub async fn find_valid_frame(
    reader: &mut ChunkReader,
    from: u64,
    limit: u64,
    accept: impl Fn(&FrameHeader) -> bool,
) -> Result<Option<(u64, FrameHeader)>> {
    let magic = FRAME_MAGIC.to_le_bytes();
    let mut chunk_start = from.next_multiple_of(FRAME_ALIGNMENT_BYTES as u64);
    while chunk_start + FRAME_HEADER_BYTES as u64 <= limit {
        let chunk_len = (SCAN_CHUNK_BYTES as u64).min(limit - chunk_start) as usize;
        let Some(chunk) = reader.get(chunk_start, chunk_len).await? else {
            break;
        };
        let candidates: Vec<u64> = chunk
            .chunks_exact(FRAME_ALIGNMENT_BYTES)
            .enumerate()
            .filter(|(_, word)| word[..4] == magic)
            .map(|(index, _)| chunk_start + (index * FRAME_ALIGNMENT_BYTES) as u64)
            .collect();
        for position in candidates {
            if let Ok((header, _)) = read_valid_frame(reader, position, None).await? {
                if accept(&header) {
                    return Ok(Some((position, header)));
                }
            }
        }
        chunk_start += chunk_len as u64;
    }
    Ok(None)
}

/// Reads a frame at `position` and checks it completely: header checksum, payload present,
/// the batch's CRC-32C, and the header and batch agreeing. `expected_offset` checks contiguity.
/// The outer result is an I/O failure; the inner error says why the bytes are not a valid frame
/// ("end of data" for a zeroed header or the end of the file).
pub async fn read_valid_frame(
    reader: &mut ChunkReader,
    position: u64,
    expected_offset: Option<i64>,
) -> Result<std::result::Result<(FrameHeader, Bytes), String>> {
    let Some(header_bytes) = reader.get(position, FRAME_HEADER_BYTES).await? else {
        return Ok(Err(if reader.remaining_from(position) == 0 {
            "end of data".to_string()
        } else {
            "truncated frame header".to_string()
        }));
    };
    let header = match FrameHeader::decode(&header_bytes) {
        Ok(header) => header,
        Err(FrameError::Zeroed) => return Ok(Err("end of data".to_string())),
        Err(error) => return Ok(Err(format!("invalid frame header: {error:?}"))),
    };
    let payload_at = position + FRAME_HEADER_BYTES as u64;
    let Some(payload) = reader
        .get(payload_at, header.payload_bytes as usize)
        .await?
    else {
        return Ok(Err(format!(
            "truncated payload of {} bytes",
            header.payload_bytes
        )));
    };
    Ok(check_payload(&header, &payload, expected_offset).map(|()| (header, payload)))
}

/// Checks a frame's payload against its header (the part of validation that needs the batch).
pub fn check_payload(
    header: &FrameHeader,
    payload: &[u8],
    expected_offset: Option<i64>,
) -> std::result::Result<(), String> {
    let info = BatchInfo::parse(payload).map_err(|error| error.to_string())?;
    if info.total_bytes() != payload.len() {
        return Err(format!(
            "batch length {} does not match frame payload {}",
            info.total_bytes(),
            payload.len()
        ));
    }
    let computed = crate::format::batch_crc(payload);
    if computed != info.crc || computed != header.batch_crc {
        return Err(format!(
            "batch CRC-32C mismatch: batch says {:#010x}, header says {:#010x}, data gives {computed:#010x}",
            info.crc, header.batch_crc
        ));
    }
    if info.base_offset != header.base_offset || info.last_offset_delta != header.last_offset_delta
    {
        return Err("frame header and batch disagree on offsets".to_string());
    }
    if let Some(expected) = expected_offset {
        if header.base_offset != expected {
            return Err(format!(
                "offset {} where {expected} was expected",
                header.base_offset
            ));
        }
    }
    if header.version != FRAME_VERSION {
        return Err(format!("frame version {}", header.version));
    }
    Ok(())
}

/// Reads a file sequentially in [`SCAN_CHUNK_BYTES`] chunks, serving slices of the current
/// chunk. Used by recovery and by `ringlog log dump/verify`.
pub struct ChunkReader {
    file: File,
    limit: u64,
    chunk_start: u64,
    chunk: Bytes,
}

impl ChunkReader {
    pub fn new(file: File, limit: u64) -> Self {
        ChunkReader {
            file,
            limit,
            chunk_start: 0,
            chunk: Bytes::new(),
        }
    }

    fn remaining_from(&self, position: u64) -> u64 {
        self.limit.saturating_sub(position)
    }

    /// `len` bytes at `position`, or `None` if they extend past the limit.
    pub async fn get(&mut self, position: u64, len: usize) -> Result<Option<Bytes>> {
        let end = position + len as u64;
        if end > self.limit {
            return Ok(None);
        }
        let chunk_end = self.chunk_start + self.chunk.len() as u64;
        if position < self.chunk_start || end > chunk_end {
            let want = len
                .max(SCAN_CHUNK_BYTES)
                .min((self.limit - position) as usize);
            self.chunk = self.file.read_at(position, want).await?;
            self.chunk_start = position;
            if (self.chunk.len() as u64) < len as u64 {
                return Ok(None);
            }
        }
        let from = (position - self.chunk_start) as usize;
        Ok(Some(self.chunk.slice(from..from + len)))
    }
}
