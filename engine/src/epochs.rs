//! The leader epoch cache (Kafka's `leader-epoch-checkpoint`, KIP-101): for each leader epoch
//! the first offset written under it, kept in memory by the partition log and checkpointed to
//! a checksummed file in the partition directory. A follower compares it with a new leader's to
//! find where their logs diverge and truncates there.

use std::path::Path;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::format::{FrameHeader, FRAME_HEADER_BYTES};
use crate::rt::fs::Storage;
use crate::segment::{ChunkReader, Segment};

/// Name of the leader epoch checkpoint in a partition directory (Kafka's name).
pub const LEADER_EPOCH_FILE: &str = "leader-epoch-checkpoint";

/// Magic of the leader epoch checkpoint: "RLE1".
const EPOCH_MAGIC: u32 = u32::from_le_bytes(*b"RLE1");

/// Bytes before the entries: magic and entry count.
const EPOCH_FILE_HEADER_BYTES: usize = 8;

/// Bytes of one entry: epoch (i32) and start offset (i64).
const EPOCH_ENTRY_BYTES: usize = 12;

/// Bytes of the trailing CRC-32.
const EPOCH_FILE_CRC_BYTES: usize = 4;

/// One epoch: the first offset written under it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// The entries of a log's leader epoch cache, epochs and start offsets both strictly
/// increasing. Owned by the partition's shard (inside its `PartitionLog`).
///
/// Epochs below 0 are never recorded: -1 is Kafka's `NO_PARTITION_LEADER_EPOCH`, the epoch of
/// batches written without one (old message formats, tools). The single-node broker appends
/// with epoch 0, so its logs hold one entry, `(0, first offset appended)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderEpochs {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochs {
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Whether [`LeaderEpochs::assign`] would record `epoch`: it is not negative and newer
    /// than the latest entry's.
    pub fn is_newer(&self, epoch: i32) -> bool {
        epoch >= 0 && self.latest().is_none_or(|latest| epoch > latest.epoch)
    }

    /// Kafka's `assign`: records that `epoch` starts at `start_offset` if `epoch` is newer than
    /// the latest entry's. An entry starting at or past `start_offset` (left by an append that
    /// recorded its epoch and then appended nothing) is replaced, so start offsets stay strictly
    /// increasing. Returns whether the entries changed.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        assert!(start_offset >= 0, "epoch {epoch} at offset {start_offset}");
        if !self.is_newer(epoch) {
            return false;
        }
        while self
            .latest()
            .is_some_and(|latest| latest.start_offset >= start_offset)
        {
            self.entries.pop();
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        self.assert_invariants();
        true
    }

    /// Kafka's `truncateFromEnd`: removes the entries starting at or past `end_offset` (the
    /// log was truncated there). Returns whether the entries changed.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|entry| entry.start_offset < end_offset);
        self.entries.len() != before
    }

    /// Kafka's `truncateFromStart`: the log now starts at `start_offset`; the entries wholly
    /// before it go, except the last one at or before it, which moves to `start_offset` (the
    /// epoch of the log's first batch). Returns whether the entries changed.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let at_or_before = self
            .entries
            .iter()
            .take_while(|entry| entry.start_offset <= start_offset)
            .count();
        if at_or_before == 0 {
            return false;
        }
        let keeper = self.entries[at_or_before - 1];
        if at_or_before == 1 && keeper.start_offset == start_offset {
            return false;
        }
        self.entries.drain(..at_or_before);
        self.entries.insert(
            0,
            EpochEntry {
                epoch: keeper.epoch,
                start_offset,
            },
        );
        self.assert_invariants();
        true
    }

    fn assert_invariants(&self) {
        for pair in self.entries.windows(2) {
            assert!(
                pair[0].epoch < pair[1].epoch && pair[0].start_offset < pair[1].start_offset,
                "leader epochs out of order: {:?}",
                self.entries
            );
        }
    }

    /// The checkpoint file's bytes (layout in `docs/on-disk-format.md`).
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(
            EPOCH_FILE_HEADER_BYTES + self.entries.len() * EPOCH_ENTRY_BYTES + EPOCH_FILE_CRC_BYTES,
        );
        bytes.extend_from_slice(&EPOCH_MAGIC.to_le_bytes());
        let count = u32::try_from(self.entries.len()).expect("fewer than 2^32 leader epochs");
        bytes.extend_from_slice(&count.to_le_bytes());
        for entry in &self.entries {
            bytes.extend_from_slice(&entry.epoch.to_le_bytes());
            bytes.extend_from_slice(&entry.start_offset.to_le_bytes());
        }
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        // Pair assertion: what we write must read back as what we meant.
        debug_assert_eq!(LeaderEpochs::decode(&bytes).as_ref(), Ok(self));
        bytes
    }

    /// Reads a checkpoint file, checking its magic, length, checksum and entry order.
    pub fn decode(bytes: &[u8]) -> std::result::Result<LeaderEpochs, String> {
        let fixed_bytes = EPOCH_FILE_HEADER_BYTES + EPOCH_FILE_CRC_BYTES;
        if bytes.len() < fixed_bytes {
            return Err(format!("{} bytes is too short", bytes.len()));
        }
        let word = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        if word(0) != EPOCH_MAGIC {
            return Err("bad magic".to_string());
        }
        let count = word(4) as usize;
        let expected_bytes = count
            .checked_mul(EPOCH_ENTRY_BYTES)
            .and_then(|entries| entries.checked_add(fixed_bytes));
        if expected_bytes != Some(bytes.len()) {
            return Err(format!("{count} entries do not fit {} bytes", bytes.len()));
        }
        let crc_at = bytes.len() - EPOCH_FILE_CRC_BYTES;
        if crc32fast::hash(&bytes[..crc_at]) != word(crc_at) {
            return Err("checksum mismatch".to_string());
        }
        let mut entries = Vec::with_capacity(count);
        for index in 0..count {
            let at = EPOCH_FILE_HEADER_BYTES + index * EPOCH_ENTRY_BYTES;
            let epoch = word(at) as i32;
            let mut offset = [0_u8; 8];
            offset.copy_from_slice(&bytes[at + 4..at + EPOCH_ENTRY_BYTES]);
            let start_offset = i64::from_le_bytes(offset);
            let entry = EpochEntry {
                epoch,
                start_offset,
            };
            let ordered = entries.last().is_none_or(|previous: &EpochEntry| {
                previous.epoch < epoch && previous.start_offset < start_offset
            });
            if epoch < 0 || start_offset < 0 || !ordered {
                return Err(format!("entry {index} {entry:?} out of order"));
            }
            entries.push(entry);
        }
        Ok(LeaderEpochs { entries })
    }
}

