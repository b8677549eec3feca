//! The leader's side of one partition's replication: the followers' positions, the in-sync
//! replica set (ISR), the high watermark and the acks=all produces waiting for it. Kafka's
//! `Partition` and `Replica` rules (and `DelayedProduce`'s), with two changes DESIGN.md asks
//! for: a follower's position counts for the high watermark and for rejoining the ISR only
//! once it is durable on the follower, and the leader's own log end counts only once durable.
//!
//! A pure state machine: the leader's shard feeds it events with the time (`now_ms`) and
//! carries out the [`LeaderAction`]s returned, in order. Owned by the partition's shard while
//! the local broker leads the partition; a new leader epoch means a new `LeaderState`.

use std::collections::{BTreeMap, BTreeSet};

use ringlog_engine::{LeaderEpoch, NodeId, Offset};

use super::epoch_cache::{EpochEndOffset, LeaderEpochCache};
use super::{
    check_distinct, check_leader_epoch, PartitionEpoch, ReplicationConfig, ReplicationError,
    RequestToken,
};

/// What the controller told a broker when it made it leader (a partition registration whose
/// leader is the local broker), with the local log's positions at that moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewLeader {
    pub local: NodeId,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
    /// The assignment, in the controller's order.
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    pub log_end_offset: Offset,
    pub durable_end_offset: Offset,
    /// The high watermark the broker knew as a follower (or checkpointed); a new leader starts
    /// from it and the followers' next fetches move it on.
    pub high_watermark: Offset,
}

/// The leader's view of one follower (Kafka's `ReplicaState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The offset of the follower's last fetch: it has every record below it. Unknown until
    /// its first fetch from this leader.
    pub fetch_offset: Option<Offset>,
    /// The end of the follower's log that is durable on it, as it last reported.
    pub durable_offset: Option<Offset>,
    /// The leader's log end when the follower last fetched.
    pub last_fetch_leader_log_end_offset: Offset,
    pub last_fetch_time_ms: Option<u64>,
    /// The last time the follower was known to have fetched up to the leader's log end
    /// (Kafka's `lastCaughtUpTimeMs`); `None` if never under this leader.
    pub last_caught_up_time_ms: Option<u64>,
}

impl FollowerProgress {
    /// Kafka's `ReplicaState.isCaughtUp`: at the leader's log end now, or caught up within the
    /// last `replica.lag.time.max.ms`. Time running backwards counts as no time passing.
    fn is_caught_up(&self, leader_log_end_offset: Offset, now_ms: u64, lag_max_ms: u64) -> bool {
        self.fetch_offset == Some(leader_log_end_offset)
            || self
                .last_caught_up_time_ms
                .is_some_and(|caught_up_ms| now_ms.saturating_sub(caught_up_ms) <= lag_max_ms)
    }
}

/// An ISR change the leader proposed and the controller has not yet answered. Kafka allows one
/// at a time (`PendingExpandIsr` / `PendingShrinkIsr`), so every proposal starts from the
/// committed ISR and the controller's answer can be matched to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PendingIsrChange {
    Expand {
        added: NodeId,
        proposed: Vec<NodeId>,
    },
    Shrink {
        removed: Vec<NodeId>,
        proposed: Vec<NodeId>,
    },
}

impl PendingIsrChange {
    pub fn proposed(&self) -> &[NodeId] {
        match self {
            PendingIsrChange::Expand { proposed, .. }
            | PendingIsrChange::Shrink { proposed, .. } => proposed,
        }
    }
}

/// The ISR change a leader asks the controller for (Kafka's AlterPartition, KIP-497): applied
/// only if the partition is still at `leader_epoch` and `partition_epoch` on the controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlterPartitionRequest {
    pub leader: NodeId,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
    pub new_isr: Vec<NodeId>,
}

/// A fetch from a follower, as the leader's Fetch handler sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerFetch {
    pub replica: NodeId,
    /// The leader epoch the follower believes current; `None` (Kafka's -1) skips the check.
    pub current_leader_epoch: Option<LeaderEpoch>,
    /// Where the follower fetches from: its log end, so it has every record below this.
    pub fetch_offset: Offset,
    /// The end of the follower's log that is durable on its disk.
    pub durable_offset: Offset,
}

/// The leader's answer to a follower fetch: the high watermark to send the follower, and what
/// the fetch set off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaFetchDecision {
    pub high_watermark: Offset,
    pub actions: Vec<LeaderAction>,
}

/// What the leader's shard must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaderAction {
    /// Send this ISR change to the controller; answer with [`LeaderState::isr_committed`] or
    /// [`LeaderState::isr_change_failed`].
    AlterPartition(AlterPartitionRequest),
    /// The high watermark moved to this offset: wake consumers and fetchers waiting for data.
    HighWatermarkAdvanced(Offset),
    /// An acks=all produce is finished: answer its request.
    CompleteProduce {
        token: RequestToken,
        result: Result<(), ReplicationError>,
    },
}

/// The leader's replication state for one partition. Owned by the partition's shard.
#[derive(Clone, Debug)]
pub struct LeaderState {
    local: NodeId,
    config: ReplicationConfig,
    leader_epoch: LeaderEpoch,
    partition_epoch: PartitionEpoch,
    replicas: Vec<NodeId>,
    /// The ISR as committed by the controller; the leader is always in it.
    isr: BTreeSet<NodeId>,
    pending_isr_change: Option<PendingIsrChange>,
    /// The leader's log end when it became leader: the first offset of its epoch. A follower
    /// rejoins the ISR only once it has everything below it, i.e. it has the previous epochs
    /// exactly as this leader has them.
    leader_epoch_start_offset: Offset,
    log_end_offset: Offset,
    durable_end_offset: Offset,
    high_watermark: Offset,
    followers: BTreeMap<NodeId, FollowerProgress>,
    /// acks=all produces waiting for the high watermark, by the end offset of what they wrote.
    waiting_produces: BTreeMap<Offset, Vec<RequestToken>>,
}

