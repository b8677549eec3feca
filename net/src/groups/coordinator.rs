//! The I/O around the classic group state machine on one shard: the groups whose
//! `__consumer_offsets` partition this shard owns, their committed offsets, the held JoinGroup
//! and SyncGroup responses, the timer that sends `Tick`s, and the records that make all of it
//! survive a restart (appended to the group's offsets partition, replayed when it opens).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use event_listener::Event;
use ringlog_cluster::MetadataImage;
use ringlog_engine::format::{build_batch, KeyValue};
use ringlog_engine::log::{now_ms, PartitionLog, ReadLimit};
use ringlog_engine::rt::{self, TaskClass};

use super::classic::{
    Group, GroupAction, GroupConfig, GroupEvent, GroupResponse, GroupState, RequestToken,
};
use super::consumer::{
    ConsumerConfig, ConsumerGroup, ConsumerGroupDescription, ConsumerHeartbeat,
    ConsumerHeartbeatResponse, HeartbeatError, JOIN_GROUP_MEMBER_EPOCH,
};
use super::storage::{self, CommittedOffset, RecordKey, StoredGroup};
use crate::admin::snapshot::{AssignedTopic, CommittedSnapshot, GroupSnapshot, MemberSnapshot};
use crate::broker::Broker;
use crate::codes::KafkaError;
use crate::config::BrokerConfig;
use crate::messages::{
    FetchedOffsets, GroupPartitions, GroupReply, GroupRequest, ListedGroup, OffsetCommit,
    OffsetsWanted,
};

/// How often each shard looks for groups whose deadline (session, join phase, pending member)
/// has passed. Session timeouts are at least 6 s, so 100 ms late is 2 % of the shortest one, and
/// an idle shard wakes only ten times a second.
pub const GROUP_TICK_INTERVAL: Duration = Duration::from_millis(100);

/// Bytes read per step while replaying an offsets partition.
const REPLAY_READ_BYTES: usize = 4 << 20;

/// An offsets partition is checkpointed (every live record rewritten at its end, everything
/// before dropped) once it holds this many records and at least
/// [`OFFSETS_CHECKPOINT_GROWTH_FACTOR`] times its live ones. 100,000 small records replay in
/// well under a second at start-up, and a checkpoint per 100,000 commits costs little.
pub const OFFSETS_CHECKPOINT_RECORDS_MIN: u64 = 100_000;

/// How many times its live records an offsets partition may hold before it is checkpointed:
/// each checkpoint rewrites the live records once, so the rewriting costs at most a quarter of
/// the appends, and start-up replays at most four times the live records.
pub const OFFSETS_CHECKPOINT_GROWTH_FACTOR: u64 = 4;

/// Largest batch a checkpoint appends: well under the default `max.message.bytes` (1 MiB), so
/// a checkpoint is never refused, and large enough that few batches make one.
const CHECKPOINT_BATCH_BYTES: usize = 256 << 10;

/// A loaded offsets partition, or one still being replayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Load {
    Loading,
    Loaded,
}

/// One offsets partition owned by this shard.
struct OffsetsPartition {
    load: Cell<Load>,
    /// Appends to the partition share it; a checkpoint takes it alone (writer-preferring: a
    /// waiting checkpoint stops new appends at once). Every writer updates memory in the same
    /// poll its append returns in, so a checkpoint never reads memory that lags the log.
    gate: async_lock::RwLock<()>,
    checkpointing: Cell<bool>,
    /// Live records (group snapshots and committed offsets) at the last load or checkpoint.
    live_records: Cell<u64>,
}

impl OffsetsPartition {
    fn new() -> Rc<OffsetsPartition> {
        Rc::new(OffsetsPartition {
            load: Cell::new(Load::Loading),
            gate: async_lock::RwLock::new(()),
            checkpointing: Cell::new(false),
            live_records: Cell::new(0),
        })
    }
}

/// The group a group id names. It speaks one protocol at a time: an empty group of one kind
/// becomes the other when a member of the other protocol arrives, as Kafka converts them.
enum AnyGroup {
    Classic(Group),
    Consumer(ConsumerGroup),
}

impl AnyGroup {
    fn is_empty(&self) -> bool {
        match self {
            AnyGroup::Classic(group) => {
                matches!(group.state(), GroupState::Empty | GroupState::Dead)
            }
            AnyGroup::Consumer(group) => group.is_empty(),
        }
    }

    fn next_deadline_ms(&self) -> Option<i64> {
        match self {
            AnyGroup::Classic(group) => group.next_deadline_ms(),
            AnyGroup::Consumer(group) => group.next_deadline_ms(),
        }
    }

    fn listed(&self) -> Option<ListedGroup> {
        match self {
            AnyGroup::Classic(group) if group.state() == GroupState::Dead => None,
            AnyGroup::Classic(group) => {
                let description = group.describe();
                Some(ListedGroup {
                    group_id: description.group_id,
                    protocol_type: description.protocol_type,
                    state: description.state.name(),
                    group_type: GROUP_TYPE_CLASSIC,
                })
            }
            AnyGroup::Consumer(group) => Some(ListedGroup {
                group_id: group.group_id().to_string(),
                protocol_type: CONSUMER_PROTOCOL_TYPE.to_string(),
                state: group.state().name(),
                group_type: GROUP_TYPE_CONSUMER,
            }),
        }
    }
}

/// KIP-848's names for the two kinds of group (ListGroups' `GroupType`).
pub const GROUP_TYPE_CLASSIC: &str = "classic";
pub const GROUP_TYPE_CONSUMER: &str = "consumer";

/// The protocol type a consumer-protocol group reports (what classic consumers also use).
const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// A group and its committed offsets, with a lock held while an event's actions are carried
/// out, so that a `Persist` is durable before any later `Respond` of the same group is sent.
struct GroupSlot {
    partition: i32,
    group: RefCell<AnyGroup>,
    /// The value of the group's latest durable snapshot record, which a checkpoint rewrites.
    persisted: RefCell<Option<Bytes>>,
    /// When the group was first seen without members, for offset retention.
    empty_since_ms: Cell<Option<i64>>,
    offsets: RefCell<BTreeMap<(String, i32), CommittedOffset>>,
    /// Held while an event's actions are carried out.
    lock: async_lock::Mutex<()>,
}

