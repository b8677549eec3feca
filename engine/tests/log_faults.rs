//! The storage fault layer over many seeds: concurrent appenders on a simulated disk that fails
//! writes and fdatasyncs, tears writes, and loses power at random moments. After every power
//! loss the log is reopened and checked: no acknowledged batch is lost, nothing corrupt is ever
//! returned. A failing seed is printed so the run can be replayed with
//! `RINGLOG_FAULT_SEED=<seed> cargo test -p ringlog-engine --test log_faults`.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

use bytes::Bytes;
use ringlog_engine::config::LogConfig;
use ringlog_engine::epochs::LeaderEpochs;
use ringlog_engine::format::{build_batch, validate_batch};
use ringlog_engine::log::{LogOptions, PartitionLog, ReadLimit};
use ringlog_engine::rt::{
    self,
    fs::Storage,
    sim::{FaultConfig, SimDisk, SimStats},
    TaskClass,
};
use ringlog_engine::TopicPartition;

/// Seeds per run: enough to hit every fault kind at many points of the append path many times,
/// small enough to finish in seconds. RINGLOG_FAULT_SEEDS raises it for soak runs.
const SEEDS_DEFAULT: u64 = 2000;
/// Power losses per seed: recovery must also survive recovering a log it recovered before.
const CRASHES_PER_SEED: u32 = 3;
const APPENDERS: u32 = 4;
const APPENDS_PER_APPENDER_MAX: u32 = 40;

/// Power is lost after a seeded number of disk operations, up to this many.
const CRASH_AFTER_OPS_MAX: u64 = 400;

fn faults(crash_after_ops: u64) -> FaultConfig {
    FaultConfig {
        write_error_ppm: 15_000,
        sync_error_ppm: 15_000,
        capacity_bytes: None,
        interleave: true,
        crash_after_ops: Some(crash_after_ops),
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        index_interval_bytes: 1024,
        ..LogConfig::default()
    }
}

async fn open(disk: &Rc<SimDisk>) -> ringlog_engine::Result<PartitionLog> {
    PartitionLog::open(LogOptions {
        storage: Storage::Sim(Rc::clone(disk)),
        dir: PathBuf::from("/data/t-0"),
        topic_partition: TopicPartition::new("t", 0),
        config: config(),
        cache: None,
        auto_high_watermark: true,
        metrics: None,
    })
    .await
    .map(|(log, _)| log)
}

#[derive(Default)]
struct Outcome {
    acknowledged: u64,
    verified: u64,
    failed_appends: u64,
    stats: SimStats,
}

/// Every acknowledged batch: (base offset, the client's bytes from `attributes` on, which the
/// broker never changes).
type Acked = Rc<RefCell<Vec<(i64, Bytes)>>>;

async fn run_seed(seed: u64) -> Result<Outcome, String> {
    let disk = SimDisk::new(seed, FaultConfig::default());
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
    let acked: Acked = Rc::default();
    let mut outcome = Outcome::default();
    for crash in 0..CRASHES_PER_SEED {
        // Recovery itself runs without injected faults: it must succeed to be checked.
        disk.set_faults(FaultConfig::default());
        let log = Rc::new(
            open(&disk)
                .await
                .map_err(|error| format!("reopen after crash {crash}: {error}"))?,
        );
        let snapshot = acked.borrow().clone();
        verify(&log, &snapshot, &mut outcome).await?;
        disk.set_faults(faults(rng.u64(1..=CRASH_AFTER_OPS_MAX)));
        let mut tasks = Vec::new();
        for appender in 0..APPENDERS {
            let log = Rc::clone(&log);
            let acked = Rc::clone(&acked);
            let appends = rng.u32(1..=APPENDS_PER_APPENDER_MAX);
            let size = rng.usize(1..3000);
            tasks.push(rt::spawn(TaskClass::Latency, async move {
                let mut failed = 0_u64;
                for sequence in 0..appends {
                    let value =
                        format!("{seed}/{crash}/{appender}/{sequence}").repeat(1 + size / 16);
                    let batch = build_batch(i64::from(sequence), &[(None, Some(value.as_bytes()))]);
                    // Appenders race with different epochs, each crash starting newer ones:
                    // epochs arrive out of order, and the older ones are not recorded.
                    let leader_epoch = (crash * APPENDERS + appender) as i32;
                    match log.append(&batch, leader_epoch).await {
                        Ok(result) => acked
                            .borrow_mut()
                            .push((result.base_offset, batch.slice(21..))),
                        Err(error) => {
                            if std::env::var_os("RINGLOG_FAULT_DEBUG").is_some() {
                                eprintln!("append failed: {error}");
                            }
                            failed += 1;
                            break;
                        }
                    }
                }
                failed
            }));
        }
        // Power goes after the seeded number of operations; if the appenders finish first, it
        // goes now.
        for task in tasks {
            outcome.failed_appends += task.await;
        }
        disk.crash();
        drop(log);
        disk.power_loss();
    }
    disk.set_faults(FaultConfig::default());
    let log = open(&disk)
        .await
        .map_err(|error| format!("final reopen: {error}"))?;
    let snapshot = acked.borrow().clone();
    verify(&log, &snapshot, &mut outcome).await?;
    outcome.acknowledged = acked.borrow().len() as u64;
    outcome.stats = disk.stats();
    Ok(outcome)
}

