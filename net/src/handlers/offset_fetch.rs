//! OffsetFetch: one group (v1-7) or several (v8+), each answered by its coordinating shard
//! (one bus message per shard). Partitions with nothing committed get offset -1; null topics
//! ask for everything the group committed.

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::{call_coordinators, str_bytes};
use crate::broker::Broker;
use crate::codes::{KafkaError, NONE};
use crate::messages::{FetchedOffsets, GroupPartitions, GroupReply, GroupRequest, OffsetsWanted};

/// The (topic, partition) pairs a request's topics name (v1-7 and v8+ spell them alike).
fn partitions<'a>(topics: impl Iterator<Item = (&'a TopicName, &'a [i32])>) -> GroupPartitions {
    topics
        .flat_map(|(name, indexes)| {
            indexes
                .iter()
                .map(move |index| (name.0.to_string(), *index))
        })
        .collect()
}

/// The offset reported for a partition with nothing committed.
const NO_OFFSET: i64 = -1;

pub async fn handle(
    broker: &Broker,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let asked: Vec<(String, OffsetsWanted)> = if version < 8 {
        let topics = request.topics.as_ref().map(|topics| {
            partitions(
                topics
                    .iter()
                    .map(|topic| (&topic.name, topic.partition_indexes.as_slice())),
            )
        });
        let wanted = OffsetsWanted {
            partitions: topics,
            member: None,
        };
        vec![(request.group_id.0.to_string(), wanted)]
    } else {
        request
            .groups
            .iter()
            .map(|group| {
                let topics = group.topics.as_ref().map(|topics| {
                    partitions(
                        topics
                            .iter()
                            .map(|topic| (&topic.name, topic.partition_indexes.as_slice())),
                    )
                });
                // v9+: a consumer-protocol member names itself (null member id: anyone).
                let member = group
                    .member_id
                    .as_ref()
                    .map(|member_id| (member_id.to_string(), group.member_epoch));
                let wanted = OffsetsWanted {
                    partitions: topics,
                    member,
                };
                (group.group_id.0.to_string(), wanted)
            })
            .collect()
    };
    let group_ids: Vec<String> = asked.iter().map(|(group_id, _)| group_id.clone()).collect();
    let results = call_coordinators(broker, asked, GroupRequest::Fetch, |reply| match reply {
        GroupReply::Fetched(results) => Some(results),
        _ => None,
    })
    .await;
    if version < 8 {
        let result = results
            .into_iter()
            .next()
            .unwrap_or(Err(KafkaError::CoordinatorNotAvailable));
        return match result {
            Ok(offsets) => {
                OffsetFetchResponse::default().with_topics(v1_topics(offsets, version, NONE))
            }
            // v1 has no top-level error: every partition carries it.
            Err(error) if version < 2 => {
                let asked: FetchedOffsets = request
                    .topics
                    .iter()
                    .flatten()
                    .flat_map(|topic| {
                        topic
                            .partition_indexes
                            .iter()
                            .map(|index| ((topic.name.0.to_string(), *index), None))
                    })
                    .collect();
                OffsetFetchResponse::default().with_topics(v1_topics(asked, version, error.code()))
            }
            Err(error) => OffsetFetchResponse::default().with_error_code(error.code()),
        };
    }
    let groups = group_ids
        .into_iter()
        .zip(results)
        .map(|(group_id, result)| {
            let group =
                OffsetFetchResponseGroup::default().with_group_id(GroupId(str_bytes(group_id)));
            match result {
                Ok(offsets) => group.with_topics(
                    by_topic(offsets, |(index, value)| {
                        let (offset, epoch, metadata) = fields(value);
                        OffsetFetchResponsePartitions::default()
                            .with_partition_index(index)
                            .with_committed_offset(offset)
                            .with_committed_leader_epoch(epoch)
                            .with_metadata(Some(str_bytes(metadata)))
                    })
                    .into_iter()
                    .map(|(name, partitions)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(TopicName(str_bytes(name)))
                            .with_partitions(partitions)
                    })
                    .collect(),
                ),
                Err(error) => group.with_error_code(error.code()),
            }
        })
        .collect();
    OffsetFetchResponse::default().with_groups(groups)
}

type Committed = Option<crate::groups::storage::CommittedOffset>;

fn fields(value: Committed) -> (i64, i32, String) {
    match value {
        Some(value) => (
            value.offset,
            value.leader_epoch,
            value.metadata.unwrap_or_default(),
        ),
        None => (NO_OFFSET, -1, String::new()),
    }
}

fn v1_topics(
    offsets: FetchedOffsets,
    version: i16,
    error_code: i16,
) -> Vec<OffsetFetchResponseTopic> {
    by_topic(offsets, |(index, value)| {
        let (offset, epoch, metadata) = fields(value);
        OffsetFetchResponsePartition::default()
            .with_partition_index(index)
            .with_committed_offset(offset)
            .with_committed_leader_epoch(if version >= 5 { epoch } else { -1 })
            .with_metadata(Some(str_bytes(metadata)))
            .with_error_code(error_code)
    })
    .into_iter()
    .map(|(name, partitions)| {
        OffsetFetchResponseTopic::default()
            .with_name(TopicName(str_bytes(name)))
            .with_partitions(partitions)
    })
    .collect()
}

/// Offsets grouped by topic, topics in first-seen order.
fn by_topic<P>(
    offsets: FetchedOffsets,
    partition: impl Fn((i32, Committed)) -> P,
) -> Vec<(String, Vec<P>)> {
    let mut topics: Vec<(String, Vec<P>)> = Vec::new();
    for ((topic, index), value) in offsets {
        let entry = match topics.iter().position(|(name, _)| *name == topic) {
            Some(position) => &mut topics[position].1,
            None => {
                topics.push((topic, Vec::new()));
                &mut topics.last_mut().expect("just pushed").1
            }
        };
        entry.push(partition((index, value)));
    }
    topics
}
