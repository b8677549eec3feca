//! The storage facade: files and directories as the engine sees them. `Storage::Real` is
//! glommio's direct-I/O (O_DIRECT, io_uring) files; `Storage::Sim` is the seeded fault layer in
//! [`super::sim`]. Everything above `rt` does its disk I/O through these two types, which is what
//! lets the same log code run against real disks and against injected faults.

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::{DmaFile, OpenOptions};

use super::sim::{SimDisk, SimFile};
use crate::error::{Error, Result};

/// Every direct-I/O write is aligned to this many bytes, in position and length. 4096 is the
/// page size and ext4's block size, a multiple of every logical block size O_DIRECT accepts
/// here (glommio reports 512 on this machine's disks); one value for all disks keeps the
/// on-disk layout independent of the device.
pub const DMA_ALIGNMENT_BYTES: u64 = 4096;

/// Rounds `value` down to a multiple of [`DMA_ALIGNMENT_BYTES`].
pub fn align_down(value: u64) -> u64 {
    value & !(DMA_ALIGNMENT_BYTES - 1)
}

/// Rounds `value` up to a multiple of [`DMA_ALIGNMENT_BYTES`].
pub fn align_up(value: u64) -> u64 {
    align_down(value + DMA_ALIGNMENT_BYTES - 1)
}

/// Name of the file written to each data directory at start-up to work around glommio 0.9's
/// polled-I/O probe (see [`Storage::prime_data_dir`]).
const PROBE_FILE_NAME: &str = ".ringlog-dma-probe";

/// Where the engine's files live: the real disk, or a simulated one with injected faults.
/// Cheap to clone; one per shard (the simulated disk is single-threaded).
#[derive(Clone)]
pub enum Storage {
    Real,
    Sim(Rc<SimDisk>),
}

/// How to open a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write; created empty if it does not exist, kept as is if it does.
    Create,
}

impl Storage {
    /// glommio 0.9 probes whether a device supports polled I/O by reading the first block of
    /// the first DMA file it opens there and caches the answer per device. On an empty file the
    /// read "succeeds" with zero bytes, the probe says yes, and later reads on that device fail
    /// with EOPNOTSUPP. Opening a known non-empty file first makes the probe answer correctly.
    /// Call once per data directory before any other DMA file there is opened.
    pub async fn prime_data_dir(&self, dir: &Path) -> Result<()> {
        match self {
            Storage::Sim(_) => Ok(()),
            Storage::Real => {
                std::fs::create_dir_all(dir).map_err(|e| Error::io("create dir", dir, e))?;
                let path = dir.join(PROBE_FILE_NAME);
                // Shards prime the same directory concurrently: write under a name of our own and
                // rename it into place, so no opener ever sees the file empty or half written
                // (an empty probe file is exactly what makes glommio's probe misfire).
                let staging = dir.join(format!(
                    "{PROBE_FILE_NAME}.{}.{:?}",
                    std::process::id(),
                    std::thread::current().id()
                ));
                let block = vec![0x5a_u8; DMA_ALIGNMENT_BYTES as usize];
                std::fs::write(&staging, &block).map_err(|e| Error::io("write", &staging, e))?;
                std::fs::rename(&staging, &path).map_err(|e| Error::io("rename", &staging, e))?;
                let file = DmaFile::open(&path)
                    .await
                    .map_err(|e| glommio_err("open", &path, e))?;
                let read = file
                    .read_at_aligned(0, DMA_ALIGNMENT_BYTES as usize)
                    .await
                    .map_err(|e| glommio_err("read", &path, e))?;
                if read.len() != DMA_ALIGNMENT_BYTES as usize {
                    return Err(Error::io(
                        "read",
                        &path,
                        io::Error::new(io::ErrorKind::UnexpectedEof, "short read of probe file"),
                    ));
                }
                file.close()
                    .await
                    .map_err(|e| glommio_err("close", &path, e))?;
                Ok(())
            }
        }
    }

    pub async fn create_dir_all(&self, path: &Path) -> Result<()> {
        match self {
            Storage::Real => {
                std::fs::create_dir_all(path).map_err(|e| Error::io("create dir", path, e))
            }
            Storage::Sim(disk) => disk.create_dir_all(path),
        }
    }

    /// Names of the entries of a directory, sorted. Called at start-up and recovery only.
    pub async fn list_dir(&self, path: &Path) -> Result<Vec<String>> {
        let mut names = match self {
            Storage::Real => {
                let mut names = Vec::new();
                let entries =
                    std::fs::read_dir(path).map_err(|e| Error::io("list dir", path, e))?;
                for entry in entries {
                    let entry = entry.map_err(|e| Error::io("list dir", path, e))?;
                    names.push(entry.file_name().to_string_lossy().into_owned());
                }
                names
            }
            Storage::Sim(disk) => disk.list_dir(path)?,
        };
        names.sort();
        Ok(names)
    }

