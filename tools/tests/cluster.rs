//! Multi-node clusters of `ringlog serve` processes on loopback, with faults injected:
//! - leaders killed (SIGKILL) in turn while an idempotent acks=all producer runs, then
//!   everything read back: acknowledged records lost (must be 0), duplicates, out-of-order
//!   records, and the time from a kill to the next acknowledged produce are printed;
//! - a paused broker (SIGSTOP) leaves the ISR and rejoins after SIGCONT;
//! - the active controller killed while topics are being created;
//! - a group's committed offsets outlive its coordinator.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, ClusterOptions};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "failover";
const PARTITIONS: i32 = 3;

/// Kills: the leader of each partition in turn, twice round.
const KILLS: usize = 6;

/// The producer sends one record this often (bounded load: at most ~500 records a second).
const PRODUCE_INTERVAL: Duration = Duration::from_millis(2);

/// Timings that make a failover take seconds rather than Kafka's defaults' ten or more: a
/// broker silent for 3 s is fenced, heartbeats every 500 ms, a follower 5 s behind leaves the
/// ISR.
const NODE_ARGS: [&str; 6] = [
    "--broker-session-timeout-ms",
    "3000",
    "--broker-heartbeat-interval-ms",
    "500",
    "--replica-lag-time-max-ms",
    "5000",
];

/// How long, at most, one failover (kill to the next acknowledged produce), a restart with
/// its return to the ISR, and the final flush and read-back may each take.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);
const REJOIN_TIMEOUT: Duration = Duration::from_secs(60);
const FLUSH_TIMEOUT: Duration = Duration::from_secs(120);
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(60);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the producer's delivery reports say.
#[derive(Default)]
struct Deliveries {
    /// (partition, offset, sequence) of every acknowledged record.
    acked: Mutex<Vec<(i32, i64, u64)>>,
    /// When each partition's latest acknowledgement arrived.
    last_ack: Mutex<HashMap<i32, Instant>>,
    failed: AtomicU64,
}

