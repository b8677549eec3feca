//! The cluster's metadata as a plain value: topics, their partitions (replicas, leader, ISR,
//! epochs) and config overrides, the cluster id, and the producer-id counter. Changes are pure
//! functions that validate and apply one command, so the same rules serve a single-node
//! controller today and a replicated state machine later.

use std::collections::{BTreeMap, BTreeSet};

use ringlog_engine::config::LogConfig;
use ringlog_engine::{LeaderEpoch, NodeId};
use serde::{Deserialize, Serialize};

use crate::replication::PartitionEpoch;

/// Kafka's limit on a topic name's length (249: a partition directory name stays under 255).
pub const TOPIC_NAME_LENGTH_MAX: usize = 249;

/// The most partitions one topic may have. Kafka has no hard limit; each partition here is a
/// directory, files and a preallocated segment, so a request for millions is a mistake, not a
/// plan, and is refused rather than filling the disk.
pub const TOPIC_PARTITIONS_MAX: i32 = 10_000;

/// A new cluster id: a 22-character URL-safe base64 rendering of 16 random bytes, like Kafka's.
pub fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = fastrand::u128(..);
    (0..22)
        .map(|_| {
            let symbol = ALPHABET[(bits & 63) as usize] as char;
            bits >>= 6;
            symbol
        })
        .collect()
}

/// Why a metadata command was refused; `net` maps each to Kafka's error code. Serializable
/// because the replicated controller sends a command's result back to the broker that proposed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MetadataError {
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("unknown topic '{0}'")]
    UnknownTopic(String),
    #[error("invalid topic name '{name}': {reason}")]
    InvalidTopic { name: String, reason: String },
    #[error("invalid partition count: {0}")]
    InvalidPartitions(String),
    /// INVALID_REPLICATION_FACTOR, with the reason (more replicas than brokers, not positive).
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    /// INVALID_REPLICA_ASSIGNMENT: a manual assignment names an unknown broker, a broker twice,
    /// or differs in length between partitions.
    #[error("INVALID_REPLICA_ASSIGNMENT: {0}")]
    InvalidReplicaAssignment(String),
    /// INVALID_REQUEST: a request Kafka would refuse as malformed (an AlterPartition from a
    /// broker that is not the leader, an empty ISR, partition counts next to an assignment).
    #[error("INVALID_REQUEST: {0}")]
    InvalidRequest(String),
    #[error("UNKNOWN_TOPIC_OR_PARTITION: {topic}-{partition}")]
    UnknownTopicOrPartition { topic: String, partition: i32 },
    /// NOT_CONTROLLER: a request names an epoch newer than the controller's, so it was built
    /// from a state this controller has not applied; Kafka answers this so the sender finds
    /// the active controller and retries.
    #[error("NOT_CONTROLLER: {topic}-{partition}: {what} {received} is newer than the controller's {current}")]
    NotController {
        topic: String,
        partition: i32,
        what: String,
        received: i32,
        current: i32,
    },
    #[error(
        "FENCED_LEADER_EPOCH: {topic}-{partition}: leader epoch {received} is older than {current}"
    )]
    FencedLeaderEpoch {
        topic: String,
        partition: i32,
        received: i32,
        current: i32,
    },
    #[error("INVALID_UPDATE_VERSION: {topic}-{partition}: partition epoch {received} is older than {current}")]
    InvalidUpdateVersion {
        topic: String,
        partition: i32,
        received: i32,
        current: i32,
    },
    /// INELIGIBLE_REPLICA: a proposed ISR member is not a replica, is fenced, or is shutting down.
    #[error("INELIGIBLE_REPLICA: {topic}-{partition}: broker {broker_id} {reason}")]
    IneligibleReplica {
        topic: String,
        partition: i32,
        broker_id: i32,
        reason: String,
    },
    #[error("PREFERRED_LEADER_NOT_AVAILABLE: {topic}-{partition}: preferred leader {broker_id} is not live or not in the ISR")]
    PreferredLeaderNotAvailable {
        topic: String,
        partition: i32,
        broker_id: i32,
    },
    #[error("ELECTION_NOT_NEEDED: {topic}-{partition}")]
    ElectionNotNeeded { topic: String, partition: i32 },
    #[error("ELIGIBLE_LEADERS_NOT_AVAILABLE: {topic}-{partition}: no live replica")]
    EligibleLeadersNotAvailable { topic: String, partition: i32 },
    /// A broker in controlled shutdown asked to be unfenced: it must register again (restart)
    /// to come back, as in KRaft.
    #[error("broker {0} is in controlled shutdown")]
    BrokerInControlledShutdown(i32),
    #[error("invalid config {key}: {reason}")]
    InvalidConfig { key: String, reason: String },
    #[error("unknown broker {0}")]
    UnknownBroker(i32),
    /// A broker spoke for a registration that has since been replaced (it restarted, or another
    /// process took its id): Kafka's STALE_BROKER_EPOCH.
    #[error("broker {broker_id}: epoch {epoch} is stale, the current registration has {current}")]
    StaleBrokerEpoch {
        broker_id: i32,
        epoch: u64,
        current: u64,
    },
    #[error("invalid broker registration: {0}")]
    InvalidBrokerRegistration(String),
}

