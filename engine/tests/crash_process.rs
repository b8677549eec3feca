//! A real-process crash test: a child process appends to a partition log on the real disk with
//! several concurrent appenders and is killed with SIGKILL at a random moment; the parent then
//! recovers the log in-process and checks that every batch the child saw acknowledged reads back
//! at its offset with the same bytes, and that nothing invalid is ever returned. Repeated many
//! times on the same log, so recovery also runs on logs that earlier crashes left behind.
//!
//! The child is this test binary itself, re-executed with `--exact child_appender --ignored` and
//! the partition's parent directory in [`CHILD_DIR_ENV`]. After each acknowledged append it writes
//! "offset len crc" to a side file. SIGKILL does not lose what a process had written to the page
//! cache, so every line the parent reads names a batch the log had acknowledged.

mod common;

use std::cell::RefCell;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringlog_engine::config::LogConfig;
use ringlog_engine::format::{build_batch, patch_batch, validate_batch};
use ringlog_engine::log::{now_ms, LogOptions, PartitionLog, ReadLimit};
use ringlog_engine::rt::{self, fs::Storage, TaskClass};
use ringlog_engine::TopicPartition;

/// Names the directory the child appends in; the child test does nothing without it.
const CHILD_DIR_ENV: &str = "RINGLOG_CRASH_CHILD_DIR";
/// The leader epoch the child stamps on its batches (the iteration number), so a batch read
/// back also shows which child process wrote it.
const CHILD_EPOCH_ENV: &str = "RINGLOG_CRASH_CHILD_EPOCH";
/// Seeds the child's batch sizes and contents, so a failing iteration can be rerun.
const CHILD_SEED_ENV: &str = "RINGLOG_CRASH_CHILD_SEED";
/// Raises (or lowers) the number of kill/recover iterations.
const ITERATIONS_ENV: &str = "RINGLOG_CRASH_ITERATIONS";
/// Raises (or lowers) the time budget, in seconds.
const SECONDS_ENV: &str = "RINGLOG_CRASH_SECONDS";
/// Replays a run: the seed of kill delays and of every child's batches (printed in the summary).
const SEED_ENV: &str = "RINGLOG_CRASH_SEED";

/// 20 kills exercise recovery from a fair spread of crash points (mid-write, mid-fdatasync,
/// mid-roll, before the first append) in well under the time budget.
const ITERATIONS_DEFAULT: usize = 20;
/// The whole test stops starting new iterations after this long, so raising the iteration
/// count cannot make a CI run hang for long.
const TIME_BUDGET_DEFAULT: Duration = Duration::from_secs(60);
/// How long the child runs before it is killed: a few dozen to a few hundred appends once it is
/// ready, or (one iteration in [`KILL_DURING_START_EVERY`]) counted from the process start, which
/// often kills it during start-up or recovery.
const KILL_DELAY_MS_MIN: u64 = 50;
const KILL_DELAY_MS_MAX: u64 = 400;
const KILL_DURING_START_EVERY: usize = 4;
/// How long the parent waits for a child to open (recover) its log before killing it anyway.
/// Recovery takes well under a second here; a child this slow has stalled.
const CHILD_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// A child exits by itself after this long, so an orphaned child (the parent died before killing
/// it) does not run forever.
const CHILD_LIFETIME_MAX: Duration = Duration::from_secs(30);
/// Concurrent appender tasks in the child: enough that group commit shares fdatasyncs and that
/// a kill usually lands with several appends in flight.
const APPENDER_TASKS: usize = 4;
/// Batch sizes are drawn from this range: from a small message to a large producer batch.
const BATCH_BYTES_MIN: usize = 100;
const BATCH_BYTES_MAX: usize = 64 * 1024;
/// Small segments so the child rolls every few dozen appends and kills land mid-roll too.
const SEGMENT_BYTES: u64 = 1 << 20;
/// The side file of acknowledged appends, in the directory that holds the partition directory.
const ACK_FILE: &str = "acknowledged.txt";
/// The partition directory's name.
const PARTITION_DIR: &str = "crash-0";
/// Recovering and verifying the log takes well under a few seconds even after the longest run
/// allowed; far longer means the executor is stuck.
const RECOVERY_TIME_LIMIT: Duration = Duration::from_secs(120);