struct Reports(Arc<Deliveries>);

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, sequence: Box<u64>) {
        match result {
            Ok(message) => {
                self.0.acked.lock().expect("lock").push((
                    message.partition(),
                    message.offset(),
                    *sequence,
                ));
                self.0
                    .last_ack
                    .lock()
                    .expect("lock")
                    .insert(message.partition(), Instant::now());
            }
            Err((error, _)) => {
                eprintln!("delivery of {sequence} failed: {error}");
                self.0.failed.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// (leader, ISR) of each partition of `TOPIC`, as the cluster's metadata says now.
fn layout(client: &BaseConsumer) -> Option<Vec<(i32, Vec<i32>)>> {
    layout_of(client, TOPIC, PARTITIONS)
}

/// (leader, ISR) of each of `partitions` partitions of `name`.
fn layout_of(client: &BaseConsumer, name: &str, count: i32) -> Option<Vec<(i32, Vec<i32>)>> {
    let metadata = client.fetch_metadata(Some(name), CLIENT_TIMEOUT).ok()?;
    let topic = metadata
        .topics()
        .iter()
        .find(|topic| topic.name() == name)?;
    let mut partitions: Vec<(i32, i32, Vec<i32>)> = topic
        .partitions()
        .iter()
        .map(|partition| (partition.id(), partition.leader(), partition.isr().to_vec()))
        .collect();
    partitions.sort();
    (partitions.len() == count as usize).then(|| {
        partitions
            .into_iter()
            .map(|(_, leader, isr)| (leader, isr))
            .collect()
    })
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[test]
fn leaders_killed_while_producing_lose_no_acknowledged_record() {
    let (mut cluster, metadata_client) = cluster_with_topic(TOPIC, PARTITIONS);
    let bootstrap = cluster.bootstrap();

    let deliveries = Arc::new(Deliveries::default());
    let producer: ThreadedProducer<Reports> = common::rdkafka::client_config(
        &bootstrap,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("message.timeout.ms", "120000"),
            ("retry.backoff.ms", "100"),
            ("linger.ms", "5"),
            ("topic.metadata.refresh.interval.ms", "1000"),
        ],
    )
    .create_with_context(Reports(Arc::clone(&deliveries)))
    .expect("producer");
    let producer = Arc::new(producer);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let producing = {
        let producer = Arc::clone(&producer);
        let stop = Arc::clone(&stop);
        let sent = Arc::clone(&sent);
        thread::spawn(move || {
            let mut sequence: u64 = 0;
            while !stop.load(Ordering::SeqCst) {
                let payload = sequence.to_be_bytes();
                let record =
                    BaseRecord::<(), [u8], Box<u64>>::with_opaque_to(TOPIC, Box::new(sequence))
                        .partition((sequence % PARTITIONS as u64) as i32)
                        .payload(&payload);
                match producer.send(record) {
                    Ok(()) => {
                        sequence += 1;
                        sent.store(sequence, Ordering::SeqCst);
                    }
                    // Queue full: let it drain.
                    Err((_, _)) => thread::sleep(Duration::from_millis(50)),
                }
                thread::sleep(PRODUCE_INTERVAL);
            }
        })
    };

    let mut failovers: Vec<Duration> = Vec::new();
    for kill in 0..KILLS {
        let partition = (kill as i32) % PARTITIONS;
        let leader = loop {
            if let Some(layout) = layout(&metadata_client) {
                let (leader, _) = &layout[partition as usize];
                if *leader > 0 {
                    break *leader;
                }
            }
            thread::sleep(Duration::from_millis(200));
        };
        thread::sleep(Duration::from_secs(1));
        let killed_at = Instant::now();
        cluster.kill9(leader);
        eprintln!("kill {kill}: node {leader}, leader of partition {partition}");
        let deadline = killed_at + FAILOVER_TIMEOUT;
        let recovered = loop {
            // The killed leader's partition acknowledging again proves the failover.
            let last = deliveries
                .last_ack
                .lock()
                .expect("lock")
                .get(&partition)
                .copied();
            if let Some(last) = last.filter(|last| *last > killed_at) {
                break last - killed_at;
            }
            // Another node's log says why no leader took over.
            let survivor = leader % 3 + 1;
            assert!(
                Instant::now() < deadline,
                "no produce acknowledged within {FAILOVER_TIMEOUT:?} of killing node {leader}\n{}",
                cluster.log_tail(survivor, 40)
            );
            thread::sleep(Duration::from_millis(10));
        };
        failovers.push(recovered);
        cluster.restart(leader);
        cluster
            .wait_ready(leader, REJOIN_TIMEOUT)
            .expect("the killed node comes back");
        let deadline = Instant::now() + REJOIN_TIMEOUT;
        loop {
            if let Some(layout) = layout(&metadata_client) {
                if layout
                    .iter()
                    .all(|(leader, isr)| *leader > 0 && isr.len() == 3)
                {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {leader} did not rejoin every ISR within {REJOIN_TIMEOUT:?}\n{}",
                cluster.log_tail(leader, 60)
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
    stop.store(true, Ordering::SeqCst);
    producing.join().expect("producer thread");
    producer
        .flush(FLUSH_TIMEOUT)
        .expect("every record delivered or failed");
    let sent = sent.load(Ordering::SeqCst);

    // Read everything back, from the beginning to each partition's high watermark.
    let consumer: BaseConsumer = common::rdkafka::client_config(
        &bootstrap,
        &[
            ("group.id", "failover-check"),
            ("enable.auto.commit", "false"),
        ],
    )
    .create()
    .expect("consumer");
    let mut ends = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        let (_, high) = consumer
            .fetch_watermarks(TOPIC, partition, CLIENT_TIMEOUT)
            .expect("watermarks");
        ends.insert(partition, high);
        assignment
            .add_partition_offset(TOPIC, partition, Offset::Beginning)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let mut read: HashMap<i32, Vec<(i64, u64)>> = HashMap::new();
    let deadline = Instant::now() + READ_BACK_TIMEOUT;
    while (0..PARTITIONS).any(|partition| {
        read.get(&partition)
            .and_then(|records| records.last())
            .map_or(0, |(offset, _)| offset + 1)
            < ends[&partition]
    }) {
        assert!(
            Instant::now() < deadline,
            "read-back did not reach the high watermarks"
        );
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(500)) {
            let payload = message.payload().expect("payload");
            let sequence = u64::from_be_bytes(payload.try_into().expect("8-byte payload"));
            read.entry(message.partition())
                .or_default()
                .push((message.offset(), sequence));
        }
    }

    let acked = deliveries.acked.lock().expect("lock").clone();
    let stored: HashMap<(i32, i64), u64> = read
        .iter()
        .flat_map(|(partition, records)| {
            records
                .iter()
                .map(move |(offset, sequence)| ((*partition, *offset), *sequence))
        })
        .collect();
    let lost: Vec<&(i32, i64, u64)> = acked
        .iter()
        .filter(|(partition, offset, sequence)| {
            stored.get(&(*partition, *offset)) != Some(sequence)
        })
        .collect();
    let mut seen = HashSet::new();
    let duplicates = stored
        .values()
        .filter(|sequence| !seen.insert(**sequence))
        .count();
    let out_of_order: usize = read
        .values()
        .map(|records| {
            records
                .windows(2)
                .filter(|pair| pair[1].1 <= pair[0].1)
                .count()
        })
        .sum();
    failovers.sort();
    eprintln!(
        "cluster failover: sent {sent}, acknowledged {}, failed {}, stored {}, lost {}, \
         duplicates {duplicates}, out of order {out_of_order}; kill to next acknowledged \
         produce over {} kills: p50 {:?}, max {:?}",
        acked.len(),
        deliveries.failed.load(Ordering::SeqCst),
        stored.len(),
        lost.len(),
        failovers.len(),
        percentile(&failovers, 0.5),
        failovers.last().copied().unwrap_or_default(),
    );
    assert!(
        lost.is_empty(),
        "acknowledged records lost: {:?}",
        &lost[..lost.len().min(20)]
    );
    assert_eq!(
        duplicates, 0,
        "an idempotent producer's records were stored twice"
    );
    assert_eq!(out_of_order, 0, "records out of order within a partition");
    assert!(!acked.is_empty());
}

/// Starts a 3-node cluster with the test timings and creates `name` (RF 3,
/// `min.insync.replicas` 2), waiting until every partition has a leader and a full ISR.
fn cluster_with_topic(name: &str, partitions: i32) -> (Cluster, BaseConsumer) {
    let options = ClusterOptions {
        extra_args: NODE_ARGS.iter().map(|arg| arg.to_string()).collect(),
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(3, options);
    let bootstrap = cluster.bootstrap();
    let admin: AdminClient<DefaultClientContext> = common::rdkafka::client_config(&bootstrap, &[])
        .create()
        .expect("admin client");
    let topic =
        NewTopic::new(name, partitions, TopicReplication::Fixed(3)).set("min.insync.replicas", "2");
    let created =
        futures_lite::future::block_on(admin.create_topics([&topic], &AdminOptions::new()))
            .expect("CreateTopics answered");
    for result in created {
        result.expect("topic created");
    }
    let client: BaseConsumer =
        common::rdkafka::client_config(&bootstrap, &[("group.id", "cluster-test-metadata")])
            .create()
            .expect("metadata client");
    wait_for_layout(&client, name, partitions, REJOIN_TIMEOUT, |layout| {
        layout
            .iter()
            .all(|(leader, isr)| *leader > 0 && isr.len() == 3)
    })
    .expect("leaders and full ISRs");
    (cluster, client)
}

/// Waits until `name`'s layout satisfies `done`; the last layout seen as the error.
fn wait_for_layout(
    client: &BaseConsumer,
    name: &str,
    partitions: i32,
    timeout: Duration,
    done: impl Fn(&[(i32, Vec<i32>)]) -> bool,
) -> Result<Vec<(i32, Vec<i32>)>, String> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Some(layout) = layout_of(client, name, partitions) {
            if done(&layout) {
                return Ok(layout);
            }
            last = Some(layout);
        }
        if Instant::now() >= deadline {
            return Err(format!("{name} after {timeout:?}: {last:?}"));
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Delivery reports sent back to whoever produced the record.
struct Answered;

impl ClientContext for Answered {}

impl ProducerContext for Answered {
    type DeliveryOpaque = Box<mpsc::Sender<Result<(i32, i64), String>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, answer: Self::DeliveryOpaque) {
        let _ = answer.send(match result {
            Ok(message) => Ok((message.partition(), message.offset())),
            Err((error, _)) => Err(error.to_string()),
        });
    }
}

/// An acks=all idempotent producer whose sends are awaited one by one.
fn acks_all_producer(bootstrap: &str) -> BaseProducer<Answered> {
    common::rdkafka::client_config(
        bootstrap,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("message.timeout.ms", "30000"),
            ("topic.metadata.refresh.interval.ms", "1000"),
        ],
    )
    .create_with_context(Answered)
    .expect("producer")
}

/// Produces one record and waits for its delivery report.
fn produce(
    producer: &BaseProducer<Answered>,
    topic: &str,
    partition: i32,
    payload: &[u8],
) -> Result<(i32, i64), String> {
    let (sender, answer) = mpsc::channel();
    let record = BaseRecord::with_opaque_to(topic, Box::new(sender))
        .partition(partition)
        .payload(payload)
        .key(&[] as &[u8]);
    producer
        .send(record)
        .map_err(|(error, _)| error.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        producer.poll(Duration::from_millis(50));
        if let Ok(result) = answer.try_recv() {
            return result;
        }
        if Instant::now() >= deadline {
            return Err("no delivery report".into());
        }
    }
}

#[test]
fn a_paused_broker_leaves_the_isr_and_rejoins_after_sigcont() {
    const NAME: &str = "paused";
    let (mut cluster, client) = cluster_with_topic(NAME, 1);
    let layout = layout_of(&client, NAME, 1).expect("layout");
    let leader = layout[0].0;
    let paused = (1..=3).find(|id| *id != leader).expect("a follower");
    let producer = acks_all_producer(&cluster.bootstrap());
    produce(&producer, NAME, 0, b"before").expect("produce before the pause");

    let paused_at = Instant::now();
    cluster.sigstop(paused);
    // Keep producing: a follower leaves the ISR for falling behind the leader's log end.
    let shrunk = loop {
        let _ = produce(&producer, NAME, 0, b"while paused");
        if let Some(layout) = layout_of(&client, NAME, 1) {
            if !layout[0].1.contains(&paused) && layout[0].0 > 0 {
                break paused_at.elapsed();
            }
        }
        assert!(
            paused_at.elapsed() < REJOIN_TIMEOUT,
            "node {paused} was still in the ISR {REJOIN_TIMEOUT:?} after SIGSTOP\n{}",
            cluster.log_tail(leader, 40)
        );
        thread::sleep(Duration::from_millis(100));
    };
    // With two of three in the ISR, acks=all produces still succeed.
    produce(&producer, NAME, 0, b"after the shrink").expect("acks=all with 2 in the ISR");

    let resumed_at = Instant::now();
    cluster.sigcont(paused);
    let rejoined = loop {
        let _ = produce(&producer, NAME, 0, b"after the pause");
        if let Some(layout) = layout_of(&client, NAME, 1) {
            if layout[0].1.contains(&paused) {
                break resumed_at.elapsed();
            }
        }
        assert!(
            resumed_at.elapsed() < REJOIN_TIMEOUT,
            "node {paused} did not rejoin the ISR within {REJOIN_TIMEOUT:?} of SIGCONT\n{}",
            cluster.log_tail(paused, 40)
        );
        thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "paused broker {paused}: out of the ISR {shrunk:?} after SIGSTOP, back {rejoined:?} \
         after SIGCONT"
    );
}

/// The active controller's id, as a Metadata response names it (`ringlog cluster info`).
fn active_controller(cluster: &Cluster) -> Option<i32> {
    let output = common::ringlog_command()
        .args(["cluster", "info", "--brokers", &cluster.bootstrap()])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix("CONTROLLER"))
        .and_then(|rest| rest.trim().parse().ok())
}

#[test]
fn topics_created_while_the_active_controller_is_killed_all_exist() {
    const TOPICS: usize = 12;
    let (mut cluster, client) = cluster_with_topic("controller-failover-seed", 1);
    let bootstrap = cluster.bootstrap();
    let creating = thread::spawn(move || {
        let admin: AdminClient<DefaultClientContext> =
            common::rdkafka::client_config(&bootstrap, &[])
                .create()
                .expect("admin client");
        let mut retries = 0;
        for index in 0..TOPICS {
            let name = format!("created-{index}");
            let topic = NewTopic::new(&name, 2, TopicReplication::Fixed(3));
            let deadline = Instant::now() + FAILOVER_TIMEOUT;
            loop {
                let options = AdminOptions::new().operation_timeout(Some(CLIENT_TIMEOUT));
                let outcome =
                    futures_lite::future::block_on(admin.create_topics([&topic], &options));
                match outcome.map(|mut results| results.remove(0)) {
                    Ok(Ok(_)) => break,
                    Ok(Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists))) => break,
                    other => {
                        retries += 1;
                        assert!(Instant::now() < deadline, "{name} never created: {other:?}");
                        thread::sleep(Duration::from_millis(200));
                    }
                }
            }
            thread::sleep(Duration::from_millis(100));
        }
        retries
    });
    thread::sleep(Duration::from_millis(500));
    let controller = active_controller(&cluster).expect("an active controller");
    cluster.kill9(controller);
    eprintln!("killed node {controller}, the active controller");
    thread::sleep(Duration::from_secs(3));
    cluster.restart(controller);
    cluster
        .wait_ready(controller, REJOIN_TIMEOUT)
        .expect("the old controller comes back");
    let retries = creating.join().expect("creating thread");
    // Every node ends up with every topic, each partition with a leader.
    for id in 1..=3 {
        let node_client: BaseConsumer = common::rdkafka::client_config(
            &cluster.node(id).kafka_addr().to_string(),
            &[("group.id", "controller-failover-check")],
        )
        .create()
        .expect("client");
        for index in 0..TOPICS {
            wait_for_layout(
                &node_client,
                &format!("created-{index}"),
                2,
                REJOIN_TIMEOUT,
                |layout| layout.iter().all(|(leader, _)| *leader > 0),
            )
            .unwrap_or_else(|error| panic!("node {id}: {error}"));
        }
    }
    let _ = client;
    eprintln!("controller failover: {TOPICS} topics created, {retries} CreateTopics retried");
}

#[test]
fn committed_offsets_outlive_the_group_coordinator() {
    const NAME: &str = "orders";
    const RECORDS: i64 = 30;
    let (mut cluster, _client) = cluster_with_topic(NAME, 3);
    let bootstrap = cluster.bootstrap();
    let producer = acks_all_producer(&bootstrap);
    for index in 0..RECORDS {
        produce(&producer, NAME, (index % 3) as i32, &index.to_be_bytes()).expect("produce");
    }
    let consumer: BaseConsumer = common::rdkafka::client_config(
        &bootstrap,
        &[
            ("group.id", "survivors"),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
        ],
    )
    .create()
    .expect("consumer");
    consumer.subscribe(&[NAME]).expect("subscribe");
    let mut consumed = 0;
    let deadline = Instant::now() + READ_BACK_TIMEOUT;
    while consumed < RECORDS {
        assert!(
            Instant::now() < deadline,
            "consumed only {consumed} of {RECORDS}"
        );
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(500)) {
            consumed += 1;
        }
    }
    consumer
        .commit_consumer_state(CommitMode::Sync)
        .expect("offsets committed");
    drop(consumer);

    let mut connection =
        ringlog_net::client::Connection::connect(&cluster.node(1).kafka_addr().to_string(), "test")
            .expect("connect");
    let coordinator = ringlog_net::client::group::find_coordinator(&mut connection, "survivors")
        .expect("FindCoordinator");
    let coordinator = (1..=3)
        .find(|id| cluster.node(*id).kafka_addr().to_string() == coordinator)
        .expect("the coordinator is a node");
    cluster.kill9(coordinator);
    eprintln!("killed node {coordinator}, the group's coordinator");

    let survivor = (1..=3).find(|id| *id != coordinator).expect("a survivor");
    let consumer: BaseConsumer = common::rdkafka::client_config(
        &cluster.node(survivor).kafka_addr().to_string(),
        &[("group.id", "survivors"), ("enable.auto.commit", "false")],
    )
    .create()
    .expect("consumer");
    let mut wanted = TopicPartitionList::new();
    for partition in 0..3 {
        wanted.add_partition(NAME, partition);
    }
    let deadline = Instant::now() + FAILOVER_TIMEOUT;
    let total = loop {
        if let Ok(committed) = consumer.committed_offsets(wanted.clone(), CLIENT_TIMEOUT) {
            let total: i64 = committed
                .elements()
                .iter()
                .filter_map(|element| match element.offset() {
                    Offset::Offset(offset) => Some(offset),
                    _ => None,
                })
                .sum();
            if total == RECORDS {
                break total;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the committed offsets were not found after the coordinator died"
        );
        thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(total, RECORDS);
}

#[test]
fn preferred_leader_election_moves_leadership_back_after_a_failover() {
    const NAME: &str = "preferred";
    let (mut cluster, client) = cluster_with_topic(NAME, 1);
    let preferred = layout_of(&client, NAME, 1).expect("layout")[0].0;
    cluster.kill9(preferred);
    let moved = wait_for_layout(&client, NAME, 1, FAILOVER_TIMEOUT, |layout| {
        layout[0].0 > 0 && layout[0].0 != preferred
    })
    .expect("a new leader");
    cluster.restart(preferred);
    cluster
        .wait_ready(preferred, REJOIN_TIMEOUT)
        .expect("the preferred replica comes back");
    wait_for_layout(&client, NAME, 1, REJOIN_TIMEOUT, |layout| {
        layout[0].1.len() == 3
    })
    .expect("the preferred replica rejoins the ISR");

    let survivor = moved[0].0;
    let mut connection = ringlog_net::client::Connection::connect(
        &cluster.node(survivor).kafka_addr().to_string(),
        "test",
    )
    .expect("connect");
    let code = elect_preferred(&mut connection, NAME);
    assert_eq!(
        code, 0,
        "the preferred election failed with error code {code}"
    );
    wait_for_layout(&client, NAME, 1, REJOIN_TIMEOUT, |layout| {
        layout[0].0 == preferred
    })
    .expect("leadership back on the preferred replica");
    // Asking again: it already leads.
    assert_eq!(
        elect_preferred(&mut connection, NAME),
        kafka_protocol::ResponseError::ElectionNotNeeded.code()
    );
}

/// ElectLeaders (preferred) for partition 0 of `topic`; its error code.
fn elect_preferred(connection: &mut ringlog_net::client::Connection, topic: &'static str) -> i16 {
    use kafka_protocol::messages::{
        elect_leaders_request, ApiKey, ElectLeadersRequest, RequestKind, ResponseKind, TopicName,
    };
    let request = ElectLeadersRequest::default()
        .with_election_type(0)
        .with_timeout_ms(10_000)
        .with_topic_partitions(Some(vec![elect_leaders_request::TopicPartitions::default(
        )
        .with_topic(TopicName(
            kafka_protocol::protocol::StrBytes::from_static_str(topic),
        ))
        .with_partitions(vec![0])]));
    let (_, response) = connection
        .call(
            ApiKey::ElectLeaders,
            0..=2,
            RequestKind::ElectLeaders(request),
        )
        .expect("ElectLeaders answered");
    let ResponseKind::ElectLeaders(response) = response else {
        panic!("not an ElectLeaders response");
    };
    response.replica_election_results[0].partition_result[0].error_code
}
