//! What one shard tells the admin port: its counters, its partitions' offsets and sizes, the
//! groups it coordinates. Taken on the shard that owns the data, in one bus message per shard
//! per admin request ([`crate::messages::BrokerRequest::Snapshot`]), so nothing on the data
//! path is shared or locked to be observed.

use ringlog_engine::bus::BusStats;
use ringlog_engine::cache::CacheStats;
use ringlog_engine::metrics::HistogramSnapshot;
use serde::Serialize;

use crate::broker::Broker;
use crate::metrics::BrokerMetricsSnapshot;

/// Which parts of a [`ShardSnapshot`] an admin request needs; the rest stays empty.
#[derive(Clone, Copy, Debug, Default)]
pub struct SnapshotWanted {
    pub metrics: bool,
    pub partitions: bool,
    pub groups: bool,
}

/// One shard's answer to [`SnapshotWanted`].
#[derive(Debug, Default)]
pub struct ShardSnapshot {
    pub shard: u16,
    /// The shard has its metadata and accepts Kafka connections.
    pub serving: bool,
    pub metrics: Option<ShardMetrics>,
    pub partitions: Vec<PartitionSnapshot>,
    pub groups: Vec<GroupSnapshot>,
}

/// A shard's counters and gauges.
#[derive(Debug, Default)]
pub struct ShardMetrics {
    pub broker: BrokerMetricsSnapshot,
    pub fsync_latency: HistogramSnapshot,
    pub cache: CacheStats,
    pub bus: BusStats,
    pub connections: u64,
    pub partitions_online: u64,
    pub partitions_offline: u64,
    /// Bytes of the shard's partitions' segments.
    pub disk_bytes: u64,
}

/// A partition as `/api/v1/partitions` shows it. Offsets are `None` for an offline partition.
#[derive(Clone, Debug, Serialize)]
pub struct PartitionSnapshot {
    pub topic: String,
    pub partition: i32,
    pub shard: u16,
    pub online: bool,
    /// Why the partition is offline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub log_start_offset: Option<i64>,
    pub log_end_offset: Option<i64>,
    pub high_watermark: Option<i64>,
    pub size_bytes: Option<u64>,
}

/// A consumer group as `/api/v1/groups` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct GroupSnapshot {
    pub group_id: String,
    /// "classic" or "consumer" (KIP-848).
    #[serde(rename = "type")]
    pub group_type: &'static str,
    pub state: &'static str,
    pub protocol_type: String,
    /// The classic group's chosen assignor, or the consumer group's server-side assignor.
    pub protocol: String,
    pub coordinator_shard: u16,
    pub members: Vec<MemberSnapshot>,
    pub offsets: Vec<CommittedSnapshot>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MemberSnapshot {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// `None` when the assignment cannot be read: a classic group that is not Stable, or whose
    /// protocol type is not "consumer" (the bytes are then the client's own format).
    pub assignment: Option<Vec<AssignedTopic>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AssignedTopic {
    pub topic: String,
    pub partitions: Vec<i32>,
}

/// A committed offset; `high_watermark` and `lag` are filled in by the admin server from the
/// partition's own shard.
#[derive(Clone, Debug, Serialize)]
pub struct CommittedSnapshot {
    pub topic: String,
    pub partition: i32,
    pub committed_offset: i64,
    pub high_watermark: Option<i64>,
    /// `high_watermark - committed_offset`.
    pub lag: Option<i64>,
}

/// Takes this shard's snapshot.
pub fn take(broker: &Broker, wanted: SnapshotWanted) -> ShardSnapshot {
    let shard = broker.shard_id.0;
    let mut snapshot = ShardSnapshot {
        shard,
        serving: broker.is_serving(),
        ..ShardSnapshot::default()
    };
    if wanted.metrics || wanted.partitions {
        let mut metrics = ShardMetrics::default();
        for (partition, _) in broker.shard.partitions() {
            let entry = match broker.shard.log(&partition) {
                Ok(log) => {
                    metrics.partitions_online += 1;
                    metrics.disk_bytes += log.size_bytes();
                    PartitionSnapshot {
                        topic: partition.topic.clone(),
                        partition: partition.partition.0,
                        shard,
                        online: true,
                        error: None,
                        log_start_offset: Some(log.log_start_offset()),
                        log_end_offset: Some(log.log_end_offset()),
                        high_watermark: Some(log.high_watermark()),
                        size_bytes: Some(log.size_bytes()),
                    }
                }
                Err(error) => {
                    metrics.partitions_offline += 1;
                    PartitionSnapshot {
                        topic: partition.topic.clone(),
                        partition: partition.partition.0,
                        shard,
                        online: false,
                        error: Some(error.to_string()),
                        log_start_offset: None,
                        log_end_offset: None,
                        high_watermark: None,
                        size_bytes: None,
                    }
                }
            };
            if wanted.partitions {
                snapshot.partitions.push(entry);
            }
        }
        if wanted.metrics {
            metrics.broker = broker.metrics.snapshot();
            metrics.fsync_latency = broker.shard.storage_metrics().fsync_latency.snapshot();
            metrics.cache = broker.shard.cache_stats();
            metrics.bus = broker
                .bus_handle()
                .map_or_else(BusStats::default, |bus| bus.stats());
            metrics.connections = broker.open_connections() as u64;
            snapshot.metrics = Some(metrics);
        }
    }
    if wanted.groups {
        snapshot.groups = broker.groups.admin_snapshot(&broker.metadata(), shard);
    }
    snapshot
}
