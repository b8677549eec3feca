//! `ringlog-bench kafka` against a real `ringlog serve` process: the load generator's own
//! numbers must add up (everything acknowledged is read back, once and in order; a target rate is
//! kept; latencies are recorded for every measured message), with and without a consumer group,
//! with compression and keys over several partitions. Short runs: correctness, not speed.

mod common;

use clap::Parser;
use ringlog_bench::kafka::result::WorkloadResult;
use ringlog_bench::kafka::KafkaArgs;

use common::Broker;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: KafkaArgs,
}

fn bench(broker: &Broker, extra: &[&str]) -> WorkloadResult {
    let bootstrap = broker.bootstrap();
    let pid = broker.pid().to_string();
    let mut argv = vec![
        "bench",
        "--bootstrap",
        &bootstrap,
        "--pid",
        &pid,
        "--quiet",
        "--verify",
    ];
    // Short runs unless the test says otherwise.
    for (flag, value) in [("--warmup-s", "0.5"), ("--duration-s", "2")] {
        if !extra.contains(&flag) {
            argv.extend([flag, value]);
        }
    }
    argv.extend_from_slice(extra);
    let cli = Cli::try_parse_from(&argv).expect("arguments parse");
    ringlog_bench::kafka::run(&cli.args)
        .unwrap_or_else(|error| panic!("{error:#}\n{}", broker.stderr_report()))
}

fn assert_all_read_back(result: &WorkloadResult) {
    assert!(result.errors.is_empty(), "errors: {:?}", result.errors);
    let verification = result.verification.as_ref().expect("verified");
    assert!(verification.acknowledged > 0, "{verification:?}");
    assert_eq!(verification.lost, 0, "{verification:?}");
    assert_eq!(verification.duplicates, 0, "{verification:?}");
    assert_eq!(verification.out_of_order, 0, "{verification:?}");
    assert_eq!(verification.read_back, verification.acknowledged);
    assert!(result.produced.messages > 0 && result.produced.messages_per_s > 0.0);
    // Every message produced in the window was acknowledged with a latency, and every one
    // the consumers read carried a send time.
    assert!(result.publish_latency.count >= result.produced.messages / 2);
    assert!(result.end_to_end_latency.count > 0);
    assert!(result.publish_latency.p50_us <= result.publish_latency.p99_us);
    assert!(result.publish_latency.p99_us <= result.publish_latency.max_us);
    let process = result.broker_process.as_ref().expect("broker sampled");
    assert!(process.cpu_seconds > 0.0 && process.rss_max_kib > 0);
    assert!(!result.timeline.is_empty());
}

#[test]
fn max_rate_with_a_group_reads_back_everything() {
    let broker = Broker::start();
    let result = bench(
        &broker,
        &[
            "--group",
            "bench-group",
            "--consumers",
            "2",
            "--partitions",
            "2",
        ],
    );
    assert_all_read_back(&result);
}

#[test]
fn compressed_keyed_batches_over_partitions_without_a_group() {
    let broker = Broker::start();
    let result = bench(
        &broker,
        &[
            "--partitions",
            "4",
            "--consumers",
            "2",
            "--producers",
            "2",
            "--compression",
            "zstd",
            "--keys",
            "random",
            "--message-size",
            "300",
            "--acks",
            "1",
        ],
    );
    assert_all_read_back(&result);
}

#[test]
fn a_target_rate_is_kept() {
    const RATE: f64 = 2_000.0;
    let broker = Broker::start();
    let result = bench(&broker, &["--rate", "2000", "--linger-ms", "0"]);
    assert_all_read_back(&result);
    let ratio = result.produced.messages_per_s / RATE;
    assert!(
        (0.8..=1.1).contains(&ratio),
        "asked for {RATE} msg/s, got {:.0}",
        result.produced.messages_per_s
    );
    // At 2,000 msg/s with no linger every message is its own batch: the publish latency
    // histogram holds one sample per message, and the consumer saw each of them.
    assert_eq!(
        result.publish_latency.count, result.end_to_end_latency.count,
        "{result:?}"
    );
}

/// A target rate above what one request in flight can carry: messages pile up while the
/// window is full, and must queue in more batches rather than grow one past `batch.size` (the
/// broker refuses a batch over the topic's `max.message.bytes` with MESSAGE_TOO_LARGE).
#[test]
fn a_backlog_behind_a_full_window_stays_in_batch_size_batches() {
    let broker = Broker::start();
    let result = bench(
        &broker,
        &[
            "--rate",
            "50000",
            "--batch-size",
            "1024",
            "--max-in-flight",
            "1",
            "--topic-config",
            "max.message.bytes=2048",
        ],
    );
    assert_all_read_back(&result);
}