impl GroupSlot {
    fn new(partition: i32, group: AnyGroup) -> Rc<GroupSlot> {
        Rc::new(GroupSlot {
            partition,
            group: RefCell::new(group),
            persisted: RefCell::new(None),
            empty_since_ms: Cell::new(None),
            offsets: RefCell::new(BTreeMap::new()),
            lock: async_lock::Mutex::new(()),
        })
    }

    async fn turn(&self) -> async_lock::MutexGuard<'_, ()> {
        self.lock.lock().await
    }
}

/// A held response: completed by a `Respond` action, awaited by the request's bus handler.
#[derive(Default)]
struct Completion {
    response: RefCell<Option<GroupResponse>>,
    ready: Event,
}

impl Completion {
    fn complete(&self, response: GroupResponse) {
        *self.response.borrow_mut() = Some(response);
        self.ready.notify(usize::MAX);
    }

    async fn wait(&self) -> GroupResponse {
        loop {
            let listener = self.ready.listen();
            if let Some(response) = self.response.borrow_mut().take() {
                return response;
            }
            listener.await;
        }
    }
}

/// One per shard: the groups of the `__consumer_offsets` partitions this shard owns.
pub struct GroupCoordinator {
    config: GroupConfig,
    consumer_config: ConsumerConfig,
    /// [`OFFSETS_CHECKPOINT_RECORDS_MIN`] unless a test wants checkpoints sooner.
    checkpoint_records_min: u64,
    offsets_retention_ms: i64,
    retention_check_interval_ms: i64,
    next_retention_check_ms: Cell<i64>,
    partitions: RefCell<HashMap<i32, Rc<OffsetsPartition>>>,
    groups: RefCell<HashMap<String, Rc<GroupSlot>>>,
    pending: RefCell<HashMap<RequestToken, Rc<Completion>>>,
    next_token: Cell<u64>,
}

impl GroupCoordinator {
    pub fn new(broker_config: &BrokerConfig) -> GroupCoordinator {
        GroupCoordinator {
            config: GroupConfig::default(),
            consumer_config: ConsumerConfig::default(),
            checkpoint_records_min: broker_config.offsets_checkpoint_records_min,
            offsets_retention_ms: broker_config.offsets_retention_ms,
            retention_check_interval_ms: broker_config.offsets_retention_check_interval_ms,
            next_retention_check_ms: Cell::new(
                now_ms() + broker_config.offsets_retention_check_interval_ms,
            ),
            partitions: RefCell::default(),
            groups: RefCell::default(),
            pending: RefCell::default(),
            next_token: Cell::new(0),
        }
    }

    /// Starts the timer that sends `Tick` to groups whose deadline passed.
    pub fn start_timer(broker: &Rc<Broker>) {
        let broker = Rc::clone(broker);
        rt::spawn_detached(TaskClass::Background, async move {
            loop {
                rt::sleep(GROUP_TICK_INTERVAL).await;
                broker.groups.tick(&broker).await;
            }
        });
    }

    async fn tick(&self, broker: &Broker) {
        let now = now_ms();
        let due: Vec<Rc<GroupSlot>> = self
            .groups
            .borrow()
            .values()
            .filter(|slot| {
                slot.group
                    .borrow()
                    .next_deadline_ms()
                    .is_some_and(|deadline| deadline <= now)
            })
            .cloned()
            .collect();
        for slot in due {
            // A group busy with a request is left for the next tick.
            let Some(_turn) = slot.lock.try_lock() else {
                continue;
            };
            let now = now_ms();
            let (actions, snapshot) = match &mut *slot.group.borrow_mut() {
                AnyGroup::Classic(classic) => (classic.handle(GroupEvent::Tick, now), None),
                AnyGroup::Consumer(consumer) => (
                    Vec::new(),
                    consumer
                        .expire(now)
                        .then(|| StoredGroup::Consumer(consumer.snapshot())),
                ),
            };
            self.perform(broker, &slot, actions).await;
            if let Some(snapshot) = snapshot {
                if let Err(error) = self.persist(broker, &slot, &snapshot).await {
                    // The expired members come back on a restart and expire again.
                    tracing::error!(?error, "consumer group snapshot not written");
                }
            }
        }
        let grown: Vec<i32> = self
            .partitions
            .borrow()
            .iter()
            .filter(|(index, state)| {
                state.load.get() == Load::Loaded
                    && !state.checkpointing.get()
                    && broker
                        .shard
                        .log(&storage::offsets_partition(**index))
                        .is_ok_and(|log| {
                            let records = (log.log_end_offset() - log.log_start_offset()) as u64;
                            needs_checkpoint(
                                records,
                                state.live_records.get(),
                                self.checkpoint_records_min,
                            )
                        })
            })
            .map(|(index, _)| *index)
            .collect();
        for partition in grown {
            if let Err(error) = self.checkpoint(broker, partition).await {
                tracing::error!(partition, %error, "offsets partition checkpoint failed");
            }
        }
        if now >= self.next_retention_check_ms.get() {
            self.next_retention_check_ms
                .set(now + self.retention_check_interval_ms);
            self.expire_offsets(broker, now).await;
        }
    }

