//! What shards ask each other over the cross-core bus. Each message carries every partition of
//! one client request that lives on the destination shard: one message per destination shard
//! per request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ringlog_cluster::controller::{BrokerRegistration, ElectionType};
use ringlog_cluster::{ConfigChange, MetadataError, MetadataImage};
use ringlog_engine::config::LogConfig;
use ringlog_engine::log::{AppendResult, ReadResult};
use ringlog_engine::shard::table::ShardTable;
use ringlog_engine::TopicPartition;

use crate::admin::snapshot::{ShardSnapshot, SnapshotWanted};
use crate::codes::KafkaError;
use crate::groups::consumer::{
    ConsumerGroupDescription, ConsumerHeartbeat, ConsumerHeartbeatResponse, HeartbeatError,
};
use crate::groups::storage::CommittedOffset;
use crate::groups::{
    GroupDescription, GroupResponse, HeartbeatRequest, JoinRequest, LeaveRequest, SyncRequest,
};

/// One partition's read in a [`BrokerRequest::Read`].
#[derive(Clone, Debug)]
pub struct ReadSpec {
    pub partition: TopicPartition,
    pub offset: i64,
    pub max_bytes: usize,
    /// A follower's fetch: (its broker id, the leader epoch it fetches at). Read up to the log
    /// end, and the follower's position counts for the ISR and high watermark.
    pub replica: Option<(i32, i32)>,
}

/// A partition's offsets and size, for ListOffsets, OffsetForLeaderEpoch, DescribeLogDirs.
#[derive(Clone, Copy, Debug, Default)]
pub struct PartitionState {
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub log_end_offset: i64,
    pub size_bytes: u64,
}

/// One topic of a CreateTopics request, resolved (defaults applied).
#[derive(Clone, Debug)]
pub struct TopicSpec {
    pub name: String,
    pub partition_count: i32,
    pub replication_factor: i32,
    pub configs: BTreeMap<String, String>,
}

/// What the controller (shard 0) is asked.
#[derive(Debug)]
pub enum ControllerRequest {
    CreateTopics {
        topics: Vec<TopicSpec>,
        validate_only: bool,
    },
    DeleteTopics {
        names: Vec<String>,
    },
    CreatePartitions {
        topics: Vec<(String, i32)>,
        validate_only: bool,
    },
    AlterConfigs {
        topics: Vec<(String, Vec<ConfigChange>)>,
        incremental: bool,
        validate_only: bool,
    },
    AllocateProducerId,
    /// ElectLeaders; `partitions` none: every partition.
    ElectLeaders {
        election_type: ElectionType,
        partitions: Option<Vec<(String, i32)>>,
    },
}

/// Why the controller refused a topic's part of a command: the Kafka error and a message for
/// the response's `error_message`.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub error: KafkaError,
    pub message: String,
}

impl From<MetadataError> for Refusal {
    fn from(error: MetadataError) -> Self {
        Refusal {
            error: crate::codes::from_metadata(&error),
            message: error.to_string(),
        }
    }
}

/// The controller's answers, per topic and in request order.
#[derive(Debug)]
pub enum ControllerResponse {
    /// Per topic: its id and partition count, or why not.
    CreateTopics(Vec<Result<(u128, i32), Refusal>>),
    Topics(Vec<Result<(), Refusal>>),
    ProducerId(Result<i64, KafkaError>),
    /// Per partition: elected, or why not.
    Elections(Vec<(String, i32, Result<(), KafkaError>)>),
}

/// Every request a shard serves over the bus.
#[derive(Debug)]
pub enum BrokerRequest {
    /// Open (or create) partitions this shard owns, rebuilding their producer state.
    Open(Vec<(TopicPartition, LogConfig)>),
    /// Delete partitions' data.
    Delete(Vec<TopicPartition>),
    /// New configs for open partitions.
    SetConfigs(Vec<(TopicPartition, LogConfig)>),
    /// Append client record sets (idempotence checked here, on the owning shard); with
    /// `acks` -1, answered once replicated, waiting at most `timeout`.
    Produce {
        appends: Vec<(TopicPartition, Bytes)>,
        acks: i16,
        timeout: Duration,
    },
    /// Read up to the high watermark.
    Read(Vec<ReadSpec>),
    /// Returns once any partition has data past its offset, or after `max_wait`.
    WaitForData {
        partitions: Vec<(TopicPartition, i64)>,
        max_wait: Duration,
        /// A follower's fetch: wait for the log end rather than the high watermark.
        log_end: bool,
    },
    /// Offsets and sizes.
    State(Vec<TopicPartition>),
    /// OffsetForLeaderEpoch on a multi-node cluster's leader: per partition (the requester's
    /// current leader epoch, the epoch asked about).
    EpochEndOffsets(Vec<(TopicPartition, (i32, i32))>),
    /// ListOffsets by timestamp (-1 latest, -2 earliest, -3 max timestamp, or a time).
    OffsetForTime(Vec<(TopicPartition, i64)>),
    /// DeleteRecords: advance the log start offset.
    DeleteRecords(Vec<(TopicPartition, i64)>),
    /// A new metadata image and shard table, replacing this shard's copies.
    Metadata {
        image: Arc<MetadataImage>,
        table: ShardTable,
        /// The registered brokers (a multi-node cluster); `None` keeps the shard's copy.
        brokers: Option<Arc<BTreeMap<i32, BrokerRegistration>>>,
    },
    Controller(ControllerRequest),
    /// A consumer-group request, sent to the shard coordinating the group(s).
    Group(GroupRequest),
    /// Serve this client connection from now on (see `connection`'s handover).
    AdoptConnection(Handover),
    /// The admin port's view of this shard: counters, partitions, groups.
    Snapshot(SnapshotWanted),
}

