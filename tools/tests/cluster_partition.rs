//! A 3-node cluster split by a network partition: every node in a network namespace of its own
//! (`common::netns`), the partition leader cut off from the two others with nftables while one
//! acks=all producer keeps writing to it from its own host and another writes from the
//! majority's side. The isolated old leader must acknowledge nothing that the cluster later
//! loses (0 split-brain acknowledgements), the majority must elect a new leader and keep
//! acknowledging, and once healed the old leader must truncate its divergent tail and rejoin
//! the ISR. Every acknowledged record, from either side, must then be in the final log at the
//! offset it was acknowledged at, with its payload.
//!
//! Needs root, `ip` and `nft`, and a kernel that lets it make network namespaces; without them
//! it skips, unless `RINGLOG_REQUIRE_CLIENTS` is set.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::cluster::{CLUSTER_START_TIMEOUT, READY_PATH};
use common::netns::{self, Network};
use common::{api_versions_ok, missing_client, wait_with_deadline, BROKER_STOP_TIMEOUT};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};

/// The nodes, one per host: node N runs on host N - 1, at 10.77.0.N.
const NODES: usize = 3;

/// Each node's listeners on its own host's address.
const KAFKA_PORT: u16 = 9092;
const CONTROLLER_PORT: u16 = 9093;
const ADMIN_PORT: u16 = 9644;

const TOPIC: &str = "split";

/// Timings that make a failover take seconds rather than Kafka's defaults' ten or more: a
/// broker silent for 3 s is fenced, heartbeats every 500 ms, a follower 5 s behind leaves the
/// ISR (the same as `tests/cluster.rs`).
const NODE_ARGS: [&str; 6] = [
    "--broker-session-timeout-ms",
    "3000",
    "--broker-heartbeat-interval-ms",
    "500",
    "--replica-lag-time-max-ms",
    "5000",
];

/// How long one readiness probe (TCP connect, ApiVersions, HTTP GET) may take. The bridge
/// answers in well under a millisecond; anything slower counts as not ready yet.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// How often a polling wait looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How long one Metadata or watermark request may take: a reachable broker answers at once.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the new topic gets to have a leader and all three replicas in its ISR.
const FULL_ISR_TIMEOUT: Duration = Duration::from_secs(60);

/// How long both producers run on the whole network before the cut, so that the old leader
/// has acknowledged records of both and the followers are replicating.
const WARMUP: Duration = Duration::from_secs(3);

/// How long the majority may take to elect a new leader after the cut: the controller fences
/// the old leader after the 3 s session timeout and moves leadership at once; 20 s leaves
/// room for a loaded two-core machine.
const NEW_LEADER_TIMEOUT: Duration = Duration::from_secs(20);

/// How long, after the new leader is known, the majority's producer gets to have a record
/// acknowledged: it finds the leader through a metadata refresh every second.
const MAJORITY_ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// The minority producer's `message.timeout.ms`: a record the isolated leader cannot commit
/// fails this long after it was sent.
const MINORITY_MESSAGE_TIMEOUT_MS: u64 = 10_000;

/// The majority producer's `message.timeout.ms`: long enough to outlast the failover, so its
/// records wait for the new leader rather than fail.
const MAJORITY_MESSAGE_TIMEOUT_MS: u64 = 30_000;

/// Both producers' `request.timeout.ms`: a produce request the cut swallowed is given up and
/// retried (after a metadata refresh) this soon, not after librdkafka's default 30 s.
const REQUEST_TIMEOUT_MS: u64 = 5_000;

/// Both producers' `socket.timeout.ms`, which caps how long librdkafka waits for the answer to
/// a produce request it sent: a request swallowed by the cut fails after this long, not after
/// the default 60 s (or the message timeout), so an idempotent producer stuck behind it moves
/// on to the new leader. Above [`REQUEST_TIMEOUT_MS`], so a reachable broker's own timeout
/// answer comes first.
const SOCKET_TIMEOUT_MS: u64 = 6_000;

