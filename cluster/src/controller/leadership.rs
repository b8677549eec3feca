//! The controller's partition rules, as KRaft's `ReplicationControlManager` has them: placing
//! new partitions, moving leadership when a broker is fenced, shuts down or comes back,
//! committing the ISR changes leaders propose (AlterPartition, KIP-497), and preferred and
//! unclean elections (ElectLeaders, KIP-460). Pure methods of [`ControllerState`], called by
//! [`ControllerState::apply`].
//!
//! What every change keeps true (checked after each step by `cluster/tests/
//! partition_leadership.rs`):
//! - an ISR is a non-empty subset of the replicas, and the leader, if any, is in it and is
//!   eligible (unfenced, not in controlled shutdown);
//! - an ineligible broker stays in an ISR only as its last member: Kafka never shrinks an ISR
//!   to nothing (before KIP-966's ELR), so the partition goes offline with the ISR kept, and
//!   the broker leads it again when it is unfenced, since it has every acknowledged record;
//! - a partition with an eligible ISR member has a leader;
//! - a leader from outside the ISR only where the topic sets `unclean.leader.election.enable`
//!   or an operator asked for an unclean election;
//! - the leader epoch grows with every change of leader (to and from none), the partition epoch
//!   with every change at all; neither ever goes back.

use std::collections::BTreeSet;

use ringlog_engine::NodeId;

use super::command::{ControllerState, ElectionType, TopicSpec};
use crate::metadata::{
    check_partition_count, MetadataError, PartitionRegistration, TopicMetadata, NO_LEADER,
};
use crate::placement::{assign_replicas, check_assignment, PlacementBroker, ReplicaAssignment};
use crate::replication::elect_leader;

impl ControllerState {
    /// The brokers that may take replicas, lead, or join an ISR.
    fn eligible_brokers(&self) -> BTreeSet<NodeId> {
        self.brokers
            .values()
            .filter(|broker| broker.is_eligible())
            .map(|broker| NodeId(broker.broker_id))
            .collect()
    }

    fn is_eligible(&self, broker_id: i32) -> bool {
        self.brokers
            .get(&broker_id)
            .is_some_and(|broker| broker.is_eligible())
    }

    fn placement_brokers(&self) -> Vec<PlacementBroker> {
        self.brokers
            .values()
            .filter(|broker| broker.is_eligible())
            .map(|broker| PlacementBroker {
                broker_id: broker.broker_id,
                rack: broker.rack.clone(),
            })
            .collect()
    }

    /// New partitions on `replicas`: each with its eligible replicas as ISR and the first of
    /// them as leader. Kafka refuses a partition none of whose replicas is eligible (only a
    /// manual assignment can name such brokers).
    fn new_partitions(
        &self,
        replicas: Vec<Vec<i32>>,
        first_partition: i32,
    ) -> Result<Vec<PartitionRegistration>, MetadataError> {
        replicas
            .into_iter()
            .enumerate()
            .map(|(offset, replicas)| {
                let isr: Vec<i32> = replicas
                    .iter()
                    .copied()
                    .filter(|broker| self.is_eligible(*broker))
                    .collect();
                if isr.is_empty() {
                    return Err(MetadataError::InvalidReplicaAssignment(format!(
                        "all brokers of partition {} ({replicas:?}) are fenced or in \
                         controlled shutdown",
                        first_partition + offset as i32
                    )));
                }
                Ok(PartitionRegistration::new(replicas, isr))
            })
            .collect()
    }

    /// CreateTopics, one topic: placed over the eligible brokers, or as the spec assigns.
    pub(super) fn create_topic(
        &mut self,
        spec: &TopicSpec,
        topic_defaults: &[(String, String)],
    ) -> Result<(u128, i32), MetadataError> {
        self.image
            .check_new_topic(&spec.name, &spec.configs, topic_defaults)?;
        // Kafka reserves the all-zero UUID and the one with value 1; a proposer picks ids at
        // random, so a clash is a bug or a hostile proposer, refused either way.
        if spec.topic_id <= 1 || self.image.topic_by_id(spec.topic_id).is_some() {
            return Err(MetadataError::InvalidTopic {
                name: spec.name.clone(),
                reason: format!("topic id {:032x} is reserved or in use", spec.topic_id),
            });
        }
        let replicas = if spec.assignments.is_empty() {
            check_partition_count(spec.partition_count)?;
            assign_replicas(
                &self.placement_brokers(),
                spec.partition_count,
                spec.replication_factor,
                0,
                spec.topic_id,
            )?
        } else {
            if spec.partition_count != -1 || spec.replication_factor != -1 {
                return Err(MetadataError::InvalidRequest(format!(
                    "topic '{}' has a manual assignment, so its partition count and replication \
                     factor must be -1",
                    spec.name
                )));
            }
            let registered = self.brokers.keys().copied().collect();
            check_assignment(&spec.assignments, 0, None, &registered)?
        };
        let partitions = self.new_partitions(replicas, 0)?;
        let partition_count = partitions.len() as i32;
        self.image
            .create_placed_topic(&spec.name, spec.configs.clone(), spec.topic_id, partitions);
        Ok((spec.topic_id, partition_count))
    }

