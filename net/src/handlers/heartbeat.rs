//! Heartbeat: forwarded to the group's coordinating shard.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::broker::Broker;
use crate::codes::KafkaError;
use crate::groups::{self, GroupResponse};
use crate::messages::{GroupReply, GroupRequest};

pub async fn handle(
    broker: &Broker,
    request: HeartbeatRequest,
    _version: i16,
) -> HeartbeatResponse {
    let group_id = request.group_id.0.to_string();
    let heartbeat = groups::HeartbeatRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.map(|id| id.to_string()),
        generation_id: request.generation_id,
    };
    let reply = broker
        .call_coordinator(
            &group_id,
            GroupRequest::Heartbeat {
                group_id: group_id.clone(),
                request: heartbeat,
            },
        )
        .await;
    let error = match reply {
        Some(GroupReply::Member(Ok(GroupResponse::Heartbeat(error)))) => error,
        Some(GroupReply::Member(Err(error))) => Some(error),
        _ => Some(KafkaError::CoordinatorNotAvailable),
    };
    HeartbeatResponse::default().with_error_code(error.map_or(0, |error| error.code()))
}
