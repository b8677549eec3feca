//! Measuring helpers shared by the benchmarks: CPU clocks, latency histograms and their
//! summaries, rates. Kept cheap: recording a sample is one histogram increment.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Histograms track 1 µs .. 60 s. A sample beyond 60 s means the run is broken anyway; it is
/// clamped (`saturating_record`) rather than dropped so it still shows as the maximum.
const HISTOGRAM_MAX_US: u64 = 60_000_000;

/// Three significant digits: 0.1% error on every quantile, ~200 KiB per histogram.
const HISTOGRAM_SIGNIFICANT_DIGITS: u8 = 3;

/// Bytes in a megabyte as the results report it (MB/s are decimal, like disk vendors and
/// Kafka's own tools).
pub const BYTES_PER_MB: f64 = 1_000_000.0;

/// A latency histogram in microseconds.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, HISTOGRAM_SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// Records `elapsed` (rounded to whole microseconds, at least 1) into `histogram`.
pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    histogram.saturating_record(micros);
}

/// The quantiles the reports show, in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: histogram.len(),
            mean_us: histogram.mean(),
            p50_us: histogram.value_at_quantile(0.50),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }
}

/// CPU time consumed so far by the calling thread.
pub fn thread_cpu() -> Duration {
    read_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time consumed so far by the whole process, including glommio's helper threads and the
/// kernel's io_uring workers (which run fdatasync and fallocate on the process's behalf).
pub fn process_cpu() -> Duration {
    read_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// The current reading of `clock` (a CPU clock, or CLOCK_MONOTONIC); zero if it cannot be read.
pub fn read_clock(clock: libc::clockid_t) -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; the clock ids used are always supported.
    let status = unsafe { libc::clock_gettime(clock, &mut now) };
    if status != 0 {
        return Duration::ZERO;
    }
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// `bytes` over `elapsed`, in MB/s.
pub fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    per_second(bytes as f64 / BYTES_PER_MB, elapsed)
}

/// `count` over `elapsed`, per second.
pub fn per_second(count: f64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        count / secs
    } else {
        0.0
    }
}

/// `cpu` as a percentage of one core over `elapsed`.
pub fn cpu_percent(cpu: Duration, elapsed: Duration) -> f64 {
    per_second(cpu.as_secs_f64() * 100.0, elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_known_samples() {
        let mut histogram = new_histogram();
        for micros in 1..=1000 {
            record(&mut histogram, Duration::from_micros(micros));
        }
        let summary = LatencySummary::of(&histogram);
        assert_eq!(summary.count, 1000);
        assert_eq!(summary.p50_us, 500);
        assert_eq!(summary.p99_us, 990);
        assert_eq!(summary.p999_us, 999);
        assert_eq!(summary.max_us, 1000);
    }

    #[test]
    fn sub_microsecond_samples_count_as_one() {
        let mut histogram = new_histogram();
        record(&mut histogram, Duration::from_nanos(10));
        assert_eq!(histogram.max(), 1);
    }

    #[test]
    fn rates() {
        assert!((mb_per_s(2_000_000, Duration::from_secs(2)) - 1.0).abs() < 1e-9);
        assert_eq!(per_second(5.0, Duration::ZERO), 0.0);
        assert!(
            (cpu_percent(Duration::from_millis(500), Duration::from_secs(1)) - 50.0).abs() < 1e-9
        );
    }
}
