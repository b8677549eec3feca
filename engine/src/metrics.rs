//! Per-shard counters and latency histograms for the hot path, and the plain snapshots of them
//! that cross the bus when the admin port asks.
//!
//! Shards share nothing, so a counter is a `Cell<u64>` bumped by the shard that owns it: no
//! atomics, no locks, a few instructions per event. A histogram has fixed buckets (Prometheus
//! style) so recording is a short search over a constant table, and a snapshot is a copy of a
//! handful of integers. Whoever reads them (the admin server) gathers one snapshot per shard
//! over the bus and adds them up, or labels each with its shard.

use std::cell::Cell;
use std::time::Duration;

/// A monotonically increasing count. Owned by one shard.
#[derive(Debug, Default)]
pub struct Counter(Cell<u64>);

impl Counter {
    pub fn add(&self, amount: u64) {
        self.0.set(self.0.get().wrapping_add(amount));
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// Upper bounds of the latency buckets, in microseconds (the last, implicit bucket is +Inf).
///
/// From 50 µs (a cached fetch or a produce acknowledged from a relaxed flush policy) to 30 s
/// (the longest a long-polling fetch may wait, `FETCH_MAX_WAIT_CAP`), roughly 1-2.5-5 per
/// decade: fine enough to see an fdatasync move from ~0.2 ms to ~4 ms, coarse enough that
/// recording is a search over 19 entries and a scrape carries 20 buckets per series.
pub const LATENCY_BUCKET_BOUNDS_US: [u64; 19] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 20_000_000, 30_000_000,
];

/// Buckets of a [`Histogram`]: one per bound plus +Inf.
const LATENCY_BUCKETS: usize = LATENCY_BUCKET_BOUNDS_US.len() + 1;

/// A latency histogram with the fixed [`LATENCY_BUCKET_BOUNDS_US`]. Owned by one shard.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Not cumulative: `counts[i]` holds samples in `(bound[i-1], bound[i]]`.
    counts: [Cell<u64>; LATENCY_BUCKETS],
    sum_us: Cell<u64>,
}

impl Histogram {
    pub fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.record_us(micros);
    }

    pub fn record_us(&self, micros: u64) {
        let bucket = LATENCY_BUCKET_BOUNDS_US.partition_point(|&bound| bound < micros);
        let count = &self.counts[bucket];
        count.set(count.get().wrapping_add(1));
        self.sum_us.set(self.sum_us.get().saturating_add(micros));
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: self.counts.iter().map(Cell::get).collect(),
            sum_us: self.sum_us.get(),
        }
    }
}

/// A copy of a [`Histogram`], to send to another shard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Per bucket, not cumulative; one per bound of [`LATENCY_BUCKET_BOUNDS_US`] plus +Inf.
    pub counts: Vec<u64>,
    pub sum_us: u64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// (upper bound in microseconds, `None` for +Inf; samples at or below it), as Prometheus'
    /// cumulative `le` buckets.
    pub fn cumulative(&self) -> Vec<(Option<u64>, u64)> {
        let mut total = 0;
        self.counts
            .iter()
            .enumerate()
            .map(|(index, count)| {
                total += count;
                (LATENCY_BUCKET_BOUNDS_US.get(index).copied(), total)
            })
            .collect()
    }
}

/// The storage engine's own per-shard measurements (the batch cache and the bus count theirs).
///
/// One per shard, shared by that shard's logs.
#[derive(Debug, Default)]
pub struct StorageMetrics {
    /// Each group commit's fdatasync, from issue to completion.
    pub fsync_latency: Histogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_land_in_the_first_bucket_whose_bound_is_not_below_them() {
        let histogram = Histogram::default();
        for micros in [0, 50, 51, 1_000, 30_000_000, 30_000_001, u64::MAX] {
            histogram.record_us(micros);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count(), 7);
        assert_eq!(snapshot.counts[0], 2, "0 and 50 are at most 50");
        assert_eq!(snapshot.counts[1], 1, "51 is in (50, 100]");
        assert_eq!(snapshot.counts[4], 1, "1000 is in (500, 1000]");
        assert_eq!(
            snapshot.counts[LATENCY_BUCKETS - 2],
            1,
            "30 s is the last bound"
        );
        assert_eq!(snapshot.counts[LATENCY_BUCKETS - 1], 2, "past 30 s is +Inf");
        let cumulative = snapshot.cumulative();
        assert_eq!(cumulative[0], (Some(50), 2));
        assert_eq!(cumulative[1], (Some(100), 3));
        assert_eq!(cumulative.last(), Some(&(None, 7)));
        assert_eq!(
            snapshot.sum_us,
            u64::MAX,
            "the sum saturates instead of wrapping"
        );
    }

    #[test]
    fn durations_are_recorded_in_microseconds() {
        let histogram = Histogram::default();
        histogram.record(Duration::from_micros(300));
        histogram.record(Duration::from_millis(3));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.sum_us, 3_300);
        assert_eq!(snapshot.counts[3], 1, "300 us is in (250, 500]");
        assert_eq!(snapshot.counts[6], 1, "3 ms is in (2.5, 5] ms");
    }
}