fn options(root: &Path) -> LogOptions {
    LogOptions {
        storage: Storage::Real,
        dir: root.join(PARTITION_DIR),
        topic_partition: TopicPartition::new("crash", 0),
        config: LogConfig {
            segment_bytes: SEGMENT_BYTES,
            ..LogConfig::default()
        },
        cache: None,
        auto_high_watermark: true,
        metrics: None,
    }
}

/// [`common::block_on_bounded`] with this file's time limit.
fn block_on_bounded<Make, Fut, T>(make: Make) -> T
where
    Make: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    common::block_on_bounded(RECOVERY_TIME_LIMIT, make)
}

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name)
        .ok()
        .and_then(|value| value.trim().parse().ok())
}

/// One acknowledged append, as the child recorded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ack {
    offset: i64,
    len: usize,
    crc: u32,
}

/// The child: appends until killed. Ignored so it only runs when the parent starts it.
#[test]
#[ignore = "the child process of crash_kill_recover_loop; runs only when started by it"]
fn child_appender() {
    let Some(root) = std::env::var_os(CHILD_DIR_ENV).map(PathBuf::from) else {
        return;
    };
    let epoch: i32 = env_number(CHILD_EPOCH_ENV).unwrap_or(0);
    let seed: u64 = env_number(CHILD_SEED_ENV).unwrap_or(1);
    let acks = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join(ACK_FILE))
        .expect("open the acknowledgement file");
    let acks = Rc::new(RefCell::new(acks));
    rt::block_on(async move {
        Storage::Real.prime_data_dir(&root).await.expect("prime");
        let (log, _) = match PartitionLog::open(options(&root)).await {
            Ok(opened) => opened,
            Err(error) => {
                eprintln!("child: open failed: {error}");
                std::process::exit(3);
            }
        };
        // Tell the parent the log is open: its kill delay starts now.
        std::fs::write(root.join(format!("ready-{epoch}")), b"").expect("write the ready file");
        let log = Rc::new(log);
        let deadline = Instant::now() + CHILD_LIFETIME_MAX;
        let appenders: Vec<rt::Task<()>> = (0..APPENDER_TASKS)
            .map(|task| {
                let log = Rc::clone(&log);
                let acks = Rc::clone(&acks);
                let mut rng =
                    fastrand::Rng::with_seed(seed.wrapping_mul(31).wrapping_add(task as u64));
                rt::spawn(TaskClass::Latency, async move {
                    while Instant::now() < deadline {
                        let batch = random_batch(&mut rng);
                        let appended = match log.append(&batch, epoch).await {
                            Ok(appended) => appended,
                            Err(error) => {
                                eprintln!("child: append failed: {error}");
                                std::process::exit(3);
                            }
                        };
                        let stored = patch_batch(&batch, appended.base_offset, epoch);
                        let line = format!(
                            "{} {} {:08x}\n",
                            appended.base_offset,
                            stored.len(),
                            crc32c::crc32c(&stored)
                        );
                        // One write per line: the parent ignores a line a kill cut short.
                        acks.borrow_mut()
                            .write_all(line.as_bytes())
                            .expect("record the ack");
                    }
                })
            })
            .collect();
        for appender in appenders {
            appender.await;
        }
    });
}

/// A batch of one to four records whose total value size is drawn from
/// [`BATCH_BYTES_MIN`]..=[`BATCH_BYTES_MAX`].
fn random_batch(rng: &mut fastrand::Rng) -> Bytes {
    let total = rng.usize(BATCH_BYTES_MIN..=BATCH_BYTES_MAX);
    let records = rng.usize(1..=4);
    let mut values: Vec<Vec<u8>> = Vec::with_capacity(records);
    for index in 0..records {
        let share = if index + 1 == records {
            total - total / records * index
        } else {
            total / records
        };
        let mut value = vec![0_u8; share];
        rng.fill(&mut value);
        values.push(value);
    }
    let pairs: Vec<_> = values
        .iter()
        .map(|value| (Some(&b"crash-key"[..]), Some(value.as_slice())))
        .collect();
    build_batch(now_ms(), &pairs)
}