    /// Offset retention (Kafka's `offsets.retention.minutes`, KIP-211): the committed offsets of
    /// a group without members expire once both their commit and the group's emptying are
    /// older than the retention; a group left with neither members nor offsets is removed.
    async fn expire_offsets(&self, broker: &Broker, now: i64) {
        let slots: Vec<(String, Rc<GroupSlot>)> = self
            .groups
            .borrow()
            .iter()
            .map(|(group_id, slot)| (group_id.clone(), Rc::clone(slot)))
            .collect();
        for (group_id, slot) in slots {
            let _turn = slot.turn().await;
            if !self.is_current(&group_id, &slot) {
                continue;
            }
            if !slot.group.borrow().is_empty() {
                slot.empty_since_ms.set(None);
                continue;
            }
            let empty_since = slot.empty_since_ms.get().unwrap_or(now);
            slot.empty_since_ms.set(Some(empty_since));
            let expired: Vec<(String, i32)> = slot
                .offsets
                .borrow()
                .iter()
                .filter(|(_, value)| {
                    now - value.commit_timestamp_ms.max(empty_since) >= self.offsets_retention_ms
                })
                .map(|(key, _)| key.clone())
                .collect();
            let remove_group = expired.len() == slot.offsets.borrow().len();
            let mut keys: Vec<Vec<u8>> = expired
                .iter()
                .map(|(topic, index)| {
                    RecordKey::Offset {
                        group_id: group_id.clone(),
                        topic: topic.clone(),
                        partition: *index,
                    }
                    .encode()
                })
                .collect();
            if remove_group && slot.persisted.borrow().is_some() {
                keys.push(
                    RecordKey::Group {
                        group_id: group_id.clone(),
                    }
                    .encode(),
                );
            }
            if !keys.is_empty() {
                let records: Vec<_> = keys
                    .iter()
                    .map(|key| (Some(key.as_slice()), None))
                    .collect();
                if let Err(error) = self.append(broker, slot.partition, &records).await {
                    tracing::error!(group = %group_id, ?error, "expired offsets not removed");
                    continue;
                }
                let mut offsets = slot.offsets.borrow_mut();
                for key in &expired {
                    offsets.remove(key);
                }
                tracing::info!(group = %group_id, expired = expired.len(), "committed offsets expired");
            }
            if remove_group {
                self.groups.borrow_mut().remove(&group_id);
            }
        }
    }

    /// Rewrites every live record of offsets partition `partition` (each group's latest durable
    /// snapshot and its committed offsets) at the partition's end, then drops everything
    /// before them, so start-up replays the live records rather than every commit ever made.
    /// A crash half way leaves duplicates of live values, which replay the same.
    async fn checkpoint(&self, broker: &Broker, partition: i32) -> Result<(), String> {
        let Some(state) = self.partitions.borrow().get(&partition).cloned() else {
            return Ok(());
        };
        if state.checkpointing.replace(true) {
            return Ok(());
        }
        let _done = scopeguard(|| state.checkpointing.set(false));
        let log = broker
            .shard
            .log(&storage::offsets_partition(partition))
            .map_err(|error| error.to_string())?;
        let _exclusive = state.gate.write().await;
        let start = log.log_end_offset();
        let dropped = start - log.log_start_offset();
        let mut records: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for (group_id, slot) in self.groups.borrow().iter() {
            if slot.partition != partition {
                continue;
            }
            if let Some(value) = slot.persisted.borrow().as_ref() {
                let key = RecordKey::Group {
                    group_id: group_id.clone(),
                };
                records.push((key.encode(), value.to_vec()));
            }
            for ((topic, index), value) in slot.offsets.borrow().iter() {
                let key = RecordKey::Offset {
                    group_id: group_id.clone(),
                    topic: topic.clone(),
                    partition: *index,
                };
                records.push((key.encode(), storage::encode_offset(value)));
            }
        }
        let live = records.len() as u64;
        let mut rest = records.as_slice();
        while !rest.is_empty() {
            let mut bytes = 0_usize;
            let take = rest
                .iter()
                .take_while(|(key, value)| {
                    bytes += key.len() + value.len();
                    bytes <= CHECKPOINT_BATCH_BYTES
                })
                .count()
                .max(1);
            let (chunk, tail) = rest.split_at(take);
            rest = tail;
            let kvs: Vec<KeyValue<'_>> = chunk
                .iter()
                .map(|(key, value)| (Some(key.as_slice()), Some(value.as_slice())))
                .collect();
            let batch = build_batch(now_ms(), &kvs);
            broker
                .append_offsets(&log, &batch)
                .await
                .map_err(|error| format!("{error:?}"))?;
        }
        log.delete_records(start)
            .await
            .map_err(|error| error.to_string())?;
        state.live_records.set(live);
        tracing::info!(partition, live, dropped, "offsets partition checkpointed");
        Ok(())
    }

    /// Serves one group request on the coordinating shard.
    pub async fn handle(&self, broker: &Broker, request: GroupRequest) -> GroupReply {
        match request {
            GroupRequest::Join { group_id, request } => GroupReply::Member(
                self.member_event(broker, &group_id, true, |token| GroupEvent::Join {
                    token,
                    request,
                })
                .await,
            ),
            GroupRequest::Sync { group_id, request } => GroupReply::Member(
                self.member_event(broker, &group_id, false, |token| GroupEvent::Sync {
                    token,
                    request,
                })
                .await,
            ),
            GroupRequest::Heartbeat { group_id, request } => GroupReply::Member(
                self.member_event(broker, &group_id, false, |token| GroupEvent::Heartbeat {
                    token,
                    request,
                })
                .await,
            ),
            GroupRequest::Leave { group_id, request } => GroupReply::Member(
                self.member_event(broker, &group_id, false, |token| GroupEvent::Leave {
                    token,
                    request,
                })
                .await,
            ),
            GroupRequest::Commit(commit) => {
                GroupReply::Committed(self.commit(broker, commit).await)
            }
            GroupRequest::Fetch(groups) => GroupReply::Fetched(
                groups
                    .into_iter()
                    .map(|(group_id, wanted)| self.fetch(&group_id, wanted))
                    .collect(),
            ),
            GroupRequest::Describe(groups) => GroupReply::Described(
                groups
                    .iter()
                    .map(|group_id| {
                        self.check_coordinator(group_id)?;
                        let Some(slot) = self.slot(group_id) else {
                            return Ok(None);
                        };
                        let group = slot.group.borrow();
                        match &*group {
                            AnyGroup::Classic(group) => Ok(Some(group.describe())),
                            // Kafka 4.0: "Group {id} is not a classic group."
                            AnyGroup::Consumer(_) => Err(KafkaError::GroupIdNotFound),
                        }
                    })
                    .collect(),
            ),
            GroupRequest::ConsumerDescribe(groups) => GroupReply::ConsumerDescribed(
                groups
                    .iter()
                    .map(|group_id| self.consumer_describe(group_id))
                    .collect(),
            ),
            GroupRequest::ConsumerHeartbeat { group_id, request } => GroupReply::ConsumerHeartbeat(
                self.consumer_heartbeat(broker, &group_id, request).await,
            ),
            GroupRequest::List => GroupReply::Listed(
                self.groups
                    .borrow()
                    .values()
                    .filter_map(|slot| slot.group.borrow().listed())
                    .collect(),
            ),
            GroupRequest::Delete(groups) => {
                let mut results = Vec::with_capacity(groups.len());
                for group_id in groups {
                    results.push(self.delete(broker, &group_id).await);
                }
                GroupReply::Deleted(results)
            }
            GroupRequest::OffsetDelete {
                group_id,
                partitions,
            } => {
                GroupReply::OffsetsDeleted(self.delete_offsets(broker, &group_id, partitions).await)
            }
        }
    }