/// Kafka's `NO_LEADER`: a partition with no leader is offline.
pub const NO_LEADER: i32 = -1;

/// One partition as the controller registers it (KRaft's `PartitionRegistration`). Ids and
/// epochs are Kafka's wire integers, so the JSON reads like Kafka's own records; the typed
/// views ([`PartitionRegistration::leader`]) are for the replication rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRegistration {
    /// The assigned brokers, in placement order: the first is the preferred leader.
    pub replicas: Vec<i32>,
    /// The in-sync replicas: a non-empty subset of `replicas`. A fenced broker stays in it only
    /// as its last member (the partition is then offline until it returns): Kafka never
    /// shrinks an ISR to nothing, so the controller still knows who has every record.
    pub isr: Vec<i32>,
    /// The leader's broker id, or [`NO_LEADER`].
    pub leader: i32,
    /// Bumped whenever the leader changes (also to and from [`NO_LEADER`]), KIP-101.
    pub leader_epoch: i32,
    /// Bumped by every change to the registration (KIP-497's `partitionEpoch`), so that an
    /// AlterPartition built on an older version is refused.
    pub partition_epoch: i32,
}

impl PartitionRegistration {
    /// A new partition on `replicas` with the first of `isr` in replica order as leader (or
    /// none, when `isr` is empty: then the ISR is all replicas and the partition waits for one
    /// of them), at epochs 0.
    pub fn new(replicas: Vec<i32>, isr: Vec<i32>) -> Self {
        let leader = replicas
            .iter()
            .copied()
            .find(|replica| isr.contains(replica))
            .unwrap_or(NO_LEADER);
        let isr = if isr.is_empty() {
            replicas.clone()
        } else {
            isr
        };
        PartitionRegistration {
            replicas,
            isr,
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
        }
    }

    pub fn leader(&self) -> Option<NodeId> {
        (self.leader != NO_LEADER).then_some(NodeId(self.leader))
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        LeaderEpoch(self.leader_epoch)
    }

    pub fn partition_epoch(&self) -> PartitionEpoch {
        PartitionEpoch(self.partition_epoch)
    }

    /// The registration's problems, or none: what every change keeps true, checked again on
    /// every image read back from disk.
    pub fn check(&self) -> Result<(), String> {
        let mut seen = BTreeSet::new();
        if self.replicas.is_empty() || !self.replicas.iter().all(|id| seen.insert(*id)) {
            return Err(format!(
                "replicas {:?} are empty or repeat a broker",
                self.replicas
            ));
        }
        let mut seen = BTreeSet::new();
        if self.isr.is_empty() || !self.isr.iter().all(|id| seen.insert(*id)) {
            return Err(format!("ISR {:?} is empty or repeats a broker", self.isr));
        }
        if let Some(stranger) = self.isr.iter().find(|id| !self.replicas.contains(id)) {
            return Err(format!("ISR member {stranger} is not a replica"));
        }
        if self.leader != NO_LEADER && !self.isr.contains(&self.leader) {
            return Err(format!("leader {} is not in the ISR", self.leader));
        }
        if self.leader_epoch < 0 || self.partition_epoch < 0 {
            return Err("negative epoch".into());
        }
        Ok(())
    }
}

