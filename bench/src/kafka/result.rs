//! What one Kafka workload run measured, in the shape the JSON result file, the terminal
//! summary and the HTML report all read. Plain data: no logic beyond summarising histograms.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The percentiles every latency is reported at, as fractions (OpenMessaging Benchmark's set
/// plus p99.99).
pub const REPORTED_QUANTILES: [f64; 6] = [0.50, 0.75, 0.95, 0.99, 0.999, 0.9999];

/// Points per latency curve in the result file: enough for a smooth percentile plot from p0 to
/// p99.999 without storing the whole histogram.
const CURVE_TICKS_PER_HALF_DISTANCE: u32 = 5;

/// A latency distribution in microseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p75_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub p9999_us: u64,
    pub max_us: u64,
    /// (percentile in 0..=100, latency in µs) points for a percentile plot, in increasing
    /// percentile order; the last point is the maximum at 100.
    pub curve: Vec<(f64, u64)>,
}

impl Percentiles {
    /// Summarises a histogram of microseconds.
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        let at = |quantile: f64| histogram.value_at_quantile(quantile);
        let mut curve: Vec<(f64, u64)> = histogram
            .iter_quantiles(CURVE_TICKS_PER_HALF_DISTANCE)
            .map(|step| {
                (
                    step.quantile_iterated_to() * 100.0,
                    histogram.highest_equivalent(step.value_iterated_to()),
                )
            })
            .filter(|(percentile, _)| *percentile < 100.0)
            .collect();
        curve.dedup_by(|later, earlier| later.0 == earlier.0);
        curve.push((100.0, histogram.max()));
        Percentiles {
            count: histogram.len(),
            mean_us: histogram.mean(),
            p50_us: at(REPORTED_QUANTILES[0]),
            p75_us: at(REPORTED_QUANTILES[1]),
            p95_us: at(REPORTED_QUANTILES[2]),
            p99_us: at(REPORTED_QUANTILES[3]),
            p999_us: at(REPORTED_QUANTILES[4]),
            p9999_us: at(REPORTED_QUANTILES[5]),
            max_us: histogram.max(),
            curve,
        }
    }
}

/// Messages and bytes moved in one direction over the measured window.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Throughput {
    pub messages: u64,
    /// Message value bytes (keys and headers excluded), as OpenMessaging Benchmark counts.
    pub bytes: u64,
    pub messages_per_s: f64,
    pub mb_per_s: f64,
}

/// One second (or one sampling interval) of the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TimelineSample {
    /// Seconds since the start of the run (warm-up included; `warmup` says which samples are
    /// warm-up).
    pub t_s: f64,
    pub warmup: bool,
    pub produced_messages_per_s: f64,
    pub produced_mb_per_s: f64,
    pub consumed_messages_per_s: f64,
    pub consumed_mb_per_s: f64,
    /// The broker's CPU use over the interval in percent of one core; `None` without `--pid`.
    pub broker_cpu_percent: Option<f64>,
    pub broker_rss_kib: Option<u64>,
}

/// The broker process's resource use over the measured window, from /proc.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcessUsage {
    pub pid: u32,
    /// User + system CPU seconds used during the measured window.
    pub cpu_seconds: f64,
    /// `cpu_seconds` per 10^9 bytes of message values produced in the window.
    pub cpu_seconds_per_gb: f64,
    pub rss_start_kib: u64,
    pub rss_end_kib: u64,
    pub rss_max_kib: u64,
}

/// What the consumers checked about the data they read.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Verification {
    /// Acknowledged messages the consumers were expected to read.
    pub acknowledged: u64,
    /// Distinct acknowledged messages read back.
    pub read_back: u64,
    /// Acknowledged messages deleted by retention before a consumer read them (a consumer
    /// that stalled past `retention.bytes` or `retention.ms`); Kafka's semantics, not a loss.
    #[serde(default)]
    pub expired: u64,
    /// Acknowledged messages never read and not expired (must be 0).
    pub lost: u64,
    /// Offsets read more than once by the same consumer.
    pub duplicates: u64,
    /// Records whose offset was lower than one read before it on the same partition.
    pub out_of_order: u64,
}

/// An error kind and how often it happened.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ErrorCount {
    pub what: String,
    pub count: u64,
}

/// Everything one workload run against one broker produced.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct WorkloadResult {
    /// The workload's name (e.g. `produce-100b-1p`).
    pub workload: String,
    /// Which broker ran it (e.g. `ringlog`, `tansu-memory`).
    pub broker: String,
    /// The workload's settings as `key=value` strings, for the report's header.
    pub settings: Vec<(String, String)>,
    pub started_unix_ms: u64,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub produced: Throughput,
    pub consumed: Throughput,
    /// Send (or scheduled send, when rate-limited) to acknowledgement.
    pub publish_latency: Percentiles,
    /// Producer timestamp (carried in the message) to consumer receipt.
    pub end_to_end_latency: Percentiles,
    pub timeline: Vec<TimelineSample>,
    pub broker_process: Option<ProcessUsage>,
    /// CPU seconds this benchmark process used in the measured window.
    pub client_cpu_seconds: f64,
    pub errors: Vec<ErrorCount>,
    pub verification: Option<Verification>,
}
