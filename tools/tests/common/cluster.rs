//! The multi-process cluster harness: N `ringlog serve` children on loopback ports picked for
//! the test, a controller quorum among them, each node's data directory and log file in one
//! temporary directory. Nodes are crashed (SIGKILL), frozen (SIGSTOP), thawed, stopped
//! (SIGTERM) and restarted on the same data and ports one at a time, so a test can stage
//! failover.
//!
//! Node numbers are the nodes' Kafka node ids, 1..=N. Every wait is bounded; only the
//! harness's own children are signalled, by PID; dropping the [`Cluster`] kills and reaps them
//! all and removes the directory (after printing every node's log tail if the test failed).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::{api_versions_ok, ringlog_command, wait_with_deadline, BROKER_STOP_TIMEOUT};

/// How long a whole cluster gets to start: every node answering ApiVersions and its admin
/// readiness endpoint. Nodes start in parallel, but the quorum elects a leader and every
/// broker registers before any is ready; on a loaded two-core machine, debug builds of three
/// nodes need several seconds.
pub const CLUSTER_START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one node gets to become ready again after a restart: recovery of a test's small
/// data directory and rejoining a running quorum.
pub const NODE_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one probe (a TCP connect, an ApiVersions, an HTTP request) may take. Loopback
/// answers in microseconds; anything slower counts as not ready yet.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// How often a polling wait looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How long one Metadata request may take within [`wait_brokers`]: a broker that is up answers
/// at once, so a longer wait would only delay the next try at a node that is not.
const METADATA_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Attempts at starting a cluster on fresh ports when a port picked was taken in between.
const START_ATTEMPTS: usize = 3;

/// Shards per node unless the options say otherwise: CI has two cores, shared by every node.
const CORES_DEFAULT: usize = 1;

/// Lines of each node's log printed when a test fails while the cluster runs.
const FAILURE_LOG_LINES: usize = 40;

/// The admin API's readiness endpoint: 200 once every shard has its metadata and serves.
pub const READY_PATH: &str = "/api/v1/ready";

/// Held by every running [`Cluster`] of a test binary: clusters of parallel tests would only
/// slow each other into timeouts on a two-core machine.
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// How a [`Cluster`] is started.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Flags given to every node after the harness's own (config overrides, `--num-partitions`,
    /// ...).
    pub extra_args: Vec<String>,
    /// Nodes (by id) that run only a broker: they get no `--controller-listen` and are not in
    /// the quorum. The others are the controllers: `serve` takes 1, 3 or 5, so a 2-node or
    /// 4-node cluster needs one here.
    pub brokers_only: Vec<i32>,
    /// `--cores` for every node.
    pub cores: usize,
    /// `RUST_LOG` for every node, when a test reads their debug logs.
    pub log_filter: Option<String>,
    /// Whether [`Cluster::start`] waits for every node to be ready ([`Cluster::wait_ready`]).
    pub wait_ready: bool,
}

impl Default for ClusterOptions {
    fn default() -> ClusterOptions {
        ClusterOptions {
            extra_args: Vec::new(),
            brokers_only: Vec::new(),
            cores: CORES_DEFAULT,
            log_filter: None,
            wait_ready: true,
        }
    }
}

/// One node: its fixed ports and files, and its process while it runs.
pub struct Node {
    id: i32,
    kafka_addr: SocketAddr,
    /// `None` for a broker-only node.
    controller_addr: Option<SocketAddr>,
    admin_addr: SocketAddr,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    /// Processes started for this node so far; each start is marked in the log.
    runs: usize,
}

impl Node {
    pub fn id(&self) -> i32 {
        self.id
    }

    /// The Kafka listener, `127.0.0.1:PORT`.
    pub fn kafka_addr(&self) -> SocketAddr {
        self.kafka_addr
    }

