//! The controller's commands, their results, and the state they change. Applying a command is a
//! pure function of the state, the command and its log index, so every controller that applies
//! the same committed log holds the same state. Anything a command needs that is not in the
//! state (a new topic's id, the proposing broker's topic defaults) travels inside the command.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metadata::{ConfigChange, MetadataError, MetadataImage, PartitionRegistration};
use crate::placement::ReplicaAssignment;

/// The largest command, JSON-encoded, a controller accepts to propose. A CreateTopics of a few
/// thousand topics with configs fits; a bigger one is a mistake, and every log entry has to fit
/// in one replication frame ([`super::FRAME_BYTES_MAX`]) with its neighbours.
pub const COMMAND_BYTES_MAX: usize = 1024 * 1024;

/// The longest broker host name: DNS's limit on a name.
pub const BROKER_HOST_LENGTH_MAX: usize = 253;

/// The longest rack id. Kafka sets none; 255 is ample for any naming scheme and keeps a hostile
/// registration from bloating every image.
pub const BROKER_RACK_LENGTH_MAX: usize = 255;

/// A new topic's id: random, never 0 or 1 (Kafka reserves both).
pub fn new_topic_id() -> u128 {
    loop {
        let id = fastrand::u128(..);
        if id > 1 {
            return id;
        }
    }
}

/// One topic of a CreateTopics command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSpec {
    pub name: String,
    pub partition_count: i32,
    pub replication_factor: i32,
    pub configs: BTreeMap<String, String>,
    /// Chosen by the proposer (random), so every controller gives the topic the same id. It
    /// also seeds placement's start broker, as Kafka's random start index does.
    pub topic_id: u128,
    /// CreateTopics' manual `assignments`; empty: the controller places the replicas. With an
    /// assignment, `partition_count` and `replication_factor` must be -1, as in Kafka.
    #[serde(default)]
    pub assignments: Vec<ReplicaAssignment>,
}

/// A broker as the controller knows it (KRaft's broker registration).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub broker_id: i32,
    /// Random per broker process start: a registration with a new incarnation is a restart.
    pub incarnation_id: u128,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    /// The log index of the registration: it only grows, so a request carrying an older epoch
    /// comes from a replaced registration (KRaft's broker epoch).
    pub broker_epoch: u64,
    /// A fenced broker leads no partition and is in no ISR (except as the last member of an
    /// offline partition's). Registrations start fenced; the broker is unfenced once it has
    /// caught up, and fenced again when it stops heartbeating.
    pub fenced: bool,
    /// Set by a controlled shutdown: the broker keeps serving what it still leads, but takes
    /// no new leadership or ISR place, and is not unfenced again until it registers anew.
    #[serde(default)]
    pub in_controlled_shutdown: bool,
}

impl BrokerRegistration {
    /// Whether the broker may lead a partition or join an ISR (KRaft's `isActive`).
    pub fn is_eligible(&self) -> bool {
        !self.fenced && !self.in_controlled_shutdown
    }
}

/// ElectLeaders' election type (KIP-460).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionType {
    /// Move leadership to the first replica, if it is eligible and in the ISR.
    Preferred,
    /// Give a leaderless partition a leader, from outside the ISR if need be, whatever the
    /// topic's `unclean.leader.election.enable` says: an operator asked for it.
    Unclean,
}

/// A change to the cluster metadata: one raft log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// Gives a new cluster its id (and, when migrating a single-node broker, its image).
    /// Ignored once the cluster has an id, so any leader may propose it after an election.
    InitializeCluster {
        image: MetadataImage,
    },
    /// CreateTopics. `topic_defaults` are the proposing broker's `log.*` topic defaults: configs
    /// are validated against them, carried here so every controller validates alike.
    CreateTopics {
        topics: Vec<TopicSpec>,
        topic_defaults: Vec<(String, String)>,
    },
    DeleteTopics {
        names: Vec<String>,
    },
    /// CreatePartitions: each topic grows to the given total. `assignments` holds the
    /// replicas of a topic's new partitions, in order, when the request spelled them out.
    CreatePartitions {
        topics: Vec<(String, i32)>,
        #[serde(default)]
        assignments: BTreeMap<String, Vec<Vec<i32>>>,
    },
    /// AlterConfigs (`incremental` false) or IncrementalAlterConfigs (true).
    AlterConfigs {
        topics: Vec<(String, Vec<ConfigChange>)>,
        incremental: bool,
        topic_defaults: Vec<(String, String)>,
    },
    AllocateProducerId,
    /// A broker (re)starts. Same incarnation: the existing registration is kept (a retry).
    RegisterBroker {
        broker_id: i32,
        incarnation_id: u128,
        host: String,
        port: u16,
        rack: Option<String>,
    },
    FenceBroker {
        broker_id: i32,
    },
    /// Refused with `StaleBrokerEpoch` unless `broker_epoch` is the current registration's.
    /// Leaderless partitions that can now elect a leader do.
    UnfenceBroker {
        broker_id: i32,
        broker_epoch: u64,
    },
    /// A controlled shutdown begins: the broker's leaderships move to other ISR members and it
    /// leaves every ISR it is not the last member of.
    ShutdownBroker {
        broker_id: i32,
        broker_epoch: u64,
    },
    /// AlterPartition (KIP-497): a partition's leader proposes a new ISR, naming the leader
    /// and partition epochs its proposal starts from.
    AlterPartition {
        broker_id: i32,
        broker_epoch: u64,
        topic: String,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: Vec<i32>,
    },
    /// ElectLeaders; `partitions` none: every partition.
    ElectLeaders {
        election_type: ElectionType,
        partitions: Option<Vec<(String, i32)>>,
    },
}

