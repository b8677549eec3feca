//! The storage fault layer: an in-memory disk that behaves like a real one across power loss
//! and fails on purpose, driven by a seed so every failing run can be replayed.
//!
//! Each file keeps two images: `current` (what reads see: the device plus its volatile cache)
//! and `durable` (what survives power loss), plus the list of operations made since the last
//! fdatasync. Faults it injects, each decided by the seeded RNG:
//! - a write fails with EIO, having written nothing or a torn prefix of its bytes;
//! - an fdatasync fails with EIO, having persisted an arbitrary subset of the pending writes
//!   (Linux marks the pages clean anyway: the data may be lost even though reads still see it);
//! - the disk fills up (ENOSPC) past a capacity;
//! - power loss ([`SimDisk::power_loss`]): every write not yet synced is kept, dropped, or torn at
//!   any byte; files created or renamed but not made durable by a directory sync disappear.
//!
//! Directories themselves are durable as soon as they are made (a simplification: the engine
//! creates a partition's directory once, before its first segment, and syncs the parent).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use super::fs::OpenMode;
use crate::error::{Error, Result};

/// What faults to inject and how often. Probabilities are in parts per million per operation.
#[derive(Clone, Debug, Default)]
pub struct FaultConfig {
    pub write_error_ppm: u32,
    pub sync_error_ppm: u32,
    /// Total bytes the disk holds (the sum of file lengths); past it writes fail with ENOSPC.
    pub capacity_bytes: Option<u64>,
    /// Yield to the executor inside every operation, so concurrent tasks interleave at I/O
    /// points the way they do on a real disk.
    pub interleave: bool,
    /// The machine stops (as [`SimDisk::crash`]) when this many more operations have been
    /// attempted: a power loss at a point of the I/O stream chosen by the seed.
    pub crash_after_ops: Option<u64>,
}

/// Counts of what the simulated disk did, for test reports.
#[derive(Clone, Debug, Default)]
pub struct SimStats {
    pub writes: u64,
    pub syncs: u64,
    pub injected_write_errors: u64,
    pub injected_sync_errors: u64,
    pub enospc_errors: u64,
    pub power_losses: u64,
    pub torn_writes_on_power_loss: u64,
    pub dropped_writes_on_power_loss: u64,
}

/// A simulated disk. One per test shard: it is single-threaded (`Rc`).
pub struct SimDisk {
    seed: u64,
    state: RefCell<State>,
}

struct State {
    rng: fastrand::Rng,
    faults: FaultConfig,
    next_file_id: u64,
    files: HashMap<u64, FileData>,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    /// Set by [`SimDisk::crash`]: the machine is down and every operation fails.
    crashed: bool,
    /// Power losses so far. A handle opened before the last one belongs to a process that died
    /// with the machine: its operations fail, so a task that outlived the "crash" in the test's
    /// executor cannot touch the disk the recovered log now owns.
    boots: u64,
    /// Operations attempted since the fault config was last set.
    operations: u64,
    stats: SimStats,
}

#[derive(Default)]
struct FileData {
    current: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
}

#[derive(Clone)]
enum Pending {
    Write { position: u64, data: Vec<u8> },
    Resize { size: u64 },
}

impl Pending {
    fn apply(&self, image: &mut Vec<u8>) {
        match self {
            Pending::Write { position, data } => write_into(image, *position, data),
            Pending::Resize { size } => image.resize(*size as usize, 0),
        }
    }
}

fn write_into(image: &mut Vec<u8>, position: u64, data: &[u8]) {
    let end = position as usize + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[position as usize..end].copy_from_slice(data);
}

fn io_error(op: &'static str, path: &Path, kind: io::ErrorKind, message: &str) -> Error {
    Error::io(
        op,
        path.to_path_buf(),
        io::Error::new(kind, message.to_string()),
    )
}

fn injected(op: &'static str, path: &Path) -> Error {
    Error::io(
        op,
        path.to_path_buf(),
        io::Error::from_raw_os_error(libc::EIO),
    )
}

