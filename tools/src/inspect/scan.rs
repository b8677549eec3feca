//! Reads a partition directory into a [`PartitionScan`]: every frame of every segment as the
//! engine's checks see it, the index checkpoints, and the marker files. Read-only.
//!
//! A scan does not stop at the first bad frame: it goes on looking for valid frames further on
//! (as recovery does to tell a torn tail from corruption), so `dump` can show what lies past the
//! damage and `verify` can apply recovery's rules to it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use bytes::Bytes;
use ringlog_engine::config::INDEX_INTERVAL_BYTES_DEFAULT;
use ringlog_engine::format::{
    batch_crc, BatchInfo, FrameError, FrameHeader, FRAME_ALIGNMENT_BYTES, FRAME_HEADER_BYTES,
};
use ringlog_engine::index::{IndexCheckpoint, IndexEntry, SegmentIndex};
use ringlog_engine::log::{CLEAN_SHUTDOWN_FILE, LOG_START_OFFSET_FILE};
use ringlog_engine::rt::fs::{File, OpenMode, Storage, DMA_ALIGNMENT_BYTES};
use ringlog_engine::segment::{
    find_valid_frame, index_file_name, parse_log_file_name, read_valid_frame, ChunkReader,
};

/// Layout of the clean-shutdown marker, as `engine/src/log.rs` (`CleanMarker`) writes it: magic
/// "RLC1", active segment base offset (i64), its end position (u64), log end offset (i64), and
/// a CRC-32 of those 28 bytes, all little-endian. The engine does not export a decoder.
const CLEAN_MARKER_MAGIC: &[u8; 4] = b"RLC1";
const CLEAN_MARKER_BYTES: usize = 32;
/// Layout of the log-start-offset checkpoint (`write_log_start` in `engine/src/log.rs`): magic
/// "RLS1", the offset (i64), and a CRC-32 of those 12 bytes.
const LOG_START_MAGIC: &[u8; 4] = b"RLS1";
const LOG_START_BYTES: usize = 16;

/// A marker file's state.
#[derive(Clone, Debug)]
pub enum Marker<T> {
    Absent,
    Valid(T),
    Damaged(String),
}

/// What the clean-shutdown marker records.
#[derive(Clone, Copy, Debug)]
pub struct CleanMarker {
    pub active_base_offset: i64,
    pub end_position: u64,
    pub log_end_offset: i64,
}

/// A segment's index checkpoint file.
#[derive(Clone, Debug)]
pub enum IndexState {
    Absent,
    Valid {
        checkpoint: IndexCheckpoint,
        entries: Vec<IndexEntry>,
    },
    Damaged(String),
}

/// One position of a segment as the scan found it, in file order.
#[derive(Clone, Debug)]
pub enum FrameScan {
    /// A frame that passes every check of the engine's `read_valid_frame`.
    Valid { position: u64, header: FrameHeader },
    /// Bytes that are not a valid frame. `header` is set if the header itself is intact (the
    /// payload is what failed), with the batch CRC computed from the payload if it is present.
    Invalid {
        position: u64,
        header: Option<FrameHeader>,
        computed_crc: Option<u32>,
        reason: String,
    },
    /// An all-zero header: the end of the written part of a preallocated segment. Zeros run
    /// to `zeros_end` (the file's end, or the next valid frame found past them).
    EndOfData { position: u64, zeros_end: u64 },
}

/// One segment file.
#[derive(Clone, Debug)]
pub struct SegmentScan {
    pub base_offset: i64,
    pub path: PathBuf,
    pub index_path: PathBuf,
    pub file_bytes: u64,
    pub index: IndexState,
    pub frames: Vec<FrameScan>,
}

/// One partition directory.
#[derive(Clone, Debug)]
pub struct PartitionScan {
    pub dir: PathBuf,
    pub segments: Vec<SegmentScan>,
    pub clean_marker: Marker<CleanMarker>,
    pub log_start_offset: Marker<i64>,
    /// Files recovery would delete: interrupted atomic writes and indexes without a segment.
    pub leftovers: Vec<String>,
}

/// Scans each partition directory in turn.
pub async fn scan_partitions(dirs: Vec<PathBuf>) -> anyhow::Result<Vec<PartitionScan>> {
    prime_dma(&dirs).await?;
    let mut scans = Vec::with_capacity(dirs.len());
    for dir in dirs {
        scans.push(scan_partition(&dir).await?);
    }
    Ok(scans)
}

