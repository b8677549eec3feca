//! A follower's truncation after it learns of a new leader (KIP-101, with KIP-279's fix for
//! leader changes in quick succession): it asks the leader where its latest epoch ends, cuts
//! its log where the two stop agreeing, and only then fetches. Truncating to the follower's
//! high watermark instead, as Kafka did before KIP-101, can throw away records the leader has
//! acknowledged (the follower's high watermark lags the leader's) or keep records the new
//! leader never had (the logs diverge).
//!
//! Kafka's `AbstractFetcherThread.getOffsetTruncationState` as pure functions; the fetcher
//! task performs each [`TruncationStep`] and sends the requests.

use ringlog_engine::{LeaderEpoch, Offset};

use super::epoch_cache::{EpochEndOffset, LeaderEpochCache};
use super::{UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET};

/// The most OffsetForLeaderEpoch round trips one truncation takes before it settles for what it
/// has. Each round strictly lowers the epoch asked about (see [`after_leader_answer`]), so the
/// real bound is the number of epochs in the follower's cache; this cap only keeps a broken
/// peer from holding a fetcher in the loop. A thousand leader changes between two fetches of
/// one follower is far past anything a healthy cluster does.
pub const TRUNCATION_ROUNDS_MAX: u32 = 1_000;

/// What a follower does next while truncating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TruncationStep {
    /// Truncate the log (and the epoch cache, [`LeaderEpochCache::truncate_from_end`]) to
    /// `truncate_to` if it ends past it, then send OffsetForLeaderEpoch(`epoch`) to the leader.
    AskLeader {
        truncate_to: Offset,
        epoch: LeaderEpoch,
    },
    /// Truncate to `truncate_to` if the log ends past it; truncation is done and fetching
    /// starts there.
    Fetch { truncate_to: Offset },
}

impl TruncationStep {
    pub fn truncate_to(self) -> Offset {
        match self {
            TruncationStep::AskLeader { truncate_to, .. }
            | TruncationStep::Fetch { truncate_to } => truncate_to,
        }
    }
}

/// The first step on becoming a follower: ask about the latest epoch in the follower's cache.
/// With no epochs at all the follower has nothing to compare, and falls back to its high
/// watermark, as Kafka does (only a log written before leader epochs existed, or an empty one).
pub fn start_truncation(
    cache: &LeaderEpochCache,
    log_end_offset: Offset,
    high_watermark: Offset,
) -> TruncationStep {
    match cache.latest_epoch() {
        Some(epoch) => TruncationStep::AskLeader {
            truncate_to: log_end_offset,
            epoch,
        },
        None => TruncationStep::Fetch {
            truncate_to: high_watermark.clamp(Offset::ZERO, log_end_offset.max(Offset::ZERO)),
        },
    }
}

