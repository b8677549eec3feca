//! Fetch: reads each partition on its owning shard (one bus message per shard), long-polls
//! until `min_bytes` are available or `max_wait_ms` passes, and returns the stored batches as
//! they are. Sessions (KIP-227): this broker never creates one, answering every fetch in full
//! with session id 0, which clients accept; a request naming a session gets
//! FETCH_SESSION_ID_NOT_FOUND.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use ringlog_engine::format::batch_records_count;
use ringlog_engine::log::ReadResult;
use ringlog_engine::{ShardId, TopicPartition};

use super::{str_bytes, uuid};
use crate::broker::Broker;
use crate::codes::{KafkaError, NONE};
use crate::messages::{BrokerRequest, BrokerResponse, ReadSpec};

/// Fetch requests name topics by id from this version on (KIP-516).
const TOPIC_ID_VERSION: i16 = 13;

/// Fetch requests carry the follower's id in `replica_state` from this version on (KIP-903).
const REPLICA_STATE_VERSION: i16 = 15;

/// The longest a fetch may wait for data, whatever it asks: Kafka's default
/// `request.timeout.ms` for consumers is 30 s; a longer wait would only make clients time out.
pub const FETCH_MAX_WAIT_CAP: Duration = Duration::from_secs(30);

/// Session epoch of a fetch that wants no session (-1) or asks for a new one (0).
const FINAL_EPOCH: i32 = -1;
const INITIAL_EPOCH: i32 = 0;

/// `isolation_level` READ_COMMITTED.
const READ_COMMITTED: i8 = 1;

struct Slot {
    topic: usize,
    partition_index: i32,
    fetch_offset: i64,
    current_leader_epoch: i32,
    max_bytes: usize,
    partition: Option<TopicPartition>,
    outcome: Result<ReadResult, KafkaError>,
}

pub async fn handle(broker: &Rc<Broker>, request: FetchRequest, version: i16) -> FetchResponse {
    let session_error = if request.session_id != 0 {
        Some(KafkaError::FetchSessionIdNotFound)
    } else if request.session_epoch != FINAL_EPOCH && request.session_epoch != INITIAL_EPOCH {
        Some(KafkaError::InvalidFetchSessionEpoch)
    } else {
        None
    };
    if let Some(error) = session_error {
        return FetchResponse::default()
            .with_error_code(error.code())
            .with_session_id(0);
    }
    let started = Instant::now();
    let max_wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(FETCH_MAX_WAIT_CAP);
    let image = broker.metadata();
    let mut topics: Vec<(String, u128)> = Vec::new();
    let mut slots: Vec<Slot> = Vec::new();
    for topic in request.topics {
        let (name, topic_id) = if version >= TOPIC_ID_VERSION {
            let id = topic.topic_id.as_u128();
            (
                image
                    .topic_by_id(id)
                    .map(|(name, _)| name.clone())
                    .unwrap_or_default(),
                id,
            )
        } else {
            let name = topic.topic.0.to_string();
            let id = image.topic(&name).map_or(0, |topic| topic.topic_id);
            (name, id)
        };
        let known = image.topic(&name);
        let topic_index = topics.len();
        topics.push((name.clone(), topic_id));
        for partition in topic.partitions {
            let exists = known
                .is_some_and(|topic| (0..topic.partition_count).contains(&partition.partition));
            let error = if known.is_none() && version >= TOPIC_ID_VERSION {
                KafkaError::UnknownTopicId
            } else {
                KafkaError::UnknownTopicOrPartition
            };
            slots.push(Slot {
                topic: topic_index,
                partition_index: partition.partition,
                fetch_offset: partition.fetch_offset,
                current_leader_epoch: partition.current_leader_epoch,
                max_bytes: partition.partition_max_bytes.max(0) as usize,
                partition: exists.then(|| TopicPartition::new(name.clone(), partition.partition)),
                outcome: Err(error),
            });
        }
    }
    let response_max_bytes = request.max_bytes.max(0) as usize;
    let min_bytes = request.min_bytes.max(0) as usize;
    // A follower's fetch (KIP-392 moved the replica id into `replica_state` in v15).
    let replica_id = if version >= REPLICA_STATE_VERSION {
        request.replica_state.replica_id.0
    } else {
        request.replica_id.0
    };
    let replica = (replica_id >= 0 && broker.is_clustered()).then_some(replica_id);
    read_all(broker, &mut slots, replica).await;
    let available: usize = slots
        .iter()
        .filter_map(|slot| slot.outcome.as_ref().ok())
        .map(ReadResult::total_bytes)
        .sum();
    let any_error = slots.iter().any(|slot| slot.outcome.is_err());
    if available < min_bytes.max(1) && !any_error && !max_wait.is_zero() && !slots.is_empty() {
        let remaining = max_wait.saturating_sub(started.elapsed());
        wait_for_data(broker, &slots, remaining, replica.is_some()).await;
        read_all(broker, &mut slots, replica).await;
    }
    let node_id = BrokerId(broker.config.node_id);
    let _ = node_id;
    let mut responses: Vec<FetchableTopicResponse> = topics
        .iter()
        .map(|(name, topic_id)| {
            let response = FetchableTopicResponse::default().with_topic_id(uuid(*topic_id));
            if version >= TOPIC_ID_VERSION {
                response
            } else {
                response.with_topic(TopicName(str_bytes(name.clone())))
            }
        })
        .collect();
    let mut budget = response_max_bytes;
    let mut returned_any = false;
    let read_committed = request.isolation_level == READ_COMMITTED;
    for slot in slots {
        let data = match slot.outcome {
            Ok(read) => {
                // Whole batches within the response's byte budget; the first batch of the
                // response always goes, so a batch larger than max_bytes still makes progress.
                let mut records = Vec::new();
                for batch in read.batches {
                    if batch.len() <= budget || !returned_any {
                        budget = budget.saturating_sub(batch.len());
                        returned_any = true;
                        broker.metrics.bytes_out.add(batch.len() as u64);
                        let count = batch_records_count(&batch).unwrap_or(0);
                        broker.metrics.records_out.add(count.max(0) as u64);
                        records.push(batch);
                    } else {
                        break;
                    }
                }
                PartitionData::default()
                    .with_partition_index(slot.partition_index)
                    .with_error_code(NONE)
                    .with_high_watermark(read.high_watermark)
                    .with_last_stable_offset(read.high_watermark)
                    .with_log_start_offset(read.log_start_offset)
                    .with_aborted_transactions(read_committed.then(Vec::new))
                    .with_preferred_read_replica(BrokerId(-1))
                    .with_records(Some(concatenate(records)))
            }
            Err(error) => PartitionData::default()
                .with_partition_index(slot.partition_index)
                .with_error_code(error.code())
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_aborted_transactions(read_committed.then(Vec::new))
                .with_preferred_read_replica(BrokerId(-1))
                .with_records(Some(Bytes::new())),
        };
        responses[slot.topic].partitions.push(data);
    }
    FetchResponse::default()
        .with_error_code(NONE)
        .with_session_id(0)
        .with_responses(responses)
}

