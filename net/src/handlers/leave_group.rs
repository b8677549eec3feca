//! LeaveGroup: forwarded to the group's coordinating shard. v0-2 name one member; v3+ a batch
//! (KIP-345), each with its own error.

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::str_bytes;
use crate::broker::Broker;
use crate::codes::KafkaError;
use crate::groups::{GroupResponse, LeaveMember, LeaveRequest};
use crate::messages::{GroupReply, GroupRequest};

pub async fn handle(
    broker: &Broker,
    request: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let group_id = request.group_id.0.to_string();
    let members = if version < 3 {
        vec![LeaveMember {
            member_id: request.member_id.to_string(),
            group_instance_id: None,
        }]
    } else {
        request
            .members
            .into_iter()
            .map(|member| LeaveMember {
                member_id: member.member_id.to_string(),
                group_instance_id: member.group_instance_id.map(|id| id.to_string()),
            })
            .collect()
    };
    let reply = broker
        .call_coordinator(
            &group_id,
            GroupRequest::Leave {
                group_id: group_id.clone(),
                request: LeaveRequest { members },
            },
        )
        .await;
    let response = match reply {
        Some(GroupReply::Member(Ok(GroupResponse::Leave(response)))) => response,
        Some(GroupReply::Member(Err(error))) => {
            return LeaveGroupResponse::default().with_error_code(error.code())
        }
        _ => {
            return LeaveGroupResponse::default()
                .with_error_code(KafkaError::CoordinatorNotAvailable.code())
        }
    };
    if version < 3 {
        let error = response
            .error
            .or_else(|| response.members.first().and_then(|member| member.error));
        return LeaveGroupResponse::default()
            .with_error_code(error.map_or(0, |error| error.code()));
    }
    LeaveGroupResponse::default()
        .with_error_code(response.error.map_or(0, |error| error.code()))
        .with_members(
            response
                .members
                .into_iter()
                .map(|member| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(member.member_id))
                        .with_group_instance_id(member.group_instance_id.map(str_bytes))
                        .with_error_code(member.error.map_or(0, |error| error.code()))
                })
                .collect(),
        )
}
