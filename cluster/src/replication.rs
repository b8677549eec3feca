//! The rules of partition replication, Kafka's way (ISR, high watermark, acks=all, leader
//! epochs and truncation, leader election) as pure state machines and functions with no I/O
//! and no clock, so that every rule can be tested on its own and under random event sequences.
//!
//! Not yet wired to the broker. The intended drivers:
//! - the leader's shard feeds [`LeaderState`] its log's appends and flushes, replica fetches,
//!   acks=all waits and a periodic tick, and carries out the [`LeaderAction`]s it returns;
//! - a follower's fetcher task uses [`follower`] to truncate after a leader change (KIP-101,
//!   KIP-279) before it fetches, and answers OffsetForLeaderEpoch from its [`LeaderEpochCache`];
//! - the controller elects leaders with [`election::elect_leader`] and commits the ISR changes
//!   that leaders propose ([`AlterPartitionRequest`], KIP-497).
//!
//! Time is always passed in by the caller as milliseconds (`now_ms`) of any monotonic clock.

pub mod election;
pub mod epoch_cache;
pub mod follower;
pub mod leader;

pub use election::{elect_leader, Election};
pub use epoch_cache::{EpochEndOffset, EpochEntry, LeaderEpochCache};
pub use follower::TruncationStep;
pub use leader::{
    AlterPartitionRequest, FollowerFetch, FollowerProgress, LeaderAction, LeaderState, NewLeader,
    PendingIsrChange, ReplicaFetchDecision,
};

use ringlog_engine::{LeaderEpoch, NodeId, Offset};

/// Kafka's `replica.lag.time.max.ms` default: a follower that has not caught up with the
/// leader's log end for this long leaves the ISR. Long enough to ride out a GC pause or a slow
/// disk, short enough that a dead follower stops holding back acks=all within half a minute.
pub const REPLICA_LAG_TIME_MAX_MS_DEFAULT: u64 = 30_000;

/// Kafka's `min.insync.replicas` default: acks=all needs only the leader, unless a topic asks
/// for more.
pub const MIN_INSYNC_REPLICAS_DEFAULT: usize = 1;

/// Kafka's `UNDEFINED_EPOCH`: "no epoch" in OffsetForLeaderEpoch answers and requests.
pub const UNDEFINED_EPOCH: LeaderEpoch = LeaderEpoch(-1);

/// Kafka's `UNDEFINED_EPOCH_OFFSET`: "no end offset" in OffsetForLeaderEpoch answers.
pub const UNDEFINED_EPOCH_OFFSET: Offset = Offset(-1);

/// The version of a partition's registration on the controller (KIP-497's `partitionEpoch`),
/// bumped by every change to its leader or ISR; an ISR change names the version it starts from
/// so that the controller can refuse one based on stale state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionEpoch(pub i32);

/// The two topic settings the replication rules read, under Kafka's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// `replica.lag.time.max.ms`.
    pub replica_lag_time_max_ms: u64,
    /// `min.insync.replicas`.
    pub min_insync_replicas: usize,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            replica_lag_time_max_ms: REPLICA_LAG_TIME_MAX_MS_DEFAULT,
            min_insync_replicas: MIN_INSYNC_REPLICAS_DEFAULT,
        }
    }
}

/// An identifier the caller gives an acks=all produce so that its completion can be routed
/// back to the request; the state machine only stores and returns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestToken(pub u64);

/// Why a replication event was refused. The first six are Kafka's error codes under Kafka's
/// names, for `net` to map; the last two are a caller's or a peer's mistake in how it drives
/// the state machine, answered instead of a panic (`net` maps them to UNKNOWN_SERVER_ERROR).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicationError {
    #[error("NOT_ENOUGH_REPLICAS: the ISR has {isr_count} replicas, min.insync.replicas is {min_insync_replicas}")]
    NotEnoughReplicas {
        isr_count: usize,
        min_insync_replicas: usize,
    },
    #[error("NOT_ENOUGH_REPLICAS_AFTER_APPEND: written, but the ISR shrank to {isr_count} replicas, below min.insync.replicas {min_insync_replicas}")]
    NotEnoughReplicasAfterAppend {
        isr_count: usize,
        min_insync_replicas: usize,
    },
    #[error("NOT_LEADER_OR_FOLLOWER: {0}")]
    NotLeaderOrFollower(String),
    #[error("FENCED_LEADER_EPOCH: epoch {received:?} is older than the current {current:?}")]
    FencedLeaderEpoch {
        received: LeaderEpoch,
        current: LeaderEpoch,
    },
    #[error("UNKNOWN_LEADER_EPOCH: epoch {received:?} is newer than the current {current:?}")]
    UnknownLeaderEpoch {
        received: LeaderEpoch,
        current: LeaderEpoch,
    },
    #[error("OFFSET_OUT_OF_RANGE: offset {offset} is outside 0..={log_end_offset}")]
    OffsetOutOfRange {
        offset: Offset,
        log_end_offset: Offset,
    },
    #[error("INVALID_UPDATE_VERSION: partition epoch {received:?} is not newer than {current:?}")]
    InvalidUpdateVersion {
        received: PartitionEpoch,
        current: PartitionEpoch,
    },
    #[error("invalid replica assignment: {0}")]
    InvalidReplicaAssignment(String),
    #[error("invalid log position: {0}")]
    InvalidPosition(String),
}

/// Checks a request's `current_leader_epoch` against the partition's (Kafka's
/// `Partition.validateCurrentLeaderEpoch`): `None` (Kafka's -1) skips the check; an older
/// epoch is fenced, a newer one is not known here yet.
pub fn check_leader_epoch(
    received: Option<LeaderEpoch>,
    current: LeaderEpoch,
) -> Result<(), ReplicationError> {
    match received {
        Some(received) if received < current => {
            Err(ReplicationError::FencedLeaderEpoch { received, current })
        }
        Some(received) if received > current => {
            Err(ReplicationError::UnknownLeaderEpoch { received, current })
        }
        _ => Ok(()),
    }
}

/// A replica id list's problems, or none: each id once. Used on assignments and ISRs that come
/// from the controller, which a broker trusts to be well formed but does not assume.
fn check_distinct(what: &str, ids: &[NodeId]) -> Result<(), ReplicationError> {
    let mut seen = std::collections::BTreeSet::new();
    for id in ids {
        if !seen.insert(*id) {
            return Err(ReplicationError::InvalidReplicaAssignment(format!(
                "{what} names replica {} twice",
                id.0
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_epoch_check_fences_older_and_refuses_newer() {
        let current = LeaderEpoch(5);
        assert_eq!(check_leader_epoch(None, current), Ok(()));
        assert_eq!(check_leader_epoch(Some(LeaderEpoch(5)), current), Ok(()));
        assert!(matches!(
            check_leader_epoch(Some(LeaderEpoch(4)), current),
            Err(ReplicationError::FencedLeaderEpoch { .. })
        ));
        assert!(matches!(
            check_leader_epoch(Some(LeaderEpoch(6)), current),
            Err(ReplicationError::UnknownLeaderEpoch { .. })
        ));
    }
}
