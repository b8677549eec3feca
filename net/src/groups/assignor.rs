//! Server-side partition assignors of the new consumer protocol (KIP-848): given every member's
//! subscription and the partitions of the subscribed topics, which member should own which
//! partition. Pure functions; the consumer group state machine calls them when its group epoch
//! moves past its assignment epoch.

use std::collections::{BTreeMap, BTreeSet};

/// A topic's id (Kafka's UUID, as a number).
pub type TopicId = u128;

/// Partitions by topic: a member's assignment.
pub type Assignment = BTreeMap<TopicId, BTreeSet<i32>>;

/// The assignors this broker runs, in order of preference: the first is the default, as in
/// Kafka's `group.consumer.assignors` (`uniform,range`).
pub const ASSIGNORS: [Assignor; 2] = [Assignor::Uniform, Assignor::Range];

/// One member as an assignor sees it.
#[derive(Clone, Debug, Default)]
pub struct MemberSpec {
    /// The topics it subscribes to (only those that exist).
    pub topics: BTreeSet<TopicId>,
    /// Its static identity, if it has one: the range assignor orders members by it, so that a
    /// restarted static member gets the same range back.
    pub instance_id: Option<String>,
    /// Its assignment in the previous target, which the uniform assignor keeps where it can.
    pub current: Assignment,
}

/// A server-side assignor (the names are Kafka's, as clients send them in `ServerAssignor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assignor {
    /// Balanced and sticky: every member gets as many partitions as any other member that could
    /// take them (within one), and a partition moves only to restore that balance.
    Uniform,
    /// Per topic, contiguous ranges of partitions to the members subscribed to it, sorted by
    /// instance id (or member id), the first `partitions % members` getting one more. Members
    /// with the same subscriptions get the same partition numbers of every topic, which keeps
    /// co-partitioned topics together.
    Range,
}

impl Assignor {
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }

    pub fn from_name(name: &str) -> Option<Assignor> {
        ASSIGNORS
            .into_iter()
            .find(|assignor| assignor.name() == name)
    }

    /// Every partition of every topic someone subscribes to, assigned to exactly one member
    /// subscribed to its topic. `topics` maps each existing topic to its partition count.
    /// Every member appears in the result, possibly with nothing.
    pub fn assign(
        self,
        members: &BTreeMap<String, MemberSpec>,
        topics: &BTreeMap<TopicId, i32>,
    ) -> BTreeMap<String, Assignment> {
        let result = match self {
            Assignor::Uniform => uniform(members, topics),
            Assignor::Range => range(members, topics),
        };
        debug_assert!(check(members, topics, &result).is_ok());
        result
    }
}

/// Members subscribed to each existing topic.
fn subscribers<'a>(
    members: &'a BTreeMap<String, MemberSpec>,
    topics: &BTreeMap<TopicId, i32>,
) -> BTreeMap<TopicId, Vec<&'a str>> {
    let mut by_topic: BTreeMap<TopicId, Vec<&str>> = BTreeMap::new();
    for (member_id, spec) in members {
        for topic in spec
            .topics
            .iter()
            .filter(|topic| topics.contains_key(topic))
        {
            by_topic.entry(*topic).or_default().push(member_id);
        }
    }
    by_topic
}

fn range(
    members: &BTreeMap<String, MemberSpec>,
    topics: &BTreeMap<TopicId, i32>,
) -> BTreeMap<String, Assignment> {
    let mut result: BTreeMap<String, Assignment> = members
        .keys()
        .map(|member_id| (member_id.clone(), Assignment::new()))
        .collect();
    for (topic, mut subscribed) in subscribers(members, topics) {
        subscribed.sort_by_key(|member_id| {
            let spec = &members[*member_id];
            (spec.instance_id.as_deref().unwrap_or(member_id), *member_id)
        });
        let partition_count = topics[&topic].max(0) as usize;
        let quota = partition_count / subscribed.len();
        let extra = partition_count % subscribed.len();
        let mut next = 0_usize;
        for (index, member_id) in subscribed.iter().enumerate() {
            let take = quota + usize::from(index < extra);
            if take > 0 {
                let partitions = (next..next + take)
                    .map(|partition| partition as i32)
                    .collect();
                result
                    .get_mut(*member_id)
                    .expect("every subscriber is a member")
                    .insert(topic, partitions);
            }
            next += take;
        }
    }
    result
}