impl SimDisk {
    pub fn new(seed: u64, faults: FaultConfig) -> Rc<SimDisk> {
        let mut dirs = BTreeSet::new();
        dirs.insert(PathBuf::from("/"));
        Rc::new(SimDisk {
            seed,
            state: RefCell::new(State {
                rng: fastrand::Rng::with_seed(seed),
                faults,
                next_file_id: 1,
                files: HashMap::new(),
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                dirs,
                crashed: false,
                boots: 0,
                operations: 0,
                stats: SimStats::default(),
            }),
        })
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn stats(&self) -> SimStats {
        self.state.borrow().stats.clone()
    }

    pub fn set_faults(&self, faults: FaultConfig) {
        let mut state = self.state.borrow_mut();
        state.faults = faults;
        state.operations = 0;
    }

    /// Whether the machine is down (after [`SimDisk::crash`] or `crash_after_ops`).
    pub fn is_crashed(&self) -> bool {
        self.state.borrow().crashed
    }

    /// The machine stops: from now on every operation fails with EIO, as in-flight I/O does
    /// when power goes. Follow with [`SimDisk::power_loss`] to "reboot".
    pub fn crash(&self) {
        self.state.borrow_mut().crashed = true;
    }

    /// Power comes back: each file keeps its durable image plus an arbitrary subset of its
    /// unsynced operations (each kept, dropped, or — for writes — torn at a random byte), and
    /// only names made durable by a directory sync remain.
    pub fn power_loss(&self) {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        state.stats.power_losses += 1;
        for file in state.files.values_mut() {
            let mut image = std::mem::take(&mut file.durable);
            for pending in file.pending.drain(..) {
                match (state.rng.u8(0..4), pending) {
                    (0, _) => state.stats.dropped_writes_on_power_loss += 1,
                    (1, Pending::Write { position, data }) if !data.is_empty() => {
                        let cut = state.rng.usize(0..data.len());
                        write_into(&mut image, position, &data[..cut]);
                        state.stats.torn_writes_on_power_loss += 1;
                    }
                    (_, pending) => pending.apply(&mut image),
                }
            }
            file.current = image.clone();
            file.durable = image;
        }
        state.names = state.durable_names.clone();
        let live: BTreeSet<u64> = state.names.values().copied().collect();
        state.files.retain(|id, _| live.contains(id));
        state.crashed = false;
        state.boots += 1;
    }

    /// The bytes a file would hold after power loss with no unsynced write surviving.
    pub fn durable_contents(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.state.borrow();
        let id = state.durable_names.get(path)?;
        state.files.get(id).map(|file| file.durable.clone())
    }

    /// Overwrites bytes of a file in both images, as media corruption would.
    pub fn corrupt(&self, path: &Path, position: u64, data: &[u8]) {
        let mut state = self.state.borrow_mut();
        let Some(&id) = state.names.get(path) else {
            return;
        };
        if let Some(file) = state.files.get_mut(&id) {
            write_into(&mut file.current, position, data);
            write_into(&mut file.durable, position, data);
        }
    }

    fn check_alive(&self, op: &'static str, path: &Path) -> Result<()> {
        let mut state = self.state.borrow_mut();
        state.operations += 1;
        if state
            .faults
            .crash_after_ops
            .is_some_and(|limit| state.operations > limit)
        {
            state.crashed = true;
        }
        if state.crashed {
            return Err(injected(op, path));
        }
        Ok(())
    }

    pub(crate) fn create_dir_all(&self, path: &Path) -> Result<()> {
        self.check_alive("create dir", path)?;
        let mut state = self.state.borrow_mut();
        for ancestor in path.ancestors() {
            state.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    pub(crate) fn list_dir(&self, path: &Path) -> Result<Vec<String>> {
        self.check_alive("list dir", path)?;
        let state = self.state.borrow();
        if !state.dirs.contains(path) {
            return Err(io_error(
                "list dir",
                path,
                io::ErrorKind::NotFound,
                "no such directory",
            ));
        }
        let files = state.names.keys();
        let dirs = state.dirs.iter();
        Ok(files
            .chain(dirs)
            .filter(|entry| entry.parent() == Some(path))
            .filter_map(|entry| {
                entry
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
            })
            .collect())
    }

    pub(crate) fn exists(&self, path: &Path) -> bool {
        let state = self.state.borrow();
        state.names.contains_key(path) || state.dirs.contains(path)
    }

    pub(crate) fn is_dir(&self, path: &Path) -> bool {
        self.state.borrow().dirs.contains(path)
    }

    pub(crate) fn open(self: &Rc<Self>, path: &Path, mode: OpenMode) -> Result<SimFile> {
        self.check_alive("open", path)?;
        let mut state = self.state.borrow_mut();
        let parent = path.parent().unwrap_or(Path::new("/"));
        if !state.dirs.contains(parent) {
            return Err(io_error(
                "open",
                path,
                io::ErrorKind::NotFound,
                "no such directory",
            ));
        }
        let id = match (state.names.get(path).copied(), mode) {
            (Some(id), _) => id,
            (None, OpenMode::Create) => {
                let id = state.next_file_id;
                state.next_file_id += 1;
                state.files.insert(id, FileData::default());
                state.names.insert(path.to_path_buf(), id);
                id
            }
            (None, _) => {
                return Err(io_error(
                    "open",
                    path,
                    io::ErrorKind::NotFound,
                    "no such file",
                ))
            }
        };
        Ok(SimFile {
            disk: Rc::clone(self),
            id,
            path: Rc::from(path),
            boot: state.boots,
        })
    }

    pub(crate) fn remove_file(&self, path: &Path) -> Result<()> {
        self.check_alive("remove", path)?;
        let mut state = self.state.borrow_mut();
        match state.names.remove(path) {
            Some(_) => Ok(()),
            None => Err(io_error(
                "remove",
                path,
                io::ErrorKind::NotFound,
                "no such file",
            )),
        }
    }

    pub(crate) fn remove_dir_all(&self, path: &Path) -> Result<()> {
        self.check_alive("remove dir", path)?;
        let mut state = self.state.borrow_mut();
        state.names.retain(|name, _| !name.starts_with(path));
        state
            .durable_names
            .retain(|name, _| !name.starts_with(path));
        state.dirs.retain(|dir| !dir.starts_with(path));
        Ok(())
    }

    pub(crate) fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.check_alive("rename", from)?;
        let mut state = self.state.borrow_mut();
        match state.names.remove(from) {
            Some(id) => {
                state.names.insert(to.to_path_buf(), id);
                Ok(())
            }
            None => Err(io_error(
                "rename",
                from,
                io::ErrorKind::NotFound,
                "no such file",
            )),
        }
    }

    pub(crate) fn sync_dir(&self, path: &Path) -> Result<()> {
        self.check_alive("sync dir", path)?;
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        state
            .durable_names
            .retain(|name, _| name.parent() != Some(path));
        for (name, id) in &state.names {
            if name.parent() == Some(path) {
                state.durable_names.insert(name.clone(), *id);
            }
        }
        Ok(())
    }

    fn used_bytes(state: &State) -> u64 {
        let live: BTreeSet<u64> = state
            .names
            .values()
            .chain(state.durable_names.values())
            .copied()
            .collect();
        live.iter()
            .filter_map(|id| state.files.get(id))
            .map(|file| file.current.len() as u64)
            .sum()
    }

    fn would_overflow(state: &State, id: u64, new_len: u64) -> bool {
        let Some(capacity) = state.faults.capacity_bytes else {
            return false;
        };
        let current_len = state
            .files
            .get(&id)
            .map_or(0, |file| file.current.len() as u64);
        new_len > current_len && Self::used_bytes(state) + (new_len - current_len) > capacity
    }
}

/// A handle on a file of a [`SimDisk`].
#[derive(Clone)]
pub struct SimFile {
    disk: Rc<SimDisk>,
    id: u64,
    path: Rc<Path>,
    /// The disk's power-loss count when this handle was opened.
    boot: u64,
}

impl SimFile {
    /// [`SimDisk::check_alive`], and EIO for a handle from before the last power loss.
    fn check_alive(&self, op: &'static str) -> Result<()> {
        self.disk.check_alive(op, &self.path)?;
        if self.disk.state.borrow().boots != self.boot {
            return Err(injected(op, &self.path));
        }
        Ok(())
    }

    async fn maybe_yield(&self) {
        let interleave = self.disk.state.borrow().faults.interleave;
        if interleave {
            futures_lite::future::yield_now().await;
        }
    }

    pub(crate) async fn write_at(&self, data: &[u8], position: u64) -> Result<()> {
        self.maybe_yield().await;
        self.check_alive("write")?;
        let mut state = self.disk.state.borrow_mut();
        let state = &mut *state;
        state.stats.writes += 1;
        let end = position + data.len() as u64;
        if SimDisk::would_overflow(state, self.id, end) {
            state.stats.enospc_errors += 1;
            return Err(Error::io(
                "write",
                self.path.to_path_buf(),
                io::Error::from_raw_os_error(libc::ENOSPC),
            ));
        }
        let fail = state.rng.u32(0..1_000_000) < state.faults.write_error_ppm;
        let written = if fail {
            state.rng.usize(0..=data.len())
        } else {
            data.len()
        };
        let file = state.files.entry(self.id).or_default();
        if written > 0 {
            write_into(&mut file.current, position, &data[..written]);
            file.pending.push(Pending::Write {
                position,
                data: data[..written].to_vec(),
            });
        }
        if fail {
            state.stats.injected_write_errors += 1;
            return Err(injected("write", &self.path));
        }
        Ok(())
    }

    pub(crate) async fn read_at(&self, position: u64, len: usize) -> Result<Bytes> {
        self.maybe_yield().await;
        self.check_alive("read")?;
        let state = self.disk.state.borrow();
        let Some(file) = state.files.get(&self.id) else {
            return Ok(Bytes::new());
        };
        let start = (position as usize).min(file.current.len());
        let end = (start + len).min(file.current.len());
        Ok(Bytes::copy_from_slice(&file.current[start..end]))
    }

    pub(crate) async fn fdatasync(&self) -> Result<()> {
        self.maybe_yield().await;
        self.check_alive("fdatasync")?;
        let mut state = self.disk.state.borrow_mut();
        let state = &mut *state;
        state.stats.syncs += 1;
        let fail = state.rng.u32(0..1_000_000) < state.faults.sync_error_ppm;
        let Some(file) = state.files.get_mut(&self.id) else {
            return Ok(());
        };
        let pending = std::mem::take(&mut file.pending);
        for operation in &pending {
            // A failed writeback persists an arbitrary subset of the dirty data.
            if !fail || state.rng.bool() {
                operation.apply(&mut file.durable);
            }
        }
        if fail {
            state.stats.injected_sync_errors += 1;
            return Err(injected("fdatasync", &self.path));
        }
        Ok(())
    }

    pub(crate) fn pre_allocate(&self, size: u64) -> Result<()> {
        self.check_alive("fallocate")?;
        let mut state = self.disk.state.borrow_mut();
        let state = &mut *state;
        if SimDisk::would_overflow(state, self.id, size) {
            state.stats.enospc_errors += 1;
            return Err(Error::io(
                "fallocate",
                self.path.to_path_buf(),
                io::Error::from_raw_os_error(libc::ENOSPC),
            ));
        }
        let file = state.files.entry(self.id).or_default();
        if (file.current.len() as u64) < size {
            file.current.resize(size as usize, 0);
            file.pending.push(Pending::Resize { size });
        }
        Ok(())
    }

    pub(crate) fn truncate(&self, size: u64) -> Result<()> {
        self.check_alive("truncate")?;
        let mut state = self.disk.state.borrow_mut();
        let file = state.files.entry(self.id).or_default();
        file.current.resize(size as usize, 0);
        file.pending.push(Pending::Resize { size });
        Ok(())
    }

    pub(crate) fn size(&self) -> u64 {
        let state = self.disk.state.borrow();
        state
            .files
            .get(&self.id)
            .map_or(0, |file| file.current.len() as u64)
    }
}
