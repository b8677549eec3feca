//! The controller's partition rules under random sequences of broker restarts, fencing,
//! unfencing, controlled shutdowns, AlterPartition proposals (current and stale) and elections,
//! with the invariants of `controller/leadership.rs` checked after every command.

use std::collections::BTreeMap;

use proptest::prelude::*;
use ringlog_cluster::controller::{
    CommandResponse, ControllerState, ElectionType, MetadataCommand, TopicSpec,
};
use ringlog_cluster::{MetadataImage, PartitionRegistration, NO_LEADER};

/// Brokers 1..=BROKER_COUNT; enough for replication factor 3 with two to spare.
const BROKER_COUNT: i32 = 5;

/// The topics: name, partitions, replication factor, unclean elections allowed.
const TOPICS: [(&str, i32, i32, bool); 3] = [
    ("clean", 4, 3, false),
    ("loose", 3, 3, true),
    ("pair", 2, 2, false),
];

#[derive(Clone, Debug)]
enum Step {
    /// The broker restarts: a new incarnation registers (fenced), and is unfenced if the flag
    /// is set (it caught up).
    Restart(i32, bool),
    Fence(i32),
    /// Unfence with the current broker epoch, or a stale one.
    Unfence(i32, bool),
    Shutdown(i32),
    /// AlterPartition of a partition, ISR = the replicas picked by the mask, and the leader
    /// unless the mask's top bit is set; `fault` 0..=3:
    /// none, stale leader epoch, stale partition epoch, sent by a replica that is not leader.
    Alter {
        topic: usize,
        partition: i32,
        isr_mask: u8,
        fault: u8,
    },
    Elect {
        preferred: bool,
        every: bool,
        topic: usize,
        partition: i32,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let broker = 1..=BROKER_COUNT;
    prop_oneof![
        2 => (broker.clone(), any::<bool>()).prop_map(|(id, up)| Step::Restart(id, up)),
        2 => broker.clone().prop_map(Step::Fence),
        2 => (broker.clone(), any::<bool>()).prop_map(|(id, stale)| Step::Unfence(id, stale)),
        1 => broker.prop_map(Step::Shutdown),
        4 => (0..TOPICS.len(), 0..4, any::<u8>(), 0..4u8).prop_map(
            |(topic, partition, isr_mask, fault)| Step::Alter {
                topic,
                partition,
                isr_mask,
                fault: fault % 4,
            }
        ),
        1 => (any::<bool>(), any::<bool>(), 0..TOPICS.len(), 0..4).prop_map(
            |(preferred, every, topic, partition)| Step::Elect {
                preferred,
                every,
                topic,
                partition,
            }
        ),
    ]
}

struct Model {
    state: ControllerState,
    index: u64,
    incarnations: BTreeMap<i32, u128>,
}

impl Model {
    fn new() -> Model {
        let mut model = Model {
            state: ControllerState::default(),
            index: 0,
            incarnations: BTreeMap::new(),
        };
        let image = MetadataImage::new("cluster".into());
        model.apply(MetadataCommand::InitializeCluster { image });
        for broker_id in 1..=BROKER_COUNT {
            model.restart(broker_id);
            let broker_epoch = model.state.brokers[&broker_id].broker_epoch;
            model.apply(MetadataCommand::UnfenceBroker {
                broker_id,
                broker_epoch,
            });
        }
        let topics = TOPICS
            .iter()
            .enumerate()
            .map(
                |(index, (name, partition_count, replication_factor, unclean))| TopicSpec {
                    name: name.to_string(),
                    partition_count: *partition_count,
                    replication_factor: *replication_factor,
                    configs: if *unclean {
                        [("unclean.leader.election.enable".into(), "true".into())].into()
                    } else {
                        BTreeMap::new()
                    },
                    topic_id: 1000 + index as u128,
                    assignments: Vec::new(),
                },
            )
            .collect();
        let response = model.apply(MetadataCommand::CreateTopics {
            topics,
            topic_defaults: Vec::new(),
        });
        let CommandResponse::TopicsCreated(results) = response else {
            panic!("{response:?}");
        };
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        model
    }

    fn apply(&mut self, command: MetadataCommand) -> CommandResponse {
        self.index += 1;
        self.state.apply(self.index, &command)
    }

    fn restart(&mut self, broker_id: i32) {
        let incarnation_id = self.incarnations.entry(broker_id).or_default();
        *incarnation_id += 1;
        let incarnation_id = *incarnation_id;
        self.apply(MetadataCommand::RegisterBroker {
            broker_id,
            incarnation_id,
            host: format!("broker-{broker_id}"),
            port: 9092,
            rack: None,
        });
    }

    fn partition(&self, topic: usize, index: i32) -> Option<&PartitionRegistration> {
        self.state.image.partition(TOPICS[topic].0, index)
    }

