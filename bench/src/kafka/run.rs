//! One workload run against one broker: arguments, orchestration, sampling, verification.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use super::consumer::{self, ConsumerSettings, Membership, StartAt};
use super::procstat::{self, ProcSample};
use super::producer::{self, Keys, LaneTarget, ProducerSettings, Shared};
use super::records::{clock, Codec, Payload};
use super::result::{
    ErrorCount, Percentiles, ProcessUsage, Throughput, TimelineSample, Verification, WorkloadResult,
};
use crate::measure::{new_histogram, BYTES_PER_MB};
use ringlog_net::client::admin;
use ringlog_net::client::Connection;

/// How often throughput and the broker's /proc figures are sampled.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// How long consumers may take to join and get their partitions.
const CONSUMERS_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// After producing stops, consumers get this long without progress to read the rest.
const DRAIN_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// A drain never takes longer than this in total.
const DRAIN_MAX: Duration = Duration::from_secs(300);
/// Room a batch needs in a request beyond its message values: the request and batch headers
/// and per-record framing of a full batch (a 100-byte message carries ~10 bytes of framing).
const BATCH_OVERHEAD_MAX: usize = 64 * 1024;
/// Bytes per GB in the CPU-seconds-per-GB figure (decimal, like MB/s).
const BYTES_PER_GB: f64 = 1e9;
/// A progress line is printed this often when stderr is not a terminal.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(10);
const PROGRESS_BAR_WIDTH: usize = 30;

/// Produce acknowledgement levels, by Kafka's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
pub enum Acks {
    #[value(name = "0")]
    None,
    #[value(name = "1")]
    Leader,
    #[value(name = "all", alias = "-1")]
    All,
}

impl Acks {
    fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum From {
    Earliest,
    Latest,
}

/// `ringlog-bench kafka`: one workload against one broker.
#[derive(Args, Clone, Debug)]
pub struct KafkaArgs {
    /// host:port of any broker of the cluster.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Name of the workload in the results.
    #[arg(long, default_value = "workload")]
    pub name: String,
    /// Name of the broker in the results (e.g. ringlog, tansu-memory).
    #[arg(long, default_value = "broker")]
    pub broker: String,
    /// Topics to create (named `PREFIX-<time>-<n>`) and delete afterwards.
    #[arg(long, default_value_t = 1)]
    pub topics: usize,
    #[arg(long, default_value = "bench")]
    pub topic_prefix: String,
    /// Use this existing topic instead of creating topics (it is not deleted).
    #[arg(long)]
    pub reuse_topic: Option<String>,
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    #[arg(long, default_value_t = 1)]
    pub replicas: i16,
    /// A topic config for the created topics (repeatable), e.g. retention.bytes=1073741824.
    #[arg(long = "topic-config", value_parser = parse_key_value)]
    pub topic_configs: Vec<(String, String)>,
    /// Keep the created topics after the run.
    #[arg(long)]
    pub keep_topics: bool,
    /// Message value size in bytes (at least 8: the first 8 carry the send time).
    #[arg(long, default_value_t = 100)]
    pub message_size: usize,
    /// Producers (each one connection per leader); producer N writes to topic N mod topics.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Total target rate in messages per second over all producers; 0 is as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// `batch.size`: bytes of message values per batch before it is sent.
    #[arg(long, default_value_t = 16 * 1024)]
    pub batch_size: usize,
    /// `max.request.size`: the largest Produce request; a batch must fit in it.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_request_size: usize,
    /// `linger.ms`: how long a batch may wait to fill.
    #[arg(long, default_value_t = 1.0)]
    pub linger_ms: f64,
    #[arg(long, value_enum, default_value_t = Codec::None)]
    pub compression: Codec,
    #[arg(long, value_enum, default_value_t = Keys::None)]
    pub keys: Keys,
    #[arg(long, default_value_t = 10_000)]
    pub key_space: u64,
    #[arg(long, value_enum, default_value_t = Acks::All)]
    pub acks: Acks,
    /// `max.in.flight.requests.per.connection`.
    #[arg(long, default_value_t = 5)]
    pub max_in_flight: usize,
    /// `buffer.memory`: unsent bytes a producer connection may hold.
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    pub buffer_bytes: usize,
    /// Consumers; without --group the partitions are dealt out among them.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Consume through a classic consumer group with this id.
    #[arg(long)]
    pub group: Option<String>,
    /// Where consumers start without committed offsets.
    #[arg(long, value_enum, default_value_t = From::Latest)]
    pub from: From,
    /// The first consumer stops reading after this many seconds (stays connected), to see
    /// what a stalled consumer costs the broker.
    #[arg(long)]
    pub stall_consumer_after_s: Option<f64>,
    /// Seconds of warm-up (not measured).
    #[arg(long, default_value_t = 5.0)]
    pub warmup_s: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 30.0)]
    pub duration_s: f64,
    /// With no producers: end when the consumers have read everything that was in the topic
    /// at the start (the consume-a-backlog benchmark); --duration-s is then a limit.
    #[arg(long)]
    pub drain: bool,
    /// After producing, let consumers read everything and check that every acknowledged
    /// message was read (lost, duplicates, out of order).
    #[arg(long)]
    pub verify: bool,
    /// PID of the broker process, to sample its CPU time and RSS from /proc.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Write the result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an HTML report (latency percentiles, throughput over time) here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .ok_or_else(|| format!("expected key=value, got {text:?}"))
}

