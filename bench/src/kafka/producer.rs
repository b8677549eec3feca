//! The benchmark producer: one writer thread and one reader thread per (producer, leader)
//! lane. The writer creates messages (as fast as allowed, or on a schedule at a target rate),
//! gathers them into one batch per partition (sticky partitioning without keys, a hash of the
//! key with keys), and sends every ready batch in one Produce request whenever fewer than
//! `max_in_flight` requests are outstanding; a batch is ready when it holds `batch_bytes` or
//! its first message has waited `linger`. The reader takes responses in order and records
//! publish latency per message: from the message's creation (its scheduled time when
//! rate-limited, so a slow broker cannot hide queueing: no coordinated omission) to its
//! acknowledgement.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestKind, ResponseKind, TopicName};

use super::records::{clock, encode_batch, Codec, Payload};
use crate::measure::new_histogram;
use ringlog_net::client::{decode_response, encode_request, Connection, Receiver, Sender};
use ringlog_net::client::{error_name, text, wrong_kind};

/// Kafka's built-in partitioner for keyless records (KIP-794): records stay on one partition
/// until `batch.size` bytes have gone to it, then move to the next once its last batch is full
/// (so no batch is cut short), or once twice `batch.size` has gone to it whatever its batches.
/// At a low rate with no linger, when no batch ever fills, that still spreads the records.
#[derive(Debug)]
struct Sticky {
    current: usize,
    partitions: usize,
    /// Bytes appended to `current` since the partition was chosen.
    produced: usize,
}

impl Sticky {
    fn new(start: usize, partitions: usize) -> Sticky {
        let partitions = partitions.max(1);
        Sticky {
            current: start % partitions,
            partitions,
            produced: 0,
        }
    }

    fn partition(&self) -> usize {
        self.current
    }

    fn appended(&mut self, bytes: usize, last_batch_full: bool, batch_bytes: usize) {
        self.produced += bytes;
        if (self.produced >= batch_bytes && last_batch_full)
            || self.produced >= batch_bytes.saturating_mul(2)
        {
            self.current = (self.current + 1) % self.partitions;
            self.produced = 0;
        }
    }
}

/// Produce versions this client speaks (v3: record batches; v12 is the last addressed by name).
const PRODUCE_VERSIONS: std::ops::RangeInclusive<i16> = 3..=12;

/// Messages created per writer-loop pass at most, so the loop checks its clock, its in-flight
/// requests and its deadline often even at millions of messages per second.
const MESSAGES_PER_PASS: usize = 1024;

/// The longest a writer sleeps before looking at its clock again.
const MAX_IDLE_WAIT: Duration = Duration::from_millis(50);

/// How keys are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Keys {
    /// No key; batches fill one partition at a time (Kafka's sticky partitioner).
    None,
    /// Keys 0, 1, 2, ... of the key space in turn, partitioned by key hash.
    RoundRobin,
    /// A random key of the key space, partitioned by key hash.
    Random,
}

/// Settings shared by every producer of a run.
#[derive(Clone, Debug)]
pub struct ProducerSettings {
    pub acks: i16,
    pub batch_bytes: usize,
    pub linger: Duration,
    pub codec: Codec,
    pub max_in_flight: usize,
    pub keys: Keys,
    pub key_space: u64,
    pub payload: Payload,
    /// Messages per second for this lane; `None` is as fast as possible.
    pub rate: Option<f64>,
    /// Unsent message bytes a lane may hold while its requests are in flight (Kafka's
    /// `buffer.memory`).
    pub buffer_bytes: usize,
    pub request_timeout_ms: i32,
}

/// Run-wide signals and counters, shared by every producer and consumer thread.
#[derive(Debug, Default)]
pub struct Shared {
    /// Messages created at or after this time (µs, `clock::now_us`) are measured; before it is
    /// warm-up. `u64::MAX` until the warm-up ends.
    pub measure_from_us: AtomicU64,
    /// Producers create no message at or after this time.
    pub produce_until_us: AtomicU64,
    /// Set when the run is over: every thread finishes what it is doing and returns.
    pub stop: AtomicBool,
    pub produced_messages: AtomicU64,
    pub produced_bytes: AtomicU64,
    pub consumed_messages: AtomicU64,
    pub consumed_bytes: AtomicU64,
    /// Acknowledged messages a consumer found deleted by retention (skipped with
    /// OFFSET_OUT_OF_RANGE, as `auto.offset.reset=earliest` does).
    pub expired_messages: AtomicU64,
    /// Set once producing is over in a verifying run: a stalled consumer reads again, so that
    /// what it left behind is checked too.
    pub resume_stalled: AtomicBool,
    pub errors: Mutex<BTreeMap<String, u64>>,
    /// Acknowledged offsets per (topic, partition), as merged [start, end) ranges.
    pub acknowledged: Mutex<OffsetRanges>,
}