/// Reads the whole log: every batch must be valid, and every acknowledged batch present at its
/// offset with its bytes.
async fn verify(
    log: &PartitionLog,
    acked: &[(i64, Bytes)],
    outcome: &mut Outcome,
) -> Result<(), String> {
    let mut found = std::collections::HashMap::new();
    let mut found_epochs = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.high_watermark() {
        let read = log
            .read(offset, 64 * 1024, ReadLimit::HighWatermark)
            .await
            .map_err(|error| format!("read at {offset}: {error}"))?;
        if read.batches.is_empty() {
            return Err(format!("empty read at {offset} below the high watermark"));
        }
        for batch in &read.batches {
            let info = validate_batch(batch)
                .map_err(|error| format!("corrupt batch returned at {offset}: {error}"))?;
            if info.base_offset != offset {
                return Err(format!(
                    "batch at {} where {offset} was expected",
                    info.base_offset
                ));
            }
            found.insert(info.base_offset, batch.slice(21..));
            found_epochs.push((info.base_offset, info.partition_leader_epoch));
            offset = info.base_offset + i64::from(info.records_count);
        }
    }
    // The leader epoch checkpoint holds exactly what the surviving batches imply: it was
    // written before any batch that starts an epoch, and trimmed to the recovered end.
    let mut implied = LeaderEpochs::default();
    let mut epochs_seen: Vec<(i64, i32)> = found_epochs;
    epochs_seen.sort_unstable();
    for (offset, epoch) in epochs_seen {
        implied.assign(epoch, offset);
    }
    let implied: Vec<(i32, i64)> = implied
        .entries()
        .iter()
        .map(|entry| (entry.epoch, entry.start_offset))
        .collect();
    if log.leader_epochs() != implied {
        return Err(format!(
            "leader epochs {:?} where the batches imply {implied:?}",
            log.leader_epochs()
        ));
    }
    for (offset, bytes) in acked {
        match found.get(offset) {
            Some(stored) if stored == bytes => outcome.verified += 1,
            Some(_) => {
                return Err(format!(
                    "acknowledged batch at {offset} came back different"
                ))
            }
            None => {
                return Err(format!(
                    "acknowledged batch at {offset} is lost (log end {})",
                    log.log_end_offset()
                ))
            }
        }
    }
    Ok(())
}

#[test]
fn no_acknowledged_batch_lost_under_injected_faults() {
    let seeds: Vec<u64> = match std::env::var("RINGLOG_FAULT_SEED") {
        Ok(seed) => vec![seed.parse().expect("RINGLOG_FAULT_SEED is a number")],
        Err(_) => {
            let count = std::env::var("RINGLOG_FAULT_SEEDS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(SEEDS_DEFAULT);
            (0..count).collect()
        }
    };
    let mut total = Outcome::default();
    let mut failures = Vec::new();
    rt::block_on(async {
        for &seed in &seeds {
            match run_seed(seed).await {
                Ok(outcome) => {
                    total.acknowledged += outcome.acknowledged;
                    total.verified += outcome.verified;
                    total.failed_appends += outcome.failed_appends;
                    total.stats.injected_write_errors += outcome.stats.injected_write_errors;
                    total.stats.injected_sync_errors += outcome.stats.injected_sync_errors;
                    total.stats.torn_writes_on_power_loss +=
                        outcome.stats.torn_writes_on_power_loss;
                    total.stats.dropped_writes_on_power_loss +=
                        outcome.stats.dropped_writes_on_power_loss;
                    total.stats.power_losses += outcome.stats.power_losses;
                }
                Err(reason) => {
                    eprintln!("failing seed: {seed} (replay: RINGLOG_FAULT_SEED={seed}): {reason}");
                    failures.push(seed);
                }
            }
        }
    });
    println!(
        "fault layer: {} seeds, {} power losses, {} acknowledged batches, {} acknowledged-batch checks passed, \
         {} appends failed, injected {} write errors and {} fdatasync errors, {} writes torn and {} dropped at power loss",
        seeds.len(),
        total.stats.power_losses,
        total.acknowledged,
        total.verified,
        total.failed_appends,
        total.stats.injected_write_errors,
        total.stats.injected_sync_errors,
        total.stats.torn_writes_on_power_loss,
        total.stats.dropped_writes_on_power_loss,
    );
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
    assert!(
        total.stats.injected_write_errors > 0 && total.stats.injected_sync_errors > 0,
        "faults were injected"
    );
    assert!(
        total.stats.torn_writes_on_power_loss > 0,
        "writes were torn"
    );
}
