//! DescribeConfigs: a topic's effective configs (engine defaults, then the broker's topic
//! defaults, then the topic's overrides), each with where its value came from and, on request,
//! the synonyms it overrides; and this broker's static settings.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use ringlog_cluster::metadata::{effective_log_config, validate_topic_name};
use ringlog_engine::config::LogConfig;

use super::str_bytes;
use crate::broker::Broker;
use crate::codes::{KafkaError, NONE};
use crate::BrokerConfig;

/// Kafka's `ConfigResource.Type` ids of the resources Ringlog has configs for.
pub const RESOURCE_TYPE_TOPIC: i8 = 2;
pub const RESOURCE_TYPE_BROKER: i8 = 4;

/// Kafka's `ConfigSource` ids: where a value comes from.
pub const SOURCE_TOPIC_CONFIG: i8 = 1;
pub const SOURCE_STATIC_BROKER_CONFIG: i8 = 4;
pub const SOURCE_DEFAULT_CONFIG: i8 = 5;

/// Kafka's `ConfigType` ids (DescribeConfigs v3+), for the types Ringlog's configs have.
pub const TYPE_BOOLEAN: i8 = 1;
pub const TYPE_STRING: i8 = 2;
pub const TYPE_INT: i8 = 3;
pub const TYPE_LONG: i8 = 5;
pub const TYPE_LIST: i8 = 7;

/// Each topic config Ringlog understands: its name, the broker config that sets its default in
/// Kafka (what DescribeConfigs lists as its synonym) and its type, all as Kafka has them.
pub const TOPIC_CONFIGS: &[(&str, &str, i8)] = &[
    ("segment.bytes", "log.segment.bytes", TYPE_INT),
    ("segment.ms", "log.roll.ms", TYPE_LONG),
    ("retention.ms", "log.retention.ms", TYPE_LONG),
    ("retention.bytes", "log.retention.bytes", TYPE_LONG),
    ("flush.messages", "log.flush.interval.messages", TYPE_LONG),
    ("flush.ms", "log.flush.interval.ms", TYPE_LONG),
    ("max.message.bytes", "message.max.bytes", TYPE_INT),
    ("index.interval.bytes", "log.index.interval.bytes", TYPE_INT),
    ("cleanup.policy", "log.cleanup.policy", TYPE_LIST),
    (
        "message.timestamp.type",
        "log.message.timestamp.type",
        TYPE_STRING,
    ),
    ("min.insync.replicas", "min.insync.replicas", TYPE_INT),
    (
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
        TYPE_BOOLEAN,
    ),
];

/// The Kafka type of topic config `name` (STRING for a name Ringlog does not know).
pub fn topic_config_type(name: &str) -> i8 {
    TOPIC_CONFIGS
        .iter()
        .find(|(topic_name, _, _)| *topic_name == name)
        .map_or(TYPE_STRING, |(_, _, config_type)| *config_type)
}

/// The broker config Kafka derives topic config `name`'s default from.
fn broker_synonym(name: &str) -> &str {
    TOPIC_CONFIGS
        .iter()
        .find(|(topic_name, _, _)| *topic_name == name)
        .map_or(name, |(_, broker_name, _)| broker_name)
}

/// One config of a response, before encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Described {
    name: String,
    value: String,
    read_only: bool,
    source: i8,
    config_type: i8,
    /// (name, value, source), most specific first; the first is the config itself.
    synonyms: Vec<(String, String, i8)>,
}

