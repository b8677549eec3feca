//! Ringlog's cluster layer: the cluster metadata (topics, partitions, configs, producer ids)
//! and the rules that change it. Today a single node is its own controller; replication,
//! placement across brokers and leader election arrive with the cluster issue.

pub mod metadata;

pub use metadata::{ConfigChange, MetadataError, MetadataImage, TopicMetadata};
