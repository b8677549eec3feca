//! The leader epoch cache (KIP-101): for each leader epoch a partition's log has seen, the
//! offset its first record got. It answers OffsetForLeaderEpoch, which is how a follower finds
//! where its log stops agreeing with the leader's after a leader change, instead of truncating
//! to its high watermark (which KIP-101 showed can lose acknowledged records or let logs
//! diverge). Kafka's `LeaderEpochFileCache`, without the file: the log that owns the cache
//! checkpoints it and truncates it with the log.

use ringlog_engine::{LeaderEpoch, Offset};

use super::{ReplicationError, UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET};

/// One leader epoch and the offset of its first record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: LeaderEpoch,
    pub start_offset: Offset,
}

/// An OffsetForLeaderEpoch answer for one partition: the largest epoch at or below the one
/// asked for, and the offset where that epoch ends (the next epoch's start offset, or the log
/// end for the latest epoch). Either may be Kafka's "undefined" (-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEndOffset {
    pub epoch: LeaderEpoch,
    pub end_offset: Offset,
}

impl EpochEndOffset {
    /// Kafka's answer when nothing is known about the epoch asked for.
    pub const UNDEFINED: EpochEndOffset = EpochEndOffset {
        epoch: UNDEFINED_EPOCH,
        end_offset: UNDEFINED_EPOCH_OFFSET,
    };
}

/// The epochs of one partition's log, oldest first; both epochs and start offsets strictly
/// increase. Owned by the partition's shard, next to its log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    pub fn new() -> Self {
        LeaderEpochCache::default()
    }

    /// A cache read back from a checkpoint; refused unless epochs and start offsets are
    /// non-negative and strictly increasing, as [`LeaderEpochCache::assign`] keeps them.
    pub fn from_entries(entries: Vec<EpochEntry>) -> Result<Self, ReplicationError> {
        for entry in &entries {
            check_entry(*entry)?;
        }
        if let Some(pair) = entries.windows(2).find(|pair| {
            pair[0].epoch >= pair[1].epoch || pair[0].start_offset >= pair[1].start_offset
        }) {
            return Err(ReplicationError::InvalidPosition(format!(
                "epoch entries out of order: {:?} then {:?}",
                pair[0], pair[1]
            )));
        }
        Ok(LeaderEpochCache { entries })
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_entry(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.entries.last().map(|entry| entry.epoch)
    }

    /// Records that `epoch` starts at `start_offset`: called by a new leader with its log end,
    /// and by a follower for the first record it appends of each epoch. Returns whether the
    /// cache changed (so the caller knows to checkpoint it).
    ///
    /// Kafka's rule: nothing changes if this is already the latest epoch with an earlier or the
    /// same start; otherwise every entry that the new one would make non-monotonic (an epoch at
    /// or above it, or a start offset at or past it) is dropped first. That happens when a log
    /// was truncated below an epoch's start without the cache being told.
    pub fn assign(
        &mut self,
        epoch: LeaderEpoch,
        start_offset: Offset,
    ) -> Result<bool, ReplicationError> {
        let entry = EpochEntry {
            epoch,
            start_offset,
        };
        check_entry(entry)?;
        if let Some(latest) = self.latest_entry() {
            if latest.epoch == epoch && latest.start_offset <= start_offset {
                return Ok(false);
            }
        }
        while let Some(latest) = self.latest_entry() {
            if latest.epoch >= epoch || latest.start_offset >= start_offset {
                self.entries.pop();
            } else {
                break;
            }
        }
        self.entries.push(entry);
        Ok(true)
    }

    /// Drops the epochs that start at or past `end_offset`, after the log was truncated to it.
    pub fn truncate_from_end(&mut self, end_offset: Offset) {
        self.entries.retain(|entry| entry.start_offset < end_offset);
    }

    /// Drops the epochs that end before `start_offset`, after the log start moved there
    /// (retention, DeleteRecords). The epoch that `start_offset` falls in now starts there.
    pub fn truncate_from_start(&mut self, start_offset: Offset) {
        let first_kept = self
            .entries
            .iter()
            .rposition(|entry| entry.start_offset <= start_offset);
        if let Some(index) = first_kept {
            self.entries.drain(..index);
            self.entries[0].start_offset = start_offset;
        }
    }

    /// The answer to OffsetForLeaderEpoch(`requested`) from a log ending at `log_end_offset`,
    /// exactly as Kafka's `LeaderEpochFileCache.endOffsetFor`:
    /// - an undefined request, an empty cache or an epoch above every known one: undefined;
    /// - the latest epoch: it ends at the log end;
    /// - an epoch below every known one: the requested epoch itself, ending where the first
    ///   known epoch starts (the epochs in between may have gone with the log's start);
    /// - otherwise the largest known epoch at or below the requested one, ending where the
    ///   next known epoch starts.
    pub fn end_offset_for(&self, requested: LeaderEpoch, log_end_offset: Offset) -> EpochEndOffset {
        if requested == UNDEFINED_EPOCH {
            return EpochEndOffset::UNDEFINED;
        }
        if self.latest_epoch() == Some(requested) {
            return EpochEndOffset {
                epoch: requested,
                end_offset: log_end_offset,
            };
        }
        let higher = self.entries.iter().find(|entry| entry.epoch > requested);
        let floor = self
            .entries
            .iter()
            .rev()
            .find(|entry| entry.epoch <= requested);
        match (floor, higher) {
            (_, None) => EpochEndOffset::UNDEFINED,
            (None, Some(higher)) => EpochEndOffset {
                epoch: requested,
                end_offset: higher.start_offset,
            },
            (Some(floor), Some(higher)) => EpochEndOffset {
                epoch: floor.epoch,
                end_offset: higher.start_offset,
            },
        }
    }
}

