//! End-to-end tests of `ringlog log dump` and `ringlog log verify`: build a log with the engine,
//! run the real binary on it, and check what it prints, its exit status, and that it changed
//! nothing on disk.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ringlog_engine::config::LogConfig;
use ringlog_engine::format::{build_batch, FrameHeader, FRAME_HEADER_BYTES};
use ringlog_engine::log::{now_ms, LogOptions, PartitionLog, CLEAN_SHUTDOWN_FILE};
use ringlog_engine::rt::{self, fs::Storage};
use ringlog_engine::segment::parse_log_file_name;
use ringlog_engine::TopicPartition;

/// Small segments so a few dozen batches make several sealed segments.
const SEGMENT_BYTES: u64 = 16 * 1024;
const PARTITION_DIR: &str = "events-3";
const LEADER_EPOCH: i32 = 5;
/// `ringlog log verify`'s exit status when it finds problems.
const EXIT_PROBLEMS_FOUND: i32 = 2;

fn options(root: &Path, segment_bytes: u64) -> LogOptions {
    LogOptions {
        storage: Storage::Real,
        dir: root.join(PARTITION_DIR),
        topic_partition: TopicPartition::new("events", 3),
        config: LogConfig {
            segment_bytes,
            ..LogConfig::default()
        },
        cache: None,
        auto_high_watermark: true,
        metrics: None,
    }
}

/// Appends `count` batches of varied sizes (one or two records each) and returns the log end.
/// Closes the log cleanly if `close`, else drops it as a crash would.
fn build_log(root: &Path, segment_bytes: u64, count: usize, close: bool) -> i64 {
    let root = root.to_path_buf();
    rt::block_on(async move {
        Storage::Real.prime_data_dir(&root).await.expect("prime");
        let (log, _) = PartitionLog::open(options(&root, segment_bytes))
            .await
            .expect("open");
        for index in 0..count {
            let value = vec![index as u8; 200 + (index * 311) % 1500];
            let batch = if index % 4 == 0 {
                build_batch(now_ms(), &[(Some(b"k"), Some(&value)), (None, Some(b"x"))])
            } else {
                build_batch(now_ms(), &[(Some(b"k"), Some(&value))])
            };
            log.append(&batch, LEADER_EPOCH).await.expect("append");
        }
        let end = log.log_end_offset();
        if close {
            log.close().await.expect("close");
        }
        end
    })
}

