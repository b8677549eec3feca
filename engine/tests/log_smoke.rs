//! Smoke test of a partition log on the real disk: append, read back, clean restart, crash-style
//! reopen.

use ringlog_engine::config::LogConfig;
use ringlog_engine::format::build_batch;
use std::rc::Rc;

use ringlog_engine::log::{LogOptions, PartitionLog, ReadLimit};
use ringlog_engine::metrics::StorageMetrics;
use ringlog_engine::rt::{self, fs::Storage};
use ringlog_engine::TopicPartition;

fn options(dir: &std::path::Path, config: LogConfig) -> LogOptions {
    LogOptions {
        storage: Storage::Real,
        dir: dir.join("t-0"),
        topic_partition: TopicPartition::new("t", 0),
        config,
        cache: None,
        auto_high_watermark: true,
        metrics: None,
    }
}

#[test]
fn every_group_commit_fdatasync_is_timed() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().to_path_buf();
    rt::block_on(async move {
        Storage::Real.prime_data_dir(&dir).await.expect("prime");
        let metrics = Rc::new(StorageMetrics::default());
        let (log, _) = PartitionLog::open(LogOptions {
            metrics: Some(Rc::clone(&metrics)),
            ..options(&dir, LogConfig::default())
        })
        .await
        .expect("open");
        assert_eq!(metrics.fsync_latency.snapshot().count(), 0);
        for index in 0..3_i64 {
            let batch = build_batch(index, &[(Some(b"key"), Some(b"value"))]);
            log.append(&batch, 0).await.expect("append");
        }
        // flush.messages=1: each sequential append waits for its own fdatasync.
        let fsyncs = metrics.fsync_latency.snapshot();
        assert_eq!(fsyncs.count(), 3, "{fsyncs:?}");
        assert!(fsyncs.sum_us > 0, "{fsyncs:?}");
        log.close().await.expect("close");
    });
}

#[test]
fn append_read_restart_on_real_disk() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().to_path_buf();
    let config = LogConfig {
        segment_bytes: 64 * 1024,
        ..LogConfig::default()
    };
    rt::block_on(async move {
        Storage::Real.prime_data_dir(&dir).await.expect("prime");
        let (log, recovery) = PartitionLog::open(options(&dir, config.clone()))
            .await
            .expect("open");
        assert_eq!(recovery.segments, 1);
        let mut expected = Vec::new();
        for index in 0..200_u32 {
            let value = vec![index as u8; 700];
            let batch = build_batch(
                1_000 + i64::from(index),
                &[(Some(b"key"), Some(&value)), (None, None)],
            );
            let appended = log.append(&batch, 0).await.expect("append");
            assert_eq!(appended.base_offset, i64::from(index) * 2);
            expected.push(batch);
        }
        assert!(log.segment_count() > 1, "64 KiB segments rolled");
        assert_eq!(log.high_watermark(), 400);
        assert_eq!(read_all(&log).await, 200);
        let found = log.offset_for_timestamp(1_150).await.expect("by time");
        assert_eq!(found, Some((300, 1_150)));
        log.close().await.expect("close");
        drop(log);
        let (log, recovery) = PartitionLog::open(options(&dir, config.clone()))
            .await
            .expect("reopen");
        assert!(recovery.clean_shutdown);
        assert_eq!(log.log_end_offset(), 400);
        assert_eq!(read_all(&log).await, 200);
        // Reopen without close: unclean recovery scans the active segment.
        let batch = build_batch(5_000, &[(None, Some(b"after restart"))]);
        assert_eq!(
            log.append(&batch, 1).await.expect("append").base_offset,
            400
        );
        drop(log);
        let (log, recovery) = PartitionLog::open(options(&dir, config.clone()))
            .await
            .expect("reopen");
        assert!(!recovery.clean_shutdown);
        assert_eq!(log.log_end_offset(), 401);
        let read = log
            .read(400, 1, ReadLimit::HighWatermark)
            .await
            .expect("read");
        assert_eq!(read.batches.len(), 1);
    });
}

