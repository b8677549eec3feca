//! IncrementalAlterConfigs: edits a topic's config overrides key by key (SET, DELETE, and
//! APPEND / SUBTRACT for list configs), through the controller (with `validate_only`).

use std::rc::Rc;

use kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use ringlog_cluster::metadata::split_list;
use ringlog_cluster::{ConfigChange, MetadataImage};

use super::alter_configs::{alter, check_unique_keys, code_and_message, null_value, Resource};
use super::describe_configs::{topic_config_type, RESOURCE_TYPE_TOPIC, TYPE_LIST};
use super::str_bytes;
use crate::broker::Broker;
use crate::codes::KafkaError;
use crate::messages::Refusal;

/// Kafka's `AlterConfigOp.OpType` ids.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

pub async fn handle(
    broker: &Rc<Broker>,
    request: IncrementalAlterConfigsRequest,
    _version: i16,
) -> IncrementalAlterConfigsResponse {
    let image = broker.metadata();
    let resources: Vec<Resource> = request
        .resources
        .into_iter()
        .map(|resource| {
            let name = resource.resource_name.to_string();
            let changes = if resource.resource_type == RESOURCE_TYPE_TOPIC {
                check_topic(&image, &name).and_then(|()| changes(&resource.configs))
            } else {
                // `alter` refuses the resource by its type before looking at its changes.
                Ok(Vec::new())
            };
            Resource {
                resource_type: resource.resource_type,
                name,
                changes,
            }
        })
        .collect();
    let outcomes = alter(broker, &resources, true, request.validate_only).await;
    let responses = resources
        .into_iter()
        .zip(outcomes)
        .map(|(resource, outcome)| {
            let (code, message) = code_and_message(outcome);
            AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(str_bytes(resource.name))
                .with_error_code(code)
                .with_error_message(message.map(str_bytes))
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// An unknown topic is reported as such before its operations are looked at, as Kafka does.
fn check_topic(image: &MetadataImage, name: &str) -> Result<(), Refusal> {
    match image.topic(name) {
        Some(_) => Ok(()),
        None => Err(Refusal {
            error: KafkaError::UnknownTopicOrPartition,
            message: format!("topic '{name}' does not exist"),
        }),
    }
}

/// The override changes `configs` ask for. The controller resolves list changes against the
/// topic's value when it applies them and checks the resulting values; this checks the
/// operations.
fn changes(configs: &[AlterableConfig]) -> Result<Vec<ConfigChange>, Refusal> {
    check_unique_keys(configs.iter().map(|config| config.name.as_str()))?;
    configs
        .iter()
        .map(|config| {
            let key = config.name.to_string();
            let operation = config.config_operation;
            if !matches!(operation, OP_SET | OP_DELETE | OP_APPEND | OP_SUBTRACT) {
                return Err(Refusal {
                    error: KafkaError::InvalidRequest,
                    message: format!("unknown config operation {operation} for config '{key}'"),
                });
            }
            if operation == OP_DELETE {
                return Ok(ConfigChange::Delete(key));
            }
            let Some(value) = config.value.as_ref().map(ToString::to_string) else {
                return Err(null_value(&key));
            };
            if operation == OP_SET {
                return Ok(ConfigChange::Set(key, value));
            }
            if topic_config_type(&key) != TYPE_LIST {
                let verb = if operation == OP_APPEND {
                    "append"
                } else {
                    "subtract"
                };
                return Err(Refusal {
                    error: KafkaError::InvalidConfig,
                    message: format!(
                        "config value {verb} is not allowed for config '{key}': it is not a list"
                    ),
                });
            }
            let items = split_list(&value);
            if operation == OP_APPEND {
                Ok(ConfigChange::Append(key, items))
            } else {
                Ok(ConfigChange::Subtract(key, items))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {

    use super::*;

    fn op(name: &str, operation: i8, value: Option<&str>) -> AlterableConfig {
        AlterableConfig::default()
            .with_name(str_bytes(name))
            .with_config_operation(operation)
            .with_value(value.map(str_bytes))
    }

    #[test]
    fn operations_map_to_changes() {
        let table: Vec<(AlterableConfig, ConfigChange)> = vec![
            (
                op("retention.ms", OP_SET, Some("1000")),
                ConfigChange::Set("retention.ms".into(), "1000".into()),
            ),
            (
                op("retention.ms", OP_DELETE, None),
                ConfigChange::Delete("retention.ms".into()),
            ),
            (
                op("segment.ms", OP_DELETE, Some("ignored")),
                ConfigChange::Delete("segment.ms".into()),
            ),
            (
                op("cleanup.policy", OP_APPEND, Some("compact, delete")),
                ConfigChange::Append(
                    "cleanup.policy".into(),
                    vec!["compact".into(), "delete".into()],
                ),
            ),
            (
                op("cleanup.policy", OP_SUBTRACT, Some("delete")),
                ConfigChange::Subtract("cleanup.policy".into(), vec!["delete".into()]),
            ),
        ];
        for (config, expected) in table {
            let name = config.name.to_string();
            let got = changes(&[config]).map_err(|refusal| refusal.message);
            assert_eq!(got, Ok(vec![expected]), "{name}");
        }
    }

    #[test]
    fn bad_operations_are_refused() {
        let table: Vec<(AlterableConfig, KafkaError)> = vec![
            (
                op("retention.ms", OP_APPEND, Some("1")),
                KafkaError::InvalidConfig,
            ),
            (
                op("retention.ms", OP_SUBTRACT, Some("1")),
                KafkaError::InvalidConfig,
            ),
            (
                op("no.such.config", OP_APPEND, Some("1")),
                KafkaError::InvalidConfig,
            ),
            (op("retention.ms", OP_SET, None), KafkaError::InvalidRequest),
            (
                op("cleanup.policy", OP_APPEND, None),
                KafkaError::InvalidRequest,
            ),
            (op("retention.ms", 9, Some("1")), KafkaError::InvalidRequest),
        ];
        for (config, expected) in table {
            let name = format!("{} op {}", config.name, config.config_operation);
            let got = changes(&[config]).map_err(|refusal| refusal.error);
            assert_eq!(got, Err(expected), "{name}");
        }
        let twice = [
            op("retention.ms", OP_SET, Some("1")),
            op("retention.ms", OP_DELETE, None),
        ];
        let got = changes(&twice).map_err(|refusal| refusal.error);
        assert_eq!(got, Err(KafkaError::InvalidRequest));
    }

    #[test]
    fn unknown_topics_are_reported_first() {
        let image = MetadataImage::new("cluster".into());
        assert!(check_topic(&image, "missing").is_err());
    }
}
