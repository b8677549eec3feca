//! The follower side: one fetcher task per (shard, leader broker), like Kafka's replica fetcher
//! threads. It carries every partition of its shard that follows that leader in one Fetch
//! request (replica id = this broker), appends what comes back verbatim
//! (`PartitionLog::append_replicated`), takes the leader's high watermark and log start, and,
//! before fetching a partition whose leader or epoch changed, truncates it where its log and
//! the leader's diverge (KIP-101 with KIP-279: OffsetForLeaderEpoch, `replication::follower`).
//! The task ends once its shard follows nothing on that leader.

use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, OffsetForLeaderEpochRequest, RequestKind, ResponseKind,
    TopicName,
};
use ringlog_cluster::replication::follower::{self, TruncationStep, TRUNCATION_ROUNDS_MAX};
use ringlog_cluster::replication::EpochEndOffset;
use ringlog_engine::rt::{self, TaskClass};
use ringlog_engine::{LeaderEpoch, Offset, TopicPartition};

use super::peer::{Peer, PeerError};
use super::{epoch_cache, Following};
use crate::broker::Broker;
use crate::codes::{KafkaError, NONE};
use crate::handlers::str_bytes;

/// The Fetch version followers send: the last one naming topics (v13 names them by id), with
/// `current_leader_epoch` (v9+) for fencing.
const REPLICA_FETCH_VERSION: i16 = 12;

/// The OffsetForLeaderEpoch version followers send (v3 carries the replica id).
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 3;

/// Kafka's `replica.fetch.wait.max.ms`: how long the leader may hold a fetch with no new data.
/// Short, because an acks=all produce completes only when a follower's next fetch shows it has
/// the records.
pub const REPLICA_FETCH_WAIT_MAX_MS: i32 = 500;

/// Kafka's `replica.fetch.max.bytes` (per partition) and `replica.fetch.response.max.bytes`.
pub const REPLICA_FETCH_MAX_BYTES: i32 = 1 << 20;
pub const REPLICA_FETCH_RESPONSE_MAX_BYTES: i32 = 10 << 20;

/// How long a request to the leader may take beyond the fetch's own wait.
const REPLICA_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Kafka's `replica.fetch.backoff.ms`: the pause after a failed fetch (leader unreachable, not
/// the leader any more, metadata not yet here).
pub const REPLICA_FETCH_BACKOFF: Duration = Duration::from_millis(200);

/// The running fetcher of one leader on one shard.
#[derive(Default)]
pub struct FetcherHandle;

/// Starts the fetcher for `leader` on this shard unless it runs already.
pub fn ensure(broker: &Rc<Broker>, leader: i32) {
    if broker.replication.fetchers.borrow().contains_key(&leader) {
        return;
    }
    broker
        .replication
        .fetchers
        .borrow_mut()
        .insert(leader, Rc::new(FetcherHandle));
    let weak = Rc::downgrade(broker);
    rt::spawn_detached(TaskClass::Background, async move {
        run(weak, leader).await;
    });
}

async fn run(weak: std::rc::Weak<Broker>, leader: i32) {
    let mut peer: Option<Peer> = None;
    loop {
        let Some(broker) = weak.upgrade() else {
            return;
        };
        if broker.is_stopping() {
            broker.replication.fetchers.borrow_mut().remove(&leader);
            return;
        }
        let partitions = broker.replication.following(leader);
        if partitions.is_empty() {
            broker.replication.fetchers.borrow_mut().remove(&leader);
            return;
        }
        let Some(address) = broker.broker_address(leader) else {
            drop(broker);
            rt::sleep(REPLICA_FETCH_BACKOFF).await;
            continue;
        };
        if peer.is_none() {
            match Peer::connect(address).await {
                Ok(connected) => peer = Some(connected),
                Err(error) => {
                    tracing::debug!(leader, %address, %error, "cannot reach the leader");
                    drop(broker);
                    rt::sleep(REPLICA_FETCH_BACKOFF).await;
                    continue;
                }
            }
        }
        let connection = peer.as_mut().expect("connected above");
        let outcome = fetch_once(&broker, connection, leader, &partitions).await;
        drop(broker);
        match outcome {
            Ok(true) => {}
            Ok(false) => rt::sleep(REPLICA_FETCH_BACKOFF).await,
            Err(error) => {
                tracing::debug!(leader, %error, "replica fetch failed");
                peer = None;
                rt::sleep(REPLICA_FETCH_BACKOFF).await;
            }
        }
    }
}

