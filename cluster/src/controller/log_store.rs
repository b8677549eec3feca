//! The controller's durable raft log and vote (openraft's `RaftLogStorage`), in plain files of
//! the controller directory, written with `std::fs` on the controller's own thread.
//!
//! - `raft-log`: a header record (the last purged log id), then one record per entry, in index
//!   order. Appends are written and fdatasynced before openraft is told they are durable;
//!   truncation cuts the file and fsyncs it; a purge rewrites the file (new header, the entries
//!   kept) under a temporary name and renames it into place. The log between two snapshots is a
//!   few thousand small commands at most, so rewriting it is cheap and keeps one file.
//! - `raft-vote`: the vote, one record, replaced atomically and fsynced.
//! - `raft-committed`: the last committed log id, replaced atomically but not fsynced: a stale
//!   value is still a committed one (it only tells a restarting node how far it may apply
//!   without waiting for a leader), and a damaged one is read as none.
//!
//! Every entry is also kept in memory: openraft reads the log to replicate it, and the log is
//! small (it is purged after every snapshot).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
};
use serde::{Deserialize, Serialize};

use super::record::{self, io_error, Decoded};
use super::{ControllerId, Error, Result, TypeConfig};

/// The raft log's file name in the controller directory.
pub const LOG_FILE: &str = "raft-log";
/// The vote's file name.
pub const VOTE_FILE: &str = "raft-vote";
/// The last committed log id's file name.
pub const COMMITTED_FILE: &str = "raft-committed";

/// One record of `raft-log`.
#[derive(Serialize, Deserialize)]
enum LogRecord {
    /// The first record: every entry up to this one is purged (it is in the snapshot).
    Header {
        last_purged: Option<LogId<ControllerId>>,
    },
    Entry(Entry<TypeConfig>),
}

/// The log store. Clones share one log: openraft gets one for writing and one per replication
/// stream for reading.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// The file's length: where the next record goes.
    end: u64,
    last_purged: Option<LogId<ControllerId>>,
    /// Entries by index, with the file position of each record (for truncation).
    entries: BTreeMap<u64, (u64, Entry<TypeConfig>)>,
    vote: Option<Vote<ControllerId>>,
    committed: Option<LogId<ControllerId>>,
    /// Set by a failed write: what is on disk is unknown, so nothing more is written.
    failed: Option<String>,
}

