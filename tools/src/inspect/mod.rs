//! `ringlog log dump|verify`: read-only inspection of partition logs on disk, for operators and
//! for tests that need to see exactly what recovery will find.
//!
//! Nothing here opens a [`ringlog_engine::log::PartitionLog`]: opening one recovers it, which
//! truncates torn tails and removes markers. Segment files are opened read-only through the
//! engine's storage layer and decoded with the engine's own frame checks, so the tool and
//! recovery can never disagree about what a valid frame is.

mod dump;
mod scan;
mod verify;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Subcommand;
use ringlog_engine::log::{CLEAN_SHUTDOWN_FILE, LOG_START_OFFSET_FILE};
use ringlog_engine::rt::{self, RuntimeConfig};
use ringlog_engine::segment::parse_log_file_name;

/// Exit status of `verify` when it found a problem (1 is left for failures to run at all).
const EXIT_PROBLEMS_FOUND: u8 = 2;

/// DMA memory the tool's executor registers with io_uring. The tool reads one segment at a time
/// in `SCAN_CHUNK_BYTES` chunks, so it needs no large registered pool, and 1 MiB (registered
/// with each of glommio's three rings) stays under the default 8 MiB `RLIMIT_MEMLOCK`, so an
/// unprivileged operator gets no warning about raising it. Larger reads use heap buffers.
const TOOL_IO_MEMORY_BYTES: usize = 1 << 20;

#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Print every frame of every segment, the index checkpoints and the marker files.
    Dump {
        /// A partition directory (`<topic>-<partition>`), or a data directory holding them.
        dir: PathBuf,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check every frame, offset contiguity, index checkpoints and markers. Exits 0 if the log
    /// is sound, 2 (printing `file:position: reason` for each problem) if not.
    Verify {
        /// A partition directory (`<topic>-<partition>`), or a data directory holding them.
        dir: PathBuf,
    },
}

pub fn run(command: LogCommand) -> anyhow::Result<ExitCode> {
    let (dir, json) = match &command {
        LogCommand::Dump { dir, json } => (dir.clone(), *json),
        LogCommand::Verify { dir } => (dir.clone(), false),
    };
    let partitions = partition_dirs(&dir)?;
    let runtime = RuntimeConfig {
        io_memory_bytes: TOOL_IO_MEMORY_BYTES,
        ..RuntimeConfig::default()
    };
    let scans = rt::try_block_on(&runtime, scan::scan_partitions(partitions))
        .context("starting the I/O runtime")??;
    let mut out = String::new();
    let code = match command {
        LogCommand::Dump { .. } => {
            if json {
                out.push_str(&dump::to_json(&scans).context("writing the dump as JSON")?);
                out.push('\n');
            } else {
                for partition in &scans {
                    out.push_str(&dump::to_text(partition));
                }
            }
            ExitCode::SUCCESS
        }
        LogCommand::Verify { .. } => {
            let mut problem_count = 0;
            for partition in &scans {
                let report = verify::verify(partition);
                for note in &report.notes {
                    out.push_str(&format!("note: {note}\n"));
                }
                for problem in &report.problems {
                    out.push_str(&format!("{problem}\n"));
                }
                out.push_str(&format!("{}\n", report.summary));
                problem_count += report.problems.len();
            }
            if problem_count == 0 {
                out.push_str(&format!("verify: ok ({} partitions)\n", scans.len()));
                ExitCode::SUCCESS
            } else {
                out.push_str(&format!(
                    "verify: {problem_count} problems in {} partitions\n",
                    scans.len()
                ));
                ExitCode::from(EXIT_PROBLEMS_FOUND)
            }
        }
    };
    emit(&out)?;
    Ok(code)
}

/// Writes the output; a reader that went away (`| head`) is not an error.
fn emit(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(error).context("write to stdout")
        }
        _ => Ok(()),
    }
}

/// Whether `dir` looks like a partition directory: it holds a segment or a marker file.
fn is_partition_dir(dir: &Path) -> anyhow::Result<bool> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("list {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if parse_log_file_name(&name).is_some()
            || name == CLEAN_SHUTDOWN_FILE
            || name == LOG_START_OFFSET_FILE
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The partition directories to inspect: `dir` itself if it is one, else its subdirectories
/// that are, sorted by name.
fn partition_dirs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    if is_partition_dir(dir)? {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut partitions = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("list {}", dir.display()))?
            .path();
        if path.is_dir() && is_partition_dir(&path)? {
            partitions.push(path);
        }
    }
    partitions.sort();
    if partitions.is_empty() {
        bail!(
            "{} holds no segment files and no partition directories",
            dir.display()
        );
    }
    Ok(partitions)
}