/// What the partition directory held.
pub enum EpochFile {
    Loaded(LeaderEpochs),
    Missing,
    /// The file exists but does not decode; the reason says why.
    Damaged(String),
}

/// Reads the checkpoint in `dir`. An I/O error is an error, not a missing file.
pub async fn read_epoch_file(storage: &Storage, dir: &Path) -> Result<EpochFile> {
    let Some(bytes) = storage.read_file(&dir.join(LEADER_EPOCH_FILE)).await? else {
        return Ok(EpochFile::Missing);
    };
    Ok(match LeaderEpochs::decode(&bytes) {
        Ok(epochs) => EpochFile::Loaded(epochs),
        Err(reason) => EpochFile::Damaged(reason),
    })
}

/// Replaces the checkpoint in `dir` atomically and durably (temporary file, fdatasync, rename,
/// directory sync).
pub async fn write_epoch_file(storage: &Storage, dir: &Path, epochs: &LeaderEpochs) -> Result<()> {
    storage
        .write_file_atomic(&dir.join(LEADER_EPOCH_FILE), &epochs.encode())
        .await
}

/// Adds the epochs of a segment's frames to `epochs`, as their appends did: every frame header
/// carries its batch's leader epoch. Reads the segment's frames up to its end (the whole file:
/// frames lie back to back), so it is only used when the checkpoint is missing or damaged.
/// The segment was validated (or its index checkpoint checked) when it was opened, so a header
/// that fails to decode here is corruption.
pub async fn scan_segment_epochs(segment: &Segment, epochs: &mut LeaderEpochs) -> Result<()> {
    let end = segment.end_position();
    let mut reader = ChunkReader::new(segment.file().clone(), end);
    let mut position = 0;
    while position < end {
        let header_bytes: Option<Bytes> = reader.get(position, FRAME_HEADER_BYTES).await?;
        let header = header_bytes
            .ok_or_else(|| "truncated frame header".to_string())
            .and_then(|bytes| {
                FrameHeader::decode(&bytes)
                    .map_err(|error| format!("invalid frame header: {error:?}"))
            });
        let header = match header {
            Ok(header) => header,
            Err(reason) => {
                return Err(Error::Corrupt {
                    path: segment.log_path().to_path_buf(),
                    position,
                    reason,
                })
            }
        };
        epochs.assign(header.leader_epoch, header.base_offset);
        position += header.frame_bytes();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(epochs: &LeaderEpochs) -> Vec<(i32, i64)> {
        epochs
            .entries()
            .iter()
            .map(|entry| (entry.epoch, entry.start_offset))
            .collect()
    }

    #[test]
    fn assign_records_only_newer_epochs() {
        let mut epochs = LeaderEpochs::default();
        assert!(!epochs.assign(-1, 0), "no epoch is not recorded");
        assert!(epochs.assign(0, 0));
        assert!(!epochs.assign(0, 10), "same epoch");
        assert!(epochs.assign(3, 10));
        assert!(!epochs.assign(2, 20), "older epoch");
        assert!(epochs.assign(4, 30));
        assert_eq!(entries(&epochs), [(0, 0), (3, 10), (4, 30)]);
        // An epoch recorded at the log end with nothing appended under it is replaced.
        assert!(epochs.assign(5, 30));
        assert_eq!(entries(&epochs), [(0, 0), (3, 10), (5, 30)]);
    }

    #[test]
    fn truncation_from_either_end() {
        let mut epochs = LeaderEpochs::default();
        for (epoch, start) in [(1, 0), (2, 10), (4, 20), (5, 30)] {
            epochs.assign(epoch, start);
        }
        assert!(!epochs.truncate_from_end(31));
        assert!(epochs.truncate_from_end(30));
        assert_eq!(entries(&epochs), [(1, 0), (2, 10), (4, 20)]);
        assert!(!epochs.truncate_from_start(0));
        assert!(epochs.truncate_from_start(15));
        assert_eq!(entries(&epochs), [(2, 15), (4, 20)]);
        assert!(epochs.truncate_from_start(20));
        assert_eq!(entries(&epochs), [(4, 20)]);
        assert!(!epochs.truncate_from_start(20));
        assert!(epochs.truncate_from_start(25));
        assert_eq!(entries(&epochs), [(4, 25)]);
        assert!(epochs.truncate_from_end(0));
        assert!(epochs.entries().is_empty());
        assert!(!epochs.truncate_from_start(50));
    }

    #[test]
    fn checkpoint_round_trip_and_damage() {
        let mut epochs = LeaderEpochs::default();
        let empty = epochs.encode();
        assert_eq!(empty.len(), 12);
        assert_eq!(LeaderEpochs::decode(&empty), Ok(LeaderEpochs::default()));
        epochs.assign(0, 0);
        epochs.assign(7, 1 << 40);
        let bytes = epochs.encode();
        assert_eq!(bytes.len(), 8 + 2 * 12 + 4);
        assert_eq!(&bytes[..4], b"RLE1");
        assert_eq!(LeaderEpochs::decode(&bytes), Ok(epochs.clone()));
        for position in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[position] ^= 0x40;
            assert!(
                LeaderEpochs::decode(&damaged).is_err(),
                "flip at {position}"
            );
        }
        assert!(LeaderEpochs::decode(&bytes[..bytes.len() - 1]).is_err());
        // Well-formed and checksummed, but out of order: refused too.
        let mut swapped = Vec::new();
        swapped.extend_from_slice(b"RLE1");
        swapped.extend_from_slice(&2_u32.to_le_bytes());
        for (epoch, start) in [(7_i32, 5_i64), (3, 9)] {
            swapped.extend_from_slice(&epoch.to_le_bytes());
            swapped.extend_from_slice(&start.to_le_bytes());
        }
        let crc = crc32fast::hash(&swapped);
        swapped.extend_from_slice(&crc.to_le_bytes());
        assert!(LeaderEpochs::decode(&swapped).is_err());
    }
}
