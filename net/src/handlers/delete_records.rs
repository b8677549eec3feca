//! DeleteRecords: advances partitions' log start offsets (-1: to the high watermark) on their
//! owning shards, which drop the segments wholly below it; answers with the new low watermark.

use std::rc::Rc;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use ringlog_engine::TopicPartition;

use crate::broker::Broker;
use crate::codes::{KafkaError, NONE};
use crate::messages::{BrokerRequest, BrokerResponse};

/// The low watermark of a partition the request could not touch.
const LOW_WATERMARK_UNKNOWN: i64 = -1;

pub async fn handle(
    broker: &Rc<Broker>,
    request: DeleteRecordsRequest,
    _version: i16,
) -> DeleteRecordsResponse {
    let image = broker.metadata();
    let mut topics: Vec<DeleteRecordsTopicResult> = Vec::new();
    // ((topic index, partition index within it), partition, offset)
    let mut deletes: Vec<((usize, usize), TopicPartition, i64)> = Vec::new();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let known = image.topic(&name);
        let mut partitions = Vec::new();
        for partition in topic.partitions {
            let exists = known.is_some_and(|topic| {
                (0..topic.partition_count).contains(&partition.partition_index)
            });
            if exists {
                deletes.push((
                    (topics.len(), partitions.len()),
                    TopicPartition::new(name.clone(), partition.partition_index),
                    partition.offset,
                ));
            }
            partitions.push(
                DeleteRecordsPartitionResult::default()
                    .with_partition_index(partition.partition_index)
                    .with_low_watermark(LOW_WATERMARK_UNKNOWN)
                    .with_error_code(KafkaError::UnknownTopicOrPartition.code()),
            );
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    let results = broker
        .scatter(
            deletes,
            BrokerRequest::DeleteRecords,
            |response| match response {
                BrokerResponse::DeletedRecords(results) => Some(results),
                _ => None,
            },
        )
        .await;
    for ((topic, index), result) in results {
        let entry = &mut topics[topic].partitions[index];
        match result {
            Ok(low_watermark) => {
                entry.error_code = NONE;
                entry.low_watermark = low_watermark;
            }
            Err(error) => entry.error_code = error.code(),
        }
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
