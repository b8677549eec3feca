//! Consumer groups. [`classic`] is the classic protocol's coordinator (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup and the member checks of OffsetCommit) as a pure state machine, and
//! [`consumer`] the new consumer protocol's (KIP-848 ConsumerGroupHeartbeat, with the
//! server-side assignors of [`assignor`]): the handlers, timers and persistence that drive them
//! live elsewhere, so every rule here can be tested without a runtime. [`coordinator`] is that
//! I/O on each shard, and [`storage`] the records in `__consumer_offsets` that make groups and
//! committed offsets durable.

pub mod assignor;
pub mod classic;
pub mod consumer;
pub mod coordinator;
pub mod storage;

pub use classic::{
    Group, GroupAction, GroupConfig, GroupDescription, GroupEvent, GroupResponse, GroupSnapshot,
    GroupState, HeartbeatRequest, JoinMember, JoinRequest, JoinResponse, LeaveMember,
    LeaveMemberResult, LeaveRequest, LeaveResponse, MemberDescription, MemberSnapshot, Protocol,
    RequestToken, SnapshotError, SyncRequest, SyncResponse,
};
pub use coordinator::GroupCoordinator;