/// One topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMetadata {
    /// Kafka's topic id (a UUID), as a 128-bit number.
    pub topic_id: u128,
    pub partition_count: i32,
    /// Config overrides under Kafka's names; the rest come from the broker's defaults.
    pub configs: BTreeMap<String, String>,
    /// Partition `i`'s registration at index `i`, one per partition; or none at all for a
    /// topic of the single-node controller, whose one broker holds every partition and leads
    /// it at epoch 0 (the files it wrote before partitions were registered have no such field,
    /// and still load).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<PartitionRegistration>,
}

impl TopicMetadata {
    /// Whether the controller placed this topic's partitions (see [`TopicMetadata::partitions`]).
    pub fn is_placed(&self) -> bool {
        !self.partitions.is_empty()
    }

    /// The topic's `unclean.leader.election.enable` override. The controller does not know
    /// brokers' defaults, so only the topic's own setting allows an unclean election (Kafka's
    /// default is false).
    pub fn unclean_leader_election_enable(&self) -> bool {
        self.configs
            .get("unclean.leader.election.enable")
            .is_some_and(|value| value == "true")
    }
}

/// All of the cluster's metadata. Every shard holds a copy; the controller changes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    pub cluster_id: String,
    /// Bumped by every change, so copies can be ordered.
    pub version: u64,
    pub topics: BTreeMap<String, TopicMetadata>,
    /// The next producer id InitProducerId hands out.
    pub next_producer_id: i64,
}

/// A config change of AlterConfigs / IncrementalAlterConfigs: set or remove an override, or
/// add items to / remove items from a list config. List changes are resolved against the value
/// the topic has when the controller applies them, so concurrent edits are not lost.
/// Serializable because it travels inside the replicated controller's log entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigChange {
    Set(String, String),
    Delete(String),
    Append(String, Vec<String>),
    Subtract(String, Vec<String>),
}

/// The items of a comma-separated list config value.
pub fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(String::from)
        .collect()
}

impl MetadataImage {
    /// A new cluster's metadata, with `cluster_id` (22 characters, like Kafka's base64 UUIDs).
    pub fn new(cluster_id: String) -> Self {
        MetadataImage {
            cluster_id,
            version: 0,
            topics: BTreeMap::new(),
            next_producer_id: 0,
        }
    }