/// The next step after the leader answered OffsetForLeaderEpoch with `answer` (KIP-279):
/// - the leader knows nothing of the epoch: keep the log and fetch from its end (a fetch past
///   the leader's end is then refused with OFFSET_OUT_OF_RANGE, and handled as such);
/// - an answer without an epoch (a pre-KIP-279 leader): truncate to its end offset;
/// - the leader's epoch is one the follower has too: truncate to the lower of the two ends of
///   that epoch, and truncation is done;
/// - the follower does not have the leader's epoch: truncate to the end of the follower's
///   largest epoch below it and ask again about the epoch that is then the follower's latest,
///   because the logs may have diverged earlier than the leader's answer shows.
pub fn after_leader_answer(
    cache: &LeaderEpochCache,
    log_end_offset: Offset,
    asked: LeaderEpoch,
    answer: EpochEndOffset,
) -> TruncationStep {
    if answer.end_offset == UNDEFINED_EPOCH_OFFSET || answer.end_offset.0 < 0 {
        return TruncationStep::Fetch {
            truncate_to: log_end_offset,
        };
    }
    if answer.epoch == UNDEFINED_EPOCH {
        return TruncationStep::Fetch {
            truncate_to: answer.end_offset.min(log_end_offset),
        };
    }
    if let Some(latest) = cache.latest_epoch() {
        if latest < answer.epoch {
            // The follower's cache lost the epoch it asked about since (a no-op truncation to
            // the log end drops an epoch that never got a record, as Kafka's truncateTo does:
            // a leader that resigned before writing in its epoch). Where the leader's copy of
            // the follower's latest epoch ends is still unknown: ask about that one.
            return if latest < asked {
                TruncationStep::AskLeader {
                    truncate_to: log_end_offset,
                    epoch: latest,
                }
            } else {
                TruncationStep::Fetch {
                    truncate_to: answer.end_offset.min(log_end_offset),
                }
            };
        }
    }
    let own = cache.end_offset_for(answer.epoch, log_end_offset);
    if own.end_offset == UNDEFINED_EPOCH_OFFSET {
        // The follower has no epochs at all: the leader's answer is all there is to go by.
        return TruncationStep::Fetch {
            truncate_to: answer.end_offset.min(log_end_offset),
        };
    }
    if own.epoch == answer.epoch {
        return TruncationStep::Fetch {
            truncate_to: own.end_offset.min(answer.end_offset).min(log_end_offset),
        };
    }
    let truncate_to = own.end_offset.min(log_end_offset);
    let mut truncated = cache.clone();
    truncated.truncate_from_end(truncate_to);
    match truncated.latest_epoch() {
        // Asking about an epoch no lower than the last one asked would not make progress; an
        // answer can only lead here if the leader broke the rules, so stop at what is known.
        Some(next) if next < asked => TruncationStep::AskLeader {
            truncate_to,
            epoch: next,
        },
        _ => TruncationStep::Fetch { truncate_to },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::epoch_cache::cache;

    /// Runs a whole truncation of a follower against a leader's cache and log end, the way a
    /// fetcher would; returns the offset the follower fetches from.
    fn truncate(
        follower: &mut LeaderEpochCache,
        follower_log_end: Offset,
        high_watermark: Offset,
        leader: &LeaderEpochCache,
        leader_log_end: Offset,
    ) -> Offset {
        let mut log_end = follower_log_end;
        let mut step = start_truncation(follower, log_end, high_watermark);
        for _ in 0..TRUNCATION_ROUNDS_MAX {
            log_end = log_end.min(step.truncate_to());
            follower.truncate_from_end(log_end);
            match step {
                TruncationStep::Fetch { .. } => return log_end,
                TruncationStep::AskLeader { epoch, .. } => {
                    let answer = leader.end_offset_for(epoch, leader_log_end);
                    step = after_leader_answer(follower, log_end, epoch, answer);
                }
            }
        }
        panic!("truncation did not settle");
    }

    /// KIP-101 scenario 1: a follower restarts after fetching m2 but before it learns the high
    /// watermark that covers it. Truncating to its own high watermark (1) would drop m2, which
    /// the leader acknowledged; if the leader then died the follower would lead without it.
    /// With epochs it keeps m2.
    #[test]
    fn kip101_follower_restart_keeps_records_past_its_high_watermark() {
        let leader = cache(&[(0, 0)]);
        let mut follower = cache(&[(0, 0)]);
        let fetch_from = truncate(&mut follower, Offset(2), Offset(1), &leader, Offset(2));
        assert_eq!(fetch_from, Offset(2));
        assert_eq!(follower, cache(&[(0, 0)]));
    }

    /// KIP-101 scenario 1, second half: the leader died before the high watermark reached the
    /// follower, and the follower became leader (epoch 1, starting at its log end 2). The old
    /// leader comes back as a follower with the same two records: nothing is cut.
    #[test]
    fn kip101_leader_change_before_high_watermark_propagates() {
        let new_leader = cache(&[(0, 0), (1, 2)]);
        let mut old_leader = cache(&[(0, 0)]);
        let fetch_from = truncate(
            &mut old_leader,
            Offset(2),
            Offset(2),
            &new_leader,
            Offset(2),
        );
        assert_eq!(fetch_from, Offset(2));
    }

    /// KIP-101 scenario 2: A had m1, m2 and B only m1 when both lost power. B came back first,
    /// leads epoch 1 and wrote m3 at offset 1. A's high watermark (2) would keep m2 where B
    /// has m3: the logs diverge. With epochs A asks where epoch 0 ends (1) and cuts m2.
    #[test]
    fn kip101_replicas_diverge_after_a_double_failure() {
        let leader_b = cache(&[(0, 0), (1, 1)]);
        let mut follower_a = cache(&[(0, 0)]);
        let fetch_from = truncate(&mut follower_a, Offset(2), Offset(2), &leader_b, Offset(2));
        assert_eq!(fetch_from, Offset(1));
        assert_eq!(follower_a, cache(&[(0, 0)]));
    }

    /// KIP-279: leaders change quickly. The follower wrote epoch 2 (offsets 5..8) as a leader
    /// nobody followed; the leader never had epoch 2, and its epoch 1 ends at 6 (epoch 3 from
    /// there). The first answer names epoch 1, which the follower has: cut at min(5, 6) = 5.
    #[test]
    fn kip279_truncates_to_the_lower_end_of_a_shared_epoch() {
        let leader = cache(&[(0, 0), (1, 3), (3, 6)]);
        let mut follower = cache(&[(0, 0), (1, 3), (2, 5)]);
        let fetch_from = truncate(&mut follower, Offset(8), Offset(3), &leader, Offset(9));
        assert_eq!(fetch_from, Offset(5));
        assert_eq!(follower, cache(&[(0, 0), (1, 3)]));
    }

    /// KIP-279's iteration: the leader's answer names an epoch the follower lacks, so the
    /// follower cuts to the end of its own lower epoch and asks again.
    #[test]
    fn kip279_asks_again_when_the_leader_names_an_unknown_epoch() {
        // Leader: epoch 0 [0,4), epoch 2 [4,..). Follower: epoch 0 [0,6) (it got 4,5 from a
        // leader of epoch 0 that the new leader never heard of), epoch 3 [6,9) on its own.
        let leader = cache(&[(0, 0), (2, 4), (4, 7)]);
        let mut follower = cache(&[(0, 0), (3, 6)]);
        let first = after_leader_answer(
            &follower,
            Offset(9),
            LeaderEpoch(3),
            leader.end_offset_for(LeaderEpoch(3), Offset(10)),
        );
        // The leader's answer (epoch 2, ends at 7) names epoch 2, unknown to the follower: cut
        // to the end of its epoch 0 (6), then ask about epoch 0.
        assert_eq!(
            first,
            TruncationStep::AskLeader {
                truncate_to: Offset(6),
                epoch: LeaderEpoch(0)
            }
        );
        let fetch_from = truncate(&mut follower, Offset(9), Offset(0), &leader, Offset(10));
        assert_eq!(fetch_from, Offset(4));
        assert_eq!(follower, cache(&[(0, 0)]));
    }

    /// Found by the model test: a follower that led epoch 3 without writing has the entry
    /// (3, its log end). Its fetcher truncates to the log end before the answer comes back,
    /// which drops that entry (as Kafka's truncateTo does), so the leader's answer (epoch 2)
    /// is above everything the follower has left. It must ask about its epoch 1 rather than
    /// take the leader's end offset, or it keeps its epoch-1 record that the leader lacks.
    #[test]
    fn an_answer_above_the_followers_epochs_asks_again() {
        let leader = cache(&[(0, 0), (2, 3), (4, 4)]);
        let mut follower = cache(&[(1, 0), (3, 1)]);
        let first = start_truncation(&follower, Offset(1), Offset(0));
        assert_eq!(
            first,
            TruncationStep::AskLeader {
                truncate_to: Offset(1),
                epoch: LeaderEpoch(3)
            }
        );
        follower.truncate_from_end(Offset(1));
        let answer = leader.end_offset_for(LeaderEpoch(3), Offset(4));
        assert_eq!(
            after_leader_answer(&follower, Offset(1), LeaderEpoch(3), answer),
            TruncationStep::AskLeader {
                truncate_to: Offset(1),
                epoch: LeaderEpoch(1)
            }
        );
        let mut follower = cache(&[(1, 0), (3, 1)]);
        let fetch_from = truncate(&mut follower, Offset(1), Offset(0), &leader, Offset(4));
        assert_eq!(fetch_from, Offset(0));
    }

    #[test]
    fn undefined_answers_and_empty_caches() {
        let follower = cache(&[(0, 0)]);
        assert_eq!(
            after_leader_answer(
                &follower,
                Offset(7),
                LeaderEpoch(0),
                EpochEndOffset::UNDEFINED
            ),
            TruncationStep::Fetch {
                truncate_to: Offset(7)
            }
        );
        let old_style = EpochEndOffset {
            epoch: UNDEFINED_EPOCH,
            end_offset: Offset(4),
        };
        assert_eq!(
            after_leader_answer(&follower, Offset(7), LeaderEpoch(0), old_style),
            TruncationStep::Fetch {
                truncate_to: Offset(4)
            }
        );
        assert_eq!(
            start_truncation(&LeaderEpochCache::new(), Offset(7), Offset(3)),
            TruncationStep::Fetch {
                truncate_to: Offset(3)
            }
        );
        // A high watermark past the log end (a stale checkpoint) cannot extend the log.
        assert_eq!(
            start_truncation(&LeaderEpochCache::new(), Offset(2), Offset(3)),
            TruncationStep::Fetch {
                truncate_to: Offset(2)
            }
        );
        // The leader's epoch is older than anything the follower has: the follower's
        // earliest epoch start bounds the cut.
        let follower = cache(&[(5, 10)]);
        let answer = EpochEndOffset {
            epoch: LeaderEpoch(2),
            end_offset: Offset(12),
        };
        assert_eq!(
            after_leader_answer(&follower, Offset(15), LeaderEpoch(5), answer),
            TruncationStep::Fetch {
                truncate_to: Offset(10)
            }
        );
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    /// A cache built the way a log builds one: epochs assigned at growing offsets.
    fn cache_and_log_end() -> impl Strategy<Value = (LeaderEpochCache, Offset)> {
        prop::collection::vec((0..4i32, 0..4i64), 0..6).prop_map(|steps| {
            let mut cache = LeaderEpochCache::new();
            let (mut epoch, mut offset) = (0, 0);
            for (epoch_step, offset_step) in steps {
                epoch += epoch_step;
                offset += offset_step;
                cache
                    .assign(LeaderEpoch(epoch), Offset(offset))
                    .expect("non-negative");
            }
            (cache, Offset(offset + 2))
        })
    }

    proptest! {
        /// Whatever the two caches hold, truncation settles within the round limit, never
        /// grows the log and never cuts below zero.
        #[test]
        fn truncation_always_settles_within_the_log(
            (follower, follower_log_end) in cache_and_log_end(),
            (leader, leader_log_end) in cache_and_log_end(),
            high_watermark in 0..10i64,
        ) {
            let mut cache = follower;
            let mut log_end = follower_log_end;
            let mut step = start_truncation(&cache, log_end, Offset(high_watermark));
            let mut rounds = 0;
            loop {
                prop_assert!(step.truncate_to() >= Offset::ZERO);
                log_end = log_end.min(step.truncate_to());
                cache.truncate_from_end(log_end);
                let TruncationStep::AskLeader { epoch, .. } = step else {
                    break;
                };
                rounds += 1;
                prop_assert!(rounds < TRUNCATION_ROUNDS_MAX);
                let answer = leader.end_offset_for(epoch, leader_log_end);
                step = after_leader_answer(&cache, log_end, epoch, answer);
            }
            prop_assert!(log_end <= follower_log_end);
        }
    }
}
