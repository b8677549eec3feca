//! Crash-recovery scenarios for a partition log, each damaging the files the way a crash or the
//! media would and asserting the documented outcome: a torn or zeroed tail is cut, corruption of
//! data that had been synced is reported (never skipped or silently truncated), a missing or
//! damaged index is rebuilt, and a full disk poisons the log without losing acknowledged data.
//!
//! All but the disk-full scenario run on the real disk (glommio direct I/O in a temp dir); the
//! disk-full one needs the seeded fault layer to have a disk that fills up. Every scenario prints
//! a one-line summary of what happened so `--nocapture` output can be quoted in reports.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use ringlog_engine::config::LogConfig;
use ringlog_engine::format::{
    build_batch, patch_batch, validate_batch, FrameHeader, FRAME_HEADER_BYTES,
};
use ringlog_engine::log::{now_ms, LogOptions, LogRecovery, PartitionLog, ReadLimit};
use ringlog_engine::rt::{fs::Storage, sim::FaultConfig, sim::SimDisk};
use ringlog_engine::segment::parse_log_file_name;
use ringlog_engine::{Error, TopicPartition};

/// Small segments so a few dozen kilobyte-sized batches make several sealed segments.
const SMALL_SEGMENT_BYTES: u64 = 16 * 1024;

/// The leader epoch every scenario appends with; reads must return it patched into the batch.
const LEADER_EPOCH: i32 = 7;

/// Batch `i` gets timestamp `base_timestamp_ms() + i * TIMESTAMP_STEP_MS`, so lookups by time
/// have a known answer.
const TIMESTAMP_STEP_MS: i64 = 10;

/// The timestamp of batch 0: the time the test process started. Timestamps must be recent: the
/// log rolls a segment whose first batch is older than `segment.ms` (7 days), as Kafka does.
fn base_timestamp_ms() -> i64 {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *BASE.get_or_init(now_ms)
}

/// The partition directory name used by every scenario (Kafka's `<topic>-<partition>`).
const PARTITION_DIR: &str = "t-0";

/// A scenario that has not finished after this long is stuck, not slow: each takes a few
/// seconds at most, even on a loaded two-core machine.
const SCENARIO_TIME_LIMIT: Duration = Duration::from_secs(120);

/// [`common::block_on_bounded`] with this file's time limit.
fn block_on_bounded<Make, Fut, T>(make: Make) -> T
where
    Make: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    common::block_on_bounded(SCENARIO_TIME_LIMIT, make)
}

/// A batch that was acknowledged, as the log must return it: with its offset and the leader
/// epoch patched in.
#[derive(Clone)]
struct Acked {
    offset: i64,
    timestamp: i64,
    records: i64,
    bytes: Bytes,
}

fn options(storage: Storage, root: &Path, config: &LogConfig) -> LogOptions {
    LogOptions {
        storage,
        dir: root.join(PARTITION_DIR),
        topic_partition: TopicPartition::new("t", 0),
        config: config.clone(),
        cache: None,
        auto_high_watermark: true,
        metrics: None,
    }
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: SMALL_SEGMENT_BYTES,
        ..LogConfig::default()
    }
}

/// Batch `index` of a scenario: one or two records, with a value size that varies with the
/// index (100 bytes to ~2 KiB) so frames have different lengths and paddings.
fn batch_for(index: usize, value_bytes: usize) -> (Bytes, i64) {
    let timestamp = base_timestamp_ms() + index as i64 * TIMESTAMP_STEP_MS;
    let value: Vec<u8> = (0..value_bytes)
        .map(|byte| (byte * 31 + index * 7) as u8)
        .collect();
    let key = format!("key-{index}");
    // Every third batch holds two records, so offsets and batch counts differ.
    let batch = match index % 3 {
        0 => build_batch(
            timestamp,
            &[
                (Some(key.as_bytes()), Some(&value)),
                (None, Some(b"second")),
            ],
        ),
        _ => build_batch(timestamp, &[(Some(key.as_bytes()), Some(&value))]),
    };
    (batch, timestamp)
}

fn varied_size(index: usize) -> usize {
    100 + (index * 397) % 1900
}