    /// The controller listener, `None` for a broker-only node.
    pub fn controller_addr(&self) -> Option<SocketAddr> {
        self.controller_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// `http://127.0.0.1:PORT` followed by `path` (`/api/v1/brokers`, `/metrics`, ...).
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Both output streams of every run of this node, each run after a `=== run N ===` line.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The node's PID, `None` once it has been killed, stopped or seen to exit.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// N `ringlog serve` processes forming one cluster.
pub struct Cluster {
    /// Indexed by node id - 1.
    nodes: Vec<Node>,
    /// `--controller-quorum`'s value, the same for every node.
    quorum: String,
    options: ClusterOptions,
    /// Holds every node's data directory and log; removed on drop, after the nodes are dead.
    root: tempfile::TempDir,
    /// Released after `Drop` has killed the nodes.
    _one_at_a_time: MutexGuard<'static, ()>,
}

impl Cluster {
    /// Starts `nodes` nodes (ids 1..=nodes) and, unless `options.wait_ready` is false, waits for
    /// all of them to be ready. Panics, with every node's log tail, if that fails.
    pub fn start(nodes: usize, options: ClusterOptions) -> Cluster {
        assert!(nodes >= 1, "a cluster has at least one node");
        assert!(
            (1..=nodes).any(|id| !options.brokers_only.contains(&node_id(id))),
            "at least one node must be a controller"
        );
        // A test that failed while holding the lock poisons it; the next test may still run.
        let one_at_a_time = ONE_CLUSTER_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let root = tempfile::Builder::new()
            .prefix("ringlog-cluster-")
            .tempdir()
            .expect("create the cluster's directory");
        let mut cluster = Cluster {
            nodes: Vec::new(),
            quorum: String::new(),
            options,
            root,
            _one_at_a_time: one_at_a_time,
        };
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            cluster.assign_ports(nodes);
            for id in 1..=nodes {
                cluster.spawn(node_id(id));
            }
            if !cluster.options.wait_ready {
                return cluster;
            }
            match cluster.wait_all_ready(CLUSTER_START_TIMEOUT) {
                Ok(()) => return cluster,
                Err(failure) => {
                    let in_use = cluster.nodes.iter().any(|node| {
                        let tail = log_tail_of(&node.log_path, FAILURE_LOG_LINES);
                        tail.contains("Address already in use") || tail.contains("AddrInUse")
                    });
                    last_failure = format!("{failure}\n{}", cluster.all_log_tails());
                    cluster.kill_all();
                    if !in_use {
                        break;
                    }
                }
            }
        }
        panic!("the cluster did not start: {last_failure}");
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Every node's Kafka address, comma-separated, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|node| node.kafka_addr.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `--controller-quorum`'s value: `1@127.0.0.1:PORT,...`, the controllers only.
    pub fn quorum(&self) -> &str {
        &self.quorum
    }

    /// Node `id` (1-based, its Kafka node id).
    pub fn node(&self, id: i32) -> &Node {
        let index = usize::try_from(id - 1).unwrap_or(usize::MAX);
        self.nodes
            .get(index)
            .unwrap_or_else(|| panic!("no node {id} in a {}-node cluster", self.nodes.len()))
    }

    fn node_mut(&mut self, id: i32) -> &mut Node {
        let count = self.nodes.len();
        let index = usize::try_from(id - 1).unwrap_or(usize::MAX);
        self.nodes
            .get_mut(index)
            .unwrap_or_else(|| panic!("no node {id} in a {count}-node cluster"))
    }

    /// True while node `id`'s process has not exited (a SIGSTOPped node is running).
    pub fn is_running(&mut self, id: i32) -> bool {
        let node = self.node_mut(id);
        match node.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills node `id` with SIGKILL, as a crash or power cut would, and reaps it.
    pub fn kill9(&mut self, id: i32) {
        let node = self.node_mut(id);
        let mut child = node
            .child
            .take()
            .unwrap_or_else(|| panic!("node {id} is not running"));
        // SIGKILL also ends a SIGSTOPped process.
        let _ = child.kill();
        assert!(
            wait_with_deadline(&mut child, BROKER_STOP_TIMEOUT).is_some(),
            "node {id} survived SIGKILL for {BROKER_STOP_TIMEOUT:?}"
        );
    }

    /// Freezes node `id` (SIGSTOP): its sockets stay open but nothing answers, as with a node
    /// stuck in a long GC pause or a hung disk.
    pub fn sigstop(&mut self, id: i32) {
        self.signal(id, libc::SIGSTOP);
    }

    /// Thaws node `id` after [`Cluster::sigstop`].
    pub fn sigcont(&mut self, id: i32) {
        self.signal(id, libc::SIGCONT);
    }

    /// Stops node `id` the way an operator does (SIGTERM) and returns its exit status. Panics,
    /// after killing it, if it does not exit within [`BROKER_STOP_TIMEOUT`].
    pub fn stop(&mut self, id: i32) -> ExitStatus {
        self.signal(id, libc::SIGTERM);
        let node = self.node_mut(id);
        let mut child = node.child.take().expect("signal checked it runs");
        match wait_with_deadline(&mut child, BROKER_STOP_TIMEOUT) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = wait_with_deadline(&mut child, BROKER_STOP_TIMEOUT);
                panic!(
                    "node {id} did not exit within {BROKER_STOP_TIMEOUT:?} of SIGTERM (killed)\n{}",
                    self.log_tail(id, FAILURE_LOG_LINES)
                );
            }
        }
    }

    /// Starts node `id` again with the same flags, data directory and ports, after
    /// [`Cluster::kill9`] or [`Cluster::stop`] (or its own death). Does not wait: call
    /// [`Cluster::wait_ready`].
    pub fn restart(&mut self, id: i32) {
        assert!(
            !self.is_running(id),
            "restart needs node {id} stopped or killed first"
        );
        self.node_mut(id).child = None;
        self.spawn(id);
    }

    /// Waits until node `id` answers ApiVersions on its Kafka port and its admin port's
    /// readiness endpoint answers 200, or `timeout` passes, or the node exits.
    pub fn wait_ready(&mut self, id: i32, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_running(id) {
                return Err(format!(
                    "node {id} is not running (exited or killed)\n{}",
                    self.log_tail(id, FAILURE_LOG_LINES)
                ));
            }
            let node = self.node(id);
            if api_versions_ok(node.kafka_addr, PROBE_TIMEOUT)
                && http_ok(&node.admin_url(READY_PATH))
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "node {id} not ready within {timeout:?} (ApiVersions on {}, GET {})\n{}",
                    node.kafka_addr,
                    node.admin_url(READY_PATH),
                    self.log_tail(id, FAILURE_LOG_LINES)
                ));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Waits until every running node is ready, within one shared `timeout`.
    pub fn wait_all_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        for index in 0..self.nodes.len() {
            let id = node_id(index + 1);
            let left = deadline.saturating_duration_since(Instant::now());
            self.wait_ready(id, left)?;
        }
        Ok(())
    }

    /// The ids of the brokers a Metadata request to `bootstrap()` lists, sorted.
    pub fn metadata_broker_ids(&self, timeout: Duration) -> Result<Vec<i32>, String> {
        metadata_broker_ids(&self.bootstrap(), timeout)
    }

    /// Waits until Metadata lists exactly the brokers `expected` (sorted ids), or `timeout`
    /// passes; returns the last list seen as the error.
    pub fn wait_brokers(&self, expected: &[i32], timeout: Duration) -> Result<(), String> {
        wait_brokers(&self.bootstrap(), expected, timeout)
    }

    /// The last `lines` lines of node `id`'s log (every run), framed for a failure message.
    pub fn log_tail(&self, id: i32, lines: usize) -> String {
        let node = self.node(id);
        format!(
            "--- node {id} log ({}), last {lines} lines ---\n{}--- end of node {id} log ---",
            node.log_path.display(),
            log_tail_of(&node.log_path, lines)
        )
    }

    fn all_log_tails(&self) -> String {
        self.nodes
            .iter()
            .map(|node| self.log_tail(node.id, FAILURE_LOG_LINES))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Picks a free loopback port for each listener of `count` nodes, holding every one until
    /// all are picked so that no two are the same, and lays out the nodes' files.
    fn assign_ports(&mut self, count: usize) {
        let mut held = Vec::new();
        let mut pick = || {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
            let addr = listener.local_addr().expect("local address");
            held.push(listener);
            addr
        };
        let mut nodes = Vec::with_capacity(count);
        for index in 1..=count {
            let id = node_id(index);
            let controller = !self.options.brokers_only.contains(&id);
            nodes.push(Node {
                id,
                kafka_addr: pick(),
                controller_addr: controller.then(&mut pick),
                admin_addr: pick(),
                data_dir: self.root.path().join(format!("node-{id}")),
                log_path: self.root.path().join(format!("node-{id}.log")),
                child: None,
                runs: 0,
            });
        }
        self.quorum = nodes
            .iter()
            .filter_map(|node| {
                node.controller_addr
                    .map(|controller| format!("{}@{controller}", node.id))
            })
            .collect::<Vec<_>>()
            .join(",");
        self.nodes = nodes;
        // `held` drops here, releasing the ports just before the nodes bind them.
    }

    /// Starts node `id`'s process, appending its output to its log.
    fn spawn(&mut self, id: i32) {
        let quorum = self.quorum.clone();
        let options = self.options.clone();
        let node = self.node_mut(id);
        node.runs += 1;
        std::fs::create_dir_all(&node.data_dir).expect("create the node's data directory");
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .expect("open the node's log");
        writeln!(log, "=== run {} ===", node.runs).expect("write the node's log");
        let stderr: File = log.try_clone().expect("clone the log file");
        let mut command = ringlog_command();
        command
            .arg("serve")
            .args(["--node-id", &id.to_string()])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--listen", &node.kafka_addr.to_string()])
            .args(["--advertise", &node.kafka_addr.to_string()])
            .args(["--admin-listen", &node.admin_addr.to_string()])
            .args(["--controller-quorum", &quorum])
            .args(["--cores", &options.cores.to_string()])
            // Every node of the test shares the machine's cores.
            .args(["--pin-to-cores", "false"]);
        if let Some(controller) = node.controller_addr {
            command.args(["--controller-listen", &controller.to_string()]);
        }
        command
            .args(&options.extra_args)
            // Plain text in the log, for failure reports.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr));
        if let Some(filter) = &options.log_filter {
            command.env("RUST_LOG", filter);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("spawning node {id}: {error}"));
        node.child = Some(child);
    }

    /// Sends `signal` to node `id` by its PID; panics if the node is not running.
    fn signal(&mut self, id: i32, signal: libc::c_int) {
        assert!(self.is_running(id), "node {id} is not running");
        let pid = self.node(id).pid().expect("a running node has a PID");
        let pid = libc::pid_t::try_from(pid).expect("a PID fits pid_t");
        // SAFETY: kill(2) has no memory effects; the PID is our own unreaped child, so it cannot
        // have been reused by another process.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            sent,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// SIGKILLs and reaps every node still running.
    fn kill_all(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = wait_with_deadline(&mut child, BROKER_STOP_TIMEOUT);
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A failing test shows what the nodes said, whatever the assertion that failed.
        if thread::panicking() {
            eprintln!("{}", self.all_log_tails());
        }
        self.kill_all();
    }
}

/// The `index`th node's id (they are 1..=N).
fn node_id(index: usize) -> i32 {
    i32::try_from(index).expect("a node count fits i32")
}

/// Whether a GET of `url` answers 200 within [`PROBE_TIMEOUT`].
fn http_ok(url: &str) -> bool {
    ureq::AgentBuilder::new()
        .timeout(PROBE_TIMEOUT)
        .build()
        .get(url)
        .call()
        .is_ok_and(|response| response.status() == 200)
}

/// The last `lines` lines of the file at `path`, each ending in a newline.
fn log_tail_of(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..]
                .iter()
                .map(|line| format!("{line}\n"))
                .collect()
        }
        Err(error) => format!("(cannot read {}: {error})\n", path.display()),
    }
}

