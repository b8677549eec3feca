//! The shard table: which shard owns each partition on this broker. Every shard keeps its own
//! copy (a plain value, no locks) and applies the same versioned updates, so any shard can route
//! a request to the owning shard without asking anyone.

use std::collections::{BTreeMap, HashMap};

use crate::{ShardId, TopicPartition};

/// A change to the shard table. Updates are deltas and must be applied in version order: each
/// one's `version` is the previous one's plus one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardTableUpdate {
    pub version: u64,
    /// Partitions to place on (or move to) a shard.
    pub assign: Vec<(TopicPartition, ShardId)>,
    /// Partitions no longer hosted by this broker.
    pub remove: Vec<TopicPartition>,
}

/// What [`ShardTable::apply`] did with an update.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The update was the next version and is now in the table.
    Applied,
    /// The table already has this version or a later one; nothing changed.
    Stale,
    /// Versions between the table's and the update's are missing; nothing changed. The caller
    /// needs a full copy of the table (see [`ShardTable::replace_if_newer`]).
    Gap { expected: u64, received: u64 },
}

/// Maps every partition this broker hosts to the shard that owns it.
///
/// One copy per shard; all copies with the same version are equal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardTable {
    version: u64,
    owners: HashMap<TopicPartition, ShardId>,
    /// How many partitions each shard owns, indexed by shard; kept in step with `owners`.
    partition_counts: Vec<usize>,
}

impl ShardTable {
    /// An empty table at version 0 for a broker with `shard_count` shards.
    pub fn new(shard_count: usize) -> Self {
        assert!(shard_count > 0, "a broker has at least one shard");
        assert!(
            shard_count <= usize::from(u16::MAX) + 1,
            "shard ids are u16"
        );
        ShardTable {
            version: 0,
            owners: HashMap::new(),
            partition_counts: vec![0; shard_count],
        }
    }

    /// The version of the last update applied (0 for a new table).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// How many shards the broker has.
    pub fn shard_count(&self) -> usize {
        self.partition_counts.len()
    }

    /// How many partitions the table maps.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// The shard that owns `partition`, if this broker hosts it.
    pub fn lookup(&self, partition: &TopicPartition) -> Option<ShardId> {
        self.owners.get(partition).copied()
    }

    /// How many partitions `shard` owns.
    pub fn partition_count(&self, shard: ShardId) -> usize {
        self.partition_counts[usize::from(shard.0)]
    }

