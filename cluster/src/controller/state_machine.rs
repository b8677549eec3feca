//! The controller's state machine (openraft's `RaftStateMachine`): applies committed commands to
//! the [`ControllerState`] and publishes each new state, and keeps durable snapshots of it.
//!
//! Applying does not write to disk; snapshots do. A snapshot (`snapshot` in the controller
//! directory: one record holding the snapshot's metadata and the state) is fsynced, file and
//! directory, before openraft hears it exists — openraft purges the log up to a snapshot as soon
//! as it is built, so a snapshot that could vanish would lose committed commands. On restart the
//! state is the last snapshot's, and openraft re-applies the log after it.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::command::{CommandResponse, ControllerState};
use super::record;
use super::{ControllerId, Error, Result, TypeConfig};

/// The snapshot's file name in the controller directory.
pub const SNAPSHOT_FILE: &str = "snapshot";

/// What `snapshot` holds.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<ControllerId, BasicNode>,
    state: ControllerState,
}

/// The state machine. Clones share one state: openraft holds one, snapshot builders others.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    path: PathBuf,
    state: ControllerState,
    last_applied: Option<LogId<ControllerId>>,
    last_membership: StoredMembership<ControllerId, BasicNode>,
    /// The last snapshot: its metadata and its data (the state, JSON), as on disk.
    snapshot: Option<(SnapshotMeta<ControllerId, BasicNode>, Vec<u8>)>,
    /// Every new state goes here, for the node's followers (the broker's shards, later).
    published: watch::Sender<Arc<ControllerState>>,
}

impl StateMachineStore {
    /// Opens the state machine of the controller directory `dir`: the last snapshot's state, or
    /// the empty state. A damaged snapshot file is [`Error::Corrupt`] (it is replaced
    /// atomically, so it is never torn).
    pub fn open(dir: &Path) -> Result<StateMachineStore> {
        let path = dir.join(SNAPSHOT_FILE);
        let loaded = match record::read_single(&path)? {
            Some(payload) => {
                let file: SnapshotFile =
                    serde_json::from_slice(&payload).map_err(|error| Error::Corrupt {
                        path: path.clone(),
                        offset: 0,
                        reason: format!("undecodable snapshot: {error}"),
                    })?;
                let data = serde_json::to_vec(&file.state).expect("states always serialize");
                Some((file.meta, file.state, data))
            }
            None => None,
        };
        let (state, last_applied, last_membership, snapshot) = match loaded {
            Some((meta, state, data)) => (
                state,
                meta.last_log_id,
                meta.last_membership.clone(),
                Some((meta, data)),
            ),
            None => (
                ControllerState::default(),
                None,
                StoredMembership::default(),
                None,
            ),
        };
        let (published, _) = watch::channel(Arc::new(state.clone()));
        Ok(StateMachineStore {
            inner: Arc::new(Mutex::new(Inner {
                path,
                state,
                last_applied,
                last_membership,
                snapshot,
                published,
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock is a bug, and the release profile aborts on panics.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A receiver of every state this controller applies, starting with the current one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ControllerState>> {
        self.lock().published.subscribe()
    }

    /// The current state.
    pub fn state(&self) -> Arc<ControllerState> {
        self.lock().published.borrow().clone()
    }
}

impl Inner {
    fn publish(&self) {
        self.published.send_replace(Arc::new(self.state.clone()));
    }

    /// Writes the snapshot file durably and makes it the current snapshot.
    fn persist(
        &mut self,
        meta: SnapshotMeta<ControllerId, BasicNode>,
        state: ControllerState,
        data: Vec<u8>,
    ) -> Result<()> {
        let file = SnapshotFile { meta, state };
        let payload = serde_json::to_vec(&file).expect("snapshots always serialize");
        if payload.len() > record::RECORD_BYTES_MAX {
            return Err(Error::Raft(format!(
                "the snapshot is {} bytes, over the limit of {}",
                payload.len(),
                record::RECORD_BYTES_MAX
            )));
        }
        record::write_single(&self.path, &payload, true)?;
        self.snapshot = Some((file.meta, data));
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<ControllerId>> {
        let mut inner = self.lock();
        let data = serde_json::to_vec(&inner.state).expect("states always serialize");
        // Unique per state: the last applied log id names the state it snapshots.
        let snapshot_id = match inner.last_applied {
            Some(log_id) => format!(
                "{}-{}-{}",
                log_id.leader_id.term, log_id.leader_id.node_id, log_id.index
            ),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: inner.last_applied,
            last_membership: inner.last_membership.clone(),
            snapshot_id,
        };
        let state = inner.state.clone();
        inner
            .persist(meta.clone(), state, data.clone())
            .map_err(|error| StorageIOError::write_snapshot(Some(meta.signature()), &error))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<ControllerId>>,
            StoredMembership<ControllerId, BasicNode>,
        ),
        StorageError<ControllerId>,
    > {
        let inner = self.lock();
        Ok((inner.last_applied, inner.last_membership.clone()))
    }

    async fn apply<I>(
        &mut self,
        entries: I,
    ) -> Result<Vec<CommandResponse>, StorageError<ControllerId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.lock();
        let mut responses = Vec::new();
        for entry in entries {
            assert!(
                inner.last_applied < Some(entry.log_id),
                "entries are applied once, in order"
            );
            inner.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => CommandResponse::Done,
                EntryPayload::Normal(ref command) => inner.state.apply(entry.log_id.index, command),
                EntryPayload::Membership(membership) => {
                    inner.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    CommandResponse::Done
                }
            };
            responses.push(response);
        }
        inner.publish();
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<ControllerId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<ControllerId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<ControllerId>> {
        let data = snapshot.into_inner();
        // The leader's bytes are checked before anything is replaced.
        let state: ControllerState = serde_json::from_slice(&data)
            .map_err(|error| StorageIOError::read_snapshot(Some(meta.signature()), &error))?;
        let mut inner = self.lock();
        inner
            .persist(meta.clone(), state.clone(), data)
            .map_err(|error| StorageIOError::write_snapshot(Some(meta.signature()), &error))?;
        inner.state = state;
        inner.last_applied = meta.last_log_id;
        inner.last_membership = meta.last_membership.clone();
        inner.publish();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<ControllerId>> {
        Ok(self.lock().snapshot.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}
