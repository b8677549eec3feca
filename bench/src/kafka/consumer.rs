//! The benchmark consumer: one thread per consumer, fetching its partitions from their leaders
//! (one Fetch in flight per leader, as Kafka's clients do) and walking every record to count it,
//! read its send time (end-to-end latency) and check its offset (order, duplicates, gaps).
//! Partitions are either handed out by the run (no group) or assigned through a classic
//! consumer group (JoinGroup/SyncGroup with a round-robin assignment by the leader, heartbeats,
//! offset commits), so it works against any Kafka broker.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, BrokerId, ConsumerProtocolAssignment, ConsumerProtocolSubscription, FetchRequest,
    FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    OffsetCommitRequest, OffsetFetchRequest, RequestKind, ResponseKind, SyncGroupRequest,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::admin::{self, error_name, text, Layout};
use super::producer::{insert_range, OffsetRanges, Shared};
use super::records::{clock, walk_records, TIMESTAMP_BYTES};
use super::wire::Connection;
use crate::measure::new_histogram;

/// Fetch versions this client speaks (v4: record batches, isolation level; v12 is the last
/// that names topics rather than ids).
const FETCH_VERSIONS: std::ops::RangeInclusive<i16> = 4..=12;
/// Kafka's consumer defaults: `fetch.max.wait.ms`, `fetch.max.bytes`,
/// `max.partition.fetch.bytes`, `fetch.min.bytes`.
const FETCH_MAX_WAIT_MS: i32 = 500;
pub const FETCH_MAX_BYTES: i32 = 50 * 1024 * 1024;
const PARTITION_MAX_BYTES: i32 = 1024 * 1024;
const FETCH_MIN_BYTES: i32 = 1;

/// Group timing, Kafka's consumer defaults except a longer session for a noisy shared machine.
const SESSION_TIMEOUT_MS: i32 = 30_000;
const REBALANCE_TIMEOUT_MS: i32 = 60_000;
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
/// `auto.commit.interval.ms`.
const COMMIT_INTERVAL: Duration = Duration::from_secs(5);
/// Joins retried this many times before the consumer gives up.
const JOIN_ATTEMPTS: usize = 20;
const JOIN_RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// Kafka error codes the group client reacts to.
const MEMBER_ID_REQUIRED: i16 = 79;
const REBALANCE_IN_PROGRESS: i16 = 27;
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const NOT_COORDINATOR: i16 = 16;
/// Fetch error code: the position is below the log start (retention deleted it) or past the end.
const OFFSET_OUT_OF_RANGE: i16 = 1;

/// The assignor this client offers: round robin over all subscribed partitions.
const ASSIGNOR: &str = "roundrobin";

/// Where a consumer starts when it has no committed offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
}

/// How a consumer gets its partitions.
#[derive(Clone, Debug)]
pub enum Membership {
    /// These partitions, from the run.
    Assigned(Vec<(String, i32)>),
    /// Whatever the group gives it; the group subscribes to all the run's topics.
    Group {
        group_id: String,
        topics: Vec<String>,
    },
}

/// What one consumer saw: offsets read per partition (merged ranges) and offset anomalies.
#[derive(Debug, Default)]
pub struct ConsumerOutcome {
    pub end_to_end: Option<Histogram<u64>>,
    pub read: OffsetRanges,
    /// Offsets skipped because retention had deleted them before they were read.
    pub expired: OffsetRanges,
    pub duplicates: u64,
    pub out_of_order: u64,
}

/// A started consumer thread.
pub struct ConsumerHandle {
    thread: JoinHandle<anyhow::Result<ConsumerOutcome>>,
}

impl ConsumerHandle {
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    pub fn join(self) -> anyhow::Result<ConsumerOutcome> {
        self.thread
            .join()
            .map_err(|_| anyhow!("a consumer thread panicked"))?
    }
}

/// Settings of one consumer.
#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    pub bootstrap: String,
    pub membership: Membership,
    pub start_at: StartAt,
    /// Stop reading (but stay in the group) after this long; models a consumer that stalls.
    /// It reads again once the run sets `Shared::resume_stalled`.
    pub stop_reading_after: Option<Duration>,
}