/// The partition lasts at least this long after the cut: longer than the minority's message
/// timeout, so every record it sends to the isolated leader in the first seconds of the
/// partition has its final delivery report while the partition still holds.
const PARTITION_MIN: Duration = Duration::from_millis(MINORITY_MESSAGE_TIMEOUT_MS + 5_000);

/// Each producer sends one record this often (about 50 a second).
const PRODUCE_INTERVAL: Duration = Duration::from_millis(20);

/// Bounds on each producer's loop, whatever the test's control flow does: records sent, and
/// time. The partition ends well before either (warm-up, failover, then [`PARTITION_MIN`]).
const RECORDS_MAX: u64 = 5_000;
const PRODUCE_TIME_MAX: Duration = Duration::from_secs(90);

/// How long a producer waits, after it stops sending, for the delivery report of everything
/// it sent: its message timeout and a margin.
const FLUSH_MARGIN: Duration = Duration::from_secs(10);

/// How long the healed old leader gets to truncate its divergent tail, catch up and rejoin
/// the ISR.
const REJOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// How long reading the partition back to its high watermark may take.
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(60);

/// Lines of each node's log printed when the test fails.
const FAILURE_LOG_LINES: usize = 60;

/// The host (network index) node `id` runs on.
fn host_of(id: i32) -> usize {
    usize::try_from(id - 1).expect("node ids start at 1")
}

/// The three nodes, each in its host's namespace, and the network under them. Dropping it kills
/// the nodes (by PID, our children) before the namespaces go, then removes the directory.
struct NamespacedCluster {
    /// Indexed by host; `None` once reaped.
    nodes: Vec<Option<Child>>,
    logs: Vec<PathBuf>,
    network: Network,
    root: tempfile::TempDir,
}