    pub fn topic(&self, name: &str) -> Option<&TopicMetadata> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, topic_id: u128) -> Option<(&String, &TopicMetadata)> {
        self.topics
            .iter()
            .find(|(_, topic)| topic.topic_id == topic_id)
    }

    /// Validates a CreateTopics entry for the single-node controller, whose one broker takes
    /// every replica, without applying it (also its `validate_only` mode).
    pub fn check_create_topic(
        &self,
        name: &str,
        partition_count: i32,
        replication_factor: i32,
        configs: &BTreeMap<String, String>,
        defaults: &[(String, String)],
    ) -> Result<(), MetadataError> {
        self.check_new_topic(name, configs, defaults)?;
        check_partition_count(partition_count)?;
        if replication_factor != 1 {
            return Err(MetadataError::InvalidReplicationFactor(format!(
                "{replication_factor}: this cluster has 1 broker"
            )));
        }
        Ok(())
    }

    /// The checks of a new topic that do not depend on its placement: the name is valid and
    /// free, and the configs are valid over the broker's `defaults`.
    pub fn check_new_topic(
        &self,
        name: &str,
        configs: &BTreeMap<String, String>,
        defaults: &[(String, String)],
    ) -> Result<(), MetadataError> {
        validate_topic_name(name)?;
        if self.topics.contains_key(name) {
            return Err(MetadataError::TopicExists(name.to_string()));
        }
        effective_log_config(defaults, configs)?;
        Ok(())
    }

    /// Adds a topic whose partitions the controller placed: `partitions[i]` is partition `i`
    /// (after [`MetadataImage::check_new_topic`] and placement).
    pub fn create_placed_topic(
        &mut self,
        name: &str,
        configs: BTreeMap<String, String>,
        topic_id: u128,
        partitions: Vec<PartitionRegistration>,
    ) {
        assert!(!self.topics.contains_key(name), "checked before creating");
        assert!(!partitions.is_empty(), "placed before creating");
        assert!(partitions.len() <= TOPIC_PARTITIONS_MAX as usize);
        for partition in &partitions {
            assert_eq!(
                partition.check(),
                Ok(()),
                "placement makes valid partitions"
            );
        }
        self.topics.insert(
            name.to_string(),
            TopicMetadata {
                topic_id,
                partition_count: partitions.len() as i32,
                configs,
                partitions,
            },
        );
        self.version += 1;
    }

    /// The registration of partition `index` of `topic`, if it is placed.
    pub fn partition(&self, topic: &str, index: i32) -> Option<&PartitionRegistration> {
        let index = usize::try_from(index).ok()?;
        self.topics.get(topic)?.partitions.get(index)
    }

    /// The same, to change it; every change bumps the image's version.
    pub fn partition_mut(&mut self, topic: &str, index: i32) -> Option<&mut PartitionRegistration> {
        let index = usize::try_from(index).ok()?;
        self.topics.get_mut(topic)?.partitions.get_mut(index)
    }

    /// Grows a placed topic by `added`, the registrations of its new partitions in order
    /// (after [`MetadataImage::check_create_partitions`] and placement).
    pub fn add_placed_partitions(&mut self, name: &str, added: Vec<PartitionRegistration>) {
        let topic = self.topics.get_mut(name).expect("checked before growing");
        assert!(topic.is_placed() && !added.is_empty());
        for partition in &added {
            assert_eq!(
                partition.check(),
                Ok(()),
                "placement makes valid partitions"
            );
        }
        topic.partitions.extend(added);
        assert!(topic.partitions.len() <= TOPIC_PARTITIONS_MAX as usize);
        topic.partition_count = topic.partitions.len() as i32;
        self.version += 1;
    }

    /// Adds a topic (after [`MetadataImage::check_create_topic`]).
    pub fn create_topic(
        &mut self,
        name: &str,
        partition_count: i32,
        configs: BTreeMap<String, String>,
        topic_id: u128,
    ) {
        assert!(!self.topics.contains_key(name), "checked before creating");
        self.topics.insert(
            name.to_string(),
            TopicMetadata {
                topic_id,
                partition_count,
                configs,
                partitions: Vec::new(),
            },
        );
        self.version += 1;
    }

    pub fn delete_topic(&mut self, name: &str) -> Result<TopicMetadata, MetadataError> {
        let removed = self
            .topics
            .remove(name)
            .ok_or_else(|| MetadataError::UnknownTopic(name.to_string()))?;
        self.version += 1;
        Ok(removed)
    }

    /// CreatePartitions: grows a topic to `new_total` partitions; returns the old count.
    pub fn check_create_partitions(
        &self,
        name: &str,
        new_total: i32,
    ) -> Result<i32, MetadataError> {
        let topic = self
            .topics
            .get(name)
            .ok_or_else(|| MetadataError::UnknownTopic(name.to_string()))?;
        if new_total <= topic.partition_count {
            return Err(MetadataError::InvalidPartitions(format!(
                "topic '{name}' has {} partitions; the new count {new_total} must be larger",
                topic.partition_count
            )));
        }
        if new_total > TOPIC_PARTITIONS_MAX {
            return Err(MetadataError::InvalidPartitions(format!(
                "{new_total} exceeds {TOPIC_PARTITIONS_MAX}"
            )));
        }
        Ok(topic.partition_count)
    }

    /// Grows a topic of the single-node controller (unplaced); a placed topic grows with
    /// [`MetadataImage::add_placed_partitions`], and is refused here.
    pub fn create_partitions(&mut self, name: &str, new_total: i32) -> Result<i32, MetadataError> {
        let old = self.check_create_partitions(name, new_total)?;
        if self.topics.get(name).is_some_and(TopicMetadata::is_placed) {
            return Err(MetadataError::InvalidReplicaAssignment(format!(
                "topic '{name}' has placed partitions; new ones need replicas"
            )));
        }
        if let Some(topic) = self.topics.get_mut(name) {
            topic.partition_count = new_total;
        }
        self.version += 1;
        Ok(old)
    }

    /// The overrides a topic would have after `changes`; `incremental` false replaces them all
    /// (AlterConfigs), true edits them (IncrementalAlterConfigs). Checked against the defaults.
    pub fn altered_configs(
        &self,
        name: &str,
        changes: &[ConfigChange],
        incremental: bool,
        defaults: &[(String, String)],
    ) -> Result<BTreeMap<String, String>, MetadataError> {
        let topic = self
            .topics
            .get(name)
            .ok_or_else(|| MetadataError::UnknownTopic(name.to_string()))?;
        let mut configs = if incremental {
            topic.configs.clone()
        } else {
            BTreeMap::new()
        };
        for change in changes {
            match change {
                ConfigChange::Set(key, value) => {
                    configs.insert(key.clone(), value.clone());
                }
                ConfigChange::Delete(key) => {
                    configs.remove(key);
                }
                ConfigChange::Append(key, items) | ConfigChange::Subtract(key, items) => {
                    // The value in force now: this request's earlier changes, the topic's
                    // override, the broker's default, the engine's default.
                    let current = effective_log_config(defaults, &configs)?
                        .to_pairs()
                        .into_iter()
                        .find(|(name, _)| name == key)
                        .map(|(_, value)| split_list(&value))
                        .ok_or_else(|| MetadataError::InvalidConfig {
                            key: key.clone(),
                            reason: "unknown config".into(),
                        })?;
                    let mut list = current;
                    if matches!(change, ConfigChange::Append(..)) {
                        for item in items {
                            if !list.contains(item) {
                                list.push(item.clone());
                            }
                        }
                    } else {
                        list.retain(|item| !items.contains(item));
                    }
                    configs.insert(key.clone(), list.join(","));
                }
            }
        }
        effective_log_config(defaults, &configs)?;
        Ok(configs)
    }

    pub fn set_configs(&mut self, name: &str, configs: BTreeMap<String, String>) {
        if let Some(topic) = self.topics.get_mut(name) {
            topic.configs = configs;
            self.version += 1;
        }
    }

    /// Hands out the next producer id.
    pub fn allocate_producer_id(&mut self) -> i64 {
        let id = self.next_producer_id;
        self.next_producer_id += 1;
        self.version += 1;
        id
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("metadata always serializes")
    }

    /// Parses an image and checks what every change keeps true (pair assertions: a file
    /// edited by hand or damaged is an error here, not a panic later).
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let image: MetadataImage =
            serde_json::from_slice(bytes).map_err(|error| error.to_string())?;
        image.check()?;
        Ok(image)
    }

    /// The image's problems, or none: each placed topic has one valid registration per
    /// partition.
    pub fn check(&self) -> Result<(), String> {
        for (name, topic) in &self.topics {
            if topic.is_placed() && topic.partitions.len() != topic.partition_count as usize {
                return Err(format!(
                    "topic '{name}' has {} partitions but {} registrations",
                    topic.partition_count,
                    topic.partitions.len()
                ));
            }
            for (index, partition) in topic.partitions.iter().enumerate() {
                partition
                    .check()
                    .map_err(|reason| format!("partition {name}-{index}: {reason}"))?;
            }
        }
        Ok(())
    }
}

