//! DescribeGroups: each group described by its coordinating shard (one bus message per shard).

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::{call_coordinators_by_id, str_bytes};
use crate::broker::Broker;
use crate::codes::KafkaError;
use crate::groups::GroupState;
use crate::messages::{GroupReply, GroupRequest};

pub async fn handle(
    broker: &Broker,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let results = call_coordinators_by_id(
        broker,
        request.groups.iter().map(|group_id| group_id.0.to_string()),
        GroupRequest::Describe,
        |reply| match reply {
            GroupReply::Described(results) => Some(results),
            _ => None,
        },
    )
    .await;
    let groups = request
        .groups
        .into_iter()
        .zip(results)
        .map(|(group_id, result)| {
            let group = DescribedGroup::default()
                .with_group_id(group_id)
                .with_error_message(None);
            match result {
                Ok(Some(description)) => group
                    .with_group_state(str_bytes(description.state.name()))
                    .with_protocol_type(str_bytes(description.protocol_type))
                    .with_protocol_data(str_bytes(description.protocol_name))
                    .with_members(
                        description
                            .members
                            .into_iter()
                            .map(|member| {
                                DescribedGroupMember::default()
                                    .with_member_id(str_bytes(member.member_id))
                                    .with_group_instance_id(if version >= 4 {
                                        member.group_instance_id.map(str_bytes)
                                    } else {
                                        None
                                    })
                                    .with_client_id(str_bytes(member.client_id))
                                    .with_client_host(str_bytes(member.client_host))
                                    .with_member_metadata(member.metadata)
                                    .with_member_assignment(member.assignment)
                            })
                            .collect(),
                    ),
                // Kafka describes a missing group as Dead; v6 adds the error (KIP-1043).
                Ok(None) => {
                    let group = group.with_group_state(str_bytes(GroupState::Dead.name()));
                    if version >= 6 {
                        group.with_error_code(KafkaError::GroupIdNotFound.code())
                    } else {
                        group
                    }
                }
                Err(error) => group.with_error_code(error.code()),
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