impl Shared {
    pub fn new() -> Shared {
        Shared {
            measure_from_us: AtomicU64::new(u64::MAX),
            produce_until_us: AtomicU64::new(u64::MAX),
            ..Shared::default()
        }
    }

    pub fn error(&self, what: impl Into<String>) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        *errors.entry(what.into()).or_default() += 1;
    }

    fn acknowledge(&self, topic: &str, partition: i32, base: i64, count: i64) {
        let mut acknowledged = self.acknowledged.lock().unwrap_or_else(|e| e.into_inner());
        let ranges = acknowledged
            .entry((topic.to_string(), partition))
            .or_default();
        insert_range(ranges, base, base + count);
    }
}

/// Offsets per (topic, partition), as sorted, disjoint, merged [start, end) ranges.
pub type OffsetRanges = BTreeMap<(String, i32), Vec<(i64, i64)>>;

/// Adds [start, end) to sorted, disjoint, merged `ranges`. Appends in order are O(1).
pub fn insert_range(ranges: &mut Vec<(i64, i64)>, start: i64, end: i64) {
    if let Some(last) = ranges.last_mut() {
        if last.1 == start {
            last.1 = end;
            return;
        }
        if last.1 < start {
            ranges.push((start, end));
            return;
        }
    } else {
        ranges.push((start, end));
        return;
    }
    // Out of order (several lanes on one partition, or a retry): insert and re-merge.
    ranges.push((start, end));
    ranges.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
    for &(start, end) in ranges.iter() {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    *ranges = merged;
}

/// The partitions one lane writes to.
#[derive(Clone, Debug)]
pub struct LaneTarget {
    pub address: String,
    /// (topic, partition) pairs led by `address`.
    pub partitions: Vec<(String, i32)>,
}

/// A running lane; `join` returns its publish-latency histogram (measured messages only).
pub struct Lane {
    writer: JoinHandle<anyhow::Result<()>>,
    reader: Option<JoinHandle<anyhow::Result<Histogram<u64>>>>,
}

impl Lane {
    pub fn join(self) -> anyhow::Result<Histogram<u64>> {
        let written = self
            .writer
            .join()
            .map_err(|_| anyhow::anyhow!("a producer writer thread panicked"))?;
        let histogram = match self.reader {
            Some(reader) => reader
                .join()
                .map_err(|_| anyhow::anyhow!("a producer reader thread panicked"))??,
            None => new_histogram(),
        };
        written?;
        Ok(histogram)
    }
}

/// A batch being filled for one partition.
struct OpenBatch {
    messages: Vec<(Option<Bytes>, Bytes)>,
    bytes: usize,
    first_us: u64,
}

/// What a request in flight carried, so the reader can account for each partition's batch.
struct InFlightRequest {
    correlation_id: i32,
    version: i16,
    /// (lane partition index, message count, value bytes, creation times).
    batches: Vec<(usize, usize, u64, Vec<u64>)>,
}

/// Requests in flight on a lane, and the condition the writer waits on when at the limit.
struct Window {
    in_flight: Mutex<usize>,
    freed: Condvar,
    /// Set when the reader stops (its connection failed): the writer gives up too.
    reader_gone: AtomicBool,
}

/// Starts a lane: connects and spawns its writer and reader threads.
pub fn start_lane(
    index: usize,
    target: LaneTarget,
    settings: ProducerSettings,
    shared: Arc<Shared>,
) -> anyhow::Result<Lane> {
    if target.partitions.is_empty() {
        bail!("a producer lane without partitions");
    }
    let connection = Connection::connect(&target.address, super::CLIENT_ID)?;
    let version = connection
        .versions
        .pick(ApiKey::Produce, PRODUCE_VERSIONS)?;
    let (sender, receiver, _) = connection.split();
    let window = Arc::new(Window {
        in_flight: Mutex::new(0),
        freed: Condvar::new(),
        reader_gone: AtomicBool::new(false),
    });
    let (pending_tx, pending_rx) = mpsc::channel::<InFlightRequest>();
    let partitions = Arc::new(target.partitions);
    let reader = (settings.acks != 0).then(|| {
        let shared = Arc::clone(&shared);
        let window = Arc::clone(&window);
        let partitions = Arc::clone(&partitions);
        std::thread::Builder::new()
            .name(format!("produce-read-{index}"))
            .spawn(move || {
                let read = read_acks(receiver, pending_rx, &partitions, &window, &shared);
                window.reader_gone.store(true, Ordering::SeqCst);
                window.freed.notify_all();
                read
            })
            .expect("spawning a thread")
    });
    let writer = std::thread::Builder::new()
        .name(format!("produce-{index}"))
        .spawn(move || {
            let sticky = Sticky::new(index, partitions.len());
            let mut writer = Writer {
                sender,
                version,
                settings,
                partitions,
                shared,
                window,
                pending: pending_tx,
                open: Vec::new(),
                buffered: 0,
                correlation_id: 0,
                sticky,
                key_counter: 0,
                rng: fastrand::Rng::with_seed(index as u64 + 1),
                scratch: Vec::new(),
            };
            writer.run()
        })
        .expect("spawning a thread");
    Ok(Lane { writer, reader })
}

struct Writer {
    sender: Sender,
    version: i16,
    settings: ProducerSettings,
    partitions: Arc<Vec<(String, i32)>>,
    shared: Arc<Shared>,
    window: Arc<Window>,
    pending: mpsc::Sender<InFlightRequest>,
    /// Each partition's batches waiting to be sent, oldest first: only the last one takes new
    /// messages, and a full one gets a new one behind it (as Kafka's record accumulator does),
    /// so no batch grows past `batch.size` while the in-flight window is full.
    open: Vec<VecDeque<OpenBatch>>,
    /// The bytes of every batch in `open`, kept as they come and go.
    buffered: usize,
    correlation_id: i32,
    /// Where keyless messages go.
    sticky: Sticky,
    key_counter: u64,
    rng: fastrand::Rng,
    scratch: Vec<kafka_protocol::records::Record>,
}

impl Writer {
    fn run(&mut self) -> anyhow::Result<()> {
        self.open = (0..self.partitions.len())
            .map(|_| VecDeque::new())
            .collect();
        let interval_us = self.settings.rate.map(|rate| 1_000_000.0 / rate.max(1e-3));
        let started = clock::now_us();
        let mut created: u64 = 0;
        loop {
            if self.window.reader_gone.load(Ordering::SeqCst) {
                bail!("the producer's connection failed");
            }
            let now = clock::now_us();
            let until = self.shared.produce_until_us.load(Ordering::Relaxed);
            let stopping = now >= until || self.shared.stop.load(Ordering::Relaxed);
            if !stopping {
                let mut room = self.settings.buffer_bytes.saturating_sub(self.buffered)
                    / self.settings.payload.size().max(1);
                room = room.min(MESSAGES_PER_PASS);
                match interval_us {
                    Some(interval) => {
                        while room > 0 {
                            let due = started + (created as f64 * interval) as u64;
                            if due > now || due >= until {
                                break;
                            }
                            self.create(due);
                            created += 1;
                            room -= 1;
                        }
                    }
                    None => {
                        while room > 0 && !self.any_ready(now) {
                            self.create(clock::now_us());
                            room -= 1;
                        }
                    }
                }
            }
            let now = clock::now_us();
            let ready = self.ready(now, stopping);
            if !ready.is_empty() && self.take_slot() {
                self.send(&ready)?;
                continue;
            }
            if stopping && self.open.iter().all(VecDeque::is_empty) {
                break;
            }
            // Nothing to send now. If a message can be created, go round again; otherwise
            // sleep until the next future event: a message falls due, an unready batch's
            // linger runs out, or (when ready batches wait for one) an in-flight slot frees.
            let blocked = !ready.is_empty();
            let room = self.buffered + self.settings.payload.size() <= self.settings.buffer_bytes;
            let mut wake_us = now + MAX_IDLE_WAIT.as_micros() as u64;
            if !stopping {
                match interval_us {
                    Some(interval) => {
                        let due = started + (created as f64 * interval) as u64;
                        if due <= now && room {
                            continue;
                        }
                        if due > now {
                            wake_us = wake_us.min(due);
                        }
                    }
                    None if room && !blocked => continue,
                    None => {}
                }
            }
            let linger_us = self.settings.linger.as_micros() as u64;
            for batch in self.open.iter().filter_map(VecDeque::front) {
                if !self.is_ready(batch, now, stopping) {
                    wake_us = wake_us.min(batch.first_us + linger_us);
                }
            }
            self.wait(Duration::from_micros(wake_us.saturating_sub(now)), blocked);
        }
        // Dropping the pending sender tells the reader no more requests will come.
        Ok(())
    }

    fn create(&mut self, created_us: u64) {
        let (key, slot) = match self.settings.keys {
            Keys::None => (None, self.sticky.partition()),
            Keys::RoundRobin | Keys::Random => {
                let number = if self.settings.keys == Keys::Random {
                    self.rng.u64(0..self.settings.key_space.max(1))
                } else {
                    self.key_counter += 1;
                    self.key_counter % self.settings.key_space.max(1)
                };
                let key = number.to_string();
                let slot = (fnv1a(key.as_bytes()) % self.partitions.len() as u64) as usize;
                (Some(Bytes::from(key)), slot)
            }
        };
        let value = self.settings.payload.message(created_us);
        let queue = &mut self.open[slot];
        let batch_bytes = self.settings.batch_bytes;
        if queue.back().is_none_or(|batch| batch.bytes >= batch_bytes) {
            queue.push_back(OpenBatch {
                messages: Vec::new(),
                bytes: 0,
                first_us: created_us,
            });
        }
        let batch = queue.back_mut().expect("a batch was just ensured");
        let value_len = value.len();
        batch.bytes += value_len;
        batch.messages.push((key, value));
        self.buffered += value_len;
        let last_batch_full = batch.bytes >= batch_bytes;
        if self.settings.keys == Keys::None {
            self.sticky
                .appended(value_len, last_batch_full, batch_bytes);
        }
    }

    fn is_ready(&self, batch: &OpenBatch, now: u64, stopping: bool) -> bool {
        !batch.messages.is_empty()
            && (stopping
                || batch.bytes >= self.settings.batch_bytes
                || now >= batch.first_us + self.settings.linger.as_micros() as u64)
    }

    fn any_ready(&self, now: u64) -> bool {
        self.open
            .iter()
            .filter_map(VecDeque::front)
            .any(|batch| self.is_ready(batch, now, false))
    }

    /// Partitions whose oldest batch is ready: each request carries at most one batch per
    /// partition, as Kafka's does.
    fn ready(&self, now: u64, stopping: bool) -> Vec<usize> {
        (0..self.open.len())
            .filter(|slot| {
                self.open[*slot]
                    .front()
                    .is_some_and(|batch| self.is_ready(batch, now, stopping))
            })
            .collect()
    }

    /// Takes an in-flight slot if one is free (acks=0 needs none).
    fn take_slot(&self) -> bool {
        if self.settings.acks == 0 {
            return true;
        }
        let mut in_flight = self
            .window
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *in_flight < self.settings.max_in_flight {
            *in_flight += 1;
            true
        } else {
            false
        }
    }

    fn wait(&self, timeout: Duration, for_slot: bool) {
        if for_slot && self.settings.acks != 0 {
            let in_flight = self
                .window
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let max = self.settings.max_in_flight;
            let _ = self
                .window
                .freed
                .wait_timeout_while(in_flight, timeout, |count| *count >= max);
        } else {
            std::thread::sleep(timeout);
        }
    }

    fn send(&mut self, ready: &[usize]) -> anyhow::Result<()> {
        let mut topics: Vec<TopicProduceData> = Vec::new();
        let mut batches = Vec::with_capacity(ready.len());
        let timestamp_ms = super::unix_ms() as i64;
        for &slot in ready {
            let batch = self.open[slot]
                .pop_front()
                .expect("a ready partition has a batch");
            self.buffered -= batch.bytes;
            let records = encode_batch(
                &batch.messages,
                timestamp_ms,
                self.settings.codec,
                &mut self.scratch,
            )?;
            let created: Vec<u64> = batch
                .messages
                .iter()
                .map(|(_, value)| {
                    u64::from_le_bytes(value[..8].try_into().expect("values carry a timestamp"))
                })
                .collect();
            let (topic, partition) = &self.partitions[slot];
            let data = PartitionProduceData::default()
                .with_index(*partition)
                .with_records(Some(records));
            match topics
                .iter_mut()
                .find(|entry| entry.name.0.as_str() == topic)
            {
                Some(entry) => entry.partition_data.push(data),
                None => topics.push(
                    TopicProduceData::default()
                        .with_name(TopicName(text(topic)))
                        .with_partition_data(vec![data]),
                ),
            }
            batches.push((slot, batch.messages.len(), batch.bytes as u64, created));
        }
        let request = ProduceRequest::default()
            .with_acks(self.settings.acks)
            .with_timeout_ms(self.settings.request_timeout_ms)
            .with_topic_data(topics);
        let correlation_id = self.correlation_id;
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let frame = encode_request(
            ApiKey::Produce,
            self.version,
            correlation_id,
            super::CLIENT_ID,
            &RequestKind::Produce(request),
        )?;
        if self.settings.acks == 0 {
            self.sender.send(&frame)?;
            for (_, count, bytes, _) in &batches {
                self.shared
                    .produced_messages
                    .fetch_add(*count as u64, Ordering::Relaxed);
                self.shared
                    .produced_bytes
                    .fetch_add(*bytes, Ordering::Relaxed);
            }
            return Ok(());
        }
        // Registered before the write so the reader never sees a response it cannot match.
        self.pending
            .send(InFlightRequest {
                correlation_id,
                version: self.version,
                batches,
            })
            .context("the producer's reader stopped")?;
        Ok(self.sender.send(&frame)?)
    }
}

fn read_acks(
    mut receiver: Receiver,
    pending: mpsc::Receiver<InFlightRequest>,
    partitions: &[(String, i32)],
    window: &Window,
    shared: &Shared,
) -> anyhow::Result<Histogram<u64>> {
    let mut histogram = new_histogram();
    let release = || {
        let mut in_flight = window.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        *in_flight = in_flight.saturating_sub(1);
        window.freed.notify_one();
    };
    while let Ok(request) = pending.recv() {
        let frame = match receiver.read_frame() {
            Ok(frame) => frame,
            Err(error) => {
                release();
                return Err(error.into());
            }
        };
        let now = clock::now_us();
        let response = decode_response(
            frame,
            ApiKey::Produce,
            request.version,
            request.correlation_id,
        );
        release();
        let ResponseKind::Produce(response) = response? else {
            return Err(wrong_kind(ApiKey::Produce).into());
        };
        let measure_from = shared.measure_from_us.load(Ordering::Relaxed);
        for (slot, count, bytes, created) in &request.batches {
            let (topic, partition) = &partitions[*slot];
            let answer = response
                .responses
                .iter()
                .filter(|entry| entry.name.0.as_str() == topic)
                .flat_map(|entry| entry.partition_responses.iter())
                .find(|entry| entry.index == *partition);
            let Some(answer) = answer else {
                shared.error(format!("produce {topic}-{partition}: no answer"));
                continue;
            };
            if answer.error_code != 0 {
                shared.error(format!("produce: {}", error_name(answer.error_code)));
                continue;
            }
            shared.acknowledge(topic, *partition, answer.base_offset, *count as i64);
            shared
                .produced_messages
                .fetch_add(*count as u64, Ordering::Relaxed);
            shared.produced_bytes.fetch_add(*bytes, Ordering::Relaxed);
            for &created in created {
                if created >= measure_from {
                    histogram.saturating_record(now.saturating_sub(created).max(1));
                }
            }
        }
    }
    Ok(histogram)
}

/// FNV-1a, to spread keys over partitions (the benchmark's own choice; the broker never sees
/// it).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyless_records_move_on_after_a_full_batch() {
        let mut sticky = Sticky::new(1, 3);
        assert_eq!(sticky.partition(), 1);
        // Three 100-byte records fill a 300-byte batch: the fourth goes to the next partition.
        for _ in 0..2 {
            sticky.appended(100, false, 300);
            assert_eq!(sticky.partition(), 1);
        }
        sticky.appended(100, true, 300);
        assert_eq!(sticky.partition(), 2);
        for _ in 0..3 {
            sticky.appended(100, false, 300);
        }
        assert_eq!(sticky.partition(), 2, "a batch is not cut short");
        sticky.appended(100, true, 300);
        assert_eq!(sticky.partition(), 0, "and wraps round");
    }

    /// With no linger at a low rate every batch leaves holding one record, so no batch fills;
    /// the records must still spread (the stalled-consumer soak read nothing from its live
    /// consumer while every record went to the stalled one's partition).
    #[test]
    fn keyless_records_spread_when_no_batch_fills() {
        let mut sticky = Sticky::new(0, 2);
        let mut per_partition = [0u32; 2];
        for _ in 0..6_000 {
            per_partition[sticky.partition()] += 1;
            sticky.appended(100, false, 16 * 1024);
        }
        assert!(
            per_partition.iter().all(|&n| n >= 2_000),
            "{per_partition:?}"
        );
    }

    #[test]
    fn ranges_merge_in_and_out_of_order() {
        let mut ranges = Vec::new();
        insert_range(&mut ranges, 0, 10);
        insert_range(&mut ranges, 10, 20);
        assert_eq!(ranges, vec![(0, 20)]);
        insert_range(&mut ranges, 30, 40);
        insert_range(&mut ranges, 20, 30);
        assert_eq!(ranges, vec![(0, 40)]);
        insert_range(&mut ranges, 50, 60);
        insert_range(&mut ranges, 45, 47);
        assert_eq!(ranges, vec![(0, 40), (45, 47), (50, 60)]);
    }
}
