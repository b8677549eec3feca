//! Ringlog's benchmark harness: storage micro-benchmarks that drive `ringlog-engine` directly,
//! and (later) Kafka workloads that drive a broker over the wire like any client.
//!
//! The binary (`src/main.rs`) only parses the command line; each subcommand lives in its own
//! module here so it can be tested and reused.

pub mod kafka;
pub mod machine;
pub mod measure;
pub mod storage;
pub mod watchdog;