    /// CreatePartitions, one topic: the new partitions keep the topic's replication factor and
    /// continue its round robin, or take `assignment`. A topic of the single-node controller
    /// (unplaced, from a migrated image) grows as it always did.
    pub(super) fn grow_topic(
        &mut self,
        name: &str,
        new_total: i32,
        assignment: Option<&Vec<Vec<i32>>>,
    ) -> Result<(), MetadataError> {
        let old_total = self.image.check_create_partitions(name, new_total)?;
        let Some(topic) = self.image.topic(name).filter(|topic| topic.is_placed()) else {
            if assignment.is_some() {
                return Err(MetadataError::InvalidReplicaAssignment(format!(
                    "topic '{name}' belongs to the single-node controller and has no placement"
                )));
            }
            return self.image.create_partitions(name, new_total).map(|_| ());
        };
        let replication_factor = topic.partitions[0].replicas.len();
        let added = new_total - old_total;
        let replicas = match assignment {
            None => assign_replicas(
                &self.placement_brokers(),
                added,
                replication_factor as i32,
                old_total,
                topic.topic_id,
            )?,
            Some(lists) => {
                if lists.len() != added as usize {
                    return Err(MetadataError::InvalidReplicaAssignment(format!(
                        "increasing the number of partitions by {added} but {} assignments \
                         provided",
                        lists.len()
                    )));
                }
                let assignments: Vec<ReplicaAssignment> = lists
                    .iter()
                    .zip(old_total..)
                    .map(|(broker_ids, partition_index)| ReplicaAssignment {
                        partition_index,
                        broker_ids: broker_ids.clone(),
                    })
                    .collect();
                let registered = self.brokers.keys().copied().collect();
                check_assignment(
                    &assignments,
                    old_total,
                    Some(replication_factor),
                    &registered,
                )?
            }
        };
        let partitions = self.new_partitions(replicas, old_total)?;
        self.image.add_placed_partitions(name, partitions);
        Ok(())
    }

    /// The broker's registration if `broker_epoch` is its current one.
    fn check_broker_epoch(&self, broker_id: i32, broker_epoch: u64) -> Result<(), MetadataError> {
        let broker = self
            .brokers
            .get(&broker_id)
            .ok_or(MetadataError::UnknownBroker(broker_id))?;
        if broker.broker_epoch != broker_epoch {
            return Err(MetadataError::StaleBrokerEpoch {
                broker_id,
                epoch: broker_epoch,
                current: broker.broker_epoch,
            });
        }
        Ok(())
    }

    /// FenceBroker: the broker leaves every ISR (but the last place of one) and a new leader
    /// is elected wherever it led.
    pub(super) fn fence_broker(&mut self, broker_id: i32) -> Result<u64, MetadataError> {
        let broker = self
            .brokers
            .get_mut(&broker_id)
            .ok_or(MetadataError::UnknownBroker(broker_id))?;
        let epoch = broker.broker_epoch;
        if !broker.fenced {
            broker.fenced = true;
            self.image.version += 1;
        }
        self.reelect(Some(broker_id), |partition| {
            partition.isr.contains(&broker_id)
        });
        Ok(epoch)
    }

    /// UnfenceBroker: leaderless partitions elect again, with the broker eligible.
    pub(super) fn unfence_broker(
        &mut self,
        broker_id: i32,
        broker_epoch: u64,
    ) -> Result<u64, MetadataError> {
        self.check_broker_epoch(broker_id, broker_epoch)?;
        let broker = self
            .brokers
            .get_mut(&broker_id)
            .ok_or(MetadataError::UnknownBroker(broker_id))?;
        if broker.in_controlled_shutdown {
            return Err(MetadataError::BrokerInControlledShutdown(broker_id));
        }
        if broker.fenced {
            broker.fenced = false;
            self.image.version += 1;
        }
        self.reelect(None, |partition| partition.leader == NO_LEADER);
        Ok(broker_epoch)
    }

    /// ShutdownBroker: as KRaft does on a controlled shutdown, the broker stops being eligible
    /// at once; its leaderships move to other eligible ISR members, and a partition where it
    /// was the only one goes offline (its data stays: the ISR keeps it).
    pub(super) fn shutdown_broker(
        &mut self,
        broker_id: i32,
        broker_epoch: u64,
    ) -> Result<u64, MetadataError> {
        self.check_broker_epoch(broker_id, broker_epoch)?;
        let broker = self
            .brokers
            .get_mut(&broker_id)
            .ok_or(MetadataError::UnknownBroker(broker_id))?;
        if !broker.in_controlled_shutdown {
            broker.in_controlled_shutdown = true;
            self.image.version += 1;
        }
        self.reelect(Some(broker_id), |partition| {
            partition.isr.contains(&broker_id)
        });
        Ok(broker_epoch)
    }

