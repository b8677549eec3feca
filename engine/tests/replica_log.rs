//! What a partition log offers Kafka-style replication: a follower appending its leader's
//! batches verbatim (`append_replicated`), the leader epoch cache and its checkpoint (kept
//! through truncation, reopening, power loss and a lost checkpoint), and waiting for the
//! durable end under a relaxed flush policy. Runs on the simulated disk so power can be cut at
//! every disk operation of an append that starts an epoch and of a truncation.

mod common;

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use ringlog_engine::config::LogConfig;
use ringlog_engine::epochs::{LeaderEpochs, LEADER_EPOCH_FILE};
use ringlog_engine::format::{build_batch, validate_batch};
use ringlog_engine::log::{LogOptions, LogRecovery, PartitionLog, ReadLimit};
use ringlog_engine::rt::{
    self,
    fs::Storage,
    sim::{FaultConfig, SimDisk},
    TaskClass,
};
use ringlog_engine::{Error, TopicPartition};

/// Each test is a few hundred simulated appends; longer than this is a hang.
const TEST_TIME_LIMIT: Duration = Duration::from_secs(120);

/// Small segments, so the follower rolls while it replicates.
const SMALL_SEGMENT_BYTES: u64 = 4096;

/// A read large enough to return a whole small test log.
const READ_ALL_BYTES: usize = 1 << 20;

fn block_on_bounded<Make, Fut, T>(make: Make) -> T
where
    Make: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    common::block_on_bounded(TEST_TIME_LIMIT, make)
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: SMALL_SEGMENT_BYTES,
        index_interval_bytes: 512,
        ..LogConfig::default()
    }
}

fn dir(name: &str) -> PathBuf {
    PathBuf::from("/data").join(name)
}

async fn open_on(
    disk: &Rc<SimDisk>,
    name: &str,
    config: &LogConfig,
) -> (PartitionLog, LogRecovery) {
    PartitionLog::open(LogOptions {
        storage: Storage::Sim(Rc::clone(disk)),
        dir: dir(name),
        topic_partition: TopicPartition::new("t", 0),
        config: config.clone(),
        cache: None,
        // Even a log that moves its own high watermark must not move it on replicated data.
        auto_high_watermark: true,
        metrics: None,
    })
    .await
    .expect("open")
}

fn batch(index: usize, records: usize) -> Bytes {
    let value = format!("value {index} ").repeat(20);
    let pairs: Vec<_> = (0..records)
        .map(|_| (None, Some(value.as_bytes())))
        .collect();
    build_batch(1_000 + index as i64, &pairs)
}

/// Every batch of the log from its start to its end, as stored.
async fn read_all(log: &PartitionLog) -> Vec<Bytes> {
    let mut batches = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let read = log
            .read(offset, READ_ALL_BYTES, ReadLimit::LogEnd)
            .await
            .expect("read");
        assert!(!read.batches.is_empty(), "read at {offset}");
        offset = read.next_offset;
        batches.extend(read.batches);
    }
    batches
}

/// The leader epochs the stored batches imply, as appends record them (the reference a
/// checkpoint must match).
async fn epochs_from_batches(log: &PartitionLog) -> Vec<(i32, i64)> {
    let mut epochs = LeaderEpochs::default();
    for batch in read_all(log).await {
        let info = validate_batch(&batch).expect("stored batch valid");
        epochs.assign(info.partition_leader_epoch, info.base_offset);
    }
    epochs.truncate_from_start(log.log_start_offset());
    epochs
        .entries()
        .iter()
        .map(|entry| (entry.epoch, entry.start_offset))
        .collect()
}

fn concat(batches: &[Bytes]) -> Bytes {
    Bytes::from(batches.concat())
}

