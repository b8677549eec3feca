//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3, v7+), earliest local (-4), or
//! the first offset at or after a timestamp; answered by each partition's owning shard.

use std::rc::Rc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use ringlog_engine::TopicPartition;

use crate::broker::Broker;
use crate::codes::{KafkaError, NONE};
use crate::handlers::metadata::SINGLE_NODE_LEADER_EPOCH;
use crate::messages::{BrokerRequest, BrokerResponse};

pub async fn handle(
    broker: &Rc<Broker>,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let image = broker.metadata();
    let mut responses: Vec<ListOffsetsTopicResponse> = Vec::new();
    // (topic index, partition index within it, query)
    let mut queries: Vec<((usize, usize), TopicPartition, i64)> = Vec::new();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let known = image.topic(&name);
        let mut partitions = Vec::new();
        for partition in topic.partitions {
            let exists = known.is_some_and(|topic| {
                (0..topic.partition_count).contains(&partition.partition_index)
            });
            let response = ListOffsetsPartitionResponse::default()
                .with_partition_index(partition.partition_index)
                .with_error_code(KafkaError::UnknownTopicOrPartition.code())
                .with_timestamp(-1)
                .with_offset(-1)
                .with_leader_epoch(-1);
            if exists {
                queries.push((
                    (responses.len(), partitions.len()),
                    TopicPartition::new(name.clone(), partition.partition_index),
                    partition.timestamp,
                ));
            }
            partitions.push(response);
        }
        responses.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    let results = broker
        .scatter(
            queries,
            BrokerRequest::OffsetForTime,
            |response| match response {
                BrokerResponse::OffsetForTime(results) => Some(results),
                _ => None,
            },
        )
        .await;
    for ((topic, index), result) in results {
        let entry = &mut responses[topic].partitions[index];
        match result {
            Ok((offset, timestamp)) => {
                entry.error_code = NONE;
                entry.offset = offset;
                entry.timestamp = timestamp;
                // The leader epoch is in responses from v4 on (KIP-320).
                if version >= 4 && offset >= 0 {
                    entry.leader_epoch = SINGLE_NODE_LEADER_EPOCH;
                }
            }
            Err(error) => entry.error_code = error.code(),
        }
    }
    ListOffsetsResponse::default().with_topics(responses)
}