    /// Every partition and its owner, in no particular order.
    pub fn assignments(&self) -> impl Iterator<Item = (&TopicPartition, ShardId)> + '_ {
        self.owners
            .iter()
            .map(|(partition, &shard)| (partition, shard))
    }

    /// The shard a new partition should go to: the one owning the fewest partitions, ties broken
    /// by a stable hash of the partition so that every shard (and every restart) picks the same
    /// one and equal shards share new partitions evenly.
    ///
    /// This balances partition counts only. Moving partitions by load (bytes/s and requests/s)
    /// will come later and will go through the same versioned updates.
    pub fn place(&self, partition: &TopicPartition) -> ShardId {
        let fewest = self.partition_counts.iter().copied().min().unwrap_or(0);
        let candidates: Vec<usize> = (0..self.partition_counts.len())
            .filter(|&index| self.partition_counts[index] == fewest)
            .collect();
        let pick = stable_hash(partition) % candidates.len() as u64;
        ShardId(candidates[pick as usize] as u16)
    }

    /// Applies `update` if it is the next version; see [`ApplyOutcome`].
    ///
    /// Panics if the update names a shard the broker does not have: updates are made on this
    /// broker for this broker, so that is a bug.
    pub fn apply(&mut self, update: &ShardTableUpdate) -> ApplyOutcome {
        if update.version <= self.version {
            return ApplyOutcome::Stale;
        }
        let expected = self.version + 1;
        if update.version != expected {
            return ApplyOutcome::Gap {
                expected,
                received: update.version,
            };
        }
        // Check the whole update before changing anything, so a bad one leaves the table intact.
        for (partition, shard) in &update.assign {
            assert!(
                usize::from(shard.0) < self.shard_count(),
                "update {} assigns {partition} to {shard}, but the broker has {} shards",
                update.version,
                self.shard_count()
            );
        }
        for partition in &update.remove {
            if let Some(shard) = self.owners.remove(partition) {
                self.partition_counts[usize::from(shard.0)] -= 1;
            }
        }
        for (partition, shard) in &update.assign {
            if let Some(previous) = self.owners.insert(partition.clone(), *shard) {
                self.partition_counts[usize::from(previous.0)] -= 1;
            }
            self.partition_counts[usize::from(shard.0)] += 1;
        }
        self.version = update.version;
        debug_assert!(self.counts_match_owners());
        ApplyOutcome::Applied
    }

    /// Replaces this table with `newer` if `newer` has a later version (recovering from a
    /// [`ApplyOutcome::Gap`]). Returns whether it did.
    pub fn replace_if_newer(&mut self, newer: &ShardTable) -> bool {
        assert_eq!(
            newer.shard_count(),
            self.shard_count(),
            "tables of the same broker"
        );
        if newer.version <= self.version {
            return false;
        }
        self.clone_from(newer);
        true
    }

    /// Groups `partitions` by owning shard, so a caller can send one message per destination
    /// shard. Partitions this broker does not host are returned apart, in their input order.
    pub fn group_by_shard<'a>(
        &self,
        partitions: impl IntoIterator<Item = &'a TopicPartition>,
    ) -> ShardGroups<TopicPartition> {
        self.group_items_by_shard(partitions.into_iter().cloned(), |partition| partition)
    }

    /// Groups arbitrary items (say a partition and its records) by the shard that owns the
    /// partition `key` returns for each. Items keep their input order within each group.
    pub fn group_items_by_shard<T>(
        &self,
        items: impl IntoIterator<Item = T>,
        key: impl Fn(&T) -> &TopicPartition,
    ) -> ShardGroups<T> {
        let mut groups = ShardGroups {
            by_shard: BTreeMap::new(),
            unassigned: Vec::new(),
        };
        for item in items {
            match self.lookup(key(&item)) {
                Some(shard) => groups.by_shard.entry(shard).or_default().push(item),
                None => groups.unassigned.push(item),
            }
        }
        groups
    }

    fn counts_match_owners(&self) -> bool {
        let mut counts = vec![0; self.partition_counts.len()];
        for shard in self.owners.values() {
            counts[usize::from(shard.0)] += 1;
        }
        counts == self.partition_counts
    }
}

/// Items grouped by owning shard; see [`ShardTable::group_by_shard`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardGroups<T> {
    /// Items per owning shard, in shard order.
    pub by_shard: BTreeMap<ShardId, Vec<T>>,
    /// Items whose partition this broker does not host.
    pub unassigned: Vec<T>,
}