    /// Every group this shard coordinates, with its members' assignments and its committed
    /// offsets, for the admin port (`shard` is this shard).
    pub fn admin_snapshot(&self, image: &MetadataImage, shard: u16) -> Vec<GroupSnapshot> {
        let topic_name = |topic_id: u128| {
            image.topic_by_id(topic_id).map_or_else(
                || format!("(topic id {topic_id:032x})"),
                |(name, _)| name.clone(),
            )
        };
        let mut groups: Vec<GroupSnapshot> = self
            .groups
            .borrow()
            .iter()
            .filter_map(|(group_id, slot)| {
                let group = slot.group.borrow();
                let (group_type, state, protocol_type, protocol, members) = match &*group {
                    AnyGroup::Classic(group) if group.state() == GroupState::Dead => return None,
                    AnyGroup::Classic(group) => {
                        let description = group.describe();
                        let consumer = description.protocol_type == CONSUMER_PROTOCOL_TYPE;
                        let members = description
                            .members
                            .into_iter()
                            .map(|member| MemberSnapshot {
                                assignment: consumer
                                    .then(|| decode_assignment(&member.assignment))
                                    .flatten(),
                                member_id: member.member_id,
                                group_instance_id: member.group_instance_id,
                                client_id: member.client_id,
                                client_host: member.client_host,
                            })
                            .collect();
                        (
                            GROUP_TYPE_CLASSIC,
                            description.state.name(),
                            description.protocol_type,
                            description.protocol_name,
                            members,
                        )
                    }
                    AnyGroup::Consumer(group) => {
                        let description = group.describe();
                        let members = description
                            .members
                            .into_iter()
                            .map(|member| MemberSnapshot {
                                assignment: Some(
                                    member
                                        .assignment
                                        .iter()
                                        .map(|(topic_id, partitions)| AssignedTopic {
                                            topic: topic_name(*topic_id),
                                            partitions: partitions.iter().copied().collect(),
                                        })
                                        .collect(),
                                ),
                                member_id: member.member_id,
                                group_instance_id: member.instance_id,
                                client_id: member.client_id,
                                client_host: member.client_host,
                            })
                            .collect();
                        (
                            GROUP_TYPE_CONSUMER,
                            description.state.name(),
                            CONSUMER_PROTOCOL_TYPE.to_string(),
                            description.assignor_name,
                            members,
                        )
                    }
                };
                let offsets = slot
                    .offsets
                    .borrow()
                    .iter()
                    .map(|((topic, partition), committed)| CommittedSnapshot {
                        topic: topic.clone(),
                        partition: *partition,
                        committed_offset: committed.offset,
                        high_watermark: None,
                        lag: None,
                    })
                    .collect();
                Some(GroupSnapshot {
                    group_id: group_id.clone(),
                    group_type,
                    state,
                    protocol_type,
                    protocol,
                    coordinator_shard: shard,
                    members,
                    offsets,
                })
            })
            .collect();
        groups.sort_by(|left, right| left.group_id.cmp(&right.group_id));
        groups
    }

    /// The group's offsets partition, if this shard coordinates it and has loaded it.
    fn check_coordinator(&self, group_id: &str) -> Result<i32, KafkaError> {
        let partition = storage::partition_for(group_id);
        match self
            .partitions
            .borrow()
            .get(&partition)
            .map(|state| state.load.get())
        {
            Some(Load::Loaded) => Ok(partition),
            Some(Load::Loading) => Err(KafkaError::CoordinatorLoadInProgress),
            None => Err(KafkaError::NotCoordinator),
        }
    }

    /// Whether `slot` is still the group's (a request that waited for the group's turn may
    /// find it removed by DeleteGroups or offset expiry; it must not act on the orphan).
    fn is_current(&self, group_id: &str, slot: &Rc<GroupSlot>) -> bool {
        self.groups
            .borrow()
            .get(group_id)
            .is_some_and(|current| Rc::ptr_eq(current, slot))
    }

    fn slot(&self, group_id: &str) -> Option<Rc<GroupSlot>> {
        self.groups.borrow().get(group_id).cloned()
    }

    fn slot_or_new(
        &self,
        group_id: &str,
        partition: i32,
        new: impl FnOnce() -> AnyGroup,
    ) -> Rc<GroupSlot> {
        let mut groups = self.groups.borrow_mut();
        Rc::clone(
            groups
                .entry(group_id.to_string())
                .or_insert_with(|| GroupSlot::new(partition, new())),
        )
    }

    fn new_group(&self, group_id: &str) -> AnyGroup {
        AnyGroup::Classic(Group::new(
            group_id.to_string(),
            self.config.clone(),
            fastrand::u64(..),
        ))
    }

    fn new_consumer_group(&self, group_id: &str) -> AnyGroup {
        AnyGroup::Consumer(ConsumerGroup::new(
            group_id.to_string(),
            self.consumer_config.clone(),
            fastrand::u64(..),
        ))
    }

