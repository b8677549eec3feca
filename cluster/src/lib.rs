//! Ringlog's cluster layer: the cluster metadata (topics, partitions with their replicas,
//! leaders, ISRs and epochs, configs, producer ids) and the rules that change it; replica
//! placement over brokers (`placement`); the controller quorum that replicates it
//! (`controller`, on openraft, with the partition leadership rules); and the rules of
//! partition replication (ISR, high watermark, leader epochs, leader election) as pure state
//! machines (`replication`). Neither the quorum nor the
//! replication rules are driven by `ringlog serve` yet: a single node is still its own
//! controller.

pub mod controller;
pub mod metadata;
pub mod placement;
pub mod replication;

pub use metadata::{
    ConfigChange, MetadataError, MetadataImage, PartitionRegistration, TopicMetadata, NO_LEADER,
};