impl LeaderState {
    /// Takes leadership. The caller also records `(leader_epoch, log_end_offset)` in the
    /// partition's [`LeaderEpochCache`], as Kafka's `makeLeader` does, so that followers'
    /// OffsetForLeaderEpoch questions see where the previous epoch ended.
    pub fn new(
        leader: NewLeader,
        config: ReplicationConfig,
        now_ms: u64,
    ) -> Result<Self, ReplicationError> {
        check_distinct("the assignment", &leader.replicas)?;
        check_distinct("the ISR", &leader.isr)?;
        if !leader.replicas.contains(&leader.local) {
            return Err(ReplicationError::InvalidReplicaAssignment(format!(
                "leader {} is not a replica",
                leader.local.0
            )));
        }
        let isr = checked_isr(leader.local, &leader.replicas, &leader.isr)?;
        if leader.log_end_offset.0 < 0
            || leader.durable_end_offset.0 < 0
            || leader.durable_end_offset > leader.log_end_offset
        {
            return Err(ReplicationError::InvalidPosition(format!(
                "durable end {} must be within 0..={} (the log end)",
                leader.durable_end_offset, leader.log_end_offset
            )));
        }
        let followers = leader
            .replicas
            .iter()
            .filter(|replica| **replica != leader.local)
            .map(|replica| {
                let progress = FollowerProgress {
                    fetch_offset: None,
                    durable_offset: None,
                    last_fetch_leader_log_end_offset: leader.log_end_offset,
                    last_fetch_time_ms: None,
                    // ISR members get a full lag period to show up, as in Kafka.
                    last_caught_up_time_ms: isr.contains(replica).then_some(now_ms),
                };
                (*replica, progress)
            })
            .collect();
        let state = LeaderState {
            local: leader.local,
            config,
            leader_epoch: leader.leader_epoch,
            partition_epoch: leader.partition_epoch,
            replicas: leader.replicas,
            isr,
            pending_isr_change: None,
            leader_epoch_start_offset: leader.log_end_offset,
            log_end_offset: leader.log_end_offset,
            durable_end_offset: leader.durable_end_offset,
            // A high watermark past what is durable here would promise records a crash of this
            // broker could lose; Kafka likewise clamps a loaded one to the log end.
            high_watermark: leader
                .high_watermark
                .clamp(Offset::ZERO, leader.durable_end_offset),
            followers,
            waiting_produces: BTreeMap::new(),
        };
        state.assert_invariants();
        Ok(state)
    }

    pub fn local(&self) -> NodeId {
        self.local
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.leader_epoch
    }

    pub fn partition_epoch(&self) -> PartitionEpoch {
        self.partition_epoch
    }

    pub fn replicas(&self) -> &[NodeId] {
        &self.replicas
    }

    /// The committed ISR, in id order.
    pub fn isr(&self) -> Vec<NodeId> {
        self.isr.iter().copied().collect()
    }

    /// The ISR the high watermark waits for: the committed one plus a pending addition
    /// (KIP-497). A pending removal is not subtracted: until the controller commits it, the
    /// removed replica may still be elected leader, so it must still have everything below the
    /// high watermark.
    pub fn maximal_isr(&self) -> Vec<NodeId> {
        let mut maximal = self.isr.clone();
        if let Some(PendingIsrChange::Expand { added, .. }) = &self.pending_isr_change {
            maximal.insert(*added);
        }
        maximal.into_iter().collect()
    }

    pub fn pending_isr_change(&self) -> Option<&PendingIsrChange> {
        self.pending_isr_change.as_ref()
    }

    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    pub fn log_end_offset(&self) -> Offset {
        self.log_end_offset
    }

    pub fn durable_end_offset(&self) -> Offset {
        self.durable_end_offset
    }

    pub fn leader_epoch_start_offset(&self) -> Offset {
        self.leader_epoch_start_offset
    }

    pub fn follower(&self, replica: NodeId) -> Option<&FollowerProgress> {
        self.followers.get(&replica)
    }

    /// How many acks=all produces are waiting.
    pub fn waiting_produce_count(&self) -> usize {
        self.waiting_produces.values().map(Vec::len).sum()
    }

    /// The check before an acks=all append (Kafka's `appendRecordsToLeader`): refused with
    /// NOT_ENOUGH_REPLICAS while the committed ISR is smaller than `min.insync.replicas`, so
    /// nothing is written that could not be acknowledged. Other acks values skip it.
    pub fn check_acks_all_append(&self) -> Result<(), ReplicationError> {
        if self.isr.len() < self.config.min_insync_replicas {
            return Err(ReplicationError::NotEnoughReplicas {
                isr_count: self.isr.len(),
                min_insync_replicas: self.config.min_insync_replicas,
            });
        }
        Ok(())
    }

    /// The leader's log now ends at `log_end_offset` (records were appended, not yet durable).
    /// A leader's log only grows: an end before the current one is the caller's bug, refused.
    pub fn log_appended(&mut self, log_end_offset: Offset) -> Result<(), ReplicationError> {
        if log_end_offset < self.log_end_offset {
            return Err(ReplicationError::InvalidPosition(format!(
                "the leader's log end went back from {} to {log_end_offset}",
                self.log_end_offset
            )));
        }
        self.log_end_offset = log_end_offset;
        self.assert_invariants();
        Ok(())
    }

    /// The leader's log is durable up to `durable_end_offset`; the high watermark may move.
    pub fn log_flushed(
        &mut self,
        durable_end_offset: Offset,
    ) -> Result<Vec<LeaderAction>, ReplicationError> {
        if durable_end_offset < self.durable_end_offset || durable_end_offset > self.log_end_offset
        {
            return Err(ReplicationError::InvalidPosition(format!(
                "durable end {durable_end_offset} must be within {}..={}",
                self.durable_end_offset, self.log_end_offset
            )));
        }
        self.durable_end_offset = durable_end_offset;
        let mut actions = Vec::new();
        self.advance_high_watermark(&mut actions);
        self.assert_invariants();
        Ok(actions)
    }

    /// An acks=all produce appended records ending at `end_offset` (exclusive) and waits for
    /// the high watermark to reach it (Kafka's `DelayedProduce`). It completes at once if it
    /// already has; otherwise a later event returns its [`LeaderAction::CompleteProduce`].
    pub fn await_replication(
        &mut self,
        end_offset: Offset,
        token: RequestToken,
    ) -> Result<Vec<LeaderAction>, ReplicationError> {
        if end_offset > self.log_end_offset {
            return Err(ReplicationError::InvalidPosition(format!(
                "a produce ending at {end_offset} waits past the log end {}",
                self.log_end_offset
            )));
        }
        self.waiting_produces
            .entry(end_offset)
            .or_default()
            .push(token);
        let mut actions = Vec::new();
        self.complete_produces(&mut actions);
        self.assert_invariants();
        Ok(actions)
    }