    /// Forgets a group created for a request that left it empty and wrote nothing (a refused
    /// first heartbeat), so that failed joins do not leave groups behind. A group that was
    /// written stays, Empty, as in Kafka, until offset retention removes it with a tombstone:
    /// memory and the log keep agreeing.
    fn forget_if_empty(&self, group_id: &str, slot: &Rc<GroupSlot>) {
        let mut groups = self.groups.borrow_mut();
        let same = groups
            .get(group_id)
            .is_some_and(|current| Rc::ptr_eq(current, slot));
        let untouched = slot.offsets.borrow().is_empty()
            && slot.persisted.borrow().is_none()
            && slot.group.borrow().is_empty();
        if same && untouched {
            groups.remove(group_id);
        }
    }

    /// Feeds a member request to its group and waits for the group's answer to it (a JoinGroup
    /// or SyncGroup may be held for a while; nothing else of the shard waits meanwhile).
    async fn member_event(
        &self,
        broker: &Broker,
        group_id: &str,
        create: bool,
        event: impl FnOnce(RequestToken) -> GroupEvent,
    ) -> Result<GroupResponse, KafkaError> {
        let partition = self.check_coordinator(group_id)?;
        if group_id.is_empty() || group_id.len() > storage::NAME_BYTES_MAX {
            return Err(KafkaError::InvalidGroupId);
        }
        let token = RequestToken(self.next_token.get());
        self.next_token.set(token.0 + 1);
        let completion = Rc::new(Completion::default());
        self.pending
            .borrow_mut()
            .insert(token, Rc::clone(&completion));
        let (slot, kept) = match (self.slot(group_id), create) {
            (Some(slot), _) => (slot, true),
            (None, true) => (
                self.slot_or_new(group_id, partition, || self.new_group(group_id)),
                true,
            ),
            // Not kept: a request for an unknown group must not create one. A fresh group
            // answers it as Kafka does for a missing group (UNKNOWN_MEMBER_ID).
            (None, false) => (GroupSlot::new(partition, self.new_group(group_id)), false),
        };
        {
            let _turn = slot.turn().await;
            if kept && !self.is_current(group_id, &slot) {
                self.pending.borrow_mut().remove(&token);
                return Err(KafkaError::CoordinatorNotAvailable);
            }
            let actions = {
                let mut group = slot.group.borrow_mut();
                if let AnyGroup::Consumer(consumer) = &*group {
                    if !consumer.is_empty() {
                        self.pending.borrow_mut().remove(&token);
                        // A classic member cannot join a group of the new protocol's members.
                        return Err(match create {
                            true => KafkaError::InconsistentGroupProtocol,
                            false => KafkaError::GroupIdNotFound,
                        });
                    }
                    *group = self.new_group(group_id);
                }
                let AnyGroup::Classic(classic) = &mut *group else {
                    unreachable!("made classic above");
                };
                classic.handle(event(token), now_ms())
            };
            self.perform(broker, &slot, actions).await;
        }
        let response = completion.wait().await;
        Ok(response)
    }

    /// Serves a ConsumerGroupHeartbeat: answered at once, after any change it made to the group
    /// is durable. A change that cannot be written is undone, and the member told to retry.
    async fn consumer_heartbeat(
        &self,
        broker: &Broker,
        group_id: &str,
        request: ConsumerHeartbeat,
    ) -> Result<ConsumerHeartbeatResponse, HeartbeatError> {
        let error = |error: KafkaError, message: String| HeartbeatError { error, message };
        let partition = self
            .check_coordinator(group_id)
            .map_err(|kafka| error(kafka, format!("{kafka:?}")))?;
        if group_id.is_empty() || group_id.len() > storage::NAME_BYTES_MAX {
            return Err(error(
                KafkaError::InvalidRequest,
                "GroupId can't be empty.".to_string(),
            ));
        }
        let slot = match self.slot(group_id) {
            Some(slot) => slot,
            None if request.member_epoch == JOIN_GROUP_MEMBER_EPOCH => {
                self.slot_or_new(group_id, partition, || self.new_consumer_group(group_id))
            }
            // Kafka answers UNKNOWN_MEMBER_ID, so the member joins afresh.
            None => {
                return Err(error(
                    KafkaError::UnknownMemberId,
                    format!("Group {group_id} not found."),
                ))
            }
        };
        let result = {
            let _turn = slot.turn().await;
            if !self.is_current(group_id, &slot) {
                return Err(error(
                    KafkaError::CoordinatorNotAvailable,
                    "the group was removed meanwhile; retry".to_string(),
                ));
            }
            let outcome = {
                let mut group = slot.group.borrow_mut();
                if let AnyGroup::Classic(classic) = &*group {
                    if classic.member_count() > 0 {
                        return Err(error(
                            KafkaError::GroupIdNotFound,
                            format!("Group {group_id} is not a consumer group."),
                        ));
                    }
                    *group = self.new_consumer_group(group_id);
                }
                let AnyGroup::Consumer(consumer) = &mut *group else {
                    unreachable!("made a consumer group above");
                };
                let image = broker.metadata();
                let outcome = consumer.heartbeat(request, &image, now_ms());
                let snapshot = outcome
                    .persist
                    .then(|| StoredGroup::Consumer(consumer.snapshot()));
                (outcome.result, snapshot)
            };
            match outcome {
                (result, None) => result,
                (result, Some(snapshot)) => match self.persist(broker, &slot, &snapshot).await {
                    Ok(()) => result,
                    Err(kafka) => {
                        // Back to what the log says: the last durable snapshot.
                        let persisted = slot.persisted.borrow().clone();
                        *slot.group.borrow_mut() =
                            self.restore_group(group_id, persisted.as_ref(), now_ms());
                        Err(error(
                            kafka,
                            "the group's change was not written".to_string(),
                        ))
                    }
                },
            }
        };
        self.forget_if_empty(group_id, &slot);
        result
    }

    fn consumer_describe(&self, group_id: &str) -> Result<ConsumerGroupDescription, KafkaError> {
        self.check_coordinator(group_id)?;
        let slot = self.slot(group_id).ok_or(KafkaError::GroupIdNotFound)?;
        let group = slot.group.borrow();
        match &*group {
            AnyGroup::Consumer(group) => Ok(group.describe()),
            AnyGroup::Classic(_) => Err(KafkaError::GroupIdNotFound),
        }
    }

