//! Property test: random sequences of append / read / truncate / roll / retention /
//! DeleteRecords / clean restart / crash, run against a partition log on the simulated disk and
//! against a simple in-memory model. Every read must match the model exactly.

use std::path::PathBuf;
use std::rc::Rc;

use bytes::Bytes;
use proptest::prelude::*;
use ringlog_engine::cache::BatchCache;
use ringlog_engine::config::LogConfig;
use ringlog_engine::format::{build_batch, patch_batch, validate_batch};
use ringlog_engine::log::{now_ms, LogOptions, PartitionLog, ReadLimit};
use ringlog_engine::rt::{
    self,
    fs::Storage,
    sim::{FaultConfig, SimDisk},
};
use ringlog_engine::{Error, TopicPartition};

#[derive(Clone, Debug)]
enum Op {
    Append { value_sizes: Vec<usize> },
    Read { pick: u64, max_bytes: usize },
    Truncate { pick: u64 },
    Roll,
    DeleteRecords { pick: u64 },
    RetentionBytes { keep_bytes: i64 },
    CleanRestart,
    Crash,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(0_usize..3000, 1..4).prop_map(|value_sizes| Op::Append { value_sizes }),
        4 => (any::<u64>(), 1_usize..20_000).prop_map(|(pick, max_bytes)| Op::Read { pick, max_bytes }),
        1 => any::<u64>().prop_map(|pick| Op::Truncate { pick }),
        1 => Just(Op::Roll),
        1 => any::<u64>().prop_map(|pick| Op::DeleteRecords { pick }),
        1 => (0_i64..40_000).prop_map(|keep_bytes| Op::RetentionBytes { keep_bytes }),
        1 => Just(Op::CleanRestart),
        1 => Just(Op::Crash),
    ]
}

/// The model: every batch in the log with the bytes a read must return.
#[derive(Default)]
struct Model {
    batches: Vec<(i64, i64, Bytes)>,
    log_start: i64,
    log_end: i64,
}