/// Leader log → read to the log end → follower `append_replicated` → the follower serves the
/// same bytes at the same offsets and has the same leader epochs, and never moved its high
/// watermark. Epochs come from both append paths, and survive a reopen.
#[test]
fn replicated_batches_round_trip_byte_for_byte() {
    block_on_bounded(|| async {
        let disk = SimDisk::new(1, FaultConfig::default());
        let config = small_segments();
        let (leader, _) = open_on(&disk, "leader", &config).await;
        let (follower, _) = open_on(&disk, "follower", &config).await;
        // Epoch -1 (none) is not recorded, a lower epoch after a higher one neither.
        let epochs = [-1, -1, 1, 1, 1, 3, 3, 2, 3, 6, 6, 6];
        for (index, &epoch) in epochs.iter().enumerate() {
            leader
                .append(&batch(index, 1 + index % 3), epoch)
                .await
                .expect("append");
        }
        assert_eq!(leader.leader_epochs(), [(1, 3), (3, 9), (6, 18)]);
        assert_eq!(leader.leader_epochs(), epochs_from_batches(&leader).await);
        // Replicate in fetches of a few hundred bytes: each ends inside a batch (a leader cuts
        // its response at the fetch's byte limit) or on a boundary.
        let mut rounds = 0;
        while follower.log_end_offset() < leader.log_end_offset() {
            let read = leader
                .read(follower.log_end_offset(), 1500, ReadLimit::LogEnd)
                .await
                .expect("leader read");
            let response = concat(&read.batches);
            let cut = response.len().min(600 + rounds * 137 % 500);
            let appended = follower
                .append_replicated(&response.slice(..cut))
                .await
                .expect("replicate");
            assert_eq!(appended.last_offset + 1, follower.log_end_offset());
            assert_eq!(follower.durable_end_offset(), follower.log_end_offset());
            assert_eq!(
                follower.high_watermark(),
                0,
                "replicated data never moves it"
            );
            rounds += 1;
            assert!(rounds < 100, "replication makes progress");
        }
        assert!(follower.segment_count() > 1, "the follower rolled");
        let leader_batches = read_all(&leader).await;
        let follower_batches = read_all(&follower).await;
        assert_eq!(follower_batches, leader_batches, "byte-identical");
        assert_eq!(follower.leader_epochs(), leader.leader_epochs());
        // The follower learns its high watermark from the leader.
        follower.set_high_watermark(leader.high_watermark());
        assert_eq!(follower.high_watermark(), leader.log_end_offset());

        // A leader append on the follower's log (it was promoted) starts its epoch there.
        let end = follower.log_end_offset();
        let promoted = follower.append(&batch(99, 1), 7).await.expect("append");
        assert_eq!(promoted.base_offset, end);
        assert_eq!(follower.high_watermark(), end + 1);
        assert_eq!(
            follower.leader_epochs(),
            [(1, 3), (3, 9), (6, 18), (7, end)]
        );

        // Clean close and reopen, and a crash-style reopen, restore the epochs.
        let expected = follower.leader_epochs();
        follower.close().await.expect("close");
        let (follower, recovery) = open_on(&disk, "follower", &config).await;
        assert!(recovery.clean_shutdown);
        assert!(!recovery.leader_epochs_rebuilt);
        assert_eq!(follower.leader_epochs(), expected);
        drop(follower);
        disk.crash();
        disk.power_loss();
        let (follower, recovery) = open_on(&disk, "follower", &config).await;
        assert!(!recovery.clean_shutdown && !recovery.leader_epochs_rebuilt);
        assert_eq!(follower.leader_epochs(), expected);
        assert_eq!(
            follower.leader_epochs(),
            epochs_from_batches(&follower).await
        );
        println!(
            "round trip: {} batches replicated in {rounds} fetches, epochs {expected:?}",
            leader_batches.len()
        );
    });
}