/// Appends `count` batches numbered from `first_index`, awaiting each (so each is synced before
/// the next is appended), and returns them as acknowledged.
async fn append_batches(
    log: &PartitionLog,
    first_index: usize,
    count: usize,
    size: impl Fn(usize) -> usize,
) -> Vec<Acked> {
    let mut acked = Vec::with_capacity(count);
    for index in first_index..first_index + count {
        let (batch, timestamp) = batch_for(index, size(index));
        let result = log.append(&batch, LEADER_EPOCH).await.expect("append");
        let bytes = patch_batch(&batch, result.base_offset, LEADER_EPOCH).freeze();
        acked.push(Acked {
            offset: result.base_offset,
            timestamp,
            records: result.record_count,
            bytes,
        });
    }
    acked
}

/// Reads each acknowledged batch at its offset and checks it is byte-identical.
async fn assert_reads_back(log: &PartitionLog, acked: &[Acked]) {
    for batch in acked {
        let read = log
            .read(batch.offset, 1, ReadLimit::LogEnd)
            .await
            .expect("read acked batch");
        let first = read
            .batches
            .first()
            .expect("a batch at an acknowledged offset");
        assert_eq!(
            first, &batch.bytes,
            "batch at offset {} differs",
            batch.offset
        );
    }
}

/// Reads the whole log in order and checks every batch is valid and the offsets contiguous.
/// Returns the number of batches.
async fn assert_whole_log_valid(log: &PartitionLog) -> usize {
    let mut offset = log.log_start_offset();
    let mut count = 0;
    while offset < log.log_end_offset() {
        let read = log
            .read(offset, 256 * 1024, ReadLimit::LogEnd)
            .await
            .expect("read");
        assert!(!read.batches.is_empty(), "no batch at offset {offset}");
        for batch in &read.batches {
            let info = validate_batch(batch).expect("every batch read back is valid");
            assert_eq!(info.base_offset, offset, "offsets are contiguous");
            offset += i64::from(info.records_count);
            count += 1;
        }
    }
    count
}

