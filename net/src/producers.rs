//! Idempotent producer state of one partition: per producer id, its epoch and its last batches'
//! sequence ranges, so a retried batch is acknowledged with its original offsets instead of
//! being written twice, and a gap in sequence numbers is refused. A plain struct (no I/O): the
//! partition's shard consults it inside the log's append gate, and rebuilds it from the log's
//! batches when the partition opens, which is how it survives a restart.

use std::collections::{HashMap, VecDeque};

use ringlog_engine::format::BatchInfo;
use serde::{Deserialize, Serialize};

use crate::codes::KafkaError;

/// Kafka remembers the last 5 batches per producer and partition: the most a producer may
/// have in flight with idempotence (`max.in.flight.requests.per.connection` <= 5).
pub const PRODUCER_BATCHES_REMEMBERED: usize = 5;

/// The producer-state snapshot in a partition's directory, written at clean shutdown so the next
/// start reads only the batches after it instead of the whole log.
pub const PRODUCER_SNAPSHOT_FILE: &str = "producer-state.json";

/// Version of the snapshot's format; a snapshot of another version is ignored (full rebuild).
const SNAPSHOT_VERSION: u32 = 1;

/// `producerId` of a batch written without idempotence.
pub const NO_PRODUCER_ID: i64 = -1;

/// One batch's sequence range and where it was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchRecord {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Clone, Debug, Default)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchRecord>,
}

/// What the state says about an incoming batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Write it.
    Append,
    /// Already written (a retry): acknowledge with the original offsets.
    Duplicate(BatchRecord),
    /// Refuse it with this error.
    Reject(KafkaError),
}

/// Owned by the partition's shard.
#[derive(Clone, Debug, Default)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerStates {
    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    /// Checks `batch` against the producer's state (Kafka's rules: an older epoch is fenced; a
    /// new epoch starts at sequence 0; within an epoch each batch follows the last, wrapping
    /// at `i32::MAX`; a producer the partition knows nothing about may start anywhere, as after
    /// its batches were deleted by retention).
    pub fn check(&self, batch: &BatchInfo) -> SequenceCheck {
        if batch.producer_id == NO_PRODUCER_ID {
            return SequenceCheck::Append;
        }
        if batch.producer_id < 0 || batch.producer_epoch < 0 || batch.base_sequence < 0 {
            return SequenceCheck::Reject(KafkaError::InvalidRecord);
        }
        let Some(entry) = self.producers.get(&batch.producer_id) else {
            return SequenceCheck::Append;
        };
        if batch.producer_epoch < entry.epoch {
            return SequenceCheck::Reject(KafkaError::InvalidProducerEpoch);
        }
        let last_sequence = last_sequence_of(batch);
        if batch.producer_epoch > entry.epoch {
            return if batch.base_sequence == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::Reject(KafkaError::OutOfOrderSequenceNumber)
            };
        }
        if let Some(original) = entry.batches.iter().find(|record| {
            record.first_sequence == batch.base_sequence && record.last_sequence == last_sequence
        }) {
            return SequenceCheck::Duplicate(*original);
        }
        match entry.batches.back() {
            Some(last) if batch.base_sequence != next_sequence(last.last_sequence) => {
                SequenceCheck::Reject(KafkaError::OutOfOrderSequenceNumber)
            }
            _ => SequenceCheck::Append,
        }
    }

    /// Records a batch written at `base_offset` (after [`ProducerStates::check`] said
    /// `Append`, or while rebuilding from the log).
    pub fn record(&mut self, batch: &BatchInfo, base_offset: i64) {
        if batch.producer_id < 0 {
            return;
        }
        let entry = self.producers.entry(batch.producer_id).or_default();
        if batch.producer_epoch != entry.epoch {
            entry.epoch = batch.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(BatchRecord {
            first_sequence: batch.base_sequence,
            last_sequence: last_sequence_of(batch),
            base_offset,
            last_offset: base_offset + i64::from(batch.last_offset_delta),
        });
        while entry.batches.len() > PRODUCER_BATCHES_REMEMBERED {
            entry.batches.pop_front();
        }
    }
}

/// One producer in a snapshot: id, epoch, and its batches as
/// (first sequence, last sequence, base offset, last offset).
type SnapshotProducer = (i64, i16, Vec<(i32, i32, i64, i64)>);

/// A snapshot of a partition's producer state as of `offset` (the log end when it was taken).
#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    offset: i64,
    producers: Vec<SnapshotProducer>,
}

impl ProducerStates {
    /// The state as a snapshot taken at log offset `offset`.
    pub fn to_snapshot(&self, offset: i64) -> Vec<u8> {
        let mut producers: Vec<_> = self
            .producers
            .iter()
            .map(|(id, entry)| {
                let batches = entry
                    .batches
                    .iter()
                    .map(|record| {
                        (
                            record.first_sequence,
                            record.last_sequence,
                            record.base_offset,
                            record.last_offset,
                        )
                    })
                    .collect();
                (*id, entry.epoch, batches)
            })
            .collect();
        producers.sort_by_key(|(id, _, _)| *id);
        let snapshot = Snapshot {
            version: SNAPSHOT_VERSION,
            offset,
            producers,
        };
        serde_json::to_vec(&snapshot).expect("a snapshot always serializes")
    }