/// Kafka's bounds on a new topic's partition count (and [`TOPIC_PARTITIONS_MAX`]).
pub fn check_partition_count(partition_count: i32) -> Result<(), MetadataError> {
    if !(1..=TOPIC_PARTITIONS_MAX).contains(&partition_count) {
        return Err(MetadataError::InvalidPartitions(format!(
            "{partition_count} is outside 1..={TOPIC_PARTITIONS_MAX}"
        )));
    }
    Ok(())
}

/// The log config a topic runs with: engine defaults, then the broker's topic defaults, then the
/// topic's overrides. An unknown name or a bad value is an error naming the key.
pub fn effective_log_config(
    defaults: &[(String, String)],
    overrides: &BTreeMap<String, String>,
) -> Result<LogConfig, MetadataError> {
    let mut config = LogConfig::default();
    let pairs = defaults
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .chain(
            overrides
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_str())),
        );
    for (key, value) in pairs {
        config
            .set(key, value)
            .map_err(|error| MetadataError::InvalidConfig {
                key: key.to_string(),
                reason: match error {
                    ringlog_engine::Error::InvalidConfig { reason, .. } => reason,
                    other => other.to_string(),
                },
            })?;
    }
    Ok(config)
}

/// Kafka's rules: 1 to 249 characters of ASCII letters, digits, '.', '_' and '-'; not "." or "..".
pub fn validate_topic_name(name: &str) -> Result<(), MetadataError> {
    let invalid = |reason: &str| MetadataError::InvalidTopic {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(invalid("the name is empty"));
    }
    if name == "." || name == ".." {
        return Err(invalid("'.' and '..' are not allowed"));
    }
    if name.len() > TOPIC_NAME_LENGTH_MAX {
        return Err(invalid("longer than 249 characters"));
    }
    if !name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
    {
        return Err(invalid(
            "only ASCII letters, digits, '.', '_' and '-' are allowed",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> MetadataImage {
        MetadataImage::new("test-cluster".into())
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        for bad in ["", ".", "..", "a b", "é", "a/b", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn create_checks_and_applies() {
        let mut image = image();
        let none = BTreeMap::new();
        assert!(image.check_create_topic("t", 3, 1, &none, &[]).is_ok());
        assert_eq!(
            image.check_create_topic("t", 0, 1, &none, &[]),
            Err(MetadataError::InvalidPartitions(
                "0 is outside 1..=10000".into()
            ))
        );
        assert_eq!(
            image.check_create_topic("t", 1, 3, &none, &[]),
            Err(MetadataError::InvalidReplicationFactor(
                "3: this cluster has 1 broker".into()
            ))
        );
        let bad: BTreeMap<_, _> = [("retention.ms".to_string(), "soon".to_string())].into();
        assert!(matches!(
            image.check_create_topic("t", 1, 1, &bad, &[]),
            Err(MetadataError::InvalidConfig { .. })
        ));
        image.create_topic("t", 3, none.clone(), 7);
        assert_eq!(image.version, 1);
        assert_eq!(
            image.check_create_topic("t", 1, 1, &none, &[]),
            Err(MetadataError::TopicExists("t".into()))
        );
        assert_eq!(
            image.topic_by_id(7).map(|(name, _)| name.as_str()),
            Some("t")
        );
    }

    #[test]
    fn partitions_only_grow() {
        let mut image = image();
        image.create_topic("t", 2, BTreeMap::new(), 1);
        assert!(image.create_partitions("t", 2).is_err());
        assert_eq!(image.create_partitions("t", 5), Ok(2));
        assert_eq!(image.topic("t").map(|topic| topic.partition_count), Some(5));
        assert!(matches!(
            image.create_partitions("missing", 5),
            Err(MetadataError::UnknownTopic(_))
        ));
    }

    #[test]
    fn configs_replace_or_edit() {
        let mut image = image();
        let initial: BTreeMap<_, _> = [("retention.ms".to_string(), "1000".to_string())].into();
        image.create_topic("t", 1, initial, 1);
        let edit = [ConfigChange::Set("segment.bytes".into(), "1048576".into())];
        let edited = image.altered_configs("t", &edit, true, &[]).expect("valid");
        assert_eq!(edited.len(), 2);
        let replaced = image
            .altered_configs("t", &edit, false, &[])
            .expect("valid");
        assert_eq!(replaced.len(), 1);
        let delete = [ConfigChange::Delete("retention.ms".into())];
        assert!(image
            .altered_configs("t", &delete, true, &[])
            .expect("valid")
            .is_empty());
        let bad = [ConfigChange::Set("no.such.config".into(), "1".into())];
        assert!(image.altered_configs("t", &bad, true, &[]).is_err());
    }

    #[test]
    fn list_changes_start_from_the_value_in_force() {
        let mut image = image();
        image.create_topic("plain", 1, BTreeMap::new(), 2);
        let compacted: BTreeMap<_, _> =
            [("cleanup.policy".to_string(), "compact".to_string())].into();
        image.create_topic("compacted", 1, compacted, 3);
        let broker_default = [("cleanup.policy".to_string(), "compact,delete".to_string())];
        let policy =
            |image: &MetadataImage, topic, change: ConfigChange, defaults: &[(String, String)]| {
                image
                    .altered_configs(topic, &[change], true, defaults)
                    .map(|configs| configs.get("cleanup.policy").cloned().unwrap_or_default())
            };
        let append = |item: &str| ConfigChange::Append("cleanup.policy".into(), vec![item.into()]);
        let subtract =
            |item: &str| ConfigChange::Subtract("cleanup.policy".into(), vec![item.into()]);
        assert_eq!(
            policy(&image, "plain", append("compact"), &[]),
            Ok("delete,compact".into())
        );
        assert_eq!(
            policy(&image, "plain", append("delete"), &[]),
            Ok("delete".into())
        );
        assert_eq!(
            policy(&image, "plain", subtract("compact"), &broker_default),
            Ok("delete".into())
        );
        assert_eq!(
            policy(&image, "compacted", append("delete"), &broker_default),
            Ok("compact,delete".into())
        );
        // Changes of one request build on each other.
        let both = [append("compact"), subtract("delete")];
        let configs = image
            .altered_configs("plain", &both, true, &[])
            .expect("valid");
        assert_eq!(
            configs.get("cleanup.policy").map(String::as_str),
            Some("compact")
        );
    }

    #[test]
    fn round_trips_through_json() {
        let mut image = image();
        image.create_topic("t", 2, BTreeMap::new(), u128::MAX - 3);
        image.allocate_producer_id();
        let back = MetadataImage::from_json(&image.to_json()).expect("parses");
        assert_eq!(back, image);
        // An unplaced topic is written as before partitions were registered.
        assert!(!String::from_utf8_lossy(&image.to_json()).contains("partitions\":"));
    }

    #[test]
    fn placed_topics_round_trip_and_are_checked_when_read() {
        let mut image = image();
        let partitions = vec![
            PartitionRegistration::new(vec![1, 2, 3], vec![1, 2, 3]),
            PartitionRegistration::new(vec![2, 3, 1], vec![3]),
        ];
        image.create_placed_topic("t", BTreeMap::new(), 5, partitions);
        assert_eq!(image.partition("t", 1).map(|p| p.leader), Some(3));
        assert_eq!(image.partition("t", 2), None);
        assert_eq!(image.partition("t", -1), None);
        let back = MetadataImage::from_json(&image.to_json()).expect("parses");
        assert_eq!(back, image);
        image.partition_mut("t", 0).expect("placed").leader = 9;
        let error = MetadataImage::from_json(&image.to_json()).expect_err("leader outside ISR");
        assert!(error.contains("leader 9 is not in the ISR"), "{error}");
        // Placed topics grow only with replicas.
        image.partition_mut("t", 0).expect("placed").leader = 1;
        assert!(matches!(
            image.create_partitions("t", 3),
            Err(MetadataError::InvalidReplicaAssignment(_))
        ));
        image.add_placed_partitions("t", vec![PartitionRegistration::new(vec![3], vec![3])]);
        assert_eq!(image.topic("t").map(|topic| topic.partition_count), Some(3));
    }

    /// A `cluster-metadata.json` as the single-node controller wrote it before partitions were
    /// registered (made by that code's `to_json`) still loads, unplaced, and is written back
    /// byte for byte.
    #[test]
    fn a_file_from_before_partition_registrations_loads() {
        let before = include_str!("../tests/fixtures/cluster-metadata-before-placement.json");
        let image = MetadataImage::from_json(before.as_bytes()).expect("loads");
        let orders = image.topic("orders").expect("present");
        assert_eq!(orders.partition_count, 3);
        assert!(!orders.is_placed());
        assert_eq!(
            image.topic("__consumer_offsets").map(|t| t.partition_count),
            Some(50)
        );
        assert_eq!(image.next_producer_id, 1);
        assert_eq!(String::from_utf8_lossy(&image.to_json()), before.trim_end());
    }
}