/// The segment files of the partition, oldest first: (base offset, path).
fn segment_files(root: &Path) -> Vec<(i64, PathBuf)> {
    let dir = root.join(PARTITION_DIR);
    let mut segments: Vec<(i64, PathBuf)> = std::fs::read_dir(&dir)
        .expect("list partition dir")
        .filter_map(|entry| {
            let entry = entry.expect("dir entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            parse_log_file_name(&name).map(|base| (base, entry.path()))
        })
        .collect();
    segments.sort();
    segments
}

fn index_path(segment: &Path) -> PathBuf {
    segment.with_extension("index")
}

/// The valid frame headers of a segment file from its start, with their positions. Stops at the
/// first header that does not decode (the preallocated zeros after the last frame).
fn frames_in(path: &Path) -> Vec<(u64, FrameHeader)> {
    let bytes = std::fs::read(path).expect("read segment");
    let mut frames = Vec::new();
    let mut position = 0_usize;
    while position + FRAME_HEADER_BYTES <= bytes.len() {
        let Ok(header) = FrameHeader::decode(&bytes[position..]) else {
            break;
        };
        frames.push((position as u64, header));
        position += header.frame_bytes() as usize;
    }
    frames
}

fn write_at(path: &Path, position: u64, data: &[u8]) {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for damage");
    file.seek(SeekFrom::Start(position)).expect("seek");
    file.write_all(data).expect("damage write");
    file.sync_all().expect("sync damage");
}

fn flip_byte(path: &Path, position: u64) {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open for flip");
    let mut byte = [0_u8; 1];
    file.seek(SeekFrom::Start(position)).expect("seek");
    file.read_exact(&mut byte).expect("read byte");
    byte[0] ^= 0x5a;
    file.seek(SeekFrom::Start(position)).expect("seek");
    file.write_all(&byte).expect("write flipped byte");
    file.sync_all().expect("sync flip");
}

fn truncated_at(recovery: &LogRecovery) -> Option<(u64, String)> {
    recovery
        .segment_reports
        .last()
        .and_then(|(_, report)| report.truncated_at.clone())
}

/// How the tail of the last frame is damaged in the torn-tail and zeroed-tail scenarios.
#[derive(Clone, Copy, Debug)]
enum TailDamage {
    /// The file ends in the middle of the last frame's payload.
    CutMidPayload,
    /// The file ends in the middle of the last frame's header.
    CutMidHeader,
    /// The second half of the last frame is garbage (a write that landed partly).
    GarbageOverTail,
    /// The second half of the last frame's payload is zeros (header written, payload not).
    ZeroedPayloadTail,
    /// The last three frames are all zeros (a lost write of several frames).
    ZeroedLastFrames,
}

/// Appends, stops uncleanly, damages the end of the last segment, and checks that reopening cuts
/// exactly the damaged frames, keeps everything before them byte-identical, and that appends go
/// on at the new log end and survive another unclean restart.
fn run_tail_scenario(damage: TailDamage) {
    let temp = tempfile::tempdir().expect("tempdir");
    let root = temp.path().to_path_buf();
    let config = small_segments();
    block_on_bounded(move || async move {
        Storage::Real.prime_data_dir(&root).await.expect("prime");
        let (log, _) = PartitionLog::open(options(Storage::Real, &root, &config))
            .await
            .expect("open");
        let mut acked = append_batches(&log, 0, 40, varied_size).await;
        // Unclean stop: no close, so no clean-shutdown marker and no checkpoint of the active
        // segment.
        drop(log);

        let segments = segment_files(&root);
        assert!(
            segments.len() >= 3,
            "small segments rolled: {}",
            segments.len()
        );
        let (_, last_path) = segments.last().expect("a segment").clone();
        let frames = frames_in(&last_path);
        assert!(frames.len() >= 3, "the last segment holds several frames");
        let (last_position, last_header) = *frames.last().expect("a frame");
        let payload_at = last_position + FRAME_HEADER_BYTES as u64;
        let payload_half = u64::from(last_header.payload_bytes) / 2;
        let frame_end = last_position + last_header.frame_bytes();
        // (first offset lost, position recovery must report as torn if it reports one)
        let (lost_from, cut_position) = match damage {
            TailDamage::CutMidPayload => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&last_path)
                    .expect("open");
                file.set_len(payload_at + payload_half).expect("cut");
                (last_header.base_offset, last_position)
            }
            TailDamage::CutMidHeader => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&last_path)
                    .expect("open");
                file.set_len(last_position + FRAME_HEADER_BYTES as u64 / 2)
                    .expect("cut");
                (last_header.base_offset, last_position)
            }
            TailDamage::GarbageOverTail => {
                let start = last_position + last_header.frame_bytes() / 2;
                let garbage: Vec<u8> = (0..frame_end - start)
                    .map(|byte| (byte * 131 + 17) as u8 | 1)
                    .collect();
                write_at(&last_path, start, &garbage);
                (last_header.base_offset, last_position)
            }
            TailDamage::ZeroedPayloadTail => {
                let start = payload_at + payload_half;
                write_at(&last_path, start, &vec![0; (frame_end - start) as usize]);
                (last_header.base_offset, last_position)
            }
            TailDamage::ZeroedLastFrames => {
                let (first_zeroed, header) = frames[frames.len() - 3];
                write_at(
                    &last_path,
                    first_zeroed,
                    &vec![0; (frame_end - first_zeroed) as usize],
                );
                (header.base_offset, first_zeroed)
            }
        };
        let kept = acked
            .iter()
            .take_while(|batch| batch.offset < lost_from)
            .count();

        let started = std::time::Instant::now();
        let (log, recovery) = PartitionLog::open(options(Storage::Real, &root, &config))
            .await
            .expect("reopen after a damaged tail succeeds");
        let recovery_time = started.elapsed();
        assert!(!recovery.clean_shutdown);
        assert_eq!(
            log.log_end_offset(),
            lost_from,
            "log end is the end of the last intact frame"
        );
        let torn = truncated_at(&recovery);
        match damage {
            // A zeroed header is the end of the data, not damage worth reporting.
            TailDamage::ZeroedLastFrames => assert_eq!(torn, None),
            _ => assert_eq!(
                torn.as_ref().map(|(position, _)| *position),
                Some(cut_position)
            ),
        }
        // The file was cut at the end of the last intact frame, so nothing stale survives.
        let file_bytes = std::fs::metadata(&last_path).expect("stat").len();
        assert_eq!(
            file_bytes, cut_position,
            "segment file truncated at the last intact frame"
        );
        acked.truncate(kept);
        assert_reads_back(&log, &acked).await;
        assert_eq!(assert_whole_log_valid(&log).await, kept);

        // Appends continue at the new log end, and survive another unclean restart.
        let more = append_batches(&log, 1000, 5, varied_size).await;
        assert_eq!(
            more[0].offset, lost_from,
            "appends continue at the new log end"
        );
        acked.extend(more);
        drop(log);
        let (log, _) = PartitionLog::open(options(Storage::Real, &root, &config))
            .await
            .expect("reopen");
        assert_reads_back(&log, &acked).await;
        assert_eq!(assert_whole_log_valid(&log).await, acked.len());
        println!(
            "scenario tail {damage:?}: {} segments, last frame at {last_position} (offset {}); \
             reopen in {recovery_time:?} cut the tail at {cut_position} ({}), log end {lost_from}, \
             {kept} earlier batches byte-identical, 5 more appended from offset {lost_from} and \
             read back after another unclean restart",
            segments.len(),
            last_header.base_offset,
            torn.map_or_else(
                || "zeroed header: end of data".to_string(),
                |(_, reason)| reason
            ),
        );
    });
}

