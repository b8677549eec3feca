//! Read throughput: reading back what an append case wrote, in consumer-sized fetches, either
//! from the shard's batch cache (a tailing consumer) or from a fresh log instance without a
//! cache (a consumer catching up: direct I/O with the log's read-ahead). Every batch read is
//! checked for its size and offset, and optionally its CRC.

use std::time::Instant;

use anyhow::{ensure, Context};
use ringlog_engine::format::validate_batch;
use ringlog_engine::log::{PartitionLog, ReadLimit};
use serde::Serialize;

use crate::measure::{cpu_percent, mb_per_s, per_second, thread_cpu};
use crate::watchdog;

/// The batch cache charges some bookkeeping per batch on top of its bytes (96 bytes today);
/// planning with a larger figure keeps the cached read inside what is surely still cached.
const CACHE_ENTRY_OVERHEAD_BYTES_PLANNED: usize = 256;

/// Fraction of the cache budget a cached read plans to use, for the same reason.
const CACHE_BUDGET_FRACTION_PLANNED: f64 = 0.9;

/// Byte offsets of two fields of a Kafka v2 RecordBatch header (KIP-98 layout).
const BATCH_BASE_OFFSET_AT: usize = 0;
const BATCH_LAST_OFFSET_DELTA_AT: usize = 23;

/// How reads are issued.
#[derive(Clone, Debug)]
pub struct ReadSettings {
    /// `max_bytes` of each read, like a consumer's fetch size.
    pub fetch_bytes: usize,
    /// Check each batch's CRC-32C.
    pub verify: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadKind {
    /// From the batch cache, right after the appends.
    Cached,
    /// From disk, through a new log instance without a cache.
    Cold,
}

impl ReadKind {
    pub fn label(self) -> &'static str {
        match self {
            ReadKind::Cached => "cached (tail)",
            ReadKind::Cold => "cold (disk)",
        }
    }
}

/// One read-back.
#[derive(Clone, Debug, Serialize)]
pub struct ReadResult {
    /// Which round of the run this is (set by the caller).
    pub round: usize,
    /// The watchdog had to wake a stalled shard during this case (set by the caller): the
    /// numbers include the stall and are left out of the summary.
    pub stalled: bool,
    pub block_bytes: usize,
    pub kind: ReadKind,
    pub fetch_bytes: usize,
    pub batches: u64,
    pub bytes: u64,
    pub secs: f64,
    pub mb_per_s: f64,
    pub batches_per_s: f64,
    pub reads: u64,
    /// Reads the log answered from its batch cache.
    pub reads_from_cache: u64,
    pub shard_cpu_percent: f64,
}

/// The first offset of the tail that a cache of `cache_bytes` surely still holds after
/// one-record batches of `block_bytes` were appended up to `end_offset`.
pub fn first_cached_offset(end_offset: i64, block_bytes: usize, cache_bytes: usize) -> i64 {
    let budget = cache_bytes as f64 * CACHE_BUDGET_FRACTION_PLANNED;
    let cached_batches =
        (budget / (block_bytes + CACHE_ENTRY_OVERHEAD_BYTES_PLANNED) as f64) as i64;
    (end_offset - cached_batches).max(0)
}

/// Reads from `from_offset` to the high watermark, again and again until at least
/// `bytes_min` were read (a cached tail is small and fast; one pass would time microseconds),
/// and reports the rate.
pub async fn read_back(
    log: &PartitionLog,
    from_offset: i64,
    block_bytes: usize,
    settings: &ReadSettings,
    kind: ReadKind,
    bytes_min: u64,
) -> anyhow::Result<ReadResult> {
    let end = log.high_watermark();
    let mut offset = from_offset;
    let mut batches = 0_u64;
    let mut bytes = 0_u64;
    let mut reads = 0_u64;
    let mut reads_from_cache = 0_u64;
    let cpu_started = thread_cpu();
    let started = Instant::now();
    loop {
        if offset >= end {
            if bytes >= bytes_min || from_offset >= end {
                break;
            }
            offset = from_offset;
        }
        let read = log
            .read(offset, settings.fetch_bytes, ReadLimit::HighWatermark)
            .await
            .with_context(|| format!("reading offset {offset}"))?;
        ensure!(
            !read.batches.is_empty(),
            "empty read at offset {offset} below {end}"
        );
        reads += 1;
        watchdog::tick();
        reads_from_cache += u64::from(read.from_cache);
        for batch in &read.batches {
            ensure!(
                batch.len() == block_bytes,
                "batch at {offset} has {} bytes",
                batch.len()
            );
            let base_offset = i64::from_be_bytes(field(batch, BATCH_BASE_OFFSET_AT));
            ensure!(
                base_offset == offset,
                "batch at {offset} says it starts at {base_offset}"
            );
            if settings.verify {
                validate_batch(batch).with_context(|| format!("batch at {offset}"))?;
            }
            let last_offset_delta = i32::from_be_bytes(field(batch, BATCH_LAST_OFFSET_DELTA_AT));
            offset += i64::from(last_offset_delta) + 1;
            bytes += batch.len() as u64;
            batches += 1;
        }
        ensure!(
            read.next_offset == offset,
            "read ended at {} but batches at {offset}",
            read.next_offset
        );
    }
    let elapsed = started.elapsed();
    Ok(ReadResult {
        round: 0,
        stalled: false,
        block_bytes,
        kind,
        fetch_bytes: settings.fetch_bytes,
        batches,
        bytes,
        secs: elapsed.as_secs_f64(),
        mb_per_s: mb_per_s(bytes, elapsed),
        batches_per_s: per_second(batches as f64, elapsed),
        reads,
        reads_from_cache,
        shard_cpu_percent: cpu_percent(thread_cpu() - cpu_started, elapsed),
    })
}

/// The `N` bytes at `at` of a batch whose size was already checked to hold them.
fn field<const N: usize>(batch: &[u8], at: usize) -> [u8; N] {
    let mut bytes = [0_u8; N];
    bytes.copy_from_slice(&batch[at..at + N]);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_tail_fits_the_budget() {
        // 1 GiB of cache holds all of 512 MiB of 256 KiB batches.
        assert_eq!(first_cached_offset(2048, 256 * 1024, 1 << 30), 0);
        // 64 MiB does not: only the newest ~230 batches are read.
        let from = first_cached_offset(2048, 256 * 1024, 64 << 20);
        assert!(from > 2048 - 256 && from < 2048 - 200, "{from}");
    }
}