    /// A follower fetched (Kafka's `Partition.updateFollowerFetchState`): its position and
    /// durable end are recorded, it may rejoin the ISR (a proposal to the controller), and the
    /// high watermark may move. The answer carries the high watermark for the follower.
    pub fn follower_fetch(
        &mut self,
        fetch: FollowerFetch,
        now_ms: u64,
    ) -> Result<ReplicaFetchDecision, ReplicationError> {
        check_leader_epoch(fetch.current_leader_epoch, self.leader_epoch)?;
        let log_end_offset = self.log_end_offset;
        let Some(progress) = self.followers.get_mut(&fetch.replica) else {
            return Err(ReplicationError::NotLeaderOrFollower(format!(
                "broker {} is not a follower of this partition",
                fetch.replica.0
            )));
        };
        if fetch.fetch_offset.0 < 0 || fetch.fetch_offset > log_end_offset {
            return Err(ReplicationError::OffsetOutOfRange {
                offset: fetch.fetch_offset,
                log_end_offset,
            });
        }
        // A durable end past the fetch offset would claim records the follower does not have;
        // only what it has fetched can be durable on it.
        let durable_offset = fetch.durable_offset.clamp(Offset::ZERO, fetch.fetch_offset);

        // Kafka's lastCaughtUpTimeMs rule: at the leader's end now means caught up now; at or
        // past where the leader's end was at the previous fetch means caught up as of then.
        if fetch.fetch_offset >= log_end_offset {
            progress.last_caught_up_time_ms = Some(
                progress
                    .last_caught_up_time_ms
                    .map_or(now_ms, |caught_up_ms| caught_up_ms.max(now_ms)),
            );
        } else if fetch.fetch_offset >= progress.last_fetch_leader_log_end_offset {
            if let Some(last_fetch_ms) = progress.last_fetch_time_ms {
                progress.last_caught_up_time_ms = Some(
                    progress
                        .last_caught_up_time_ms
                        .map_or(last_fetch_ms, |caught_up_ms| {
                            caught_up_ms.max(last_fetch_ms)
                        }),
                );
            }
        }
        progress.fetch_offset = Some(fetch.fetch_offset);
        progress.durable_offset = Some(durable_offset);
        progress.last_fetch_leader_log_end_offset = log_end_offset;
        progress.last_fetch_time_ms = Some(now_ms);

        let mut actions = Vec::new();
        self.maybe_expand_isr(fetch.replica, durable_offset, &mut actions);
        self.advance_high_watermark(&mut actions);
        self.assert_invariants();
        Ok(ReplicaFetchDecision {
            high_watermark: self.high_watermark,
            actions,
        })
    }

    /// The periodic check (Kafka's `isr-expiration` task, every half lag period): ISR members
    /// that have not caught up for longer than `replica.lag.time.max.ms` are proposed for
    /// removal, all in one change. Nothing is proposed while another change is pending.
    pub fn tick(&mut self, now_ms: u64) -> Vec<LeaderAction> {
        let mut actions = Vec::new();
        if self.pending_isr_change.is_some() {
            return actions;
        }
        let lag_max_ms = self.config.replica_lag_time_max_ms;
        let removed: Vec<NodeId> = self
            .isr
            .iter()
            .filter(|member| **member != self.local)
            .filter(|member| {
                self.followers.get(member).is_none_or(|progress| {
                    !progress.is_caught_up(self.log_end_offset, now_ms, lag_max_ms)
                })
            })
            .copied()
            .collect();
        if removed.is_empty() {
            return actions;
        }
        let proposed: Vec<NodeId> = self
            .isr
            .iter()
            .filter(|member| !removed.contains(member))
            .copied()
            .collect();
        actions.push(self.propose(PendingIsrChange::Shrink { removed, proposed }));
        actions
    }

