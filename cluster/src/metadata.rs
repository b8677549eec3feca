//! The cluster's metadata as a plain value: topics, their partitions and config overrides, the
//! cluster id, and the producer-id counter. Changes are pure functions that validate and apply
//! one command, so the same rules serve a single-node controller today and a replicated
//! state machine later.

use std::collections::BTreeMap;

use ringlog_engine::config::LogConfig;
use serde::{Deserialize, Serialize};

/// Kafka's limit on a topic name's length (249: a partition directory name stays under 255).
pub const TOPIC_NAME_LENGTH_MAX: usize = 249;

/// The most partitions one topic may have. Kafka has no hard limit; each partition here is a
/// directory, files and a preallocated segment, so a request for millions is a mistake, not a
/// plan, and is refused rather than filling the disk.
pub const TOPIC_PARTITIONS_MAX: i32 = 10_000;

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
    #[error("invalid replication factor {0}: this cluster has 1 broker")]
    InvalidReplicationFactor(i32),
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

/// One topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMetadata {
    /// Kafka's topic id (a UUID), as a 128-bit number.
    pub topic_id: u128,
    pub partition_count: i32,
    /// Config overrides under Kafka's names; the rest come from the broker's defaults.
    pub configs: BTreeMap<String, String>,
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

    /// Validates a CreateTopics entry without applying it (also its `validate_only` mode).
    pub fn check_create_topic(
        &self,
        name: &str,
        partition_count: i32,
        replication_factor: i32,
        configs: &BTreeMap<String, String>,
        defaults: &[(String, String)],
    ) -> Result<(), MetadataError> {
        validate_topic_name(name)?;
        if self.topics.contains_key(name) {
            return Err(MetadataError::TopicExists(name.to_string()));
        }
        if !(1..=TOPIC_PARTITIONS_MAX).contains(&partition_count) {
            return Err(MetadataError::InvalidPartitions(format!(
                "{partition_count} is outside 1..={TOPIC_PARTITIONS_MAX}"
            )));
        }
        if replication_factor != 1 {
            return Err(MetadataError::InvalidReplicationFactor(replication_factor));
        }
        effective_log_config(defaults, configs)?;
        Ok(())
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

    pub fn create_partitions(&mut self, name: &str, new_total: i32) -> Result<i32, MetadataError> {
        let old = self.check_create_partitions(name, new_total)?;
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

    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|error| error.to_string())
    }
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
            Err(MetadataError::InvalidReplicationFactor(3))
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
    }
}
