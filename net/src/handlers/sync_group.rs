//! SyncGroup: forwarded to the group's coordinating shard; a follower's response is held until
//! the leader's assignment arrives.

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::str_bytes;
use crate::broker::Broker;
use crate::codes::KafkaError;
use crate::groups::{GroupResponse, SyncRequest};
use crate::messages::{GroupReply, GroupRequest};

pub async fn handle(broker: &Broker, request: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let group_id = request.group_id.0.to_string();
    let sync = SyncRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.map(|id| id.to_string()),
        generation_id: request.generation_id,
        protocol_type: request.protocol_type.map(|name| name.to_string()),
        protocol_name: request.protocol_name.map(|name| name.to_string()),
        assignments: request
            .assignments
            .into_iter()
            .map(|assignment| (assignment.member_id.to_string(), assignment.assignment))
            .collect(),
    };
    let reply = broker
        .call_coordinator(
            &group_id,
            GroupRequest::Sync {
                group_id: group_id.clone(),
                request: sync,
            },
        )
        .await;
    match reply {
        Some(GroupReply::Member(Ok(GroupResponse::Sync(response)))) => {
            let (protocol_type, protocol_name) = if version >= 5 {
                (
                    response.protocol_type.map(str_bytes),
                    response.protocol_name.map(str_bytes),
                )
            } else {
                (None, None)
            };
            SyncGroupResponse::default()
                .with_error_code(response.error.map_or(0, |error| error.code()))
                .with_protocol_type(protocol_type)
                .with_protocol_name(protocol_name)
                .with_assignment(response.assignment)
        }
        Some(GroupReply::Member(Err(error))) => failed(error),
        _ => failed(KafkaError::CoordinatorNotAvailable),
    }
}

fn failed(error: KafkaError) -> SyncGroupResponse {
    SyncGroupResponse::default()
        .with_error_code(error.code())
        .with_protocol_type(None)
        .with_protocol_name(None)
}