/// A client connection handed from the shard that accepted it to the shard owning the
/// partitions it produces to: a descriptor of its socket and the request frame already read
/// from it, which the new shard serves first.
#[derive(Debug)]
pub struct Handover {
    pub socket: std::os::fd::OwnedFd,
    pub first_frame: Bytes,
}

/// A topic's partitions, by name, in a group request.
pub type GroupPartitions = Vec<(String, i32)>;

/// What a group coordinator (the shard owning the group's `__consumer_offsets` partition) is
/// asked. Requests naming several groups carry all of the destination shard's groups.
#[derive(Debug)]
pub enum GroupRequest {
    Join {
        group_id: String,
        request: JoinRequest,
    },
    Sync {
        group_id: String,
        request: SyncRequest,
    },
    Heartbeat {
        group_id: String,
        request: HeartbeatRequest,
    },
    Leave {
        group_id: String,
        request: LeaveRequest,
    },
    Commit(OffsetCommit),
    /// OffsetFetch, per group.
    Fetch(Vec<(String, OffsetsWanted)>),
    Describe(Vec<String>),
    /// ConsumerGroupHeartbeat (KIP-848).
    ConsumerHeartbeat {
        group_id: String,
        request: ConsumerHeartbeat,
    },
    /// ConsumerGroupDescribe.
    ConsumerDescribe(Vec<String>),
    /// ListGroups: every group this shard coordinates.
    List,
    Delete(Vec<String>),
    OffsetDelete {
        group_id: String,
        partitions: GroupPartitions,
    },
}

/// OffsetCommit of partitions already known to exist.
#[derive(Debug)]
pub struct OffsetCommit {
    pub group_id: String,
    pub member_id: String,
    /// The classic generation, or the member epoch of a consumer-protocol member (v9+).
    pub generation_id: i32,
    pub group_instance_id: Option<String>,
    /// The request's version: a consumer-protocol member must commit with v9+.
    pub api_version: i16,
    pub offsets: Vec<((String, i32), CommittedOffset)>,
}

/// What OffsetFetch asks of one group.
#[derive(Debug)]
pub struct OffsetsWanted {
    /// `None`: every committed offset of the group.
    pub partitions: Option<GroupPartitions>,
    /// (member id, member epoch) of a consumer-protocol member asking (v9+), checked as Kafka
    /// does so that a fenced member does not resume from offsets it may not own.
    pub member: Option<(String, i32)>,
}

/// A group as ListGroups reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    pub state: &'static str,
    /// "classic" or "consumer" (KIP-848).
    pub group_type: &'static str,
}

/// One group's committed offsets as OffsetFetch reports them (`None`: nothing committed).
pub type FetchedOffsets = Vec<((String, i32), Option<CommittedOffset>)>;

/// A group coordinator's answers, per group in request order.
#[derive(Debug)]
pub enum GroupReply {
    Member(Result<GroupResponse, KafkaError>),
    Committed(Result<(), KafkaError>),
    Fetched(Vec<Result<FetchedOffsets, KafkaError>>),
    /// `Ok(None)`: no such group.
    Described(Vec<Result<Option<GroupDescription>, KafkaError>>),
    ConsumerHeartbeat(Result<ConsumerHeartbeatResponse, HeartbeatError>),
    ConsumerDescribed(Vec<Result<ConsumerGroupDescription, KafkaError>>),
    Listed(Vec<ListedGroup>),
    Deleted(Vec<Result<(), KafkaError>>),
    /// A group-level error, or one result per partition.
    OffsetsDeleted(Result<Vec<Result<(), KafkaError>>, KafkaError>),
}

/// Per-partition outcomes; a partition's error is a Kafka error code.
pub type PartitionResults<T> = Vec<(TopicPartition, Result<T, KafkaError>)>;

/// The answer to each [`BrokerRequest`].
#[derive(Debug)]
pub enum BrokerResponse {
    Done(PartitionResults<()>),
    Produced(PartitionResults<AppendResult>),
    Read(PartitionResults<ReadResult>),
    DataReady,
    State(PartitionResults<PartitionState>),
    /// (epoch, end offset) per partition.
    EpochEndOffsets(PartitionResults<(i32, i64)>),
    /// (offset, timestamp); offset -1 when no record matches.
    OffsetForTime(PartitionResults<(i64, i64)>),
    /// The new log start offset (DeleteRecords' low watermark).
    DeletedRecords(PartitionResults<i64>),
    MetadataApplied,
    Controller(ControllerResponse),
    Group(GroupReply),
    /// Whether the connection was adopted; if not, the sender keeps serving it.
    Adopted(bool),
    Snapshot(Box<ShardSnapshot>),
}