/// A response that does not continue the follower's log is refused whole.
#[test]
fn non_contiguous_batches_are_refused_whole() {
    block_on_bounded(|| async {
        let disk = SimDisk::new(2, FaultConfig::default());
        let config = LogConfig::default();
        let (leader, _) = open_on(&disk, "leader", &config).await;
        let (follower, _) = open_on(&disk, "follower", &config).await;
        for index in 0..4 {
            leader.append(&batch(index, 2), 4).await.expect("append");
        }
        let all = read_all(&leader).await;
        // Starts past the follower's log end (offset 2 where 0 was expected).
        let refused = follower.append_replicated(&concat(&all[1..])).await;
        assert!(
            matches!(
                refused,
                Err(Error::NonContiguousAppend {
                    expected: 0,
                    got: 2
                })
            ),
            "{refused:?}"
        );
        // A gap inside the response: nothing of it is appended, not even the first batch.
        let gapped = concat(&[all[0].clone(), all[2].clone()]);
        let refused = follower.append_replicated(&gapped).await;
        assert!(
            matches!(
                refused,
                Err(Error::NonContiguousAppend {
                    expected: 2,
                    got: 4
                })
            ),
            "{refused:?}"
        );
        assert_eq!(follower.log_end_offset(), 0);
        assert!(follower.leader_epochs().is_empty());
        // What the follower already has is refused too: the caller drops it.
        follower
            .append_replicated(&concat(&all[..2]))
            .await
            .expect("contiguous");
        let refused = follower.append_replicated(&concat(&all[1..])).await;
        assert!(
            matches!(
                refused,
                Err(Error::NonContiguousAppend {
                    expected: 4,
                    got: 2
                })
            ),
            "{refused:?}"
        );
        // A damaged whole batch is refused as a produce's would be.
        let mut damaged = all[2].to_vec();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        let refused = follower.append_replicated(&Bytes::from(damaged)).await;
        assert!(
            matches!(refused, Err(Error::CorruptBatch { .. })),
            "{refused:?}"
        );
        follower
            .append_replicated(&concat(&all[2..]))
            .await
            .expect("the rest");
        assert_eq!(read_all(&follower).await, all);
        assert_eq!(follower.poisoned(), None);
    });
}

/// A response whose last batch is cut short appends its whole batches only; one with no whole
/// batch appends nothing.
#[test]
fn an_incomplete_last_batch_is_ignored() {
    block_on_bounded(|| async {
        let disk = SimDisk::new(3, FaultConfig::default());
        let config = LogConfig::default();
        let (leader, _) = open_on(&disk, "leader", &config).await;
        let (follower, _) = open_on(&disk, "follower", &config).await;
        for index in 0..3 {
            leader.append(&batch(index, 3), 2).await.expect("append");
        }
        let all = read_all(&leader).await;
        let response = concat(&all);
        let cut = all[0].len() + all[1].len() + 5;
        let appended = follower
            .append_replicated(&response.slice(..cut))
            .await
            .expect("two whole batches");
        assert_eq!(
            (
                appended.base_offset,
                appended.last_offset,
                appended.record_count
            ),
            (0, 5, 6)
        );
        assert_eq!(follower.log_end_offset(), 6);
        let nothing = follower
            .append_replicated(&all[2].slice(..all[2].len() - 1))
            .await
            .expect("no whole batch");
        assert_eq!(
            (
                nothing.base_offset,
                nothing.record_count,
                nothing.last_offset
            ),
            (6, 0, 5)
        );
        let empty = follower
            .append_replicated(&Bytes::new())
            .await
            .expect("empty");
        assert_eq!((empty.base_offset, empty.record_count), (6, 0));
        assert_eq!(follower.log_end_offset(), 6);
        follower
            .append_replicated(&all[2])
            .await
            .expect("the last batch");
        assert_eq!(read_all(&follower).await, all);
        assert_eq!(follower.leader_epochs(), [(2, 0)]);
    });
}

