//! `ringlog-bench kafka`: OpenMessaging-Benchmark-shaped workloads against any Kafka broker,
//! over the wire, with a client written to cost little CPU (it shares the machine with the
//! broker): blocking sockets, one writer and one reader thread per producer connection with
//! pipelined requests, one thread per consumer.
//!
//! A run creates its topics, starts the consumers and waits until each has its partitions,
//! starts the producers, samples throughput and the broker's /proc figures every second (warm-up
//! first, then the measured window), stops producing, lets the consumers drain, checks what
//! they read against what was acknowledged, and reports: terminal summary, JSON, HTML.

pub mod compare;
pub mod consumer;
pub mod procstat;
pub mod producer;
pub mod records;
pub mod report;
pub mod result;
pub mod run;

use std::time::{SystemTime, UNIX_EPOCH};

pub use run::{run, KafkaArgs};

/// The client id every benchmark connection sends.
pub const CLIENT_ID: &str = "ringlog-bench";

/// Milliseconds since the Unix epoch (record timestamps).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
