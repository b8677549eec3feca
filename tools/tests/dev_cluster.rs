//! `ringlog dev cluster` run as a user runs it: its table and bootstrap line, its `ringlog
//! serve` children answering on their ports and forming one cluster, a node's death reported
//! while the others run, and SIGTERM stopping everything with exit status 0. Also the
//! multi-process cluster harness (`common::cluster`) on its own: crash a node, restart it.

mod common;

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use common::cluster::{wait_brokers, Cluster, ClusterOptions, NODE_READY_TIMEOUT};
use common::{api_versions_ok, ringlog_command, wait_with_deadline};

/// How long `dev cluster` gets to print its table: it only checks ports and spawns processes.
const TABLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the dev cluster's nodes get to be ready and list each other in Metadata: a quorum
/// election and three broker registrations, on a loaded two-core machine.
const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long `dev cluster` gets to exit after SIGTERM: its own 30 s bound on the nodes' clean
/// shutdown, plus the SIGKILL and reaping after it.
const DEV_STOP_TIMEOUT: Duration = Duration::from_secs(40);

/// How long a usage error may take: no node is started.
const USAGE_ERROR_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the death of a node may take to be reported: `dev cluster` checks every 100 ms.
const DEATH_REPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a killed node's process may take to disappear once its parent has reaped it.
const PROCESS_GONE_TIMEOUT: Duration = Duration::from_secs(5);

/// The ports the tests' base ports are drawn from: below Linux's ephemeral range (32768 up),
/// so an outgoing connection never takes one, and above the usual services'.
const BASE_PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;

/// Base ports tried before giving up on finding nine free ports.
const BASE_PORT_ATTEMPTS: usize = 50;

/// `dev cluster`'s port layout (tools/src/dev.rs): Kafka at base, controller at base + 100,
/// admin at base + 200, one port per node in each range.
const PORT_OFFSETS: [u16; 3] = [0, 100, 200];

/// A base port whose `nodes` ports in each of `dev cluster`'s ranges are free now.
fn free_base_port(nodes: u16) -> u16 {
    for _ in 0..BASE_PORT_ATTEMPTS {
        let base = fastrand::u16(BASE_PORT_RANGE);
        let all_free = PORT_OFFSETS.iter().all(|offset| {
            (0..nodes).all(|node| TcpListener::bind(("127.0.0.1", base + offset + node)).is_ok())
        });
        if all_free {
            return base;
        }
    }
    panic!("no base port with free ports found in {BASE_PORT_ATTEMPTS} tries");
}

/// A running `ringlog dev cluster` child: its stdout as lines, its stderr in a file.
struct DevCluster {
    child: Option<Child>,
    lines: Receiver<String>,
    stdout: Vec<String>,
    stderr_path: PathBuf,
    /// Holds the cluster's directory and the stderr file.
    root: tempfile::TempDir,
}

impl DevCluster {
    fn start(nodes: u16, base_port: u16) -> DevCluster {
        let dir = tempfile::Builder::new()
            .prefix("ringlog-dev-cluster-")
            .tempdir()
            .expect("create the test directory");
        let stderr_path = dir.path().join("dev-cluster.stderr");
        let stderr = std::fs::File::create(&stderr_path).expect("create the stderr file");
        let mut child = ringlog_command()
            .args(["dev", "cluster", "--nodes", &nodes.to_string()])
            .args(["--base-port", &base_port.to_string()])
            .arg("--dir")
            .arg(dir.path().join("cluster"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn ringlog dev cluster");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        DevCluster {
            child: Some(child),
            lines,
            stdout: Vec::new(),
            stderr_path,
            root: dir,
        }
    }

    fn dir(&self) -> PathBuf {
        self.root.path().join("cluster")
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Reads stdout until a line starts with `prefix`, and returns it; panics after `timeout`.
    fn wait_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stdout.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no line {prefix:?} within {timeout:?}\n{}", self.report())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("stdout closed before a line {prefix:?}\n{}", self.report())
                }
            }
        }
    }

    /// Everything read from stdout so far, and the stderr file.
    fn report(&self) -> String {
        let stderr = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        format!(
            "--- dev cluster stdout ---\n{}\n--- dev cluster stderr ---\n{}\n--- end ---",
            self.stdout.join("\n"),
            common::tail(&stderr, 16 * 1024)
        )
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit, up to `timeout`.
    fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("running");
        signal(child.id(), libc::SIGTERM);
        let status = wait_with_deadline(child, timeout);
        if status.is_some() {
            self.child = None;
        }
        status
    }
}

impl Drop for DevCluster {
    /// Stops a dev cluster the test left running: SIGTERM first so it stops its nodes, then
    /// SIGKILL (its nodes then get SIGTERM from the kernel, `PR_SET_PDEATHSIG`).
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", self.report());
        }
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                signal(child.id(), libc::SIGTERM);
                if wait_with_deadline(&mut child, DEV_STOP_TIMEOUT).is_none() {
                    let _ = child.kill();
                    let _ = wait_with_deadline(&mut child, DEV_STOP_TIMEOUT);
                }
            }
        }
    }
}

