//! ConsumerGroupDescribe (KIP-848): each consumer-protocol group described by its coordinating
//! shard (one bus message per shard); topic ids are named from this shard's metadata.

use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, TopicName,
};
use ringlog_cluster::MetadataImage;

use super::{call_coordinators_by_id, str_bytes, uuid};
use crate::broker::Broker;
use crate::codes::NONE;
use crate::groups::assignor;
use crate::messages::{GroupReply, GroupRequest};

/// `AuthorizedOperations` when the client did not ask for them (Kafka's INT32_MIN).
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

/// `MemberType` of a member speaking the consumer protocol (KIP-1099: 0 classic, 1 consumer).
const MEMBER_TYPE_CONSUMER: i8 = 1;

pub async fn handle(
    broker: &Broker,
    request: ConsumerGroupDescribeRequest,
    _version: i16,
) -> ConsumerGroupDescribeResponse {
    let results = call_coordinators_by_id(
        broker,
        request
            .group_ids
            .iter()
            .map(|group_id| group_id.0.to_string()),
        GroupRequest::ConsumerDescribe,
        |reply| match reply {
            GroupReply::ConsumerDescribed(results) => Some(results),
            _ => None,
        },
    )
    .await;
    let image = broker.metadata();
    let groups = request
        .group_ids
        .into_iter()
        .zip(results)
        .map(|(group_id, result)| {
            let group = DescribedGroup::default()
                .with_group_id(group_id)
                .with_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
            match result {
                Ok(description) => group
                    .with_error_code(NONE)
                    .with_group_state(str_bytes(description.state.name()))
                    .with_group_epoch(description.group_epoch)
                    .with_assignment_epoch(description.assignment_epoch)
                    .with_assignor_name(str_bytes(description.assignor_name))
                    .with_members(
                        description
                            .members
                            .into_iter()
                            .map(|member| {
                                Member::default()
                                    .with_member_id(str_bytes(member.member_id))
                                    .with_instance_id(member.instance_id.map(str_bytes))
                                    .with_rack_id(member.rack_id.map(str_bytes))
                                    .with_member_epoch(member.member_epoch)
                                    .with_client_id(str_bytes(member.client_id))
                                    .with_client_host(str_bytes(member.client_host))
                                    .with_subscribed_topic_names(
                                        member
                                            .subscribed_topic_names
                                            .into_iter()
                                            .map(|name| TopicName(str_bytes(name)))
                                            .collect(),
                                    )
                                    .with_subscribed_topic_regex(
                                        member.subscribed_topic_regex.map(str_bytes),
                                    )
                                    .with_assignment(encode(&image, member.assignment))
                                    .with_target_assignment(encode(
                                        &image,
                                        member.target_assignment,
                                    ))
                                    .with_member_type(MEMBER_TYPE_CONSUMER)
                            })
                            .collect(),
                    ),
                Err(error) => group
                    .with_error_code(error.code())
                    .with_error_message(Some(str_bytes(format!("{error:?}")))),
            }
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}

/// An assignment with each topic named; a topic deleted since it was assigned has no name.
fn encode(image: &MetadataImage, assignment: assignor::Assignment) -> Assignment {
    Assignment::default().with_topic_partitions(
        assignment
            .into_iter()
            .map(|(topic_id, partitions)| {
                let name = image
                    .topic_by_id(topic_id)
                    .map(|(name, _)| name.clone())
                    .unwrap_or_default();
                TopicPartitions::default()
                    .with_topic_id(uuid(topic_id))
                    .with_topic_name(TopicName(str_bytes(name)))
                    .with_partitions(partitions.into_iter().collect())
            })
            .collect(),
    )
}