/// Starts consumer `index`. `ready` is incremented once it has its partitions and positions,
/// so the run can hold producers back until every consumer is reading.
pub fn start(
    index: usize,
    settings: ConsumerSettings,
    shared: Arc<Shared>,
    ready: Arc<AtomicUsize>,
) -> ConsumerHandle {
    let thread = std::thread::Builder::new()
        .name(format!("consume-{index}"))
        .spawn(move || {
            let mut consumer = Consumer::new(settings, shared, ready)?;
            consumer.run()
        })
        .expect("spawning a thread");
    ConsumerHandle { thread }
}

struct Position {
    topic: String,
    partition: i32,
    offset: i64,
}

struct Consumer {
    settings: ConsumerSettings,
    shared: Arc<Shared>,
    ready: Arc<AtomicUsize>,
    bootstrap: Connection,
    group: Option<GroupMember>,
    /// Fetch connections by leader address.
    leaders: BTreeMap<String, Connection>,
    positions: Vec<Position>,
    layout: Layout,
    outcome: ConsumerOutcome,
    histogram: Histogram<u64>,
    /// Last offset read per position index (to find duplicates and reordering).
    last_read: Vec<i64>,
    /// Whether records read now go into the end-to-end histogram.
    measuring: bool,
}

impl Consumer {
    fn new(
        settings: ConsumerSettings,
        shared: Arc<Shared>,
        ready: Arc<AtomicUsize>,
    ) -> anyhow::Result<Consumer> {
        let bootstrap = Connection::connect(&settings.bootstrap)?;
        Ok(Consumer {
            settings,
            shared,
            ready,
            bootstrap,
            group: None,
            leaders: BTreeMap::new(),
            positions: Vec::new(),
            layout: Layout::default(),
            outcome: ConsumerOutcome::default(),
            histogram: new_histogram(),
            last_read: Vec::new(),
            measuring: true,
        })
    }

    fn run(&mut self) -> anyhow::Result<ConsumerOutcome> {
        let partitions = match self.settings.membership.clone() {
            Membership::Assigned(partitions) => partitions,
            Membership::Group { group_id, topics } => {
                let mut member = GroupMember::new(&mut self.bootstrap, group_id, topics)?;
                let partitions = member.join()?;
                self.group = Some(member);
                partitions
            }
        };
        self.assign(partitions)?;
        self.ready.fetch_add(1, Ordering::SeqCst);
        let started = Instant::now();
        let mut last_heartbeat = Instant::now();
        let mut last_commit = Instant::now();
        while !self.shared.stop.load(Ordering::Relaxed) {
            let stalled = self
                .settings
                .stop_reading_after
                .is_some_and(|after| started.elapsed() >= after);
            // What a stalled consumer reads once resumed waited out its stall: its end-to-end
            // latency measures the stall, not the broker, and is left out.
            self.measuring = !stalled;
            let reading = !stalled || self.shared.resume_stalled.load(Ordering::Relaxed);
            if reading && !self.positions.is_empty() {
                self.fetch_once()?;
            } else {
                std::thread::sleep(Duration::from_millis(FETCH_MAX_WAIT_MS as u64));
            }
            if self.group.is_some() && last_heartbeat.elapsed() >= HEARTBEAT_INTERVAL {
                last_heartbeat = Instant::now();
                let rejoin = self
                    .group
                    .as_mut()
                    .map_or(Ok(false), GroupMember::heartbeat)?;
                if rejoin {
                    self.commit();
                    let partitions = self
                        .group
                        .as_mut()
                        .map(GroupMember::join)
                        .transpose()?
                        .unwrap_or_default();
                    self.assign(partitions)?;
                }
            }
            if self.group.is_some() && last_commit.elapsed() >= COMMIT_INTERVAL {
                last_commit = Instant::now();
                self.commit();
            }
        }
        self.commit();
        if let Some(group) = self.group.as_mut() {
            group.leave();
        }
        let mut outcome = std::mem::take(&mut self.outcome);
        outcome.end_to_end = Some(std::mem::replace(&mut self.histogram, new_histogram()));
        Ok(outcome)
    }

