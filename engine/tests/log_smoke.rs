//! Smoke test of a partition log on the real disk: append, read back, clean restart, crash-style
//! reopen.

use ringlog_engine::config::LogConfig;
use ringlog_engine::format::build_batch;
use ringlog_engine::log::{LogOptions, PartitionLog, ReadLimit};
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
    }
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
