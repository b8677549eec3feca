//! Per-log configuration under Kafka's topic config names, with Kafka's defaults except where
//! Ringlog deliberately differs (durability: fsync before acknowledging).

use crate::error::{Error, Result};

/// Kafka's default `segment.bytes`: 1 GiB.
pub const SEGMENT_BYTES_DEFAULT: u64 = 1 << 30;
/// Smallest `segment.bytes` accepted. Kafka's floor is 14 bytes (one empty batch); ours is one
/// frame's worth of alignment block so tests can roll often without degenerate segments.
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// Largest `segment.bytes`: index positions are u32 (Kafka's limit is `Int.MAX` too).
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;
/// Kafka's default `segment.ms`: 7 days.
pub const SEGMENT_MS_DEFAULT: i64 = 7 * 24 * 60 * 60 * 1000;
/// Kafka's default `retention.ms`: 7 days.
pub const RETENTION_MS_DEFAULT: i64 = 7 * 24 * 60 * 60 * 1000;
/// Kafka's default `max.message.bytes` (1 MiB plus a record batch overhead).
pub const MAX_MESSAGE_BYTES_DEFAULT: usize = 1_048_588;
/// Kafka's default `index.interval.bytes`.
pub const INDEX_INTERVAL_BYTES_DEFAULT: u64 = 4096;

/// How a log's appends become durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Acknowledge only after fdatasync (group commit). `flush.messages=1`, Ringlog's default.
    EveryAppend,
    /// Acknowledge once buffered; sync after `messages` records or `interval_ms`, whichever
    /// comes first (Kafka's `flush.messages` / `flush.ms` semantics).
    Relaxed { messages: u64, interval_ms: u64 },
}

/// One log's configuration. Owned by the partition's shard (a copy per log).
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll the active segment when it would grow past this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll the active segment once its first batch is this old.
    pub segment_ms: i64,
    /// `retention.ms`: delete sealed segments whose newest batch is older; -1 keeps forever.
    pub retention_ms: i64,
    /// `retention.bytes`: delete oldest sealed segments while the log exceeds this; -1 = no cap.
    pub retention_bytes: i64,
    /// `flush.messages`: 1 (the default) syncs before every acknowledgement.
    pub flush_messages: u64,
    /// `flush.ms`: with `flush.messages` > 1, sync at least this often. `u64::MAX` = never by
    /// time (Kafka's default is Long.MAX_VALUE).
    pub flush_ms: u64,
    /// `max.message.bytes`: largest record batch accepted.
    pub max_message_bytes: usize,
    /// `index.interval.bytes`: bytes of frames between sparse index entries.
    pub index_interval_bytes: u64,
    /// `cleanup.policy`: "delete", "compact" or "compact,delete".
    pub cleanup_policy: String,
    /// `message.timestamp.type`: "CreateTime" or "LogAppendTime".
    pub message_timestamp_type: String,
    /// `min.insync.replicas`.
    pub min_insync_replicas: i32,
    /// `unclean.leader.election.enable`.
    pub unclean_leader_election_enable: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            segment_ms: SEGMENT_MS_DEFAULT,
            retention_ms: RETENTION_MS_DEFAULT,
            retention_bytes: -1,
            flush_messages: 1,
            flush_ms: u64::MAX,
            max_message_bytes: MAX_MESSAGE_BYTES_DEFAULT,
            index_interval_bytes: INDEX_INTERVAL_BYTES_DEFAULT,
            cleanup_policy: "delete".to_string(),
            message_timestamp_type: "CreateTime".to_string(),
            min_insync_replicas: 1,
            unclean_leader_election_enable: false,
        }
    }
}

/// The config names [`LogConfig::set`] understands.
pub const LOG_CONFIG_KEYS: &[&str] = &[
    "segment.bytes",
    "segment.ms",
    "retention.ms",
    "retention.bytes",
    "flush.messages",
    "flush.ms",
    "max.message.bytes",
    "index.interval.bytes",
    "cleanup.policy",
    "message.timestamp.type",
    "min.insync.replicas",
    "unclean.leader.election.enable",
];

impl LogConfig {
    pub fn flush_policy(&self) -> FlushPolicy {
        if self.flush_messages <= 1 && self.flush_ms == u64::MAX || self.flush_ms == 0 {
            FlushPolicy::EveryAppend
        } else {
            FlushPolicy::Relaxed {
                messages: self.flush_messages.max(1),
                interval_ms: self.flush_ms,
            }
        }
    }