/// One round: truncations first, then one Fetch. `Ok(false)`: nothing could be fetched this
/// round (back off before the next).
async fn fetch_once(
    broker: &Rc<Broker>,
    peer: &mut Peer,
    leader: i32,
    partitions: &[(TopicPartition, Following)],
) -> Result<bool, PeerError> {
    let mut ready = Vec::new();
    for (partition, following) in partitions {
        if following.needs_truncation {
            if truncate(broker, peer, partition, following.leader_epoch).await? {
                broker
                    .replication
                    .truncated(partition, following.leader_epoch);
                ready.push((partition.clone(), *following));
            }
        } else {
            ready.push((partition.clone(), *following));
        }
    }
    if ready.is_empty() {
        return Ok(false);
    }
    let mut topics: Vec<FetchTopic> = Vec::new();
    for (partition, following) in &ready {
        let Ok(log) = broker.shard.log(partition) else {
            continue;
        };
        let entry = FetchPartition::default()
            .with_partition(partition.partition.0)
            .with_current_leader_epoch(following.leader_epoch)
            .with_fetch_offset(log.log_end_offset())
            .with_last_fetched_epoch(-1)
            .with_log_start_offset(log.log_start_offset())
            .with_partition_max_bytes(REPLICA_FETCH_MAX_BYTES);
        match topics
            .iter_mut()
            .find(|topic| topic.topic.0.as_str() == partition.topic)
        {
            Some(topic) => topic.partitions.push(entry),
            None => topics.push(
                FetchTopic::default()
                    .with_topic(TopicName(str_bytes(partition.topic.clone())))
                    .with_partitions(vec![entry]),
            ),
        }
    }
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(broker.config.node_id))
        .with_max_wait_ms(REPLICA_FETCH_WAIT_MAX_MS)
        .with_min_bytes(1)
        .with_max_bytes(REPLICA_FETCH_RESPONSE_MAX_BYTES)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics);
    let timeout = REPLICA_REQUEST_TIMEOUT + Duration::from_millis(REPLICA_FETCH_WAIT_MAX_MS as u64);
    let response = peer
        .call(
            ApiKey::Fetch,
            REPLICA_FETCH_VERSION,
            RequestKind::Fetch(request),
            timeout,
        )
        .await?;
    let ResponseKind::Fetch(response) = response else {
        return Err(PeerError::Protocol("not a Fetch response".into()));
    };
    if response.error_code != NONE {
        return Ok(false);
    }
    let mut progressed = false;
    let mut appends = Vec::new();
    for topic in response.responses {
        for data in topic.partitions {
            let partition = TopicPartition::new(topic.topic.0.to_string(), data.partition_index);
            // The partition may have changed hands while the fetch was out.
            let Some((_, following)) = ready.iter().find(|(p, _)| *p == partition) else {
                continue;
            };
            if !broker
                .replication
                .following(leader)
                .iter()
                .any(|(p, f)| *p == partition && f.leader_epoch == following.leader_epoch)
            {
                continue;
            }
            match KafkaError::try_from_code(data.error_code) {
                None => {
                    // Each partition's append runs on its own, so their fdatasyncs overlap
                    // rather than queue behind one another.
                    let broker = Rc::clone(broker);
                    appends.push(rt::spawn(TaskClass::Latency, async move {
                        take_fetched(&broker, partition, data).await;
                    }));
                    progressed = true;
                }
                Some(KafkaError::OffsetOutOfRange) => {
                    tracing::warn!(%partition, "fetch offset out of range on the leader; truncating again");
                    broker.replication.needs_truncation(&partition);
                }
                Some(error) => {
                    tracing::debug!(%partition, ?error, "replica fetch refused");
                }
            }
        }
    }
    for append in appends {
        append.await;
    }
    Ok(progressed)
}

