//! Ringlog's cluster layer: the cluster metadata (topics, partitions, configs, producer ids)
//! and the rules that change it, and the rules of partition replication (ISR, high watermark,
//! leader epochs, leader election) as pure state machines. Today a single node is its own
//! controller and the replication rules are not yet driven by the broker; placement across
//! brokers arrives with the cluster issue.

pub mod metadata;
pub mod replication;

pub use metadata::{ConfigChange, MetadataError, MetadataImage, TopicMetadata};