#[test]
fn torn_tail_cut_mid_payload() {
    run_tail_scenario(TailDamage::CutMidPayload);
}

#[test]
fn torn_tail_cut_mid_header() {
    run_tail_scenario(TailDamage::CutMidHeader);
}

#[test]
fn torn_tail_garbage_over_last_frame() {
    run_tail_scenario(TailDamage::GarbageOverTail);
}

#[test]
fn zeroed_tail_payload_of_last_frame() {
    run_tail_scenario(TailDamage::ZeroedPayloadTail);
}

#[test]
fn zeroed_tail_last_three_frames() {
    run_tail_scenario(TailDamage::ZeroedLastFrames);
}

/// Where a byte is flipped inside a frame.
#[derive(Clone, Copy, Debug)]
enum FlipAt {
    Header,
    Payload,
}

impl FlipAt {
    fn position(self, frame_position: u64, header: &FrameHeader) -> u64 {
        match self {
            // Inside the timestamps: only the header checksum can catch it.
            FlipAt::Header => frame_position + 20,
            FlipAt::Payload => {
                frame_position + FRAME_HEADER_BYTES as u64 + u64::from(header.payload_bytes) / 2
            }
        }
    }
}

/// Builds a log of several small segments, stops it uncleanly, flips a byte in the third frame
/// of the first (sealed) segment, optionally deletes that segment's index, and reopens.
/// Returns what the reopen returned, the damaged segment's path and the damaged frame's position.
fn reopen_after_flip_in_sealed_segment(
    flip: FlipAt,
    delete_index: bool,
) -> (Result<(), Error>, PathBuf, u64, Vec<Acked>, usize) {
    let temp = tempfile::tempdir().expect("tempdir");
    let root = temp.path().to_path_buf();
    let config = small_segments();
    block_on_bounded(move || async move {
        Storage::Real.prime_data_dir(&root).await.expect("prime");
        let (log, _) = PartitionLog::open(options(Storage::Real, &root, &config))
            .await
            .expect("open");
        let acked = append_batches(&log, 0, 60, |_| 1000).await;
        drop(log);
        let segments = segment_files(&root);
        assert!(segments.len() >= 3, "several segments: {}", segments.len());
        let (_, first_path) = segments[0].clone();
        let frames = frames_in(&first_path);
        assert!(frames.len() >= 4);
        let (position, header) = frames[2];
        flip_byte(&first_path, flip.position(position, &header));
        if delete_index {
            std::fs::remove_file(index_path(&first_path)).expect("remove index");
        }
        let opened = PartitionLog::open(options(Storage::Real, &root, &config)).await;
        let outcome = match opened {
            Ok((log, _)) => {
                // Sealed segments with an intact index are trusted at open (scanning every
                // segment would make start-up O(data)); the damage must then be refused on read.
                match log.read(header.base_offset, 1, ReadLimit::LogEnd).await {
                    Ok(read) => panic!(
                        "open succeeded and a read of damaged offset {} served {} batches",
                        header.base_offset,
                        read.batches.len()
                    ),
                    Err(error) => Err(error),
                }
            }
            Err(error) => Err(error),
        };
        (outcome, first_path, position, acked, segments.len())
    })
}