fn check_entry(entry: EpochEntry) -> Result<(), ReplicationError> {
    if entry.epoch.0 < 0 || entry.start_offset.0 < 0 {
        return Err(ReplicationError::InvalidPosition(format!(
            "epoch entry {entry:?} is negative"
        )));
    }
    Ok(())
}

/// A cache of (epoch, start offset) pairs, for tests.
#[cfg(test)]
pub(crate) fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
    LeaderEpochCache::from_entries(
        entries
            .iter()
            .map(|&(epoch, start)| EpochEntry {
                epoch: LeaderEpoch(epoch),
                start_offset: Offset(start),
            })
            .collect(),
    )
    .expect("valid entries")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(epoch: i32, end_offset: i64) -> EpochEndOffset {
        EpochEndOffset {
            epoch: LeaderEpoch(epoch),
            end_offset: Offset(end_offset),
        }
    }

    #[test]
    fn end_offset_for_follows_kafka_in_every_case() {
        let epochs = cache(&[(1, 0), (3, 10), (5, 20)]);
        let log_end = Offset(25);
        // (requested epoch, expected answer): a table of Kafka's endOffsetFor cases.
        let table = [
            (-1, EpochEndOffset::UNDEFINED),
            (0, answer(0, 0)), // below every known epoch: its own epoch, first start
            (1, answer(1, 10)), // known: ends where the next starts
            (2, answer(1, 10)), // unknown, between: the floor epoch
            (3, answer(3, 20)), // known
            (4, answer(3, 20)), // unknown, between
            (5, answer(5, 25)), // latest: the log end
            (6, EpochEndOffset::UNDEFINED), // above the latest
        ];
        for (requested, expected) in table {
            assert_eq!(
                epochs.end_offset_for(LeaderEpoch(requested), log_end),
                expected,
                "epoch {requested}"
            );
        }
        assert_eq!(
            LeaderEpochCache::new().end_offset_for(LeaderEpoch(0), Offset(0)),
            EpochEndOffset::UNDEFINED
        );
    }

    #[test]
    fn assign_keeps_entries_monotonic() {
        let mut epochs = LeaderEpochCache::new();
        assert_eq!(epochs.assign(LeaderEpoch(1), Offset(0)), Ok(true));
        // The same epoch again at a later offset (each later batch of the epoch): no change.
        assert_eq!(epochs.assign(LeaderEpoch(1), Offset(5)), Ok(false));
        assert_eq!(epochs.assign(LeaderEpoch(2), Offset(5)), Ok(true));
        assert_eq!(epochs, cache(&[(1, 0), (2, 5)]));
        // An older epoch after a newer one drops the newer (the log went back without telling).
        assert_eq!(epochs.assign(LeaderEpoch(1), Offset(3)), Ok(true));
        assert_eq!(epochs, cache(&[(1, 3)]));
        // A newer epoch at an offset at or before existing starts drops those.
        let mut epochs = cache(&[(1, 0), (2, 5), (3, 8)]);
        assert_eq!(epochs.assign(LeaderEpoch(4), Offset(5)), Ok(true));
        assert_eq!(epochs, cache(&[(1, 0), (4, 5)]));
        assert!(epochs.assign(LeaderEpoch(-1), Offset(9)).is_err());
        assert!(epochs.assign(LeaderEpoch(9), Offset(-2)).is_err());
        assert_eq!(epochs, cache(&[(1, 0), (4, 5)]));
    }

    #[test]
    fn truncation_from_either_end() {
        let mut epochs = cache(&[(1, 0), (3, 10), (5, 20)]);
        epochs.truncate_from_end(Offset(20));
        assert_eq!(epochs, cache(&[(1, 0), (3, 10)]));
        epochs.truncate_from_end(Offset(11));
        assert_eq!(epochs, cache(&[(1, 0), (3, 10)]));
        epochs.truncate_from_start(Offset(12));
        assert_eq!(epochs, cache(&[(3, 12)]));
        epochs.truncate_from_end(Offset(0));
        assert_eq!(epochs, LeaderEpochCache::new());
    }

    #[test]
    fn checkpoints_out_of_order_are_refused() {
        let entries = |pairs: &[(i32, i64)]| {
            pairs
                .iter()
                .map(|&(epoch, start)| EpochEntry {
                    epoch: LeaderEpoch(epoch),
                    start_offset: Offset(start),
                })
                .collect::<Vec<_>>()
        };
        assert!(LeaderEpochCache::from_entries(entries(&[(2, 0), (1, 5)])).is_err());
        assert!(LeaderEpochCache::from_entries(entries(&[(1, 5), (2, 5)])).is_err());
        assert!(LeaderEpochCache::from_entries(entries(&[(-1, 0)])).is_err());
    }
}