impl NamespacedCluster {
    fn start(network: Network) -> NamespacedCluster {
        let root = tempfile::Builder::new()
            .prefix("ringlog-partition-")
            .tempdir()
            .expect("create the cluster's directory");
        let quorum = (0..NODES)
            .map(|host| format!("{}@{}:{CONTROLLER_PORT}", host + 1, network.address(host)))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = NamespacedCluster {
            nodes: Vec::new(),
            logs: Vec::new(),
            network,
            root,
        };
        for host in 0..NODES {
            let address = cluster.network.address(host);
            let data_dir = cluster.root.path().join(format!("node-{}", host + 1));
            let log_path = cluster.root.path().join(format!("node-{}.log", host + 1));
            let log = std::fs::File::create(&log_path).expect("create the node's log");
            let stderr = log.try_clone().expect("clone the log file");
            let mut command = cluster.network.command(host, env!("CARGO_BIN_EXE_ringlog"));
            // The binary reads settings from `RINGLOG_*`; only the flags below may count.
            for (name, _) in std::env::vars_os() {
                if name.to_string_lossy().starts_with("RINGLOG_") {
                    command.env_remove(name);
                }
            }
            command
                .arg("serve")
                .args(["--node-id", &(host + 1).to_string()])
                .arg("--data-dir")
                .arg(&data_dir)
                .args(["--listen", &format!("{address}:{KAFKA_PORT}")])
                .args(["--advertise", &format!("{address}:{KAFKA_PORT}")])
                .args(["--admin-listen", &format!("{address}:{ADMIN_PORT}")])
                .args([
                    "--controller-listen",
                    &format!("{address}:{CONTROLLER_PORT}"),
                ])
                .args(["--controller-quorum", &quorum])
                .args(["--cores", "1"])
                .args(["--pin-to-cores", "false"])
                .args(NODE_ARGS)
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::from(log))
                .stderr(Stdio::from(stderr));
            let child = command
                .spawn()
                .unwrap_or_else(|error| panic!("spawning node {}: {error}", host + 1));
            cluster.nodes.push(Some(child));
            cluster.logs.push(log_path);
        }
        cluster
    }

    fn network(&self) -> &Network {
        &self.network
    }

    /// Node `id`'s Kafka address.
    fn kafka_addr(&self, id: i32) -> SocketAddr {
        SocketAddr::from((self.network.address(host_of(id)), KAFKA_PORT))
    }

    /// `bootstrap.servers` naming only the nodes `ids`.
    fn bootstrap(&self, ids: &[i32]) -> String {
        ids.iter()
            .map(|id| self.kafka_addr(*id).to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn log_path(&self, id: i32) -> &Path {
        &self.logs[host_of(id)]
    }

    /// Panics, with the node's log, if node `id` has exited.
    fn assert_running(&mut self, id: i32) {
        let exited = match self.nodes[host_of(id)].as_mut() {
            Some(child) => child.try_wait().ok().flatten(),
            None => None,
        };
        if let Some(status) = exited {
            panic!("node {id} exited ({status})");
        }
    }

    /// Waits until every node answers ApiVersions and its readiness endpoint answers 200, both
    /// asked from the node's own host.
    fn wait_all_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for id in 1..=NODES as i32 {
            loop {
                self.assert_running(id);
                let kafka = self.kafka_addr(id);
                let ready_url = format!(
                    "http://{}:{ADMIN_PORT}{READY_PATH}",
                    self.network.address(host_of(id))
                );
                let ready = self.network.on_host(host_of(id), move || {
                    api_versions_ok(kafka, PROBE_TIMEOUT)
                        && ureq::AgentBuilder::new()
                            .timeout(PROBE_TIMEOUT)
                            .build()
                            .get(&ready_url)
                            .call()
                            .is_ok_and(|response| response.status() == 200)
                });
                if ready {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {id} not ready within {timeout:?}"
                );
                thread::sleep(POLL_INTERVAL);
            }
        }
    }

    /// The last `lines` lines of every node's log, framed.
    fn log_tails(&self, lines: usize) -> String {
        (1..=NODES as i32)
            .map(|id| {
                let text = std::fs::read_to_string(self.log_path(id)).unwrap_or_default();
                let all: Vec<&str> = text.lines().collect();
                format!(
                    "--- node {id} log, last {lines} lines ---\n{}\n--- end of node {id} log ---",
                    all[all.len().saturating_sub(lines)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for NamespacedCluster {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", self.log_tails(FAILURE_LOG_LINES));
        }
        for child in self.nodes.iter_mut().filter_map(Option::take) {
            let mut child = child;
            // Our own child, by its PID (`ip netns exec` execs the broker in place).
            let _ = child.kill();
            let _ = wait_with_deadline(&mut child, BROKER_STOP_TIMEOUT);
        }
        // `network` drops next (its namespaces now hold no process), then `root`.
    }
}

/// (leader, ISR) of partition 0 of [`TOPIC`], as `client`'s Metadata answer says now.
fn layout(client: &BaseConsumer) -> Option<(i32, Vec<i32>)> {
    let metadata = client.fetch_metadata(Some(TOPIC), CLIENT_TIMEOUT).ok()?;
    let topic = metadata
        .topics()
        .iter()
        .find(|topic| topic.name() == TOPIC)?;
    let partition = topic
        .partitions()
        .iter()
        .find(|partition| partition.id() == 0)?;
    Some((partition.leader(), partition.isr().to_vec()))
}

/// A metadata-only client of `bootstrap`.
fn metadata_client(bootstrap: &str) -> BaseConsumer {
    common::rdkafka::client_config(bootstrap, &[("group.id", "partition-metadata")])
        .create()
        .expect("metadata client")
}

/// Polls `bootstrap`'s Metadata until the layout satisfies `done` or `timeout` passes: the
/// layout and when it was seen, or the last layout seen as the error. Run it on a host.
fn wait_for_layout(
    bootstrap: &str,
    timeout: Duration,
    done: impl Fn(i32, &[i32]) -> bool,
) -> Result<((i32, Vec<i32>), Instant), String> {
    let client = metadata_client(bootstrap);
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Some((leader, isr)) = layout(&client) {
            if done(leader, &isr) {
                return Ok(((leader, isr), Instant::now()));
            }
            last = Some((leader, isr));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{TOPIC} from {bootstrap} after {timeout:?}: last (leader, ISR) {last:?}"
            ));
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// One acknowledged record: where the leader said it is, what it holds, and when the client
/// learnt of it.
#[derive(Clone, Debug)]
struct Ack {
    offset: i64,
    payload: String,
    at: Instant,
}

/// What one producer's delivery reports said.
#[derive(Debug, Default)]
struct ProducerRun {
    sent: u64,
    acked: Vec<Ack>,
    failed: u64,
    /// The first few delivery errors, for the report.
    errors: Vec<String>,
    /// Records with no delivery report when the flush gave up.
    unreported: usize,
}

/// Delivery errors kept for the report.
const ERRORS_KEPT: usize = 5;

/// Missing acknowledged records listed in a failure message: enough to see a pattern in the
/// offsets, few enough to read.
const REPORTED_MAX: usize = 20;

/// Collects the producer's delivery reports; the opaque is the record's payload.
struct Reports(Arc<Mutex<ProducerRun>>);

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<String>;

    fn delivery(&self, result: &DeliveryResult<'_>, payload: Box<String>) {
        let mut run = self.0.lock().expect("lock");
        match result {
            Ok(message) => run.acked.push(Ack {
                offset: message.offset(),
                payload: *payload,
                at: Instant::now(),
            }),
            Err((error, _)) => {
                run.failed += 1;
                if run.errors.len() < ERRORS_KEPT {
                    run.errors.push(format!("{payload}: {error}"));
                }
            }
        }
    }
}

/// How one of the two producers is set up.
struct ProducerSpec {
    bootstrap: String,
    /// Payloads are `{tag}-{sequence}`.
    tag: &'static str,
    idempotent: bool,
    message_timeout_ms: u64,
}

/// Produces `{tag}-N` records to partition 0 of [`TOPIC`], acks=all, one every
/// [`PRODUCE_INTERVAL`], until `stop` is set (or [`RECORDS_MAX`] / [`PRODUCE_TIME_MAX`]), then
/// waits for every delivery report; `run` fills in as the reports arrive. Run it on a host:
/// the client's threads, started here, stay in that host's namespace.
fn produce_until(spec: ProducerSpec, run: Arc<Mutex<ProducerRun>>, stop: Arc<AtomicBool>) {
    let message_timeout = spec.message_timeout_ms.to_string();
    let request_timeout = REQUEST_TIMEOUT_MS.to_string();
    let socket_timeout = SOCKET_TIMEOUT_MS.to_string();
    let producer: BaseProducer<Reports> = common::rdkafka::client_config(
        &spec.bootstrap,
        &[
            ("acks", "all"),
            (
                "enable.idempotence",
                if spec.idempotent { "true" } else { "false" },
            ),
            ("message.timeout.ms", &message_timeout),
            ("request.timeout.ms", &request_timeout),
            ("socket.timeout.ms", &socket_timeout),
            ("retry.backoff.ms", "100"),
            ("linger.ms", "5"),
            ("topic.metadata.refresh.interval.ms", "1000"),
        ],
    )
    .create_with_context(Reports(Arc::clone(&run)))
    .expect("producer");
    let started = Instant::now();
    let mut sequence: u64 = 0;
    while !stop.load(Ordering::SeqCst)
        && sequence < RECORDS_MAX
        && started.elapsed() < PRODUCE_TIME_MAX
    {
        let payload = format!("{}-{sequence}", spec.tag);
        let record =
            BaseRecord::<(), str, Box<String>>::with_opaque_to(TOPIC, Box::new(payload.clone()))
                .partition(0)
                .payload(&payload);
        // A full queue fails the send; the poll below lets it drain.
        if producer.send(record).is_ok() {
            sequence += 1;
            run.lock().expect("lock").sent = sequence;
        }
        producer.poll(PRODUCE_INTERVAL);
    }
    let flush_timeout = Duration::from_millis(spec.message_timeout_ms) + FLUSH_MARGIN;
    // Records still unreported after it are counted below.
    let _ = producer.flush(flush_timeout);
    let unreported = producer.in_flight_count();
    run.lock().expect("lock").unreported = usize::try_from(unreported).unwrap_or(usize::MAX);
}

/// How many of `run`'s acknowledgements arrived after `instant`.
fn acked_after(run: &Mutex<ProducerRun>, instant: Instant) -> usize {
    let run = run.lock().expect("lock");
    run.acked.iter().filter(|ack| ack.at > instant).count()
}

/// Reads partition 0 of [`TOPIC`] from its beginning to its high watermark: offset → payload.
/// Run it on a host.
fn read_back(bootstrap: &str) -> HashMap<i64, String> {
    let consumer: BaseConsumer = common::rdkafka::client_config(
        bootstrap,
        &[
            ("group.id", "partition-check"),
            ("enable.auto.commit", "false"),
        ],
    )
    .create()
    .expect("consumer");
    let (_, high_watermark) = consumer
        .fetch_watermarks(TOPIC, 0, CLIENT_TIMEOUT)
        .expect("watermarks");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(TOPIC, 0, Offset::Beginning)
        .expect("assignment");
    consumer.assign(&assignment).expect("assign");
    let mut stored = HashMap::new();
    let mut next_offset = 0;
    let deadline = Instant::now() + READ_BACK_TIMEOUT;
    while next_offset < high_watermark {
        assert!(
            Instant::now() < deadline,
            "read-back reached offset {next_offset} of {high_watermark} in {READ_BACK_TIMEOUT:?}"
        );
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(500)) {
            let payload = String::from_utf8_lossy(message.payload().unwrap_or_default());
            stored.insert(message.offset(), payload.into_owned());
            next_offset = message.offset() + 1;
        }
    }
    stored
}

/// Sets every flag when dropped, also when a panic unwinds past it.
struct StopOnDrop(Vec<Arc<AtomicBool>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        for flag in &self.0 {
            flag.store(true, Ordering::SeqCst);
        }
    }
}

/// Acknowledged records not in `stored` at their offset with their payload.
fn missing<'a>(acked: &'a [Ack], stored: &HashMap<i64, String>) -> Vec<&'a Ack> {
    acked
        .iter()
        .filter(|ack| stored.get(&ack.offset) != Some(&ack.payload))
        .collect()
}

