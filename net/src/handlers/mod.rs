//! One handler per Kafka API. Each takes the decoded request and its version and returns the
//! response to encode (`None` only for a Produce with acks=0, which Kafka never answers).

pub mod alter_configs;
pub mod api_versions;
pub mod consumer_group_describe;
pub mod consumer_group_heartbeat;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod elect_leaders;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sync_group;

use std::rc::Rc;

use kafka_protocol::messages::{RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::codec::Request;
use crate::codes::KafkaError;
use crate::messages::{BrokerRequest, BrokerResponse, GroupReply, GroupRequest};

/// Runs the handler for `request`.
pub async fn dispatch(broker: &Rc<Broker>, request: Request) -> Option<ResponseKind> {
    let version = request.api_version;
    let client_id = request.client_id.unwrap_or_default();
    let client_host = request.client_host;
    let response = match request.body {
        RequestKind::ApiVersions(body) => {
            ResponseKind::ApiVersions(api_versions::handle(body, version))
        }
        RequestKind::Metadata(body) => {
            ResponseKind::Metadata(metadata::handle(broker, body, version).await)
        }
        RequestKind::Produce(body) => {
            ResponseKind::Produce(produce::handle(broker, body, version).await?)
        }
        RequestKind::Fetch(body) => ResponseKind::Fetch(fetch::handle(broker, body, version).await),
        RequestKind::ListOffsets(body) => {
            ResponseKind::ListOffsets(list_offsets::handle(broker, body, version).await)
        }
        RequestKind::CreateTopics(body) => {
            ResponseKind::CreateTopics(create_topics::handle(broker, body, version).await)
        }
        RequestKind::DeleteTopics(body) => {
            ResponseKind::DeleteTopics(delete_topics::handle(broker, body, version).await)
        }
        RequestKind::CreatePartitions(body) => {
            ResponseKind::CreatePartitions(create_partitions::handle(broker, body, version).await)
        }
        RequestKind::DescribeConfigs(body) => {
            ResponseKind::DescribeConfigs(describe_configs::handle(broker, body, version).await)
        }
        RequestKind::AlterConfigs(body) => {
            ResponseKind::AlterConfigs(alter_configs::handle(broker, body, version).await)
        }
        RequestKind::IncrementalAlterConfigs(body) => ResponseKind::IncrementalAlterConfigs(
            incremental_alter_configs::handle(broker, body, version).await,
        ),
        RequestKind::DeleteRecords(body) => {
            ResponseKind::DeleteRecords(delete_records::handle(broker, body, version).await)
        }
        RequestKind::OffsetForLeaderEpoch(body) => ResponseKind::OffsetForLeaderEpoch(
            offset_for_leader_epoch::handle(broker, body, version).await,
        ),
        RequestKind::DescribeLogDirs(body) => {
            ResponseKind::DescribeLogDirs(describe_log_dirs::handle(broker, body, version).await)
        }
        RequestKind::DescribeCluster(body) => {
            ResponseKind::DescribeCluster(describe_cluster::handle(broker, body, version))
        }
        RequestKind::InitProducerId(body) => {
            ResponseKind::InitProducerId(init_producer_id::handle(broker, body, version).await)
        }
        RequestKind::FindCoordinator(body) => {
            ResponseKind::FindCoordinator(find_coordinator::handle(broker, body, version))
        }
        RequestKind::JoinGroup(body) => ResponseKind::JoinGroup(
            join_group::handle(broker, body, version, client_id, client_host).await,
        ),
        RequestKind::SyncGroup(body) => {
            ResponseKind::SyncGroup(sync_group::handle(broker, body, version).await)
        }
        RequestKind::Heartbeat(body) => {
            ResponseKind::Heartbeat(heartbeat::handle(broker, body, version).await)
        }
        RequestKind::LeaveGroup(body) => {
            ResponseKind::LeaveGroup(leave_group::handle(broker, body, version).await)
        }
        RequestKind::OffsetCommit(body) => {
            ResponseKind::OffsetCommit(offset_commit::handle(broker, body, version).await)
        }
        RequestKind::OffsetFetch(body) => {
            ResponseKind::OffsetFetch(offset_fetch::handle(broker, body, version).await)
        }
        RequestKind::ListGroups(body) => {
            ResponseKind::ListGroups(list_groups::handle(broker, body, version).await)
        }
        RequestKind::DescribeGroups(body) => {
            ResponseKind::DescribeGroups(describe_groups::handle(broker, body, version).await)
        }
        RequestKind::DeleteGroups(body) => {
            ResponseKind::DeleteGroups(delete_groups::handle(broker, body, version).await)
        }
        RequestKind::ConsumerGroupHeartbeat(body) => ResponseKind::ConsumerGroupHeartbeat(
            consumer_group_heartbeat::handle(broker, body, version, client_id, client_host).await,
        ),
        RequestKind::ConsumerGroupDescribe(body) => ResponseKind::ConsumerGroupDescribe(
            consumer_group_describe::handle(broker, body, version).await,
        ),
        RequestKind::ElectLeaders(body) => {
            ResponseKind::ElectLeaders(elect_leaders::handle(broker, body, version).await)
        }
        RequestKind::OffsetDelete(body) => {
            ResponseKind::OffsetDelete(offset_delete::handle(broker, body, version).await)
        }
        other => {
            // The codec only lets through what `apis::SERVED_APIS` lists, and every entry there
            // has a handler above.
            unreachable!("no handler for a served API: {other:?}")
        }
    };
    Some(response)
}

/// Sends a per-topic command to the controller; per topic, in order, whether it was applied.
/// Every topic gets NOT_CONTROLLER when the controller cannot be reached.
pub async fn ask_controller_per_topic(
    broker: &Rc<Broker>,
    request: crate::messages::ControllerRequest,
    topic_count: usize,
) -> Vec<Result<(), crate::messages::Refusal>> {
    use crate::messages::{BrokerRequest, BrokerResponse, ControllerResponse, Refusal};
    if topic_count == 0 {
        return Vec::new();
    }
    let request = BrokerRequest::Controller(request);
    match broker.call(create_topics::CONTROLLER_SHARD, request).await {
        Some(BrokerResponse::Controller(ControllerResponse::Topics(results))) => results,
        _ => (0..topic_count)
            .map(|_| {
                Err(Refusal {
                    error: crate::codes::KafkaError::NotController,
                    message: "the controller is unavailable".into(),
                })
            })
            .collect(),
    }
}

/// A `StrBytes` from a `String`.
pub fn str_bytes(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

/// The topic id type of the protocol from Ringlog's 128-bit ids.
pub fn uuid(topic_id: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(topic_id)
}

/// [`call_coordinators`] for requests that name groups and nothing else (DescribeGroups,
/// DeleteGroups, ConsumerGroupDescribe): `request` builds a shard's request from its group ids.
pub async fn call_coordinators_by_id<R>(
    broker: &Broker,
    group_ids: impl Iterator<Item = String>,
    request: impl Fn(Vec<String>) -> GroupRequest,
    results: impl Fn(GroupReply) -> Option<Vec<Result<R, KafkaError>>>,
) -> Vec<Result<R, KafkaError>> {
    let asked: Vec<(String, ())> = group_ids.map(|group_id| (group_id, ())).collect();
    call_coordinators(
        broker,
        asked,
        |groups| request(groups.into_iter().map(|(group_id, ())| group_id).collect()),
        results,
    )
    .await
}

/// Sends each group's part of a request to the shard coordinating that group, one bus message
/// per shard, and returns each group's result in the order given. A group that no shard
/// coordinates (yet), or whose shard did not answer, gets COORDINATOR_NOT_AVAILABLE.
pub async fn call_coordinators<T, R>(
    broker: &Broker,
    groups: Vec<(String, T)>,
    request: impl Fn(Vec<(String, T)>) -> GroupRequest,
    results: impl Fn(GroupReply) -> Option<Vec<Result<R, KafkaError>>>,
) -> Vec<Result<R, KafkaError>> {
    let mut answers: Vec<Option<Result<R, KafkaError>>> = groups.iter().map(|_| None).collect();
    // Per destination shard: the positions of its groups, and the groups.
    type ShardPart<T> = (ringlog_engine::ShardId, Vec<usize>, Vec<(String, T)>);
    let mut shards: Vec<ShardPart<T>> = Vec::new();
    for (position, (group_id, item)) in groups.into_iter().enumerate() {
        let Some(shard) = broker.coordinator_shard(&group_id) else {
            continue;
        };
        match shards.iter_mut().find(|(to, _, _)| *to == shard) {
            Some((_, positions, items)) => {
                positions.push(position);
                items.push((group_id, item));
            }
            None => shards.push((shard, vec![position], vec![(group_id, item)])),
        }
    }
    let mut places = Vec::with_capacity(shards.len());
    let mut calls = Vec::with_capacity(shards.len());
    for (shard, positions, items) in shards {
        places.push(positions);
        calls.push((shard, BrokerRequest::Group(request(items))));
    }
    for (positions, response) in places.into_iter().zip(broker.call_each(calls).await) {
        let replies = match response {
            Some(BrokerResponse::Group(reply)) => results(reply).unwrap_or_default(),
            _ => Vec::new(),
        };
        for (position, reply) in positions.into_iter().zip(replies) {
            answers[position] = Some(reply);
        }
    }
    answers
        .into_iter()
        .map(|answer| answer.unwrap_or(Err(KafkaError::CoordinatorNotAvailable)))
        .collect()
}