fn uniform(
    members: &BTreeMap<String, MemberSpec>,
    topics: &BTreeMap<TopicId, i32>,
) -> BTreeMap<String, Assignment> {
    let by_topic = subscribers(members, topics);
    let mut owner: BTreeMap<(TopicId, i32), &str> = BTreeMap::new();
    let mut load: BTreeMap<&str, usize> = members.keys().map(|id| (id.as_str(), 0)).collect();
    // Stickiness: a member keeps what it had if it still subscribes to the topic and the
    // partition still exists (and no other member already kept it).
    for (member_id, spec) in members {
        for (topic, partitions) in &spec.current {
            let Some(&count) = topics.get(topic) else {
                continue;
            };
            if !spec.topics.contains(topic) {
                continue;
            }
            for &partition in partitions.iter().filter(|p| (0..count).contains(*p)) {
                if let std::collections::btree_map::Entry::Vacant(entry) =
                    owner.entry((*topic, partition))
                {
                    entry.insert(member_id);
                    *load.get_mut(member_id.as_str()).expect("a member") += 1;
                }
            }
        }
    }
    // The rest, hardest to place first (fewest possible owners), each to its least loaded
    // possible owner.
    let mut unassigned: Vec<(usize, TopicId, i32)> = by_topic
        .iter()
        .flat_map(|(topic, subscribed)| {
            (0..topics[topic])
                .filter(|partition| !owner.contains_key(&(*topic, *partition)))
                .map(|partition| (subscribed.len(), *topic, partition))
        })
        .collect();
    unassigned.sort_unstable();
    for (_, topic, partition) in unassigned {
        let chosen = by_topic[&topic]
            .iter()
            .copied()
            .min_by_key(|member_id| (load[member_id], *member_id))
            .expect("a topic in by_topic has a subscriber");
        owner.insert((topic, partition), chosen);
        *load.get_mut(chosen).expect("a member") += 1;
    }
    // Balance: move a partition from a member to a possible owner with at least two fewer,
    // until no such move exists. Each move lowers the sum of squared loads by at least two, so
    // this ends; kept partitions move only when the balance needs them to.
    loop {
        let mut moved = false;
        let mut order: Vec<&str> = load.keys().copied().collect();
        order.sort_by_key(|member_id| std::cmp::Reverse(load[member_id]));
        'heaviest: for from in order {
            let owned: Vec<(TopicId, i32)> = owner
                .iter()
                .filter(|(_, member_id)| **member_id == from)
                .map(|(key, _)| *key)
                .collect();
            for (topic, partition) in owned {
                let target = by_topic[&topic]
                    .iter()
                    .copied()
                    .filter(|member_id| load[member_id] + 1 < load[from])
                    .min_by_key(|member_id| (load[member_id], *member_id));
                if let Some(to) = target {
                    owner.insert((topic, partition), to);
                    *load.get_mut(from).expect("a member") -= 1;
                    *load.get_mut(to).expect("a member") += 1;
                    moved = true;
                    break 'heaviest;
                }
            }
        }
        if !moved {
            break;
        }
    }
    let mut result: BTreeMap<String, Assignment> = members
        .keys()
        .map(|member_id| (member_id.clone(), Assignment::new()))
        .collect();
    for ((topic, partition), member_id) in owner {
        result
            .get_mut(member_id)
            .expect("a member")
            .entry(topic)
            .or_default()
            .insert(partition);
    }
    result
}