    /// KRaft's `generateLeaderAndIsrUpdates`: for every partition `selected`, `removing` leaves
    /// the ISR unless it is its last member, and if the leader is gone or ineligible a new one
    /// is elected from the eligible ISR members (any eligible replica when the topic allows
    /// unclean elections), or the partition goes leaderless.
    pub(super) fn reelect(
        &mut self,
        removing: Option<i32>,
        selected: impl Fn(&PartitionRegistration) -> bool,
    ) {
        let mut live = self.eligible_brokers();
        if let Some(removing) = removing {
            live.remove(&NodeId(removing));
        }
        let mut changed = false;
        for topic in self.image.topics.values_mut() {
            let unclean = topic.unclean_leader_election_enable();
            for partition in topic.partitions.iter_mut().filter(|p| selected(p)) {
                let mut isr: Vec<i32> = partition
                    .isr
                    .iter()
                    .copied()
                    .filter(|id| Some(*id) != removing)
                    .collect();
                if isr.is_empty() {
                    isr = partition.isr.clone();
                }
                let mut leader = partition.leader;
                if leader == NO_LEADER || !live.contains(&NodeId(leader)) {
                    let replicas: Vec<NodeId> =
                        partition.replicas.iter().copied().map(NodeId).collect();
                    let current: Vec<NodeId> = isr.iter().copied().map(NodeId).collect();
                    match elect_leader(&replicas, &current, &live, unclean) {
                        Some(election) => {
                            leader = election.leader.0;
                            isr = election.isr.iter().map(|id| id.0).collect();
                        }
                        None => leader = NO_LEADER,
                    }
                }
                changed |= change(partition, leader, isr);
            }
        }
        if changed {
            self.image.version += 1;
        }
    }

    /// AlterPartition from a partition's leader, checked in Kafka's order
    /// (`ReplicationControlManager.validateAlterPartitionData`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn alter_partition(
        &mut self,
        broker_id: i32,
        broker_epoch: u64,
        topic_name: &str,
        index: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: &[i32],
    ) -> Result<PartitionRegistration, MetadataError> {
        self.check_broker_epoch(broker_id, broker_epoch)?;
        let unknown = || MetadataError::UnknownTopicOrPartition {
            topic: topic_name.to_string(),
            partition: index,
        };
        let partition = self
            .image
            .partition(topic_name, index)
            .ok_or_else(unknown)?;
        let newer = |what: &str, received, current| MetadataError::NotController {
            topic: topic_name.to_string(),
            partition: index,
            what: what.to_string(),
            received,
            current,
        };
        if leader_epoch > partition.leader_epoch {
            return Err(newer("leader epoch", leader_epoch, partition.leader_epoch));
        }
        if partition_epoch > partition.partition_epoch {
            return Err(newer(
                "partition epoch",
                partition_epoch,
                partition.partition_epoch,
            ));
        }
        if leader_epoch < partition.leader_epoch {
            return Err(MetadataError::FencedLeaderEpoch {
                topic: topic_name.to_string(),
                partition: index,
                received: leader_epoch,
                current: partition.leader_epoch,
            });
        }
        if broker_id != partition.leader {
            return Err(MetadataError::InvalidRequest(format!(
                "broker {broker_id} is not the leader of {topic_name}-{index} (the leader is {})",
                partition.leader
            )));
        }
        if partition_epoch < partition.partition_epoch {
            return Err(MetadataError::InvalidUpdateVersion {
                topic: topic_name.to_string(),
                partition: index,
                received: partition_epoch,
                current: partition.partition_epoch,
            });
        }
        let mut seen = BTreeSet::new();
        if new_isr.is_empty() || !new_isr.iter().all(|id| seen.insert(*id)) {
            return Err(MetadataError::InvalidRequest(format!(
                "the new ISR {new_isr:?} of {topic_name}-{index} is empty or repeats a broker"
            )));
        }
        for &member in new_isr {
            let reason = if !partition.replicas.contains(&member) {
                Some("is not a replica")
            } else {
                match self.brokers.get(&member) {
                    None => Some("is not registered"),
                    Some(broker) if broker.fenced => Some("is fenced"),
                    Some(broker) if broker.in_controlled_shutdown => {
                        Some("is in controlled shutdown")
                    }
                    Some(_) => None,
                }
            };
            if let Some(reason) = reason {
                return Err(MetadataError::IneligibleReplica {
                    topic: topic_name.to_string(),
                    partition: index,
                    broker_id: member,
                    reason: reason.to_string(),
                });
            }
        }
        if !new_isr.contains(&broker_id) {
            return Err(MetadataError::InvalidRequest(format!(
                "the new ISR {new_isr:?} of {topic_name}-{index} leaves out its leader {broker_id}"
            )));
        }
        let leader = partition.leader;
        let partition = self
            .image
            .partition_mut(topic_name, index)
            .ok_or_else(unknown)?;
        // The same ISR again is no change, and bumps nothing (Kafka writes no record for it).
        if change(partition, leader, new_isr.to_vec()) {
            let partition = partition.clone();
            self.image.version += 1;
            return Ok(partition);
        }
        Ok(partition.clone())
    }

    /// ElectLeaders over `partitions`, or over every placed partition.
    pub(super) fn elect_leaders(
        &mut self,
        election_type: ElectionType,
        partitions: Option<&[(String, i32)]>,
    ) -> Vec<(String, i32, Result<i32, MetadataError>)> {
        let every = partitions.is_none();
        let targets: Vec<(String, i32)> = match partitions {
            Some(partitions) => partitions.to_vec(),
            None => self
                .image
                .topics
                .iter()
                .flat_map(|(name, topic)| {
                    (0..topic.partitions.len() as i32).map(move |index| (name.clone(), index))
                })
                .collect(),
        };
        let live = self.eligible_brokers();
        let mut results = Vec::with_capacity(targets.len());
        let mut changed = false;
        for (topic_name, index) in targets {
            let result = elect_one(
                self.image.topics.get_mut(&topic_name),
                &topic_name,
                index,
                election_type,
                &live,
            );
            changed |= result.is_ok();
            if every && matches!(result, Err(MetadataError::ElectionNotNeeded { .. })) {
                continue;
            }
            results.push((topic_name, index, result));
        }
        if changed {
            self.image.version += 1;
        }
        results
    }
}