impl KafkaArgs {
    fn validate(&self) -> anyhow::Result<()> {
        if self.producers == 0 && self.consumers == 0 {
            bail!("nothing to do: --producers and --consumers are both 0");
        }
        if self.topics == 0 || self.partitions < 1 {
            bail!("--topics and --partitions must be at least 1");
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            bail!("--rate must be a finite number >= 0");
        }
        if !(self.warmup_s >= 0.0 && self.duration_s > 0.0) {
            bail!("--warmup-s must be >= 0 and --duration-s > 0");
        }
        if self.max_in_flight == 0 || self.batch_size == 0 {
            bail!("--max-in-flight and --batch-size must be at least 1");
        }
        if self.batch_size + BATCH_OVERHEAD_MAX > self.max_request_size {
            bail!(
                "--batch-size {} does not fit in --max-request-size {} (leave {BATCH_OVERHEAD_MAX} \
                 bytes for the request and batch headers); Kafka brokers refuse larger requests \
                 (message.max.bytes) with MESSAGE_TOO_LARGE",
                self.batch_size,
                self.max_request_size
            );
        }
        if self.buffer_bytes < self.batch_size {
            bail!("--buffer-bytes must hold at least one batch (--batch-size)");
        }
        if self.group.is_none() && self.consumers > 0 {
            let total = self.topics as i64 * i64::from(self.partitions);
            if self.reuse_topic.is_none() && (self.consumers as i64) > total {
                bail!("{} consumers for {total} partitions", self.consumers);
            }
        }
        if self.drain && self.producers > 0 {
            bail!("--drain is for consume-only runs (--producers 0); use --verify with producers");
        }
        Ok(())
    }

    fn settings(&self) -> Vec<(String, String)> {
        let mut settings = vec![
            ("topics".into(), self.topics.to_string()),
            ("partitions".into(), self.partitions.to_string()),
            ("replicas".into(), self.replicas.to_string()),
            ("message_size".into(), self.message_size.to_string()),
            ("producers".into(), self.producers.to_string()),
            ("consumers".into(), self.consumers.to_string()),
            (
                "rate".into(),
                if self.rate > 0.0 {
                    format!("{} msg/s", self.rate)
                } else {
                    "max".into()
                },
            ),
            ("acks".into(), format!("{:?}", self.acks.wire())),
            ("batch.size".into(), self.batch_size.to_string()),
            ("linger.ms".into(), self.linger_ms.to_string()),
            ("compression".into(), format!("{:?}", self.compression)),
            ("keys".into(), format!("{:?}", self.keys)),
            ("max.in.flight".into(), self.max_in_flight.to_string()),
            ("group".into(), self.group.clone().unwrap_or("-".into())),
            ("from".into(), format!("{:?}", self.from)),
        ];
        for (key, value) in &self.topic_configs {
            settings.push((format!("topic {key}"), value.clone()));
        }
        settings
    }
}