    /// The state in a snapshot and the log offset it was taken at; `None` if the bytes are not
    /// a snapshot of this version (the caller then rebuilds from the whole log).
    pub fn from_snapshot(bytes: &[u8]) -> Option<(ProducerStates, i64)> {
        let snapshot: Snapshot = serde_json::from_slice(bytes).ok()?;
        if snapshot.version != SNAPSHOT_VERSION || snapshot.offset < 0 {
            return None;
        }
        let producers = snapshot
            .producers
            .into_iter()
            .map(|(id, epoch, batches)| {
                let batches = batches
                    .into_iter()
                    .rev()
                    .take(PRODUCER_BATCHES_REMEMBERED)
                    .rev()
                    .map(
                        |(first_sequence, last_sequence, base_offset, last_offset)| BatchRecord {
                            first_sequence,
                            last_sequence,
                            base_offset,
                            last_offset,
                        },
                    )
                    .collect();
                (id, ProducerEntry { epoch, batches })
            })
            .collect();
        Some((ProducerStates { producers }, snapshot.offset))
    }
}

fn last_sequence_of(batch: &BatchInfo) -> i32 {
    // Sequences wrap from i32::MAX to 0, as Kafka's DefaultRecordBatch.incrementSequence does.
    let last = i64::from(batch.base_sequence) + i64::from(batch.last_offset_delta);
    (last % (i64::from(i32::MAX) + 1)) as i32
}

fn next_sequence(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(producer_id: i64, epoch: i16, base_sequence: i32, records: i32) -> BatchInfo {
        BatchInfo {
            base_offset: 0,
            batch_length: 0,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            records_count: records,
        }
    }

    #[test]
    fn in_order_batches_append_and_retries_are_duplicates() {
        let mut states = ProducerStates::default();
        let first = batch(7, 0, 0, 3);
        assert_eq!(states.check(&first), SequenceCheck::Append);
        states.record(&first, 100);
        let second = batch(7, 0, 3, 2);
        assert_eq!(states.check(&second), SequenceCheck::Append);
        states.record(&second, 103);
        assert_eq!(
            states.check(&first),
            SequenceCheck::Duplicate(BatchRecord {
                first_sequence: 0,
                last_sequence: 2,
                base_offset: 100,
                last_offset: 102
            })
        );
        assert_eq!(
            states.check(&batch(7, 0, 6, 1)),
            SequenceCheck::Reject(KafkaError::OutOfOrderSequenceNumber)
        );
        assert_eq!(states.check(&batch(7, 0, 5, 1)), SequenceCheck::Append);
    }

    #[test]
    fn epochs_fence_and_restart_sequences() {
        let mut states = ProducerStates::default();
        states.record(&batch(7, 2, 0, 1), 0);
        assert_eq!(
            states.check(&batch(7, 1, 1, 1)),
            SequenceCheck::Reject(KafkaError::InvalidProducerEpoch)
        );
        assert_eq!(
            states.check(&batch(7, 3, 5, 1)),
            SequenceCheck::Reject(KafkaError::OutOfOrderSequenceNumber)
        );
        assert_eq!(states.check(&batch(7, 3, 0, 1)), SequenceCheck::Append);
    }

    #[test]
    fn unknown_producers_and_plain_batches_append() {
        let states = ProducerStates::default();
        assert_eq!(states.check(&batch(9, 0, 42, 1)), SequenceCheck::Append);
        assert_eq!(states.check(&batch(-1, -1, -1, 1)), SequenceCheck::Append);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut states = ProducerStates::default();
        for index in 0..7 {
            states.record(&batch(1, 0, index, 1), i64::from(index));
        }
        assert_eq!(
            states.check(&batch(1, 0, 1, 1)),
            SequenceCheck::Reject(KafkaError::OutOfOrderSequenceNumber)
        );
        assert!(matches!(
            states.check(&batch(1, 0, 2, 1)),
            SequenceCheck::Duplicate(_)
        ));
    }

    #[test]
    fn snapshots_round_trip_and_reject_garbage() {
        let mut states = ProducerStates::default();
        states.record(&batch(7, 0, 0, 3), 100);
        states.record(&batch(9, 2, 0, 1), 103);
        let (back, offset) =
            ProducerStates::from_snapshot(&states.to_snapshot(104)).expect("round trip");
        assert_eq!(offset, 104);
        assert_eq!(back.producer_count(), 2);
        assert!(matches!(
            back.check(&batch(7, 0, 0, 3)),
            SequenceCheck::Duplicate(_)
        ));
        assert_eq!(
            back.check(&batch(9, 1, 1, 1)),
            SequenceCheck::Reject(KafkaError::InvalidProducerEpoch)
        );
        assert!(ProducerStates::from_snapshot(b"not json").is_none());
        assert!(
            ProducerStates::from_snapshot(br#"{"version":99,"offset":0,"producers":[]}"#).is_none()
        );
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut states = ProducerStates::default();
        states.record(&batch(1, 0, i32::MAX - 1, 2), 0);
        assert_eq!(states.check(&batch(1, 0, 0, 1)), SequenceCheck::Append);
    }
}
