//! JoinGroup: forwarded to the group's coordinating shard, where the response may be held
//! until the join phase ends.

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::str_bytes;
use crate::broker::Broker;
use crate::codes::KafkaError;
use crate::groups::{GroupResponse, JoinRequest, JoinResponse, Protocol};
use crate::messages::{GroupReply, GroupRequest};

pub async fn handle(
    broker: &Broker,
    request: JoinGroupRequest,
    version: i16,
    client_id: String,
    client_host: String,
) -> JoinGroupResponse {
    let group_id = request.group_id.0.to_string();
    let member_id = request.member_id.to_string();
    let join = JoinRequest {
        member_id: member_id.clone(),
        group_instance_id: request.group_instance_id.map(|id| id.to_string()),
        client_id,
        client_host,
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|protocol| Protocol {
                name: protocol.name.to_string(),
                metadata: protocol.metadata,
            })
            .collect(),
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
    };
    let reply = broker
        .call_coordinator(
            &group_id,
            GroupRequest::Join {
                group_id: group_id.clone(),
                request: join,
            },
        )
        .await;
    let response = match reply {
        Some(GroupReply::Member(Ok(GroupResponse::Join(response)))) => response,
        Some(GroupReply::Member(Err(error))) => JoinResponse::failed(error, member_id),
        _ => JoinResponse::failed(KafkaError::CoordinatorNotAvailable, member_id),
    };
    encode(response, version)
}

fn encode(response: JoinResponse, version: i16) -> JoinGroupResponse {
    let members = response
        .members
        .into_iter()
        .map(|member| {
            JoinGroupResponseMember::default()
                .with_member_id(str_bytes(member.member_id))
                .with_group_instance_id(if version >= 5 {
                    member.group_instance_id.map(str_bytes)
                } else {
                    None
                })
                .with_metadata(member.metadata)
        })
        .collect();
    // Before v7 the protocol name is not nullable.
    let protocol_name = match response.protocol_name {
        Some(name) => Some(str_bytes(name)),
        None if version < 7 => Some(str_bytes("")),
        None => None,
    };
    JoinGroupResponse::default()
        .with_error_code(response.error.map_or(0, |error| error.code()))
        .with_generation_id(response.generation_id)
        .with_protocol_type(if version >= 7 {
            response.protocol_type.map(str_bytes)
        } else {
            None
        })
        .with_protocol_name(protocol_name)
        .with_leader(str_bytes(response.leader_id))
        .with_skip_assignment(version >= 9 && response.skip_assignment)
        .with_member_id(str_bytes(response.member_id))
        .with_members(members)
}
