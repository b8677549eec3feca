//! The sparse offset and time index of one segment, and its checkpoint file.
//!
//! One entry every `index.interval.bytes` of frames: the entry's relative offset, its frame's
//! position, and the largest batch timestamp of all frames *before* it. A lookup by offset
//! starts reading at the last entry at or below the offset; a lookup by timestamp starts at the
//! last entry whose preceding maximum is below the target (nothing earlier can match). Both
//! columns live in one file because every lookup wants the position anyway.
//!
//! The checkpoint file (`<base offset>.index`) also records how far the segment was validated
//! (`covered_position`) and the segment's statistics at that point, so recovery resumes from
//! there instead of rescanning the segment. It is checksummed; a damaged or missing one is
//! rebuilt from the log.

use crate::error::{Error, Result};

/// Magic at the start of an index checkpoint file: "RLI1" as a little-endian u32.
pub const INDEX_MAGIC: u32 = u32::from_le_bytes(*b"RLI1");
/// Version of the checkpoint layout.
pub const INDEX_VERSION: u16 = 1;
/// Size of the checkpoint header (see `docs/on-disk-format.md`).
pub const INDEX_HEADER_BYTES: usize = 48;
/// Size of one entry in the checkpoint file.
pub const INDEX_ENTRY_BYTES: usize = 16;

/// One sparse index entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// Base offset of the indexed frame's batch, relative to the segment's base offset.
    pub relative_offset: u32,
    /// Position of the indexed frame in the segment file.
    pub position: u32,
    /// Largest max-timestamp of all batches before this frame (`i64::MIN` if none).
    pub max_timestamp_before: i64,
}

/// The in-memory sparse index of a segment. Owned by the partition's shard.
#[derive(Clone, Debug)]
pub struct SegmentIndex {
    entries: Vec<IndexEntry>,
    interval_bytes: u64,
    bytes_since_entry: u64,
    running_max_timestamp: i64,
}

/// Segment statistics at the point the checkpoint covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexCheckpoint {
    /// Frames in `[0, covered_position)` were validated when the checkpoint was written.
    pub covered_position: u64,
    /// The offset after the last frame below `covered_position`.
    pub next_offset: i64,
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: i64,
}

impl SegmentIndex {
    pub fn new(interval_bytes: u64) -> Self {
        SegmentIndex {
            entries: Vec::new(),
            interval_bytes: interval_bytes.max(1),
            bytes_since_entry: 0,
            running_max_timestamp: i64::MIN,
        }
    }

    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// Records a frame appended at `position`. The first frame is always indexed.
    pub fn on_append(
        &mut self,
        relative_offset: u32,
        position: u64,
        frame_bytes: u64,
        batch_max_timestamp: i64,
    ) {
        if self.entries.is_empty() || self.bytes_since_entry >= self.interval_bytes {
            self.entries.push(IndexEntry {
                relative_offset,
                position: position_u32(position),
                max_timestamp_before: self.running_max_timestamp,
            });
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += frame_bytes;
        self.running_max_timestamp = self.running_max_timestamp.max(batch_max_timestamp);
    }

    /// Position from which to scan for the frame holding `relative_offset`.
    pub fn position_for_offset(&self, relative_offset: u32) -> u64 {
        let after = self
            .entries
            .partition_point(|entry| entry.relative_offset <= relative_offset);
        after
            .checked_sub(1)
            .map_or(0, |index| u64::from(self.entries[index].position))
    }

    /// Position from which to scan for the first batch with max timestamp >= `timestamp`.
    pub fn position_for_timestamp(&self, timestamp: i64) -> u64 {
        let after = self
            .entries
            .partition_point(|entry| entry.max_timestamp_before < timestamp);
        after
            .checked_sub(1)
            .map_or(0, |index| u64::from(self.entries[index].position))
    }

    /// Drops entries at or past `position` (after a truncation). The running maximum is reset
    /// conservatively from the last remaining entry; the caller re-feeds frames past it.
    pub fn truncate_to_position(&mut self, position: u64) {
        self.entries
            .retain(|entry| u64::from(entry.position) < position);
        self.bytes_since_entry = self.interval_bytes;
        self.running_max_timestamp = self
            .entries
            .last()
            .map_or(i64::MIN, |entry| entry.max_timestamp_before);
    }

    /// Serializes the index and the segment statistics it covers.
    pub fn encode(&self, checkpoint: &IndexCheckpoint) -> Vec<u8> {
        let mut bytes =
            Vec::with_capacity(INDEX_HEADER_BYTES + self.entries.len() * INDEX_ENTRY_BYTES);
        bytes.extend_from_slice(&INDEX_MAGIC.to_le_bytes());
        bytes.extend_from_slice(&INDEX_VERSION.to_le_bytes());
        bytes.extend_from_slice(&0_u16.to_le_bytes());
        bytes.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&0_u32.to_le_bytes()); // checksum, filled below
        bytes.extend_from_slice(&checkpoint.covered_position.to_le_bytes());
        bytes.extend_from_slice(&checkpoint.next_offset.to_le_bytes());
        bytes.extend_from_slice(&checkpoint.max_timestamp.to_le_bytes());
        bytes.extend_from_slice(&checkpoint.offset_of_max_timestamp.to_le_bytes());
        debug_assert_eq!(bytes.len(), INDEX_HEADER_BYTES);
        for entry in &self.entries {
            bytes.extend_from_slice(&entry.relative_offset.to_le_bytes());
            bytes.extend_from_slice(&entry.position.to_le_bytes());
            bytes.extend_from_slice(&entry.max_timestamp_before.to_le_bytes());
        }
        let crc = checksum(&bytes);
        bytes[12..16].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Reads a checkpoint file; any damage is an error (the caller rebuilds from the log).
    pub fn decode(bytes: &[u8], interval_bytes: u64) -> Result<(SegmentIndex, IndexCheckpoint)> {
        let damaged = |reason: &str| Error::InvalidBatch(format!("index checkpoint: {reason}"));
        if bytes.len() < INDEX_HEADER_BYTES {
            return Err(damaged("shorter than its header"));
        }
        let u32_at = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let i64_at = |at: usize| {
            let mut buffer = [0_u8; 8];
            buffer.copy_from_slice(&bytes[at..at + 8]);
            i64::from_le_bytes(buffer)
        };
        if u32_at(0) != INDEX_MAGIC {
            return Err(damaged("bad magic"));
        }
        if u16::from_le_bytes([bytes[4], bytes[5]]) != INDEX_VERSION {
            return Err(damaged("unknown version"));
        }
        let count = u32_at(8) as usize;
        let expected_len = count
            .checked_mul(INDEX_ENTRY_BYTES)
            .and_then(|len| len.checked_add(INDEX_HEADER_BYTES))
            .ok_or_else(|| damaged("absurd entry count"))?;
        if bytes.len() != expected_len {
            return Err(damaged("length does not match entry count"));
        }
        if u32_at(12) != checksum(bytes) {
            return Err(damaged("checksum mismatch"));
        }
        let checkpoint = IndexCheckpoint {
            covered_position: i64_at(16) as u64,
            next_offset: i64_at(24),
            max_timestamp: i64_at(32),
            offset_of_max_timestamp: i64_at(40),
        };
        let mut index = SegmentIndex::new(interval_bytes);
        for chunk in bytes[INDEX_HEADER_BYTES..].chunks_exact(INDEX_ENTRY_BYTES) {
            let entry = IndexEntry {
                relative_offset: u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
                position: u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]),
                max_timestamp_before: i64::from_le_bytes([
                    chunk[8], chunk[9], chunk[10], chunk[11], chunk[12], chunk[13], chunk[14],
                    chunk[15],
                ]),
            };
            if u64::from(entry.position) >= checkpoint.covered_position.max(1)
                || index.entries.last().is_some_and(|last| {
                    last.position >= entry.position || last.relative_offset > entry.relative_offset
                })
            {
                return Err(damaged("entries out of order or past the covered position"));
            }
            index.entries.push(entry);
        }
        index.running_max_timestamp = checkpoint.max_timestamp;
        index.bytes_since_entry = index.interval_bytes;
        Ok((index, checkpoint))
    }
}