    /// Takes `partitions`: committed offsets first (in a group), else the start position.
    fn assign(&mut self, partitions: Vec<(String, i32)>) -> anyhow::Result<()> {
        let topics: Vec<String> = {
            let mut topics: Vec<String> = partitions.iter().map(|(t, _)| t.clone()).collect();
            topics.sort();
            topics.dedup();
            topics
        };
        self.positions.clear();
        self.last_read.clear();
        if partitions.is_empty() {
            return Ok(());
        }
        self.layout = admin::wait_for_layout(&mut self.bootstrap, &topics)?;
        let committed = match self.group.as_mut() {
            Some(group) => group.committed(&partitions)?,
            None => BTreeMap::new(),
        };
        let timestamp = match self.settings.start_at {
            StartAt::Earliest => admin::EARLIEST,
            StartAt::Latest => admin::LATEST,
        };
        for topic in &topics {
            let mine: Vec<i32> = partitions
                .iter()
                .filter(|(t, _)| t == topic)
                .map(|(_, p)| *p)
                .collect();
            let address = self.layout.leader_address(topic, mine[0])?.to_string();
            let leader = self.leader(&address)?;
            let starts = admin::offsets(leader, topic, &mine, timestamp)?;
            for partition in mine {
                let offset = committed
                    .get(&(topic.clone(), partition))
                    .copied()
                    .filter(|offset| *offset >= 0)
                    .or_else(|| starts.get(&partition).copied())
                    .ok_or_else(|| anyhow!("no start offset for {topic}-{partition}"))?;
                self.positions.push(Position {
                    topic: topic.clone(),
                    partition,
                    offset,
                });
                self.last_read.push(-1);
            }
        }
        Ok(())
    }

    fn leader(&mut self, address: &str) -> anyhow::Result<&mut Connection> {
        if !self.leaders.contains_key(address) {
            let connection = Connection::connect(address)?;
            self.leaders.insert(address.to_string(), connection);
        }
        Ok(self.leaders.get_mut(address).expect("inserted just above"))
    }