/// Sends `signal` to `pid`, a process this test started (directly or through `dev cluster`).
fn signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("a PID fits pid_t");
    // SAFETY: kill(2) has no memory effects.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// One row of the dev cluster's table.
#[derive(Debug)]
struct Row {
    node: i32,
    kafka: SocketAddr,
    admin_url: String,
    pid: u32,
    log: PathBuf,
}

/// Reads the table (`NODE KAFKA CONTROLLER ADMIN PID LOG` and a row per node) up to the
/// bootstrap line, and returns its rows and the bootstrap servers.
fn read_table(dev: &mut DevCluster) -> (Vec<Row>, String) {
    let bootstrap_line = dev.wait_line("bootstrap servers: ", TABLE_TIMEOUT);
    let bootstrap = bootstrap_line
        .trim_start_matches("bootstrap servers: ")
        .to_string();
    let header = dev
        .stdout
        .iter()
        .position(|line| line.starts_with("NODE"))
        .unwrap_or_else(|| panic!("no table header\n{}", dev.report()));
    let rows = dev.stdout[header + 1..]
        .iter()
        .take_while(|line| !line.starts_with("bootstrap servers: "))
        .map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cells.len(), 6, "a table row has six cells: {line:?}");
            Row {
                node: cells[0].parse().expect("node id"),
                kafka: cells[1].parse().expect("Kafka address"),
                admin_url: cells[3].to_string(),
                pid: cells[4].parse().expect("PID"),
                log: PathBuf::from(cells[5]),
            }
        })
        .collect();
    (rows, bootstrap)
}

/// The command line of process `pid`, arguments joined by spaces, if it exists.
fn command_line(pid: u32) -> Option<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        String::from_utf8_lossy(&bytes)
            .split('\0')
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The parent PID of process `pid`, if it exists.
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses, so split after the
    // last `)`.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `pid` is still a `ringlog serve` with its data in `dir` (a reused PID is not).
fn is_our_node(pid: u32, dir: &Path) -> bool {
    command_line(pid)
        .is_some_and(|line| line.contains(" serve ") && line.contains(&dir.display().to_string()))
}

