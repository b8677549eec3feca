//! Replica placement: which brokers hold each partition of a new topic or of a topic's new
//! partitions, as Kafka's `AdminUtils.assignReplicasToBrokers` decides it, and the checks of an
//! assignment a client spells out itself (CreateTopics' and CreatePartitions' `assignments`).
//! Pure functions of the brokers and a seed, so every controller that applies the same command
//! places alike.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::metadata::{MetadataError, TOPIC_PARTITIONS_MAX};

/// A broker that can take replicas: registered, unfenced and not shutting down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementBroker {
    pub broker_id: i32,
    pub rack: Option<String>,
}

/// One partition of a manual assignment (Kafka's `CreatableReplicaAssignment`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaAssignment {
    pub partition_index: i32,
    pub broker_ids: Vec<i32>,
}

/// Assigns `replication_factor` replicas to each of `partition_count` partitions numbered from
/// `first_partition`, over `brokers` (any order; they are sorted by id first).
///
/// Kafka's round robin: partition `p`'s first replica (its preferred leader) is broker
/// `(p + start) % n`, so leaders are spread evenly; the other replicas follow at a shift that
/// grows by one every `n` partitions, so the followers of one broker's partitions are spread
/// over the others rather than always being its neighbours. When every broker has a rack, the
/// brokers are first listed alternating racks and a replica is skipped when its rack (or the
/// broker) already holds one and another rack (broker) does not: each partition's replicas lie
/// on `min(replication_factor, racks)` distinct racks. With some racks unset, racks are ignored
/// (Kafka refuses that mix unless told to ignore racks; a half-racked cluster should still
/// create topics).
///
/// `seed` stands for Kafka's random start index and shift: the proposer's random topic id, so
/// every topic starts elsewhere and every controller computes the same assignment.
pub fn assign_replicas(
    brokers: &[PlacementBroker],
    partition_count: i32,
    replication_factor: i32,
    first_partition: i32,
    seed: u128,
) -> Result<Vec<Vec<i32>>, MetadataError> {
    if replication_factor <= 0 {
        return Err(MetadataError::InvalidReplicationFactor(format!(
            "{replication_factor}: a topic needs at least one replica"
        )));
    }
    if replication_factor as usize > brokers.len() {
        return Err(MetadataError::InvalidReplicationFactor(format!(
            "{replication_factor} is larger than the {} available broker(s) (registered, \
             unfenced and not shutting down)",
            brokers.len()
        )));
    }
    assert!(
        (0..=TOPIC_PARTITIONS_MAX).contains(&partition_count)
            && (0..=TOPIC_PARTITIONS_MAX).contains(&first_partition),
        "partition counts are checked before placement"
    );
    let mut sorted = brokers.to_vec();
    sorted.sort_by_key(|broker| broker.broker_id);
    let all_racked = sorted.iter().all(|broker| broker.rack.is_some());
    let broker_count = sorted.len();
    let start_index = (seed % broker_count as u128) as usize;
    // The shift grows by one at every multiple of the broker count; partitions added later
    // start with the growth of the ones before them, so a topic grown in steps is placed as
    // one created at its final size would be (Kafka restarts the shift instead).
    let mut replica_shift = ((seed >> 64) % broker_count as u128) as usize
        + (first_partition.max(1) as usize - 1) / broker_count;
    let replication_factor = replication_factor as usize;
    let mut assignment = Vec::with_capacity(partition_count as usize);
    if all_racked {
        let racks: BTreeMap<i32, &str> = sorted
            .iter()
            .map(|broker| (broker.broker_id, broker.rack.as_deref().unwrap_or_default()))
            .collect();
        let rack_count = racks.values().collect::<BTreeSet<_>>().len();
        let arranged = rack_alternated(&racks);
        for partition in first_partition..first_partition + partition_count {
            let partition = partition as usize;
            if partition > 0 && partition.is_multiple_of(broker_count) {
                replica_shift += 1;
            }
            let first_index = (partition + start_index) % broker_count;
            let leader = arranged[first_index];
            let mut replicas = vec![leader];
            let mut racks_used = BTreeSet::from([racks[&leader]]);
            let mut step = 0;
            while replicas.len() < replication_factor {
                // Every broker but the first is a candidate once per `broker_count - 1` steps,
                // and an unused one always exists (replication_factor <= broker_count).
                assert!(
                    step < broker_count * broker_count,
                    "placement always terminates"
                );
                let index =
                    follower_index(first_index, replica_shift * rack_count, step, broker_count);
                let broker = arranged[index];
                let rack = racks[&broker];
                if (!racks_used.contains(rack) || racks_used.len() == rack_count)
                    && !replicas.contains(&broker)
                {
                    replicas.push(broker);
                    racks_used.insert(rack);
                }
                step += 1;
            }
            assignment.push(replicas);
        }
    } else {
        let ids: Vec<i32> = sorted.iter().map(|broker| broker.broker_id).collect();
        for partition in first_partition..first_partition + partition_count {
            let partition = partition as usize;
            if partition > 0 && partition.is_multiple_of(broker_count) {
                replica_shift += 1;
            }
            let first_index = (partition + start_index) % broker_count;
            let mut replicas = vec![ids[first_index]];
            for step in 0..replication_factor - 1 {
                replicas.push(ids[follower_index(first_index, replica_shift, step, broker_count)]);
            }
            assignment.push(replicas);
        }
    }
    Ok(assignment)
}

