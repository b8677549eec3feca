//! AlterConfigs: replaces all of a topic's config overrides with the ones given (keys left out
//! go back to their defaults), through the controller (with `validate_only`). Also the checks
//! and the controller call IncrementalAlterConfigs shares. Brokers have no dynamic configs.

use std::collections::HashSet;
use std::rc::Rc;

use kafka_protocol::messages::alter_configs_request::AlterableConfig;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use ringlog_cluster::ConfigChange;

use super::describe_configs::{RESOURCE_TYPE_BROKER, RESOURCE_TYPE_TOPIC};
use super::str_bytes;
use crate::broker::Broker;
use crate::codes::{KafkaError, NONE};
use crate::messages::{ControllerRequest, Refusal};

pub async fn handle(
    broker: &Rc<Broker>,
    request: AlterConfigsRequest,
    _version: i16,
) -> AlterConfigsResponse {
    let resources: Vec<Resource> = request
        .resources
        .into_iter()
        .map(|resource| Resource {
            resource_type: resource.resource_type,
            name: resource.resource_name.to_string(),
            changes: changes(&resource.configs),
        })
        .collect();
    let outcomes = alter(broker, &resources, false, request.validate_only).await;
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
    AlterConfigsResponse::default().with_responses(responses)
}

/// One resource of an AlterConfigs or IncrementalAlterConfigs request, its configs turned into
/// changes of the topic's overrides (or why they cannot be).
pub(crate) struct Resource {
    pub resource_type: i8,
    pub name: String,
    pub changes: Result<Vec<ConfigChange>, Refusal>,
}

/// The overrides AlterConfigs sets: every config given, each with a value.
fn changes(configs: &[AlterableConfig]) -> Result<Vec<ConfigChange>, Refusal> {
    check_unique_keys(configs.iter().map(|config| config.name.as_str()))?;
    configs
        .iter()
        .map(|config| match &config.value {
            Some(value) => Ok(ConfigChange::Set(
                config.name.to_string(),
                value.to_string(),
            )),
            None => Err(null_value(&config.name)),
        })
        .collect()
}

pub(crate) fn null_value(key: &str) -> Refusal {
    Refusal {
        error: KafkaError::InvalidRequest,
        message: format!("null value not supported for config '{key}'"),
    }
}

/// Kafka refuses a resource that names a config twice.
pub(crate) fn check_unique_keys<'a>(keys: impl Iterator<Item = &'a str>) -> Result<(), Refusal> {
    let mut seen = HashSet::new();
    let repeated: Vec<&str> = keys.filter(|key| !seen.insert(*key)).collect();
    if repeated.is_empty() {
        Ok(())
    } else {
        Err(Refusal {
            error: KafkaError::InvalidRequest,
            message: format!("duplicate config keys: {}", repeated.join(", ")),
        })
    }
}

/// The error code and message of a resource's outcome.
pub(crate) fn code_and_message(outcome: Result<(), Refusal>) -> (i16, Option<String>) {
    match outcome {
        Ok(()) => (NONE, None),
        Err(refusal) => (refusal.error.code(), Some(refusal.message)),
    }
}

/// Checks each resource (only topics have alterable configs; a resource may appear once) and
/// sends the topics' changes to the controller in one command. Per resource, in order, whether
/// its configs were (or, validating only, would be) changed.
pub(crate) async fn alter(
    broker: &Rc<Broker>,
    resources: &[Resource],
    incremental: bool,
    validate_only: bool,
) -> Vec<Result<(), Refusal>> {
    let mut counts: std::collections::HashMap<(i8, &str), usize> = Default::default();
    for resource in resources {
        *counts
            .entry((resource.resource_type, resource.name.as_str()))
            .or_default() += 1;
    }
    let mut early: Vec<Option<Refusal>> = Vec::with_capacity(resources.len());
    let mut topics: Vec<(String, Vec<ConfigChange>)> = Vec::new();
    for resource in resources {
        let refusal = match resource.resource_type {
            RESOURCE_TYPE_TOPIC => None,
            RESOURCE_TYPE_BROKER => Some(Refusal {
                error: KafkaError::InvalidRequest,
                message: "dynamic broker configs are not supported".into(),
            }),
            other => Some(Refusal {
                error: KafkaError::InvalidRequest,
                message: format!("resource type {other} has no alterable configs; only topics (2)"),
            }),
        };
        let refusal = refusal.or_else(|| {
            (counts[&(resource.resource_type, resource.name.as_str())] > 1).then(|| Refusal {
                error: KafkaError::InvalidRequest,
                message: format!("resource '{}' is listed more than once", resource.name),
            })
        });
        let refusal = match (refusal, &resource.changes) {
            (Some(refusal), _) => Some(refusal),
            (None, Err(refusal)) => Some(refusal.clone()),
            (None, Ok(changes)) => {
                topics.push((resource.name.clone(), changes.clone()));
                None
            }
        };
        early.push(refusal);
    }
    let mut outcomes = ask_controller(broker, topics, incremental, validate_only)
        .await
        .into_iter();
    early
        .into_iter()
        .map(|refusal| match refusal {
            Some(refusal) => Err(refusal),
            None => outcomes.next().unwrap_or_else(|| {
                Err(Refusal {
                    error: KafkaError::UnknownServerError,
                    message: "the controller gave no answer for this resource".into(),
                })
            }),
        })
        .collect()
}

async fn ask_controller(
    broker: &Rc<Broker>,
    topics: Vec<(String, Vec<ConfigChange>)>,
    incremental: bool,
    validate_only: bool,
) -> Vec<Result<(), Refusal>> {
    let count = topics.len();
    let request = ControllerRequest::AlterConfigs {
        topics,
        incremental,
        validate_only,
    };
    super::ask_controller_per_topic(broker, request, count).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str, value: Option<&str>) -> AlterableConfig {
        AlterableConfig::default()
            .with_name(str_bytes(name))
            .with_value(value.map(str_bytes))
    }

    #[test]
    fn every_config_becomes_a_set() {
        let configs = [
            config("retention.ms", Some("1000")),
            config("cleanup.policy", Some("compact")),
        ];
        assert_eq!(
            changes(&configs).expect("valid"),
            vec![
                ConfigChange::Set("retention.ms".into(), "1000".into()),
                ConfigChange::Set("cleanup.policy".into(), "compact".into()),
            ]
        );
        assert!(changes(&[]).expect("valid").is_empty());
    }

    #[test]
    fn nulls_and_repeats_are_invalid_requests() {
        let null = changes(&[config("retention.ms", None)]).map_err(|refusal| refusal.error);
        assert_eq!(null, Err(KafkaError::InvalidRequest));
        let twice = [
            config("retention.ms", Some("1")),
            config("retention.ms", Some("2")),
        ];
        let refusal = changes(&twice).expect_err("repeated key");
        assert_eq!(refusal.error, KafkaError::InvalidRequest);
        assert!(
            refusal.message.contains("retention.ms"),
            "{}",
            refusal.message
        );
    }
}