    pub async fn exists(&self, path: &Path) -> bool {
        match self {
            Storage::Real => path.exists(),
            Storage::Sim(disk) => disk.exists(path),
        }
    }

    pub async fn is_dir(&self, path: &Path) -> bool {
        match self {
            Storage::Real => path.is_dir(),
            Storage::Sim(disk) => disk.is_dir(path),
        }
    }

    pub async fn open(&self, path: &Path, mode: OpenMode) -> Result<File> {
        let inner = match self {
            Storage::Real => {
                let mut options = OpenOptions::new();
                match mode {
                    OpenMode::Read => options.read(true),
                    OpenMode::ReadWrite => options.read(true).write(true),
                    OpenMode::Create => options.read(true).write(true).create(true),
                };
                let file = options
                    .dma_open(path)
                    .await
                    .map_err(|e| glommio_err("open", path, e))?;
                FileInner::Dma(Rc::new(file))
            }
            Storage::Sim(disk) => FileInner::Sim(disk.open(path, mode)?),
        };
        Ok(File {
            inner,
            path: Rc::from(path),
        })
    }

    pub async fn remove_file(&self, path: &Path) -> Result<()> {
        match self {
            Storage::Real => glommio::io::remove(path)
                .await
                .map_err(|e| glommio_err("remove", path, e)),
            Storage::Sim(disk) => disk.remove_file(path),
        }
    }

    pub async fn remove_dir_all(&self, path: &Path) -> Result<()> {
        match self {
            Storage::Real => {
                std::fs::remove_dir_all(path).map_err(|e| Error::io("remove dir", path, e))
            }
            Storage::Sim(disk) => disk.remove_dir_all(path),
        }
    }

    pub async fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        match self {
            Storage::Real => glommio::io::rename(from, to)
                .await
                .map_err(|e| glommio_err("rename", from, e)),
            Storage::Sim(disk) => disk.rename(from, to),
        }
    }

    /// Makes the directory's entries (files created, renamed or removed in it) durable.
    pub async fn sync_dir(&self, path: &Path) -> Result<()> {
        match self {
            Storage::Real => {
                let dir = glommio::io::Directory::open(path)
                    .await
                    .map_err(|e| glommio_err("open dir", path, e))?;
                dir.sync()
                    .await
                    .map_err(|e| glommio_err("sync dir", path, e))?;
                dir.close()
                    .await
                    .map_err(|e| glommio_err("close dir", path, e))
            }
            Storage::Sim(disk) => disk.sync_dir(path),
        }
    }

    /// Replaces `path` with `contents` atomically and durably: write a temporary file, fdatasync
    /// it, rename it over `path`, sync the directory. Used for small metadata files (index
    /// checkpoints, the clean-shutdown marker, the log-start-offset checkpoint).
    pub async fn write_file_atomic(&self, path: &Path, contents: &[u8]) -> Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(".tmp");
        let tmp = dir.join(tmp_name);
        let file = self.open(&tmp, OpenMode::Create).await?;
        file.truncate(0).await?;
        let padded_len = align_up(contents.len() as u64) as usize;
        let mut padded = vec![0_u8; padded_len];
        padded[..contents.len()].copy_from_slice(contents);
        if padded_len > 0 {
            file.write_at(&padded, 0).await?;
        }
        file.truncate(contents.len() as u64).await?;
        file.fdatasync().await?;
        file.close().await?;
        self.rename(&tmp, path).await?;
        self.sync_dir(dir).await
    }

    /// Reads a whole small file, or `None` if it does not exist.
    pub async fn read_file(&self, path: &Path) -> Result<Option<Bytes>> {
        if !self.exists(path).await {
            return Ok(None);
        }
        let file = self.open(path, OpenMode::Read).await?;
        let size = file.size().await?;
        let contents = file.read_at(0, size as usize).await?;
        file.close().await?;
        Ok(Some(contents))
    }
}

/// Bytes for one direct write; see [`File::alloc_buffer`].
pub struct IoBuffer(IoBufferInner);

enum IoBufferInner {
    Dma(glommio::io::DmaBuffer),
    Heap(Vec<u8>),
}

impl IoBuffer {
    pub fn len(&self) -> usize {
        match &self.0 {
            IoBufferInner::Dma(buffer) => buffer.len(),
            IoBufferInner::Heap(data) => data.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match &mut self.0 {
            IoBufferInner::Dma(buffer) => buffer.as_bytes_mut(),
            IoBufferInner::Heap(data) => data,
        }
    }
}

/// An open file. Reads may be at any position and length; writes must be aligned to
/// [`DMA_ALIGNMENT_BYTES`] in position and length (direct I/O). Cheap to clone.
#[derive(Clone)]
pub struct File {
    inner: FileInner,
    path: Rc<Path>,
}

#[derive(Clone)]
enum FileInner {
    Dma(Rc<DmaFile>),
    Sim(SimFile),
}

impl File {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A buffer of `len` bytes for [`File::write_buffer_at`]: DMA memory for a real file
    /// (from the shard's registered io memory while it lasts), so the bytes are copied once,
    /// into it, and go to the disk from there. Its contents are unspecified: fill all of it.
    pub fn alloc_buffer(&self, len: usize) -> IoBuffer {
        match &self.inner {
            FileInner::Dma(file) => IoBuffer(IoBufferInner::Dma(file.alloc_dma_buffer(len))),
            FileInner::Sim(_) => IoBuffer(IoBufferInner::Heap(vec![0; len])),
        }
    }

