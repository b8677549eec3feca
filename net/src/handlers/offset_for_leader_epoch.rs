//! OffsetForLeaderEpoch: the end offset of a leader epoch, which clients use to detect log
//! truncation after a leader change. A single node has one epoch, 0, for every batch of every
//! partition, so that epoch ends at the log end offset and any later one is unknown. In a
//! multi-node cluster the partition's leader answers from its log's epochs (`replica`), for
//! clients and for followers truncating after a leader change (KIP-101).

use std::rc::Rc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use ringlog_engine::TopicPartition;

use crate::broker::Broker;
use crate::codes::{KafkaError, NONE};
use crate::handlers::metadata::SINGLE_NODE_LEADER_EPOCH;
use crate::messages::{BrokerRequest, BrokerResponse, PartitionState};

/// `current_leader_epoch` of a client that does not want its epoch checked (Kafka's
/// `RecordBatch.NO_PARTITION_LEADER_EPOCH`).
const NO_PARTITION_LEADER_EPOCH: i32 = -1;

/// Kafka's answer for an epoch it has no end offset for (`UNDEFINED_EPOCH`,
/// `UNDEFINED_EPOCH_OFFSET`).
const UNDEFINED_EPOCH: i32 = -1;
const UNDEFINED_EPOCH_OFFSET: i64 = -1;

pub async fn handle(
    broker: &Rc<Broker>,
    request: OffsetForLeaderEpochRequest,
    _version: i16,
) -> OffsetForLeaderEpochResponse {
    let image = broker.metadata();
    let mut topics: Vec<OffsetForLeaderTopicResult> = Vec::new();
    // ((topic index, partition index within it, partition index, current leader epoch, epoch
    // asked), partition, nothing more for the shard)
    type Query = ((usize, usize, i32, i32, i32), TopicPartition, ());
    let mut queries: Vec<Query> = Vec::new();
    for topic in request.topics {
        let name = topic.topic.0.to_string();
        let known = image.topic(&name);
        let mut partitions = Vec::new();
        for partition in topic.partitions {
            let exists = known
                .is_some_and(|topic| (0..topic.partition_count).contains(&partition.partition));
            if exists {
                queries.push((
                    (
                        topics.len(),
                        partitions.len(),
                        partition.partition,
                        partition.current_leader_epoch,
                        partition.leader_epoch,
                    ),
                    TopicPartition::new(name.clone(), partition.partition),
                    (),
                ));
            }
            partitions.push(failed(
                partition.partition,
                KafkaError::UnknownTopicOrPartition,
            ));
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions),
        );
    }
    if broker.is_clustered() {
        let queries = queries
            .into_iter()
            .map(|((topic, index, partition, current, asked), tp, ())| {
                ((topic, index, partition), tp, (current, asked))
            })
            .collect();
        let results = broker
            .scatter(
                queries,
                BrokerRequest::EpochEndOffsets,
                |response| match response {
                    BrokerResponse::EpochEndOffsets(results) => Some(results),
                    _ => None,
                },
            )
            .await;
        for ((topic, index, partition), outcome) in results {
            topics[topic].partitions[index] = answer(partition, outcome);
        }
        return OffsetForLeaderEpochResponse::default().with_topics(topics);
    }
    let results = broker
        .scatter(
            queries,
            |partitions| {
                BrokerRequest::State(
                    partitions
                        .into_iter()
                        .map(|(partition, ())| partition)
                        .collect(),
                )
            },
            |response| match response {
                BrokerResponse::State(results) => Some(results),
                _ => None,
            },
        )
        .await;
    for ((topic, index, partition, current_leader_epoch, leader_epoch), state) in results {
        let outcome =
            state.and_then(|state| end_offset_for(current_leader_epoch, leader_epoch, &state));
        topics[topic].partitions[index] = answer(partition, outcome);
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

/// A partition's answer: (epoch, end offset), or the error.
fn answer(partition: i32, outcome: Result<(i32, i64), KafkaError>) -> EpochEndOffset {
    match outcome {
        Ok((epoch, end_offset)) => EpochEndOffset::default()
            .with_error_code(NONE)
            .with_partition(partition)
            .with_leader_epoch(epoch)
            .with_end_offset(end_offset),
        Err(error) => failed(partition, error),
    }
}

fn failed(partition: i32, error: KafkaError) -> EpochEndOffset {
    EpochEndOffset::default()
        .with_error_code(error.code())
        .with_partition(partition)
        .with_leader_epoch(UNDEFINED_EPOCH)
        .with_end_offset(UNDEFINED_EPOCH_OFFSET)
}

/// Kafka's leader-side answer (`Partition.lastOffsetForLeaderEpoch` and
/// `LeaderEpochFileCache.endOffsetFor`) for a log whose only epoch is
/// [`SINGLE_NODE_LEADER_EPOCH`], starting at the log start offset: (epoch, end offset).
fn end_offset_for(
    current_leader_epoch: i32,
    leader_epoch: i32,
    state: &PartitionState,
) -> Result<(i32, i64), KafkaError> {
    if current_leader_epoch != NO_PARTITION_LEADER_EPOCH {
        if current_leader_epoch < SINGLE_NODE_LEADER_EPOCH {
            return Err(KafkaError::FencedLeaderEpoch);
        }
        if current_leader_epoch > SINGLE_NODE_LEADER_EPOCH {
            // The client has seen a newer epoch than this leader's.
            return Err(KafkaError::UnknownLeaderEpoch);
        }
    }
    Ok(match leader_epoch {
        UNDEFINED_EPOCH => (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET),
        SINGLE_NODE_LEADER_EPOCH => (SINGLE_NODE_LEADER_EPOCH, state.log_end_offset),
        // Later than the only epoch there is.
        epoch if epoch > SINGLE_NODE_LEADER_EPOCH => (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET),
        // Earlier than the first epoch: the first epoch's start offset, under the epoch asked.
        epoch => (epoch, state.log_start_offset),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (current leader epoch, epoch asked, answer)
    type Case = (i32, i32, Result<(i32, i64), KafkaError>);

    #[test]
    fn epoch_zero_ends_at_the_log_end() {
        let state = PartitionState {
            log_start_offset: 5,
            high_watermark: 40,
            log_end_offset: 42,
            size_bytes: 0,
        };
        let table: &[Case] = &[
            (-1, 0, Ok((0, 42))),
            (0, 0, Ok((0, 42))),
            (-1, 1, Ok((-1, -1))),
            (0, 7, Ok((-1, -1))),
            (-1, -1, Ok((-1, -1))),
            (-1, -3, Ok((-3, 5))),
            (1, 0, Err(KafkaError::UnknownLeaderEpoch)),
            (-2, 0, Err(KafkaError::FencedLeaderEpoch)),
        ];
        for (current, asked, expected) in table {
            assert_eq!(
                end_offset_for(*current, *asked, &state),
                *expected,
                "current {current}, asked {asked}"
            );
        }
    }
}
