//! The controller quorum end to end, in one process on loopback: elections, commits seen by
//! every controller, the loss and return of a leader, restarts from disk (log and snapshots),
//! a single-controller quorum, a corrupt log, and garbage on the controller port.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringlog_cluster::controller::{
    new_topic_id, CommandResponse, ControllerConfig, ControllerId, ControllerNode, ControllerState,
    ControllerTuning, MetadataCommand, Quorum, TopicSpec, LOG_FILE, SNAPSHOT_FILE,
};

/// The longest any one wait of these tests may take: elections take a second or two at the
/// test tuning's timeouts, on a loaded two-core machine a few times that.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a wait re-checks its condition.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Fast elections, and a snapshot every 4 entries with nothing kept after it, so a few
/// commands exercise snapshots, purges and snapshot installation.
fn tuning() -> ControllerTuning {
    ControllerTuning {
        heartbeat_interval_ms: 150,
        election_timeout_min_ms: 600,
        election_timeout_max_ms: 1_200,
        snapshot_every_entries: 4,
        entries_kept_after_snapshot: 0,
    }
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + TEST_TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn create_topic(name: &str) -> MetadataCommand {
    MetadataCommand::CreateTopics {
        topics: vec![TopicSpec {
            name: name.into(),
            partition_count: 3,
            replication_factor: 1,
            configs: BTreeMap::new(),
            topic_id: new_topic_id(),
            assignments: Vec::new(),
        }],
        topic_defaults: Vec::new(),
    }
}

/// Registers and unfences broker 1 through controller `via`: topics are placed on unfenced
/// brokers, so a quorum with none refuses to create them.
fn add_broker(cluster: &Cluster, via: ControllerId) {
    let register = MetadataCommand::RegisterBroker {
        broker_id: 1,
        incarnation_id: 1,
        host: "broker-1".into(),
        port: 9092,
        rack: None,
    };
    let broker_epoch = match cluster
        .node(via)
        .propose_blocking(register)
        .expect("committed")
    {
        CommandResponse::Broker(Ok(epoch)) => epoch,
        other => panic!("not a registration: {other:?}"),
    };
    let unfence = MetadataCommand::UnfenceBroker {
        broker_id: 1,
        broker_epoch,
    };
    assert_eq!(
        cluster
            .node(via)
            .propose_blocking(unfence)
            .expect("committed"),
        CommandResponse::Broker(Ok(broker_epoch))
    );
}

fn assert_created(response: CommandResponse) {
    match response {
        CommandResponse::TopicsCreated(results) => {
            assert!(results.iter().all(Result::is_ok), "{results:?}")
        }
        other => panic!("not a CreateTopics response: {other:?}"),
    }
}

/// A quorum of controllers in one temporary directory.
struct Cluster {
    dir: tempfile::TempDir,
    quorum: Quorum,
    tuning: ControllerTuning,
    nodes: BTreeMap<ControllerId, Option<ControllerNode>>,
}

impl Cluster {
    /// Starts `size` controllers, ids 1.., on ports picked by binding port 0.
    fn start(size: u64, tuning: ControllerTuning) -> Cluster {
        let listeners: Vec<(ControllerId, TcpListener)> = (1..=size)
            .map(|id| (id, TcpListener::bind("127.0.0.1:0").expect("binds")))
            .collect();
        let list: Vec<String> = listeners
            .iter()
            .map(|(id, listener)| format!("{id}@{}", listener.local_addr().expect("bound address")))
            .collect();
        let quorum = Quorum::parse(&list.join(",")).expect("valid quorum");
        let mut cluster = Cluster {
            dir: tempfile::tempdir().expect("temp dir"),
            quorum,
            tuning,
            nodes: BTreeMap::new(),
        };
        for (id, listener) in listeners {
            let node =
                ControllerNode::start_with_listener(cluster.config(id), listener).expect("starts");
            cluster.nodes.insert(id, Some(node));
        }
        cluster
    }

    fn data_dir(&self, id: ControllerId) -> PathBuf {
        self.dir.path().join(format!("controller-{id}"))
    }

    fn config(&self, id: ControllerId) -> ControllerConfig {
        let address = self.quorum.address(id).expect("member");
        let mut config = ControllerConfig::new(id, address, self.quorum.clone(), self.data_dir(id));
        config.tuning = self.tuning.clone();
        config
    }

    fn node(&self, id: ControllerId) -> &ControllerNode {
        self.nodes[&id].as_ref().expect("running")
    }

    fn running(&self) -> impl Iterator<Item = &ControllerNode> {
        self.nodes.values().flatten()
    }

    fn stop(&mut self, id: ControllerId) {
        if let Some(node) = self.nodes.get_mut(&id).and_then(Option::take) {
            node.shutdown();
        }
    }

    fn restart(&mut self, id: ControllerId) {
        assert!(self.nodes[&id].is_none(), "stopped first");
        let node = ControllerNode::start(self.config(id)).expect("restarts from its directory");
        self.nodes.insert(id, Some(node));
    }

    /// Waits until every running controller names the same running leader, and the cluster
    /// has its id.
    fn leader(&self) -> ControllerId {
        let mut leader = None;
        wait_for("one leader known to every running controller", || {
            let seen: Vec<Option<ControllerId>> =
                self.running().map(ControllerNode::current_leader).collect();
            leader = seen[0];
            leader.is_some_and(|id| self.nodes[&id].is_some())
                && seen.iter().all(|each| *each == leader)
        });
        let leader = leader.expect("found");
        wait_for("the cluster id", || {
            self.node(leader).state().is_initialized()
        });
        leader
    }

    fn follower_of(&self, leader: ControllerId) -> ControllerId {
        self.running()
            .map(ControllerNode::id)
            .find(|id| *id != leader)
            .expect("a follower")
    }

    /// Waits until every running controller has applied the same state as `id`, and returns it.
    fn converged_on(&self, id: ControllerId) -> Arc<ControllerState> {
        let mut state = self.node(id).state();
        wait_for("every running controller to hold the same state", || {
            state = self.node(id).state();
            self.running().all(|node| *node.state() == *state)
        });
        state
    }
}

#[test]
fn three_controllers_commit_lose_their_leader_and_catch_up_again() {
    let mut cluster = Cluster::start(3, tuning());
    let leader = cluster.leader();
    add_broker(&cluster, leader);
    let cluster_id = cluster.node(leader).state().image.cluster_id.clone();

    // Proposed on a follower: forwarded to the leader, answered with the leader's result.
    let follower = cluster.follower_of(leader);
    assert_created(
        cluster
            .node(follower)
            .propose_blocking(create_topic("orders"))
            .expect("committed"),
    );
    let state = cluster.converged_on(leader);
    assert_eq!(
        state
            .image
            .topic("orders")
            .map(|topic| topic.partition_count),
        Some(3)
    );
    assert!(cluster
        .running()
        .all(|node| node.state().image.cluster_id == cluster_id));

    // The leader goes away; the other two elect one of them and go on committing, past a few
    // snapshots (every 4 entries, with the log purged behind each).
    let old_last_index = cluster.node(leader).raft_metrics().borrow().last_log_index;
    cluster.stop(leader);
    let new_leader = cluster.leader();
    assert_ne!(new_leader, leader);
    let survivor = cluster.follower_of(new_leader);
    for index in 0..8 {
        let proposer = if index % 2 == 0 { new_leader } else { survivor };
        assert_created(
            cluster
                .node(proposer)
                .propose_blocking(create_topic(&format!("after-{index}")))
                .expect("committed"),
        );
    }
    let producer_id = cluster
        .node(survivor)
        .propose_blocking(MetadataCommand::AllocateProducerId)
        .expect("committed");
    assert_eq!(producer_id, CommandResponse::ProducerId(0));
    let before_return = cluster.converged_on(new_leader);
    assert_eq!(before_return.image.topics.len(), 9);
    assert!(cluster.data_dir(survivor).join(SNAPSHOT_FILE).exists());
    // A follower purges its log behind each snapshot (a leader keeps what a lagging follower
    // still needs): the entries the stopped controller never had are now only in the
    // survivor's snapshot.
    wait_for(
        "the survivor to purge past the stopped controller's end",
        || {
            let metrics = cluster.node(survivor).raft_metrics().borrow().clone();
            metrics.purged.map(|purged| purged.index) > old_last_index
        },
    );

    // The new leader goes away too, and the old one comes back from its directory: with the
    // survivor it is a majority again. The survivor's log is the longer, so it leads, and
    // catches the returning controller up by sending its snapshot.
    cluster.stop(new_leader);
    cluster.restart(leader);
    assert_eq!(cluster.leader(), survivor);
    let caught_up = cluster.converged_on(survivor);
    assert_eq!(*caught_up, *before_return);
    let returned = cluster.node(leader).raft_metrics().borrow().clone();
    assert!(
        returned.snapshot.map(|snapshot| snapshot.index) > old_last_index,
        "caught up through a snapshot: {returned:?}"
    );

    // Everyone back: the third catches up as well and commits go on.
    cluster.restart(new_leader);
    assert_created(
        cluster
            .node(new_leader)
            .propose_blocking(create_topic("all-back"))
            .expect("committed"),
    );
    let last = cluster.converged_on(survivor);
    assert_eq!(last.image.topics.len(), 10);
    assert_eq!(last.image.cluster_id, cluster_id);
}

#[test]
fn all_three_controllers_restart_from_disk_with_their_state_intact() {
    let mut cluster = Cluster::start(3, tuning());
    let leader = cluster.leader();
    add_broker(&cluster, leader);
    for index in 0..6 {
        assert_created(
            cluster
                .node(leader)
                .propose_blocking(create_topic(&format!("topic-{index}")))
                .expect("committed"),
        );
    }
    let register = MetadataCommand::RegisterBroker {
        broker_id: 7,
        incarnation_id: 42,
        host: "broker-7".into(),
        port: 9092,
        rack: None,
    };
    let epoch = match cluster
        .node(leader)
        .propose_blocking(register)
        .expect("committed")
    {
        CommandResponse::Broker(Ok(epoch)) => epoch,
        other => panic!("not a registration: {other:?}"),
    };
    let unfence = MetadataCommand::UnfenceBroker {
        broker_id: 7,
        broker_epoch: epoch,
    };
    cluster
        .node(leader)
        .propose_blocking(unfence)
        .expect("committed");
    let before = cluster.converged_on(leader);
    assert!(!before.brokers[&7].fenced);

    for id in 1..=3 {
        cluster.stop(id);
    }
    for id in 1..=3 {
        // Every controller restarts from a snapshot and the log after it.
        assert!(cluster.data_dir(id).join(LOG_FILE).exists());
        assert!(cluster.data_dir(id).join(SNAPSHOT_FILE).exists());
        cluster.restart(id);
    }
    let leader = cluster.leader();
    let after = cluster.converged_on(leader);
    assert_eq!(*after, *before);
    assert_created(
        cluster
            .node(leader)
            .propose_blocking(create_topic("after-restart"))
            .expect("committed"),
    );
}

#[test]
fn a_single_controller_quorum_commits_and_restarts() {
    let mut cluster = Cluster::start(1, tuning());
    assert_eq!(cluster.leader(), 1);
    add_broker(&cluster, 1);
    assert_created(
        cluster
            .node(1)
            .propose_blocking(create_topic("solo"))
            .expect("committed"),
    );
    for expected in 0..6 {
        let response = cluster
            .node(1)
            .propose_blocking(MetadataCommand::AllocateProducerId)
            .expect("committed");
        assert_eq!(response, CommandResponse::ProducerId(expected));
    }
    let before = cluster.node(1).state();
    cluster.stop(1);
    cluster.restart(1);
    assert_eq!(cluster.leader(), 1);
    wait_for("the state from disk", || {
        *cluster.node(1).state() == *before
    });
    let response = cluster
        .node(1)
        .propose_blocking(MetadataCommand::AllocateProducerId)
        .expect("committed");
    assert_eq!(response, CommandResponse::ProducerId(6));
}

#[test]
fn a_corrupt_log_is_an_error_naming_the_file() {
    // No snapshots: the commands stay in the log.
    let mut cluster = Cluster::start(1, ControllerTuning::default());
    cluster.leader();
    add_broker(&cluster, 1);
    for name in ["a", "b", "c"] {
        assert_created(
            cluster
                .node(1)
                .propose_blocking(create_topic(name))
                .expect("committed"),
        );
    }
    cluster.stop(1);
    let path = cluster.data_dir(1).join(LOG_FILE);
    let mut bytes = std::fs::read(&path).expect("reads");
    // The first record is the header; damage the payload of the entry after it.
    let header_length = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    let damaged_at = 12 + header_length + 12 + 4;
    bytes[damaged_at] ^= 0x55;
    std::fs::write(&path, &bytes).expect("writes");
    let error = ControllerNode::start(cluster.config(1))
        .err()
        .expect("a corrupt log stops the start");
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains(&format!("offset {}", 12 + header_length)),
        "{message}"
    );
}

