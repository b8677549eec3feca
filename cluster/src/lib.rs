//! Ringlog's cluster layer: the cluster metadata (topics, partitions, configs, producer ids)
//! and the rules that change it, and the controller quorum that replicates it (`controller`,
//! not yet wired to `ringlog serve`, where a single node is still its own controller).
//! Replication and placement across brokers arrive with the cluster issue.

pub mod controller;
pub mod metadata;

pub use metadata::{ConfigChange, MetadataError, MetadataImage, TopicMetadata};