fn ringlog(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringlog"))
        .args(args)
        .output()
        .expect("run ringlog")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn segment_files(root: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<(i64, PathBuf)> = std::fs::read_dir(root.join(PARTITION_DIR))
        .expect("list")
        .filter_map(|entry| {
            let entry = entry.expect("entry");
            parse_log_file_name(&entry.file_name().to_string_lossy())
                .map(|base| (base, entry.path()))
        })
        .collect();
    segments.sort();
    segments.into_iter().map(|(_, path)| path).collect()
}

/// Frame positions and headers of a segment file, up to the first header that does not decode.
fn frames_in(path: &Path) -> Vec<(u64, FrameHeader)> {
    let bytes = std::fs::read(path).expect("read segment");
    let mut frames = Vec::new();
    let mut position = 0;
    while position + FRAME_HEADER_BYTES <= bytes.len() {
        let Ok(header) = FrameHeader::decode(&bytes[position..]) else {
            break;
        };
        frames.push((position as u64, header));
        position += header.frame_bytes() as usize;
    }
    frames
}

fn flip_byte(path: &Path, position: u64) {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let mut byte = [0_u8; 1];
    file.seek(SeekFrom::Start(position)).expect("seek");
    file.read_exact(&mut byte).expect("read");
    byte[0] ^= 0x10;
    file.seek(SeekFrom::Start(position)).expect("seek");
    file.write_all(&byte).expect("write");
}

/// Every file of the partition with its contents, to prove the tool changed nothing.
fn snapshot(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(root.join(PARTITION_DIR))
        .expect("list")
        .map(|entry| {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("read"))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn dump_and_verify_a_sound_log() {
    let temp = tempfile::tempdir().expect("tempdir");
    let root = temp.path();
    let end = build_log(root, SEGMENT_BYTES, 60, true);
    let partition = root.join(PARTITION_DIR);
    let partition_arg = partition.to_str().expect("utf-8 path");
    let before = snapshot(root);

    let dump = ringlog(&["log", "dump", partition_arg]);
    assert!(
        dump.status.success(),
        "dump failed: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let text = stdout(&dump);
    assert!(
        text.contains("frame @0: offsets 0..=1 (2 records)"),
        "first frame:\n{text}"
    );
    assert!(
        text.contains(&format!("..={} ", end - 1)),
        "last offset {}:\n{text}",
        end - 1
    );
    assert!(text.contains(&format!("leader epoch {LEADER_EPOCH}")));
    assert!(text.contains("(matches), header crc ok"));
    assert!(
        text.contains(&format!("log end offset {end}")),
        "clean marker:\n{text}"
    );
    assert!(text.contains("index 00000000000000000000.index: covers positions"));
    assert!(!text.contains("INVALID"), "{text}");
    println!("dump of a clean log (first lines):");
    for line in text.lines().take(8) {
        println!("  {line}");
    }

    // The data directory form and JSON.
    let root_arg = root.to_str().expect("utf-8 path");
    let json = ringlog(&["log", "dump", "--json", root_arg]);
    assert!(json.status.success());
    let json = stdout(&json);
    assert!(json.starts_with("{\"partitions\":[{\"dir\":"), "{json}");
    assert!(
        json.contains("\"base_offset\":0,\"last_offset\":1,\"record_count\":2"),
        "{json}"
    );
    assert!(json.contains(&format!("\"log_end_offset\":{end}")));

    let verify = ringlog(&["log", "verify", root_arg]);
    let report = stdout(&verify);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "verify of a sound log:\n{report}"
    );
    assert!(report.contains("verify: ok"), "{report}");
    println!(
        "verify of a clean log: {}",
        report.lines().rev().nth(1).unwrap_or_default()
    );

    // Reading changed nothing: the clean-shutdown marker is still there, files are identical.
    assert!(partition.join(CLEAN_SHUTDOWN_FILE).exists());
    assert!(
        snapshot(root) == before,
        "dump and verify must not modify the log"
    );

    // An unclean stop leaves the active segment preallocated with zeros after its last frame:
    // that is the end of the data, not damage.
    build_log(root, SEGMENT_BYTES, 5, false);
    let verify = ringlog(&["log", "verify", partition_arg]);
    let report = stdout(&verify);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "verify after an unclean stop:\n{report}"
    );
    assert!(!report.contains("clean shutdown,"), "{report}");
}

#[test]
fn verify_names_a_flipped_byte_in_a_sealed_segment() {
    let temp = tempfile::tempdir().expect("tempdir");
    let root = temp.path();
    build_log(root, SEGMENT_BYTES, 60, false);
    let segments = segment_files(root);
    assert!(segments.len() >= 3, "several segments: {}", segments.len());
    let damaged = &segments[1];
    let (position, header) = frames_in(damaged)[2];
    flip_byte(
        damaged,
        position + FRAME_HEADER_BYTES as u64 + u64::from(header.payload_bytes) / 2,
    );
    let before = snapshot(root);

    let verify = ringlog(&["log", "verify", root.to_str().expect("utf-8 path")]);
    let report = stdout(&verify);
    assert_eq!(
        verify.status.code(),
        Some(EXIT_PROBLEMS_FOUND),
        "verify output:\n{report}"
    );
    let expected = format!("{}:{position}: ", damaged.display());
    let line = report.lines().find(|line| line.starts_with(&expected));
    let line = line.unwrap_or_else(|| panic!("no line starting {expected:?} in:\n{report}"));
    assert!(line.contains("CRC"), "{line}");
    assert!(line.contains("sealed segment"), "{line}");
    println!("verify of a flipped byte in a sealed segment: {line}");

    // A segment file is not a directory: the tool says so instead of guessing.
    let dump = ringlog(&["log", "dump", damaged.to_str().expect("utf-8")]);
    assert_eq!(dump.status.code(), Some(1));
    let dump = ringlog(&[
        "log",
        "dump",
        root.join(PARTITION_DIR).to_str().expect("utf-8"),
    ]);
    let text = stdout(&dump);
    assert!(
        text.contains(&format!(
            "frame @{position}: INVALID: batch CRC-32C mismatch"
        )),
        "{text}"
    );
    assert!(text.contains("MISMATCH: data gives"), "{text}");
    assert!(
        snapshot(root) == before,
        "verify and dump must not modify the log"
    );
}

#[test]
fn verify_names_damage_before_synced_frames_and_notes_a_torn_tail() {
    let temp = tempfile::tempdir().expect("tempdir");
    let root = temp.path();
    // One segment (the default size), so the damage is in the last, active one.
    build_log(root, LogConfig::default().segment_bytes, 30, false);
    let last = segment_files(root).pop().expect("a segment");
    let frames = frames_in(&last);
    assert!(frames.len() >= 4, "the last segment holds several frames");

    // Garbage over the last frame only: a torn tail that recovery cuts. Not a problem.
    let (tail_position, tail_header) = *frames.last().expect("a frame");
    flip_byte(
        &last,
        tail_position + FRAME_HEADER_BYTES as u64 + u64::from(tail_header.payload_bytes) - 1,
    );
    let verify = ringlog(&["log", "verify", root.to_str().expect("utf-8 path")]);
    let report = stdout(&verify);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "a torn tail is not a problem:\n{report}"
    );
    let expected = format!("note: {}:{tail_position}: torn tail", last.display());
    assert!(
        report.contains(&expected),
        "expected {expected:?} in:\n{report}"
    );
    println!(
        "verify of a torn tail: {}",
        report.lines().next().unwrap_or_default()
    );

    // A flipped byte in a frame that later, valid frames prove was synced: corruption.
    let (position, header) = frames[1];
    flip_byte(&last, position + 20);
    let verify = ringlog(&["log", "verify", root.to_str().expect("utf-8 path")]);
    let report = stdout(&verify);
    assert_eq!(
        verify.status.code(),
        Some(EXIT_PROBLEMS_FOUND),
        "verify output:\n{report}"
    );
    let expected = format!("{}:{position}: ", last.display());
    let line = report.lines().find(|line| line.starts_with(&expected));
    let line = line.unwrap_or_else(|| panic!("no line starting {expected:?} in:\n{report}"));
    assert!(line.contains("had been synced"), "{line}");
    println!(
        "verify of damage before synced frames (offset {}): {line}",
        header.base_offset
    );
}