/// glommio 0.9 decides per device, on the first DMA file it opens there, whether reads may use
/// polled I/O, and an empty first file makes it decide wrongly (reads then fail with
/// EOPNOTSUPP; see `Storage::prime_data_dir`). That function writes a probe file, which a
/// read-only tool must not do, so open the largest segment file first instead: any file with a
/// first block gives the right answer.
async fn prime_dma(dirs: &[PathBuf]) -> anyhow::Result<()> {
    let mut largest: Option<(u64, PathBuf)> = None;
    for dir in dirs {
        for (_, path) in segment_files(dir)? {
            let bytes = std::fs::metadata(&path)
                .with_context(|| format!("stat {}", path.display()))?
                .len();
            if largest.as_ref().is_none_or(|(most, _)| bytes > *most) {
                largest = Some((bytes, path));
            }
            if bytes >= DMA_ALIGNMENT_BYTES {
                break;
            }
        }
    }
    if let Some((bytes, path)) = largest.filter(|(bytes, _)| *bytes > 0) {
        let file = Storage::Real.open(&path, OpenMode::Read).await?;
        file.read_at(0, bytes.min(DMA_ALIGNMENT_BYTES) as usize)
            .await?;
        file.close().await?;
    }
    Ok(())
}

/// The segment files of a partition directory, oldest first.
fn segment_files(dir: &Path) -> anyhow::Result<Vec<(i64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("list {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(base) = parse_log_file_name(&name) {
            segments.push((base, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

async fn scan_partition(dir: &Path) -> anyhow::Result<PartitionScan> {
    let segment_paths = segment_files(dir)?;
    let mut leftovers = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let name = entry
            .with_context(|| format!("list {}", dir.display()))?
            .file_name();
        let name = name.to_string_lossy().into_owned();
        let orphan_index = name.strip_suffix(".index").is_some_and(|stem| {
            stem.len() == 20
                && !segment_paths
                    .iter()
                    .any(|(base, _)| index_file_name(*base) == name)
        });
        if name.ends_with(".tmp") || orphan_index {
            leftovers.push(name);
        }
    }
    leftovers.sort();
    let mut segments = Vec::with_capacity(segment_paths.len());
    for (base_offset, path) in segment_paths {
        segments.push(scan_segment(dir, base_offset, path).await?);
    }
    Ok(PartitionScan {
        dir: dir.to_path_buf(),
        segments,
        clean_marker: read_marker(&dir.join(CLEAN_SHUTDOWN_FILE), decode_clean_marker)?,
        log_start_offset: read_marker(&dir.join(LOG_START_OFFSET_FILE), decode_log_start)?,
        leftovers,
    })
}

fn read_marker<T>(
    path: &Path,
    decode: fn(&[u8]) -> Result<T, String>,
) -> anyhow::Result<Marker<T>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(match decode(&bytes) {
            Ok(value) => Marker::Valid(value),
            Err(reason) => Marker::Damaged(reason),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Marker::Absent),
        Err(error) => Err(error).with_context(|| format!("read {}", path.display())),
    }
}

fn decode_clean_marker(bytes: &[u8]) -> Result<CleanMarker, String> {
    if bytes.len() != CLEAN_MARKER_BYTES {
        return Err(format!(
            "{} bytes, expected {CLEAN_MARKER_BYTES}",
            bytes.len()
        ));
    }
    if &bytes[..4] != CLEAN_MARKER_MAGIC {
        return Err("bad magic".into());
    }
    let stored = u32::from_le_bytes([bytes[28], bytes[29], bytes[30], bytes[31]]);
    let computed = crc32fast::hash(&bytes[..28]);
    if stored != computed {
        return Err(format!(
            "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
        ));
    }
    Ok(CleanMarker {
        active_base_offset: i64::from_le_bytes(eight(&bytes[4..12])),
        end_position: u64::from_le_bytes(eight(&bytes[12..20])),
        log_end_offset: i64::from_le_bytes(eight(&bytes[20..28])),
    })
}

fn decode_log_start(bytes: &[u8]) -> Result<i64, String> {
    if bytes.len() != LOG_START_BYTES {
        return Err(format!("{} bytes, expected {LOG_START_BYTES}", bytes.len()));
    }
    if &bytes[..4] != LOG_START_MAGIC {
        return Err("bad magic".into());
    }
    let stored = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    let computed = crc32fast::hash(&bytes[..12]);
    if stored != computed {
        return Err(format!(
            "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
        ));
    }
    Ok(i64::from_le_bytes(eight(&bytes[4..12])))
}

fn eight(bytes: &[u8]) -> [u8; 8] {
    let mut array = [0_u8; 8];
    array.copy_from_slice(bytes);
    array
}

fn read_index(path: &Path) -> anyhow::Result<IndexState> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(
            match SegmentIndex::decode(&bytes, INDEX_INTERVAL_BYTES_DEFAULT) {
                Ok((index, checkpoint)) => IndexState::Valid {
                    checkpoint,
                    entries: index.entries().to_vec(),
                },
                Err(error) => IndexState::Damaged(error.to_string()),
            },
        ),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(IndexState::Absent),
        Err(error) => Err(error).with_context(|| format!("read {}", path.display())),
    }
}