/// Reads the side file. A last line without its newline was cut short by the kill: the append
/// it names was acknowledged, but the line is incomplete, so it is skipped.
fn read_acks(path: &Path) -> Vec<Ack> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(error) => panic!("read {}: {error}", path.display()),
    };
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => return Vec::new(),
    };
    complete
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            assert_eq!(fields.len(), 3, "malformed ack line {line:?}");
            Ack {
                offset: fields[0].parse().expect("offset"),
                len: fields[1].parse().expect("len"),
                crc: u32::from_str_radix(fields[2], 16).expect("crc"),
            }
        })
        .collect()
}

/// What one recovery found.
struct Recovered {
    recovery_time: Duration,
    torn_tails: usize,
    log_end_offset: i64,
    batches_in_log: usize,
    acks_verified: usize,
}

/// Reopens the log, checks every acknowledged batch and the validity of the whole log, then
/// closes it cleanly (`close`) or not, so the next child starts from either state.
async fn recover_and_verify(root: &Path, acks: &[Ack], close: bool) -> Recovered {
    let started = Instant::now();
    let (log, recovery) = match PartitionLog::open(options(root)).await {
        Ok(opened) => opened,
        Err(error) => panic!("recovery failed: {error}"),
    };
    let recovery_time = started.elapsed();
    let torn_tails = recovery
        .segment_reports
        .iter()
        .filter(|(_, report)| report.truncated_at.is_some())
        .count();
    let log_end_offset = log.log_end_offset();
    for ack in acks {
        assert!(
            ack.offset < log_end_offset,
            "acknowledged batch at {} is past the recovered log end {log_end_offset}",
            ack.offset
        );
        let read = match log.read(ack.offset, 1, ReadLimit::LogEnd).await {
            Ok(read) => read,
            Err(error) => panic!("read of acknowledged offset {}: {error}", ack.offset),
        };
        let Some(batch) = read.batches.first() else {
            panic!("no batch at acknowledged offset {}", ack.offset)
        };
        let info = match validate_batch(batch) {
            Ok(info) => info,
            Err(error) => panic!(
                "invalid batch at acknowledged offset {}: {error}",
                ack.offset
            ),
        };
        assert_eq!(
            info.base_offset, ack.offset,
            "batch read at {} starts elsewhere",
            ack.offset
        );
        assert_eq!(
            batch.len(),
            ack.len,
            "length of the batch at {}",
            ack.offset
        );
        assert_eq!(
            crc32c::crc32c(batch),
            ack.crc,
            "bytes of the batch at {}",
            ack.offset
        );
    }
    // Everything in the log, acknowledged or not, must be valid and contiguous.
    let mut offset = log.log_start_offset();
    let mut batches_in_log = 0;
    while offset < log_end_offset {
        let read = match log.read(offset, 4 << 20, ReadLimit::LogEnd).await {
            Ok(read) => read,
            Err(error) => panic!("read at {offset} of {log_end_offset}: {error}"),
        };
        assert!(
            !read.batches.is_empty(),
            "no batch at {offset} below the log end"
        );
        for batch in &read.batches {
            let info = match validate_batch(batch) {
                Ok(info) => info,
                Err(error) => panic!("invalid batch at offset {offset}: {error}"),
            };
            assert_eq!(info.base_offset, offset, "offsets are contiguous");
            offset += i64::from(info.records_count);
            batches_in_log += 1;
        }
    }
    if close {
        log.close().await.expect("clean close");
    }
    drop(log);
    Recovered {
        recovery_time,
        torn_tails,
        log_end_offset,
        batches_in_log,
        acks_verified: acks.len(),
    }
}