/// Truncation removes the epochs that started at or past the cut, durably; DeleteRecords moves
/// the first one to the new log start.
#[test]
fn truncation_and_log_start_trim_the_epochs() {
    block_on_bounded(|| async {
        let disk = SimDisk::new(4, FaultConfig::default());
        let config = small_segments();
        let (log, _) = open_on(&disk, "log", &config).await;
        // Ten 2-record batches per epoch: epoch 1 at 0, 3 at 20, 5 at 40.
        for epoch in [1, 3, 5] {
            for index in 0..10 {
                log.append(&batch(index, 2), epoch).await.expect("append");
            }
        }
        assert_eq!(log.leader_epochs(), [(1, 0), (3, 20), (5, 40)]);
        // Cutting inside epoch 3's batches keeps epoch 3.
        assert_eq!(log.truncate_to(45).await.expect("truncate"), 44);
        assert_eq!(log.leader_epochs(), [(1, 0), (3, 20), (5, 40)]);
        assert_eq!(log.truncate_to(31).await.expect("truncate"), 30);
        assert_eq!(log.leader_epochs(), [(1, 0), (3, 20)]);
        // The checkpoint on disk already says so (durable before truncate_to returned).
        let on_disk = disk
            .durable_contents(&dir("log").join(LEADER_EPOCH_FILE))
            .expect("checkpoint");
        let decoded = LeaderEpochs::decode(&on_disk).expect("decodes");
        assert_eq!(decoded.entries().len(), 2);
        assert_eq!(log.truncate_to(20).await.expect("truncate"), 20);
        assert_eq!(log.leader_epochs(), [(1, 0)]);
        // A new leader's epoch starts where the follower's log now ends.
        log.append(&batch(0, 2), 8).await.expect("append");
        assert_eq!(log.leader_epochs(), [(1, 0), (8, 20)]);
        assert_eq!(log.delete_records(10).await.expect("delete records"), 10);
        assert_eq!(log.leader_epochs(), [(1, 10), (8, 20)]);
        assert_eq!(log.delete_records(21).await.expect("delete records"), 21);
        assert_eq!(log.leader_epochs(), [(8, 21)]);
        let expected = log.leader_epochs();
        drop(log);
        disk.crash();
        disk.power_loss();
        let (log, recovery) = open_on(&disk, "log", &config).await;
        assert!(!recovery.leader_epochs_rebuilt);
        assert_eq!(log.leader_epochs(), expected);
        assert_eq!(log.leader_epochs(), epochs_from_batches(&log).await);
        // Truncating everything empties the cache.
        log.truncate_to(0).await.expect("truncate");
        assert!(log.leader_epochs().is_empty());
    });
}

/// A missing or damaged checkpoint is rebuilt from the frame headers and written back.
#[test]
fn a_lost_checkpoint_is_rebuilt_from_the_frames() {
    block_on_bounded(|| async {
        let disk = SimDisk::new(5, FaultConfig::default());
        let storage = Storage::Sim(Rc::clone(&disk));
        let config = small_segments();
        let path = dir("log").join(LEADER_EPOCH_FILE);
        let (log, _) = open_on(&disk, "log", &config).await;
        for (index, epoch) in [0, 0, 2, 2, 2, 2, 9, 9, 9, 9, 9, 9, 9, 11]
            .iter()
            .enumerate()
        {
            log.append(&batch(index, 3), *epoch).await.expect("append");
        }
        assert!(log.segment_count() > 2, "several segments to scan");
        let expected = log.leader_epochs();
        assert_eq!(expected, [(0, 0), (2, 6), (9, 18), (11, 39)]);
        log.close().await.expect("close");

        storage.remove_file(&path).await.expect("remove");
        storage.sync_dir(&dir("log")).await.expect("sync");
        let (log, recovery) = open_on(&disk, "log", &config).await;
        assert!(recovery.leader_epochs_rebuilt, "missing: rebuilt");
        assert_eq!(log.leader_epochs(), expected);
        assert!(storage.exists(&path).await, "written back");
        drop(log);

        disk.corrupt(&path, 10, &[0xee]);
        let (log, recovery) = open_on(&disk, "log", &config).await;
        assert!(recovery.leader_epochs_rebuilt, "damaged: rebuilt");
        assert_eq!(log.leader_epochs(), expected);
        drop(log);
        let (log, recovery) = open_on(&disk, "log", &config).await;
        assert!(!recovery.leader_epochs_rebuilt, "the rebuilt one is used");
        assert_eq!(log.leader_epochs(), expected);
        drop(log);

        // A new, empty log has no checkpoint and needs none.
        let (empty, recovery) = open_on(&disk, "empty", &config).await;
        assert!(!recovery.leader_epochs_rebuilt);
        assert!(empty.leader_epochs().is_empty());
        assert!(!storage.exists(&dir("empty").join(LEADER_EPOCH_FILE)).await);
    });
}

/// What the scenarios below do before the power goes.
#[derive(Clone, Copy, Debug)]
enum Scenario {
    /// Appends under a new epoch (synced on return, flush.messages=1).
    AppendNewEpoch,
    /// Truncates into the previous epoch, then appends under a newer one.
    TruncateThenNewEpoch,
    /// A follower replicating batches that start two epochs.
    ReplicateNewEpochs,
}