impl LogStore {
    /// Opens (or creates) the log in `dir`. A torn last record (a write that was never
    /// reported durable) is cut off; any other damage is [`Error::Corrupt`] naming the file and
    /// the offset.
    pub fn open(dir: &Path) -> Result<LogStore> {
        std::fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
        let path = dir.join(LOG_FILE);
        if !path.exists() {
            write_log_file(&path, None, std::iter::empty())?;
        }
        let bytes = std::fs::read(&path).map_err(io_error("read", &path))?;
        let corrupt = |offset: usize, reason: String| Error::Corrupt {
            path: path.clone(),
            offset: offset as u64,
            reason,
        };
        let mut position = 0;
        let mut last_purged = None;
        let mut entries: BTreeMap<u64, (u64, Entry<TypeConfig>)> = BTreeMap::new();
        let mut torn = false;
        loop {
            let (payload, end) = match record::decode(&bytes, position) {
                Decoded::Record { payload, end } => (payload, end),
                Decoded::End => break,
                Decoded::Torn => {
                    torn = true;
                    break;
                }
                Decoded::Corrupt(reason) => return Err(corrupt(position, reason)),
            };
            let parsed: LogRecord = serde_json::from_slice(payload)
                .map_err(|error| corrupt(position, format!("undecodable record: {error}")))?;
            match (position, parsed) {
                (
                    0,
                    LogRecord::Header {
                        last_purged: purged,
                    },
                ) => last_purged = purged,
                (0, LogRecord::Entry(_)) => {
                    return Err(corrupt(0, "the log does not start with its header".into()))
                }
                (_, LogRecord::Header { .. }) => {
                    return Err(corrupt(position, "a second header".into()))
                }
                (_, LogRecord::Entry(entry)) => {
                    // Pair check: the log is what `append` wrote, consecutive and past the purge.
                    let expected = match entries.last_key_value() {
                        Some((index, _)) => Some(index + 1),
                        None => last_purged.map(|purged| purged.index + 1),
                    };
                    if expected.is_some_and(|expected| entry.log_id.index != expected) {
                        return Err(corrupt(
                            position,
                            format!(
                                "entry {} where entry {} belongs",
                                entry.log_id.index,
                                expected.unwrap_or_default()
                            ),
                        ));
                    }
                    entries.insert(entry.log_id.index, (position as u64, entry));
                }
            }
            position = end;
        }
        if position == 0 {
            // Not even the header made it: the file was being created.
            return Err(corrupt(0, "no header record".into()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_error("open", &path))?;
        if torn {
            tracing::warn!(
                path = %path.display(),
                offset = position,
                "cutting a torn last record of the controller log"
            );
            file.set_len(position as u64)
                .map_err(io_error("truncate", &path))?;
            file.sync_all().map_err(io_error("fsync", &path))?;
        }
        let vote = match record::read_single(&dir.join(VOTE_FILE))? {
            Some(payload) => {
                Some(
                    serde_json::from_slice(&payload).map_err(|error| Error::Corrupt {
                        path: dir.join(VOTE_FILE),
                        offset: 0,
                        reason: format!("undecodable vote: {error}"),
                    })?,
                )
            }
            None => None,
        };
        let committed_path = dir.join(COMMITTED_FILE);
        let committed = match record::read_single(&committed_path) {
            Ok(Some(payload)) => serde_json::from_slice(&payload).ok().flatten(),
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(%error, "ignoring the committed log id");
                None
            }
        };
        Ok(LogStore {
            inner: Arc::new(Mutex::new(Inner {
                dir: dir.to_path_buf(),
                path,
                file,
                end: position as u64,
                last_purged,
                entries,
                vote,
                committed,
                failed: None,
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock is a bug, and the release profile aborts on panics.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The entries in `range` (tests and tools).
    pub fn entries(&self, range: impl RangeBounds<u64>) -> Vec<Entry<TypeConfig>> {
        self.lock()
            .entries
            .range(range)
            .map(|(_, (_, entry))| entry.clone())
            .collect()
    }
}

/// Writes a whole log file (header and `entries`) under a temporary name, fsyncs it, renames it
/// to `path` and fsyncs the directory.
fn write_log_file<'a>(
    path: &Path,
    last_purged: Option<LogId<ControllerId>>,
    entries: impl Iterator<Item = &'a Entry<TypeConfig>>,
) -> Result<Vec<u64>> {
    let mut bytes = record::encode(&encode_record(&LogRecord::Header { last_purged }));
    let mut positions = Vec::new();
    for entry in entries {
        positions.push(bytes.len() as u64);
        bytes.extend_from_slice(&record::encode(&encode_entry(entry)));
    }
    let temporary = record::temporary_path(path);
    std::fs::write(&temporary, &bytes).map_err(io_error("write", &temporary))?;
    File::open(&temporary)
        .and_then(|file| file.sync_all())
        .map_err(io_error("fsync", &temporary))?;
    std::fs::rename(&temporary, path).map_err(io_error("rename", path))?;
    record::sync_dir(record::parent(path))?;
    Ok(positions)
}

fn encode_record(record: &LogRecord) -> Vec<u8> {
    serde_json::to_vec(record).expect("log records always serialize")
}

fn encode_entry(entry: &Entry<TypeConfig>) -> Vec<u8> {
    // Serializing borrows would need a second enum; entries are small, a clone is fine.
    encode_record(&LogRecord::Entry(entry.clone()))
}

fn storage_error(error: Error) -> StorageError<ControllerId> {
    StorageIOError::write_logs(&error).into()
}

impl Inner {
    /// Why no write may be made: an earlier one failed (see `failed`).
    fn write_refusal(&self) -> Option<Error> {
        self.failed.as_ref().map(|reason| {
            Error::Raft(format!(
                "an earlier write to {} failed ({reason}); restart the controller",
                self.path.display()
            ))
        })
    }

    fn fail(&mut self, error: Error) -> StorageError<ControllerId> {
        tracing::error!(%error, "the controller log failed");
        self.failed = Some(error.to_string());
        storage_error(error)
    }

    fn append(&mut self, entries: Vec<Entry<TypeConfig>>) -> Result<()> {
        let mut bytes = Vec::new();
        let mut positions = Vec::with_capacity(entries.len());
        for entry in &entries {
            positions.push(self.end + bytes.len() as u64);
            bytes.extend_from_slice(&record::encode(&encode_entry(entry)));
        }
        self.file
            .write_all_at(&bytes, self.end)
            .map_err(io_error("write", &self.path))?;
        self.file
            .sync_data()
            .map_err(io_error("fdatasync", &self.path))?;
        self.end += bytes.len() as u64;
        for (entry, position) in entries.into_iter().zip(positions) {
            if let Some((last, _)) = self.entries.last_key_value() {
                assert_eq!(
                    *last + 1,
                    entry.log_id.index,
                    "openraft appends without holes"
                );
            }
            self.entries.insert(entry.log_id.index, (position, entry));
        }
        Ok(())
    }

    fn truncate(&mut self, index: u64) -> Result<()> {
        let Some((position, _)) = self.entries.get(&index) else {
            return Ok(());
        };
        let position = *position;
        self.file
            .set_len(position)
            .map_err(io_error("truncate", &self.path))?;
        self.file
            .sync_all()
            .map_err(io_error("fsync", &self.path))?;
        self.end = position;
        self.entries.split_off(&index);
        Ok(())
    }

    fn purge(&mut self, log_id: LogId<ControllerId>) -> Result<()> {
        assert!(self.last_purged <= Some(log_id), "purges only move forward");
        let kept = self.entries.split_off(&(log_id.index + 1));
        let positions = write_log_file(
            &self.path,
            Some(log_id),
            kept.values().map(|(_, entry)| entry),
        )?;
        self.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(io_error("open", &self.path))?;
        self.end = self
            .file
            .metadata()
            .map_err(io_error("stat", &self.path))?
            .len();
        self.last_purged = Some(log_id);
        self.entries = kept
            .into_iter()
            .zip(positions)
            .map(|((index, (_, entry)), position)| (index, (position, entry)))
            .collect();
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<ControllerId>> {
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        if matches!((start, end), (Bound::Included(a), Bound::Excluded(b)) if a > b) {
            return Ok(Vec::new());
        }
        Ok(self.entries((start, end)))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<ControllerId>> {
        let inner = self.lock();
        let last = inner
            .entries
            .last_key_value()
            .map(|(_, (_, entry))| entry.log_id)
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(
        &mut self,
        vote: &Vote<ControllerId>,
    ) -> Result<(), StorageError<ControllerId>> {
        let mut inner = self.lock();
        if let Some(refusal) = inner.write_refusal() {
            return Err(storage_error(refusal));
        }
        let payload = serde_json::to_vec(vote).expect("votes always serialize");
        let path = inner.dir.join(VOTE_FILE);
        match record::write_single(&path, &payload, true) {
            Ok(()) => {
                inner.vote = Some(*vote);
                Ok(())
            }
            Err(error) => Err(StorageIOError::write_vote(&error).into()),
        }
    }

    async fn read_vote(
        &mut self,
    ) -> Result<Option<Vote<ControllerId>>, StorageError<ControllerId>> {
        Ok(self.lock().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<ControllerId>>,
    ) -> Result<(), StorageError<ControllerId>> {
        let mut inner = self.lock();
        inner.committed = committed;
        let payload = serde_json::to_vec(&committed).expect("log ids always serialize");
        let path = inner.dir.join(COMMITTED_FILE);
        // Not durable on purpose (see the module comment); a failure only costs a restart the
        // chance to apply before hearing from a leader.
        if let Err(error) = record::write_single(&path, &payload, false) {
            tracing::warn!(%error, "cannot save the committed log id");
        }
        Ok(())
    }

    async fn read_committed(
        &mut self,
    ) -> Result<Option<LogId<ControllerId>>, StorageError<ControllerId>> {
        Ok(self.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<ControllerId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.lock();
        if let Some(refusal) = inner.write_refusal() {
            return Err(storage_error(refusal));
        }
        match inner.append(entries.into_iter().collect()) {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                let message = error.to_string();
                let storage = inner.fail(error);
                callback.log_io_completed(Err(std::io::Error::other(message)));
                Err(storage)
            }
        }
    }

    async fn truncate(
        &mut self,
        log_id: LogId<ControllerId>,
    ) -> Result<(), StorageError<ControllerId>> {
        let mut inner = self.lock();
        if let Some(refusal) = inner.write_refusal() {
            return Err(storage_error(refusal));
        }
        inner
            .truncate(log_id.index)
            .map_err(|error| inner.fail(error))
    }

    async fn purge(
        &mut self,
        log_id: LogId<ControllerId>,
    ) -> Result<(), StorageError<ControllerId>> {
        let mut inner = self.lock();
        if let Some(refusal) = inner.write_refusal() {
            return Err(storage_error(refusal));
        }
        inner.purge(log_id).map_err(|error| inner.fail(error))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::controller::MetadataCommand;

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(MetadataCommand::AllocateProducerId),
        }
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(future)
    }

    fn indexes(store: &LogStore) -> Vec<u64> {
        store
            .entries(..)
            .iter()
            .map(|entry| entry.log_id.index)
            .collect()
    }

    #[test]
    fn append_truncate_purge_and_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = LogStore::open(dir.path()).expect("opens");
        block_on(async {
            {
                let mut inner = store.lock();
                inner
                    .append((0..10).map(|index| entry(1, index)).collect())
                    .expect("appends");
            }
            store
                .truncate(LogId::new(CommittedLeaderId::new(1, 1), 7))
                .await
                .expect("truncates");
            store
                .purge(LogId::new(CommittedLeaderId::new(1, 1), 2))
                .await
                .expect("purges");
            let vote = Vote::new(3, 2);
            store.save_vote(&vote).await.expect("saves vote");
            let state = store.get_log_state().await.expect("state");
            assert_eq!(state.last_purged_log_id.map(|id| id.index), Some(2));
            assert_eq!(state.last_log_id.map(|id| id.index), Some(6));
        });
        {
            let mut inner = store.lock();
            inner
                .append(vec![entry(2, 7)])
                .expect("appends after a purge");
        }
        drop(store);
        let mut store = LogStore::open(dir.path()).expect("reopens");
        assert_eq!(indexes(&store), vec![3, 4, 5, 6, 7]);
        block_on(async {
            assert_eq!(
                store.read_vote().await.expect("vote"),
                Some(Vote::new(3, 2))
            );
            let range = store.try_get_log_entries(4..6).await.expect("reads");
            assert_eq!(range.len(), 2);
            // Purging past the end leaves an empty log that remembers the purge.
            store
                .purge(LogId::new(CommittedLeaderId::new(2, 1), 20))
                .await
                .expect("purges");
            let state = store.get_log_state().await.expect("state");
            assert_eq!(state.last_log_id.map(|id| id.index), Some(20));
        });
        drop(store);
        let store = LogStore::open(dir.path()).expect("reopens");
        assert!(indexes(&store).is_empty());
    }

    #[test]
    fn a_torn_last_record_is_cut_and_damage_elsewhere_is_reported() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LogStore::open(dir.path()).expect("opens");
        store
            .lock()
            .append((0..3).map(|index| entry(1, index)).collect())
            .expect("appends");
        drop(store);
        let path = dir.path().join(LOG_FILE);
        let bytes = std::fs::read(&path).expect("reads");
        // Cut the last record in the middle: recovered without it, and appends go on.
        std::fs::write(&path, &bytes[..bytes.len() - 5]).expect("writes");
        let store = LogStore::open(dir.path()).expect("a torn tail is not an error");
        assert_eq!(indexes(&store), vec![0, 1]);
        store.lock().append(vec![entry(1, 2)]).expect("appends");
        drop(store);
        assert_eq!(
            indexes(&LogStore::open(dir.path()).expect("reopens")),
            vec![0, 1, 2]
        );

        // Flip a byte inside the first entry: an error naming the file and the offset.
        let mut bytes = std::fs::read(&path).expect("reads");
        let header_len = record::RECORD_HEADER_BYTES
            + encode_record(&LogRecord::Header { last_purged: None }).len();
        bytes[header_len + record::RECORD_HEADER_BYTES + 3] ^= 0x20;
        std::fs::write(&path, &bytes).expect("writes");
        let error = LogStore::open(dir.path())
            .err()
            .expect("corruption is an error");
        let message = error.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(
            message.contains(&format!("offset {header_len}")),
            "{message}"
        );
    }
}
