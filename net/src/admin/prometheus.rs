//! `/metrics`: every shard's counters in the Prometheus text exposition format, version 0.0.4,
//! each series labelled `shard="N"`.
//!
//! Rendered here rather than with the `prometheus-client` crate: that crate writes OpenMetrics
//! 1.0 only (`# EOF`, counter families named without their `_total` samples' suffix), not the
//! 0.0.4 format served as `text/plain; version=0.0.4`, and its metric types are atomics
//! registered once, whereas each scrape here builds its families from plain per-shard snapshots
//! gathered over the bus. The format is a few lines per sample; the integration test reads the
//! output back with a real Prometheus parser.

use std::fmt::Write as _;

use ringlog_engine::metrics::HistogramSnapshot;

use super::snapshot::ShardSnapshot;
use crate::metrics::{api_name, error_name};

/// A metric family's type, as `# TYPE` names it.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// The text being built.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, help: &str, kind: Kind) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.name());
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (index, (label, text)) in labels.iter().enumerate() {
                if index > 0 {
                    self.text.push(',');
                }
                let escaped = text
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.text, "{label}=\"{escaped}\"");
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// A histogram's `_bucket` (cumulative, `le` in seconds), `_sum` (seconds) and `_count`.
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], histogram: &HistogramSnapshot) {
        let bucket = format!("{name}_bucket");
        for (bound_us, count) in histogram.cumulative() {
            let le = bound_us.map_or_else(|| "+Inf".to_string(), seconds);
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, count);
        }
        self.sample(&format!("{name}_sum"), labels, seconds(histogram.sum_us));
        self.sample(&format!("{name}_count"), labels, histogram.count());
    }
}