/// Reads the whole log from offset 0, checking each batch, and returns the batch count.
async fn read_all(log: &PartitionLog) -> usize {
    let mut offset = 0;
    let mut count = 0;
    while offset < log.high_watermark() {
        let read = log
            .read(offset, 10_000, ReadLimit::HighWatermark)
            .await
            .expect("read");
        assert!(!read.batches.is_empty());
        for batch in &read.batches {
            let info = ringlog_engine::format::validate_batch(batch).expect("valid batch");
            assert_eq!(info.base_offset, offset);
            offset = info.base_offset + i64::from(info.records_count);
            count += 1;
        }
    }
    count
}

/// Bytes of each batch the broker never changes: everything from `attributes` on (the base
/// offset and the CRC-covered header fields before it are patched or fixed on append).
const CLIENT_BYTES_FROM: usize = 21;

/// Reads back every `(base offset, batch)` in `acked` and compares the client's bytes.
async fn assert_acked_intact(log: &PartitionLog, acked: &[(i64, bytes::Bytes)]) {
    for (base_offset, batch) in acked {
        let read = log
            .read(*base_offset, 1, ReadLimit::HighWatermark)
            .await
            .expect("read acknowledged batch");
        let got = read
            .batches
            .first()
            .expect("a batch at an acknowledged offset");
        assert_eq!(
            &got[CLIENT_BYTES_FROM..],
            &batch[CLIENT_BYTES_FROM..],
            "batch at {base_offset} changed"
        );
    }
}

/// Appends `batches` batches of `value_bytes` from `appenders` concurrent tasks (so flushes
/// are shared and small), returning every acknowledgement and the longest zeroed runway seen.
async fn append_concurrently(
    log: &std::rc::Rc<PartitionLog>,
    appenders: u32,
    batches: u32,
    value_bytes: usize,
    round: u32,
) -> (Vec<(i64, bytes::Bytes)>, u64) {
    let mut tasks = Vec::new();
    for appender in 0..appenders {
        let log = std::rc::Rc::clone(log);
        tasks.push(rt::spawn(rt::TaskClass::Latency, async move {
            let mut acked = Vec::new();
            let mut runway_max = 0;
            for sequence in 0..batches {
                let value = format!("{round}/{appender}/{sequence}/")
                    .repeat(value_bytes / 8)
                    .into_bytes();
                let batch = build_batch(i64::from(sequence), &[(None, Some(&value))]);
                let appended = log.append(&batch, 0).await.expect("append");
                acked.push((appended.base_offset, batch));
                runway_max = runway_max.max(log.zeroed_ahead_bytes());
            }
            (acked, runway_max)
        }));
    }
    let mut all = Vec::new();
    let mut runway_max = 0;
    for task in tasks {
        let (acked, seen) = task.await;
        all.extend(acked);
        runway_max = runway_max.max(seen);
    }
    (all, runway_max)
}