/// One partition of ElectLeaders (KRaft's `electLeader`).
fn elect_one(
    topic: Option<&mut TopicMetadata>,
    topic_name: &str,
    index: i32,
    election_type: ElectionType,
    live: &BTreeSet<NodeId>,
) -> Result<i32, MetadataError> {
    let partition = topic
        .and_then(|topic| topic.partitions.get_mut(usize::try_from(index).ok()?))
        .ok_or_else(|| MetadataError::UnknownTopicOrPartition {
            topic: topic_name.to_string(),
            partition: index,
        })?;
    let not_needed = || MetadataError::ElectionNotNeeded {
        topic: topic_name.to_string(),
        partition: index,
    };
    match election_type {
        ElectionType::Preferred => {
            let preferred = partition.replicas[0];
            if partition.leader == preferred {
                return Err(not_needed());
            }
            if !live.contains(&NodeId(preferred)) || !partition.isr.contains(&preferred) {
                return Err(MetadataError::PreferredLeaderNotAvailable {
                    topic: topic_name.to_string(),
                    partition: index,
                    broker_id: preferred,
                });
            }
            let isr = partition.isr.clone();
            change(partition, preferred, isr);
            Ok(preferred)
        }
        ElectionType::Unclean => {
            if partition.leader != NO_LEADER {
                return Err(not_needed());
            }
            let replicas: Vec<NodeId> = partition.replicas.iter().copied().map(NodeId).collect();
            let isr: Vec<NodeId> = partition.isr.iter().copied().map(NodeId).collect();
            let election = elect_leader(&replicas, &isr, live, true).ok_or_else(|| {
                MetadataError::EligibleLeadersNotAvailable {
                    topic: topic_name.to_string(),
                    partition: index,
                }
            })?;
            let leader = election.leader.0;
            change(
                partition,
                leader,
                election.isr.iter().map(|id| id.0).collect(),
            );
            Ok(leader)
        }
    }
}

