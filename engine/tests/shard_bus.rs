//! Two shards on the real disk, talking over the cross-core bus with the engine's named shard
//! messages: partitions placed over both shards, appends and reads batched one message per
//! destination shard, and a corrupt partition that goes offline while the others keep working.

use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::Bytes;
use ringlog_engine::bus::BusBuilder;
use ringlog_engine::config::LogConfig;
use ringlog_engine::format::{build_batch, validate_batch};
use ringlog_engine::log::ReadLimit;
use ringlog_engine::rt::{self, fs::Storage, RuntimeConfig};
use ringlog_engine::shard::table::ShardTable;
use ringlog_engine::shard::{
    AppendBatches, CreatePartitions, PartitionAppend, PartitionRead, ReadPartitions, Shard,
    ShardConfig, ShardRequest, ShardResponse,
};
use ringlog_engine::{Error, ShardId, TopicPartition};

const SHARD_COUNT: usize = 2;
const PARTITION_COUNT: i32 = 6;
const ROUNDS: u32 = 50;

fn placement() -> ShardTable {
    // The same deterministic placement on every shard (a controller will own this later).
    let mut table = ShardTable::new(SHARD_COUNT);
    let mut update = ringlog_engine::shard::table::ShardTableUpdate {
        version: 1,
        assign: Vec::new(),
        remove: Vec::new(),
    };
    for partition in 0..PARTITION_COUNT {
        let tp = TopicPartition::new("orders", partition);
        update
            .assign
            .push((tp, ShardId((partition % SHARD_COUNT as i32) as u16)));
    }
    let _ = table.apply(&update);
    table
}

#[test]
fn partitions_on_both_shards_served_over_the_bus() {
    let temp = tempfile::tempdir().expect("tempdir");
    let data_dir = temp.path().to_path_buf();
    // Damage a partition before start: a sealed segment with a flipped byte mid-log.
    rt::block_on({
        let data_dir = data_dir.clone();
        async move {
            Storage::Real
                .prime_data_dir(&data_dir)
                .await
                .expect("prime");
            let shard = Shard::new(
                ShardId(0),
                Storage::Real,
                ShardConfig::new(&data_dir),
                ShardTable::new(1),
            );
            let config = LogConfig {
                segment_bytes: 4096,
                ..LogConfig::default()
            };
            let tp = TopicPartition::new("broken", 0);
            let log = shard.open_partition(&tp, config).await.expect("create");
            for index in 0..20 {
                log.append(&build_batch(index, &[(None, Some(&[7_u8; 500]))]), 0)
                    .await
                    .expect("append");
            }
            log.close().await.expect("close");
        }
    });
    let first_segment = data_dir.join("broken-0").join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&first_segment).expect("segment");
    bytes[200] ^= 0xff;
    std::fs::write(&first_segment, bytes).expect("damage");

    let config = RuntimeConfig {
        shard_count: Some(SHARD_COUNT),
        name: "shard-bus".into(),
        ..RuntimeConfig::default()
    };
    let builder = BusBuilder::<ShardRequest, ShardResponse>::new(SHARD_COUNT);
    let outputs = rt::run_shards(&config, move |context| {
        let builder = builder.clone();
        let data_dir = data_dir.clone();
        async move {
            Storage::Real.prime_data_dir(&data_dir).await.expect("prime");
            let shard = Shard::new(context.shard_id, Storage::Real, ShardConfig::new(&data_dir), placement());
            let bus = builder.join(&context).await.expect("join");
            let serving = Rc::clone(&shard);
            bus.serve(move |from, request| Rc::clone(&serving).handle(from, request));
            let mut summary = String::new();
            if context.shard_id == ShardId(0) {
                let table = shard.table();
                let partitions: Vec<TopicPartition> =
                    (0..PARTITION_COUNT).map(|p| TopicPartition::new("orders", p)).collect();
                // Create: one message per destination shard.
                for (to, group) in & table.group_by_shard(partitions.iter()).by_shard {
                    let request = CreatePartitions { partitions: group.iter().map(|tp| (tp.clone(), LogConfig::default())).collect() };
                    match bus.call(*to, ShardRequest::CreatePartitions(request)).await.expect("call") {
                        ShardResponse::CreatePartitions(results) => {
                            assert!(results.iter().all(|(_, result)| result.is_ok()))
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
                // Append ROUNDS batches to every partition, one bus message per shard per round.
                let mut messages = 0;
                let mut expected: BTreeMap<TopicPartition, Vec<Bytes>> = BTreeMap::new();
                for round in 0..ROUNDS {
                    for (to, group) in & table.group_by_shard(partitions.iter()).by_shard {
                        let appends = group
                            .iter()
                            .map(|tp| {
                                let value = format!("{tp} round {round}");
                                let records = build_batch(i64::from(round), &[(None, Some(value.as_bytes()))]);
                                expected.entry(tp.clone()).or_default().push(records.clone());
                                PartitionAppend { partition: tp.clone(), records, leader_epoch: 0 }
                            })
                            .collect();
                        messages += 1;
                        match bus.call(*to, ShardRequest::AppendBatches(AppendBatches { appends })).await.expect("call") {
                            ShardResponse::AppendBatches(results) => {
                                for (_, result) in results {
                                    assert_eq!(result.expect("append").base_offset, i64::from(round));
                                }
                            }
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                }
                // Read everything back through the bus.
                for (to, group) in & table.group_by_shard(partitions.iter()).by_shard {
                    let reads = group
                        .iter()
                        .map(|tp| PartitionRead { partition: tp.clone(), offset: 0, max_bytes: 1 << 20, limit: ReadLimit::HighWatermark })
                        .collect();
                    match bus.call(*to, ShardRequest::ReadPartitions(ReadPartitions { reads })).await.expect("call") {
                        ShardResponse::ReadPartitions(results) => {
                            for (tp, result) in results {
                                let read = result.expect("read");
                                assert_eq!(read.batches.len(), ROUNDS as usize, "{tp}");
                                for (batch, original) in read.batches.iter().zip(&expected[&tp]) {
                                    // Same bytes as sent except the broker-assigned fields.
                                    assert_eq!(batch[21..], original[21..]);
                                    validate_batch(batch).expect("valid");
                                }
                            }
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
                // The corrupt partition is offline with an error naming file and position.
                let broken = TopicPartition::new("broken", 0);
                let opened = shard.open_partition(&broken, LogConfig::default()).await;
                let Err(Error::Corrupt { path, position, .. }) = opened else { panic!("expected corruption, got {:?}", opened.err()) };
                assert!(path.ends_with("00000000000000000000.log"));
                assert!(matches!(shard.log(&broken), Err(Error::PartitionFailed { .. })));
                assert!(shard.log(&TopicPartition::new("orders", 0)).is_ok(), "others unaffected");
                summary = format!(
                    "{} partitions over {SHARD_COUNT} shards, {} appends in {messages} bus messages, corrupt partition offline at {}:{position}",
                    PARTITION_COUNT, PARTITION_COUNT as u32 * ROUNDS, path.display()
                );
            }
            // Both shards stay up until shard 0 is done, then close their logs cleanly.
            bus.close().await;
            shard.shutdown().await.expect("shutdown");
            summary
        }
    })
    .expect("run shards");
    println!("{}", outputs[0]);
}