async fn scan_segment(dir: &Path, base_offset: i64, path: PathBuf) -> anyhow::Result<SegmentScan> {
    let index_path = dir.join(index_file_name(base_offset));
    let index = read_index(&index_path)?;
    let file_bytes = std::fs::metadata(&path)
        .with_context(|| format!("stat {}", path.display()))?
        .len();
    let mut frames = Vec::new();
    // An empty file has no frames, and opening it for direct I/O gains nothing.
    if file_bytes > 0 {
        let file = Storage::Real
            .open(&path, OpenMode::Read)
            .await
            .with_context(|| format!("open {}", path.display()))?;
        frames = scan_frames(&file, file_bytes)
            .await
            .with_context(|| format!("read {}", path.display()))?;
        file.close().await?;
    }
    Ok(SegmentScan {
        base_offset,
        path,
        index_path,
        file_bytes,
        index,
        frames,
    })
}

/// Walks the frames of a segment from its start to `limit`, resynchronizing past damage.
async fn scan_frames(file: &File, limit: u64) -> anyhow::Result<Vec<FrameScan>> {
    let mut reader = ChunkReader::new(file.clone(), limit);
    let mut frames = Vec::new();
    let mut position = 0;
    while position < limit {
        match read_valid_frame(&mut reader, position, None).await? {
            Ok((header, _)) => {
                frames.push(FrameScan::Valid { position, header });
                position += header.frame_bytes();
                continue;
            }
            Err(reason) => {
                let damage = describe_damage(&mut reader, position, limit, reason).await?;
                // A header that is intact tells where the damaged frame ends; otherwise look for
                // the next frame at every alignment step.
                let next = match &damage {
                    FrameScan::Invalid {
                        header: Some(header),
                        ..
                    } if position + header.frame_bytes() <= limit => {
                        Some(position + header.frame_bytes())
                    }
                    _ => None,
                };
                let resync_from = position + FRAME_ALIGNMENT_BYTES as u64;
                let found = match next {
                    Some(next) => Some(next),
                    None => next_valid_frame(&mut reader, resync_from, limit).await?,
                };
                let damage = match damage {
                    FrameScan::EndOfData { position, .. } => FrameScan::EndOfData {
                        position,
                        zeros_end: found.unwrap_or(limit),
                    },
                    other => other,
                };
                frames.push(damage);
                match found {
                    Some(next) => position = next,
                    None => break,
                }
            }
        }
    }
    Ok(frames)
}

/// Classifies the bytes at `position`, which `read_valid_frame` rejected with `reason`.
async fn describe_damage(
    reader: &mut ChunkReader,
    position: u64,
    limit: u64,
    reason: String,
) -> anyhow::Result<FrameScan> {
    let available = (limit - position).min(FRAME_HEADER_BYTES as u64) as usize;
    let Some(header_bytes) = reader.get(position, available).await? else {
        return Ok(FrameScan::Invalid {
            position,
            header: None,
            computed_crc: None,
            reason,
        });
    };
    if header_bytes.iter().all(|&byte| byte == 0) {
        return Ok(FrameScan::EndOfData {
            position,
            zeros_end: limit,
        });
    }
    let header = match FrameHeader::decode(&header_bytes) {
        Ok(header) => header,
        Err(FrameError::Zeroed) => {
            return Ok(FrameScan::EndOfData {
                position,
                zeros_end: limit,
            })
        }
        Err(_) => {
            return Ok(FrameScan::Invalid {
                position,
                header: None,
                computed_crc: None,
                reason,
            })
        }
    };
    let payload_at = position + FRAME_HEADER_BYTES as u64;
    let payload: Option<Bytes> = reader
        .get(payload_at, header.payload_bytes as usize)
        .await?;
    let computed_crc = payload.as_ref().and_then(|payload| {
        // batch_crc needs the batch header's fields before `attributes`.
        BatchInfo::parse(payload).ok().map(|_| batch_crc(payload))
    });
    Ok(FrameScan::Invalid {
        position,
        header: Some(header),
        computed_crc,
        reason,
    })
}

/// The position of the next valid frame at or after `from` (on the frame alignment), if any.
async fn next_valid_frame(
    reader: &mut ChunkReader,
    from: u64,
    limit: u64,
) -> anyhow::Result<Option<u64>> {
    let found = find_valid_frame(reader, from, limit, |_| true).await?;
    Ok(found.map(|(position, _)| position))
}
