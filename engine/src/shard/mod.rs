//! Shards: one per core, each owning its partitions' logs, their batch cache and their
//! background work. Other shards reach a partition through the cross-core bus with the named
//! messages below, each carrying every partition of one request that lives on the destination
//! shard (one bus message per destination shard per client request).

pub mod table;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use crate::cache::{BatchCache, CacheStats, BATCH_CACHE_BYTES_DEFAULT};
use crate::config::LogConfig;
use crate::error::{Error, Result};
use crate::log::{now_ms, AppendResult, LogOptions, PartitionLog, ReadLimit, ReadResult};
use crate::metrics::StorageMetrics;
use crate::rt::{self, fs::Storage, TaskClass};
use crate::types::{ShardId, TopicPartition};
use table::{ShardTable, ShardTableUpdate};

/// Kafka's `log.retention.check.interval.ms` default: 5 minutes between retention passes.
pub const RETENTION_CHECK_INTERVAL_DEFAULT: Duration = Duration::from_secs(300);

/// How often logs with a relaxed flush policy are checked for a due `flush.ms`. Kafka's
/// `log.flush.scheduler.interval.ms` defaults to never; 100 ms keeps a `flush.ms` of a second
/// or more accurate to 10% at negligible cost.
pub const FLUSH_CHECK_INTERVAL_DEFAULT: Duration = Duration::from_millis(100);

/// A shard's settings.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    pub data_dir: PathBuf,
    pub cache_bytes: usize,
    pub retention_check_interval: Duration,
    pub flush_check_interval: Duration,
    /// Whether logs move their own high watermark to their durable end (a single node). With
    /// replication the leader's rules set it (`PartitionLog::set_high_watermark`).
    pub auto_high_watermark: bool,
}

impl ShardConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ShardConfig {
            data_dir: data_dir.into(),
            cache_bytes: BATCH_CACHE_BYTES_DEFAULT,
            retention_check_interval: RETENTION_CHECK_INTERVAL_DEFAULT,
            flush_check_interval: FLUSH_CHECK_INTERVAL_DEFAULT,
            auto_high_watermark: true,
        }
    }
}

/// Creates (or opens, if its directory exists) partitions on the destination shard.
#[derive(Debug)]
pub struct CreatePartitions {
    pub partitions: Vec<(TopicPartition, LogConfig)>,
}

/// One partition's part of an [`AppendBatches`] message.
#[derive(Debug)]
pub struct PartitionAppend {
    pub partition: TopicPartition,
    /// One or more Kafka v2 RecordBatches as the client sent them.
    pub records: Bytes,
    pub leader_epoch: i32,
}

/// Appends to partitions of the destination shard; each answer comes once durable.
#[derive(Debug)]
pub struct AppendBatches {
    pub appends: Vec<PartitionAppend>,
}

/// One partition's part of a [`ReadPartitions`] message.
#[derive(Debug)]
pub struct PartitionRead {
    pub partition: TopicPartition,
    pub offset: i64,
    pub max_bytes: usize,
    pub limit: ReadLimit,
}

/// Reads from partitions of the destination shard.
#[derive(Debug)]
pub struct ReadPartitions {
    pub reads: Vec<PartitionRead>,
}

/// Deletes partitions (their files) on the destination shard.
#[derive(Debug)]
pub struct DeletePartitions {
    pub partitions: Vec<TopicPartition>,
}

/// Applies a shard table change to the destination shard's copy.
#[derive(Debug)]
pub struct ApplyShardTable {
    pub update: ShardTableUpdate,
}

/// Every request a shard serves over the bus.
#[derive(Debug)]
pub enum ShardRequest {
    CreatePartitions(CreatePartitions),
    AppendBatches(AppendBatches),
    ReadPartitions(ReadPartitions),
    DeletePartitions(DeletePartitions),
    ApplyShardTable(ApplyShardTable),
}

/// The answer to each [`ShardRequest`], per partition and in request order.
#[derive(Debug)]
pub enum ShardResponse {
    CreatePartitions(Vec<(TopicPartition, Result<()>)>),
    AppendBatches(Vec<(TopicPartition, Result<AppendResult>)>),
    ReadPartitions(Vec<(TopicPartition, Result<ReadResult>)>),
    DeletePartitions(Vec<(TopicPartition, Result<()>)>),
    ApplyShardTable,
}

enum Partition {
    Online(Rc<PartitionLog>),
    /// Could not be opened; the reason names the file and position when it is corruption.
    Failed(String),
}