fn assert_corrupt_at(outcome: Result<(), Error>, path: &Path, position: u64) -> String {
    match outcome {
        Err(Error::Corrupt {
            path: reported,
            position: at,
            reason,
        }) => {
            assert_eq!(reported, path, "Corrupt names the damaged segment file");
            assert_eq!(at, position, "Corrupt names the damaged frame's position");
            reason
        }
        Err(other) => panic!(
            "expected Error::Corrupt at {}:{position}, got {other}",
            path.display()
        ),
        Ok(()) => panic!(
            "expected Error::Corrupt at {}:{position}, open succeeded",
            path.display()
        ),
    }
}

#[test]
fn flipped_byte_in_sealed_segment_with_rebuilt_index_is_corruption() {
    for flip in [FlipAt::Header, FlipAt::Payload] {
        let (outcome, path, position, _, segments) =
            reopen_after_flip_in_sealed_segment(flip, true);
        let reason = assert_corrupt_at(outcome, &path, position);
        println!(
            "scenario flipped byte ({flip:?}) in frame 3 of sealed segment 1 of {segments}, \
             its index deleted: open -> Error::Corrupt at {}:{position}: {reason}",
            path.display()
        );
    }
}

/// The documented outcome (docs/on-disk-format.md, "Recovery rules"): a sealed segment whose
/// index checkpoint is intact is not rescanned at open; a damaged frame in it is refused when
/// read, with `Error::Corrupt` naming the segment file and the frame's position.
fn assert_flip_in_sealed_segment_refused_on_read(flip: FlipAt) {
    let (outcome, path, position, _, segments) = reopen_after_flip_in_sealed_segment(flip, false);
    let reason = assert_corrupt_at(outcome, &path, position);
    println!(
        "scenario flipped byte ({flip:?}) in frame 3 of sealed segment 1 of {segments}, index \
         intact: open succeeds, read -> Error::Corrupt at {}:{position}: {reason}",
        path.display()
    );
}

#[test]
fn flipped_header_byte_in_sealed_segment_is_refused_on_read() {
    assert_flip_in_sealed_segment_refused_on_read(FlipAt::Header);
}

#[test]
fn flipped_payload_byte_in_sealed_segment_is_refused_on_read() {
    assert_flip_in_sealed_segment_refused_on_read(FlipAt::Payload);
}

/// Builds a log of several small segments, closes it cleanly (so the next open validates
/// nothing), and flips a payload byte in the third frame of the first segment. Returns the
/// damaged segment's path, the frame's position and its header.
async fn damage_sealed_segment_after_clean_close(
    root: &Path,
    config: &LogConfig,
) -> (PathBuf, u64, FrameHeader) {
    Storage::Real.prime_data_dir(root).await.expect("prime");
    let (log, _) = PartitionLog::open(options(Storage::Real, root, config))
        .await
        .expect("open");
    append_batches(&log, 0, 60, |_| 1000).await;
    log.close().await.expect("close");
    drop(log);
    let (_, first_path) = segment_files(root)[0].clone();
    let (position, header) = frames_in(&first_path)[2];
    flip_byte(&first_path, FlipAt::Payload.position(position, &header));
    (first_path, position, header)
}