    /// Runs one step; returns whether it was an operator's unclean election.
    fn run(&mut self, step: &Step) -> bool {
        match *step {
            Step::Restart(broker_id, up) => {
                self.restart(broker_id);
                if up {
                    let broker_epoch = self.state.brokers[&broker_id].broker_epoch;
                    self.apply(MetadataCommand::UnfenceBroker {
                        broker_id,
                        broker_epoch,
                    });
                }
            }
            Step::Fence(broker_id) => {
                self.apply(MetadataCommand::FenceBroker { broker_id });
            }
            Step::Unfence(broker_id, stale) => {
                let epoch = self.state.brokers[&broker_id].broker_epoch;
                self.apply(MetadataCommand::UnfenceBroker {
                    broker_id,
                    broker_epoch: if stale { epoch - 1 } else { epoch },
                });
            }
            Step::Shutdown(broker_id) => {
                let broker_epoch = self.state.brokers[&broker_id].broker_epoch;
                self.apply(MetadataCommand::ShutdownBroker {
                    broker_id,
                    broker_epoch,
                });
            }
            Step::Alter {
                topic,
                partition,
                isr_mask,
                fault,
            } => {
                let Some(registration) = self.partition(topic, partition).cloned() else {
                    return false;
                };
                let new_isr: Vec<i32> = registration
                    .replicas
                    .iter()
                    .enumerate()
                    .filter(|(bit, _)| isr_mask & (1 << bit) != 0)
                    .map(|(_, broker)| *broker)
                    .collect();
                let mut new_isr = new_isr;
                if isr_mask & 0x80 == 0
                    && registration.leader != NO_LEADER
                    && !new_isr.contains(&registration.leader)
                {
                    new_isr.insert(0, registration.leader);
                }
                let mut sender = registration.leader;
                if sender == NO_LEADER || fault == 3 {
                    sender = registration.replicas[isr_mask as usize % registration.replicas.len()];
                }
                let broker_epoch = self.state.brokers[&sender].broker_epoch;
                self.apply(MetadataCommand::AlterPartition {
                    broker_id: sender,
                    broker_epoch,
                    topic: TOPICS[topic].0.into(),
                    partition,
                    leader_epoch: registration.leader_epoch - i32::from(fault == 1),
                    partition_epoch: registration.partition_epoch - i32::from(fault == 2),
                    new_isr,
                });
            }
            Step::Elect {
                preferred,
                every,
                topic,
                partition,
            } => {
                let election_type = if preferred {
                    ElectionType::Preferred
                } else {
                    ElectionType::Unclean
                };
                let partitions = (!every).then(|| vec![(TOPICS[topic].0.to_string(), partition)]);
                self.apply(MetadataCommand::ElectLeaders {
                    election_type,
                    partitions,
                });
                return !preferred;
            }
        }
        false
    }

    /// The invariants, against the state before the step.
    fn check(&self, before: &ControllerState, operator_unclean: bool, step: &Step) {
        let eligible = |broker: i32| {
            self.state
                .brokers
                .get(&broker)
                .is_some_and(|broker| !broker.fenced && !broker.in_controlled_shutdown)
        };
        for (name, _, _, unclean) in TOPICS {
            let topic = self.state.image.topic(name).expect("never deleted");
            let old = before.image.topic(name).expect("never deleted");
            assert_eq!(topic.partitions.len(), old.partitions.len());
            for (index, (now, was)) in topic.partitions.iter().zip(&old.partitions).enumerate() {
                let at = format!("{name}-{index} after {step:?}: {was:?} -> {now:?}");
                assert_eq!(now.check(), Ok(()), "{at}");
                assert_eq!(now.replicas, was.replicas, "{at}");
                if now.leader != NO_LEADER {
                    assert!(eligible(now.leader), "ineligible leader: {at}");
                }
                if now.isr.iter().any(|member| !eligible(*member)) {
                    assert_eq!(now.isr.len(), 1, "ineligible member of a larger ISR: {at}");
                }
                if now.isr.iter().any(|member| eligible(*member)) {
                    assert_ne!(now.leader, NO_LEADER, "electable but leaderless: {at}");
                }
                assert!(now.leader_epoch >= was.leader_epoch, "{at}");
                assert!(now.partition_epoch >= was.partition_epoch, "{at}");
                if now.leader != was.leader {
                    assert!(now.leader_epoch > was.leader_epoch, "{at}");
                }
                if now.leader != was.leader || now.isr != was.isr {
                    assert!(now.partition_epoch > was.partition_epoch, "{at}");
                }
                if now.leader != was.leader && now.leader != NO_LEADER {
                    assert!(
                        was.isr.contains(&now.leader) || unclean || operator_unclean,
                        "unclean election: {at}"
                    );
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn partition_invariants_hold_after_every_command(
        steps in proptest::collection::vec(step(), 1..60)
    ) {
        let mut model = Model::new();
        let fresh = model.state.clone();
        model.check(&fresh, false, &Step::Fence(0));
        for step in &steps {
            let before = model.state.clone();
            let operator_unclean = model.run(step);
            model.check(&before, operator_unclean, step);
            // Every state survives the JSON of snapshots and of the image.
            let image = MetadataImage::from_json(&model.state.image.to_json());
            prop_assert_eq!(image.as_ref(), Ok(&model.state.image));
        }
    }
}