#[test]
fn an_isolated_leader_acknowledges_nothing_the_majority_loses() {
    if let Some(missing) = netns::unavailable() {
        missing_client(&missing);
        return;
    }
    let network = match Network::try_create(NODES) {
        Ok(network) => network,
        Err(failure) => {
            missing_client(&failure);
            return;
        }
    };
    let mut cluster = NamespacedCluster::start(network);
    cluster.wait_all_ready(CLUSTER_START_TIMEOUT);
    let all_ids: Vec<i32> = (1..=NODES as i32).collect();

    // The topic, from host 0, and its leader once all three replicas are in the ISR.
    let bootstrap_all = cluster.bootstrap(&all_ids);
    let (leader, _) = cluster.network().on_host(0, move || {
        let admin: AdminClient<DefaultClientContext> =
            common::rdkafka::client_config(&bootstrap_all, &[])
                .create()
                .expect("admin client");
        let topic =
            NewTopic::new(TOPIC, 1, TopicReplication::Fixed(3)).set("min.insync.replicas", "2");
        let created =
            futures_lite::future::block_on(admin.create_topics([&topic], &AdminOptions::new()))
                .expect("CreateTopics answered");
        for result in created {
            result.expect("topic created");
        }
        wait_for_layout(&bootstrap_all, FULL_ISR_TIMEOUT, |leader, isr| {
            leader > 0 && isr.len() == NODES
        })
        .expect("a leader and a full ISR")
        .0
    });
    let majority: Vec<i32> = all_ids.iter().copied().filter(|id| *id != leader).collect();
    let majority_host = host_of(majority[0]);
    eprintln!("{TOPIC}: leader node {leader}, majority nodes {majority:?}");

    let minority_stop = Arc::new(AtomicBool::new(false));
    let majority_stop = Arc::new(AtomicBool::new(false));
    let minority_run = Arc::new(Mutex::new(ProducerRun::default()));
    let majority_run = Arc::new(Mutex::new(ProducerRun::default()));
    let minority_spec = ProducerSpec {
        // Its own host reaches only the old leader once the partition is in place.
        bootstrap: cluster.bootstrap(&[leader]),
        tag: "minority",
        idempotent: false,
        message_timeout_ms: MINORITY_MESSAGE_TIMEOUT_MS,
    };
    let majority_spec = ProducerSpec {
        bootstrap: cluster.bootstrap(&majority),
        tag: "majority",
        idempotent: true,
        message_timeout_ms: MAJORITY_MESSAGE_TIMEOUT_MS,
    };
    let majority_bootstrap = cluster.bootstrap(&majority);

    let (cut_at, new_leader, new_leader_seen_at, first_majority_ack) = thread::scope(|scope| {
        let network = cluster.network();
        // A failed check below stops both producers before the scope waits for them.
        let _stop_on_failure =
            StopOnDrop(vec![Arc::clone(&minority_stop), Arc::clone(&majority_stop)]);
        let minority = {
            let stop = Arc::clone(&minority_stop);
            let run = Arc::clone(&minority_run);
            scope.spawn(move || {
                network.on_host(host_of(leader), move || {
                    produce_until(minority_spec, run, stop)
                })
            })
        };
        let majority_producer = {
            let stop = Arc::clone(&majority_stop);
            let run = Arc::clone(&majority_run);
            scope.spawn(move || {
                network.on_host(majority_host, move || {
                    produce_until(majority_spec, run, stop)
                })
            })
        };
        thread::sleep(WARMUP);

        // The rules go in host by host, within milliseconds: the cut counts from when
        // they are all in place, so an acknowledgement after it cannot have been sent
        // across it.
        network.partition(&[host_of(leader)]);
        let cut_at = Instant::now();
        eprintln!("partition: node {leader} cut off from {majority:?}");

        let bootstrap = majority_bootstrap.clone();
        let ((new_leader, _), seen_at) = network
            .on_host(majority_host, move || {
                wait_for_layout(&bootstrap, NEW_LEADER_TIMEOUT, |new_leader, _| {
                    new_leader > 0 && new_leader != leader
                })
            })
            .unwrap_or_else(|failure| panic!("no new leader on the majority's side: {failure}"));

        // The majority keeps serving: its producer's records are acknowledged again.
        let ack_deadline = seen_at + MAJORITY_ACK_TIMEOUT;
        while acked_after(&majority_run, cut_at) == 0 {
            if Instant::now() >= ack_deadline {
                let run = majority_run.lock().expect("lock");
                panic!(
                    "the majority acknowledged nothing within {MAJORITY_ACK_TIMEOUT:?} of \
                     electing node {new_leader} (sent {}, failed {}, errors {:?})",
                    run.sent, run.failed, run.errors
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
        let first_majority_ack = Instant::now();

        // Keep the partition until the minority has had its full message timeout.
        let partition_end = cut_at + PARTITION_MIN;
        thread::sleep(partition_end.saturating_duration_since(Instant::now()));
        minority_stop.store(true, Ordering::SeqCst);
        minority.join().expect("minority producer");
        majority_stop.store(true, Ordering::SeqCst);
        majority_producer.join().expect("majority producer");
        (cut_at, new_leader, seen_at, first_majority_ack)
    });
    let minority_run = std::mem::take(&mut *minority_run.lock().expect("lock"));
    let majority_run = std::mem::take(&mut *majority_run.lock().expect("lock"));
    let time_to_new_leader = new_leader_seen_at - cut_at;
    let time_to_majority_ack = first_majority_ack - cut_at;
    let majority_after_cut = majority_run
        .acked
        .iter()
        .filter(|ack| ack.at > cut_at)
        .count();

    let healed_at = Instant::now();
    cluster.network().heal();
    let bootstrap = cluster.bootstrap(&majority);
    let ((final_leader, final_isr), rejoined_at) = cluster
        .network()
        .on_host(majority_host, move || {
            wait_for_layout(&bootstrap, REJOIN_TIMEOUT, |leader_now, isr| {
                leader_now > 0 && isr.contains(&leader) && isr.len() == NODES
            })
        })
        .unwrap_or_else(|failure| panic!("node {leader} did not rejoin the ISR: {failure}"));
    let time_to_rejoin = rejoined_at - healed_at;

    let bootstrap = cluster.bootstrap(&all_ids);
    let stored = cluster
        .network()
        .on_host(majority_host, move || read_back(&bootstrap));

    let minority_before_cut = minority_run
        .acked
        .iter()
        .filter(|ack| ack.at <= cut_at)
        .count();
    let minority_after_cut: Vec<&Ack> = minority_run
        .acked
        .iter()
        .filter(|ack| ack.at > cut_at)
        .collect();
    let split_brain = missing(&minority_run.acked, &stored);
    let majority_lost = missing(&majority_run.acked, &stored);
    let last_minority_ack = minority_after_cut
        .iter()
        .map(|ack| ack.at - cut_at)
        .max()
        .unwrap_or_default();
    let truncations: Vec<String> = std::fs::read_to_string(cluster.log_path(leader))
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("truncat") && line.contains(&format!("{TOPIC}-0")))
        .map(|line| line.to_string())
        .collect();
    eprintln!(
        "network partition of leader {leader}:\n\
         - new leader {new_leader} {time_to_new_leader:?} after the cut, first majority \
         acknowledgement {time_to_majority_ack:?} after it\n\
         - minority producer: sent {}, acknowledged {minority_before_cut} before the cut and {} \
         after (last {last_minority_ack:?} after), failed {}, unreported {}\n\
         - majority producer: sent {}, acknowledged {} ({majority_after_cut} after the cut), \
         failed {}, unreported {}\n\
         - healed: node {leader} back in the ISR {time_to_rejoin:?} later (leader \
         {final_leader}, ISR {final_isr:?}); final log {} records\n\
         - split-brain acknowledgements {}, majority acknowledgements lost {}",
        minority_run.sent,
        minority_after_cut.len(),
        minority_run.failed,
        minority_run.unreported,
        majority_run.sent,
        majority_run.acked.len(),
        majority_run.failed,
        majority_run.unreported,
        stored.len(),
        split_brain.len(),
        majority_lost.len(),
    );
    eprintln!(
        "minority acknowledgements after the cut (offset, payload, after the cut): {:?}",
        minority_after_cut
            .iter()
            .map(|ack| (ack.offset, &ack.payload, ack.at - cut_at))
            .collect::<Vec<_>>()
    );
    eprintln!(
        "minority delivery errors (first {ERRORS_KEPT}): {:?}",
        minority_run.errors
    );
    eprintln!(
        "majority delivery errors (first {ERRORS_KEPT}): {:?}",
        majority_run.errors
    );
    eprintln!("node {leader}'s truncations: {truncations:#?}");

    assert!(
        minority_before_cut > 0,
        "the old leader acknowledged nothing even before the cut: the test proves nothing"
    );
    assert!(
        minority_run.failed > 0,
        "no minority record failed: the cut did not stop the old leader's acknowledgements"
    );
    assert!(
        split_brain.is_empty(),
        "{} split-brain acknowledgements: the isolated leader acknowledged records that are \
         not in the final log at their offset (at most {REPORTED_MAX}): {:?}",
        split_brain.len(),
        split_brain
            .iter()
            .take(REPORTED_MAX)
            .map(|ack| (
                ack.offset,
                &ack.payload,
                ack.at.saturating_duration_since(cut_at),
                stored.get(&ack.offset)
            ))
            .collect::<Vec<_>>()
    );
    assert!(
        majority_lost.is_empty(),
        "{} majority acknowledgements not in the final log (at most {REPORTED_MAX}): {:?}",
        majority_lost.len(),
        majority_lost
            .iter()
            .take(REPORTED_MAX)
            .map(|ack| (ack.offset, &ack.payload, stored.get(&ack.offset)))
            .collect::<Vec<_>>()
    );
    drop(cluster);
}