/// Counter readings at one instant.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    at: Option<Instant>,
    produced_messages: u64,
    produced_bytes: u64,
    consumed_messages: u64,
    consumed_bytes: u64,
    proc: Option<ProcSample>,
    client_cpu_s: f64,
}

impl Counters {
    fn read(shared: &Shared, pid: Option<u32>) -> Counters {
        Counters {
            at: Some(Instant::now()),
            produced_messages: shared.produced_messages.load(Ordering::Relaxed),
            produced_bytes: shared.produced_bytes.load(Ordering::Relaxed),
            consumed_messages: shared.consumed_messages.load(Ordering::Relaxed),
            consumed_bytes: shared.consumed_bytes.load(Ordering::Relaxed),
            proc: pid.and_then(|pid| procstat::sample(pid).ok()),
            client_cpu_s: crate::measure::process_cpu().as_secs_f64(),
        }
    }

    fn seconds_since(&self, earlier: &Counters) -> f64 {
        match (self.at, earlier.at) {
            (Some(now), Some(then)) => now.duration_since(then).as_secs_f64(),
            _ => 0.0,
        }
    }
}

fn per_s(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// Runs one workload and returns (and optionally writes) its result.
pub fn run(args: &KafkaArgs) -> anyhow::Result<WorkloadResult> {
    args.validate()?;
    let payload = Payload::new(args.message_size, 0x5eed)?;
    let mut bootstrap = Connection::connect(&args.bootstrap, super::CLIENT_ID)?;
    let started_unix_ms = super::unix_ms();
    let (topics, created) = match &args.reuse_topic {
        Some(topic) => (vec![topic.clone()], false),
        None => {
            let topics: Vec<String> = (0..args.topics)
                .map(|index| format!("{}-{started_unix_ms}-{index}", args.topic_prefix))
                .collect();
            admin::create_topics(
                &mut bootstrap,
                &topics,
                args.partitions,
                args.replicas,
                &args.topic_configs,
                false,
            )?;
            (topics, true)
        }
    };
    let outcome = run_on_topics(args, &payload, &mut bootstrap, &topics, started_unix_ms);
    if created && !args.keep_topics {
        if let Err(error) = admin::delete_topics(&mut bootstrap, &topics) {
            eprintln!("warning: could not delete the benchmark topics: {error:#}");
        }
    }
    let result = outcome?;
    print_summary(&result);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&result)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.html {
        let page = super::report::html(&result.workload, std::slice::from_ref(&result));
        std::fs::write(path, page).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(result)
}

fn run_on_topics(
    args: &KafkaArgs,
    payload: &Payload,
    bootstrap: &mut Connection,
    topics: &[String],
    started_unix_ms: u64,
) -> anyhow::Result<WorkloadResult> {
    let layout = admin::wait_for_layout(bootstrap, topics)?;
    let all_partitions: Vec<(String, i32)> = layout.leaders.keys().cloned().collect();
    let shared = Arc::new(Shared::new());

    // Where the data starts and ends before the run (for consume-only drains).
    let mut backlog: u64 = 0;
    if args.drain {
        for topic in topics {
            let partitions: Vec<i32> = all_partitions
                .iter()
                .filter(|(t, _)| t == topic)
                .map(|(_, p)| *p)
                .collect();
            // Each partition's offsets from its own leader (a cluster has several).
            let mut by_leader: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for partition in &partitions {
                let address = layout.leader_address(topic, *partition)?.to_string();
                by_leader.entry(address).or_default().push(*partition);
            }
            for (address, led) in by_leader {
                let mut leader = Connection::connect(&address, super::CLIENT_ID)?;
                let start = admin::offsets(&mut leader, topic, &led, admin::EARLIEST)?;
                let end = admin::offsets(&mut leader, topic, &led, admin::LATEST)?;
                backlog += led
                    .iter()
                    .map(|p| (end[p] - start[p]).max(0) as u64)
                    .sum::<u64>();
            }
        }
    }

    // Consumers first, so they are reading before the first message is produced.
    let ready = Arc::new(AtomicUsize::new(0));
    let mut consumers = Vec::new();
    for index in 0..args.consumers {
        let membership = match &args.group {
            Some(group) => Membership::Group {
                group_id: group.clone(),
                topics: topics.to_vec(),
            },
            None => Membership::Assigned(
                all_partitions
                    .iter()
                    .enumerate()
                    .filter(|(position, _)| position % args.consumers == index)
                    .map(|(_, partition)| partition.clone())
                    .collect(),
            ),
        };
        let settings = ConsumerSettings {
            bootstrap: args.bootstrap.clone(),
            membership,
            start_at: match args.from {
                From::Earliest => StartAt::Earliest,
                From::Latest => StartAt::Latest,
            },
            stop_reading_after: (index == 0)
                .then_some(args.stall_consumer_after_s)
                .flatten()
                .map(Duration::from_secs_f64),
        };
        consumers.push(consumer::start(
            index,
            settings,
            Arc::clone(&shared),
            Arc::clone(&ready),
        ));
    }
    let waiting_since = Instant::now();
    while ready.load(Ordering::SeqCst) < args.consumers {
        if consumers.iter().any(|c| c.is_finished()) {
            break;
        }
        if waiting_since.elapsed() > CONSUMERS_READY_TIMEOUT {
            shared.stop.store(true, Ordering::SeqCst);
            bail!("the consumers did not get their partitions within {CONSUMERS_READY_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let warmup = Duration::from_secs_f64(if args.drain { 0.0 } else { args.warmup_s });
    let duration = Duration::from_secs_f64(args.duration_s);
    let start_us = clock::now_us();
    let start = Instant::now();
    shared
        .measure_from_us
        .store(start_us + warmup.as_micros() as u64, Ordering::SeqCst);
    shared.produce_until_us.store(
        start_us + (warmup + duration).as_micros() as u64,
        Ordering::SeqCst,
    );

    let mut lanes = Vec::new();
    if args.producers > 0 {
        // Producer N writes to all partitions of topic N mod topics, one lane per leader.
        let mut plan: Vec<(usize, LaneTarget)> = Vec::new();
        for producer_index in 0..args.producers {
            let topic = &topics[producer_index % topics.len()];
            let mut by_leader: BTreeMap<String, Vec<(String, i32)>> = BTreeMap::new();
            for (t, p) in all_partitions.iter().filter(|(t, _)| t == topic) {
                by_leader
                    .entry(layout.leader_address(t, *p)?.to_string())
                    .or_default()
                    .push((t.clone(), *p));
            }
            for (address, partitions) in by_leader {
                plan.push((
                    producer_index,
                    LaneTarget {
                        address,
                        partitions,
                    },
                ));
            }
        }
        let total_partitions: usize = plan.iter().map(|(_, lane)| lane.partitions.len()).sum();
        for (index, (_, target)) in plan.into_iter().enumerate() {
            let share = target.partitions.len() as f64 / total_partitions as f64;
            let settings = ProducerSettings {
                acks: args.acks.wire(),
                batch_bytes: args.batch_size,
                linger: Duration::from_secs_f64(args.linger_ms / 1e3),
                codec: args.compression,
                max_in_flight: args.max_in_flight,
                keys: args.keys,
                key_space: args.key_space,
                payload: payload.clone(),
                rate: (args.rate > 0.0).then_some(args.rate * share),
                buffer_bytes: args.buffer_bytes,
                request_timeout_ms: 30_000,
            };
            lanes.push(producer::start_lane(
                index,
                target,
                settings,
                Arc::clone(&shared),
            )?);
        }
    }

    // Sample until the measured window ends (or, draining, until the backlog is read).
    let mut progress = Progress::new(args.quiet, warmup + duration);
    let mut timeline = Vec::new();
    let mut previous = Counters::read(&shared, args.pid);
    let mut window_start: Option<Counters> = (warmup.is_zero()).then_some(previous);
    let end = start + warmup + duration;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if args.drain && shared.consumed_messages.load(Ordering::Relaxed) >= backlog {
            break;
        }
        if window_start.is_none() && now >= start + warmup {
            window_start = Some(Counters::read(&shared, args.pid));
        }
        let next_tick = previous.at.unwrap_or(now) + SAMPLE_INTERVAL;
        let wake = next_tick.min(end).min(if window_start.is_none() {
            start + warmup
        } else {
            end
        });
        std::thread::sleep(wake.saturating_duration_since(now).min(if args.drain {
            Duration::from_millis(10)
        } else {
            Duration::MAX
        }));
        if Instant::now() >= next_tick {
            let current = Counters::read(&shared, args.pid);
            timeline.push(sample(&previous, &current, start, window_start.is_none()));
            progress.show(&current, &previous, start);
            previous = current;
        }
    }
    let window_end = Counters::read(&shared, args.pid);
    let window_start = window_start.unwrap_or(previous);
    progress.finish();

    // Producing stops at the window's end; wait for the last acknowledgements.
    let mut publish = new_histogram();
    let mut failures = Vec::new();
    for lane in lanes {
        match lane.join() {
            Ok(histogram) => publish.add(&histogram).expect("same histogram bounds"),
            Err(error) => failures.push(format!("{error:#}")),
        }
    }

    // Consumers read what is left (verifying), then stop.
    let acknowledged: u64 = shared
        .acknowledged
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .flatten()
        .map(|(start, end)| (end - start) as u64)
        .sum();
    if args.verify && args.consumers > 0 {
        shared.resume_stalled.store(true, Ordering::SeqCst);
        let accounted = || {
            shared.consumed_messages.load(Ordering::Relaxed)
                + shared.expired_messages.load(Ordering::Relaxed)
        };
        let drain_start = Instant::now();
        let mut last = accounted();
        let mut last_progress = Instant::now();
        while accounted() < acknowledged
            && last_progress.elapsed() < DRAIN_IDLE_TIMEOUT
            && drain_start.elapsed() < DRAIN_MAX
        {
            std::thread::sleep(Duration::from_millis(50));
            let now = accounted();
            if now != last {
                last = now;
                last_progress = Instant::now();
            }
        }
    }
    shared.stop.store(true, Ordering::SeqCst);
    let mut end_to_end = new_histogram();
    let mut read = producer::OffsetRanges::new();
    let mut expired = producer::OffsetRanges::new();
    let (mut duplicates, mut out_of_order) = (0, 0);
    for consumer in consumers {
        match consumer.join() {
            Ok(outcome) => {
                if let Some(histogram) = &outcome.end_to_end {
                    end_to_end.add(histogram).expect("same histogram bounds");
                }
                duplicates += outcome.duplicates;
                out_of_order += outcome.out_of_order;
                for (into, from) in [(&mut read, outcome.read), (&mut expired, outcome.expired)] {
                    for (partition, ranges) in from {
                        let merged = into.entry(partition).or_default();
                        for (start, end) in ranges {
                            producer::insert_range(merged, start, end);
                        }
                    }
                }
            }
            Err(error) => failures.push(format!("{error:#}")),
        }
    }
    for failure in &failures {
        shared.error(failure.clone());
    }

    let verification = (args.verify && args.consumers > 0 && args.producers > 0).then(|| {
        let acked = shared
            .acknowledged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // Unread offsets that retention deleted first are expired, not lost.
        let (mut unread, mut lost) = (0, 0);
        for (partition, ranges) in &acked {
            let seen = read.get(partition).cloned().unwrap_or_default();
            let mut accounted = seen.clone();
            for &(start, end) in expired
                .get(partition)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                producer::insert_range(&mut accounted, start, end);
            }
            for &(start, end) in ranges {
                unread += uncovered(start, end, &seen);
                lost += uncovered(start, end, &accounted);
            }
        }
        Verification {
            acknowledged,
            read_back: acknowledged - unread,
            expired: unread - lost,
            lost,
            duplicates,
            out_of_order,
        }
    });

    let seconds = window_end.seconds_since(&window_start);
    let produced_messages = window_end.produced_messages - window_start.produced_messages;
    let produced_bytes = window_end.produced_bytes - window_start.produced_bytes;
    let consumed_messages = window_end.consumed_messages - window_start.consumed_messages;
    let consumed_bytes = window_end.consumed_bytes - window_start.consumed_bytes;
    let broker_process = match (args.pid, window_start.proc, window_end.proc) {
        (Some(pid), Some(before), Some(after)) => {
            let cpu_seconds = after.cpu_seconds - before.cpu_seconds;
            let moved = if produced_bytes > 0 {
                produced_bytes
            } else {
                consumed_bytes
            };
            let rss_max = timeline
                .iter()
                .filter_map(|sample: &TimelineSample| sample.broker_rss_kib)
                .chain([before.rss_kib, after.rss_kib])
                .max()
                .unwrap_or(0);
            Some(ProcessUsage {
                pid,
                cpu_seconds,
                cpu_seconds_per_gb: if moved > 0 {
                    cpu_seconds / (moved as f64 / BYTES_PER_GB)
                } else {
                    0.0
                },
                rss_start_kib: before.rss_kib,
                rss_end_kib: after.rss_kib,
                rss_max_kib: rss_max,
            })
        }
        _ => None,
    };
    let errors = shared
        .errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(what, count)| ErrorCount {
            what: what.clone(),
            count: *count,
        })
        .collect();
    Ok(WorkloadResult {
        workload: args.name.clone(),
        broker: args.broker.clone(),
        settings: args.settings(),
        started_unix_ms,
        warmup_s: warmup.as_secs_f64(),
        duration_s: seconds,
        produced: Throughput {
            messages: produced_messages,
            bytes: produced_bytes,
            messages_per_s: per_s(produced_messages, seconds),
            mb_per_s: per_s(produced_bytes, seconds) / BYTES_PER_MB,
        },
        consumed: Throughput {
            messages: consumed_messages,
            bytes: consumed_bytes,
            messages_per_s: per_s(consumed_messages, seconds),
            mb_per_s: per_s(consumed_bytes, seconds) / BYTES_PER_MB,
        },
        publish_latency: Percentiles::of(&publish),
        end_to_end_latency: Percentiles::of(&end_to_end),
        timeline,
        broker_process,
        client_cpu_seconds: window_end.client_cpu_s - window_start.client_cpu_s,
        errors,
        verification,
    })
}

/// How many offsets of [start, end) the sorted, merged `seen` ranges do not cover.
fn uncovered(start: i64, end: i64, seen: &[(i64, i64)]) -> u64 {
    let mut covered = 0;
    for &(from, to) in seen {
        let low = from.max(start);
        let high = to.min(end);
        if high > low {
            covered += high - low;
        }
    }
    (end - start - covered).max(0) as u64
}

fn sample(previous: &Counters, current: &Counters, start: Instant, warmup: bool) -> TimelineSample {
    let seconds = current.seconds_since(previous);
    let (cpu, rss) = match (previous.proc, current.proc) {
        (Some(before), Some(after)) if seconds > 0.0 => (
            Some((after.cpu_seconds - before.cpu_seconds) / seconds * 100.0),
            Some(after.rss_kib),
        ),
        (_, Some(after)) => (None, Some(after.rss_kib)),
        _ => (None, None),
    };
    TimelineSample {
        t_s: current
            .at
            .map_or(0.0, |at| at.duration_since(start).as_secs_f64()),
        warmup,
        produced_messages_per_s: per_s(
            current.produced_messages - previous.produced_messages,
            seconds,
        ),
        produced_mb_per_s: per_s(current.produced_bytes - previous.produced_bytes, seconds)
            / BYTES_PER_MB,
        consumed_messages_per_s: per_s(
            current.consumed_messages - previous.consumed_messages,
            seconds,
        ),
        consumed_mb_per_s: per_s(current.consumed_bytes - previous.consumed_bytes, seconds)
            / BYTES_PER_MB,
        broker_cpu_percent: cpu,
        broker_rss_kib: rss,
    }
}

/// The progress bar on stderr: redrawn in place on a terminal, a line every few seconds
/// otherwise (CI logs).
struct Progress {
    enabled: bool,
    terminal: bool,
    total: Duration,
    last_plain: Option<Instant>,
}

impl Progress {
    fn new(quiet: bool, total: Duration) -> Progress {
        Progress {
            enabled: !quiet,
            terminal: std::io::stderr().is_terminal(),
            total,
            last_plain: None,
        }
    }

    fn show(&mut self, current: &Counters, previous: &Counters, start: Instant) {
        if !self.enabled {
            return;
        }
        let elapsed = start.elapsed();
        if !self.terminal {
            if self
                .last_plain
                .is_some_and(|at| at.elapsed() < PLAIN_PROGRESS_EVERY)
            {
                return;
            }
            self.last_plain = Some(Instant::now());
        }
        let seconds = current.seconds_since(previous);
        let fraction = (elapsed.as_secs_f64() / self.total.as_secs_f64().max(1e-9)).min(1.0);
        let filled = (fraction * PROGRESS_BAR_WIDTH as f64) as usize;
        let line = format!(
            "[{}{}] {:>4.0}s/{:.0}s  produced {:>10.0} msg/s {:>8.1} MB/s  consumed {:>10.0} msg/s {:>8.1} MB/s",
            "#".repeat(filled),
            ".".repeat(PROGRESS_BAR_WIDTH - filled),
            elapsed.as_secs_f64(),
            self.total.as_secs_f64(),
            per_s(current.produced_messages - previous.produced_messages, seconds),
            per_s(current.produced_bytes - previous.produced_bytes, seconds) / BYTES_PER_MB,
            per_s(current.consumed_messages - previous.consumed_messages, seconds),
            per_s(current.consumed_bytes - previous.consumed_bytes, seconds) / BYTES_PER_MB,
        );
        let mut stderr = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(stderr, "\r{line}");
        } else {
            let _ = writeln!(stderr, "{line}");
        }
        let _ = stderr.flush();
    }

    fn finish(&self) {
        if self.enabled && self.terminal {
            eprintln!();
        }
    }
}