/// Microseconds as decimal seconds, exactly (`2500` is `0.0025`).
fn seconds(micros: u64) -> String {
    let whole = micros / 1_000_000;
    let fraction = micros % 1_000_000;
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// A per-shard value: its name, help, type, and how to read it from a shard's snapshot.
type ShardValue = (
    &'static str,
    &'static str,
    Kind,
    fn(&super::snapshot::ShardMetrics) -> u64,
);

/// Every single-valued per-shard metric.
const SHARD_VALUES: [ShardValue; 10] = [
    (
        "ringlog_bytes_in_total",
        "Record batch bytes appended by Produce requests served on this shard's connections.",
        Kind::Counter,
        |metrics| metrics.broker.bytes_in,
    ),
    (
        "ringlog_messages_in_total",
        "Records appended by Produce requests served on this shard's connections.",
        Kind::Counter,
        |metrics| metrics.broker.records_in,
    ),
    (
        "ringlog_bytes_out_total",
        "Record batch bytes sent in Fetch responses on this shard's connections.",
        Kind::Counter,
        |metrics| metrics.broker.bytes_out,
    ),
    (
        "ringlog_messages_out_total",
        "Records sent in Fetch responses on this shard's connections.",
        Kind::Counter,
        |metrics| metrics.broker.records_out,
    ),
    (
        "ringlog_batch_cache_hits_total",
        "Reads served from the shard's batch cache.",
        Kind::Counter,
        |metrics| metrics.cache.hits,
    ),
    (
        "ringlog_batch_cache_misses_total",
        "Reads the shard's batch cache could not serve (read from disk).",
        Kind::Counter,
        |metrics| metrics.cache.misses,
    ),
    (
        "ringlog_batch_cache_bytes",
        "Bytes held by the shard's batch cache.",
        Kind::Gauge,
        |metrics| metrics.cache.used_bytes as u64,
    ),
    (
        "ringlog_connections",
        "Open Kafka client connections on the shard.",
        Kind::Gauge,
        |metrics| metrics.connections,
    ),
    (
        "ringlog_bus_messages_sent_total",
        "Messages the shard sent to other shards over the cross-core bus.",
        Kind::Counter,
        |metrics| metrics.bus.messages_sent,
    ),
    (
        "ringlog_bus_messages_received_total",
        "Messages the shard received from other shards over the cross-core bus.",
        Kind::Counter,
        |metrics| metrics.bus.messages_received,
    ),
];

/// Every shard's metrics; shards without metrics in their snapshot are left out.
pub fn render(shards: &[ShardSnapshot]) -> String {
    let shards: Vec<(String, &super::snapshot::ShardMetrics)> = shards
        .iter()
        .filter_map(|shard| Some((shard.shard.to_string(), shard.metrics.as_ref()?)))
        .collect();
    let mut out = Exposition::default();
    for (name, help, kind, value) in SHARD_VALUES {
        out.family(name, help, kind);
        for (shard, metrics) in &shards {
            out.sample(name, &[("shard", shard)], value(metrics));
        }
    }

    out.family(
        "ringlog_partitions",
        "Partitions the shard owns, online or offline (failed to open or found corrupt).",
        Kind::Gauge,
    );
    for (shard, metrics) in &shards {
        for (state, count) in [
            ("online", metrics.partitions_online),
            ("offline", metrics.partitions_offline),
        ] {
            out.sample(
                "ringlog_partitions",
                &[("shard", shard), ("state", state)],
                count,
            );
        }
    }
    out.family(
        "ringlog_disk_bytes",
        "Bytes of the segments of the shard's online partitions.",
        Kind::Gauge,
    );
    for (shard, metrics) in &shards {
        out.sample(
            "ringlog_disk_bytes",
            &[("shard", shard)],
            metrics.disk_bytes,
        );
    }

    out.family(
        "ringlog_requests_total",
        "Kafka requests answered on the shard's connections, by API and error code (the \
         request's top-level error, else its first topic or partition error, else NONE).",
        Kind::Counter,
    );
    for (shard, metrics) in &shards {
        for &(api_key, error_code, count) in &metrics.broker.requests {
            let api = api_name(api_key);
            let error = error_name(error_code);
            out.sample(
                "ringlog_requests_total",
                &[("shard", shard), ("api", &api), ("error", &error)],
                count,
            );
        }
    }

    type HistogramOf = fn(&super::snapshot::ShardMetrics) -> &HistogramSnapshot;
    let histograms: [(&str, &str, HistogramOf); 3] = [
        (
            "ringlog_produce_latency_seconds",
            "Produce requests from decoding to response, including the wait for durability.",
            |metrics| &metrics.broker.produce_latency,
        ),
        (
            "ringlog_fetch_latency_seconds",
            "Fetch requests from decoding to response, including a long poll's wait.",
            |metrics| &metrics.broker.fetch_latency,
        ),
        (
            "ringlog_fsync_latency_seconds",
            "Group-commit fdatasyncs of the shard's partition logs.",
            |metrics| &metrics.fsync_latency,
        ),
    ];
    for (name, help, histogram) in histograms {
        out.family(name, help, Kind::Histogram);
        for (shard, metrics) in &shards {
            out.histogram(name, &[("shard", shard)], histogram(metrics));
        }
    }
    out.text
}

#[cfg(test)]
mod tests {
    use ringlog_engine::metrics::Histogram;

    use super::super::snapshot::ShardMetrics;
    use super::*;

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(50), "0.00005");
        assert_eq!(seconds(2_500), "0.0025");
        assert_eq!(seconds(1_000_000), "1");
        assert_eq!(seconds(30_000_001), "30.000001");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = Exposition::default();
        out.sample("m", &[("a", "x\"y\\z\nw"), ("b", "")], 1);
        assert_eq!(out.text, "m{a=\"x\\\"y\\\\z\\nw\",b=\"\"} 1\n");
    }

    #[test]
    fn every_shard_gets_its_own_labelled_series() {
        let fsync = Histogram::default();
        fsync.record_us(300);
        fsync.record_us(40_000_000);
        let shard = |id: u16, bytes_in: u64| ShardSnapshot {
            shard: id,
            metrics: Some(ShardMetrics {
                fsync_latency: fsync.snapshot(),
                broker: crate::metrics::BrokerMetricsSnapshot {
                    bytes_in,
                    requests: vec![(0, 0, 5), (1, 3, 2)],
                    ..Default::default()
                },
                ..ShardMetrics::default()
            }),
            ..ShardSnapshot::default()
        };
        let text = render(&[shard(0, 10), shard(1, 20)]);
        for line in [
            "# TYPE ringlog_bytes_in_total counter",
            "ringlog_bytes_in_total{shard=\"0\"} 10",
            "ringlog_bytes_in_total{shard=\"1\"} 20",
            "ringlog_requests_total{shard=\"1\",api=\"Fetch\",error=\"UNKNOWN_TOPIC_OR_PARTITION\"} 2",
            "ringlog_requests_total{shard=\"0\",api=\"Produce\",error=\"NONE\"} 5",
            "# TYPE ringlog_fsync_latency_seconds histogram",
            "ringlog_fsync_latency_seconds_bucket{shard=\"0\",le=\"0.00025\"} 0",
            "ringlog_fsync_latency_seconds_bucket{shard=\"0\",le=\"0.0005\"} 1",
            "ringlog_fsync_latency_seconds_bucket{shard=\"1\",le=\"30\"} 1",
            "ringlog_fsync_latency_seconds_bucket{shard=\"1\",le=\"+Inf\"} 2",
            "ringlog_fsync_latency_seconds_sum{shard=\"1\"} 40.0003",
            "ringlog_fsync_latency_seconds_count{shard=\"1\"} 2",
            "ringlog_partitions{shard=\"0\",state=\"offline\"} 0",
        ] {
            assert!(
                text.lines().any(|candidate| candidate == line),
                "missing {line:?} in\n{text}"
            );
        }
        // A family's samples follow its TYPE line, before the next family starts (0.0.4).
        let type_lines = text
            .lines()
            .filter(|line| line.starts_with("# TYPE"))
            .count();
        assert_eq!(type_lines, SHARD_VALUES.len() + 2 + 1 + 3);
    }
}