/// The stalled-consumer soak in small: one consumer stops reading while the producer runs its
/// partition past `retention.bytes`. Resumed after producing, it finds the oldest segments
/// deleted (OFFSET_OUT_OF_RANGE), skips them as Kafka's `auto.offset.reset=earliest` does, and
/// reads the rest: what retention deleted counts as expired, and nothing else may be missing.
/// The other consumer reads its partition throughout.
#[test]
fn a_stalled_consumer_resumes_past_retention_and_nothing_else_is_lost() {
    let broker = Broker::start_with(&["--log-retention-check-interval-ms", "100"]);
    let result = bench(
        &broker,
        &[
            "--partitions",
            "2",
            "--consumers",
            "2",
            "--stall-consumer-after-s",
            "0.2",
            "--duration-s",
            "3",
            "--topic-config",
            "segment.bytes=262144",
            "--topic-config",
            "retention.bytes=524288",
        ],
    );
    assert!(result.errors.is_empty(), "errors: {:?}", result.errors);
    let verification = result.verification.as_ref().expect("verified");
    assert!(
        verification.expired > 0,
        "retention deleted nothing: {verification:?}"
    );
    assert_eq!(verification.lost, 0, "{verification:?}");
    assert_eq!(verification.duplicates, 0, "{verification:?}");
    assert_eq!(verification.out_of_order, 0, "{verification:?}");
    assert_eq!(
        verification.read_back + verification.expired,
        verification.acknowledged,
        "{verification:?}"
    );
    // The live consumer kept reading after the stall: more was read than the 0.2 s before it.
    assert!(
        result.consumed.messages > result.produced.messages / 4,
        "{} consumed of {} produced",
        result.consumed.messages,
        result.produced.messages
    );
}

/// Twelve producer connections to a one-partition topic on a two-shard broker: the kernel puts
/// about half on the shard that does not own the partition, and each of those is handed to the
/// owner at its first Produce, with more Produce requests pipelined behind it. Everything must
/// still be acknowledged once and read back in order, and the broker's log must show handovers
/// (the chance that all twelve land on the owner is 1 in 4,096).
#[test]
fn producer_connections_move_to_their_partitions_shard_and_keep_order() {
    let broker = Broker::start_logging(&[], Some("info,ringlog_net::connection=debug"));
    let result = bench(
        &broker,
        &[
            "--producers",
            "12",
            "--partitions",
            "1",
            "--consumers",
            "1",
            "--max-in-flight",
            "5",
        ],
    );
    assert_all_read_back(&result);
    let log = std::fs::read_to_string(broker.stderr_path()).expect("broker log");
    let handed_over = log.matches("connection handed over").count();
    assert!(
        (1..=12).contains(&handed_over),
        "{handed_over} handovers\n{}",
        broker.stderr_report()
    );
}

#[test]
fn a_consume_only_run_drains_a_backlog() {
    let broker = Broker::start();
    let topic = common::unique_topic("backlog");
    let mut connection =
        ringlog_net::client::Connection::connect(&broker.bootstrap(), "ringlog-test")
            .expect("connects");
    ringlog_net::client::admin::create_topics(
        &mut connection,
        std::slice::from_ref(&topic),
        3,
        1,
        &[],
        false,
    )
    .expect("creates the topic");
    let produced = bench(&broker, &["--reuse-topic", &topic, "--consumers", "0"]);
    assert!(produced.errors.is_empty(), "{:?}", produced.errors);
    let acknowledged: u64 = produced.produced.messages;
    assert!(acknowledged > 0);
    let consumed = bench(
        &broker,
        &[
            "--reuse-topic",
            &topic,
            "--producers",
            "0",
            "--consumers",
            "2",
            "--from",
            "earliest",
            "--drain",
            "--duration-s",
            "60",
        ],
    );
    assert!(consumed.errors.is_empty(), "{:?}", consumed.errors);
    // The backlog is everything produced, warm-up included: at least the measured window.
    assert!(
        consumed.consumed.messages >= acknowledged,
        "read {} of at least {acknowledged}",
        consumed.consumed.messages
    );
    assert!(consumed.duration_s < 60.0, "the drain ended by itself");
    assert!(consumed.consumed.messages_per_s > 0.0);
}