#[test]
fn garbage_on_the_controller_port_does_not_crash_a_controller() {
    let cluster = Cluster::start(1, tuning());
    cluster.leader();
    add_broker(&cluster, 1);
    let address = cluster.node(1).listen_address();
    let read_until_closed = |stream: &mut TcpStream| {
        stream
            .set_read_timeout(Some(TEST_TIMEOUT))
            .expect("sets timeout");
        let mut sink = Vec::new();
        // The controller closes the connection (EOF, or a reset if bytes were left unread).
        let _ = stream.read_to_end(&mut sink);
    };
    let garbage: [&[u8]; 4] = [
        // A length far over the frame limit.
        &[0xff, 0xff, 0xff, 0xff, 1, 2, 3],
        // A frame of bytes that are not JSON.
        &[0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef],
        // JSON, but not a request.
        b"\0\0\0\x0b{\"Nope\":17}",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ];
    for bytes in garbage {
        let mut stream = TcpStream::connect(address).expect("connects");
        stream.write_all(bytes).expect("writes");
        read_until_closed(&mut stream);
    }
    // A frame that starts and never finishes, abandoned by its sender.
    let mut stream = TcpStream::connect(address).expect("connects");
    stream.write_all(&[0, 0, 1, 0, b'{']).expect("writes");
    drop(stream);

    assert_created(
        cluster
            .node(1)
            .propose_blocking(create_topic("still-here"))
            .expect("committed"),
    );
    assert_eq!(cluster.node(1).current_leader(), Some(1));
}