    /// One Fetch to each leader of this consumer's partitions.
    fn fetch_once(&mut self) -> anyhow::Result<()> {
        let mut by_leader: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (index, position) in self.positions.iter().enumerate() {
            let address = self
                .layout
                .leader_address(&position.topic, position.partition)?
                .to_string();
            by_leader.entry(address).or_default().push(index);
        }
        for (address, indexes) in by_leader {
            let mut topics: Vec<FetchTopic> = Vec::new();
            for &index in &indexes {
                let position = &self.positions[index];
                let partition = FetchPartition::default()
                    .with_partition(position.partition)
                    .with_current_leader_epoch(-1)
                    .with_fetch_offset(position.offset)
                    .with_last_fetched_epoch(-1)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(PARTITION_MAX_BYTES);
                match topics
                    .iter_mut()
                    .find(|topic| topic.topic.0.as_str() == position.topic)
                {
                    Some(topic) => topic.partitions.push(partition),
                    None => topics.push(
                        FetchTopic::default()
                            .with_topic(TopicName(text(&position.topic)))
                            .with_partitions(vec![partition]),
                    ),
                }
            }
            let request = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(FETCH_MAX_WAIT_MS)
                .with_min_bytes(FETCH_MIN_BYTES)
                .with_max_bytes(FETCH_MAX_BYTES)
                .with_session_epoch(-1)
                .with_topics(topics);
            let connection = self.leader(&address)?;
            let (_, response) =
                connection.call(ApiKey::Fetch, FETCH_VERSIONS, RequestKind::Fetch(request))?;
            let ResponseKind::Fetch(response) = response else {
                bail!("Fetch answered with another response kind");
            };
            if response.error_code != 0 {
                self.shared
                    .error(format!("fetch: {}", error_name(response.error_code)));
                continue;
            }
            for topic in &response.responses {
                for partition in &topic.partitions {
                    let Some(index) = indexes.iter().copied().find(|index| {
                        self.positions[*index].topic == topic.topic.0.as_str()
                            && self.positions[*index].partition == partition.partition_index
                    }) else {
                        continue;
                    };
                    if partition.error_code == OFFSET_OUT_OF_RANGE && self.skip_expired(index)? {
                        continue;
                    }
                    if partition.error_code != 0 {
                        self.shared
                            .error(format!("fetch: {}", error_name(partition.error_code)));
                        continue;
                    }
                    if let Some(records) = &partition.records {
                        self.take_records(index, records)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// After OFFSET_OUT_OF_RANGE: if retention has moved the log start past this position,
    /// moves to the log start (Kafka's `auto.offset.reset=earliest`) and notes the skipped
    /// offsets as expired. False if the position is not below the log start: a real error.
    fn skip_expired(&mut self, index: usize) -> anyhow::Result<bool> {
        let (topic, partition, offset) = {
            let position = &self.positions[index];
            (position.topic.clone(), position.partition, position.offset)
        };
        let address = self.layout.leader_address(&topic, partition)?.to_string();
        let leader = self.leader(&address)?;
        let starts = admin::offsets(leader, &topic, &[partition], admin::EARLIEST)?;
        let Some(&start) = starts.get(&partition).filter(|start| **start > offset) else {
            return Ok(false);
        };
        let expired = self.outcome.expired.entry((topic, partition)).or_default();
        insert_range(expired, offset, start);
        self.shared
            .expired_messages
            .fetch_add((start - offset) as u64, Ordering::Relaxed);
        self.positions[index].offset = start;
        Ok(true)
    }

    fn take_records(&mut self, index: usize, records: &Bytes) -> anyhow::Result<()> {
        let now = clock::now_us();
        let measure_from = if self.measuring {
            self.shared.measure_from_us.load(Ordering::Relaxed)
        } else {
            u64::MAX
        };
        let fetch_offset = self.positions[index].offset;
        let mut last = self.last_read[index];
        let mut first_new: Option<i64> = None;
        let mut end_new = fetch_offset;
        let histogram = &mut self.histogram;
        let outcome = &mut self.outcome;
        let walked = walk_records(records, |offset, value| {
            // A fetch may start inside a batch: records before the fetch offset are skipped,
            // as clients do.
            if offset < fetch_offset {
                return;
            }
            if offset <= last {
                if offset == last {
                    outcome.duplicates += 1;
                } else {
                    outcome.out_of_order += 1;
                }
            }
            last = last.max(offset);
            first_new.get_or_insert(offset);
            end_new = end_new.max(offset + 1);
            if value.len() >= TIMESTAMP_BYTES {
                let sent = u64::from_le_bytes(
                    value[..TIMESTAMP_BYTES]
                        .try_into()
                        .expect("slice of TIMESTAMP_BYTES"),
                );
                if sent >= measure_from {
                    histogram.saturating_record(now.saturating_sub(sent).max(1));
                }
            }
        })
        .with_context(|| {
            let position = &self.positions[index];
            format!("records of {}-{}", position.topic, position.partition)
        })?;
        self.last_read[index] = last;
        let position = &mut self.positions[index];
        if let Some(first) = first_new {
            let ranges = outcome
                .read
                .entry((position.topic.clone(), position.partition))
                .or_default();
            insert_range(ranges, first, end_new);
        }
        if let Some(next) = walked.next_offset {
            position.offset = position.offset.max(next);
        }
        self.shared
            .consumed_messages
            .fetch_add(walked.records, Ordering::Relaxed);
        self.shared
            .consumed_bytes
            .fetch_add(walked.value_bytes, Ordering::Relaxed);
        Ok(())
    }

    fn commit(&mut self) {
        let Some(group) = self.group.as_mut() else {
            return;
        };
        if let Err(error) = group.commit(&self.positions) {
            self.shared.error(format!("offset commit: {error:#}"));
        }
    }
}

/// A classic consumer-group member: JoinGroup/SyncGroup (this client's own round-robin
/// assignment when it leads), Heartbeat, OffsetFetch, OffsetCommit, LeaveGroup.
struct GroupMember {
    coordinator: Connection,
    group_id: String,
    topics: Vec<String>,
    member_id: String,
    generation: i32,
}

impl GroupMember {
    fn new(
        bootstrap: &mut Connection,
        group_id: String,
        topics: Vec<String>,
    ) -> anyhow::Result<GroupMember> {
        let address = find_coordinator(bootstrap, &group_id)?;
        Ok(GroupMember {
            coordinator: Connection::connect(&address)?,
            group_id,
            topics,
            member_id: String::new(),
            generation: -1,
        })
    }

    /// Joins (or rejoins) the group and returns this member's partitions.
    fn join(&mut self) -> anyhow::Result<Vec<(String, i32)>> {
        let mut subscription = BytesMut::new();
        let version = 0;
        subscription.put_i16(version);
        ConsumerProtocolSubscription::default()
            .with_topics(self.topics.iter().map(|topic| text(topic)).collect())
            .encode(&mut subscription, version)
            .map_err(|error| anyhow!("encoding a subscription: {error}"))?;
        let subscription = subscription.freeze();
        for _ in 0..JOIN_ATTEMPTS {
            let request = JoinGroupRequest::default()
                .with_group_id(GroupId(text(&self.group_id)))
                .with_session_timeout_ms(SESSION_TIMEOUT_MS)
                .with_rebalance_timeout_ms(REBALANCE_TIMEOUT_MS)
                .with_member_id(text(&self.member_id))
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str(ASSIGNOR))
                    .with_metadata(subscription.clone())]);
            let (_, response) =
                self.coordinator
                    .call(ApiKey::JoinGroup, 1..=7, RequestKind::JoinGroup(request))?;
            let ResponseKind::JoinGroup(joined) = response else {
                bail!("JoinGroup answered with another response kind");
            };
            match joined.error_code {
                0 => {}
                MEMBER_ID_REQUIRED => {
                    self.member_id = joined.member_id.to_string();
                    continue;
                }
                UNKNOWN_MEMBER_ID => {
                    self.member_id.clear();
                    continue;
                }
                REBALANCE_IN_PROGRESS
                | COORDINATOR_LOAD_IN_PROGRESS
                | COORDINATOR_NOT_AVAILABLE
                | NOT_COORDINATOR => {
                    std::thread::sleep(JOIN_RETRY_BACKOFF);
                    continue;
                }
                code => bail!("joining group {}: {}", self.group_id, error_name(code)),
            }
            self.member_id = joined.member_id.to_string();
            self.generation = joined.generation_id;
            let assignments = if joined.leader == joined.member_id {
                assign_round_robin(&mut self.coordinator, &joined.members)?
            } else {
                Vec::new()
            };
            let request = SyncGroupRequest::default()
                .with_group_id(GroupId(text(&self.group_id)))
                .with_generation_id(self.generation)
                .with_member_id(text(&self.member_id))
                .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
                .with_protocol_name(Some(StrBytes::from_static_str(ASSIGNOR)))
                .with_assignments(assignments);
            let (_, response) =
                self.coordinator
                    .call(ApiKey::SyncGroup, 1..=5, RequestKind::SyncGroup(request))?;
            let ResponseKind::SyncGroup(synced) = response else {
                bail!("SyncGroup answered with another response kind");
            };
            match synced.error_code {
                0 => return decode_assignment(synced.assignment),
                REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION => continue,
                UNKNOWN_MEMBER_ID => {
                    self.member_id.clear();
                    continue;
                }
                code => bail!("syncing group {}: {}", self.group_id, error_name(code)),
            }
        }
        bail!(
            "could not join group {} in {JOIN_ATTEMPTS} attempts",
            self.group_id
        )
    }

    /// Returns true when the group is rebalancing and this member must rejoin.
    fn heartbeat(&mut self) -> anyhow::Result<bool> {
        let request = HeartbeatRequest::default()
            .with_group_id(GroupId(text(&self.group_id)))
            .with_generation_id(self.generation)
            .with_member_id(text(&self.member_id));
        let (_, response) =
            self.coordinator
                .call(ApiKey::Heartbeat, 1..=4, RequestKind::Heartbeat(request))?;
        let ResponseKind::Heartbeat(response) = response else {
            bail!("Heartbeat answered with another response kind");
        };
        match response.error_code {
            0 => Ok(false),
            REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION => Ok(true),
            UNKNOWN_MEMBER_ID => {
                self.member_id.clear();
                Ok(true)
            }
            code => bail!("heartbeat to group {}: {}", self.group_id, error_name(code)),
        }
    }

    fn committed(
        &mut self,
        partitions: &[(String, i32)],
    ) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in partitions {
            topics.entry(topic).or_default().push(*partition);
        }
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(text(&self.group_id)))
            .with_topics(Some(
                topics
                    .iter()
                    .map(|(topic, partitions)| {
                        OffsetFetchRequestTopic::default()
                            .with_name(TopicName(text(topic)))
                            .with_partition_indexes(partitions.clone())
                    })
                    .collect(),
            ));
        let (_, response) = self.coordinator.call(
            ApiKey::OffsetFetch,
            1..=7,
            RequestKind::OffsetFetch(request),
        )?;
        let ResponseKind::OffsetFetch(response) = response else {
            bail!("OffsetFetch answered with another response kind");
        };
        let mut committed = BTreeMap::new();
        for topic in &response.topics {
            for partition in &topic.partitions {
                if partition.error_code == 0 {
                    committed.insert(
                        (topic.name.0.to_string(), partition.partition_index),
                        partition.committed_offset,
                    );
                }
            }
        }
        Ok(committed)
    }