/// Cuts the power at every disk operation of each scenario, and once after it. After every
/// power loss the reopened log's epochs are exactly those its surviving batches imply, and an
/// append that returned is there with its epoch.
#[test]
fn power_loss_at_every_step_keeps_the_epochs_true() {
    block_on_bounded(|| async {
        let config = small_segments();
        let mut runs = 0;
        for scenario in [
            Scenario::AppendNewEpoch,
            Scenario::TruncateThenNewEpoch,
            Scenario::ReplicateNewEpochs,
        ] {
            for crash_after_ops in 1..400 {
                let finished = power_loss_run(scenario, crash_after_ops, &config).await;
                runs += 1;
                if finished {
                    break;
                }
            }
        }
        println!("power loss at every step: {runs} runs");
        assert!(runs > 30, "every scenario does disk work: {runs}");
    });
}

/// One run: the scenario with the power cut after `crash_after_ops` disk operations (or at
/// its end). Returns whether the scenario finished before the cut.
async fn power_loss_run(scenario: Scenario, crash_after_ops: u64, config: &LogConfig) -> bool {
    let disk = SimDisk::new(crash_after_ops, FaultConfig::default());
    let (log, _) = open_on(&disk, "log", config).await;
    let (source, _) = open_on(&disk, "source", config).await;
    for index in 0..12 {
        log.append(&batch(index, 2), 1).await.expect("append");
        let epoch = if index < 6 { 1 } else { 2 };
        source
            .append(&batch(index, 2), epoch)
            .await
            .expect("append");
    }
    for index in 12..20 {
        source.append(&batch(index, 2), 4).await.expect("append");
    }
    let source_batches = read_all(&source).await;
    if let Scenario::ReplicateNewEpochs = scenario {
        // The follower keeps what it shares with the source: its first 6 batches (epoch 1).
        log.truncate_to(12).await.expect("truncate");
    }
    disk.set_faults(FaultConfig {
        crash_after_ops: Some(crash_after_ops),
        ..FaultConfig::default()
    });
    // (offset, epoch) of each append that returned.
    let mut acknowledged = Vec::new();
    let outcome: ringlog_engine::Result<()> = async {
        match scenario {
            Scenario::AppendNewEpoch => {
                let result = log.append(&batch(50, 2), 6).await?;
                acknowledged.push((result.base_offset, 6));
            }
            Scenario::TruncateThenNewEpoch => {
                log.append(&batch(50, 2), 3).await?;
                log.truncate_to(10).await?;
                let result = log.append(&batch(51, 2), 5).await?;
                acknowledged.push((result.base_offset, 5));
            }
            Scenario::ReplicateNewEpochs => {
                // The log holds the source's first 6 batches (epoch 1) at offsets 0..12;
                // replicate the rest, which start epochs 2 and 4.
                let result = log.append_replicated(&concat(&source_batches[6..])).await?;
                acknowledged.push((result.base_offset, 2));
                acknowledged.push((24, 4));
            }
        }
        Ok(())
    }
    .await;
    let finished = outcome.is_ok() && !disk.is_crashed();
    drop(log);
    drop(source);
    disk.crash();
    disk.power_loss();
    disk.set_faults(FaultConfig::default());
    let (log, _) = open_on(&disk, "log", config).await;
    let context = format!("{scenario:?}, power cut after {crash_after_ops} operations");
    let implied = epochs_from_batches(&log).await;
    assert_eq!(log.leader_epochs(), implied, "{context}");
    for (offset, epoch) in acknowledged {
        let read = log
            .read(offset, 1, ReadLimit::LogEnd)
            .await
            .unwrap_or_else(|error| panic!("{context}: acknowledged {offset}: {error}"));
        let info = validate_batch(&read.batches[0]).expect("valid");
        assert_eq!(info.partition_leader_epoch, epoch, "{context}");
        assert!(
            log.leader_epochs()
                .iter()
                .any(|&(entry, start)| entry == epoch && start <= offset),
            "{context}: epoch {epoch} of acknowledged {offset} in {:?}",
            log.leader_epochs()
        );
    }
    if let Scenario::ReplicateNewEpochs = scenario {
        // Whatever survived is a prefix of the source, byte for byte.
        let stored = read_all(&log).await;
        assert_eq!(stored[..], source_batches[..stored.len()], "{context}");
    }
    finished
}