impl Model {
    fn batch_holding(&self, offset: i64) -> Option<usize> {
        self.batches
            .iter()
            .position(|(base, last, _)| *base <= offset && offset <= *last)
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 8192,
        index_interval_bytes: 512,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

async fn open(disk: &Rc<SimDisk>, cache: &Rc<BatchCache>, config: LogConfig) -> PartitionLog {
    let options = LogOptions {
        storage: Storage::Sim(Rc::clone(disk)),
        dir: PathBuf::from("/data/topic-0"),
        topic_partition: TopicPartition::new("topic", 0),
        config,
        cache: Some(Rc::clone(cache)),
        auto_high_watermark: true,
        metrics: None,
    };
    PartitionLog::open(options).await.expect("open").0
}

/// Reads the whole log with a given `max_bytes` and compares it batch by batch with the model.
async fn check_everything(log: &PartitionLog, model: &Model, max_bytes: usize) {
    assert_eq!(log.log_end_offset(), model.log_end, "log end offset");
    assert_eq!(log.log_start_offset(), model.log_start, "log start offset");
    assert_eq!(
        log.high_watermark(),
        model.log_end,
        "high watermark on a single node"
    );
    let mut offset = model.log_start;
    let mut index = model.batch_holding(offset).unwrap_or(model.batches.len());
    while offset < model.log_end {
        let read = log
            .read(offset, max_bytes, ReadLimit::HighWatermark)
            .await
            .expect("read");
        assert!(
            !read.batches.is_empty(),
            "read at {offset} returned nothing"
        );
        for batch in &read.batches {
            let (base, last, expected) = &model.batches[index];
            assert_eq!(batch, expected, "batch at base offset {base}");
            validate_batch(batch).expect("every batch read back is valid");
            offset = last + 1;
            index += 1;
        }
        assert_eq!(read.next_offset, offset);
    }
}

async fn run(ops: Vec<Op>, seed: u64) {
    let disk = SimDisk::new(seed, FaultConfig::default());
    // A small cache so that reads exercise both the cache and the disk.
    let cache = BatchCache::new(16 * 1024);
    let mut log = open(&disk, &cache, config()).await;
    let mut model = Model::default();
    let mut timestamp = 1_000_i64;
    for op in ops {
        match op {
            Op::Append { value_sizes } => {
                let mut records = Vec::new();
                let mut expected = Vec::new();
                let mut offset = model.log_end;
                for size in value_sizes {
                    timestamp += 1;
                    let value = vec![(timestamp % 251) as u8; size];
                    let batch =
                        build_batch(timestamp, &[(Some(b"k"), Some(&value)), (None, Some(b"v"))]);
                    expected.push((offset, offset + 1, patch_batch(&batch, offset, 0).freeze()));
                    offset += 2;
                    records.extend_from_slice(&batch);
                }
                let appended = log.append(&Bytes::from(records), 0).await.expect("append");
                assert_eq!(appended.base_offset, model.log_end);
                assert_eq!(appended.last_offset, offset - 1);
                model.batches.extend(expected);
                model.log_end = offset;
            }
            Op::Read { pick, max_bytes } => {
                let span = (model.log_end - model.log_start + 1) as u64;
                let offset = model.log_start + (pick % span) as i64;
                let read = log
                    .read(offset, max_bytes, ReadLimit::HighWatermark)
                    .await
                    .expect("read");
                if offset == model.log_end {
                    assert!(read.batches.is_empty());
                    continue;
                }
                let first = model.batch_holding(offset).expect("model holds the offset");
                let mut total = 0;
                for (position, batch) in read.batches.iter().enumerate() {
                    assert_eq!(batch, &model.batches[first + position].2);
                    total += batch.len();
                    assert!(
                        position == 0 || total <= max_bytes,
                        "max_bytes respected after the first batch"
                    );
                }
                // A read may stop early at a segment boundary, so only the minimum is checked.
                assert!(!read.batches.is_empty(), "at least one batch");
            }
            Op::Truncate { pick } => {
                let span = (model.log_end - model.log_start + 1) as u64;
                let target = model.log_start + (pick % span) as i64;
                let new_end = log.truncate_to(target).await.expect("truncate");
                let keep = model
                    .batches
                    .iter()
                    .position(|(_, last, _)| *last >= target)
                    .unwrap_or(model.batches.len());
                model.batches.truncate(keep);
                model.log_end = model
                    .batches
                    .last()
                    .map_or(model.log_start.min(target), |(_, last, _)| last + 1);
                if model.batches.is_empty() {
                    model.log_end = new_end;
                }
                assert_eq!(new_end, model.log_end, "truncate_to({target})");
                model.log_start = model.log_start.min(model.log_end);
            }
            Op::Roll => log.roll().await.expect("roll"),
            Op::DeleteRecords { pick } => {
                let span = (model.log_end - model.log_start + 1) as u64;
                let target = model.log_start + (pick % span) as i64;
                let start = log.delete_records(target).await.expect("delete records");
                assert_eq!(start, target);
                model.log_start = target;
                model.batches.retain(|(_, last, _)| *last >= target);
                let beyond = log.delete_records(model.log_end + 1).await;
                assert!(matches!(beyond, Err(Error::OffsetOutOfRange { .. })));
            }
            Op::RetentionBytes { keep_bytes } => {
                let mut config = config();
                config.retention_bytes = keep_bytes;
                log.set_config(config);
                let before = log.size_bytes();
                let report = log.apply_retention(now_ms()).await.expect("retention");
                let start = log.log_start_offset();
                assert!(start >= model.log_start);
                assert!(
                    start == model.log_end
                        || model.batches.iter().any(|(base, _, _)| *base == start)
                        || start == model.log_start
                );
                assert_eq!(log.size_bytes(), before - report.bytes_deleted);
                if report.segments_deleted > 0 {
                    assert!(log.size_bytes() as i64 >= keep_bytes.min(log.size_bytes() as i64));
                }
                model.log_start = start;
                model.batches.retain(|(_, last, _)| *last >= start);
                log.set_config(self::config());
            }
            Op::CleanRestart => {
                log.close().await.expect("close");
                drop(log);
                log = open(&disk, &cache, config()).await;
            }
            Op::Crash => {
                disk.crash();
                drop(log);
                disk.power_loss();
                log = open(&disk, &cache, config()).await;
            }
        }
        // After every operation the boundary offsets agree with the model.
        assert_eq!(log.log_end_offset(), model.log_end);
        assert_eq!(log.log_start_offset(), model.log_start);
    }
    if std::env::var_os("RINGLOG_MODEL_STATS").is_some() {
        eprintln!(
            "model case: log end {} start {} batches {}",
            model.log_end,
            model.log_start,
            model.batches.len()
        );
    }
    check_everything(&log, &model, 1).await;
    check_everything(&log, &model, 10_000).await;
    disk.crash();
    drop(log);
    disk.power_loss();
    let log = open(&disk, &cache, config()).await;
    check_everything(&log, &model, 5_000).await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(ops in prop::collection::vec(op_strategy(), 1..60), seed in any::<u64>()) {
        rt::block_on(run(ops, seed));
    }
}