/// FNV-1a over the topic name and the partition index: unlike `std`'s or ahash's hashers it is
/// the same in every process, build and version, which placement needs.
fn stable_hash(partition: &TopicPartition) -> u64 {
    const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let index = partition.partition.0.to_le_bytes();
    // Kafka topic names never contain 0xff, so it marks where the name ends.
    let bytes = partition
        .topic
        .as_bytes()
        .iter()
        .chain(&[0xff])
        .chain(&index);
    bytes.fold(FNV_OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }

    fn update(
        version: u64,
        assign: &[(&str, i32, u16)],
        remove: &[(&str, i32)],
    ) -> ShardTableUpdate {
        ShardTableUpdate {
            version,
            assign: assign
                .iter()
                .map(|&(topic, partition, shard)| (tp(topic, partition), ShardId(shard)))
                .collect(),
            remove: remove
                .iter()
                .map(|&(topic, partition)| tp(topic, partition))
                .collect(),
        }
    }

    #[test]
    fn applies_updates_in_order_and_ignores_stale_ones() {
        let mut table = ShardTable::new(2);
        assert_eq!(
            table.apply(&update(1, &[("a", 0, 0), ("a", 1, 1)], &[])),
            ApplyOutcome::Applied
        );
        assert_eq!(table.lookup(&tp("a", 0)), Some(ShardId(0)));
        assert_eq!(table.lookup(&tp("a", 1)), Some(ShardId(1)));
        assert_eq!(table.lookup(&tp("b", 0)), None);

        // A replayed or older update changes nothing.
        assert_eq!(
            table.apply(&update(1, &[("a", 0, 1)], &[])),
            ApplyOutcome::Stale
        );
        assert_eq!(table.lookup(&tp("a", 0)), Some(ShardId(0)));

        // Moving and removing keep the counts right.
        assert_eq!(
            table.apply(&update(2, &[("a", 0, 1)], &[("a", 1)])),
            ApplyOutcome::Applied
        );
        assert_eq!(table.lookup(&tp("a", 0)), Some(ShardId(1)));
        assert_eq!(table.lookup(&tp("a", 1)), None);
        assert_eq!(
            (
                table.partition_count(ShardId(0)),
                table.partition_count(ShardId(1))
            ),
            (0, 1)
        );
        assert_eq!(table.version(), 2);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn a_gap_is_reported_and_not_applied() {
        let mut table = ShardTable::new(2);
        let outcome = table.apply(&update(3, &[("a", 0, 0)], &[]));
        assert_eq!(
            outcome,
            ApplyOutcome::Gap {
                expected: 1,
                received: 3
            }
        );
        assert!(table.is_empty());
        assert_eq!(table.version(), 0);

        let mut newer = ShardTable::new(2);
        for version in 1..=3 {
            assert_eq!(
                newer.apply(&update(version, &[("a", version as i32, 1)], &[])),
                ApplyOutcome::Applied
            );
        }
        assert!(table.replace_if_newer(&newer));
        assert_eq!(table, newer);
        assert!(!table.replace_if_newer(&ShardTable::new(2)));
    }

    #[test]
    #[should_panic(expected = "broker has 2 shards")]
    fn assigning_to_a_missing_shard_is_a_bug() {
        let mut table = ShardTable::new(2);
        let _ = table.apply(&update(1, &[("a", 0, 2)], &[]));
    }

    #[test]
    fn place_fills_the_emptiest_shard_and_is_deterministic() {
        let mut table = ShardTable::new(4);
        for partition in 0..40 {
            let new = tp("orders", partition);
            let shard = table.place(&new);
            assert_eq!(shard, table.clone().place(&new), "same table, same choice");
            let placed = ShardTableUpdate {
                version: table.version() + 1,
                assign: vec![(new, shard)],
                remove: vec![],
            };
            assert_eq!(table.apply(&placed), ApplyOutcome::Applied);
            let counts: Vec<usize> = (0..4)
                .map(|shard| table.partition_count(ShardId(shard)))
                .collect();
            let spread = counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0);
            assert!(spread <= 1, "counts {counts:?} after {partition}");
        }
        // Ties are broken by the partition, not always toward shard 0.
        let empty = ShardTable::new(4);
        let choices: std::collections::BTreeSet<ShardId> = (0..32)
            .map(|partition| empty.place(&tp("t", partition)))
            .collect();
        assert!(choices.len() > 1, "ties all went to {choices:?}");
    }

    #[test]
    fn stable_hash_does_not_change() {
        // Placement must agree across processes and releases: pin the hash's values.
        assert_eq!(stable_hash(&tp("", 0)), 0xdc62_ece3_be52_214e);
        assert_eq!(stable_hash(&tp("orders", 7)), 0xa01e_ba8f_51d1_d30e);
        assert_ne!(stable_hash(&tp("a1", 2)), stable_hash(&tp("a", 12)));
    }

    #[test]
    fn groups_by_owning_shard() {
        let mut table = ShardTable::new(3);
        let _ = table.apply(&update(1, &[("a", 0, 2), ("a", 1, 0), ("b", 0, 2)], &[]));
        let request = [tp("a", 0), tp("x", 9), tp("a", 1), tp("b", 0)];
        let groups = table.group_by_shard(&request);
        let expected: BTreeMap<ShardId, Vec<TopicPartition>> = [
            (ShardId(0), vec![tp("a", 1)]),
            (ShardId(2), vec![tp("a", 0), tp("b", 0)]),
        ]
        .into_iter()
        .collect();
        assert_eq!(groups.by_shard, expected);
        assert_eq!(groups.unassigned, vec![tp("x", 9)]);

        let with_payload = vec![(tp("b", 0), 10), (tp("a", 1), 20), (tp("a", 0), 30)];
        let groups = table.group_items_by_shard(with_payload, |(partition, _)| partition);
        assert_eq!(
            groups.by_shard[&ShardId(2)],
            vec![(tp("b", 0), 10), (tp("a", 0), 30)]
        );
        assert_eq!(groups.by_shard[&ShardId(0)], vec![(tp("a", 1), 20)]);
        assert!(groups.unassigned.is_empty());
    }
}
