//! Produce: each partition's record set goes, untouched, to the shard that owns the partition
//! (one bus message per shard), which validates it (size, magic, CRC-32C, record count),
//! checks the idempotent producer's sequence, appends and answers once durable.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse, TopicName};
use ringlog_engine::log::AppendResult;
use ringlog_engine::TopicPartition;

use super::{str_bytes, uuid};
use crate::broker::Broker;
use crate::codes::{KafkaError, NONE};
use crate::messages::{BrokerRequest, BrokerResponse};

/// `acks` values Kafka accepts: none, the leader, all in-sync replicas.
const ACKS_NONE: i16 = 0;
const ACKS_LEADER: i16 = 1;
const ACKS_ALL: i16 = -1;

/// Produce responses carry topic ids instead of names from this version on (KIP-516).
pub(crate) const TOPIC_ID_VERSION: i16 = 13;

struct Slot {
    topic: usize,
    partition_index: i32,
    /// The record set's size, counted as bytes in once appended.
    bytes: u64,
    outcome: Result<AppendResult, KafkaError>,
}

/// Returns None for acks=0: Kafka sends no response.
pub async fn handle(
    broker: &Rc<Broker>,
    request: ProduceRequest,
    version: i16,
) -> Option<ProduceResponse> {
    let acks = request.acks;
    let image = broker.metadata();
    let valid_acks = matches!(acks, ACKS_NONE | ACKS_LEADER | ACKS_ALL);
    let transactional = request.transactional_id.is_some();
    // Per topic: its name and id as the response names it; per partition: a slot.
    let mut topics: Vec<(String, u128)> = Vec::new();
    let mut slots: Vec<Slot> = Vec::new();
    let mut appends: Vec<(usize, TopicPartition, Bytes)> = Vec::new();
    for topic in request.topic_data {
        let (name, topic_id) = if version >= TOPIC_ID_VERSION {
            let id = topic.topic_id.as_u128();
            match image.topic_by_id(id) {
                Some((name, _)) => (name.clone(), id),
                None => (String::new(), id),
            }
        } else {
            let name = topic.name.0.to_string();
            let id = image.topic(&name).map_or(0, |topic| topic.topic_id);
            (name, id)
        };
        let known = image.topic(&name);
        let topic_index = topics.len();
        topics.push((name.clone(), topic_id));
        for partition in topic.partition_data {
            let error = if !valid_acks {
                Some(KafkaError::InvalidRequiredAcks)
            } else if transactional {
                // Transactions are not implemented; InitProducerId refuses transactional ids,
                // so a well-behaved client never gets here.
                Some(KafkaError::TransactionalIdAuthorizationFailed)
            } else if known.is_none() {
                Some(if version >= TOPIC_ID_VERSION {
                    KafkaError::UnknownTopicId
                } else {
                    KafkaError::UnknownTopicOrPartition
                })
            } else if !known
                .is_some_and(|topic| (0..topic.partition_count).contains(&partition.index))
            {
                Some(KafkaError::UnknownTopicOrPartition)
            } else if partition.records.as_ref().is_none_or(Bytes::is_empty) {
                Some(KafkaError::InvalidRecord)
            } else {
                None
            };
            let slot = slots.len();
            slots.push(Slot {
                topic: topic_index,
                partition_index: partition.index,
                bytes: partition
                    .records
                    .as_ref()
                    .map_or(0, |records| records.len() as u64),
                outcome: Err(error.unwrap_or(KafkaError::UnknownServerError)),
            });
            if error.is_none() {
                let records = partition.records.unwrap_or_default();
                appends.push((
                    slot,
                    TopicPartition::new(name.clone(), partition.index),
                    records,
                ));
            }
        }
    }
    let timeout = Duration::from_millis(request.timeout_ms.max(0) as u64);
    let results = broker
        .scatter(
            appends,
            |appends| BrokerRequest::Produce {
                appends,
                acks,
                timeout,
            },
            |response| match response {
                BrokerResponse::Produced(results) => Some(results),
                _ => None,
            },
        )
        .await;
    for (slot, outcome) in results {
        if let Ok(appended) = &outcome {
            broker.metrics.bytes_in.add(slots[slot].bytes);
            broker
                .metrics
                .records_in
                .add(appended.record_count.max(0) as u64);
        }
        slots[slot].outcome = outcome;
    }
    if acks == ACKS_NONE && valid_acks {
        return None;
    }
    let mut responses: Vec<TopicProduceResponse> = topics
        .iter()
        .map(|(name, topic_id)| {
            let response = TopicProduceResponse::default().with_topic_id(uuid(*topic_id));
            if version >= TOPIC_ID_VERSION {
                response
            } else {
                response.with_name(TopicName(str_bytes(name.clone())))
            }
        })
        .collect();
    for slot in slots {
        let partition = match slot.outcome {
            Ok(result) => PartitionProduceResponse::default()
                .with_index(slot.partition_index)
                .with_error_code(NONE)
                .with_base_offset(result.base_offset)
                .with_log_append_time_ms(result.log_append_time_ms)
                .with_log_start_offset(result.log_start_offset),
            Err(error) => {
                let response = PartitionProduceResponse::default()
                    .with_index(slot.partition_index)
                    .with_error_code(error.code())
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(-1)
                    .with_error_message(Some(str_bytes(error.to_string())));
                if error == KafkaError::NotLeaderOrFollower && version >= 10 {
                    let view =
                        broker.partition_view(&image, &topics[slot.topic].0, slot.partition_index);
                    response.with_current_leader(
                        LeaderIdAndEpoch::default()
                            .with_leader_id(BrokerId(view.leader))
                            .with_leader_epoch(view.leader_epoch),
                    )
                } else {
                    response
                }
            }
        };
        responses[slot.topic].partition_responses.push(partition);
    }
    Some(ProduceResponse::default().with_responses(responses))
}
