//! The controller quorum: the cluster metadata as a replicated state machine on openraft, like
//! Kafka's KRaft. A quorum of 1, 3 or 5 controllers agrees on a log of metadata commands
//! ([`MetadataCommand`]); every controller applies the committed ones, in order, to its
//! [`ControllerState`] (the [`MetadataImage`] and the registered brokers) with the same pure
//! rules as the single-node controller, so all of them hold the same image.
//!
//! openraft 0.9 needs tokio, and shards run glommio, so a [`ControllerNode`] runs on its own
//! thread with its own tokio runtime and is reached through runtime-agnostic channels (tokio's
//! `sync` types work from any thread and any executor).
//!
//! Not yet wired to `ringlog serve`: today's broker still runs the single-node controller in
//! `net/src/controller.rs`.
//!
//! - `command`: the commands, their results and the state they change (pure).
//! - `leadership`: the partition rules those commands apply: placement of new partitions,
//!   leader elections on fencing, shutdown and unfencing, AlterPartition, ElectLeaders (pure).
//! - `record`: the checksummed record framing shared by every file below.
//! - `log_store`: the durable raft log and vote (openraft's `RaftLogStorage`).
//! - `state_machine`: the state machine and its durable snapshots (`RaftStateMachine`).
//! - `network`: length-prefixed frames of serde-encoded RPCs over TCP, both sides.
//! - `quorum`: the `--controller-quorum` list.
//! - `node`: [`ControllerNode`], the thread, bootstrap, proposing and following.

mod command;
mod leadership;
mod liveness;
mod log_store;
mod network;
mod node;
mod quorum;
mod record;
pub mod sessions;
mod state_machine;

use std::io::Cursor;
use std::path::PathBuf;

pub use command::{
    new_topic_id, BrokerRegistration, CommandResponse, ControllerState, ElectionType,
    MetadataCommand, TopicSpec, COMMAND_BYTES_MAX,
};
pub use liveness::{HeartbeatReply, SESSION_CHECK_INTERVAL};
pub use log_store::{LogStore, LOG_FILE, VOTE_FILE};
pub use network::FRAME_BYTES_MAX;
pub use node::{ControllerConfig, ControllerNode, ControllerTuning, PROPOSE_TIMEOUT};
pub use quorum::{Quorum, QuorumMember};
pub use state_machine::{StateMachineStore, SNAPSHOT_FILE};

#[cfg(doc)]
use crate::MetadataImage;

/// A controller's id in the quorum (`--controller-quorum 1@host:port,...`). openraft's node ids
/// are `u64`; Kafka's node ids are non-negative `i32`s, which the quorum parser enforces.
pub type ControllerId = u64;

openraft::declare_raft_types!(
    /// The controller quorum's openraft types: log entries carry [`MetadataCommand`]s, applying
    /// one yields a [`CommandResponse`]; snapshots are bytes in memory (the image is small).
    pub TypeConfig:
        D = MetadataCommand,
        R = CommandResponse,
        NodeId = ControllerId,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The openraft instance of a controller.
pub type Raft = openraft::Raft<TypeConfig>;

/// Why the controller failed; a refused command is not an error here but a
/// [`crate::MetadataError`] inside its [`CommandResponse`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file of the controller's directory holds something that is not a torn final write.
    #[error("corrupt {} at offset {offset}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("invalid controller quorum '{input}': {reason}")]
    InvalidQuorum { input: String, reason: String },
    #[error("controller {0} is not in the controller quorum")]
    NotInQuorum(ControllerId),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error(
        "the metadata command is {bytes} bytes encoded, over the limit of {COMMAND_BYTES_MAX}"
    )]
    CommandTooLarge { bytes: usize },
    /// No leader accepted the command before the deadline; it was not applied.
    #[error("no controller leader accepted the command within {timeout_ms} ms")]
    NoLeader { timeout_ms: u64 },
    /// The command reached a leader but its answer was lost: it may or may not have been
    /// applied. Kafka's answer here is REQUEST_TIMED_OUT; the caller decides whether to retry.
    #[error("the command's outcome is unknown: {0}")]
    Indeterminate(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("the controller node has stopped")]
    Stopped,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
