//! OffsetCommit: partitions of unknown topics get UNKNOWN_TOPIC_OR_PARTITION here; the rest go
//! to the group's coordinating shard, which checks the member and makes them durable.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use ringlog_engine::log::now_ms;

use crate::broker::Broker;
use crate::codes::{KafkaError, NONE};
use crate::groups::storage::CommittedOffset;
use crate::messages::{GroupReply, GroupRequest, OffsetCommit};

pub async fn handle(
    broker: &Broker,
    request: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    let image = broker.metadata();
    let group_id = request.group_id.0.to_string();
    let now = now_ms();
    let mut topics = Vec::with_capacity(request.topics.len());
    // (topic index, partition index) of each offset sent to the coordinator.
    let mut places = Vec::new();
    let mut offsets = Vec::new();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let known = image.topic(&name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let exists = known.is_some_and(|known| {
                (0..known.partition_count).contains(&partition.partition_index)
            });
            let mut result = OffsetCommitResponsePartition::default()
                .with_partition_index(partition.partition_index);
            if exists {
                places.push((topics.len(), partitions.len()));
                offsets.push((
                    (name.clone(), partition.partition_index),
                    CommittedOffset {
                        offset: partition.committed_offset,
                        leader_epoch: if version >= 6 {
                            partition.committed_leader_epoch
                        } else {
                            -1
                        },
                        metadata: partition
                            .committed_metadata
                            .map(|metadata| metadata.to_string()),
                        commit_timestamp_ms: now,
                    },
                ));
            } else {
                result.error_code = KafkaError::UnknownTopicOrPartition.code();
            }
            partitions.push(result);
        }
        topics.push(
            OffsetCommitResponseTopic::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    if !offsets.is_empty() {
        let reply = broker
            .call_coordinator(
                &group_id,
                GroupRequest::Commit(OffsetCommit {
                    group_id: group_id.clone(),
                    member_id: request.member_id.to_string(),
                    generation_id: request.generation_id_or_member_epoch,
                    group_instance_id: request.group_instance_id.map(|id| id.to_string()),
                    api_version: version,
                    offsets,
                }),
            )
            .await;
        let code = match reply {
            Some(GroupReply::Committed(Ok(()))) => NONE,
            Some(GroupReply::Committed(Err(error))) => error.code(),
            _ => KafkaError::CoordinatorNotAvailable.code(),
        };
        for (topic, partition) in places {
            topics[topic].partitions[partition].error_code = code;
        }
    }
    OffsetCommitResponse::default().with_topics(topics)
}
