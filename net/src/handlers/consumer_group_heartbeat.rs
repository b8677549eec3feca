//! ConsumerGroupHeartbeat (KIP-848): forwarded to the group's coordinating shard, which runs
//! the consumer-protocol state machine and answers at once.

use std::collections::BTreeMap;

use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};

use super::{str_bytes, uuid};
use crate::broker::Broker;
use crate::codes::{KafkaError, NONE};
use crate::groups::assignor;
use crate::groups::consumer::ConsumerHeartbeat;
use crate::messages::{GroupReply, GroupRequest};

pub async fn handle(
    broker: &Broker,
    request: ConsumerGroupHeartbeatRequest,
    version: i16,
    client_id: String,
    client_host: String,
) -> ConsumerGroupHeartbeatResponse {
    let group_id = request.group_id.0.to_string();
    let owned = request.topic_partitions.map(|topics| {
        let mut owned = assignor::Assignment::new();
        for topic in topics {
            owned
                .entry(topic.topic_id.as_u128())
                .or_default()
                .extend(topic.partitions);
        }
        owned.retain(|_, partitions| !partitions.is_empty());
        owned
    });
    let heartbeat = ConsumerHeartbeat {
        version,
        member_id: request.member_id.to_string(),
        member_epoch: request.member_epoch,
        instance_id: request.instance_id.map(|id| id.to_string()),
        rack_id: request.rack_id.map(|id| id.to_string()),
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        subscribed_topic_names: request
            .subscribed_topic_names
            .map(|names| names.into_iter().map(|name| name.0.to_string()).collect()),
        subscribed_topic_regex: request
            .subscribed_topic_regex
            .map(|regex| regex.to_string()),
        server_assignor: request.server_assignor.map(|name| name.to_string()),
        owned,
        client_id,
        client_host,
    };
    let reply = broker
        .call_coordinator(
            &group_id,
            GroupRequest::ConsumerHeartbeat {
                group_id: group_id.clone(),
                request: heartbeat,
            },
        )
        .await;
    match reply {
        Some(GroupReply::ConsumerHeartbeat(Ok(response))) => {
            ConsumerGroupHeartbeatResponse::default()
                .with_error_code(NONE)
                .with_member_id(Some(str_bytes(response.member_id)))
                .with_member_epoch(response.member_epoch)
                .with_heartbeat_interval_ms(response.heartbeat_interval_ms)
                .with_assignment(response.assignment.map(encode_assignment))
        }
        Some(GroupReply::ConsumerHeartbeat(Err(refused))) => {
            failed(refused.error, Some(refused.message))
        }
        _ => failed(KafkaError::CoordinatorNotAvailable, None),
    }
}

fn failed(error: KafkaError, message: Option<String>) -> ConsumerGroupHeartbeatResponse {
    ConsumerGroupHeartbeatResponse::default()
        .with_error_code(error.code())
        .with_error_message(message.map(str_bytes))
        .with_member_id(None)
}

fn encode_assignment(
    assignment: BTreeMap<assignor::TopicId, std::collections::BTreeSet<i32>>,
) -> Assignment {
    Assignment::default().with_topic_partitions(
        assignment
            .into_iter()
            .map(|(topic_id, partitions)| {
                TopicPartitions::default()
                    .with_topic_id(uuid(topic_id))
                    .with_partitions(partitions.into_iter().collect())
            })
            .collect(),
    )
}
