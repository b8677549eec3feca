//! The engine's error type. Kafka error codes are a separate type, mapped in `net`'s handlers.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed; carries the operation and the path it was applied to.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    /// A record batch sent by a client is malformed: the message says what is wrong.
    #[error("invalid record batch: {0}")]
    InvalidBatch(String),

    /// A record batch's CRC-32C does not match its contents.
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CorruptBatch { stored: u32, computed: u32 },

    /// A batch is larger than the log's `max.message.bytes`.
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    BatchTooLarge { size: usize, max: usize },

    /// Data read back from disk failed validation in the middle of a log.
    #[error("corrupt log {path} at position {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },

    /// The log stopped accepting writes after a failed write or fdatasync.
    #[error("partition log {path} is poisoned: {reason}")]
    Poisoned { path: PathBuf, reason: String },

    /// A requested offset lies outside `[log_start_offset, log_end_offset]`.
    #[error("offset {offset} out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },

    /// A follower's replicated batches do not continue its log: the first must start at the
    /// log end offset and each next one right after the previous one's last offset. Nothing
    /// was appended.
    #[error("replicated batch starts at offset {got} where {expected} was expected")]
    NonContiguousAppend { expected: i64, got: i64 },

    /// A configuration value is out of range or of the wrong form.
    #[error("invalid config {key}: {reason}")]
    InvalidConfig { key: String, reason: String },

    /// The partition is not hosted by this shard or broker.
    #[error("unknown partition {0}")]
    UnknownPartition(String),

    /// The partition could not be opened (for example a corrupt frame mid-log) and is offline;
    /// the other partitions of the shard keep working.
    #[error("partition {partition} is offline: {reason}")]
    PartitionFailed { partition: String, reason: String },

    /// The partition already exists.
    #[error("partition {0} already exists")]
    PartitionExists(String),

    /// A shard could not be reached over the cross-core bus (it has stopped).
    #[error("shard {0} is unavailable")]
    ShardUnavailable(u16),

    /// The runtime could not be started.
    #[error("runtime: {0}")]
    Runtime(String),
}

impl Error {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