/// A follower takes one partition's part of a fetch response: the batches, appended as they
/// are, then the leader's high watermark and log start.
async fn take_fetched(
    broker: &Broker,
    partition: TopicPartition,
    data: kafka_protocol::messages::fetch_response::PartitionData,
) {
    let records = data.records.unwrap_or_default();
    if !records.is_empty() {
        if let Err(error) = broker.replicated_append(&partition, &records).await {
            tracing::warn!(%partition, ?error, "replicated append failed");
            broker.replication.needs_truncation(&partition);
            return;
        }
    }
    if let Ok(log) = broker.shard.log(&partition) {
        log.set_high_watermark(data.high_watermark);
        if data.log_start_offset > log.log_start_offset()
            && data.log_start_offset <= log.high_watermark()
        {
            if let Err(error) = log.delete_records(data.log_start_offset).await {
                tracing::warn!(%partition, %error, "log start not advanced");
            }
        }
    }
}

/// Truncates `partition` where it diverges from the leader's log. `Ok(false)`: not done (the
/// leader refused, for now), try again next round.
async fn truncate(
    broker: &Rc<Broker>,
    peer: &mut Peer,
    partition: &TopicPartition,
    leader_epoch: i32,
) -> Result<bool, PeerError> {
    let Ok(log) = broker.shard.log(partition) else {
        return Ok(false);
    };
    let cache = epoch_cache(&log, None);
    let mut step = follower::start_truncation(
        &cache,
        Offset(log.log_end_offset()),
        Offset(log.high_watermark()),
    );
    for _ in 0..TRUNCATION_ROUNDS_MAX {
        let target = step.truncate_to();
        if target.0 < log.log_end_offset() {
            if let Err(error) = broker.truncate_replica(partition, target.0).await {
                tracing::error!(%partition, ?error, "truncation failed");
                return Ok(false);
            }
        }
        let asked = match step {
            TruncationStep::Fetch { .. } => {
                tracing::info!(%partition, log_end = log.log_end_offset(), "truncated; fetching");
                return Ok(true);
            }
            TruncationStep::AskLeader { epoch, .. } => epoch,
        };
        let Some(answer) = ask_leader(broker, peer, partition, leader_epoch, asked.0).await? else {
            return Ok(false);
        };
        let cache = epoch_cache(&log, None);
        step = follower::after_leader_answer(&cache, Offset(log.log_end_offset()), asked, answer);
    }
    Ok(true)
}

async fn ask_leader(
    broker: &Rc<Broker>,
    peer: &mut Peer,
    partition: &TopicPartition,
    current_leader_epoch: i32,
    asked: i32,
) -> Result<Option<EpochEndOffset>, PeerError> {
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(broker.config.node_id))
        .with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(TopicName(str_bytes(partition.topic.clone())))
            .with_partitions(vec![OffsetForLeaderPartition::default()
                .with_partition(partition.partition.0)
                .with_current_leader_epoch(current_leader_epoch)
                .with_leader_epoch(asked)])]);
    let response = peer
        .call(
            ApiKey::OffsetForLeaderEpoch,
            OFFSET_FOR_LEADER_EPOCH_VERSION,
            RequestKind::OffsetForLeaderEpoch(request),
            REPLICA_REQUEST_TIMEOUT,
        )
        .await?;
    let ResponseKind::OffsetForLeaderEpoch(response) = response else {
        return Err(PeerError::Protocol(
            "not an OffsetForLeaderEpoch response".into(),
        ));
    };
    let answer = response
        .topics
        .into_iter()
        .flat_map(|topic| topic.partitions)
        .find(|result| result.partition == partition.partition.0);
    Ok(answer.and_then(|result| {
        if result.error_code != NONE {
            tracing::debug!(%partition, code = result.error_code, "OffsetForLeaderEpoch refused");
            return None;
        }
        Some(EpochEndOffset {
            epoch: LeaderEpoch(result.leader_epoch),
            end_offset: Offset(result.end_offset),
        })
    }))
}