/// Kafka's `replicaIndex`: the `step`th follower of the broker at `first_index`, never that
/// broker itself.
fn follower_index(first_index: usize, shift: usize, step: usize, broker_count: usize) -> usize {
    let offset = 1 + (shift + step) % (broker_count - 1);
    (first_index + offset) % broker_count
}

/// Kafka's `getRackAlternatedBrokerList`: one broker of each rack in turn (racks in name order,
/// brokers of a rack in id order), e.g. racks a: 0 1, b: 2, c: 3 4 give 0 2 3 1 4.
fn rack_alternated(racks: &BTreeMap<i32, &str>) -> Vec<i32> {
    let mut by_rack: BTreeMap<&str, std::collections::VecDeque<i32>> = BTreeMap::new();
    for (&broker, &rack) in racks {
        by_rack.entry(rack).or_default().push_back(broker);
    }
    let mut arranged = Vec::with_capacity(racks.len());
    while arranged.len() < racks.len() {
        for brokers in by_rack.values_mut() {
            if let Some(broker) = brokers.pop_front() {
                arranged.push(broker);
            }
        }
    }
    arranged
}

/// Checks a manual assignment of partitions `first_partition..` (Kafka's
/// `validateManualPartitionAssignment`): every partition names at least one broker, each
/// broker once and every broker registered (fenced ones too: they may come back), and all
/// partitions have the same number of replicas — `replication_factor` when given (the
/// topic's, when partitions are added). Returns the replica lists in partition order.
pub fn check_assignment(
    assignments: &[ReplicaAssignment],
    first_partition: i32,
    replication_factor: Option<usize>,
    registered: &BTreeSet<i32>,
) -> Result<Vec<Vec<i32>>, MetadataError> {
    let invalid = |reason: String| Err(MetadataError::InvalidReplicaAssignment(reason));
    if assignments.is_empty() {
        return invalid("the assignment names no partition".into());
    }
    if assignments.len() > TOPIC_PARTITIONS_MAX as usize {
        return invalid(format!(
            "{} partitions exceed {TOPIC_PARTITIONS_MAX}",
            assignments.len()
        ));
    }
    let mut sorted: Vec<&ReplicaAssignment> = assignments.iter().collect();
    sorted.sort_by_key(|assignment| assignment.partition_index);
    let mut expected = replication_factor;
    let mut replicas = Vec::with_capacity(sorted.len());
    for (offset, assignment) in sorted.into_iter().enumerate() {
        let partition = first_partition + offset as i32;
        if assignment.partition_index != partition {
            return invalid(format!(
                "partitions should be a consecutive sequence from {first_partition}; \
                 {partition} is missing or repeated"
            ));
        }
        let brokers = &assignment.broker_ids;
        if brokers.is_empty() {
            return invalid(format!("partition {partition} has an empty replica list"));
        }
        let mut seen = BTreeSet::new();
        for broker in brokers {
            if !seen.insert(*broker) {
                return invalid(format!(
                    "partition {partition} names broker {broker} more than once"
                ));
            }
            if !registered.contains(broker) {
                return invalid(format!(
                    "partition {partition} names broker {broker}, but no such broker is registered"
                ));
            }
        }
        match expected {
            Some(count) if count != brokers.len() => {
                return invalid(format!(
                    "partition {partition} has {} replica(s), but the others have {count}",
                    brokers.len()
                ))
            }
            _ => expected = Some(brokers.len()),
        }
        replicas.push(brokers.clone());
    }
    Ok(replicas)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(racks: &[Option<&str>]) -> Vec<PlacementBroker> {
        racks
            .iter()
            .enumerate()
            .map(|(index, rack)| PlacementBroker {
                broker_id: index as i32 + 1,
                rack: rack.map(String::from),
            })
            .collect()
    }

    fn count_by_broker(lists: impl Iterator<Item = i32>) -> BTreeMap<i32, usize> {
        let mut counts = BTreeMap::new();
        for broker in lists {
            *counts.entry(broker).or_default() += 1;
        }
        counts
    }

    fn spread(counts: &BTreeMap<i32, usize>) -> usize {
        counts.values().max().unwrap_or(&0) - counts.values().min().unwrap_or(&0)
    }

    #[test]
    fn kafka_round_robin_with_a_fixed_start() {
        // AdminUtilsTest.testReplicaAssignment: 5 brokers, 10 partitions, RF 3, start index 0.
        let five = brokers(&[None; 5]);
        let assignment = assign_replicas(&five, 10, 3, 0, 0).expect("placed");
        let expected: Vec<Vec<i32>> = [
            [0, 1, 2],
            [1, 2, 3],
            [2, 3, 4],
            [3, 4, 0],
            [4, 0, 1],
            [0, 2, 3],
            [1, 3, 4],
            [2, 4, 0],
            [3, 0, 1],
            [4, 1, 2],
        ]
        .iter()
        .map(|replicas| replicas.iter().map(|index| index + 1).collect())
        .collect();
        assert_eq!(assignment, expected);
    }

    #[test]
    fn leaders_and_replicas_spread_evenly() {
        for broker_count in 1..=7 {
            let all = brokers(&vec![None; broker_count]);
            for replication_factor in 1..=broker_count as i32 {
                for seed in [0, 1, u128::MAX, 0x1234_5678_9abc_def0 << 64 | 7] {
                    let assignment =
                        assign_replicas(&all, 120, replication_factor, 0, seed).expect("placed");
                    assert_eq!(assignment.len(), 120);
                    for replicas in &assignment {
                        assert_eq!(replicas.len(), replication_factor as usize);
                        let distinct: BTreeSet<_> = replicas.iter().collect();
                        assert_eq!(distinct.len(), replicas.len(), "{replicas:?}");
                    }
                    let leaders = count_by_broker(assignment.iter().map(|r| r[0]));
                    assert_eq!(leaders.len(), broker_count);
                    assert!(spread(&leaders) <= 1, "leaders {leaders:?}");
                    let all_replicas = count_by_broker(assignment.iter().flatten().copied());
                    assert!(
                        spread(&all_replicas) <= 1 + replication_factor as usize,
                        "replicas {all_replicas:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn added_partitions_continue_the_round_robin() {
        let four = brokers(&[None; 4]);
        let whole = assign_replicas(&four, 12, 2, 0, 99).expect("placed");
        let head = assign_replicas(&four, 5, 2, 0, 99).expect("placed");
        let tail = assign_replicas(&four, 7, 2, 5, 99).expect("placed");
        assert_eq!([head, tail].concat(), whole);
    }

    #[test]
    fn rack_aware_placement_spreads_each_partition_over_racks() {
        // Three racks of uneven sizes: a (1, 2, 3), b (4, 5), c (6).
        let racked = brokers(&[
            Some("a"),
            Some("a"),
            Some("a"),
            Some("b"),
            Some("b"),
            Some("c"),
        ]);
        let rack_of = |broker: i32| racked[broker as usize - 1].rack.clone();
        for seed in [0, 5, u128::MAX] {
            for replication_factor in 1..=6 {
                let assignment =
                    assign_replicas(&racked, 60, replication_factor, 0, seed).expect("placed");
                for replicas in &assignment {
                    let racks: BTreeSet<_> = replicas.iter().map(|b| rack_of(*b)).collect();
                    assert_eq!(
                        racks.len(),
                        replicas.len().min(3),
                        "{replicas:?} over racks {racks:?}"
                    );
                    let distinct: BTreeSet<_> = replicas.iter().collect();
                    assert_eq!(distinct.len(), replicas.len());
                }
                let leaders = count_by_broker(assignment.iter().map(|r| r[0]));
                assert!(spread(&leaders) <= 1, "leaders {leaders:?}");
            }
        }
        assert_eq!(
            rack_alternated(&BTreeMap::from([
                (0, "a"),
                (1, "a"),
                (2, "b"),
                (3, "c"),
                (4, "c")
            ])),
            vec![0, 2, 3, 1, 4]
        );
    }

    #[test]
    fn racks_are_ignored_unless_every_broker_has_one() {
        let mixed = brokers(&[Some("a"), Some("a"), None]);
        let plain = brokers(&[None; 3]);
        assert_eq!(
            assign_replicas(&mixed, 9, 2, 0, 3),
            assign_replicas(&plain, 9, 2, 0, 3)
        );
    }

    #[test]
    fn a_replication_factor_over_the_brokers_is_refused() {
        let three = brokers(&[None; 3]);
        let error = assign_replicas(&three, 1, 4, 0, 0).expect_err("too many");
        assert_eq!(
            error.to_string(),
            "invalid replication factor: 4 is larger than the 3 available broker(s) \
             (registered, unfenced and not shutting down)"
        );
        assert!(matches!(
            assign_replicas(&three, 1, 0, 0, 0),
            Err(MetadataError::InvalidReplicationFactor(_))
        ));
        assert!(matches!(
            assign_replicas(&[], 1, 1, 0, 0),
            Err(MetadataError::InvalidReplicationFactor(_))
        ));
        // One broker, RF 1: the single-node case.
        assert_eq!(
            assign_replicas(&brokers(&[None]), 3, 1, 0, 12345),
            Ok(vec![vec![1], vec![1], vec![1]])
        );
    }

    #[test]
    fn manual_assignments_are_checked() {
        let registered = BTreeSet::from([1, 2, 3]);
        let assignment = |pairs: &[(i32, &[i32])]| -> Vec<ReplicaAssignment> {
            pairs
                .iter()
                .map(|(partition_index, broker_ids)| ReplicaAssignment {
                    partition_index: *partition_index,
                    broker_ids: broker_ids.to_vec(),
                })
                .collect()
        };
        assert_eq!(
            check_assignment(
                &assignment(&[(1, &[2, 3]), (0, &[1, 2])]),
                0,
                None,
                &registered
            ),
            Ok(vec![vec![1, 2], vec![2, 3]])
        );
        let refused =
            |pairs: &[(i32, &[i32])], first: i32, replication_factor| match check_assignment(
                &assignment(pairs),
                first,
                replication_factor,
                &registered,
            ) {
                Err(MetadataError::InvalidReplicaAssignment(reason)) => reason,
                other => panic!("accepted: {other:?}"),
            };
        assert!(refused(&[(0, &[1, 4])], 0, None).contains("no such broker"));
        assert!(refused(&[(0, &[1, 1])], 0, None).contains("more than once"));
        assert!(refused(&[(0, &[1, 2]), (1, &[3])], 0, None).contains("the others have 2"));
        assert!(refused(&[(0, &[])], 0, None).contains("empty"));
        assert!(refused(&[(0, &[1]), (2, &[2])], 0, None).contains("consecutive"));
        assert!(refused(&[(0, &[1]), (0, &[2])], 0, None).contains("consecutive"));
        assert!(refused(&[], 0, None).contains("no partition"));
        // Added partitions start at the topic's count and keep its replication factor.
        assert!(refused(&[(0, &[1])], 2, Some(1)).contains("consecutive"));
        assert!(refused(&[(2, &[1])], 2, Some(2)).contains("the others have 2"));
        assert_eq!(
            check_assignment(&assignment(&[(2, &[3, 1])]), 2, Some(2), &registered),
            Ok(vec![vec![3, 1]])
        );
    }
}