/// What applying a command returned, sent back to the proposer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResponse {
    /// openraft's own entries (blank, membership) and `InitializeCluster`.
    Done,
    /// CreateTopics: per topic, its id and partition count, or why it was refused.
    TopicsCreated(Vec<Result<(u128, i32), MetadataError>>),
    /// DeleteTopics, CreatePartitions, AlterConfigs: per topic, in request order.
    Topics(Vec<Result<(), MetadataError>>),
    ProducerId(i64),
    /// Broker commands: the registration's broker epoch.
    Broker(Result<u64, MetadataError>),
    /// AlterPartition: the partition as it is now, or why the change was refused.
    Partition(Result<PartitionRegistration, MetadataError>),
    /// ElectLeaders: per partition, its leader now, or why none was elected. For an election
    /// over every partition, those that needed none are left out (as Kafka does).
    Elections(Vec<(String, i32, Result<i32, MetadataError>)>),
}

/// Everything the controller quorum agrees on. Every controller holds a copy, published to its
/// followers as an `Arc` after every applied batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerState {
    /// The same image the single-node controller persists as `cluster-metadata.json`.
    pub image: MetadataImage,
    pub brokers: BTreeMap<i32, BrokerRegistration>,
}

impl Default for ControllerState {
    /// A quorum that has not yet applied `InitializeCluster`: an image with no cluster id.
    fn default() -> Self {
        ControllerState {
            image: MetadataImage::new(String::new()),
            brokers: BTreeMap::new(),
        }
    }
}

impl ControllerState {
    /// Whether `InitializeCluster` has been applied.
    pub fn is_initialized(&self) -> bool {
        !self.image.cluster_id.is_empty()
    }

    /// Applies one committed command, the entry at `log_index`.
    pub fn apply(&mut self, log_index: u64, command: &MetadataCommand) -> CommandResponse {
        match command {
            MetadataCommand::InitializeCluster { image } => {
                if !self.is_initialized() && !image.cluster_id.is_empty() {
                    self.image = image.clone();
                }
                CommandResponse::Done
            }
            MetadataCommand::CreateTopics {
                topics,
                topic_defaults,
            } => CommandResponse::TopicsCreated(
                topics
                    .iter()
                    .map(|spec| self.create_topic(spec, topic_defaults))
                    .collect(),
            ),
            MetadataCommand::DeleteTopics { names } => CommandResponse::Topics(
                names
                    .iter()
                    .map(|name| self.image.delete_topic(name).map(|_| ()))
                    .collect(),
            ),
            MetadataCommand::CreatePartitions {
                topics,
                assignments,
            } => CommandResponse::Topics(
                topics
                    .iter()
                    .map(|(name, total)| self.grow_topic(name, *total, assignments.get(name)))
                    .collect(),
            ),
            MetadataCommand::AlterConfigs {
                topics,
                incremental,
                topic_defaults,
            } => CommandResponse::Topics(
                topics
                    .iter()
                    .map(|(name, changes)| {
                        let configs = self.image.altered_configs(
                            name,
                            changes,
                            *incremental,
                            topic_defaults,
                        )?;
                        self.image.set_configs(name, configs);
                        Ok(())
                    })
                    .collect(),
            ),
            MetadataCommand::AllocateProducerId => {
                CommandResponse::ProducerId(self.image.allocate_producer_id())
            }
            MetadataCommand::RegisterBroker {
                broker_id,
                incarnation_id,
                host,
                port,
                rack,
            } => CommandResponse::Broker(self.register_broker(
                log_index,
                *broker_id,
                *incarnation_id,
                host,
                *port,
                rack,
            )),
            MetadataCommand::FenceBroker { broker_id } => {
                CommandResponse::Broker(self.fence_broker(*broker_id))
            }
            MetadataCommand::UnfenceBroker {
                broker_id,
                broker_epoch,
            } => CommandResponse::Broker(self.unfence_broker(*broker_id, *broker_epoch)),
            MetadataCommand::ShutdownBroker {
                broker_id,
                broker_epoch,
            } => CommandResponse::Broker(self.shutdown_broker(*broker_id, *broker_epoch)),
            MetadataCommand::AlterPartition {
                broker_id,
                broker_epoch,
                topic,
                partition,
                leader_epoch,
                partition_epoch,
                new_isr,
            } => CommandResponse::Partition(self.alter_partition(
                *broker_id,
                *broker_epoch,
                topic,
                *partition,
                *leader_epoch,
                *partition_epoch,
                new_isr,
            )),
            MetadataCommand::ElectLeaders {
                election_type,
                partitions,
            } => CommandResponse::Elections(
                self.elect_leaders(*election_type, partitions.as_deref()),
            ),
        }
    }