#[test]
fn cold_read_of_a_damaged_batch_is_corrupt_naming_the_segment() {
    let temp = tempfile::tempdir().expect("tempdir");
    let root = temp.path().to_path_buf();
    let config = small_segments();
    block_on_bounded(move || async move {
        let (path, position, header) =
            damage_sealed_segment_after_clean_close(&root, &config).await;
        // A clean shutdown skips validation by design; the read must still not serve the batch.
        let (log, _) = PartitionLog::open(options(Storage::Real, &root, &config))
            .await
            .expect("reopen");
        let outcome = match log.read(header.base_offset, 1, ReadLimit::LogEnd).await {
            Ok(read) => {
                let valid = read
                    .batches
                    .iter()
                    .all(|batch| validate_batch(batch).is_ok());
                panic!(
                    "read of the damaged offset {} returned {} batches (all valid: {valid})",
                    header.base_offset,
                    read.batches.len()
                )
            }
            Err(error) => Err(error),
        };
        let reason = assert_corrupt_at(outcome, &path, position);
        // The batches before it are still served.
        let before = log
            .read(0, 1, ReadLimit::LogEnd)
            .await
            .expect("read offset 0");
        assert!(validate_batch(&before.batches[0]).is_ok());
        println!(
            "scenario flipped payload byte in a sealed segment after a clean shutdown: read of \
             offset {} -> Error::Corrupt at {}:{position}: {reason}",
            header.base_offset,
            path.display()
        );
    });
}

#[test]
fn lookup_by_time_over_a_damaged_batch_is_corrupt_naming_the_segment() {
    let temp = tempfile::tempdir().expect("tempdir");
    let root = temp.path().to_path_buf();
    let config = small_segments();
    block_on_bounded(move || async move {
        let (path, position, header) =
            damage_sealed_segment_after_clean_close(&root, &config).await;
        let (log, _) = PartitionLog::open(options(Storage::Real, &root, &config))
            .await
            .expect("reopen");
        let outcome = log
            .offset_for_timestamp(header.max_timestamp)
            .await
            .map(|found| {
                panic!("lookup by time over a damaged batch returned {found:?}");
            });
        let reason = assert_corrupt_at(outcome, &path, position);
        println!(
            "scenario flipped payload byte in a sealed segment: lookup by time {} -> \
             Error::Corrupt at {}:{position}: {reason}",
            header.max_timestamp,
            path.display()
        );
    });
}

#[test]
fn flipped_byte_mid_last_segment_before_synced_frames_is_corruption() {
    for flip in [FlipAt::Header, FlipAt::Payload] {
        let temp = tempfile::tempdir().expect("tempdir");
        let root = temp.path().to_path_buf();
        // One segment: the damage is in the active (last) segment.
        let config = LogConfig::default();
        block_on_bounded(move || async move {
            Storage::Real.prime_data_dir(&root).await.expect("prime");
            let (log, _) = PartitionLog::open(options(Storage::Real, &root, &config))
                .await
                .expect("open");
            // Each append is awaited, so each frame was appended after the previous one had been
            // synced: its header's synced_position proves the earlier frames were durable.
            append_batches(&log, 0, 40, varied_size).await;
            drop(log);
            let segments = segment_files(&root);
            assert_eq!(segments.len(), 1);
            let (_, path) = segments[0].clone();
            let frames = frames_in(&path);
            assert_eq!(frames.len(), 40);
            let (position, header) = frames[20];
            let (later_position, later) = frames[21];
            assert!(
                u64::from(later.synced_position) > position,
                "later frame proves the sync"
            );
            flip_byte(&path, flip.position(position, &header));
            let before = std::fs::read(&path).expect("read segment");
            let outcome = PartitionLog::open(options(Storage::Real, &root, &config))
                .await
                .map(|_| ());
            let reason = assert_corrupt_at(outcome, &path, position);
            assert!(
                reason.contains("synced"),
                "the reason gives the proof: {reason}"
            );
            let after = std::fs::read(&path).expect("read segment");
            assert!(
                before == after,
                "a refused open leaves the segment untouched"
            );
            println!(
                "scenario flipped byte ({flip:?}) in frame 21 of 40 in the last segment, frame 22 \
                 at {later_position} says {} bytes were synced: open -> Error::Corrupt at \
                 {}:{position}: {reason}; file not truncated ({} bytes unchanged)",
                later.synced_position,
                path.display(),
                after.len()
            );
        });
    }
}

