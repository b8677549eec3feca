//! CreatePartitions: grows topics to a new partition count through the controller (with
//! `validate_only`). Manual assignments are accepted only when they place every new partition
//! on this broker alone, the only placement a single-node cluster has.

use std::collections::HashSet;
use std::rc::Rc;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsAssignment;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse, TopicName};
use ringlog_cluster::MetadataImage;

use super::str_bytes;
use crate::broker::Broker;
use crate::codes::{KafkaError, NONE};
use crate::messages::{ControllerRequest, Refusal};

pub async fn handle(
    broker: &Rc<Broker>,
    request: CreatePartitionsRequest,
    _version: i16,
) -> CreatePartitionsResponse {
    let image = broker.metadata();
    let names: Vec<String> = request
        .topics
        .iter()
        .map(|topic| topic.name.0.to_string())
        .collect();
    let duplicates = duplicate_names(&names);
    // Per topic in request order: a refusal found here, or None to ask the controller.
    let mut early: Vec<Option<Refusal>> = Vec::with_capacity(names.len());
    let mut wanted: Vec<(String, i32)> = Vec::new();
    for (topic, name) in request.topics.iter().zip(&names) {
        let refusal = if duplicates.contains(name) {
            Some(Refusal {
                error: KafkaError::InvalidRequest,
                message: format!("topic '{name}' is listed more than once"),
            })
        } else {
            topic.assignments.as_ref().and_then(|assignments| {
                check_assignments(
                    &image,
                    name,
                    topic.count,
                    assignments,
                    broker.config.node_id,
                )
                .err()
            })
        };
        if refusal.is_none() {
            wanted.push((name.clone(), topic.count));
        }
        early.push(refusal);
    }
    let mut outcomes = ask_controller(broker, wanted, request.validate_only)
        .await
        .into_iter();
    let results = early
        .into_iter()
        .zip(names)
        .map(|(refusal, name)| {
            let outcome = match refusal {
                Some(refusal) => Err(refusal),
                None => outcomes.next().unwrap_or_else(|| {
                    Err(Refusal {
                        error: KafkaError::UnknownServerError,
                        message: "the controller gave no answer for this topic".into(),
                    })
                }),
            };
            let result =
                CreatePartitionsTopicResult::default().with_name(TopicName(str_bytes(name)));
            match outcome {
                Ok(()) => result.with_error_code(NONE).with_error_message(None),
                Err(refusal) => result
                    .with_error_code(refusal.error.code())
                    .with_error_message(Some(str_bytes(refusal.message))),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

/// Names that appear more than once (Kafka refuses every entry of such a topic).
fn duplicate_names(names: &[String]) -> HashSet<String> {
    let mut seen = HashSet::new();
    names
        .iter()
        .filter(|name| !seen.insert(name.as_str()))
        .cloned()
        .collect()
}

/// Kafka's checks of manual assignments, for a cluster of one broker with replication factor
/// 1: one assignment per new partition, each naming exactly this broker. An unknown topic or a
/// count that does not grow is left to the controller, which names those errors.
fn check_assignments(
    image: &MetadataImage,
    name: &str,
    count: i32,
    assignments: &[CreatePartitionsAssignment],
    node_id: i32,
) -> Result<(), Refusal> {
    let invalid = |message: String| Refusal {
        error: KafkaError::InvalidReplicaAssignment,
        message,
    };
    let Some(topic) = image.topic(name) else {
        return Ok(());
    };
    let added = i64::from(count) - i64::from(topic.partition_count);
    if added <= 0 {
        return Ok(());
    }
    if assignments.len() as i64 != added {
        return Err(invalid(format!(
            "increasing the number of partitions by {added} but {} assignments provided",
            assignments.len()
        )));
    }
    for (index, assignment) in assignments.iter().enumerate() {
        let partition = i64::from(topic.partition_count) + index as i64;
        let brokers: Vec<i32> = assignment.broker_ids.iter().map(|id| id.0).collect();
        if brokers != [node_id] {
            return Err(invalid(format!(
                "partition {partition} is assigned to brokers {brokers:?}; this cluster has one \
                 broker, {node_id}, and replication factor 1"
            )));
        }
    }
    Ok(())
}

/// Asks the controller to grow `topics`; per topic, in order, whether it did.
async fn ask_controller(
    broker: &Rc<Broker>,
    topics: Vec<(String, i32)>,
    validate_only: bool,
) -> Vec<Result<(), Refusal>> {
    let count = topics.len();
    let request = ControllerRequest::CreatePartitions {
        topics,
        validate_only,
    };
    super::ask_controller_per_topic(broker, request, count).await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kafka_protocol::messages::BrokerId;

    use super::*;

    fn assignment(brokers: &[i32]) -> CreatePartitionsAssignment {
        CreatePartitionsAssignment::default()
            .with_broker_ids(brokers.iter().copied().map(BrokerId).collect())
    }

    #[test]
    fn assignments_must_name_only_this_broker_once_per_new_partition() {
        let mut image = MetadataImage::new("cluster".into());
        image.create_topic("t", 2, BTreeMap::new(), 5);
        let check = |count, assignments: &[CreatePartitionsAssignment]| {
            check_assignments(&image, "t", count, assignments, 1).map_err(|refusal| refusal.error)
        };
        assert!(check(4, &[assignment(&[1]), assignment(&[1])]).is_ok());
        let invalid = Err(KafkaError::InvalidReplicaAssignment);
        assert_eq!(check(4, &[assignment(&[1])]), invalid);
        assert_eq!(check(3, &[assignment(&[2])]), invalid);
        assert_eq!(check(3, &[assignment(&[1, 1])]), invalid);
        assert_eq!(check(3, &[assignment(&[])]), invalid);
        // Errors the controller names better are left to it.
        assert!(check(2, &[assignment(&[1])]).is_ok());
        assert!(check_assignments(&image, "missing", 3, &[], 1).is_ok());
    }

    #[test]
    fn duplicates_are_every_repeated_name() {
        let names: Vec<String> = ["a", "b", "a", "c", "a"].map(String::from).into();
        assert_eq!(duplicate_names(&names), HashSet::from(["a".to_string()]));
    }
}