    fn register_broker(
        &mut self,
        log_index: u64,
        broker_id: i32,
        incarnation_id: u128,
        host: &str,
        port: u16,
        rack: &Option<String>,
    ) -> Result<u64, MetadataError> {
        let invalid = |reason: String| Err(MetadataError::InvalidBrokerRegistration(reason));
        if broker_id < 0 {
            return invalid(format!("broker id {broker_id} is negative"));
        }
        if host.is_empty() || host.len() > BROKER_HOST_LENGTH_MAX {
            return invalid(format!(
                "host must be 1 to {BROKER_HOST_LENGTH_MAX} bytes, is {}",
                host.len()
            ));
        }
        if port == 0 {
            return invalid("port 0".into());
        }
        if rack
            .as_ref()
            .is_some_and(|rack| rack.is_empty() || rack.len() > BROKER_RACK_LENGTH_MAX)
        {
            return invalid(format!("rack must be 1 to {BROKER_RACK_LENGTH_MAX} bytes"));
        }
        let mut replaced = false;
        if let Some(existing) = self.brokers.get(&broker_id) {
            if existing.incarnation_id == incarnation_id {
                return Ok(existing.broker_epoch);
            }
            replaced = true;
        }
        self.brokers.insert(
            broker_id,
            BrokerRegistration {
                broker_id,
                incarnation_id,
                host: host.to_string(),
                port,
                rack: rack.clone(),
                broker_epoch: log_index,
                fenced: true,
                in_controlled_shutdown: false,
            },
        );
        self.image.version += 1;
        if replaced {
            // A restart: the old process is gone, so it is fenced out of its partitions.
            self.reelect(Some(broker_id), |partition| {
                partition.isr.contains(&broker_id)
            });
        }
        Ok(log_index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, topic_id: u128) -> TopicSpec {
        TopicSpec {
            name: name.into(),
            partition_count: 2,
            replication_factor: 1,
            configs: BTreeMap::new(),
            topic_id,
            assignments: Vec::new(),
        }
    }

    fn initialized() -> ControllerState {
        let mut state = ControllerState::default();
        let image = MetadataImage::new("cluster-a".into());
        state.apply(1, &MetadataCommand::InitializeCluster { image });
        state
    }

    /// An initialized state with broker 100 registered (epoch 2) and unfenced, so topics can
    /// be placed.
    fn with_broker() -> ControllerState {
        let mut state = initialized();
        let register = MetadataCommand::RegisterBroker {
            broker_id: 100,
            incarnation_id: 1,
            host: "broker-100".into(),
            port: 9092,
            rack: None,
        };
        assert_eq!(state.apply(2, &register), CommandResponse::Broker(Ok(2)));
        let unfence = MetadataCommand::UnfenceBroker {
            broker_id: 100,
            broker_epoch: 2,
        };
        assert_eq!(state.apply(3, &unfence), CommandResponse::Broker(Ok(2)));
        state
    }

    #[test]
    fn initialize_happens_once() {
        let mut state = initialized();
        assert_eq!(state.image.cluster_id, "cluster-a");
        let other = MetadataImage::new("cluster-b".into());
        state.apply(2, &MetadataCommand::InitializeCluster { image: other });
        assert_eq!(state.image.cluster_id, "cluster-a");
    }

    #[test]
    fn topic_commands_give_per_topic_results() {
        let mut state = with_broker();
        let create = MetadataCommand::CreateTopics {
            topics: vec![spec("a", 10), spec("a", 11), spec("b", 10), spec("c", 1)],
            topic_defaults: Vec::new(),
        };
        let CommandResponse::TopicsCreated(results) = state.apply(2, &create) else {
            panic!("wrong response kind");
        };
        assert_eq!(results[0], Ok((10, 2)));
        assert_eq!(results[1], Err(MetadataError::TopicExists("a".into())));
        assert!(matches!(
            results[2],
            Err(MetadataError::InvalidTopic { .. })
        ));
        assert!(matches!(
            results[3],
            Err(MetadataError::InvalidTopic { .. })
        ));

        // One broker, replication factor 1: every replica on it, as on a single node.
        let partition = state.image.partition("a", 1).expect("placed");
        assert_eq!(
            (partition.replicas.as_slice(), partition.leader),
            (&[100][..], 100)
        );
        let grow = MetadataCommand::CreatePartitions {
            topics: vec![("a".into(), 4), ("missing".into(), 4)],
            assignments: BTreeMap::new(),
        };
        assert_eq!(
            state.apply(3, &grow),
            CommandResponse::Topics(vec![
                Ok(()),
                Err(MetadataError::UnknownTopic("missing".into()))
            ])
        );
        let alter = MetadataCommand::AlterConfigs {
            topics: vec![(
                "a".into(),
                vec![ConfigChange::Set("retention.ms".into(), "1000".into())],
            )],
            incremental: true,
            topic_defaults: Vec::new(),
        };
        assert_eq!(
            state.apply(4, &alter),
            CommandResponse::Topics(vec![Ok(())])
        );
        let topic = state.image.topic("a").expect("created");
        assert_eq!(topic.partition_count, 4);
        assert_eq!(topic.partitions.len(), 4);
        assert_eq!(
            topic.configs.get("retention.ms").map(String::as_str),
            Some("1000")
        );
        assert_eq!(
            state.apply(5, &MetadataCommand::AllocateProducerId),
            CommandResponse::ProducerId(0)
        );
        let delete = MetadataCommand::DeleteTopics {
            names: vec!["a".into(), "a".into()],
        };
        assert_eq!(
            state.apply(6, &delete),
            CommandResponse::Topics(vec![Ok(()), Err(MetadataError::UnknownTopic("a".into()))])
        );
    }

    #[test]
    fn brokers_register_fenced_and_unfence_with_their_epoch() {
        let mut state = initialized();
        let register = |incarnation_id| MetadataCommand::RegisterBroker {
            broker_id: 1,
            incarnation_id,
            host: "broker-1".into(),
            port: 9092,
            rack: Some("r1".into()),
        };
        assert_eq!(
            state.apply(7, &register(100)),
            CommandResponse::Broker(Ok(7))
        );
        assert!(state.brokers[&1].fenced);
        // A retry of the same incarnation keeps its epoch.
        assert_eq!(
            state.apply(8, &register(100)),
            CommandResponse::Broker(Ok(7))
        );
        let unfence = |broker_epoch| MetadataCommand::UnfenceBroker {
            broker_id: 1,
            broker_epoch,
        };
        assert_eq!(state.apply(9, &unfence(7)), CommandResponse::Broker(Ok(7)));
        assert!(!state.brokers[&1].fenced);
        // A restart replaces the registration, fenced again, and the old epoch goes stale.
        assert_eq!(
            state.apply(10, &register(200)),
            CommandResponse::Broker(Ok(10))
        );
        assert!(state.brokers[&1].fenced);
        assert_eq!(
            state.apply(11, &unfence(7)),
            CommandResponse::Broker(Err(MetadataError::StaleBrokerEpoch {
                broker_id: 1,
                epoch: 7,
                current: 10
            }))
        );
        assert_eq!(
            state.apply(12, &MetadataCommand::FenceBroker { broker_id: 2 }),
            CommandResponse::Broker(Err(MetadataError::UnknownBroker(2)))
        );
        let bad = MetadataCommand::RegisterBroker {
            broker_id: 3,
            incarnation_id: 1,
            host: String::new(),
            port: 9092,
            rack: None,
        };
        assert!(matches!(
            state.apply(13, &bad),
            CommandResponse::Broker(Err(MetadataError::InvalidBrokerRegistration(_)))
        ));
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut state = with_broker();
        state.apply(
            2,
            &MetadataCommand::CreateTopics {
                topics: vec![spec("a", u128::MAX)],
                topic_defaults: Vec::new(),
            },
        );
        let bytes = serde_json::to_vec(&state).expect("serializes");
        let back: ControllerState = serde_json::from_slice(&bytes).expect("parses");
        assert_eq!(back, state);
    }
}
