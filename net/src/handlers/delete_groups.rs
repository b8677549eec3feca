//! DeleteGroups: each group deleted (with its committed offsets) by its coordinating shard;
//! a group with members gets NON_EMPTY_GROUP.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::call_coordinators_by_id;
use crate::broker::Broker;
use crate::messages::{GroupReply, GroupRequest};

pub async fn handle(
    broker: &Broker,
    request: DeleteGroupsRequest,
    _version: i16,
) -> DeleteGroupsResponse {
    let results = call_coordinators_by_id(
        broker,
        request
            .groups_names
            .iter()
            .map(|group_id| group_id.0.to_string()),
        GroupRequest::Delete,
        |reply| match reply {
            GroupReply::Deleted(results) => Some(results),
            _ => None,
        },
    )
    .await;
    let results = request
        .groups_names
        .into_iter()
        .zip(results)
        .map(|(group_id, result)| {
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(result.err().map_or(0, |error| error.code()))
        })
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}
