//! What machine and disk a benchmark ran on, recorded with every result so numbers from
//! different machines are never compared by accident; and the check that the data directory
//! is on a real disk (a tmpfs would make every storage number meaningless).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};
use serde::Serialize;

/// `statfs` magic of tmpfs (linux/magic.h): memory, not a disk.
const TMPFS_MAGIC: i64 = 0x0102_1994;
/// `statfs` magic of ramfs (linux/magic.h): memory, not a disk.
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// The machine and the disk under test.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MachineInfo {
    pub nproc: usize,
    pub cpu_model: String,
    pub memory_total_kib: u64,
    pub kernel: String,
    /// The data directory's filesystem as `df -T` reports it: device, type, size.
    pub device: String,
    pub fs_type: String,
    pub fs_size_kib: u64,
    /// From sysfs for the device's disk: "write back" means fdatasync also flushes a volatile
    /// disk cache; "write through" means it does not need to.
    pub write_cache: String,
    pub rotational: String,
    pub scheduler: String,
}

impl MachineInfo {
    /// Describes this machine and the filesystem holding `dir` (which must exist).
    pub fn probe(dir: &Path) -> MachineInfo {
        let mut info = MachineInfo {
            nproc: std::thread::available_parallelism().map_or(0, |count| count.get()),
            cpu_model: first_field("/proc/cpuinfo", "model name").unwrap_or_default(),
            memory_total_kib: first_field("/proc/meminfo", "MemTotal")
                .and_then(|value| {
                    value
                        .split_whitespace()
                        .next()
                        .and_then(|kib| kib.parse().ok())
                })
                .unwrap_or(0),
            kernel: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
            ..MachineInfo::default()
        };
        if let Some((device, fs_type, size_kib)) = df(dir) {
            let disk = device.trim_start_matches("/dev/").to_string();
            let queue = format!("/sys/block/{disk}/queue");
            info.write_cache = read_trimmed(&format!("{queue}/write_cache")).unwrap_or_default();
            info.rotational = read_trimmed(&format!("{queue}/rotational")).unwrap_or_default();
            info.scheduler = read_trimmed(&format!("{queue}/scheduler")).unwrap_or_default();
            info.device = device;
            info.fs_type = fs_type;
            info.fs_size_kib = size_kib;
        }
        info
    }
}

/// Refuses a directory whose filesystem lives in memory.
pub fn ensure_on_disk(dir: &Path) -> anyhow::Result<()> {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .with_context(|| format!("path {} contains a NUL byte", dir.display()))?;
    // SAFETY: all-zeroes is a valid statfs value to be overwritten.
    let mut stats: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `stats` is valid and writable.
    if unsafe { libc::statfs(path.as_ptr(), &mut stats) } != 0 {
        let error = std::io::Error::last_os_error();
        bail!("statfs {}: {error}", dir.display());
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between libc targets
    let magic = stats.f_type as i64;
    if magic == TMPFS_MAGIC || magic == RAMFS_MAGIC {
        bail!(
            "{} is on a memory filesystem; pass --dir on the disk to measure",
            dir.display()
        );
    }
    Ok(())
}

/// `df -T -P -k dir`: (device, filesystem type, size in KiB).
fn df(dir: &Path) -> Option<(String, String, u64)> {
    let output = Command::new("df")
        .args(["-T", "-P", "-k"])
        .arg(dir)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().nth(1)?;
    let mut fields = line.split_whitespace();
    let device = fields.next()?.to_string();
    let fs_type = fields.next()?.to_string();
    let size_kib = fields.next()?.parse().ok()?;
    Some((device, fs_type, size_kib))
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_string())
}

/// The value of the first `key: value` line of a /proc file.
fn first_field(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name.trim() == key).then(|| value.trim().to_string())
    })
}

/// The load averages from /proc/loadavg ("1-min 5-min 15-min running/total last-pid").
pub fn load_average() -> String {
    read_trimmed("/proc/loadavg").unwrap_or_default()
}
