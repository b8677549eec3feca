//! Kafka error codes (the `kafka-protocol` crate's `ResponseError`) and how the engine's and
//! the metadata's errors map onto them.

pub use kafka_protocol::ResponseError as KafkaError;
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
        _ => KafkaError::UnknownServerError,
    }
}
