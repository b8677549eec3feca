//! ElectLeaders (KIP-183, KIP-460): moves leadership to each partition's preferred replica
//! (type 0), or gives a leaderless partition a leader from outside the ISR (type 1, unclean),
//! through the controller. A null partition list means every partition; then only the
//! partitions that needed an election are reported, as Kafka does. On a single node every
//! partition is already led by its only replica: ELECTION_NOT_NEEDED.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use ringlog_cluster::controller::ElectionType;

use super::str_bytes;
use crate::broker::Broker;
use crate::codes::{KafkaError, NONE};
use crate::messages::{BrokerRequest, BrokerResponse, ControllerRequest, ControllerResponse};

/// `election_type` values (v1+; v0 is always preferred).
const ELECTION_PREFERRED: i8 = 0;
const ELECTION_UNCLEAN: i8 = 1;

pub async fn handle(
    broker: &Rc<Broker>,
    request: ElectLeadersRequest,
    version: i16,
) -> ElectLeadersResponse {
    let election_type = match (version, request.election_type) {
        (0, _) | (_, ELECTION_PREFERRED) => Some(ElectionType::Preferred),
        (_, ELECTION_UNCLEAN) => Some(ElectionType::Unclean),
        _ => None,
    };
    let partitions: Option<Vec<(String, i32)>> = request.topic_partitions.map(|topics| {
        topics
            .into_iter()
            .flat_map(|topic| {
                let name = topic.topic.0.to_string();
                topic
                    .partitions
                    .into_iter()
                    .map(move |partition| (name.clone(), partition))
            })
            .collect()
    });
    let Some(election_type) = election_type else {
        return ElectLeadersResponse::default()
            .with_error_code(KafkaError::InvalidRequest.code())
            .with_replica_election_results(results(
                partitions
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(topic, partition)| (topic, partition, Err(KafkaError::InvalidRequest)))
                    .collect(),
            ));
    };
    let outcomes = if broker.is_clustered() {
        let asked = ControllerRequest::ElectLeaders {
            election_type,
            partitions: partitions.clone(),
        };
        match broker
            .call(
                super::create_topics::CONTROLLER_SHARD,
                BrokerRequest::Controller(asked),
            )
            .await
        {
            Some(BrokerResponse::Controller(ControllerResponse::Elections(elections))) => elections,
            _ => partitions
                .unwrap_or_default()
                .into_iter()
                .map(|(topic, partition)| (topic, partition, Err(KafkaError::NotController)))
                .collect(),
        }
    } else {
        single_node(broker, partitions)
    };
    ElectLeadersResponse::default()
        .with_error_code(NONE)
        .with_replica_election_results(results(outcomes))
}

/// A single node leads every partition already, as its preferred and only replica.
fn single_node(
    broker: &Broker,
    partitions: Option<Vec<(String, i32)>>,
) -> Vec<(String, i32, Result<(), KafkaError>)> {
    let image = broker.metadata();
    partitions
        .unwrap_or_default()
        .into_iter()
        .map(|(topic, partition)| {
            let exists = image
                .topic(&topic)
                .is_some_and(|known| (0..known.partition_count).contains(&partition));
            let outcome = if exists {
                Err(KafkaError::ElectionNotNeeded)
            } else {
                Err(KafkaError::UnknownTopicOrPartition)
            };
            (topic, partition, outcome)
        })
        .collect()
}

fn results(outcomes: Vec<(String, i32, Result<(), KafkaError>)>) -> Vec<ReplicaElectionResult> {
    let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for (topic, partition, outcome) in outcomes {
        let (code, message) = match outcome {
            Ok(()) => (NONE, None),
            Err(error) => (error.code(), Some(str_bytes(error.to_string()))),
        };
        by_topic.entry(topic).or_default().push(
            PartitionResult::default()
                .with_partition_id(partition)
                .with_error_code(code)
                .with_error_message(message),
        );
    }
    by_topic
        .into_iter()
        .map(|(topic, partition_result)| {
            ReplicaElectionResult::default()
                .with_topic(TopicName(str_bytes(topic)))
                .with_partition_result(partition_result)
        })
        .collect()
}
