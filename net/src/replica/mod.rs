//! Partition replication on one shard, the Kafka way: for each partition the shard owns, the
//! role the controller's metadata gives this broker (leader or follower), the leader's
//! [`LeaderState`] (followers' positions, ISR, high watermark, acks=all produces waiting for
//! it), and the fetchers that copy the leaders' logs to this broker's followers (`fetcher`).
//!
//! The rules are `ringlog_cluster::replication`'s pure state machines; this module feeds them
//! the shard's events (appends, follower fetches, metadata changes, the clock) and carries
//! out the actions they return (a new high watermark on the log, an ISR change proposed to
//! the controller, an acks=all produce answered). Used only in a multi-node cluster
//! (`BrokerConfig::cluster`); a single-node broker's logs move their own high watermark.

pub mod fetcher;
pub mod peer;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use event_listener::Event;
use ringlog_cluster::controller::MetadataCommand;
use ringlog_cluster::metadata::PartitionRegistration;
use ringlog_cluster::replication::{
    AlterPartitionRequest, EpochEndOffset, EpochEntry, FollowerFetch, LeaderAction,
    LeaderEpochCache, LeaderState, NewLeader, PartitionEpoch, ReplicationConfig, RequestToken,
};
use ringlog_cluster::MetadataImage;
use ringlog_engine::log::PartitionLog;
use ringlog_engine::rt::{self, TaskClass};
use ringlog_engine::{LeaderEpoch, NodeId, Offset, TopicPartition};

use crate::broker::Broker;
use crate::codes::{self, KafkaError};
use crate::groups::storage::OFFSETS_TOPIC;

/// How often each shard gives its leaders' state machines the time (ISR shrinks) and their
/// logs' durable ends (relaxed flush policies sync in the background). A fraction of
/// `replica.lag.time.max.ms`, as Kafka's `isr-expiration` task runs at half of it.
pub const REPLICATION_TICK_INTERVAL: Duration = Duration::from_millis(250);

/// How long an AlterPartition proposal that failed without a definite answer waits before the
/// leader may propose again.
const ALTER_PARTITION_RETRY_DELAY: Duration = Duration::from_millis(500);

/// The broker's role for one partition it hosts.
enum Role {
    Leader(Box<LeaderState>),
    Follower(Following),
}

/// A follower's view of its partition: whom it fetches from, at which epoch, and whether it
/// must first truncate (KIP-101) because the leader or epoch changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Following {
    pub leader: Option<i32>,
    pub leader_epoch: i32,
    pub needs_truncation: bool,
}

/// An acks=all produce waiting for the high watermark.
#[derive(Default)]
struct Waiter {
    result: Cell<Option<Result<(), KafkaError>>>,
    done: Event,
}

/// One per shard.
pub struct Replication {
    node_id: i32,
    roles: RefCell<HashMap<TopicPartition, Role>>,
    waiters: RefCell<HashMap<RequestToken, Rc<Waiter>>>,
    next_token: Cell<u64>,
    /// Leaders this shard fetches from, each with its running fetcher task.
    fetchers: RefCell<HashMap<i32, Rc<fetcher::FetcherHandle>>>,
    clock: Instant,
}