    /// Appends a group's snapshot to its offsets partition; returns once it is durable.
    async fn persist(
        &self,
        broker: &Broker,
        slot: &GroupSlot,
        snapshot: &StoredGroup,
    ) -> Result<(), KafkaError> {
        let group_id = match snapshot {
            StoredGroup::Classic(snapshot) => &snapshot.group_id,
            StoredGroup::Consumer(snapshot) => &snapshot.group_id,
        };
        let key = RecordKey::Group {
            group_id: group_id.clone(),
        }
        .encode();
        let value = storage::encode_group(snapshot);
        let records = [(Some(key.as_slice()), Some(value.as_slice()))];
        self.append(broker, slot.partition, &records).await?;
        *slot.persisted.borrow_mut() = Some(Bytes::from(value));
        Ok(())
    }

    /// Carries out a group's actions in order: a snapshot is durable before any later response
    /// is released. If it cannot be written, the JoinGroup and SyncGroup answers after it say
    /// COORDINATOR_NOT_AVAILABLE, so the members find the coordinator again and retry.
    async fn perform(&self, broker: &Broker, slot: &GroupSlot, actions: Vec<GroupAction>) {
        let mut persist_failed = false;
        for action in actions {
            match action {
                GroupAction::Persist(snapshot) => {
                    let group_id = snapshot.group_id.clone();
                    let stored = StoredGroup::Classic(snapshot);
                    if let Err(error) = self.persist(broker, slot, &stored).await {
                        tracing::error!(group = %group_id, ?error, "group snapshot not written");
                        persist_failed = true;
                    }
                }
                GroupAction::Respond {
                    token,
                    mut response,
                } => {
                    if persist_failed {
                        match &mut response {
                            GroupResponse::Join(join) => {
                                join.error = Some(KafkaError::CoordinatorNotAvailable)
                            }
                            GroupResponse::Sync(sync) => {
                                sync.error = Some(KafkaError::CoordinatorNotAvailable)
                            }
                            _ => {}
                        }
                    }
                    let completion = self.pending.borrow_mut().remove(&token);
                    if let Some(completion) = completion {
                        completion.complete(response);
                    }
                }
            }
        }
    }