/// The ids of the brokers a Metadata request to `bootstrap` lists, sorted (rdkafka's
/// metadata request, bounded by `timeout`).
pub fn metadata_broker_ids(bootstrap: &str, timeout: Duration) -> Result<Vec<i32>, String> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let consumer: BaseConsumer = super::rdkafka::client_config(bootstrap, &[])
        .create()
        .map_err(|error| format!("creating a client for {bootstrap}: {error}"))?;
    let metadata = consumer
        .fetch_metadata(None, timeout)
        .map_err(|error| format!("Metadata from {bootstrap}: {error}"))?;
    let mut ids: Vec<i32> = metadata
        .brokers()
        .iter()
        .map(|broker| broker.id())
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Waits until Metadata from `bootstrap` lists exactly the brokers `expected` (sorted ids), or
/// `timeout` passes; the error carries the last answer.
pub fn wait_brokers(bootstrap: &str, expected: &[i32], timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let last = match metadata_broker_ids(bootstrap, left.min(METADATA_REQUEST_TIMEOUT)) {
            Ok(ids) if ids == expected => return Ok(()),
            Ok(ids) => format!("brokers {ids:?}"),
            Err(error) => error,
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "Metadata from {bootstrap} did not list brokers {expected:?} within \
                 {timeout:?}; last: {last}"
            ));
        }
        thread::sleep(POLL_INTERVAL);
    }
}
