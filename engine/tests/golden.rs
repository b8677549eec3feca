//! Golden files pin the on-disk format: a sealed segment and its index checkpoint, built from
//! fixed batches, must match the committed bytes exactly. A deliberate format change regenerates
//! them with `RINGLOG_BLESS_GOLDEN=1` and updates docs/on-disk-format.md in the same commit.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use ringlog_engine::config::LogConfig;
use ringlog_engine::format::{build_batch, FrameHeader, FRAME_HEADER_BYTES};
use ringlog_engine::index::SegmentIndex;
use ringlog_engine::log::{LogOptions, PartitionLog};
use ringlog_engine::rt::{
    self,
    fs::Storage,
    sim::{FaultConfig, SimDisk},
};
use ringlog_engine::TopicPartition;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Builds the golden segment on a simulated disk and returns (segment bytes, index bytes).
fn build() -> (Vec<u8>, Vec<u8>) {
    rt::block_on(async {
        let disk = SimDisk::new(1, FaultConfig::default());
        let config = LogConfig {
            index_interval_bytes: 100,
            ..LogConfig::default()
        };
        let (log, _) = PartitionLog::open(LogOptions {
            storage: Storage::Sim(Rc::clone(&disk)),
            dir: PathBuf::from("/golden/t-0"),
            topic_partition: TopicPartition::new("t", 0),
            config,
            cache: None,
            auto_high_watermark: true,
            metrics: None,
        })
        .await
        .expect("open");
        let batches: [Bytes; 3] = [
            build_batch(1_700_000_000_000, &[(Some(b"key-0"), Some(b"value-0"))]),
            build_batch(
                1_700_000_000_500,
                &[(None, Some(b"value-1")), (Some(b"k"), None)],
            ),
            build_batch(1_700_000_001_000, &[(Some(b"key-3"), Some(&[0x42; 300]))]),
        ];
        for (epoch, batch) in batches.iter().enumerate() {
            log.append(batch, epoch as i32).await.expect("append");
        }
        log.roll().await.expect("seal");
        let segment = disk
            .durable_contents(Path::new("/golden/t-0/00000000000000000000.log"))
            .expect("segment");
        let index = disk
            .durable_contents(Path::new("/golden/t-0/00000000000000000000.index"))
            .expect("index");
        (segment, index)
    })
}

#[test]
fn segment_and_index_match_golden_files() {
    let (segment, index) = build();
    let segment_path = golden_dir().join("00000000000000000000.log");
    let index_path = golden_dir().join("00000000000000000000.index");
    if std::env::var_os("RINGLOG_BLESS_GOLDEN").is_some() {
        std::fs::write(&segment_path, &segment).expect("bless segment");
        std::fs::write(&index_path, &index).expect("bless index");
    }
    let golden_segment =
        std::fs::read(&segment_path).expect("golden segment (bless with RINGLOG_BLESS_GOLDEN=1)");
    let golden_index = std::fs::read(&index_path).expect("golden index");
    assert_eq!(
        segment, golden_segment,
        "segment bytes changed: the on-disk format moved"
    );
    assert_eq!(
        index, golden_index,
        "index bytes changed: the on-disk format moved"
    );

    // And the committed bytes decode as documented.
    let first = FrameHeader::decode(&golden_segment).expect("first frame header");
    assert_eq!(
        (first.base_offset, first.record_count, first.leader_epoch),
        (0, 1, 0)
    );
    let second =
        FrameHeader::decode(&golden_segment[first.frame_bytes() as usize..]).expect("second");
    assert_eq!(
        (
            second.base_offset,
            second.last_offset(),
            second.leader_epoch
        ),
        (1, 2, 1)
    );
    assert_eq!(second.max_timestamp, 1_700_000_000_500);
    assert_eq!(&golden_segment[0..4], b"RLF1");
    assert_eq!(golden_segment.len() as u64 % 8, 0);
    let payload =
        &golden_segment[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + first.payload_bytes as usize];
    assert_eq!(
        &payload[0..8],
        &0_i64.to_be_bytes(),
        "batch base offset patched, big-endian"
    );
    let (decoded, checkpoint) = SegmentIndex::decode(&golden_index, 100).expect("index decodes");
    assert_eq!(checkpoint.covered_position, golden_segment.len() as u64);
    assert_eq!(checkpoint.next_offset, 4);
    assert!(!decoded.entries().is_empty());
}