#[test]
fn crash_kill_recover_loop() {
    if std::env::var_os(CHILD_DIR_ENV).is_some() {
        return; // Never recurse from inside a child.
    }
    let iterations = env_number(ITERATIONS_ENV).unwrap_or(ITERATIONS_DEFAULT);
    let budget = env_number(SECONDS_ENV).map_or(TIME_BUDGET_DEFAULT, Duration::from_secs);
    let temp = tempfile::tempdir().expect("tempdir");
    let root = temp.path().to_path_buf();
    let executable = std::env::current_exe().expect("the test binary's path");
    let seed = env_number(SEED_ENV).unwrap_or_else(|| fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    let started = Instant::now();

    let mut completed = 0;
    let mut verifications = 0;
    let mut torn_tails = 0;
    let mut max_recovery = Duration::ZERO;
    let mut last = None;
    let mut previous_acks = 0;
    let mut iterations_without_acks = 0;
    let mut children_not_ready = 0;
    for iteration in 0..iterations {
        if started.elapsed() > budget {
            println!("crash test: time budget of {budget:?} reached after {iteration} iterations");
            break;
        }
        let stderr_path = root.join(format!("child-{iteration}.stderr"));
        let stderr = std::fs::File::create(&stderr_path).expect("child stderr file");
        let child_seed = rng.u64(..);
        let mut child = Command::new(&executable)
            .args([
                "--exact",
                "child_appender",
                "--nocapture",
                "--ignored",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, &root)
            .env(CHILD_EPOCH_ENV, iteration.to_string())
            .env(CHILD_SEED_ENV, child_seed.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start the child");
        let during_start = iteration % KILL_DURING_START_EVERY == KILL_DURING_START_EVERY - 1;
        if !during_start {
            let ready = root.join(format!("ready-{iteration}"));
            let waiting = Instant::now();
            while !ready.exists() {
                if let Some(status) = child.try_wait().expect("poll the child") {
                    let output = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                    panic!("iteration {iteration}: child exited before it was ready ({status}):\n{output}");
                }
                if waiting.elapsed() > CHILD_READY_TIMEOUT {
                    // Still a crash point worth recovering from; the parent's own recovery below
                    // is bounded and would show a recovery that is really this slow.
                    println!(
                        "crash test iteration {iteration}: child not ready after \
                         {CHILD_READY_TIMEOUT:?} (stalled executor?); killing it anyway"
                    );
                    children_not_ready += 1;
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let delay = rng.u64(KILL_DELAY_MS_MIN..=KILL_DELAY_MS_MAX);
        std::thread::sleep(Duration::from_millis(delay));
        if let Some(status) = child.try_wait().expect("poll the child") {
            let output = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!(
                "iteration {iteration} (seed {seed}): child exited by itself ({status}):\n{output}"
            );
        }
        // `Child::kill` sends SIGKILL to exactly this child's pid.
        child.kill().expect("SIGKILL the child");
        let status = child.wait().expect("reap the child");
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "the child died of SIGKILL"
        );

        let acks = read_acks(&root.join(ACK_FILE));
        let mut offsets: Vec<i64> = acks.iter().map(|ack| ack.offset).collect();
        offsets.sort_unstable();
        offsets.dedup();
        assert_eq!(
            offsets.len(),
            acks.len(),
            "an acknowledged offset was handed out twice"
        );
        if acks.len() == previous_acks {
            iterations_without_acks += 1;
        }
        let new_acks = acks.len() - previous_acks;
        previous_acks = acks.len();
        let close = iteration % 3 == 2;
        let root_for_verify = root.clone();
        let recovered = block_on_bounded(move || async move {
            Storage::Real
                .prime_data_dir(&root_for_verify)
                .await
                .expect("prime");
            recover_and_verify(&root_for_verify, &acks, close).await
        });
        completed += 1;
        verifications += recovered.acks_verified;
        torn_tails += recovered.torn_tails;
        max_recovery = max_recovery.max(recovered.recovery_time);
        println!(
            "crash test iteration {iteration}: killed {delay} ms after {} with {new_acks} new acks; \
             recovery in {:?} cut {} torn tails; log end {}, {} batches valid, all {} acks \
             verified{}",
            if during_start { "start" } else { "ready" },
            recovered.recovery_time,
            recovered.torn_tails,
            recovered.log_end_offset,
            recovered.batches_in_log,
            recovered.acks_verified,
            if close { "; closed cleanly" } else { "" },
        );
        last = Some(recovered);
    }
    let last = last.expect("at least one iteration ran");
    println!(
        "crash test summary (seed {seed}): {completed} iterations in {:?}; {} distinct \
         acknowledged batches, {verifications} ack verifications, all intact; final log end {} \
         with {} valid batches ({} never acknowledged); {torn_tails} torn tails truncated; \
         {iterations_without_acks} kills before any new ack ({children_not_ready} children never \
         got ready); max recovery time {max_recovery:?}",
        started.elapsed(),
        previous_acks,
        last.log_end_offset,
        last.batches_in_log,
        last.batches_in_log - previous_acks,
    );
    assert!(previous_acks > 0, "the children acknowledged appends");
}