    /// When [`LeaderState::tick`] next has work: the earliest time an ISR member could fall
    /// out of sync. `None` if no follower is in the ISR.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.isr
            .iter()
            .filter_map(|member| self.followers.get(member))
            .map(|progress| {
                progress
                    .last_caught_up_time_ms
                    .unwrap_or(0)
                    .saturating_add(self.config.replica_lag_time_max_ms)
                    .saturating_add(1)
            })
            .min()
    }

    /// The controller committed an ISR for this partition (the answer to an AlterPartition,
    /// or a metadata update at the same leader epoch): it replaces the committed ISR and ends
    /// any pending change, whichever it was. A change below the current partition epoch is
    /// stale and refused with INVALID_UPDATE_VERSION; one for another leader epoch is fenced.
    pub fn isr_committed(
        &mut self,
        leader_epoch: LeaderEpoch,
        partition_epoch: PartitionEpoch,
        isr: &[NodeId],
    ) -> Result<Vec<LeaderAction>, ReplicationError> {
        check_leader_epoch(Some(leader_epoch), self.leader_epoch)?;
        if partition_epoch <= self.partition_epoch {
            return Err(ReplicationError::InvalidUpdateVersion {
                received: partition_epoch,
                current: self.partition_epoch,
            });
        }
        check_distinct("the ISR", isr)?;
        self.isr = checked_isr(self.local, &self.replicas, isr)?;
        self.partition_epoch = partition_epoch;
        self.pending_isr_change = None;
        let mut actions = Vec::new();
        self.advance_high_watermark(&mut actions);
        self.assert_invariants();
        Ok(actions)
    }

    /// The controller refused `request` (it did not apply it): if that is the pending change,
    /// the committed ISR stands and the next fetch or tick proposes again if still needed.
    /// Returns whether the pending change was dropped.
    ///
    /// Only a definite refusal may be reported: a request that may still be applied (a lost
    /// response) must be retried or superseded by [`LeaderState::isr_committed`]. Dropping a
    /// pending addition that the controller then commits would let the high watermark pass
    /// records the new member lacks, and it could be elected.
    pub fn isr_change_failed(&mut self, request: &AlterPartitionRequest) -> bool {
        let matches = request.leader_epoch == self.leader_epoch
            && request.partition_epoch == self.partition_epoch
            && self
                .pending_isr_change
                .as_ref()
                .is_some_and(|pending| pending.proposed() == request.new_isr.as_slice());
        if matches {
            self.pending_isr_change = None;
        }
        matches
    }

    /// Answers OffsetForLeaderEpoch from the partition's epoch cache, after checking the
    /// requester's `current_leader_epoch`. The latest epoch ends at the log end, not the
    /// durable end: the answer tells a follower where logs diverge, not what is safe.
    pub fn offset_for_leader_epoch(
        &self,
        current_leader_epoch: Option<LeaderEpoch>,
        requested: LeaderEpoch,
        cache: &LeaderEpochCache,
    ) -> Result<EpochEndOffset, ReplicationError> {
        check_leader_epoch(current_leader_epoch, self.leader_epoch)?;
        Ok(cache.end_offset_for(requested, self.log_end_offset))
    }

    /// Leadership ends (a new epoch, or another leader): every waiting acks=all produce fails
    /// with NOT_LEADER_OR_FOLLOWER, so that its producer retries against the new leader.
    pub fn resign(self) -> Vec<LeaderAction> {
        self.waiting_produces
            .into_values()
            .flatten()
            .map(|token| LeaderAction::CompleteProduce {
                token,
                result: Err(ReplicationError::NotLeaderOrFollower(
                    "leadership moved before the records were replicated".to_string(),
                )),
            })
            .collect()
    }

    /// Kafka's `isFollowerInSyncWithLeader`, on the follower's durable end: it has everything
    /// below the high watermark and below the start of this leader's epoch. Only one change is
    /// proposed at a time.
    fn maybe_expand_isr(
        &mut self,
        replica: NodeId,
        durable_offset: Offset,
        actions: &mut Vec<LeaderAction>,
    ) {
        if self.pending_isr_change.is_some()
            || self.isr.contains(&replica)
            || durable_offset < self.high_watermark
            || durable_offset < self.leader_epoch_start_offset
        {
            return;
        }
        let mut proposed = self.isr.clone();
        proposed.insert(replica);
        actions.push(self.propose(PendingIsrChange::Expand {
            added: replica,
            proposed: proposed.into_iter().collect(),
        }));
    }

    fn propose(&mut self, change: PendingIsrChange) -> LeaderAction {
        let request = AlterPartitionRequest {
            leader: self.local,
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            new_isr: change.proposed().to_vec(),
        };
        self.pending_isr_change = Some(change);
        LeaderAction::AlterPartition(request)
    }

    /// The high watermark is the lowest durable end among the maximal ISR, the leader's
    /// included (Kafka's `maybeIncrementLeaderHW`, on durable ends). It never goes back: a
    /// member whose durable end is unknown or behind only holds it where it is.
    fn advance_high_watermark(&mut self, actions: &mut Vec<LeaderAction>) {
        let mut candidate = self.durable_end_offset;
        for member in self.maximal_isr() {
            if member == self.local {
                continue;
            }
            let durable = self
                .followers
                .get(&member)
                .and_then(|progress| progress.durable_offset);
            candidate = candidate.min(durable.unwrap_or(self.high_watermark));
        }
        if candidate > self.high_watermark {
            self.high_watermark = candidate;
            actions.push(LeaderAction::HighWatermarkAdvanced(candidate));
        }
        self.complete_produces(actions);
    }

    /// What every event leaves true; a failure is a bug here, not bad input (inputs that would
    /// break these are refused with an error first).
    fn assert_invariants(&self) {
        assert!(
            self.high_watermark <= self.durable_end_offset
                && self.durable_end_offset <= self.log_end_offset,
            "high watermark {} <= durable end {} <= log end {}",
            self.high_watermark,
            self.durable_end_offset,
            self.log_end_offset
        );
        assert!(self.isr.contains(&self.local), "the leader is in its ISR");
        assert!(
            self.waiting_produces
                .keys()
                .all(|end_offset| *end_offset > self.high_watermark),
            "no produce waits for a high watermark already reached"
        );
    }

    /// Answers every acks=all produce the high watermark has passed (Kafka's
    /// `checkEnoughReplicasReachOffset`): successfully if the committed ISR still has
    /// `min.insync.replicas` members, otherwise NOT_ENOUGH_REPLICAS_AFTER_APPEND (the records
    /// are written, but on fewer replicas than the producer asked for).
    fn complete_produces(&mut self, actions: &mut Vec<LeaderAction>) {
        let isr_count = self.isr.len();
        let min_insync_replicas = self.config.min_insync_replicas;
        while let Some(waiting) = self.waiting_produces.first_entry() {
            if *waiting.key() > self.high_watermark {
                break;
            }
            for token in waiting.remove() {
                let result = if isr_count >= min_insync_replicas {
                    Ok(())
                } else {
                    Err(ReplicationError::NotEnoughReplicasAfterAppend {
                        isr_count,
                        min_insync_replicas,
                    })
                };
                actions.push(LeaderAction::CompleteProduce { token, result });
            }
        }
    }
}

