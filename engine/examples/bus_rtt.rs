//! Measures the cross-core bus round trip: shard 0 calls shard 1 (and itself, for comparison)
//! many times, one call at a time, and prints latency percentiles. Not a test: numbers depend on
//! the machine. Run with `cargo run --release -p ringlog-engine --example bus_rtt [calls]`.

use std::time::{Duration, Instant};

use ringlog_engine::bus::BusBuilder;
use ringlog_engine::rt::{self, RuntimeConfig};
use ringlog_engine::ShardId;

/// Calls measured per destination when no count is given: enough for a stable p99.9.
const DEFAULT_CALLS: usize = 10_000;

/// Calls made before measuring, so that caches, channel slots and the allocator are warm.
const WARMUP_CALLS: usize = 1_000;

/// A request carrying a sequence number, answered with the same number.
#[derive(Debug)]
struct PingRequest {
    sequence: u64,
}

#[derive(Debug)]
struct PingResponse {
    sequence: u64,
}

fn main() {
    let calls: usize = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(DEFAULT_CALLS);
    let config = RuntimeConfig {
        shard_count: Some(2),
        name: "bus-rtt".into(),
        ..RuntimeConfig::default()
    };
    let builder = BusBuilder::<PingRequest, PingResponse>::new(2);
    let reports = rt::run_shards(&config, move |context| {
        let builder = builder.clone();
        async move {
            let bus = builder.join(&context).await.expect("joining the bus");
            bus.serve(|_from, request: PingRequest| async move {
                PingResponse {
                    sequence: request.sequence,
                }
            });
            if context.shard_id != ShardId(0) {
                return Vec::new();
            }
            let mut reports = Vec::new();
            for (label, to) in [
                ("cross-shard (0 -> 1)", ShardId(1)),
                ("same shard (0 -> 0)", ShardId(0)),
            ] {
                for sequence in 0..WARMUP_CALLS as u64 {
                    bus.call(to, PingRequest { sequence })
                        .await
                        .expect("warm-up call");
                }
                let mut samples = Vec::with_capacity(calls);
                for sequence in 0..calls as u64 {
                    let started = Instant::now();
                    let response = bus.call(to, PingRequest { sequence }).await.expect("call");
                    samples.push(started.elapsed());
                    assert_eq!(response.sequence, sequence);
                }
                reports.push(summary(label, samples));
            }
            reports
        }
    })
    .expect("running the shards");
    for line in reports.into_iter().flatten() {
        println!("{line}");
    }
}

fn summary(label: &str, mut samples: Vec<Duration>) -> String {
    samples.sort_unstable();
    let percentile = |fraction: f64| {
        let index = ((samples.len() as f64 - 1.0) * fraction).round() as usize;
        samples[index].as_secs_f64() * 1e6
    };
    format!(
        "{label}: {} calls, p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
        samples.len(),
        percentile(0.50),
        percentile(0.90),
        percentile(0.99),
        percentile(0.999),
        percentile(1.0),
    )
}