/// Gives `partition` its new leader and ISR, bumping the leader epoch if the leader changed
/// and the partition epoch if anything did; returns whether anything did.
fn change(partition: &mut PartitionRegistration, leader: i32, isr: Vec<i32>) -> bool {
    if partition.leader == leader && partition.isr == isr {
        return false;
    }
    if partition.leader != leader {
        partition.leader_epoch = partition
            .leader_epoch
            .checked_add(1)
            .expect("a leader epoch overflows after 2^31 elections, never");
        partition.leader = leader;
    }
    partition.partition_epoch = partition
        .partition_epoch
        .checked_add(1)
        .expect("a partition epoch overflows after 2^31 changes, never");
    partition.isr = isr;
    assert_eq!(partition.check(), Ok(()), "partition changes keep it valid");
    true
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::controller::{CommandResponse, MetadataCommand};
    use crate::metadata::MetadataImage;

    /// A state and the log index of its next command.
    struct Harness {
        state: ControllerState,
        index: u64,
    }

    impl Harness {
        /// Brokers 1..=racks.len(), registered and unfenced, with the given racks.
        fn new(racks: &[Option<&str>]) -> Harness {
            let mut harness = Harness {
                state: ControllerState::default(),
                index: 0,
            };
            let image = MetadataImage::new("cluster".into());
            harness.apply(MetadataCommand::InitializeCluster { image });
            for (offset, rack) in racks.iter().enumerate() {
                harness.start_broker(offset as i32 + 1, 1, rack.map(String::from));
            }
            harness
        }

        fn apply(&mut self, command: MetadataCommand) -> CommandResponse {
            self.index += 1;
            self.state.apply(self.index, &command)
        }

        fn start_broker(&mut self, broker_id: i32, incarnation_id: u128, rack: Option<String>) {
            let register = MetadataCommand::RegisterBroker {
                broker_id,
                incarnation_id,
                host: format!("broker-{broker_id}"),
                port: 9092,
                rack,
            };
            let CommandResponse::Broker(Ok(broker_epoch)) = self.apply(register) else {
                panic!("registered");
            };
            let unfence = MetadataCommand::UnfenceBroker {
                broker_id,
                broker_epoch,
            };
            assert_eq!(
                self.apply(unfence),
                CommandResponse::Broker(Ok(broker_epoch))
            );
        }

        fn epoch(&self, broker_id: i32) -> u64 {
            self.state.brokers[&broker_id].broker_epoch
        }

        fn create(&mut self, spec: TopicSpec) -> Result<(u128, i32), MetadataError> {
            let command = MetadataCommand::CreateTopics {
                topics: vec![spec],
                topic_defaults: Vec::new(),
            };
            match self.apply(command) {
                CommandResponse::TopicsCreated(mut results) => results.remove(0),
                other => panic!("{other:?}"),
            }
        }

        fn fence(&mut self, broker_id: i32) {
            let response = self.apply(MetadataCommand::FenceBroker { broker_id });
            assert!(matches!(response, CommandResponse::Broker(Ok(_))));
        }

        fn unfence(&mut self, broker_id: i32) -> Result<u64, MetadataError> {
            let broker_epoch = self.epoch(broker_id);
            match self.apply(MetadataCommand::UnfenceBroker {
                broker_id,
                broker_epoch,
            }) {
                CommandResponse::Broker(result) => result,
                other => panic!("{other:?}"),
            }
        }

        fn partition(&self, topic: &str, index: i32) -> PartitionRegistration {
            self.state
                .image
                .partition(topic, index)
                .expect("placed")
                .clone()
        }

        /// AlterPartition from the current leader at the current epochs, with `adjust` applied.
        fn alter(
            &mut self,
            topic: &str,
            index: i32,
            new_isr: &[i32],
            adjust: impl FnOnce(&mut MetadataCommand),
        ) -> Result<PartitionRegistration, MetadataError> {
            let partition = self.partition(topic, index);
            let mut command = MetadataCommand::AlterPartition {
                broker_id: partition.leader,
                broker_epoch: self
                    .state
                    .brokers
                    .get(&partition.leader)
                    .map_or(0, |broker| broker.broker_epoch),
                topic: topic.into(),
                partition: index,
                leader_epoch: partition.leader_epoch,
                partition_epoch: partition.partition_epoch,
                new_isr: new_isr.to_vec(),
            };
            adjust(&mut command);
            match self.apply(command) {
                CommandResponse::Partition(result) => result,
                other => panic!("{other:?}"),
            }
        }

        fn elect(
            &mut self,
            election_type: ElectionType,
            partitions: Option<Vec<(String, i32)>>,
        ) -> Vec<(String, i32, Result<i32, MetadataError>)> {
            match self.apply(MetadataCommand::ElectLeaders {
                election_type,
                partitions,
            }) {
                CommandResponse::Elections(results) => results,
                other => panic!("{other:?}"),
            }
        }
    }

    fn spec(name: &str, partition_count: i32, replication_factor: i32) -> TopicSpec {
        TopicSpec {
            name: name.into(),
            partition_count,
            replication_factor,
            configs: BTreeMap::new(),
            // Distinct per name, never 0 or 1.
            topic_id: name.bytes().fold(0x5eed_u128, |id, byte| {
                id.wrapping_mul(131) + u128::from(byte)
            }),
            assignments: Vec::new(),
        }
    }

    fn unclean(mut spec: TopicSpec) -> TopicSpec {
        spec.configs
            .insert("unclean.leader.election.enable".into(), "true".into());
        spec
    }

    fn manual(name: &str, lists: &[&[i32]]) -> TopicSpec {
        let mut spec = spec(name, -1, -1);
        spec.assignments = lists
            .iter()
            .enumerate()
            .map(|(index, brokers)| ReplicaAssignment {
                partition_index: index as i32,
                broker_ids: brokers.to_vec(),
            })
            .collect();
        spec
    }

    #[test]
    fn new_topics_are_placed_over_the_eligible_brokers() {
        let mut harness = Harness::new(&[None; 5]);
        assert_eq!(
            harness.create(spec("t", 10, 3)).map(|(_, count)| count),
            Ok(10)
        );
        let mut leaders = BTreeMap::<i32, usize>::new();
        for index in 0..10 {
            let partition = harness.partition("t", index);
            assert_eq!(partition.replicas.len(), 3);
            assert_eq!(partition.isr, partition.replicas);
            assert_eq!(partition.leader, partition.replicas[0]);
            assert_eq!((partition.leader_epoch, partition.partition_epoch), (0, 0));
            *leaders.entry(partition.leader).or_default() += 1;
        }
        assert!(leaders.values().all(|count| *count == 2), "{leaders:?}");
        assert!(matches!(
            harness.create(spec("big", 1, 6)),
            Err(MetadataError::InvalidReplicationFactor(_))
        ));
        // Fenced and shutting-down brokers take no new replicas.
        harness.fence(5);
        let broker_epoch = harness.epoch(4);
        harness.apply(MetadataCommand::ShutdownBroker {
            broker_id: 4,
            broker_epoch,
        });
        assert!(matches!(
            harness.create(spec("four", 1, 4)),
            Err(MetadataError::InvalidReplicationFactor(_))
        ));
        harness.create(spec("three", 30, 3)).expect("created");
        for index in 0..30 {
            let replicas = harness.partition("three", index).replicas;
            assert!(!replicas.contains(&4) && !replicas.contains(&5));
        }
        // The topic grows with the same replication factor, continuing the round robin.
        let grow = MetadataCommand::CreatePartitions {
            topics: vec![("three".into(), 33)],
            assignments: BTreeMap::new(),
        };
        assert_eq!(harness.apply(grow), CommandResponse::Topics(vec![Ok(())]));
        assert_eq!(harness.partition("three", 32).replicas.len(), 3);
    }

    #[test]
    fn racks_spread_each_partition() {
        let mut harness = Harness::new(&[Some("a"), Some("a"), Some("b"), Some("b")]);
        harness.create(spec("t", 8, 2)).expect("created");
        for index in 0..8 {
            let replicas = harness.partition("t", index).replicas;
            let racks: BTreeSet<bool> = replicas.iter().map(|broker| *broker <= 2).collect();
            assert_eq!(racks.len(), 2, "{replicas:?} on one rack");
        }
    }

    #[test]
    fn manual_assignments_are_checked_and_used() {
        let mut harness = Harness::new(&[None; 3]);
        assert_eq!(
            harness
                .create(manual("m", &[&[3, 1], &[2, 3]]))
                .map(|(_, n)| n),
            Ok(2)
        );
        assert_eq!(harness.partition("m", 0).leader, 3);
        assert!(matches!(
            harness.create(manual("unknown", &[&[1, 9]])),
            Err(MetadataError::InvalidReplicaAssignment(_))
        ));
        assert!(matches!(
            harness.create(manual("uneven", &[&[1, 2], &[3]])),
            Err(MetadataError::InvalidReplicaAssignment(_))
        ));
        let mut counted = manual("counted", &[&[1]]);
        counted.partition_count = 1;
        assert!(matches!(
            harness.create(counted),
            Err(MetadataError::InvalidRequest(_))
        ));
        // A fenced broker may be named, as long as each partition has an eligible replica.
        harness.fence(2);
        harness.create(manual("half", &[&[2, 1]])).expect("created");
        let partition = harness.partition("half", 0);
        assert_eq!((partition.leader, partition.isr), (1, vec![1]));
        assert!(matches!(
            harness.create(manual("dark", &[&[2]])),
            Err(MetadataError::InvalidReplicaAssignment(_))
        ));
        let grow = |lists: Vec<Vec<i32>>| MetadataCommand::CreatePartitions {
            topics: vec![("m".into(), 3)],
            assignments: BTreeMap::from([("m".to_string(), lists)]),
        };
        assert!(matches!(
            harness.apply(grow(vec![vec![1]])),
            CommandResponse::Topics(results)
                if matches!(results[0], Err(MetadataError::InvalidReplicaAssignment(_)))
        ));
        assert_eq!(
            harness.apply(grow(vec![vec![1, 3]])),
            CommandResponse::Topics(vec![Ok(())])
        );
        assert_eq!(harness.partition("m", 2).replicas, vec![1, 3]);
    }

    #[test]
    fn fencing_moves_leadership_within_the_isr_and_keeps_the_last_member() {
        let mut harness = Harness::new(&[None; 3]);
        harness.create(manual("t", &[&[1, 2, 3]])).expect("created");
        harness.fence(1);
        let partition = harness.partition("t", 0);
        assert_eq!((partition.leader, partition.isr.clone()), (2, vec![2, 3]));
        assert_eq!((partition.leader_epoch, partition.partition_epoch), (1, 1));
        // A follower's fencing shrinks the ISR without a new leader epoch.
        harness.fence(3);
        let partition = harness.partition("t", 0);
        assert_eq!((partition.leader, partition.isr.clone()), (2, vec![2]));
        assert_eq!((partition.leader_epoch, partition.partition_epoch), (1, 2));
        // The last ISR member stays in the ISR: the partition is offline, not emptied.
        harness.fence(2);
        let partition = harness.partition("t", 0);
        assert_eq!(
            (partition.leader, partition.isr.clone()),
            (NO_LEADER, vec![2])
        );
        assert_eq!((partition.leader_epoch, partition.partition_epoch), (2, 3));
        // Brokers outside the ISR coming back change nothing (no unclean election) ...
        harness.unfence(1).expect("unfenced");
        harness.unfence(3).expect("unfenced");
        assert_eq!(harness.partition("t", 0).leader, NO_LEADER);
        // ... the last ISR member does.
        harness.unfence(2).expect("unfenced");
        let partition = harness.partition("t", 0);
        assert_eq!((partition.leader, partition.isr), (2, vec![2]));
        assert_eq!((partition.leader_epoch, partition.partition_epoch), (3, 4));
    }

    #[test]
    fn unclean_election_only_where_the_topic_enables_it() {
        let mut harness = Harness::new(&[None; 2]);
        harness
            .create(manual("clean", &[&[1, 2]]))
            .expect("created");
        harness
            .create(unclean(manual("loose", &[&[1, 2]])))
            .expect("created");
        for topic in ["clean", "loose"] {
            harness.alter(topic, 0, &[1], |_| ()).expect("shrunk");
        }
        harness.fence(1);
        assert_eq!(harness.partition("clean", 0).leader, NO_LEADER);
        let loose = harness.partition("loose", 0);
        assert_eq!((loose.leader, loose.isr), (2, vec![2]));
        // An operator's unclean election ignores the topic config.
        assert_eq!(
            harness.elect(ElectionType::Unclean, Some(vec![("clean".into(), 0)])),
            vec![("clean".into(), 0, Ok(2))]
        );
        assert_eq!(harness.partition("clean", 0).isr, vec![2]);
        assert!(matches!(
            harness.elect(ElectionType::Unclean, Some(vec![("clean".into(), 0)]))[0].2,
            Err(MetadataError::ElectionNotNeeded { .. })
        ));
        harness.fence(2);
        assert!(matches!(
            harness.elect(ElectionType::Unclean, Some(vec![("clean".into(), 0)]))[0].2,
            Err(MetadataError::EligibleLeadersNotAvailable { .. })
        ));
    }

    #[test]
    fn alter_partition_checks_the_leader_and_its_epochs() {
        let mut harness = Harness::new(&[None; 4]);
        harness.create(manual("t", &[&[1, 2, 3]])).expect("created");
        let shrunk = harness.alter("t", 0, &[1, 2], |_| ()).expect("shrunk");
        assert_eq!(
            (shrunk.isr.clone(), shrunk.partition_epoch),
            (vec![1, 2], 1)
        );
        assert_eq!(shrunk.leader_epoch, 0);
        // The same ISR again changes nothing.
        assert_eq!(harness.alter("t", 0, &[1, 2], |_| ()), Ok(shrunk));
        let with = |field: &'static str, value: i64| {
            move |command: &mut MetadataCommand| {
                let MetadataCommand::AlterPartition {
                    broker_id,
                    broker_epoch,
                    partition,
                    leader_epoch,
                    partition_epoch,
                    ..
                } = command
                else {
                    unreachable!()
                };
                match field {
                    "broker_id" => *broker_id = value as i32,
                    "broker_epoch" => *broker_epoch = value as u64,
                    "partition" => *partition = value as i32,
                    "leader_epoch" => *leader_epoch = value as i32,
                    _ => *partition_epoch = value as i32,
                }
            }
        };
        let refused =
            |result: Result<PartitionRegistration, MetadataError>| result.expect_err("refused");
        assert!(matches!(
            refused(harness.alter("t", 0, &[1, 2, 3], with("partition_epoch", 0))),
            MetadataError::InvalidUpdateVersion {
                received: 0,
                current: 1,
                ..
            }
        ));
        assert!(matches!(
            refused(harness.alter("t", 0, &[1, 2, 3], with("partition_epoch", 5))),
            MetadataError::NotController { .. }
        ));
        assert!(matches!(
            refused(harness.alter("t", 0, &[1, 2, 3], with("partition", 1))),
            MetadataError::UnknownTopicOrPartition { .. }
        ));
        assert!(matches!(
            refused(harness.alter("t", 0, &[1, 2, 4], |_| ())),
            MetadataError::IneligibleReplica { broker_id: 4, .. }
        ));
        assert!(matches!(
            refused(harness.alter("t", 0, &[2, 3], |_| ())),
            MetadataError::InvalidRequest(_)
        ));
        assert!(matches!(
            refused(harness.alter("t", 0, &[1, 1], |_| ())),
            MetadataError::InvalidRequest(_)
        ));
        let epoch_of_2 = harness.epoch(2) as i64;
        assert!(matches!(
            refused(
                harness.alter("t", 0, &[1, 2, 3], |command: &mut MetadataCommand| {
                    with("broker_id", 2)(command);
                    with("broker_epoch", epoch_of_2)(command);
                })
            ),
            MetadataError::InvalidRequest(_)
        ));
        assert!(matches!(
            refused(harness.alter("t", 0, &[1, 2, 3], with("broker_epoch", 999))),
            MetadataError::StaleBrokerEpoch { .. }
        ));
        harness.fence(3);
        assert!(matches!(
            refused(harness.alter("t", 0, &[1, 2, 3], |_| ())),
            MetadataError::IneligibleReplica { broker_id: 3, .. }
        ));
        // A leader change fences the old leader epoch.
        harness.fence(1);
        harness.unfence(1).expect("unfenced");
        let partition = harness.partition("t", 0);
        assert_eq!(partition.leader, 2);
        let epoch_of_1 = harness.epoch(1) as i64;
        assert!(matches!(
            refused(
                harness.alter("t", 0, &[1, 2], |command: &mut MetadataCommand| {
                    with("broker_id", 1)(command);
                    with("broker_epoch", epoch_of_1)(command);
                    with("leader_epoch", 0)(command);
                })
            ),
            MetadataError::FencedLeaderEpoch {
                received: 0,
                current: 1,
                ..
            }
        ));
        // The new leader takes the old one back in.
        let grown = harness.alter("t", 0, &[2, 1], |_| ()).expect("grown");
        assert_eq!(grown.isr, vec![2, 1]);
    }

    #[test]
    fn controlled_shutdown_moves_leadership_first() {
        let mut harness = Harness::new(&[None; 3]);
        harness.create(manual("t", &[&[1, 2, 3]])).expect("created");
        harness.create(manual("solo", &[&[1]])).expect("created");
        let broker_epoch = harness.epoch(1);
        let shutdown = MetadataCommand::ShutdownBroker {
            broker_id: 1,
            broker_epoch,
        };
        assert_eq!(
            harness.apply(shutdown),
            CommandResponse::Broker(Ok(broker_epoch))
        );
        let moved = harness.partition("t", 0);
        assert_eq!((moved.leader, moved.isr), (2, vec![2, 3]));
        // The only replica of partition 1 cannot hand over: offline, its ISR kept.
        let alone = harness.partition("solo", 0);
        assert_eq!((alone.leader, alone.isr), (NO_LEADER, vec![1]));
        assert_eq!(
            harness.unfence(1),
            Err(MetadataError::BrokerInControlledShutdown(1))
        );
        // The restarted broker registers anew, and leads what only it has.
        harness.start_broker(1, 2, None);
        let back = harness.partition("solo", 0);
        assert_eq!((back.leader, back.leader_epoch), (1, 2));
        assert_eq!(harness.partition("t", 0).leader, 2);
    }

    #[test]
    fn a_restarted_broker_is_fenced_out_of_its_partitions() {
        let mut harness = Harness::new(&[None; 2]);
        harness.create(manual("t", &[&[1, 2]])).expect("created");
        let register = MetadataCommand::RegisterBroker {
            broker_id: 1,
            incarnation_id: 99,
            host: "broker-1".into(),
            port: 9092,
            rack: None,
        };
        assert!(matches!(
            harness.apply(register),
            CommandResponse::Broker(Ok(_))
        ));
        let partition = harness.partition("t", 0);
        assert_eq!((partition.leader, partition.isr), (2, vec![2]));
    }

    #[test]
    fn preferred_leader_election() {
        let mut harness = Harness::new(&[None; 3]);
        harness
            .create(manual("t", &[&[1, 2], &[2, 3], &[3, 1]]))
            .expect("created");
        harness.fence(1);
        harness.unfence(1).expect("unfenced");
        // Partition 0 is led by 2 now, and 1 is not back in its ISR yet.
        let preferred = |index| ("t".to_string(), index);
        let results = harness.elect(ElectionType::Preferred, Some(vec![preferred(0)]));
        assert!(matches!(
            results[0].2,
            Err(MetadataError::PreferredLeaderNotAvailable { broker_id: 1, .. })
        ));
        harness.alter("t", 0, &[2, 1], |_| ()).expect("caught up");
        let before = harness.partition("t", 0);
        let results = harness.elect(
            ElectionType::Preferred,
            Some(vec![preferred(0), preferred(1)]),
        );
        assert_eq!(results[0], ("t".into(), 0, Ok(1)));
        assert!(matches!(
            results[1].2,
            Err(MetadataError::ElectionNotNeeded { .. })
        ));
        let after = harness.partition("t", 0);
        assert_eq!(after.leader_epoch, before.leader_epoch + 1);
        assert_eq!(after.partition_epoch, before.partition_epoch + 1);
        assert!(matches!(
            harness.elect(ElectionType::Preferred, Some(vec![preferred(7)]))[0].2,
            Err(MetadataError::UnknownTopicOrPartition { .. })
        ));
        // Over every partition, only those that needed an election are reported.
        harness.alter("t", 2, &[3, 1], |_| ()).expect("caught up");
        harness.fence(3);
        harness.unfence(3).expect("unfenced");
        assert_eq!(harness.partition("t", 2).leader, 1);
        harness.alter("t", 2, &[1, 3], |_| ()).expect("caught up");
        assert_eq!(
            harness.elect(ElectionType::Preferred, None),
            vec![("t".into(), 2, Ok(3))]
        );
    }
}