    /// Writes `buffer` at `position`; both must be multiples of [`DMA_ALIGNMENT_BYTES`].
    pub async fn write_buffer_at(&self, buffer: IoBuffer, position: u64) -> Result<()> {
        assert_eq!(
            position % DMA_ALIGNMENT_BYTES,
            0,
            "unaligned write position"
        );
        let len = buffer.len();
        assert_eq!(
            len as u64 % DMA_ALIGNMENT_BYTES,
            0,
            "unaligned write length"
        );
        match (&self.inner, buffer.0) {
            (FileInner::Dma(file), IoBufferInner::Dma(buffer)) => {
                let written = file
                    .write_at(buffer, position)
                    .await
                    .map_err(|e| glommio_err("write", &self.path, e))?;
                if written != len {
                    return Err(Error::io(
                        "write",
                        self.path.to_path_buf(),
                        io::Error::new(
                            io::ErrorKind::WriteZero,
                            format!("short write: {written} of {len} bytes"),
                        ),
                    ));
                }
                Ok(())
            }
            (FileInner::Sim(file), IoBufferInner::Heap(data)) => {
                file.write_at(&data, position).await
            }
            _ => panic!("an IoBuffer is written to the kind of file that allocated it"),
        }
    }

    /// Writes `data` at `position`; both must be multiples of [`DMA_ALIGNMENT_BYTES`].
    pub async fn write_at(&self, data: &[u8], position: u64) -> Result<()> {
        let mut buffer = self.alloc_buffer(data.len());
        buffer.as_mut_slice().copy_from_slice(data);
        self.write_buffer_at(buffer, position).await
    }

    /// Reads up to `len` bytes at `position`; fewer only at the end of the file.
    pub async fn read_at(&self, position: u64, len: usize) -> Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        match &self.inner {
            FileInner::Dma(file) => {
                let read = file
                    .read_at(position, len)
                    .await
                    .map_err(|e| glommio_err("read", &self.path, e))?;
                Ok(Bytes::copy_from_slice(&read))
            }
            FileInner::Sim(file) => file.read_at(position, len).await,
        }
    }

    /// Writes `len` zero bytes at `position`; both must be multiples of
    /// [`DMA_ALIGNMENT_BYTES`].
    pub async fn write_zeroes_at(&self, position: u64, len: usize) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let mut buffer = self.alloc_buffer(len);
        buffer.as_mut_slice().fill(0);
        self.write_buffer_at(buffer, position).await
    }

    pub async fn fdatasync(&self) -> Result<()> {
        match &self.inner {
            FileInner::Dma(file) => file
                .fdatasync()
                .await
                .map_err(|e| glommio_err("fdatasync", &self.path, e)),
            FileInner::Sim(file) => file.fdatasync().await,
        }
    }

    /// Reserves `size` bytes of disk for the file and sets its length to `size`, so appends
    /// into it need no block allocation (an fsync'd append that grows a file costs ~20x more).
    pub async fn pre_allocate(&self, size: u64) -> Result<()> {
        match &self.inner {
            FileInner::Dma(file) => file
                .pre_allocate(size, false)
                .await
                .map_err(|e| glommio_err("fallocate", &self.path, e)),
            FileInner::Sim(file) => file.pre_allocate(size),
        }
    }

    pub async fn truncate(&self, size: u64) -> Result<()> {
        match &self.inner {
            FileInner::Dma(file) => file
                .truncate(size)
                .await
                .map_err(|e| glommio_err("truncate", &self.path, e)),
            FileInner::Sim(file) => file.truncate(size),
        }
    }

    pub async fn size(&self) -> Result<u64> {
        match &self.inner {
            FileInner::Dma(file) => file
                .file_size()
                .await
                .map_err(|e| glommio_err("stat", &self.path, e)),
            FileInner::Sim(file) => Ok(file.size()),
        }
    }

    /// Closes this handle. Other clones of it stay usable until they are dropped.
    pub async fn close(self) -> Result<()> {
        match self.inner {
            FileInner::Dma(file) => match Rc::try_unwrap(file) {
                Ok(file) => file
                    .close()
                    .await
                    .map_err(|e| glommio_err("close", &self.path, e)),
                Err(_shared) => Ok(()),
            },
            FileInner::Sim(_) => Ok(()),
        }
    }
}

fn glommio_err(op: &'static str, path: &Path, error: glommio::GlommioError<()>) -> Error {
    Error::io(op, PathBuf::from(path), io::Error::from(error))
}