/// What every assignor guarantees: each partition of each subscribed, existing topic is
/// assigned exactly once, to a member subscribed to it, and nothing else is assigned.
pub fn check(
    members: &BTreeMap<String, MemberSpec>,
    topics: &BTreeMap<TopicId, i32>,
    result: &BTreeMap<String, Assignment>,
) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for (member_id, assignment) in result {
        let spec = members
            .get(member_id)
            .ok_or_else(|| format!("{member_id} is not a member"))?;
        for (topic, partitions) in assignment {
            if !spec.topics.contains(topic) {
                return Err(format!(
                    "{member_id} got topic {topic} it does not subscribe to"
                ));
            }
            let count = topics.get(topic).copied().unwrap_or(0);
            for &partition in partitions {
                if !(0..count).contains(&partition) {
                    return Err(format!(
                        "{member_id} got missing partition {topic}-{partition}"
                    ));
                }
                if !seen.insert((*topic, partition)) {
                    return Err(format!("{topic}-{partition} assigned twice"));
                }
            }
        }
    }
    for (topic, subscribed) in subscribers(members, topics) {
        debug_assert!(!subscribed.is_empty());
        for partition in 0..topics[&topic] {
            if !seen.contains(&(topic, partition)) {
                return Err(format!("{topic}-{partition} not assigned"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn spec(topics: &[TopicId]) -> MemberSpec {
        MemberSpec {
            topics: topics.iter().copied().collect(),
            ..MemberSpec::default()
        }
    }

    fn counts(result: &BTreeMap<String, Assignment>) -> Vec<usize> {
        result
            .values()
            .map(|assignment| assignment.values().map(BTreeSet::len).sum())
            .collect()
    }

    #[test]
    fn uniform_balances_six_partitions_over_three_members() {
        let members: BTreeMap<String, MemberSpec> = ["a", "b", "c"]
            .iter()
            .map(|id| (id.to_string(), spec(&[1])))
            .collect();
        let topics = BTreeMap::from([(1, 6)]);
        let result = Assignor::Uniform.assign(&members, &topics);
        assert_eq!(counts(&result), vec![2, 2, 2]);
        check(&members, &topics, &result).expect("a valid assignment");
    }

    #[test]
    fn uniform_keeps_partitions_when_a_member_leaves() {
        let topics = BTreeMap::from([(1, 6)]);
        let mut members: BTreeMap<String, MemberSpec> = ["a", "b", "c"]
            .iter()
            .map(|id| (id.to_string(), spec(&[1])))
            .collect();
        let first = Assignor::Uniform.assign(&members, &topics);
        members.remove("c");
        for (member_id, spec) in members.iter_mut() {
            spec.current = first[member_id].clone();
        }
        let second = Assignor::Uniform.assign(&members, &topics);
        for member_id in ["a", "b"] {
            let before = &first[member_id][&1];
            let after = &second[member_id][&1];
            assert!(
                before.is_subset(after),
                "{member_id}: {before:?} → {after:?}"
            );
            assert_eq!(after.len(), 3);
        }
    }

    #[test]
    fn uniform_rebalances_a_new_member_in_moving_only_what_it_must() {
        let topics = BTreeMap::from([(1, 6)]);
        let mut members: BTreeMap<String, MemberSpec> = ["a", "b"]
            .iter()
            .map(|id| (id.to_string(), spec(&[1])))
            .collect();
        let first = Assignor::Uniform.assign(&members, &topics);
        for (member_id, spec) in members.iter_mut() {
            spec.current = first[member_id].clone();
        }
        members.insert("c".to_string(), spec(&[1]));
        let second = Assignor::Uniform.assign(&members, &topics);
        assert_eq!(counts(&second), vec![2, 2, 2]);
        for member_id in ["a", "b"] {
            assert!(second[member_id][&1].is_subset(&first[member_id][&1]));
        }
    }

    #[test]
    fn uniform_respects_different_subscriptions() {
        // a reads topics 1 and 2, b only 1: b should get all of topic 1's share it can.
        let members = BTreeMap::from([
            ("a".to_string(), spec(&[1, 2])),
            ("b".to_string(), spec(&[1])),
        ]);
        let topics = BTreeMap::from([(1, 4), (2, 4)]);
        let result = Assignor::Uniform.assign(&members, &topics);
        check(&members, &topics, &result).expect("a valid assignment");
        assert_eq!(counts(&result), vec![4, 4]);
        assert_eq!(result["b"][&1].len(), 4);
    }

    #[test]
    fn range_gives_contiguous_ranges_sorted_by_instance_id() {
        let mut members = BTreeMap::from([
            ("m1".to_string(), spec(&[1, 2])),
            ("m2".to_string(), spec(&[1, 2])),
        ]);
        members.get_mut("m1").expect("present").instance_id = Some("z".to_string());
        members.get_mut("m2").expect("present").instance_id = Some("a".to_string());
        let topics = BTreeMap::from([(1, 5), (2, 5)]);
        let result = Assignor::Range.assign(&members, &topics);
        check(&members, &topics, &result).expect("a valid assignment");
        let expected_m2: BTreeSet<i32> = [0, 1, 2].into();
        let expected_m1: BTreeSet<i32> = [3, 4].into();
        assert_eq!(result["m2"][&1], expected_m2);
        assert_eq!(result["m2"][&2], expected_m2);
        assert_eq!(result["m1"][&1], expected_m1);
        assert_eq!(result["m1"][&2], expected_m1);
    }

    #[test]
    fn missing_topics_and_members_without_topics_get_nothing() {
        let members = BTreeMap::from([
            ("a".to_string(), spec(&[1, 9])),
            ("b".to_string(), spec(&[])),
        ]);
        let topics = BTreeMap::from([(1, 3)]);
        for assignor in ASSIGNORS {
            let result = assignor.assign(&members, &topics);
            check(&members, &topics, &result).expect("a valid assignment");
            assert!(result["b"].is_empty());
            assert_eq!(result["a"][&1].len(), 3);
            assert!(!result["a"].contains_key(&9));
        }
    }

    fn arbitrary_group(
    ) -> impl Strategy<Value = (BTreeMap<String, MemberSpec>, BTreeMap<TopicId, i32>)> {
        let topics = prop::collection::btree_map(0_u128..6, 0_i32..12, 1..5);
        topics.prop_flat_map(|topics| {
            let ids: Vec<TopicId> = topics.keys().copied().chain([99]).collect();
            let member = (
                prop::sample::subsequence(ids.clone(), 0..=ids.len()),
                prop::collection::btree_map(
                    0_u128..7,
                    prop::collection::btree_set(0_i32..14, 0..5),
                    0..3,
                ),
            );
            let members = prop::collection::vec(member, 1..7).prop_map(|members| {
                members
                    .into_iter()
                    .enumerate()
                    .map(|(index, (subscribed, current))| {
                        (
                            format!("member-{index}"),
                            MemberSpec {
                                topics: subscribed.into_iter().collect(),
                                instance_id: None,
                                current,
                            },
                        )
                    })
                    .collect()
            });
            (members, Just(topics))
        })
    }

    proptest! {
        #[test]
        fn every_assignor_assigns_each_partition_exactly_once((members, topics) in arbitrary_group()) {
            for assignor in ASSIGNORS {
                let result = assignor.assign(&members, &topics);
                prop_assert!(check(&members, &topics, &result).is_ok(), "{:?}: {:?}", assignor, check(&members, &topics, &result));
            }
        }

        #[test]
        fn uniform_is_balanced_when_everyone_subscribes_to_the_same(
            member_count in 1_usize..8,
            partitions in prop::collection::vec(0_i32..10, 1..4),
        ) {
            let topics: BTreeMap<TopicId, i32> = partitions.iter().enumerate().map(|(id, count)| (id as TopicId, *count)).collect();
            let all: Vec<TopicId> = topics.keys().copied().collect();
            let members: BTreeMap<String, MemberSpec> = (0..member_count).map(|index| (format!("m{index}"), spec(&all))).collect();
            let result = Assignor::Uniform.assign(&members, &topics);
            let loads = counts(&result);
            let (min, max) = (loads.iter().min().expect("present"), loads.iter().max().expect("present"));
            prop_assert!(max - min <= 1, "loads {:?}", loads);
        }
    }
}