fn latency_line(label: &str, latency: &Percentiles) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    format!(
        "{label:<12} p50 {:.3} ms  p75 {:.3}  p95 {:.3}  p99 {:.3}  p99.9 {:.3}  p99.99 {:.3}  max {:.3}  ({} samples)",
        ms(latency.p50_us),
        ms(latency.p75_us),
        ms(latency.p95_us),
        ms(latency.p99_us),
        ms(latency.p999_us),
        ms(latency.p9999_us),
        ms(latency.max_us),
        latency.count,
    )
}

/// The terminal summary of one run.
pub fn print_summary(result: &WorkloadResult) {
    println!(
        "{} on {}: {:.1} s measured after {:.1} s warm-up",
        result.workload, result.broker, result.duration_s, result.warmup_s
    );
    println!(
        "produced     {:>12.0} msg/s {:>9.2} MB/s  ({} messages)",
        result.produced.messages_per_s, result.produced.mb_per_s, result.produced.messages
    );
    println!(
        "consumed     {:>12.0} msg/s {:>9.2} MB/s  ({} messages)",
        result.consumed.messages_per_s, result.consumed.mb_per_s, result.consumed.messages
    );
    if result.publish_latency.count > 0 {
        println!("{}", latency_line("publish", &result.publish_latency));
    }
    if result.end_to_end_latency.count > 0 {
        println!("{}", latency_line("end-to-end", &result.end_to_end_latency));
    }
    if let Some(process) = &result.broker_process {
        println!(
            "broker pid {}: {:.2} CPU-s ({:.2} CPU-s/GB), RSS {} -> {} KiB (max {})",
            process.pid,
            process.cpu_seconds,
            process.cpu_seconds_per_gb,
            process.rss_start_kib,
            process.rss_end_kib,
            process.rss_max_kib
        );
    }
    println!("client CPU   {:.2} s", result.client_cpu_seconds);
    if let Some(verification) = &result.verification {
        println!(
            "verified     {} acknowledged, {} read back, {} expired by retention, {} lost, {} duplicates, {} out of order",
            verification.acknowledged,
            verification.read_back,
            verification.expired,
            verification.lost,
            verification.duplicates,
            verification.out_of_order
        );
    }
    for error in &result.errors {
        println!("error        {} x{}", error.what, error.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncovered_counts_gaps() {
        assert_eq!(uncovered(0, 10, &[(0, 10)]), 0);
        assert_eq!(uncovered(0, 10, &[(0, 4), (6, 10)]), 2);
        assert_eq!(uncovered(0, 10, &[]), 10);
        assert_eq!(uncovered(5, 10, &[(0, 7), (9, 20)]), 2);
    }
}