/// What an index is subjected to in the rebuild scenario.
#[derive(Clone, Copy, Debug)]
enum IndexDamage {
    Deleted,
    FlippedByte,
    Truncated,
}

#[test]
fn deleted_or_damaged_index_is_rebuilt() {
    for clean in [true, false] {
        let temp = tempfile::tempdir().expect("tempdir");
        let root = temp.path().to_path_buf();
        let config = small_segments();
        block_on_bounded(move || async move {
            Storage::Real.prime_data_dir(&root).await.expect("prime");
            let (log, _) = PartitionLog::open(options(Storage::Real, &root, &config))
                .await
                .expect("open");
            let acked = append_batches(&log, 0, 80, varied_size).await;
            let probes: Vec<i64> = (0..90)
                .map(|step| base_timestamp_ms() - 5 + step * TIMESTAMP_STEP_MS)
                .collect();
            let mut expected_lookups = Vec::new();
            for &timestamp in &probes {
                let found = log.offset_for_timestamp(timestamp).await.expect("by time");
                let first = acked.iter().find(|batch| batch.timestamp >= timestamp);
                assert_eq!(found, first.map(|batch| (batch.offset, batch.timestamp)));
                expected_lookups.push(found);
            }
            let end = log.log_end_offset();
            if clean {
                log.close().await.expect("close");
            }
            drop(log);

            let segments = segment_files(&root);
            assert!(segments.len() >= 4, "several segments: {}", segments.len());
            // Damage the first three sealed segments' indexes, one way each; after a clean close
            // also delete the active segment's checkpoint.
            let damages = [
                IndexDamage::Deleted,
                IndexDamage::FlippedByte,
                IndexDamage::Truncated,
            ];
            let mut damaged_bases = Vec::new();
            for ((base, path), damage) in segments.iter().zip(damages) {
                let index = index_path(path);
                assert!(index.exists(), "a sealed segment has an index checkpoint");
                match damage {
                    IndexDamage::Deleted => std::fs::remove_file(&index).expect("remove index"),
                    IndexDamage::FlippedByte => flip_byte(&index, 30),
                    IndexDamage::Truncated => {
                        let file = std::fs::OpenOptions::new()
                            .write(true)
                            .open(&index)
                            .expect("open");
                        file.set_len(20).expect("truncate index");
                    }
                }
                damaged_bases.push(*base);
            }
            let (active_base, active_path) = segments.last().expect("segment").clone();
            if clean {
                std::fs::remove_file(index_path(&active_path)).expect("remove active index");
                damaged_bases.push(active_base);
            }

            let (log, recovery) = PartitionLog::open(options(Storage::Real, &root, &config))
                .await
                .expect("reopen");
            assert_eq!(recovery.clean_shutdown, clean);
            for (base, report) in &recovery.segment_reports {
                if damaged_bases.contains(base) {
                    assert!(
                        report.rebuilt_index,
                        "segment {base} index rebuilt: {report:?}"
                    );
                    assert!(report.frames_scanned > 0, "segment {base} rescanned");
                }
            }
            let rebuilt = recovery
                .segment_reports
                .iter()
                .filter(|(_, r)| r.rebuilt_index)
                .count();
            assert_eq!(log.log_end_offset(), end);
            assert_reads_back(&log, &acked).await;
            assert_eq!(assert_whole_log_valid(&log).await, acked.len());
            for (&timestamp, expected) in probes.iter().zip(&expected_lookups) {
                let found = log.offset_for_timestamp(timestamp).await.expect("by time");
                assert_eq!(
                    &found, expected,
                    "lookup by time {timestamp} after the rebuild"
                );
            }
            let more = append_batches(&log, 500, 3, varied_size).await;
            assert_eq!(more[0].offset, end);
            println!(
                "scenario index damage ({} stop): deleted/flipped/truncated the indexes of the \
                 segments at {:?}{}, {} segments in all: reopen rebuilt {rebuilt} indexes by \
                 scanning, log end \
                 {end}, {} batches byte-identical, {} lookups by time unchanged",
                if clean { "clean" } else { "unclean" },
                &damaged_bases[..3],
                if clean {
                    " and deleted the active segment's"
                } else {
                    ""
                },
                segments.len(),
                acked.len(),
                probes.len()
            );
        });
    }
}