/// Checksum of a checkpoint file with its checksum field taken as zero.
fn checksum(bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[..12]);
    hasher.update(&[0; 4]);
    hasher.update(&bytes[16..]);
    hasher.finalize()
}

fn position_u32(position: u64) -> u32 {
    // Segments are capped below 4 GiB (config::SEGMENT_BYTES_MAX), so positions fit.
    u32::try_from(position).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_entries_and_lookups() {
        let mut index = SegmentIndex::new(100);
        // Ten frames of 60 bytes: an entry at the first frame and then every 120 bytes.
        for frame in 0..10_u32 {
            index.on_append(
                frame * 3,
                u64::from(frame) * 60,
                60,
                1000 + i64::from(frame),
            );
        }
        let positions: Vec<u32> = index.entries().iter().map(|entry| entry.position).collect();
        assert_eq!(positions, vec![0, 120, 240, 360, 480]);
        assert_eq!(index.position_for_offset(0), 0);
        assert_eq!(index.position_for_offset(7), 120);
        assert_eq!(index.position_for_offset(29), 480);
        // Frames before position 240 have timestamps up to 1003.
        assert_eq!(index.position_for_timestamp(1003), 120);
        assert_eq!(index.position_for_timestamp(1004), 240);
        assert_eq!(index.position_for_timestamp(0), 0);
    }

    #[test]
    fn checkpoint_round_trips_and_detects_damage() {
        let mut index = SegmentIndex::new(10);
        for frame in 0..5_u32 {
            index.on_append(frame, u64::from(frame) * 64, 64, i64::from(frame));
        }
        let checkpoint = IndexCheckpoint {
            covered_position: 320,
            next_offset: 105,
            max_timestamp: 4,
            offset_of_max_timestamp: 104,
        };
        let bytes = index.encode(&checkpoint);
        let (decoded, decoded_checkpoint) = SegmentIndex::decode(&bytes, 10).expect("valid");
        assert_eq!(decoded.entries(), index.entries());
        assert_eq!(decoded_checkpoint, checkpoint);
        for position in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[position] ^= 0x40;
            assert!(
                SegmentIndex::decode(&damaged, 10).is_err(),
                "flip at {position}"
            );
        }
        assert!(SegmentIndex::decode(&bytes[..bytes.len() - 1], 10).is_err());
    }
}