/// Waits until `pid` is no longer a node of the cluster in `dir`.
fn wait_gone(pid: u32, dir: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while is_our_node(pid, dir) {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
    true
}

#[test]
fn dev_cluster_runs_three_nodes_and_stops_them_all_on_sigterm() {
    let base_port = free_base_port(3);
    let mut dev = DevCluster::start(3, base_port);
    let (rows, bootstrap) = read_table(&mut dev);
    let dir = dev.dir();

    assert_eq!(rows.len(), 3, "{rows:?}");
    for (index, row) in rows.iter().enumerate() {
        let id = i32::try_from(index + 1).expect("small");
        assert_eq!(row.node, id);
        assert_eq!(row.kafka.port(), base_port + index as u16);
        assert_eq!(
            row.admin_url,
            format!("http://127.0.0.1:{}/", base_port + 200 + index as u16)
        );
        assert_eq!(row.log, dir.join(format!("node-{id}.log")));
        assert_eq!(parent_pid(row.pid), Some(dev.pid()), "node {id}'s parent");
        let line = command_line(row.pid).unwrap_or_default();
        for expected in [
            " serve ".to_string(),
            format!("--node-id {id} "),
            format!(
                "--controller-quorum 1@127.0.0.1:{0},2@127.0.0.1:{1},3@127.0.0.1:{2}",
                base_port + 100,
                base_port + 101,
                base_port + 102
            ),
        ] {
            assert!(
                line.contains(&expected),
                "node {id}: {line:?} lacks {expected:?}"
            );
        }
    }
    let expected_bootstrap = rows
        .iter()
        .map(|row| row.kafka.to_string())
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(bootstrap, expected_bootstrap);

    dev.wait_line("all 3 nodes ready", CLUSTER_READY_TIMEOUT);
    for row in &rows {
        assert!(
            api_versions_ok(row.kafka, Duration::from_secs(5)),
            "node {} answers ApiVersions on {}",
            row.node,
            row.kafka
        );
    }
    if let Err(failure) = wait_brokers(&bootstrap, &[1, 2, 3], CLUSTER_READY_TIMEOUT) {
        panic!("{failure}");
    }

    let status = dev.terminate(DEV_STOP_TIMEOUT);
    let Some(status) = status else {
        panic!(
            "dev cluster did not exit within {DEV_STOP_TIMEOUT:?} of SIGTERM\n{}",
            dev.report()
        );
    };
    // Drain what it printed while stopping.
    while let Ok(line) = dev.lines.recv_timeout(Duration::from_secs(1)) {
        dev.stdout.push(line);
    }
    assert!(status.success(), "exit status {status}\n{}", dev.report());
    for row in &rows {
        assert!(
            wait_gone(row.pid, &dir, PROCESS_GONE_TIMEOUT),
            "node {} (pid {}) still runs after dev cluster exited",
            row.node,
            row.pid
        );
        let stopped = format!("node {} stopped: exit status: 0", row.node);
        assert!(
            dev.stdout.contains(&stopped),
            "{stopped:?} missing\n{}",
            dev.report()
        );
    }
}

#[test]
fn a_killed_node_is_reported_and_the_others_keep_running() {
    let base_port = free_base_port(3);
    let mut dev = DevCluster::start(3, base_port);
    let (rows, _bootstrap) = read_table(&mut dev);
    let dir = dev.dir();
    dev.wait_line("all 3 nodes ready", CLUSTER_READY_TIMEOUT);

    let victim = &rows[1];
    signal(victim.pid, libc::SIGKILL);
    let deadline = Instant::now() + DEATH_REPORT_TIMEOUT;
    let reported = format!("node 2 (pid {}) exited: signal: 9", victim.pid);
    while !dev.stderr_text().contains(&reported) {
        assert!(
            Instant::now() < deadline,
            "{reported:?} not reported within {DEATH_REPORT_TIMEOUT:?}\n{}",
            dev.report()
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert!(wait_gone(victim.pid, &dir, PROCESS_GONE_TIMEOUT));
    for row in [&rows[0], &rows[2]] {
        assert!(is_our_node(row.pid, &dir), "node {} still runs", row.node);
        assert!(
            api_versions_ok(row.kafka, Duration::from_secs(5)),
            "node {} still answers",
            row.node
        );
    }
    let status = dev.terminate(DEV_STOP_TIMEOUT).expect("dev cluster exits");
    assert!(status.success(), "exit status {status}\n{}", dev.report());
}

/// Runs `ringlog dev cluster ARGS` expecting it to fail before starting anything; returns its
/// exit code and stderr.
fn usage_failure(args: &[&str]) -> (Option<i32>, String) {
    let output = common::run_bounded(
        ringlog_command().args(["dev", "cluster"]).args(args),
        b"",
        USAGE_ERROR_TIMEOUT,
    )
    .unwrap_or_else(|failure| panic!("{failure}"));
    assert!(!output.status.success(), "{args:?} succeeded");
    (output.status.code(), output.stderr_text())
}

#[test]
fn a_taken_port_is_refused_before_any_node_starts() {
    let base_port = free_base_port(3);
    // Node 2's Kafka port.
    let _holder = TcpListener::bind(("127.0.0.1", base_port + 1)).expect("hold a port");
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster_dir = dir.path().join("cluster");
    let (code, stderr) = usage_failure(&[
        "--base-port",
        &base_port.to_string(),
        "--dir",
        cluster_dir.to_str().expect("UTF-8 path"),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "127.0.0.1:{} (node 2's Kafka port)",
            base_port + 1
        )),
        "{stderr}"
    );
    assert!(stderr.contains("--base-port"), "{stderr}");
    assert!(!cluster_dir.exists(), "nothing made before the check");
}

#[test]
fn bad_arguments_are_refused() {
    let (code, stderr) = usage_failure(&["--nodes", "10"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--nodes"), "{stderr}");
    let (code, stderr) = usage_failure(&["--nodes", "3", "--base-port", "65400"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("too high"), "{stderr}");

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("notes.txt"), "mine").expect("write");
    let (code, stderr) =
        usage_failure(&["--clean", "--dir", dir.path().to_str().expect("UTF-8 path")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("refusing to --clean"), "{stderr}");
    assert!(dir.path().join("notes.txt").exists());
}

#[test]
fn the_cluster_harness_restarts_a_killed_node() {
    let mut cluster = Cluster::start(3, ClusterOptions::default());
    if let Err(failure) = cluster.wait_brokers(&[1, 2, 3], CLUSTER_READY_TIMEOUT) {
        panic!("{failure}");
    }
    let old_pid = cluster.node(2).pid().expect("node 2 runs");

    cluster.kill9(2);
    assert!(!cluster.is_running(2));
    assert_eq!(cluster.node(2).pid(), None);
    assert!(cluster.is_running(1) && cluster.is_running(3));

    cluster.restart(2);
    assert_ne!(cluster.node(2).pid(), Some(old_pid));
    if let Err(failure) = cluster.wait_ready(2, NODE_READY_TIMEOUT) {
        panic!("{failure}");
    }
    assert!(cluster.log_tail(2, 1000).contains("=== run 2 ==="));
    if let Err(failure) = cluster.wait_brokers(&[1, 2, 3], CLUSTER_READY_TIMEOUT) {
        panic!("{failure}");
    }

    // A frozen node keeps running; thawed, it answers again.
    cluster.sigstop(3);
    assert!(cluster.is_running(3));
    assert!(!api_versions_ok(
        cluster.node(3).kafka_addr(),
        Duration::from_millis(500)
    ));
    cluster.sigcont(3);
    if let Err(failure) = cluster.wait_ready(3, NODE_READY_TIMEOUT) {
        panic!("{failure}");
    }

    let status = cluster.stop(1);
    assert!(status.success(), "node 1 exited with {status}");
    assert!(!cluster.is_running(1));
}