    /// Sets one config by its Kafka name, validating the value.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let invalid = |reason: String| Error::InvalidConfig {
            key: key.to_string(),
            reason,
        };
        let parse_i64 = |value: &str| {
            value
                .trim()
                .parse::<i64>()
                .map_err(|_| invalid(format!("'{value}' is not an integer")))
        };
        match key {
            "segment.bytes" => {
                let bytes = parse_i64(value)?;
                if !(SEGMENT_BYTES_MIN as i64..=SEGMENT_BYTES_MAX as i64).contains(&bytes) {
                    return Err(invalid(format!(
                        "{bytes} is outside [{SEGMENT_BYTES_MIN}, {SEGMENT_BYTES_MAX}]"
                    )));
                }
                self.segment_bytes = bytes as u64;
            }
            "segment.ms" => self.segment_ms = positive(parse_i64(value)?, &invalid)?,
            "retention.ms" => self.retention_ms = at_least_minus_one(parse_i64(value)?, &invalid)?,
            "retention.bytes" => {
                self.retention_bytes = at_least_minus_one(parse_i64(value)?, &invalid)?
            }
            "flush.messages" => self.flush_messages = positive(parse_i64(value)?, &invalid)? as u64,
            "flush.ms" => {
                let ms = parse_i64(value)?;
                if ms < 0 {
                    return Err(invalid(format!("{ms} is negative")));
                }
                self.flush_ms = if ms == i64::MAX { u64::MAX } else { ms as u64 };
            }
            "max.message.bytes" => {
                let bytes = positive(parse_i64(value)?, &invalid)?;
                self.max_message_bytes = usize::try_from(bytes.min(i64::from(i32::MAX)))
                    .map_err(|_| invalid("too large".into()))?;
            }
            "index.interval.bytes" => {
                self.index_interval_bytes = positive(parse_i64(value)?, &invalid)? as u64
            }
            "cleanup.policy" => {
                let mut parts: Vec<&str> = value.split(',').map(str::trim).collect();
                parts.sort_unstable();
                if parts.is_empty()
                    || parts
                        .iter()
                        .any(|part| !["compact", "delete"].contains(part))
                {
                    return Err(invalid(format!("'{value}' is not delete, compact or both")));
                }
                self.cleanup_policy = parts.join(",");
            }
            "message.timestamp.type" => {
                if value != "CreateTime" && value != "LogAppendTime" {
                    return Err(invalid(format!(
                        "'{value}' is not CreateTime or LogAppendTime"
                    )));
                }
                self.message_timestamp_type = value.to_string();
            }
            "min.insync.replicas" => {
                self.min_insync_replicas = positive(parse_i64(value)?, &invalid)?
                    .try_into()
                    .map_err(|_| invalid("too large".into()))?
            }
            "unclean.leader.election.enable" => {
                self.unclean_leader_election_enable = match value {
                    "true" => true,
                    "false" => false,
                    other => return Err(invalid(format!("'{other}' is not true or false"))),
                }
            }
            _ => {
                return Err(Error::InvalidConfig {
                    key: key.to_string(),
                    reason: "unknown topic config".into(),
                })
            }
        }
        Ok(())
    }

    /// Every config as (Kafka name, value) pairs, for DescribeConfigs.
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        let flush_ms = if self.flush_ms == u64::MAX {
            i64::MAX.to_string()
        } else {
            self.flush_ms.to_string()
        };
        vec![
            ("segment.bytes", self.segment_bytes.to_string()),
            ("segment.ms", self.segment_ms.to_string()),
            ("retention.ms", self.retention_ms.to_string()),
            ("retention.bytes", self.retention_bytes.to_string()),
            ("flush.messages", self.flush_messages.to_string()),
            ("flush.ms", flush_ms),
            ("max.message.bytes", self.max_message_bytes.to_string()),
            (
                "index.interval.bytes",
                self.index_interval_bytes.to_string(),
            ),
            ("cleanup.policy", self.cleanup_policy.clone()),
            (
                "message.timestamp.type",
                self.message_timestamp_type.clone(),
            ),
            ("min.insync.replicas", self.min_insync_replicas.to_string()),
            (
                "unclean.leader.election.enable",
                self.unclean_leader_election_enable.to_string(),
            ),
        ]
    }
}

fn positive(value: i64, invalid: &dyn Fn(String) -> Error) -> Result<i64> {
    if value <= 0 {
        return Err(invalid(format!("{value} must be positive")));
    }
    Ok(value)
}

fn at_least_minus_one(value: i64, invalid: &dyn Fn(String) -> Error) -> Result<i64> {
    if value < -1 {
        return Err(invalid(format!("{value} must be -1 or more")));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_sync_every_append() {
        assert_eq!(
            LogConfig::default().flush_policy(),
            FlushPolicy::EveryAppend
        );
    }

    #[test]
    fn relaxed_flush_by_kafka_names() {
        let mut config = LogConfig::default();
        config.set("flush.messages", "1000").expect("valid");
        config.set("flush.ms", "50").expect("valid");
        assert_eq!(
            config.flush_policy(),
            FlushPolicy::Relaxed {
                messages: 1000,
                interval_ms: 50
            }
        );
    }

    #[test]
    fn rejects_bad_values_naming_the_key() {
        let mut config = LogConfig::default();
        for (key, value) in [
            ("segment.bytes", "12"),
            ("retention.ms", "-5"),
            ("flush.messages", "zero"),
            ("cleanup.policy", "shred"),
            ("no.such.key", "1"),
        ] {
            match config.set(key, value) {
                Err(Error::InvalidConfig { key: named, .. }) => assert_eq!(named, key),
                other => panic!("{key}={value} gave {other:?}"),
            }
        }
        assert_eq!(
            config,
            LogConfig::default(),
            "a rejected value changes nothing"
        );
    }
}