    fn commit(&mut self, positions: &[Position]) -> anyhow::Result<()> {
        if positions.is_empty() {
            return Ok(());
        }
        let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
        for position in positions {
            let partition = OffsetCommitRequestPartition::default()
                .with_partition_index(position.partition)
                .with_committed_offset(position.offset)
                .with_committed_leader_epoch(-1);
            match topics
                .iter_mut()
                .find(|topic| topic.name.0.as_str() == position.topic)
            {
                Some(topic) => topic.partitions.push(partition),
                None => topics.push(
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(text(&position.topic)))
                        .with_partitions(vec![partition]),
                ),
            }
        }
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(text(&self.group_id)))
            .with_generation_id_or_member_epoch(self.generation)
            .with_member_id(text(&self.member_id))
            .with_retention_time_ms(-1)
            .with_topics(topics);
        let (_, response) = self.coordinator.call(
            ApiKey::OffsetCommit,
            2..=8,
            RequestKind::OffsetCommit(request),
        )?;
        let ResponseKind::OffsetCommit(response) = response else {
            bail!("OffsetCommit answered with another response kind");
        };
        for topic in &response.topics {
            for partition in &topic.partitions {
                // A commit racing a rebalance is refused; the next one after the rejoin lands.
                if partition.error_code != 0
                    && partition.error_code != REBALANCE_IN_PROGRESS
                    && partition.error_code != ILLEGAL_GENERATION
                {
                    bail!("{}", error_name(partition.error_code));
                }
            }
        }
        Ok(())
    }

    fn leave(&mut self) {
        use kafka_protocol::messages::leave_group_request::MemberIdentity;
        let request = LeaveGroupRequest::default()
            .with_group_id(GroupId(text(&self.group_id)))
            .with_member_id(text(&self.member_id))
            .with_members(vec![
                MemberIdentity::default().with_member_id(text(&self.member_id))
            ]);
        // Best effort: the session timeout removes a member that could not say goodbye.
        let _ = self
            .coordinator
            .call(ApiKey::LeaveGroup, 1..=5, RequestKind::LeaveGroup(request));
    }
}

