//! OffsetDelete: removes committed offsets of a group for partitions it no longer consumes;
//! refused per partition (GROUP_SUBSCRIBED_TO_TOPIC) while an active group subscribes to the
//! topic.

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use crate::broker::Broker;
use crate::codes::KafkaError;
use crate::messages::{GroupReply, GroupRequest};

pub async fn handle(
    broker: &Broker,
    request: OffsetDeleteRequest,
    _version: i16,
) -> OffsetDeleteResponse {
    let image = broker.metadata();
    let group_id = request.group_id.0.to_string();
    let mut topics = Vec::with_capacity(request.topics.len());
    let mut places = Vec::new();
    let mut partitions_asked = Vec::new();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let known = image.topic(&name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let index = partition.partition_index;
            let mut result = OffsetDeleteResponsePartition::default().with_partition_index(index);
            if known.is_some_and(|known| (0..known.partition_count).contains(&index)) {
                places.push((topics.len(), partitions.len()));
                partitions_asked.push((name.clone(), index));
            } else {
                result.error_code = KafkaError::UnknownTopicOrPartition.code();
            }
            partitions.push(result);
        }
        topics.push(
            OffsetDeleteResponseTopic::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    let reply = broker
        .call_coordinator(
            &group_id,
            GroupRequest::OffsetDelete {
                group_id: group_id.clone(),
                partitions: partitions_asked,
            },
        )
        .await;
    match reply {
        Some(GroupReply::OffsetsDeleted(Ok(results))) => {
            for ((topic, partition), result) in places.into_iter().zip(results) {
                topics[topic].partitions[partition].error_code =
                    result.err().map_or(0, |error| error.code());
            }
            OffsetDeleteResponse::default().with_topics(topics)
        }
        Some(GroupReply::OffsetsDeleted(Err(error))) => {
            OffsetDeleteResponse::default().with_error_code(error.code())
        }
        _ => OffsetDeleteResponse::default()
            .with_error_code(KafkaError::CoordinatorNotAvailable.code()),
    }
}