/// Reads every known partition on its shard, one message per shard.
async fn read_all(broker: &Rc<Broker>, slots: &mut [Slot], replica: Option<i32>) {
    let items: Vec<(usize, ReadSpec)> = slots
        .iter()
        .enumerate()
        .filter_map(|(index, slot)| {
            let partition = slot.partition.clone()?;
            Some((
                index,
                ReadSpec {
                    partition,
                    offset: slot.fetch_offset,
                    max_bytes: slot.max_bytes,
                    replica: replica.map(|replica| (replica, slot.current_leader_epoch)),
                },
            ))
        })
        .collect();
    let groups = broker.group_by_shard(items, |(_, spec)| &spec.partition);
    for (index, _) in &groups.unassigned {
        slots[*index].outcome = Err(KafkaError::NotLeaderOrFollower);
    }
    let mut calls = Vec::new();
    let mut indexes = Vec::new();
    for (shard, items) in groups.by_shard {
        indexes.push(items.iter().map(|(index, _)| *index).collect::<Vec<_>>());
        calls.push((
            shard,
            BrokerRequest::Read(items.into_iter().map(|(_, spec)| spec).collect()),
        ));
    }
    for (indexes, response) in indexes.into_iter().zip(broker.call_each(calls).await) {
        match response {
            Some(BrokerResponse::Read(results)) => {
                for (index, (_, outcome)) in indexes.into_iter().zip(results) {
                    slots[index].outcome = outcome;
                }
            }
            _ => {
                for index in indexes {
                    slots[index].outcome = Err(KafkaError::NotLeaderOrFollower);
                }
            }
        }
    }
}

/// Waits until any partition's shard reports new data, or `max_wait` passes.
async fn wait_for_data(broker: &Rc<Broker>, slots: &[Slot], max_wait: Duration, log_end: bool) {
    let items: Vec<(TopicPartition, i64)> = slots
        .iter()
        .filter_map(|slot| {
            let partition = slot.partition.clone()?;
            let offset = match &slot.outcome {
                Ok(read) => read.next_offset,
                Err(_) => slot.fetch_offset,
            };
            Some((partition, offset))
        })
        .collect();
    let groups = broker.group_by_shard(items, |(partition, _)| partition);
    let mut waits: Vec<Pin<Box<dyn Future<Output = ()> + '_>>> = groups
        .by_shard
        .into_iter()
        .map(|(shard, partitions): (ShardId, _)| {
            let wait: Pin<Box<dyn Future<Output = ()>>> = Box::pin(async move {
                let request = BrokerRequest::WaitForData {
                    partitions,
                    max_wait,
                    log_end,
                };
                broker.call(shard, request).await;
            });
            wait
        })
        .collect();
    if waits.is_empty() {
        return;
    }
    std::future::poll_fn(|context| {
        for wait in waits.iter_mut() {
            if wait.as_mut().poll(context).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await;
}

/// The batches of one partition as one byte string (no copy for a single batch).
fn concatenate(batches: Vec<Bytes>) -> Bytes {
    match batches.len() {
        0 => Bytes::new(),
        1 => batches.into_iter().next().unwrap_or_default(),
        _ => {
            let total = batches.iter().map(Bytes::len).sum();
            let mut out = BytesMut::with_capacity(total);
            for batch in batches {
                out.extend_from_slice(&batch);
            }
            out.freeze()
        }
    }
}