pub async fn handle(
    broker: &Rc<Broker>,
    request: DescribeConfigsRequest,
    _version: i16,
) -> DescribeConfigsResponse {
    let image = broker.metadata();
    let include_synonyms = request.include_synonyms;
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let name = resource.resource_name.to_string();
            let keys: Option<Vec<String>> = resource
                .configuration_keys
                .map(|keys| keys.iter().map(ToString::to_string).collect());
            let described = match resource.resource_type {
                RESOURCE_TYPE_TOPIC => {
                    if let Err(error) = validate_topic_name(&name) {
                        Err((KafkaError::InvalidTopicException, error.to_string()))
                    } else {
                        match image.topic(&name) {
                            Some(topic) => {
                                describe_topic(&broker.config.topic_defaults, &topic.configs)
                            }
                            None => Err((
                                KafkaError::UnknownTopicOrPartition,
                                format!("topic '{name}' does not exist"),
                            )),
                        }
                    }
                }
                RESOURCE_TYPE_BROKER => describe_broker(&broker.config, &name),
                other => Err((
                    KafkaError::InvalidRequest,
                    format!("resource type {other} has no configs here; only topics (2) and brokers (4)"),
                )),
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name);
            match described {
                Ok(configs) => result
                    .with_error_code(NONE)
                    .with_error_message(None)
                    .with_configs(
                        filter(configs, keys.as_deref())
                            .into_iter()
                            .map(|config| encode(config, include_synonyms))
                            .collect(),
                    ),
                Err((error, message)) => result
                    .with_error_code(error.code())
                    .with_error_message(Some(str_bytes(message))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// Keeps the configs `keys` names; no keys (null or empty, as Kafka reads both) keeps all.
/// Names that match nothing are left out, as Kafka does.
fn filter(configs: Vec<Described>, keys: Option<&[String]>) -> Vec<Described> {
    match keys {
        Some(keys) if !keys.is_empty() => configs
            .into_iter()
            .filter(|config| keys.contains(&config.name))
            .collect(),
        _ => configs,
    }
}

fn encode(config: Described, include_synonyms: bool) -> DescribeConfigsResourceResult {
    let synonyms = if include_synonyms {
        config
            .synonyms
            .into_iter()
            .map(|(name, value, source)| {
                DescribeConfigsSynonym::default()
                    .with_name(str_bytes(name))
                    .with_value(Some(str_bytes(value)))
                    .with_source(source)
            })
            .collect()
    } else {
        Vec::new()
    };
    DescribeConfigsResourceResult::default()
        .with_name(str_bytes(config.name))
        .with_value(Some(str_bytes(config.value)))
        .with_read_only(config.read_only)
        .with_config_source(config.source)
        .with_is_sensitive(false)
        .with_synonyms(synonyms)
        .with_config_type(config.config_type)
        .with_documentation(None::<StrBytes>)
}

/// A topic's configs. `defaults` are the broker's topic defaults, under topic config names.
fn describe_topic(
    defaults: &[(String, String)],
    overrides: &BTreeMap<String, String>,
) -> Result<Vec<Described>, (KafkaError, String)> {
    let invalid =
        |error: ringlog_cluster::MetadataError| (KafkaError::InvalidConfig, error.to_string());
    let effective = effective_log_config(defaults, overrides).map_err(invalid)?;
    let broker_level = effective_log_config(defaults, &BTreeMap::new()).map_err(invalid)?;
    let engine_defaults = LogConfig::default().to_pairs();
    let broker_pairs = broker_level.to_pairs();
    let described = effective
        .to_pairs()
        .into_iter()
        .zip(broker_pairs)
        .zip(engine_defaults)
        .map(|(((name, value), (_, broker_value)), (_, default_value))| {
            let overridden = overrides.contains_key(name);
            let broker_set = defaults.iter().any(|(key, _)| key == name);
            let synonym = broker_synonym(name).to_string();
            let mut synonyms = Vec::new();
            if overridden {
                synonyms.push((name.to_string(), value.clone(), SOURCE_TOPIC_CONFIG));
            }
            if broker_set {
                synonyms.push((synonym.clone(), broker_value, SOURCE_STATIC_BROKER_CONFIG));
            }
            synonyms.push((synonym, default_value, SOURCE_DEFAULT_CONFIG));
            let source = if overridden {
                SOURCE_TOPIC_CONFIG
            } else if broker_set {
                SOURCE_STATIC_BROKER_CONFIG
            } else {
                SOURCE_DEFAULT_CONFIG
            };
            Described {
                name: name.to_string(),
                value,
                read_only: false,
                source,
                config_type: topic_config_type(name),
                synonyms,
            }
        })
        .collect();
    Ok(described)
}

/// This broker's settings. `name` is the resource name: this broker's id, or empty for the
/// cluster-wide defaults, which on a single node are the same values. None of them can be
/// changed at run time (Ringlog has no dynamic broker configs), so all are read-only.
fn describe_broker(
    config: &BrokerConfig,
    name: &str,
) -> Result<Vec<Described>, (KafkaError, String)> {
    if !name.is_empty() {
        match name.parse::<i32>() {
            Ok(id) if id == config.node_id => {}
            Ok(id) => {
                return Err((
                    KafkaError::InvalidRequest,
                    format!(
                        "unexpected broker id, expected {} but received {id}",
                        config.node_id
                    ),
                ))
            }
            Err(_) => {
                return Err((
                    KafkaError::InvalidRequest,
                    format!("broker id must be an integer, not '{name}'"),
                ))
            }
        }
    }
    let statics = [
        ("node.id", config.node_id.to_string(), TYPE_INT),
        ("broker.id", config.node_id.to_string(), TYPE_INT),
        (
            "log.dirs",
            config.data_dir.display().to_string(),
            TYPE_STRING,
        ),
        (
            "num.partitions",
            config.num_partitions.to_string(),
            TYPE_INT,
        ),
        (
            "auto.create.topics.enable",
            config.auto_create_topics.to_string(),
            TYPE_BOOLEAN,
        ),
        (
            "socket.request.max.bytes",
            config.socket_request_max_bytes.to_string(),
            TYPE_INT,
        ),
    ];
    let mut described: Vec<Described> = statics
        .into_iter()
        .map(|(name, value, config_type)| Described {
            name: name.to_string(),
            value: value.clone(),
            read_only: true,
            source: SOURCE_STATIC_BROKER_CONFIG,
            config_type,
            synonyms: vec![(name.to_string(), value, SOURCE_STATIC_BROKER_CONFIG)],
        })
        .collect();
    described.push(Described {
        name: "default.replication.factor".into(),
        value: "1".into(),
        read_only: true,
        source: SOURCE_DEFAULT_CONFIG,
        config_type: TYPE_INT,
        synonyms: vec![(
            "default.replication.factor".into(),
            "1".into(),
            SOURCE_DEFAULT_CONFIG,
        )],
    });
    // The broker-level defaults of topic configs, under their broker names.
    for topic_config in describe_topic(&config.topic_defaults, &BTreeMap::new())? {
        let broker_name = broker_synonym(&topic_config.name).to_string();
        let synonyms = topic_config
            .synonyms
            .into_iter()
            .map(|(_, value, source)| (broker_name.clone(), value, source))
            .collect();
        described.push(Described {
            name: broker_name,
            read_only: true,
            synonyms,
            ..topic_config
        });
    }
    Ok(described)
}

#[cfg(test)]
mod tests {
    use ringlog_engine::config::LOG_CONFIG_KEYS;

    use super::*;

    fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn every_log_config_has_a_kafka_type_and_synonym() {
        let names: Vec<&str> = TOPIC_CONFIGS.iter().map(|(name, _, _)| *name).collect();
        assert_eq!(names, LOG_CONFIG_KEYS);
        let described: Vec<String> = LogConfig::default()
            .to_pairs()
            .into_iter()
            .map(|(name, _)| name.to_string())
            .collect();
        assert_eq!(
            described, LOG_CONFIG_KEYS,
            "to_pairs lists every key in the same order"
        );
        assert_eq!(topic_config_type("retention.ms"), TYPE_LONG);
        assert_eq!(topic_config_type("segment.bytes"), TYPE_INT);
        assert_eq!(topic_config_type("cleanup.policy"), TYPE_LIST);
        assert_eq!(
            topic_config_type("unclean.leader.election.enable"),
            TYPE_BOOLEAN
        );
        assert_eq!(topic_config_type("message.timestamp.type"), TYPE_STRING);
    }

    #[test]
    fn topic_sources_follow_precedence() {
        let defaults = pairs(&[("retention.ms", "5000"), ("segment.bytes", "1048576")]);
        let overrides: BTreeMap<String, String> =
            pairs(&[("retention.ms", "1000")]).into_iter().collect();
        let described = describe_topic(&defaults, &overrides).expect("valid");
        let find = |name: &str| {
            described
                .iter()
                .find(|config| config.name == name)
                .cloned()
                .expect("listed")
        };
        let retention = find("retention.ms");
        assert_eq!(
            (retention.value.as_str(), retention.source),
            ("1000", SOURCE_TOPIC_CONFIG)
        );
        assert_eq!(
            retention.synonyms,
            vec![
                ("retention.ms".into(), "1000".into(), SOURCE_TOPIC_CONFIG),
                (
                    "log.retention.ms".into(),
                    "5000".into(),
                    SOURCE_STATIC_BROKER_CONFIG
                ),
                (
                    "log.retention.ms".into(),
                    "604800000".into(),
                    SOURCE_DEFAULT_CONFIG
                ),
            ]
        );
        let segment = find("segment.bytes");
        assert_eq!(
            (segment.value.as_str(), segment.source),
            ("1048576", SOURCE_STATIC_BROKER_CONFIG)
        );
        let policy = find("cleanup.policy");
        assert_eq!(
            (policy.value.as_str(), policy.source, policy.config_type),
            ("delete", SOURCE_DEFAULT_CONFIG, TYPE_LIST)
        );
        assert!(described.iter().all(|config| !config.read_only));
    }

    #[test]
    fn filter_keeps_named_configs_or_all() {
        let described = describe_topic(&[], &BTreeMap::new()).expect("valid");
        let count = described.len();
        assert_eq!(filter(described.clone(), None).len(), count);
        assert_eq!(filter(described.clone(), Some(&[])).len(), count);
        let keys = ["retention.ms".to_string(), "no.such.config".to_string()];
        let kept = filter(described, Some(&keys));
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].name, "retention.ms");
    }

    #[test]
    fn broker_resource_is_this_node_or_the_default() {
        let mut config = BrokerConfig::new("/data");
        config.node_id = 3;
        config.topic_defaults = pairs(&[("retention.ms", "5000")]);
        for name in ["3", ""] {
            let described = describe_broker(&config, name).expect("this broker");
            let node = described
                .iter()
                .find(|entry| entry.name == "node.id")
                .expect("listed");
            assert_eq!(
                (node.value.as_str(), node.source),
                ("3", SOURCE_STATIC_BROKER_CONFIG)
            );
            let retention = described
                .iter()
                .find(|entry| entry.name == "log.retention.ms")
                .expect("listed");
            assert_eq!(retention.value, "5000");
            assert_eq!(retention.source, SOURCE_STATIC_BROKER_CONFIG);
            assert!(described.iter().all(|entry| entry.read_only));
        }
        for name in ["4", "x"] {
            assert_eq!(
                describe_broker(&config, name).map_err(|(error, _)| error),
                Err(KafkaError::InvalidRequest)
            );
        }
    }

    #[test]
    fn synonyms_only_when_asked() {
        let described = describe_topic(&[], &BTreeMap::new()).expect("valid");
        let first = described[0].clone();
        assert!(encode(first.clone(), false).synonyms.is_empty());
        assert_eq!(encode(first, true).synonyms.len(), 1);
    }
}