fn find_coordinator(bootstrap: &mut Connection, group_id: &str) -> anyhow::Result<String> {
    for _ in 0..JOIN_ATTEMPTS {
        let request = FindCoordinatorRequest::default()
            .with_key(text(group_id))
            .with_key_type(0);
        let (_, response) = bootstrap.call(
            ApiKey::FindCoordinator,
            1..=3,
            RequestKind::FindCoordinator(request),
        )?;
        let ResponseKind::FindCoordinator(response) = response else {
            bail!("FindCoordinator answered with another response kind");
        };
        match response.error_code {
            0 => return Ok(format!("{}:{}", response.host, response.port)),
            COORDINATOR_NOT_AVAILABLE | COORDINATOR_LOAD_IN_PROGRESS => {
                std::thread::sleep(JOIN_RETRY_BACKOFF);
            }
            code => bail!(
                "finding the coordinator of {group_id}: {}",
                error_name(code)
            ),
        }
    }
    bail!("no coordinator for group {group_id}")
}

/// The leader's assignment: every partition of every member's subscription, dealt round robin
/// over the members in member-id order.
fn assign_round_robin(
    bootstrap: &mut Connection,
    members: &[kafka_protocol::messages::join_group_response::JoinGroupResponseMember],
) -> anyhow::Result<Vec<SyncGroupRequestAssignment>> {
    let mut subscriptions: Vec<(String, Vec<String>)> = Vec::new();
    for member in members {
        let mut metadata = member.metadata.clone();
        if metadata.remaining() < 2 {
            bail!("member {} sent no subscription", member.member_id);
        }
        let version = metadata.get_i16();
        let subscription = ConsumerProtocolSubscription::decode(&mut metadata, version.min(3))
            .map_err(|error| anyhow!("decoding a subscription: {error}"))?;
        subscriptions.push((
            member.member_id.to_string(),
            subscription.topics.iter().map(|t| t.to_string()).collect(),
        ));
    }
    subscriptions.sort();
    let mut topics: Vec<String> = subscriptions
        .iter()
        .flat_map(|(_, topics)| topics.iter().cloned())
        .collect();
    topics.sort();
    topics.dedup();
    let layout = admin::wait_for_layout(bootstrap, &topics)?;
    let mut plan: BTreeMap<String, BTreeMap<String, Vec<i32>>> = BTreeMap::new();
    let mut turn = 0;
    for (topic, partition) in layout.leaders.keys() {
        let subscribers: Vec<&String> = subscriptions
            .iter()
            .filter(|(_, topics)| topics.contains(topic))
            .map(|(member, _)| member)
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        let member = subscribers[turn % subscribers.len()];
        turn += 1;
        plan.entry(member.clone())
            .or_default()
            .entry(topic.clone())
            .or_default()
            .push(*partition);
    }
    subscriptions
        .iter()
        .map(|(member, _)| {
            let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
                plan.get(member)
                    .map(|topics| {
                        topics
                            .iter()
                            .map(|(topic, partitions)| {
                                AssignedTopic::default()
                                    .with_topic(TopicName(text(topic)))
                                    .with_partitions(partitions.clone())
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            );
            let mut bytes = BytesMut::new();
            bytes.put_i16(0);
            assignment
                .encode(&mut bytes, 0)
                .map_err(|error| anyhow!("encoding an assignment: {error}"))?;
            Ok(SyncGroupRequestAssignment::default()
                .with_member_id(text(member))
                .with_assignment(bytes.freeze()))
        })
        .collect()
}

fn decode_assignment(mut bytes: Bytes) -> anyhow::Result<Vec<(String, i32)>> {
    if bytes.remaining() < 2 {
        return Ok(Vec::new());
    }
    let version = bytes.get_i16();
    let assignment = ConsumerProtocolAssignment::decode(&mut bytes, version.clamp(0, 3))
        .map_err(|error| anyhow!("decoding an assignment: {error}"))?;
    Ok(assignment
        .assigned_partitions
        .iter()
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .map(|partition| (topic.topic.0.to_string(), *partition))
        })
        .collect())
}