/// One per shard: the partitions it owns and what they share.
pub struct Shard {
    id: ShardId,
    storage: Storage,
    config: ShardConfig,
    cache: Rc<BatchCache>,
    metrics: Rc<StorageMetrics>,
    table: RefCell<ShardTable>,
    partitions: RefCell<HashMap<TopicPartition, Partition>>,
}

impl Shard {
    pub fn new(id: ShardId, storage: Storage, config: ShardConfig, table: ShardTable) -> Rc<Shard> {
        let cache = BatchCache::new(config.cache_bytes);
        Rc::new(Shard {
            id,
            storage,
            config,
            cache,
            metrics: Rc::new(StorageMetrics::default()),
            table: RefCell::new(table),
            partitions: RefCell::new(HashMap::new()),
        })
    }

    pub fn id(&self) -> ShardId {
        self.id
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// This shard's storage measurements (fdatasync latency of its logs).
    pub fn storage_metrics(&self) -> &StorageMetrics {
        &self.metrics
    }

    /// This shard's copy of the shard table.
    pub fn table(&self) -> ShardTable {
        self.table.borrow().clone()
    }

    fn partition_dir(&self, partition: &TopicPartition) -> PathBuf {
        self.config.data_dir.join(partition.dir_name())
    }

    /// Opens the partition's log (recovering it) or creates it. A partition that fails to open
    /// is kept as failed, with the error, so requests for it get that error and the shard's
    /// other partitions keep working.
    pub async fn open_partition(
        &self,
        partition: &TopicPartition,
        config: LogConfig,
    ) -> Result<Rc<PartitionLog>> {
        if let Some(Partition::Online(log)) = self.partitions.borrow().get(partition) {
            return Ok(Rc::clone(log));
        }
        let options = LogOptions {
            storage: self.storage.clone(),
            dir: self.partition_dir(partition),
            topic_partition: partition.clone(),
            config,
            cache: Some(Rc::clone(&self.cache)),
            auto_high_watermark: self.config.auto_high_watermark,
            metrics: Some(Rc::clone(&self.metrics)),
        };
        match PartitionLog::open(options).await {
            Ok((log, recovery)) => {
                tracing::info!(
                    shard = %self.id, %partition, clean = recovery.clean_shutdown,
                    segments = recovery.segments, "partition online"
                );
                let log = Rc::new(log);
                self.partitions
                    .borrow_mut()
                    .insert(partition.clone(), Partition::Online(Rc::clone(&log)));
                Ok(log)
            }
            Err(error) => {
                tracing::error!(shard = %self.id, %partition, %error, "partition failed to open");
                let reason = error.to_string();
                self.partitions
                    .borrow_mut()
                    .insert(partition.clone(), Partition::Failed(reason));
                Err(error)
            }
        }
    }

    /// The log of a partition this shard owns.
    pub fn log(&self, partition: &TopicPartition) -> Result<Rc<PartitionLog>> {
        match self.partitions.borrow().get(partition) {
            Some(Partition::Online(log)) => Ok(Rc::clone(log)),
            Some(Partition::Failed(reason)) => Err(Error::PartitionFailed {
                partition: partition.to_string(),
                reason: reason.clone(),
            }),
            None => Err(Error::UnknownPartition(partition.to_string())),
        }
    }

    /// Partitions this shard owns, with whether each is online.
    pub fn partitions(&self) -> Vec<(TopicPartition, bool)> {
        let mut listed: Vec<_> = self
            .partitions
            .borrow()
            .iter()
            .map(|(partition, state)| (partition.clone(), matches!(state, Partition::Online(_))))
            .collect();
        listed.sort();
        listed
    }

    /// Serves one bus request. Work on different partitions runs concurrently, so appends to
    /// several partitions share the disk's time instead of queueing behind each other's syncs.
    pub async fn handle(self: Rc<Self>, _from: ShardId, request: ShardRequest) -> ShardResponse {
        match request {
            ShardRequest::CreatePartitions(CreatePartitions { partitions }) => {
                let mut results = Vec::with_capacity(partitions.len());
                for (partition, config) in partitions {
                    let result = self.open_partition(&partition, config).await.map(|_| ());
                    results.push((partition, result));
                }
                ShardResponse::CreatePartitions(results)
            }
            ShardRequest::AppendBatches(AppendBatches { appends }) => {
                let work = appends.into_iter().map(|append| {
                    let log = self.log(&append.partition);
                    let work =
                        async move { log?.append(&append.records, append.leader_epoch).await };
                    (append.partition, work)
                });
                ShardResponse::AppendBatches(concurrently(work).await)
            }
            ShardRequest::ReadPartitions(ReadPartitions { reads }) => {
                let work = reads.into_iter().map(|read| {
                    let log = self.log(&read.partition);
                    let work =
                        async move { log?.read(read.offset, read.max_bytes, read.limit).await };
                    (read.partition, work)
                });
                let mut results = Vec::new();
                for (partition, result) in concurrently(work).await {
                    if let Err(error @ Error::Corrupt { .. }) = &result {
                        // Data that was acknowledged is damaged: take the partition offline
                        // with the error rather than keep appending after a hole.
                        self.partitions
                            .borrow_mut()
                            .insert(partition.clone(), Partition::Failed(error.to_string()));
                    }
                    results.push((partition, result));
                }
                ShardResponse::ReadPartitions(results)
            }
            ShardRequest::DeletePartitions(DeletePartitions { partitions }) => {
                let mut results = Vec::with_capacity(partitions.len());
                for partition in partitions {
                    results.push((partition.clone(), self.delete_partition(&partition).await));
                }
                ShardResponse::DeletePartitions(results)
            }
            ShardRequest::ApplyShardTable(ApplyShardTable { update }) => {
                let outcome = self.table.borrow_mut().apply(&update);
                tracing::debug!(shard = %self.id, ?outcome, "shard table update");
                ShardResponse::ApplyShardTable
            }
        }
    }

    pub async fn delete_partition(&self, partition: &TopicPartition) -> Result<()> {
        let removed = self.partitions.borrow_mut().remove(partition);
        match removed {
            Some(Partition::Online(log)) => log.delete().await,
            Some(Partition::Failed(_)) => {
                let dir = self.partition_dir(partition);
                self.storage.remove_dir_all(&dir).await
            }
            None => Err(Error::UnknownPartition(partition.to_string())),
        }
    }

    /// Starts the shard's background work in the background task queue: retention passes every
    /// `retention_check_interval`, and `flush.ms` checks every `flush_check_interval`.
    pub fn start_background(self: &Rc<Self>) {
        let shard = Rc::clone(self);
        rt::spawn_detached(TaskClass::Background, async move {
            loop {
                rt::sleep(shard.config.retention_check_interval).await;
                shard.retention_pass().await;
            }
        });
        let shard = Rc::clone(self);
        rt::spawn_detached(TaskClass::Background, async move {
            loop {
                rt::sleep(shard.config.flush_check_interval).await;
                for log in shard.online_logs() {
                    if let Err(error) = log.flush_if_due(now_ms()).await {
                        tracing::error!(partition = %log.topic_partition(), %error, "flush failed");
                    }
                }
            }
        });
    }

    fn online_logs(&self) -> Vec<Rc<PartitionLog>> {
        self.partitions
            .borrow()
            .values()
            .filter_map(|partition| match partition {
                Partition::Online(log) => Some(Rc::clone(log)),
                Partition::Failed(_) => None,
            })
            .collect()
    }

    /// One retention pass over every online log of the shard.
    pub async fn retention_pass(&self) {
        for log in self.online_logs() {
            match log.apply_retention(now_ms()).await {
                Ok(report) if report.segments_deleted > 0 => tracing::info!(
                    partition = %log.topic_partition(), segments = report.segments_deleted,
                    bytes = report.bytes_deleted, "retention deleted segments"
                ),
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(partition = %log.topic_partition(), %error, "retention failed")
                }
            }
        }
    }

    /// Clean shutdown: closes every log (sync, index checkpoint, clean-shutdown marker).
    pub async fn shutdown(&self) -> Result<()> {
        let mut first_error = None;
        for log in self.online_logs() {
            if let Err(error) = log.close().await {
                tracing::error!(partition = %log.topic_partition(), %error, "close failed");
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Runs each partition's work in its own latency-class task, so the partitions of one message
/// proceed concurrently, and returns the results in order.
async fn concurrently<T: 'static>(
    work: impl Iterator<
        Item = (
            TopicPartition,
            impl std::future::Future<Output = T> + 'static,
        ),
    >,
) -> Vec<(TopicPartition, T)> {
    let tasks: Vec<_> = work
        .map(|(partition, future)| (partition, rt::spawn(TaskClass::Latency, future)))
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for (partition, task) in tasks {
        results.push((partition, task.await));
    }
    results
}