/// Small concurrent flushes make the active segment zero ahead of its appends; none of those
/// zero writes may land on data, across truncation, a clean restart and a crash-style reopen.
/// Large flushes do not zero at all.
#[test]
fn zeroes_ahead_of_small_flushes_and_never_over_data() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().to_path_buf();
    let config = LogConfig {
        segment_bytes: 16 * 1024 * 1024,
        ..LogConfig::default()
    };
    let large_flush_config = config.clone();
    rt::block_on(async move {
        Storage::Real.prime_data_dir(&dir).await.expect("prime");
        let (log, _) = PartitionLog::open(options(&dir, config.clone()))
            .await
            .expect("open");
        let log = std::rc::Rc::new(log);
        // ~3 MiB in ~6 KiB batches: past the 1 MiB where a segment starts zeroing.
        let (mut acked, runway_max) = append_concurrently(&log, 4, 128, 6000, 0).await;
        assert!(
            runway_max >= ringlog_engine::segment::ZERO_CHUNK_BYTES / 2,
            "small flushes zero ahead (longest runway seen: {runway_max} bytes)"
        );
        assert_acked_intact(&log, &acked).await;

        // Cut the log in the middle and keep appending: the runway restarts behind the cut.
        acked.sort_by_key(|(offset, _)| *offset);
        let cut = acked[acked.len() / 2].0;
        assert_eq!(log.truncate_to(cut).await.expect("truncate"), cut);
        acked.retain(|(offset, _)| *offset < cut);
        let (more, _) = append_concurrently(&log, 4, 64, 6000, 1).await;
        acked.extend(more);
        assert_acked_intact(&log, &acked).await;
        log.close().await.expect("close");
        drop(log);

        let (log, recovery) = PartitionLog::open(options(&dir, config.clone()))
            .await
            .expect("reopen");
        assert!(recovery.clean_shutdown);
        let log = std::rc::Rc::new(log);
        assert_acked_intact(&log, &acked).await;
        let (more, _) = append_concurrently(&log, 4, 64, 6000, 2).await;
        acked.extend(more);
        drop(log);

        // Crash-style reopen: recovery scans past the data into the zeroed runway.
        let (log, recovery) = PartitionLog::open(options(&dir, config.clone()))
            .await
            .expect("reopen after crash");
        assert!(!recovery.clean_shutdown);
        assert_acked_intact(&log, &acked).await;
        assert_eq!(read_all(&log).await, acked.len());
        log.close().await.expect("close");
    });

    // One appender with 256 KiB batches: every flush is large, so no zeroing.
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().to_path_buf();
    rt::block_on(async move {
        Storage::Real.prime_data_dir(&dir).await.expect("prime");
        let (log, _) = PartitionLog::open(options(&dir, large_flush_config))
            .await
            .expect("open");
        let log = std::rc::Rc::new(log);
        let (acked, runway_max) = append_concurrently(&log, 1, 16, 256 * 1024, 0).await;
        assert_eq!(runway_max, 0, "large flushes do not zero ahead");
        assert_acked_intact(&log, &acked).await;
        log.close().await.expect("close");
    });
}

/// Many busy partitions on one shard share at most `ZERO_WRITES_PER_SHARD_MAX` zero writes in
/// flight (each holds a 1 MiB buffer), and all of them still read back intact.
#[test]
fn zero_writes_in_flight_are_bounded_per_shard() {
    use ringlog_engine::segment::{zero_writes_in_flight_peak, ZERO_WRITES_PER_SHARD_MAX};
    const LOGS: u32 = 16;
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().to_path_buf();
    rt::block_on(async move {
        Storage::Real.prime_data_dir(&dir).await.expect("prime");
        let mut logs = Vec::new();
        for index in 0..LOGS {
            let config = LogConfig {
                segment_bytes: 16 * 1024 * 1024,
                ..LogConfig::default()
            };
            let mut options = options(&dir, config);
            options.dir = dir.join(format!("t-{index}"));
            options.topic_partition = TopicPartition::new("t", index as i32);
            let (log, _) = PartitionLog::open(options).await.expect("open");
            logs.push(std::rc::Rc::new(log));
        }
        let mut tasks = Vec::new();
        for log in &logs {
            let log = std::rc::Rc::clone(log);
            tasks.push(rt::spawn(rt::TaskClass::Latency, async move {
                let (acked, runway) = append_concurrently(&log, 2, 160, 6000, 0).await;
                (log, acked, runway)
            }));
        }
        let mut zeroed_logs = 0;
        for task in tasks {
            let (log, acked, runway) = task.await;
            assert_acked_intact(&log, &acked).await;
            zeroed_logs += usize::from(runway > 0);
            log.close().await.expect("close");
        }
        let peak = zero_writes_in_flight_peak();
        assert!(
            (2..=ZERO_WRITES_PER_SHARD_MAX).contains(&peak),
            "{peak} zero writes in flight at once (the logs zero concurrently, up to the bound)"
        );
        assert!(zeroed_logs > 0, "some of the busy logs zeroed ahead");
    });
}