/// An ISR from the controller, checked: every member a replica, the leader among them.
fn checked_isr(
    local: NodeId,
    replicas: &[NodeId],
    isr: &[NodeId],
) -> Result<BTreeSet<NodeId>, ReplicationError> {
    if let Some(stranger) = isr.iter().find(|member| !replicas.contains(member)) {
        return Err(ReplicationError::InvalidReplicaAssignment(format!(
            "ISR member {} is not a replica",
            stranger.0
        )));
    }
    if !isr.contains(&local) {
        return Err(ReplicationError::InvalidReplicaAssignment(format!(
            "the ISR does not contain the leader {}",
            local.0
        )));
    }
    Ok(isr.iter().copied().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG_MS: u64 = 30_000;

    fn ids(list: &[i32]) -> Vec<NodeId> {
        list.iter().copied().map(NodeId).collect()
    }

    fn config(min_insync_replicas: usize) -> ReplicationConfig {
        ReplicationConfig {
            replica_lag_time_max_ms: LAG_MS,
            min_insync_replicas,
        }
    }

    /// Broker 1 leads epoch 3 of replicas 1, 2, 3 with the given ISR; its log ends at
    /// `log_end` (durable), high watermark `high_watermark`.
    fn leader(isr: &[i32], log_end: i64, high_watermark: i64, min_isr: usize) -> LeaderState {
        LeaderState::new(
            NewLeader {
                local: NodeId(1),
                leader_epoch: LeaderEpoch(3),
                partition_epoch: PartitionEpoch(10),
                replicas: ids(&[1, 2, 3]),
                isr: ids(isr),
                log_end_offset: Offset(log_end),
                durable_end_offset: Offset(log_end),
                high_watermark: Offset(high_watermark),
            },
            config(min_isr),
            0,
        )
        .expect("valid leader")
    }

    fn fetch(replica: i32, fetch_offset: i64, durable_offset: i64) -> FollowerFetch {
        FollowerFetch {
            replica: NodeId(replica),
            current_leader_epoch: Some(LeaderEpoch(3)),
            fetch_offset: Offset(fetch_offset),
            durable_offset: Offset(durable_offset),
        }
    }

    /// Appends and flushes on the leader up to `end`.
    fn append_durable(state: &mut LeaderState, end: i64) -> Vec<LeaderAction> {
        state.log_appended(Offset(end)).expect("append");
        state.log_flushed(Offset(end)).expect("flush")
    }

    fn proposals(actions: &[LeaderAction]) -> Vec<Vec<NodeId>> {
        actions
            .iter()
            .filter_map(|action| match action {
                LeaderAction::AlterPartition(request) => Some(request.new_isr.clone()),
                _ => None,
            })
            .collect()
    }

    fn completions(actions: &[LeaderAction]) -> Vec<(u64, Result<(), ReplicationError>)> {
        actions
            .iter()
            .filter_map(|action| match action {
                LeaderAction::CompleteProduce { token, result } => Some((token.0, result.clone())),
                _ => None,
            })
            .collect()
    }

    /// Commits whatever change is pending, as the controller would.
    fn commit_pending(state: &mut LeaderState) -> Vec<LeaderAction> {
        let proposed = state
            .pending_isr_change()
            .expect("a pending change")
            .proposed()
            .to_vec();
        let next = PartitionEpoch(state.partition_epoch().0 + 1);
        state
            .isr_committed(state.leader_epoch(), next, &proposed)
            .expect("commit")
    }

    #[test]
    fn a_new_leader_refuses_inconsistent_state() {
        let base = NewLeader {
            local: NodeId(1),
            leader_epoch: LeaderEpoch(0),
            partition_epoch: PartitionEpoch(0),
            replicas: ids(&[1, 2]),
            isr: ids(&[1, 2]),
            log_end_offset: Offset(5),
            durable_end_offset: Offset(5),
            high_watermark: Offset(5),
        };
        let refused = |change: &dyn Fn(&mut NewLeader)| {
            let mut leader = base.clone();
            change(&mut leader);
            LeaderState::new(leader, config(1), 0).is_err()
        };
        assert!(!refused(&|_| {}));
        assert!(refused(&|leader| leader.isr = ids(&[2])));
        assert!(refused(&|leader| leader.isr = ids(&[1, 3])));
        assert!(refused(&|leader| leader.replicas = ids(&[2, 3])));
        assert!(refused(&|leader| leader.replicas = ids(&[1, 2, 2])));
        assert!(refused(&|leader| leader.isr = ids(&[1, 1])));
        assert!(refused(&|leader| leader.durable_end_offset = Offset(6)));
        assert!(refused(&|leader| leader.log_end_offset = Offset(-1)));
        // A high watermark past the durable end is brought back to it.
        let mut leader = base.clone();
        leader.durable_end_offset = Offset(3);
        let state = LeaderState::new(leader, config(1), 0).expect("valid");
        assert_eq!(state.high_watermark(), Offset(3));
    }

    #[test]
    fn high_watermark_is_the_lowest_durable_end_in_the_isr() {
        let mut state = leader(&[1, 2, 3], 0, 0, 1);
        append_durable(&mut state, 10);
        // Follower 2 has fetched everything but only 6 is durable; 3 has not fetched yet.
        let decision = state.follower_fetch(fetch(2, 10, 6), 1).expect("fetch");
        assert_eq!(decision.high_watermark, Offset(0));
        let decision = state.follower_fetch(fetch(3, 10, 10), 1).expect("fetch");
        assert_eq!(decision.high_watermark, Offset(6));
        assert_eq!(
            decision.actions,
            vec![LeaderAction::HighWatermarkAdvanced(Offset(6))]
        );
        // The leader's own durable end counts too.
        state.log_appended(Offset(20)).expect("append");
        state.follower_fetch(fetch(2, 20, 20), 2).expect("fetch");
        let decision = state.follower_fetch(fetch(3, 20, 20), 2).expect("fetch");
        assert_eq!(decision.high_watermark, Offset(10));
        state.log_flushed(Offset(15)).expect("flush");
        assert_eq!(state.high_watermark(), Offset(15));
        // A follower that truncated and reports less does not move it back.
        state.follower_fetch(fetch(2, 12, 12), 3).expect("fetch");
        assert_eq!(state.high_watermark(), Offset(15));
    }

    #[test]
    fn follower_fetches_are_checked() {
        let mut state = leader(&[1, 2, 3], 10, 10, 1);
        let mut stale = fetch(2, 5, 5);
        stale.current_leader_epoch = Some(LeaderEpoch(2));
        assert!(matches!(
            state.follower_fetch(stale, 0),
            Err(ReplicationError::FencedLeaderEpoch { .. })
        ));
        stale.current_leader_epoch = Some(LeaderEpoch(4));
        assert!(matches!(
            state.follower_fetch(stale, 0),
            Err(ReplicationError::UnknownLeaderEpoch { .. })
        ));
        assert!(matches!(
            state.follower_fetch(fetch(7, 5, 5), 0),
            Err(ReplicationError::NotLeaderOrFollower(_))
        ));
        assert!(matches!(
            state.follower_fetch(fetch(1, 5, 5), 0),
            Err(ReplicationError::NotLeaderOrFollower(_))
        ));
        assert!(matches!(
            state.follower_fetch(fetch(2, 11, 11), 0),
            Err(ReplicationError::OffsetOutOfRange { .. })
        ));
        assert!(matches!(
            state.follower_fetch(fetch(2, -1, 0), 0),
            Err(ReplicationError::OffsetOutOfRange { .. })
        ));
        // A durable end past the fetch offset counts only up to the fetch offset.
        state.follower_fetch(fetch(2, 10, 99), 0).expect("fetch");
        assert_eq!(
            state
                .follower(NodeId(2))
                .and_then(|progress| progress.durable_offset),
            Some(Offset(10))
        );
    }

    #[test]
    fn a_follower_rejoins_once_durable_at_the_high_watermark_and_the_epoch_start() {
        // Leader at 10 (its epoch starts there), ISR {1}; the high watermark is 10.
        let mut state = leader(&[1, 2], 10, 4, 1);
        assert_eq!(state.leader_epoch_start_offset(), Offset(10));
        state.follower_fetch(fetch(2, 10, 10), 1).expect("fetch");
        assert_eq!(state.high_watermark(), Offset(10));
        append_durable(&mut state, 20);
        // Below the high watermark: not yet.
        let decision = state.follower_fetch(fetch(3, 8, 8), 2).expect("fetch");
        assert!(proposals(&decision.actions).is_empty());
        // Fetched to the high watermark but not durable there: not yet either.
        let decision = state.follower_fetch(fetch(3, 12, 9), 3).expect("fetch");
        assert!(proposals(&decision.actions).is_empty());
        let decision = state.follower_fetch(fetch(3, 12, 10), 4).expect("fetch");
        assert_eq!(proposals(&decision.actions), vec![ids(&[1, 2, 3])]);
        assert_eq!(
            decision.actions[0],
            LeaderAction::AlterPartition(AlterPartitionRequest {
                leader: NodeId(1),
                leader_epoch: LeaderEpoch(3),
                partition_epoch: PartitionEpoch(10),
                new_isr: ids(&[1, 2, 3]),
            })
        );
        // The pending addition already holds the high watermark back (maximal ISR).
        assert_eq!(state.maximal_isr(), ids(&[1, 2, 3]));
        assert_eq!(state.isr(), ids(&[1, 2]));
        state.follower_fetch(fetch(2, 20, 20), 5).expect("fetch");
        assert_eq!(state.high_watermark(), Offset(10));
        // One change at a time: no second proposal while this one is pending.
        let decision = state.follower_fetch(fetch(3, 12, 12), 6).expect("fetch");
        assert!(proposals(&decision.actions).is_empty());
        assert_eq!(state.high_watermark(), Offset(12));
        commit_pending(&mut state);
        assert_eq!(state.isr(), ids(&[1, 2, 3]));
        assert_eq!(state.partition_epoch(), PartitionEpoch(11));
        assert_eq!(state.pending_isr_change(), None);
    }

    #[test]
    fn a_follower_behind_the_epoch_start_does_not_rejoin() {
        // The high watermark (5) is below the leader's epoch start (10): a follower durable at
        // 7 has passed the high watermark but may still hold another epoch's records past 5.
        let mut state = leader(&[1], 10, 5, 1);
        assert_eq!(state.high_watermark(), Offset(5));
        let decision = state.follower_fetch(fetch(2, 7, 7), 1).expect("fetch");
        assert!(proposals(&decision.actions).is_empty());
        assert_eq!(state.high_watermark(), Offset(10));
        let decision = state.follower_fetch(fetch(2, 10, 10), 2).expect("fetch");
        assert_eq!(proposals(&decision.actions), vec![ids(&[1, 2])]);
    }

    #[test]
    fn a_lagging_follower_is_proposed_for_removal_and_counts_until_committed() {
        let mut state = leader(&[1, 2, 3], 0, 0, 1);
        append_durable(&mut state, 10);
        state
            .follower_fetch(fetch(2, 10, 10), 1_000)
            .expect("fetch");
        state.follower_fetch(fetch(3, 5, 5), 1_000).expect("fetch");
        assert_eq!(state.high_watermark(), Offset(5));
        // Both were caught up at 0 (ISR members when the leader started); 2 is at the end now.
        assert!(state.tick(LAG_MS).is_empty());
        state
            .follower_fetch(fetch(2, 10, 10), LAG_MS)
            .expect("fetch");
        let actions = state.tick(LAG_MS + 1);
        assert_eq!(proposals(&actions), vec![ids(&[1, 2])]);
        // The removal is pending: 3 still holds the high watermark (it could still be elected).
        assert_eq!(state.maximal_isr(), ids(&[1, 2, 3]));
        assert_eq!(state.high_watermark(), Offset(5));
        assert!(state.tick(LAG_MS + 2).is_empty(), "one change at a time");
        let actions = commit_pending(&mut state);
        assert_eq!(
            actions,
            vec![LeaderAction::HighWatermarkAdvanced(Offset(10))]
        );
        assert_eq!(state.isr(), ids(&[1, 2]));
    }

    #[test]
    fn a_follower_keeping_pace_with_a_busy_leader_stays_in_sync() {
        // Kafka's lastCaughtUpTimeMs rule: under steady appends a follower is never exactly at
        // the leader's end, but each fetch reaches where the end was at its previous fetch.
        let mut state = leader(&[1, 2], 0, 0, 1);
        let mut now_ms = 0;
        let mut leader_end = 0;
        for _ in 0..100 {
            let fetch_offset = leader_end;
            leader_end += 10;
            append_durable(&mut state, leader_end);
            now_ms += 1_000;
            state
                .follower_fetch(fetch(2, fetch_offset, fetch_offset), now_ms)
                .expect("fetch");
            assert!(state.tick(now_ms).is_empty(), "dropped at {now_ms} ms");
        }
        // A follower that falls further behind at every fetch is not caught up.
        for step in 0..40 {
            leader_end += 100;
            append_durable(&mut state, leader_end);
            now_ms += 1_000;
            state
                .follower_fetch(fetch(2, 1_000 + step, 1_000 + step), now_ms)
                .expect("fetch");
        }
        assert_eq!(proposals(&state.tick(now_ms)), vec![ids(&[1])]);
    }

    #[test]
    fn a_refused_change_is_proposed_again_later() {
        let mut state = leader(&[1, 2], 10, 10, 1);
        let actions = state.tick(LAG_MS + 1);
        assert_eq!(proposals(&actions), vec![ids(&[1])]);
        let LeaderAction::AlterPartition(request) = &actions[0] else {
            panic!("a proposal");
        };
        // A refusal of some other request leaves the pending change alone.
        let mut other = request.clone();
        other.new_isr = ids(&[1, 2, 3]);
        assert!(!state.isr_change_failed(&other));
        assert!(state.pending_isr_change().is_some());
        assert!(state.isr_change_failed(request));
        assert_eq!(state.pending_isr_change(), None);
        assert_eq!(proposals(&state.tick(LAG_MS + 2)), vec![ids(&[1])]);
    }

    #[test]
    fn committed_isrs_are_checked() {
        let mut state = leader(&[1, 2], 10, 10, 1);
        assert!(matches!(
            state.isr_committed(LeaderEpoch(3), PartitionEpoch(10), &ids(&[1])),
            Err(ReplicationError::InvalidUpdateVersion { .. })
        ));
        assert!(matches!(
            state.isr_committed(LeaderEpoch(2), PartitionEpoch(11), &ids(&[1])),
            Err(ReplicationError::FencedLeaderEpoch { .. })
        ));
        assert!(matches!(
            state.isr_committed(LeaderEpoch(3), PartitionEpoch(11), &ids(&[2])),
            Err(ReplicationError::InvalidReplicaAssignment(_))
        ));
        assert!(matches!(
            state.isr_committed(LeaderEpoch(3), PartitionEpoch(11), &ids(&[1, 4])),
            Err(ReplicationError::InvalidReplicaAssignment(_))
        ));
        assert_eq!(state.isr(), ids(&[1, 2]));
        assert_eq!(state.partition_epoch(), PartitionEpoch(10));
        // A controller-made change (a fenced broker removed) replaces the pending one.
        state.tick(LAG_MS + 1);
        assert!(state.pending_isr_change().is_some());
        state
            .isr_committed(LeaderEpoch(3), PartitionEpoch(12), &ids(&[1, 3]))
            .expect("commit");
        assert_eq!(state.isr(), ids(&[1, 3]));
        assert_eq!(state.pending_isr_change(), None);
    }

    #[test]
    fn acks_all_waits_for_the_high_watermark() {
        let mut state = leader(&[1, 2], 0, 0, 2);
        assert_eq!(state.check_acks_all_append(), Ok(()));
        state.log_appended(Offset(5)).expect("append");
        assert!(state
            .await_replication(Offset(5), RequestToken(1))
            .expect("wait")
            .is_empty());
        state.log_appended(Offset(8)).expect("append");
        assert!(state
            .await_replication(Offset(8), RequestToken(2))
            .expect("wait")
            .is_empty());
        assert_eq!(state.waiting_produce_count(), 2);
        // Durable on the follower but not yet on the leader: nothing completes.
        let decision = state.follower_fetch(fetch(2, 8, 8), 1).expect("fetch");
        assert!(completions(&decision.actions).is_empty());
        let actions = state.log_flushed(Offset(6)).expect("flush");
        assert_eq!(completions(&actions), vec![(1, Ok(()))]);
        let actions = state.log_flushed(Offset(8)).expect("flush");
        assert_eq!(completions(&actions), vec![(2, Ok(()))]);
        // Already below the high watermark: completes at once.
        let actions = state
            .await_replication(Offset(7), RequestToken(3))
            .expect("wait");
        assert_eq!(completions(&actions), vec![(3, Ok(()))]);
        assert!(state.await_replication(Offset(9), RequestToken(4)).is_err());
    }

    #[test]
    fn acks_all_is_refused_below_min_isr_and_fails_after_a_shrink() {
        let mut state = leader(&[1, 2], 0, 0, 2);
        append_durable(&mut state, 5);
        state
            .await_replication(Offset(5), RequestToken(1))
            .expect("wait");
        // Follower 2 stops fetching; the leader drops it once the controller agrees.
        assert_eq!(proposals(&state.tick(LAG_MS + 1)), vec![ids(&[1])]);
        assert_eq!(
            state.waiting_produce_count(),
            1,
            "a pending shrink does not count"
        );
        let actions = commit_pending(&mut state);
        assert_eq!(
            completions(&actions),
            vec![(
                1,
                Err(ReplicationError::NotEnoughReplicasAfterAppend {
                    isr_count: 1,
                    min_insync_replicas: 2
                })
            )]
        );
        assert_eq!(
            state.check_acks_all_append(),
            Err(ReplicationError::NotEnoughReplicas {
                isr_count: 1,
                min_insync_replicas: 2
            })
        );
    }

    #[test]
    fn resigning_fails_waiting_produces() {
        let mut state = leader(&[1, 2], 0, 0, 1);
        state.log_appended(Offset(5)).expect("append");
        state
            .await_replication(Offset(3), RequestToken(7))
            .expect("wait");
        state
            .await_replication(Offset(5), RequestToken(8))
            .expect("wait");
        let actions = state.resign();
        let failed: Vec<u64> = completions(&actions)
            .into_iter()
            .filter(|(_, result)| matches!(result, Err(ReplicationError::NotLeaderOrFollower(_))))
            .map(|(token, _)| token)
            .collect();
        assert_eq!(failed, vec![7, 8]);
    }

    #[test]
    fn log_positions_only_move_forward() {
        let mut state = leader(&[1], 10, 10, 1);
        assert!(state.log_appended(Offset(9)).is_err());
        assert!(state.log_flushed(Offset(11)).is_err());
        state.log_appended(Offset(12)).expect("append");
        state.log_flushed(Offset(11)).expect("flush");
        assert!(state.log_flushed(Offset(10)).is_err());
        assert_eq!(state.high_watermark(), Offset(11));
    }

    #[test]
    fn offset_for_leader_epoch_checks_the_epoch_and_ends_the_latest_at_the_log_end() {
        let mut state = leader(&[1], 10, 10, 1);
        state.log_appended(Offset(14)).expect("append");
        let mut cache = LeaderEpochCache::new();
        cache.assign(LeaderEpoch(1), Offset(0)).expect("assign");
        cache.assign(LeaderEpoch(3), Offset(10)).expect("assign");
        assert_eq!(
            state.offset_for_leader_epoch(Some(LeaderEpoch(3)), LeaderEpoch(3), &cache),
            Ok(EpochEndOffset {
                epoch: LeaderEpoch(3),
                end_offset: Offset(14)
            })
        );
        assert_eq!(
            state.offset_for_leader_epoch(None, LeaderEpoch(2), &cache),
            Ok(EpochEndOffset {
                epoch: LeaderEpoch(1),
                end_offset: Offset(10)
            })
        );
        assert!(state
            .offset_for_leader_epoch(Some(LeaderEpoch(2)), LeaderEpoch(1), &cache)
            .is_err());
    }

    #[derive(Clone, Debug)]
    enum Input {
        Append(i64),
        Flush(i64),
        Await(i64, u64),
        Fetch(i32, Option<i32>, i64, i64, u64),
        Tick(u64),
        Commit(i32, i32, Vec<i32>),
        Refuse(i32, Vec<i32>),
        OffsetForLeaderEpoch(Option<i32>, i32),
    }

    fn input() -> impl Strategy<Value = Input> {
        let offset = prop_oneof![-3..40i64, Just(i64::MAX), Just(i64::MIN)];
        let time = prop_oneof![0..100_000u64, Just(u64::MAX)];
        let node = -1..5i32;
        let nodes = prop::collection::vec(node.clone(), 0..5);
        prop_oneof![
            offset.clone().prop_map(Input::Append),
            offset.clone().prop_map(Input::Flush),
            (offset.clone(), 0..100u64).prop_map(|(end, token)| Input::Await(end, token)),
            (
                node.clone(),
                prop::option::of(1..5i32),
                offset.clone(),
                offset,
                time.clone()
            )
                .prop_map(|(replica, epoch, fetch, durable, now)| {
                    Input::Fetch(replica, epoch, fetch, durable, now)
                }),
            time.prop_map(Input::Tick),
            (1..5i32, 8..14i32, nodes.clone()).prop_map(|(epoch, partition_epoch, isr)| {
                Input::Commit(epoch, partition_epoch, isr)
            }),
            (8..14i32, nodes)
                .prop_map(|(partition_epoch, isr)| Input::Refuse(partition_epoch, isr)),
            (prop::option::of(1..5i32), -2..6i32)
                .prop_map(|(current, requested)| Input::OffsetForLeaderEpoch(current, requested)),
        ]
    }

    use proptest::prelude::*;

    proptest! {
        /// Any input sequence, however wrong (offsets out of range, time going back, stale or
        /// malformed commits, strangers fetching), gets an answer or an error, never a panic;
        /// the high watermark never goes back and every token is answered at most once.
        #[test]
        fn no_input_sequence_panics(inputs in prop::collection::vec(input(), 0..80)) {
            let mut state = leader(&[1, 2], 4, 2, 2);
            let cache = LeaderEpochCache::from_entries(vec![
                crate::replication::EpochEntry { epoch: LeaderEpoch(1), start_offset: Offset(0) },
                crate::replication::EpochEntry { epoch: LeaderEpoch(3), start_offset: Offset(4) },
            ]).expect("valid entries");
            // Waits per token (tokens may repeat in the input): each is answered exactly once.
            let mut waiting: BTreeMap<u64, usize> = BTreeMap::new();
            let mut high_watermark = state.high_watermark();
            for input in inputs {
                let actions = match input {
                    Input::Append(end) => state.log_appended(Offset(end)).map(|()| Vec::new()),
                    Input::Flush(end) => state.log_flushed(Offset(end)),
                    Input::Await(end, token) => {
                        let result = state.await_replication(Offset(end), RequestToken(token));
                        if result.is_ok() {
                            *waiting.entry(token).or_default() += 1;
                        }
                        result
                    }
                    Input::Fetch(replica, epoch, fetch_offset, durable_offset, now_ms) => state
                        .follower_fetch(
                            FollowerFetch {
                                replica: NodeId(replica),
                                current_leader_epoch: epoch.map(LeaderEpoch),
                                fetch_offset: Offset(fetch_offset),
                                durable_offset: Offset(durable_offset),
                            },
                            now_ms,
                        )
                        .map(|decision| decision.actions),
                    Input::Tick(now_ms) => Ok(state.tick(now_ms)),
                    Input::Commit(epoch, partition_epoch, isr) => state.isr_committed(
                        LeaderEpoch(epoch),
                        PartitionEpoch(partition_epoch),
                        &ids(&isr),
                    ),
                    Input::Refuse(partition_epoch, isr) => {
                        state.isr_change_failed(&AlterPartitionRequest {
                            leader: NodeId(1),
                            leader_epoch: LeaderEpoch(3),
                            partition_epoch: PartitionEpoch(partition_epoch),
                            new_isr: ids(&isr),
                        });
                        Ok(Vec::new())
                    }
                    Input::OffsetForLeaderEpoch(current, requested) => state
                        .offset_for_leader_epoch(current.map(LeaderEpoch), LeaderEpoch(requested), &cache)
                        .map(|_| Vec::new()),
                };
                prop_assert!(state.high_watermark() >= high_watermark);
                high_watermark = state.high_watermark();
                let completed = actions.unwrap_or_default().into_iter().filter_map(|action| match action {
                    LeaderAction::CompleteProduce { token, .. } => Some(token.0),
                    _ => None,
                });
                for token in completed {
                    let count = waiting.get_mut(&token);
                    prop_assert!(count.as_ref().is_some_and(|count| **count > 0), "token {} answered twice", token);
                    if let Some(count) = count {
                        *count -= 1;
                    }
                }
            }
            for action in state.resign() {
                let LeaderAction::CompleteProduce { token, .. } = action else {
                    panic!("resigning only answers produces");
                };
                if let Some(count) = waiting.get_mut(&token.0) {
                    *count -= 1;
                }
            }
            prop_assert!(waiting.values().all(|count| *count == 0), "every wait answered");
        }
    }

    #[test]
    fn the_next_deadline_is_when_an_isr_member_could_fall_out() {
        let mut state = leader(&[1, 2, 3], 0, 0, 1);
        assert_eq!(state.next_deadline_ms(), Some(LAG_MS + 1));
        state.follower_fetch(fetch(2, 0, 0), 500).expect("fetch");
        assert_eq!(state.next_deadline_ms(), Some(LAG_MS + 1));
        state.follower_fetch(fetch(3, 0, 0), 700).expect("fetch");
        assert_eq!(state.next_deadline_ms(), Some(500 + LAG_MS + 1));
        assert_eq!(leader(&[1], 0, 0, 1).next_deadline_ms(), None);
    }
}
