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

use anyhow::{anyhow, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, RequestKind, ResponseKind, TopicName,
};
use ringlog_net::client::admin::{self, Layout};
use ringlog_net::client::group::{GroupMember, HEARTBEAT_INTERVAL};
use ringlog_net::client::{error_name, text, wrong_kind, Connection};

use super::producer::{insert_range, OffsetRanges, Shared};
use super::records::{clock, walk_records, TIMESTAMP_BYTES};
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

/// `auto.commit.interval.ms`.
const COMMIT_INTERVAL: Duration = Duration::from_secs(5);

/// Fetch error code: the position is below the log start (retention deleted it) or past the end.
const OFFSET_OUT_OF_RANGE: i16 = 1;

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
        let bootstrap = Connection::connect(&settings.bootstrap, super::CLIENT_ID)?;
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
                let mut member =
                    GroupMember::new(&mut self.bootstrap, group_id, topics, super::CLIENT_ID)?;
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
            // Best effort: the session timeout removes a member that could not say goodbye.
            let _ = group.leave();
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
            // ListOffsets goes to each partition's leader (a cluster has several).
            let mut by_leader: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for partition in &mine {
                let address = self.layout.leader_address(topic, *partition)?.to_string();
                by_leader.entry(address).or_default().push(*partition);
            }
            let mut starts = BTreeMap::new();
            for (address, led) in by_leader {
                let leader = self.leader(&address)?;
                starts.extend(admin::offsets(leader, topic, &led, timestamp)?);
            }
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
            let connection = Connection::connect(address, super::CLIENT_ID)?;
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
                return Err(wrong_kind(ApiKey::Fetch).into());
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
        if let Err(error) = group.commit(
            self.positions
                .iter()
                .map(|position| (position.topic.as_str(), position.partition, position.offset)),
        ) {
            self.shared.error(format!("offset commit: {error:#}"));
        }
    }
}
