//! CreateTopics (with `validate_only`), and the auto-creation Metadata and Produce use.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, TopicName};

use super::{str_bytes, uuid};
use crate::broker::Broker;
use crate::codes::{KafkaError, NONE};
use crate::messages::{
    BrokerRequest, BrokerResponse, ControllerRequest, ControllerResponse, TopicSpec,
};
use ringlog_engine::ShardId;

/// The shard the single-node controller runs on.
pub const CONTROLLER_SHARD: ShardId = ShardId(0);

/// `num_partitions` / `replication_factor` of -1: use the broker's default (KIP-464).
const USE_BROKER_DEFAULT: i32 = -1;

/// `config_source` of a topic-level override in CreateTopics / DescribeConfigs responses.
const CONFIG_SOURCE_TOPIC: i8 = 1;
/// `config_source` of a value that is the broker's default.
const CONFIG_SOURCE_DEFAULT: i8 = 5;

pub async fn handle(
    broker: &Rc<Broker>,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut results: Vec<Option<CreatableTopicResult>> = Vec::new();
    let mut specs = Vec::new();
    let mut positions = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        if !seen.insert(name.clone()) {
            results.push(Some(failed(
                &name,
                KafkaError::InvalidRequest,
                "topic listed twice",
            )));
            continue;
        }
        if !topic.assignments.is_empty() {
            results.push(Some(failed(
                &name,
                KafkaError::InvalidRequest,
                "manual replica assignments are not supported on a single-node cluster",
            )));
            continue;
        }
        let mut configs = BTreeMap::new();
        for config in topic.configs {
            if let Some(value) = config.value {
                configs.insert(config.name.to_string(), value.to_string());
            }
        }
        let partition_count = if topic.num_partitions == USE_BROKER_DEFAULT {
            broker.config.num_partitions
        } else {
            topic.num_partitions
        };
        let replication_factor = if i32::from(topic.replication_factor) == USE_BROKER_DEFAULT {
            1
        } else {
            i32::from(topic.replication_factor)
        };
        positions.push(results.len());
        results.push(None);
        specs.push(TopicSpec {
            name,
            partition_count,
            replication_factor,
            configs,
        });
    }
    let outcomes = create(broker, specs.clone(), request.validate_only).await;
    for ((position, spec), outcome) in positions.into_iter().zip(specs).zip(outcomes) {
        results[position] = Some(match outcome {
            Ok((topic_id, partitions)) => {
                let config = ringlog_cluster::metadata::effective_log_config(
                    &broker.config.topic_defaults,
                    &spec.configs,
                )
                .unwrap_or_default();
                let configs = (version >= 5).then(|| {
                    config
                        .to_pairs()
                        .into_iter()
                        .map(|(key, value)| {
                            let source = if spec.configs.contains_key(key) {
                                CONFIG_SOURCE_TOPIC
                            } else {
                                CONFIG_SOURCE_DEFAULT
                            };
                            CreatableTopicConfigs::default()
                                .with_name(str_bytes(key))
                                .with_value(Some(str_bytes(value)))
                                .with_read_only(false)
                                .with_config_source(source)
                                .with_is_sensitive(false)
                        })
                        .collect()
                });
                CreatableTopicResult::default()
                    .with_name(TopicName(str_bytes(spec.name)))
                    .with_topic_id(uuid(topic_id))
                    .with_error_code(NONE)
                    .with_num_partitions(partitions)
                    .with_replication_factor(spec.replication_factor as i16)
                    .with_configs(configs)
            }
            Err((error, message)) => failed(&spec.name, error, &message),
        });
    }
    CreateTopicsResponse::default().with_topics(results.into_iter().flatten().collect())
}

fn failed(name: &str, error: KafkaError, message: &str) -> CreatableTopicResult {
    CreatableTopicResult::default()
        .with_name(TopicName(str_bytes(name)))
        .with_error_code(error.code())
        .with_error_message(Some(str_bytes(message)))
        .with_num_partitions(-1)
        .with_replication_factor(-1)
        .with_configs(None)
}

/// Asks the controller to create `specs`; per topic, its id and partition count or the error.
pub async fn create(
    broker: &Rc<Broker>,
    specs: Vec<TopicSpec>,
    validate_only: bool,
) -> Vec<Result<(u128, i32), (KafkaError, String)>> {
    let count = specs.len();
    if count == 0 {
        return Vec::new();
    }
    let request = BrokerRequest::Controller(ControllerRequest::CreateTopics {
        topics: specs,
        validate_only,
    });
    match broker.call(CONTROLLER_SHARD, request).await {
        Some(BrokerResponse::Controller(ControllerResponse::CreateTopics(results))) => results
            .into_iter()
            .map(|result| result.map_err(|refusal| (refusal.error, refusal.message)))
            .collect(),
        _ => (0..count)
            .map(|_| {
                Err((
                    KafkaError::NotController,
                    "the controller is unavailable".to_string(),
                ))
            })
            .collect(),
    }
}

/// Creates topics that do not exist yet with the broker's defaults (Kafka's
/// `auto.create.topics.enable`). Names that are invalid or already exist are skipped.
pub async fn auto_create(broker: &Rc<Broker>, names: Vec<String>) {
    let specs = names
        .into_iter()
        .filter(|name| ringlog_cluster::metadata::validate_topic_name(name).is_ok())
        .map(|name| TopicSpec {
            name,
            partition_count: broker.config.num_partitions,
            replication_factor: 1,
            configs: BTreeMap::new(),
        })
        .collect();
    for outcome in create(broker, specs, false).await {
        if let Err((error, message)) = outcome {
            if error != KafkaError::TopicAlreadyExists {
                tracing::warn!(?error, %message, "topic auto-creation failed");
            }
        }
    }
}
