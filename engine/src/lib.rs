//! Ringlog's storage engine: a thread-per-core runtime layer, shards that own partition logs,
//! a cross-core bus, and durable direct-I/O partition logs made of segment files.
//!
//! Only [`rt`] names glommio; everything else goes through it so that a simulator (the storage
//! fault layer in [`rt::sim`]) or another io_uring runtime can stand in.

pub mod bus;
pub mod cache;
pub mod config;
pub mod epochs;
pub mod error;
pub mod format;
pub mod index;
pub mod log;
pub mod metrics;
pub mod rt;
pub mod segment;
pub mod shard;
pub mod types;

pub use error::{Error, Result};
pub use types::{LeaderEpoch, NodeId, Offset, PartitionId, ShardId, TopicPartition};