/// Fills a simulated disk until appends fail, then checks the failure is ENOSPC, the log is
/// poisoned, and after a crash and power loss every acknowledged batch is intact.
fn run_disk_full(seed: u64, segment_bytes: u64, capacity_bytes: u64, value_bytes: usize) {
    let root = PathBuf::from("/data");
    let config = LogConfig {
        segment_bytes,
        ..LogConfig::default()
    };
    block_on_bounded(move || async move {
        let disk = SimDisk::new(
            seed,
            FaultConfig {
                capacity_bytes: Some(capacity_bytes),
                ..FaultConfig::default()
            },
        );
        let storage = Storage::Sim(Rc::clone(&disk));
        let (log, _) = PartitionLog::open(options(storage.clone(), &root, &config))
            .await
            .expect("open on an empty disk");
        let mut acked = Vec::new();
        let failure = loop {
            let index = acked.len();
            let (batch, timestamp) = batch_for(index, value_bytes);
            match log.append(&batch, LEADER_EPOCH).await {
                Ok(result) => {
                    let bytes = patch_batch(&batch, result.base_offset, LEADER_EPOCH).freeze();
                    acked.push(Acked {
                        offset: result.base_offset,
                        timestamp,
                        records: result.record_count,
                        bytes,
                    });
                }
                Err(error) => break error,
            }
            assert!(acked.len() < 100_000, "the disk never filled up");
        };
        match &failure {
            Error::Io { source, .. } => {
                assert_eq!(
                    source.raw_os_error(),
                    Some(libc::ENOSPC),
                    "ENOSPC: {failure}"
                )
            }
            other => panic!("expected an ENOSPC I/O error, got {other}"),
        }
        let poisoned = log.poisoned().is_some();
        assert!(poisoned, "a failed write poisons the log");
        let (batch, _) = batch_for(999_999, 10);
        let again = log.append(&batch, LEADER_EPOCH).await;
        assert!(
            matches!(again, Err(Error::Poisoned { .. })),
            "then appends are refused: {again:?}"
        );
        let acked_end = acked.last().map_or(0, |batch| batch.offset + batch.records);
        drop(log);

        disk.crash();
        disk.power_loss();
        disk.set_faults(FaultConfig::default());
        let (log, recovery) = PartitionLog::open(options(storage, &root, &config))
            .await
            .expect("reopen");
        assert!(
            log.log_end_offset() >= acked_end,
            "no acknowledged batch lost"
        );
        assert_reads_back(&log, &acked).await;
        let batches = assert_whole_log_valid(&log).await;
        let (batch, _) = batch_for(acked.len(), 100);
        let after = log
            .append(&batch, LEADER_EPOCH)
            .await
            .expect("append with space again");
        assert_eq!(after.last_offset + 1, log.log_end_offset());
        let stats = disk.stats();
        println!(
            "scenario disk full (seed {seed}, segment.bytes {segment_bytes}, capacity \
             {capacity_bytes}): {} appends acknowledged, then {failure}; next append -> Poisoned; \
             after crash + power loss ({} unsynced writes torn, {} dropped) reopen found {} \
             segments, log end {} (acknowledged end {acked_end}), {batches} valid batches, all {} \
             acknowledged byte-identical; appends resume once space is back",
            acked.len(),
            stats.torn_writes_on_power_loss,
            stats.dropped_writes_on_power_loss,
            recovery.segments,
            after.base_offset,
            acked.len(),
        );
    });
}

/// One active segment: the write that needs the file to grow past its first 32 MiB
/// preallocation step fails in fallocate.
#[test]
fn disk_full_while_growing_the_active_segment() {
    run_disk_full(
        0x5eed_0001,
        LogConfig::default().segment_bytes,
        40 << 20,
        60_000,
    );
}

/// 1 MiB segments: every roll preallocates a new segment, and one of them no longer fits.
#[test]
fn disk_full_while_rolling() {
    run_disk_full(0x5eed_0002, 1 << 20, 36 << 20, 20_000);
}