/// Waits in its own task for the log's durable end to pass `offset`; the task returns the
/// durable end then, and the flag says whether it has returned.
fn spawn_waiter(log: &Rc<PartitionLog>, offset: i64) -> (rt::Task<i64>, Rc<Cell<bool>>) {
    let woken = Rc::new(Cell::new(false));
    let task = {
        let log = Rc::clone(log);
        let woken = Rc::clone(&woken);
        rt::spawn(TaskClass::Latency, async move {
            log.wait_for_durable_end_past(offset).await;
            woken.set(true);
            log.durable_end_offset()
        })
    };
    (task, woken)
}

/// Under flush.messages > 1 an append returns before its data is durable; a leader waiting for
/// its durable end wakes when the deferred flush lands, and on truncation and close.
#[test]
fn waiting_for_the_durable_end_under_relaxed_flushing() {
    block_on_bounded(|| async {
        let disk = SimDisk::new(6, FaultConfig::default());
        let config = LogConfig {
            flush_messages: 3,
            ..LogConfig::default()
        };
        let (log, _) = open_on(&disk, "log", &config).await;
        let log = Rc::new(log);
        log.append(&batch(0, 1), 1).await.expect("append");
        assert_eq!((log.log_end_offset(), log.durable_end_offset()), (1, 0));
        let (waiter, woken) = spawn_waiter(&log, 0);
        rt::sleep(Duration::from_millis(20)).await;
        assert!(!woken.get(), "nothing durable yet");
        log.append(&batch(1, 1), 1).await.expect("append");
        rt::sleep(Duration::from_millis(20)).await;
        assert!(!woken.get(), "two messages do not flush");
        log.append(&batch(2, 1), 1)
            .await
            .expect("append: the third flushes");
        assert_eq!(waiter.await, 3);
        // Already past: returns at once.
        log.wait_for_durable_end_past(2).await;

        // Replicated appends count towards the flush too, and never move the high watermark.
        let watermark = log.high_watermark();
        let source_disk = SimDisk::new(7, FaultConfig::default());
        let (source, _) = open_on(&source_disk, "source", &LogConfig::default()).await;
        for index in 0..6 {
            source.append(&batch(index, 1), 2).await.expect("append");
        }
        let replicate = concat(&read_all(&source).await[3..]);
        let (waiter, _) = spawn_waiter(&log, 4);
        log.append_replicated(&replicate).await.expect("replicate");
        assert_eq!(waiter.await, 6);
        assert_eq!(log.high_watermark(), watermark);
        assert_eq!(log.leader_epochs(), [(1, 0), (2, 3)]);

        // A truncation that cuts the log below the offset waited for ends the wait.
        log.append(&batch(7, 1), 2).await.expect("append");
        assert_eq!(log.durable_end_offset(), 6);
        // Waiting at the log end: for anything new to become durable (truncate_to syncs
        // first, which moves the durable end to 7, not past it).
        let (waiter, woken) = spawn_waiter(&log, 7);
        rt::sleep(Duration::from_millis(20)).await;
        assert!(!woken.get(), "nothing past 7");
        log.truncate_to(5).await.expect("truncate");
        assert_eq!(waiter.await, 5, "woken by the truncation, durable end 5");

        // So does closing.
        let (waiter, woken) = spawn_waiter(&log, 5);
        rt::sleep(Duration::from_millis(20)).await;
        assert!(!woken.get(), "nothing new");
        log.close().await.expect("close");
        waiter.await;
    });
}

/// The flush.ms path: a background flush moves the durable end and wakes the waiter.
#[test]
fn a_timed_flush_wakes_the_durable_end_waiter() {
    block_on_bounded(|| async {
        let disk = SimDisk::new(8, FaultConfig::default());
        let config = LogConfig {
            flush_messages: 1_000,
            flush_ms: 1,
            ..LogConfig::default()
        };
        let (log, _) = open_on(&disk, "log", &config).await;
        let log = Rc::new(log);
        log.append(&concat(&[batch(0, 2), batch(1, 2)]), 1)
            .await
            .expect("append");
        assert_eq!(log.durable_end_offset(), 0);
        let (waiter, _) = spawn_waiter(&log, 3);
        log.flush_if_due(ringlog_engine::log::now_ms() + 10)
            .await
            .expect("flush");
        assert_eq!(waiter.await, 4);
    });
}
