//! The broker's CPU time and resident memory, read from /proc for a PID the user names, so the
//! benchmark can report CPU-seconds per GB and show whether memory stays flat.

use std::fs;

use anyhow::{anyhow, Context};

/// One reading of a process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcSample {
    /// User + system CPU seconds since the process started (all threads).
    pub cpu_seconds: f64,
    pub rss_kib: u64,
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`.
pub fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (is the broker running?)"))?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    Ok(ProcSample {
        cpu_seconds: cpu_seconds(&stat, clock_ticks_per_second())?,
        rss_kib: rss_kib(&status)?,
    })
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// utime + stime (fields 14 and 15) of a stat line. The command name (field 2) is in
/// parentheses and may contain spaces, so fields are counted after the last ')'.
fn cpu_seconds(stat: &str, ticks_per_second: f64) -> anyhow::Result<f64> {
    let after_name = stat
        .rfind(')')
        .map(|end| &stat[end + 1..])
        .ok_or_else(|| anyhow!("unexpected /proc stat line"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Field 3 (state) is fields[0], so field N is fields[N - 3].
    let ticks = |field: usize| -> anyhow::Result<f64> {
        fields
            .get(field - 3)
            .and_then(|value| value.parse::<u64>().ok())
            .map(|value| value as f64)
            .ok_or_else(|| anyhow!("unexpected /proc stat line"))
    };
    Ok((ticks(14)? + ticks(15)?) / ticks_per_second)
}

fn rss_kib(status: &str) -> anyhow::Result<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let stat = "1234 (ring log) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 \
                    100 1000000 500 18446744073709551615";
        assert!((cpu_seconds(stat, 100.0).expect("parses") - 3.0).abs() < 1e-9);
        assert!(cpu_seconds("garbage", 100.0).is_err());
    }

    #[test]
    fn parses_rss() {
        let status = "Name:\tringlog\nVmPeak:\t 999 kB\nVmRSS:\t   20480 kB\n";
        assert_eq!(rss_kib(status).expect("parses"), 20480);
        assert!(rss_kib("Name: x\n").is_err());
    }

    #[test]
    fn samples_this_process() {
        let me = sample(std::process::id()).expect("reads /proc/self");
        assert!(me.rss_kib > 0);
    }
}
