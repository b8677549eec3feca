//! Consumer groups. [`classic`] is the classic protocol's coordinator (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup and the member checks of OffsetCommit) as a pure state machine: the
//! handlers, timers and persistence that drive it live elsewhere, so every rule here can be
//! tested without a runtime.

pub mod classic;

pub use classic::{
    Group, GroupAction, GroupConfig, GroupDescription, GroupEvent, GroupResponse, GroupSnapshot,
    GroupState, HeartbeatRequest, JoinMember, JoinRequest, JoinResponse, LeaveMember,
    LeaveMemberResult, LeaveRequest, LeaveResponse, MemberDescription, MemberSnapshot, Protocol,
    RequestToken, SnapshotError, SyncRequest, SyncResponse,
};
