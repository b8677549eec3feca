//! Kafka error codes (the `kafka-protocol` crate's `ResponseError`) and how the engine's and
//! the metadata's errors map onto them.

pub use kafka_protocol::ResponseError as KafkaError;
use ringlog_cluster::replication::ReplicationError;
use ringlog_cluster::MetadataError;
use ringlog_engine::Error as EngineError;

/// The code for "no error".
pub const NONE: i16 = 0;

/// The Kafka error a client gets for an engine error.
pub fn from_engine(error: &EngineError) -> KafkaError {
    match error {
        EngineError::InvalidBatch(_) => KafkaError::InvalidRecord,
        EngineError::CorruptBatch { .. } => KafkaError::CorruptMessage,
        EngineError::BatchTooLarge { .. } => KafkaError::MessageTooLarge,
        EngineError::OffsetOutOfRange { .. } => KafkaError::OffsetOutOfRange,
        EngineError::InvalidConfig { .. } => KafkaError::InvalidConfig,
        EngineError::UnknownPartition(_) => KafkaError::UnknownTopicOrPartition,
        EngineError::ShardUnavailable(_) => KafkaError::NotLeaderOrFollower,
        // Poisoned, corrupt, offline partitions and I/O failures: the log's storage failed.
        _ => KafkaError::KafkaStorageError,
    }
}

/// The Kafka error a client gets for a refused metadata command.
pub fn from_metadata(error: &MetadataError) -> KafkaError {
    match error {
        MetadataError::TopicExists(_) => KafkaError::TopicAlreadyExists,
        MetadataError::UnknownTopic(_) => KafkaError::UnknownTopicOrPartition,
        MetadataError::InvalidTopic { .. } => KafkaError::InvalidTopicException,
        MetadataError::InvalidPartitions(_) => KafkaError::InvalidPartitions,
        MetadataError::InvalidReplicationFactor(_) => KafkaError::InvalidReplicationFactor,
        MetadataError::InvalidConfig { .. } => KafkaError::InvalidConfig,
        MetadataError::InvalidReplicaAssignment(_) => KafkaError::InvalidReplicaAssignment,
        MetadataError::InvalidRequest(_) => KafkaError::InvalidRequest,
        MetadataError::UnknownTopicOrPartition { .. } => KafkaError::UnknownTopicOrPartition,
        MetadataError::NotController { .. } => KafkaError::NotController,
        MetadataError::FencedLeaderEpoch { .. } => KafkaError::FencedLeaderEpoch,
        MetadataError::InvalidUpdateVersion { .. } => KafkaError::InvalidUpdateVersion,
        MetadataError::IneligibleReplica { .. } => KafkaError::IneligibleReplica,
        MetadataError::PreferredLeaderNotAvailable { .. } => {
            KafkaError::PreferredLeaderNotAvailable
        }
        MetadataError::ElectionNotNeeded { .. } => KafkaError::ElectionNotNeeded,
        MetadataError::EligibleLeadersNotAvailable { .. } => {
            KafkaError::EligibleLeadersNotAvailable
        }
        MetadataError::BrokerInControlledShutdown(_) => KafkaError::BrokerIdNotRegistered,
        MetadataError::UnknownBroker(_) => KafkaError::BrokerIdNotRegistered,
        MetadataError::StaleBrokerEpoch { .. } => KafkaError::StaleBrokerEpoch,
        MetadataError::InvalidBrokerRegistration(_) => KafkaError::InvalidRegistration,
        #[allow(unreachable_patterns)]
        _ => KafkaError::UnknownServerError,
    }
}

/// The Kafka error a client or follower gets for a refused replication event.
pub fn from_replication(error: &ReplicationError) -> KafkaError {
    match error {
        ReplicationError::NotEnoughReplicas { .. } => KafkaError::NotEnoughReplicas,
        ReplicationError::NotEnoughReplicasAfterAppend { .. } => {
            KafkaError::NotEnoughReplicasAfterAppend
        }
        ReplicationError::NotLeaderOrFollower(_) => KafkaError::NotLeaderOrFollower,
        ReplicationError::FencedLeaderEpoch { .. } => KafkaError::FencedLeaderEpoch,
        ReplicationError::UnknownLeaderEpoch { .. } => KafkaError::UnknownLeaderEpoch,
        ReplicationError::OffsetOutOfRange { .. } => KafkaError::OffsetOutOfRange,
        ReplicationError::InvalidUpdateVersion { .. } => KafkaError::InvalidUpdateVersion,
        _ => KafkaError::UnknownServerError,
    }
}