    /// Appends records to offsets partition `partition` and returns once they are durable.
    async fn append(
        &self,
        broker: &Broker,
        partition: i32,
        records: &[KeyValue<'_>],
    ) -> Result<(), KafkaError> {
        let log = broker
            .shard
            .log(&storage::offsets_partition(partition))
            .map_err(|_| KafkaError::NotCoordinator)?;
        let state = self
            .partitions
            .borrow()
            .get(&partition)
            .cloned()
            .ok_or(KafkaError::NotCoordinator)?;
        let _turn = state.gate.read().await;
        let batch = build_batch(now_ms(), records);
        broker.append_offsets(&log, &batch).await.map_err(|error| {
            tracing::error!(?error, partition, "offsets partition append failed");
            match error {
                KafkaError::NotCoordinator | KafkaError::RequestTimedOut => error,
                _ => KafkaError::CoordinatorNotAvailable,
            }
        })?;
        Ok(())
    }

    async fn commit(&self, broker: &Broker, commit: OffsetCommit) -> Result<(), KafkaError> {
        let OffsetCommit {
            group_id,
            member_id,
            generation_id,
            group_instance_id,
            api_version,
            offsets,
        } = commit;
        let (group_id, member_id) = (group_id.as_str(), member_id.as_str());
        let group_instance_id = group_instance_id.as_deref();
        let partition = self.check_coordinator(group_id)?;
        if group_id.len() > storage::NAME_BYTES_MAX {
            return Err(KafkaError::InvalidGroupId);
        }
        let simple = generation_id < 0 && member_id.is_empty() && group_instance_id.is_none();
        let slot = match self.slot(group_id) {
            Some(slot) => slot,
            // Kafka creates the group for a simple commit; a member's commit to a group that
            // does not exist names a generation that does not either.
            None if simple => self.slot_or_new(group_id, partition, || self.new_group(group_id)),
            None => return Err(KafkaError::IllegalGeneration),
        };
        let _turn = slot.turn().await;
        if !self.is_current(group_id, &slot) {
            return Err(KafkaError::CoordinatorNotAvailable);
        }
        match &mut *slot.group.borrow_mut() {
            AnyGroup::Classic(group) => {
                group.validate_commit(member_id, generation_id, group_instance_id, now_ms())?
            }
            AnyGroup::Consumer(group) => {
                group.validate_commit(member_id, generation_id, api_version)?
            }
        }
        if offsets.is_empty() {
            return Ok(());
        }
        let encoded: Vec<(Vec<u8>, Vec<u8>)> = offsets
            .iter()
            .map(|((topic, index), value)| {
                let key = RecordKey::Offset {
                    group_id: group_id.to_string(),
                    topic: topic.clone(),
                    partition: *index,
                };
                (key.encode(), storage::encode_offset(value))
            })
            .collect();
        let records: Vec<_> = encoded
            .iter()
            .map(|(key, value)| (Some(key.as_slice()), Some(value.as_slice())))
            .collect();
        self.append(broker, partition, &records).await?;
        slot.offsets.borrow_mut().extend(offsets);
        Ok(())
    }

    fn fetch(&self, group_id: &str, wanted: OffsetsWanted) -> Result<FetchedOffsets, KafkaError> {
        self.check_coordinator(group_id)?;
        let slot = self.slot(group_id);
        if let (Some(slot), Some((member_id, member_epoch))) = (&slot, &wanted.member) {
            if let AnyGroup::Consumer(group) = &*slot.group.borrow() {
                group.validate_fetch(member_id, *member_epoch)?;
            }
        }
        let partitions = wanted.partitions;
        let committed = slot.as_ref().map(|slot| slot.offsets.borrow());
        let lookup = |key: &(String, i32)| {
            committed
                .as_ref()
                .and_then(|offsets| offsets.get(key).cloned())
        };
        Ok(match partitions {
            Some(partitions) => partitions
                .into_iter()
                .map(|key| {
                    let value = lookup(&key);
                    (key, value)
                })
                .collect(),
            None => committed
                .as_ref()
                .map(|offsets| {
                    offsets
                        .iter()
                        .map(|(key, value)| (key.clone(), Some(value.clone())))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    async fn delete(&self, broker: &Broker, group_id: &str) -> Result<(), KafkaError> {
        let partition = self.check_coordinator(group_id)?;
        let slot = self.slot(group_id).ok_or(KafkaError::GroupIdNotFound)?;
        let _turn = slot.turn().await;
        match &*slot.group.borrow() {
            AnyGroup::Classic(group) if group.state() == GroupState::Dead => {
                return Err(KafkaError::GroupIdNotFound)
            }
            group if !group.is_empty() => return Err(KafkaError::NonEmptyGroup),
            _ => {}
        }
        let mut keys = vec![RecordKey::Group {
            group_id: group_id.to_string(),
        }
        .encode()];
        keys.extend(slot.offsets.borrow().keys().map(|(topic, index)| {
            RecordKey::Offset {
                group_id: group_id.to_string(),
                topic: topic.clone(),
                partition: *index,
            }
            .encode()
        }));
        let records: Vec<_> = keys
            .iter()
            .map(|key| (Some(key.as_slice()), None))
            .collect();
        self.append(broker, partition, &records).await?;
        if let AnyGroup::Classic(group) = &mut *slot.group.borrow_mut() {
            group.delete()?;
        }
        slot.offsets.borrow_mut().clear();
        self.groups.borrow_mut().remove(group_id);
        Ok(())
    }

    async fn delete_offsets(
        &self,
        broker: &Broker,
        group_id: &str,
        partitions: GroupPartitions,
    ) -> Result<Vec<Result<(), KafkaError>>, KafkaError> {
        let partition = self.check_coordinator(group_id)?;
        let slot = self.slot(group_id).ok_or(KafkaError::GroupIdNotFound)?;
        let _turn = slot.turn().await;
        let subscribed = match &*slot.group.borrow() {
            AnyGroup::Classic(group) => subscribed_topics(group),
            AnyGroup::Consumer(group) if group.is_empty() => Subscription::None,
            AnyGroup::Consumer(group) => Subscription::Topics(
                partitions
                    .iter()
                    .map(|(topic, _)| topic.clone())
                    .filter(|topic| group.is_subscribed_to(topic))
                    .collect(),
            ),
        };
        let results: Vec<Result<(), KafkaError>> = partitions
            .iter()
            .map(|(topic, _)| match &subscribed {
                Subscription::None => Ok(()),
                Subscription::Topics(topics) if !topics.contains(topic) => Ok(()),
                _ => Err(KafkaError::GroupSubscribedToTopic),
            })
            .collect();
        let keys: Vec<Vec<u8>> = partitions
            .iter()
            .zip(&results)
            .filter(|(key, result)| result.is_ok() && slot.offsets.borrow().contains_key(*key))
            .map(|((topic, index), _)| {
                RecordKey::Offset {
                    group_id: group_id.to_string(),
                    topic: topic.clone(),
                    partition: *index,
                }
                .encode()
            })
            .collect();
        if !keys.is_empty() {
            let records: Vec<_> = keys
                .iter()
                .map(|key| (Some(key.as_slice()), None))
                .collect();
            self.append(broker, partition, &records).await?;
            let mut offsets = slot.offsets.borrow_mut();
            for (key, result) in partitions.iter().zip(&results) {
                if result.is_ok() {
                    offsets.remove(key);
                }
            }
        }
        Ok(results)
    }

    /// Replays offsets partition `partition` (just opened on this shard) into committed offsets
    /// and groups. Requests for its groups get COORDINATOR_LOAD_IN_PROGRESS meanwhile.
    pub async fn load(&self, partition: i32, log: &PartitionLog) -> ringlog_engine::Result<()> {
        let state = OffsetsPartition::new();
        self.partitions
            .borrow_mut()
            .insert(partition, Rc::clone(&state));
        let mut snapshots: HashMap<String, Option<Bytes>> = HashMap::new();
        let mut offsets: HashMap<String, BTreeMap<(String, i32), CommittedOffset>> = HashMap::new();
        let end = log.log_end_offset();
        let mut offset = log.log_start_offset();
        let mut skipped = 0_usize;
        while offset < end {
            let read = log
                .read(offset, REPLAY_READ_BYTES, ReadLimit::LogEnd)
                .await?;
            if read.batches.is_empty() {
                break;
            }
            for batch in &read.batches {
                let records = match storage::batch_records(batch) {
                    Ok(records) => records,
                    Err(reason) => {
                        tracing::warn!(partition, %reason, "offsets batch skipped");
                        skipped += 1;
                        continue;
                    }
                };
                for (key, value) in records {
                    let Some(key) = key.and_then(|key| RecordKey::decode(&key).ok()) else {
                        skipped += 1;
                        continue;
                    };
                    match key {
                        RecordKey::Group { group_id } => {
                            snapshots.insert(group_id, value);
                        }
                        RecordKey::Offset {
                            group_id,
                            topic,
                            partition: index,
                        } => {
                            let group = offsets.entry(group_id).or_default();
                            match value.map(|value| storage::decode_offset(&value)) {
                                Some(Ok(value)) => {
                                    group.insert((topic, index), value);
                                }
                                Some(Err(_)) => skipped += 1,
                                None => {
                                    group.remove(&(topic, index));
                                }
                            }
                        }
                    }
                }
            }
            offset = read.next_offset;
            rt::yield_if_needed().await;
        }
        let now = now_ms();
        let mut restored = 0_usize;
        let mut group_ids: Vec<String> = snapshots
            .iter()
            .filter(|(_, value)| value.is_some())
            .map(|(group_id, _)| group_id.clone())
            .collect();
        group_ids.extend(
            offsets
                .iter()
                .filter(|(_, committed)| !committed.is_empty())
                .map(|(group_id, _)| group_id.clone()),
        );
        group_ids.sort();
        group_ids.dedup();
        let mut live = 0_u64;
        for group_id in group_ids {
            let persisted = snapshots.get(&group_id).cloned().flatten();
            let group = self.restore_group(&group_id, persisted.as_ref(), now);
            let slot = GroupSlot::new(partition, group);
            *slot.offsets.borrow_mut() = offsets.remove(&group_id).unwrap_or_default();
            // A group restored without members went empty at about its last commit (or its
            // offsets would never expire across restarts).
            if slot.group.borrow().is_empty() {
                let last_commit = slot
                    .offsets
                    .borrow()
                    .values()
                    .map(|value| value.commit_timestamp_ms)
                    .max();
                slot.empty_since_ms.set(Some(last_commit.unwrap_or(now)));
            }
            live += u64::from(persisted.is_some()) + slot.offsets.borrow().len() as u64;
            // Kept as read, even if this version cannot decode it: a checkpoint rewrites it.
            *slot.persisted.borrow_mut() = persisted;
            self.groups.borrow_mut().insert(group_id, slot);
            restored += 1;
        }
        state.live_records.set(live);
        if skipped > 0 {
            tracing::warn!(partition, skipped, "unreadable offsets records skipped");
        }
        tracing::debug!(
            partition,
            groups = restored,
            live,
            "offsets partition loaded"
        );
        state.load.set(Load::Loaded);
        Ok(())
    }

    /// A group as its durable snapshot record `persisted` describes it at `now`; a fresh classic
    /// group if there is none or it cannot be read.
    fn restore_group(&self, group_id: &str, persisted: Option<&Bytes>, now: i64) -> AnyGroup {
        let group = match persisted.map(|value| storage::decode_group(value)) {
            Some(Ok(StoredGroup::Classic(snapshot))) => {
                Group::restore(snapshot, self.config.clone(), fastrand::u64(..), now)
                    .map(AnyGroup::Classic)
                    .map_err(|error| error.to_string())
            }
            Some(Ok(StoredGroup::Consumer(snapshot))) => ConsumerGroup::restore(
                snapshot,
                self.consumer_config.clone(),
                fastrand::u64(..),
                now,
            )
            .map(AnyGroup::Consumer),
            Some(Err(error)) => Err(error),
            None => Ok(self.new_group(group_id)),
        };
        group.unwrap_or_else(|error| {
            tracing::warn!(group = %group_id, %error, "group not restored; starting it empty");
            self.new_group(group_id)
        })
    }

    /// Forgets an offsets partition this shard no longer has (its topic was deleted).
    pub fn unload(&self, partition: i32) {
        self.partitions.borrow_mut().remove(&partition);
        self.groups
            .borrow_mut()
            .retain(|_, slot| slot.partition != partition);
    }
}

/// Whether an offsets partition holding `records` records, `live` of them live, is due for a
/// checkpoint.
fn needs_checkpoint(records: u64, live: u64, records_min: u64) -> bool {
    records >= records_min && records >= live.saturating_mul(OFFSETS_CHECKPOINT_GROWTH_FACTOR)
}

/// Runs `action` when dropped (also when the future holding it is dropped).
fn scopeguard(action: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(action) = self.0.take() {
                action();
            }
        }
    }
    Guard(Some(action))
}

/// The topics a group's members subscribe to, as far as the coordinator can tell.
enum Subscription {
    /// No members: nothing is subscribed.
    None,
    Topics(Vec<String>),
    /// Members whose subscriptions cannot be read (a rebalance in progress, or a protocol
    /// other than "consumer"): treated as subscribed to everything.
    Unknown,
}

/// A classic "consumer" member's assignment (`ConsumerProtocolAssignment`, version-prefixed,
/// as the group leader wrote it); `None` if it is empty or does not decode.
fn decode_assignment(assignment: &Bytes) -> Option<Vec<AssignedTopic>> {
    use kafka_protocol::messages::ConsumerProtocolAssignment;
    use kafka_protocol::protocol::Decodable;
    let mut bytes = assignment.clone();
    if bytes.len() < 2 {
        return None;
    }
    let version = bytes::Buf::get_i16(&mut bytes);
    let decoded = ConsumerProtocolAssignment::decode(&mut bytes, version.clamp(0, 3)).ok()?;
    Some(
        decoded
            .assigned_partitions
            .into_iter()
            .map(|topic| AssignedTopic {
                topic: topic.topic.to_string(),
                partitions: topic.partitions,
            })
            .collect(),
    )
}

fn subscribed_topics(group: &Group) -> Subscription {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Decodable;
    let description = group.describe();
    if description.members.is_empty() {
        return Subscription::None;
    }
    if description.state != GroupState::Stable || description.protocol_type != "consumer" {
        return Subscription::Unknown;
    }
    let mut topics = Vec::new();
    for member in &description.members {
        let mut metadata = member.metadata.clone();
        if metadata.len() < 2 {
            return Subscription::Unknown;
        }
        let version = i16::from_be_bytes([metadata[0], metadata[1]]);
        let _ = bytes::Buf::get_i16(&mut metadata);
        match ConsumerProtocolSubscription::decode(&mut metadata, version.clamp(0, 3)) {
            Ok(subscription) => {
                topics.extend(subscription.topics.iter().map(|topic| topic.to_string()))
            }
            Err(_) => return Subscription::Unknown,
        }
    }
    Subscription::Topics(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_is_due_past_the_minimum_and_the_growth_factor() {
        let min = OFFSETS_CHECKPOINT_RECORDS_MIN;
        let cases = [
            // (records, live, due)
            (0, 0, false),
            (min - 1, 0, false),
            (min, 0, true),
            (min, min / 4, true),
            (min, min / 4 + 1, false),
            (4 * min, min, true),
            (4 * min - 1, min, false),
        ];
        for (records, live, due) in cases {
            assert_eq!(
                needs_checkpoint(records, live, min),
                due,
                "{records} {live}"
            );
        }
    }
}
