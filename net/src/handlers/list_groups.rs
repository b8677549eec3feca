//! ListGroups: every shard lists the groups it coordinates; v4+ filter by state, v5+ by type
//! ("classic" or "consumer").

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use ringlog_engine::ShardId;

use super::str_bytes;
use crate::broker::Broker;
use crate::codes::KafkaError;
use crate::messages::{BrokerRequest, BrokerResponse, GroupReply, GroupRequest};

pub async fn handle(
    broker: &Broker,
    request: ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    let shard_count = broker.table().shard_count();
    let calls = (0..shard_count)
        .map(|index| {
            (
                ShardId(index as u16),
                BrokerRequest::Group(GroupRequest::List),
            )
        })
        .collect();
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|state| state.to_lowercase())
        .collect();
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|kind| kind.to_lowercase())
        .collect();
    let mut error = None;
    let mut groups = Vec::new();
    for response in broker.call_each(calls).await {
        let Some(BrokerResponse::Group(GroupReply::Listed(listed))) = response else {
            error = Some(KafkaError::CoordinatorNotAvailable);
            continue;
        };
        for group in listed {
            let state = group.state;
            if !states.is_empty() && !states.contains(&state.to_lowercase()) {
                continue;
            }
            if !types.is_empty() && !types.iter().any(|kind| kind == group.group_type) {
                continue;
            }
            let mut entry = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(group.group_id)))
                .with_protocol_type(str_bytes(group.protocol_type));
            if version >= 4 {
                entry.group_state = str_bytes(state);
            }
            if version >= 5 {
                entry.group_type = str_bytes(group.group_type);
            }
            groups.push(entry);
        }
    }
    ListGroupsResponse::default()
        .with_error_code(error.map_or(0, |error| error.code()))
        .with_groups(groups)
}