impl Replication {
    pub fn new(node_id: i32) -> Replication {
        Replication {
            node_id,
            roles: RefCell::new(HashMap::new()),
            waiters: RefCell::new(HashMap::new()),
            next_token: Cell::new(0),
            fetchers: RefCell::new(HashMap::new()),
            clock: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// Whether this broker leads `partition` (and so may append to it and serve consumers).
    pub fn is_leader(&self, partition: &TopicPartition) -> bool {
        matches!(self.roles.borrow().get(partition), Some(Role::Leader(_)))
    }

    /// The leader epoch this broker leads `partition` at.
    pub fn leader_epoch(&self, partition: &TopicPartition) -> Option<i32> {
        match self.roles.borrow().get(partition) {
            Some(Role::Leader(state)) => Some(state.leader_epoch().0),
            _ => None,
        }
    }

    /// The partitions this shard follows `leader` for.
    pub fn following(&self, leader: i32) -> Vec<(TopicPartition, Following)> {
        self.roles
            .borrow()
            .iter()
            .filter_map(|(partition, role)| match role {
                Role::Follower(following) if following.leader == Some(leader) => {
                    Some((partition.clone(), *following))
                }
                _ => None,
            })
            .collect()
    }

    /// Makes a follower truncate again before its next fetch (its fetch offset was out of the
    /// leader's range, or an append did not line up).
    pub fn needs_truncation(&self, partition: &TopicPartition) {
        if let Some(Role::Follower(following)) = self.roles.borrow_mut().get_mut(partition) {
            following.needs_truncation = true;
        }
    }

    /// Marks a follower's truncation done, if it still follows at `leader_epoch`.
    pub fn truncated(&self, partition: &TopicPartition, leader_epoch: i32) {
        if let Some(Role::Follower(following)) = self.roles.borrow_mut().get_mut(partition) {
            if following.leader_epoch == leader_epoch {
                following.needs_truncation = false;
            }
        }
    }

    /// Brings every partition this shard owns to the role `image` gives this broker: new
    /// leaderships start, lost ones end (their waiting produces fail with
    /// NOT_LEADER_OR_FOLLOWER), followers get a fetcher for their leader, committed ISR
    /// changes reach the leaders' state machines.
    pub async fn reconcile(&self, broker: &Rc<Broker>, image: &MetadataImage) {
        let owned: Vec<TopicPartition> = broker
            .table()
            .assignments()
            .filter(|(_, shard)| *shard == broker.shard_id)
            .map(|(partition, _)| partition.clone())
            .collect();
        let gone: Vec<TopicPartition> = self
            .roles
            .borrow()
            .keys()
            .filter(|partition| !owned.contains(partition))
            .cloned()
            .collect();
        for partition in gone {
            self.step_down(broker, &partition);
            self.roles.borrow_mut().remove(&partition);
        }
        for partition in owned {
            let Some(registration) = image.partition(&partition.topic, partition.partition.0)
            else {
                continue;
            };
            if registration.leader == self.node_id {
                self.lead(broker, &partition, registration, image).await;
            } else {
                self.follow(broker, &partition, registration);
            }
        }
    }

    async fn lead(
        &self,
        broker: &Rc<Broker>,
        partition: &TopicPartition,
        registration: &PartitionRegistration,
        image: &MetadataImage,
    ) {
        let actions = {
            let mut roles = self.roles.borrow_mut();
            match roles.get_mut(partition) {
                Some(Role::Leader(state))
                    if state.leader_epoch().0 == registration.leader_epoch =>
                {
                    if state.partition_epoch().0 >= registration.partition_epoch {
                        return;
                    }
                    let isr: Vec<NodeId> = registration.isr.iter().map(|id| NodeId(*id)).collect();
                    match state.isr_committed(
                        LeaderEpoch(registration.leader_epoch),
                        PartitionEpoch(registration.partition_epoch),
                        &isr,
                    ) {
                        Ok(actions) => actions,
                        Err(error) => {
                            tracing::warn!(%partition, %error, "committed ISR not taken");
                            Vec::new()
                        }
                    }
                }
                _ => Vec::new(),
            }
        };
        if self.is_leader_at(partition, registration.leader_epoch) {
            self.carry_out(broker, partition, actions);
            return;
        }
        self.step_down(broker, partition);
        let Ok(log) = broker.shard.log(partition) else {
            return;
        };
        let config = log.config();
        let replication = ReplicationConfig {
            replica_lag_time_max_ms: broker.config.cluster.as_ref().map_or(
                ringlog_cluster::replication::REPLICA_LAG_TIME_MAX_MS_DEFAULT,
                |c| c.replica_lag_time_max_ms,
            ),
            min_insync_replicas: config.min_insync_replicas.max(1) as usize,
        };
        let new_leader = NewLeader {
            local: NodeId(self.node_id),
            leader_epoch: LeaderEpoch(registration.leader_epoch),
            partition_epoch: PartitionEpoch(registration.partition_epoch),
            replicas: registration.replicas.iter().map(|id| NodeId(*id)).collect(),
            isr: registration.isr.iter().map(|id| NodeId(*id)).collect(),
            log_end_offset: Offset(log.log_end_offset()),
            durable_end_offset: Offset(log.durable_end_offset()),
            high_watermark: Offset(log.high_watermark()),
        };
        let state = match LeaderState::new(new_leader, replication, self.now_ms()) {
            Ok(state) => state,
            Err(error) => {
                tracing::error!(%partition, %error, "cannot take leadership");
                return;
            }
        };
        tracing::info!(
            %partition, leader_epoch = registration.leader_epoch,
            isr = ?registration.isr, log_end = log.log_end_offset(), "leading"
        );
        self.roles
            .borrow_mut()
            .insert(partition.clone(), Role::Leader(Box::new(state)));
        let _ = image;
        if partition.topic == OFFSETS_TOPIC {
            if let Err(error) = broker.groups.load(partition.partition.0, &log).await {
                tracing::error!(%partition, %error, "offsets partition did not load");
            }
        }
        // The high watermark may move at once (a partition whose ISR is only this broker).
        self.log_progress(broker, partition);
    }

    fn is_leader_at(&self, partition: &TopicPartition, leader_epoch: i32) -> bool {
        self.leader_epoch(partition) == Some(leader_epoch)
    }

    fn follow(
        &self,
        broker: &Rc<Broker>,
        partition: &TopicPartition,
        registration: &PartitionRegistration,
    ) {
        let leader = (registration.leader >= 0).then_some(registration.leader);
        let changed = match self.roles.borrow().get(partition) {
            Some(Role::Follower(following)) => {
                following.leader != leader || following.leader_epoch != registration.leader_epoch
            }
            _ => true,
        };
        if !changed {
            return;
        }
        self.step_down(broker, partition);
        let needs_truncation = match self.roles.borrow().get(partition) {
            Some(Role::Follower(following)) => {
                following.needs_truncation || following.leader_epoch != registration.leader_epoch
            }
            _ => true,
        };
        tracing::info!(
            %partition, ?leader, leader_epoch = registration.leader_epoch, "following"
        );
        self.roles.borrow_mut().insert(
            partition.clone(),
            Role::Follower(Following {
                leader,
                leader_epoch: registration.leader_epoch,
                needs_truncation,
            }),
        );
        if let Some(leader) = leader {
            fetcher::ensure(broker, leader);
        }
    }

    /// Ends this broker's leadership of `partition`, if it has it: waiting acks=all produces
    /// fail so their producers retry against the new leader, and its groups unload.
    fn step_down(&self, broker: &Rc<Broker>, partition: &TopicPartition) {
        let role = self.roles.borrow_mut().remove(partition);
        match role {
            Some(Role::Leader(state)) => {
                tracing::info!(%partition, leader_epoch = state.leader_epoch().0, "no longer leading");
                let actions = state.resign();
                self.carry_out(broker, partition, actions);
                if partition.topic == OFFSETS_TOPIC {
                    broker.groups.unload(partition.partition.0);
                }
            }
            Some(follower) => {
                self.roles.borrow_mut().insert(partition.clone(), follower);
            }
            None => {}
        }
    }

    /// Tells `partition`'s leader state where its log ends and what of it is durable.
    pub fn log_progress(&self, broker: &Rc<Broker>, partition: &TopicPartition) {
        let Ok(log) = broker.shard.log(partition) else {
            return;
        };
        let actions = {
            let mut roles = self.roles.borrow_mut();
            let Some(Role::Leader(state)) = roles.get_mut(partition) else {
                return;
            };
            let end = Offset(log.log_end_offset());
            let durable = Offset(log.durable_end_offset().min(end.0));
            if end > state.log_end_offset() {
                let _ = state.log_appended(end);
            }
            if durable > state.durable_end_offset() {
                state.log_flushed(durable).unwrap_or_default()
            } else {
                Vec::new()
            }
        };
        self.carry_out(broker, partition, actions);
    }

    /// The check before an append: this broker leads `partition`; with acks=all, its ISR is
    /// at least `min.insync.replicas`. Returns the leader epoch to stamp the batches with.
    pub fn check_append(
        &self,
        partition: &TopicPartition,
        acks_all: bool,
    ) -> Result<i32, KafkaError> {
        match self.roles.borrow().get(partition) {
            Some(Role::Leader(state)) => {
                if acks_all {
                    state
                        .check_acks_all_append()
                        .map_err(|error| codes::from_replication(&error))?;
                }
                Ok(state.leader_epoch().0)
            }
            _ => Err(KafkaError::NotLeaderOrFollower),
        }
    }

    /// Waits until the high watermark reaches `end_offset` (every ISR member has the records
    /// below it durably), for at most `timeout`: REQUEST_TIMED_OUT then, as Kafka answers an
    /// acks=all produce whose replication did not finish in time.
    pub async fn await_replication(
        &self,
        broker: &Rc<Broker>,
        partition: &TopicPartition,
        end_offset: i64,
        timeout: Duration,
    ) -> Result<(), KafkaError> {
        let token = RequestToken(self.next_token.get());
        self.next_token.set(token.0 + 1);
        let waiter = Rc::new(Waiter::default());
        self.waiters.borrow_mut().insert(token, Rc::clone(&waiter));
        let actions = {
            let mut roles = self.roles.borrow_mut();
            match roles.get_mut(partition) {
                Some(Role::Leader(state)) => state
                    .await_replication(Offset(end_offset), token)
                    .map_err(|error| codes::from_replication(&error)),
                _ => Err(KafkaError::NotLeaderOrFollower),
            }
        };
        let actions = match actions {
            Ok(actions) => actions,
            Err(error) => {
                self.waiters.borrow_mut().remove(&token);
                return Err(error);
            }
        };
        self.carry_out(broker, partition, actions);
        let wait = async {
            loop {
                let listener = waiter.done.listen();
                if let Some(result) = waiter.result.take() {
                    return result;
                }
                listener.await;
            }
        };
        let result = rt::timeout(timeout, wait).await;
        self.waiters.borrow_mut().remove(&token);
        result.unwrap_or(Err(KafkaError::RequestTimedOut))
    }

    /// A follower's fetch reached this leader: its position counts, and the answer is the high
    /// watermark to send it.
    pub fn follower_fetch(
        &self,
        broker: &Rc<Broker>,
        partition: &TopicPartition,
        replica: i32,
        current_leader_epoch: i32,
        fetch_offset: i64,
    ) -> Result<i64, KafkaError> {
        self.log_progress(broker, partition);
        let decision = {
            let mut roles = self.roles.borrow_mut();
            let Some(Role::Leader(state)) = roles.get_mut(partition) else {
                return Err(KafkaError::NotLeaderOrFollower);
            };
            state
                .follower_fetch(
                    FollowerFetch {
                        replica: NodeId(replica),
                        current_leader_epoch: (current_leader_epoch >= 0)
                            .then_some(LeaderEpoch(current_leader_epoch)),
                        fetch_offset: Offset(fetch_offset),
                        // A follower appends durably under the topic's flush policy before
                        // it fetches again, so its fetch offset is its durable end.
                        durable_offset: Offset(fetch_offset),
                    },
                    self.now_ms(),
                )
                .map_err(|error| codes::from_replication(&error))?
        };
        self.carry_out(broker, partition, decision.actions);
        Ok(decision.high_watermark.0)
    }

    /// OffsetForLeaderEpoch on the leader: where `requested` ends in this log.
    pub fn offset_for_leader_epoch(
        &self,
        partition: &TopicPartition,
        log: &PartitionLog,
        current_leader_epoch: i32,
        requested: i32,
    ) -> Result<EpochEndOffset, KafkaError> {
        let roles = self.roles.borrow();
        let Some(Role::Leader(state)) = roles.get(partition) else {
            return Err(KafkaError::NotLeaderOrFollower);
        };
        let cache = epoch_cache(log, Some(state.leader_epoch().0));
        state
            .offset_for_leader_epoch(
                (current_leader_epoch >= 0).then_some(LeaderEpoch(current_leader_epoch)),
                LeaderEpoch(requested),
                &cache,
            )
            .map_err(|error| codes::from_replication(&error))
    }

    /// The periodic tick: durable ends and the clock for every leader of this shard.
    pub fn tick(&self, broker: &Rc<Broker>) {
        let leaders: Vec<TopicPartition> = self
            .roles
            .borrow()
            .iter()
            .filter(|(_, role)| matches!(role, Role::Leader(_)))
            .map(|(partition, _)| partition.clone())
            .collect();
        let now_ms = self.now_ms();
        for partition in leaders {
            self.log_progress(broker, &partition);
            let actions = match self.roles.borrow_mut().get_mut(&partition) {
                Some(Role::Leader(state)) => state.tick(now_ms),
                _ => Vec::new(),
            };
            self.carry_out(broker, &partition, actions);
        }
    }

    /// Starts the shard's replication tick; it runs until the shard stops.
    pub fn start_timer(broker: &Rc<Broker>) {
        let weak = Rc::downgrade(broker);
        rt::spawn_detached(TaskClass::Background, async move {
            loop {
                rt::sleep(REPLICATION_TICK_INTERVAL).await;
                let Some(broker) = weak.upgrade() else {
                    return;
                };
                broker.replication.tick(&broker);
            }
        });
    }

    fn carry_out(
        &self,
        broker: &Rc<Broker>,
        partition: &TopicPartition,
        actions: Vec<LeaderAction>,
    ) {
        for action in actions {
            match action {
                LeaderAction::HighWatermarkAdvanced(offset) => {
                    if let Ok(log) = broker.shard.log(partition) {
                        log.set_high_watermark(offset.0);
                    }
                }
                LeaderAction::CompleteProduce { token, result } => {
                    if let Some(waiter) = self.waiters.borrow_mut().remove(&token) {
                        waiter.result.set(Some(
                            result.map_err(|error| codes::from_replication(&error)),
                        ));
                        waiter.done.notify(usize::MAX);
                    }
                }
                LeaderAction::AlterPartition(request) => {
                    propose_isr(broker, partition.clone(), request);
                }
            }
        }
    }

    /// The controller refused an ISR change definitely: the leader may propose again.
    fn isr_change_failed(&self, partition: &TopicPartition, request: &AlterPartitionRequest) {
        if let Some(Role::Leader(state)) = self.roles.borrow_mut().get_mut(partition) {
            state.isr_change_failed(request);
        }
    }
}

/// Sends an ISR change to the controller quorum. A committed change comes back as metadata
/// (`reconcile` gives it to the leader); a refusal frees the leader to propose again.
fn propose_isr(broker: &Rc<Broker>, partition: TopicPartition, request: AlterPartitionRequest) {
    let Some(node) = broker.quorum_node() else {
        return;
    };
    let command = MetadataCommand::AlterPartition {
        broker_id: request.leader.0,
        broker_epoch: broker.broker_epoch().unwrap_or(0),
        topic: partition.topic.clone(),
        partition: partition.partition.0,
        leader_epoch: request.leader_epoch.0,
        partition_epoch: request.partition_epoch.0,
        new_isr: request.new_isr.iter().map(|id| id.0).collect(),
    };
    tracing::info!(%partition, new_isr = ?request.new_isr, "proposing an ISR change");
    let proposal = node.propose(command);
    let broker = Rc::clone(broker);
    rt::spawn_detached(TaskClass::Background, async move {
        let outcome = proposal.await;
        match outcome {
            Ok(ringlog_cluster::controller::CommandResponse::Partition(Ok(_))) => {}
            Ok(response) => {
                tracing::info!(%partition, ?response, "ISR change refused");
                broker.replication.isr_change_failed(&partition, &request);
            }
            Err(error) => {
                tracing::info!(%partition, %error, "ISR change not committed");
                rt::sleep(ALTER_PARTITION_RETRY_DELAY).await;
                broker.replication.isr_change_failed(&partition, &request);
            }
        }
    });
}

/// The epoch cache of a log (from the epochs its batches were written at), with `current`
/// added if this broker leads at an epoch it has not written in yet: followers ask about it.
pub fn epoch_cache(log: &PartitionLog, current: Option<i32>) -> LeaderEpochCache {
    let mut entries: Vec<EpochEntry> = log
        .leader_epochs()
        .into_iter()
        .map(|(epoch, start)| EpochEntry {
            epoch: LeaderEpoch(epoch),
            start_offset: Offset(start),
        })
        .collect();
    if let Some(current) = current {
        if entries.last().is_none_or(|last| last.epoch.0 < current) {
            entries.push(EpochEntry {
                epoch: LeaderEpoch(current),
                start_offset: Offset(log.log_end_offset()),
            });
        }
    }
    LeaderEpochCache::from_entries(entries).unwrap_or_default()
}
