//! `ringlog dev cluster`: a local cluster of `ringlog serve` processes on loopback, started in
//! one command so that anyone can try failover in a minute (kill a node, watch clients move on).
//!
//! Each node is a child process of this one, in its own process group so that a terminal's
//! Ctrl-C reaches only this process, which then stops every node with one SIGTERM (a second
//! one would make `serve` exit without its clean shutdown). A node that dies is reported and
//! the others are left running: that is the demo. If this process is killed outright, the
//! kernel sends each node SIGTERM (`PR_SET_PDEATHSIG`), so no broker is left behind.
//!
//! Ports, for node `i` (1-based) and base port `B` (default 19092):
//! Kafka `B + i - 1`, controller `B + 100 + i - 1`, admin HTTP `B + 200 + i - 1`. The first
//! 1, 3 or 5 nodes (the most of those that fit) are the controller quorum; the rest are brokers
//! only, without a controller port.

use std::fs::File;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::cli::output::Table;

/// The most nodes a dev cluster runs. Node ids stay one digit, so each node's ports are the
/// base plus its digit in every range and the ranges, [`PORT_RANGE_WIDTH`] apart, never
/// overlap; and nine brokers is already more than a laptop runs comfortably.
pub const NODES_MAX: u8 = 9;

/// Nodes started when `--nodes` is not given: the smallest controller quorum that survives the
/// loss of one node, which is the failover a first try wants to see.
const NODES_DEFAULT: u8 = 3;

/// The first node's Kafka port when `--base-port` is not given: the Kafka default (9092) plus
/// 10000, out of the way of a broker already running on the default ports.
const BASE_PORT_DEFAULT: u16 = 19092;

/// The distance between the Kafka, controller and admin port ranges. Larger than
/// [`NODES_MAX`], so the ranges are disjoint, and round, so a port tells its role at a glance.
const PORT_RANGE_WIDTH: u16 = 100;

/// The controller quorum sizes `serve` takes (Kafka's advice too: an odd count, at most five).
/// A cluster gets the largest that fits its node count; `plan` relies on the descending order.
const QUORUM_SIZES: [u8; 3] = [5, 3, 1];

/// Where the controller ports start, relative to the base port.
const CONTROLLER_PORT_OFFSET: u16 = PORT_RANGE_WIDTH;

/// Where the admin HTTP ports start, relative to the base port.
const ADMIN_PORT_OFFSET: u16 = 2 * PORT_RANGE_WIDTH;

/// The directory for the nodes' data and logs when `--dir` is not given.
const DIR_DEFAULT: &str = "./ringlog-dev-cluster";

/// Shards per node when `--cores` is not given. Every node of a local cluster shares the same
/// cores; one shard each keeps three nodes from fighting over a laptop's CPUs.
const CORES_DEFAULT: u16 = 1;

/// The loopback address every node listens on: a dev cluster is never reachable from outside.
const HOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// How long the nodes get to exit after SIGTERM before they are killed. A clean shutdown syncs
/// and closes every partition log, which takes well under a second for a dev cluster's data;
/// 30 s also covers a controlled shutdown waiting on a slow controller.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the nodes get to report ready before a warning says which are not (they keep
/// running: a node may be waiting for a quorum that is still starting). A debug build starts
/// in about a second; a loaded machine needs more.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the nodes are checked on: their exit, their readiness, a stop request. Short
/// enough that Ctrl-C and a node's death are reported without a noticeable delay.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How long one readiness request to a node's admin port may take. Loopback answers in
/// microseconds; a node that takes longer is not ready.
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a connection to a port that cannot be bound may take to open before the port
/// counts as having no listener. Loopback connects in microseconds or is refused at once.
const PORT_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The admin API's readiness endpoint: 200 once every shard has its metadata and serves.
const READY_PATH: &str = "/api/v1/ready";

/// Lines of a dead node's log printed with the news of its death: enough for a panic message
/// and the lines that led to it.
const LOG_TAIL_LINES: usize = 20;

/// Exit status after a second SIGINT or SIGTERM cut the stop short: 128 + the signal's number,
/// as a shell reports a process killed by that signal (`serve` does the same).
const EXIT_STATUS_SIGNAL_BASE: i32 = 128;

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Run a local N-node cluster on 127.0.0.1 until Ctrl-C or SIGTERM, to try failover.
    ///
    /// Node i (1..=N) runs `ringlog serve` with node id i, Kafka port BASE+i-1, controller
    /// port BASE+100+i-1 and admin port BASE+200+i-1. Nodes 1..=C are the controller quorum,
    /// C being 5, 3 or 1, the largest not above N; the others are brokers only. Data goes to DIR/node-i, output to DIR/node-i.log. A node that dies is reported
    /// and the others keep running: kill one (`kill PID` from the table) to watch failover.
    /// Ctrl-C stops every node (SIGTERM, then SIGKILL after 30 s) and exits 0; the data is
    /// kept for the next run unless --clean.
    Cluster(ClusterArgs),
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Nodes to run: 1, 3 or 5, each a controller and a broker (broker-only nodes, up to 9,
    /// once `ringlog serve` runs them)
    #[arg(long, value_name = "N", default_value_t = NODES_DEFAULT,
          value_parser = clap::value_parser!(u8).range(1..=i64::from(NODES_MAX)))]
    nodes: u8,

    /// Node 1's Kafka port; node i's is BASE+i-1, its controller port BASE+100+i-1 and its
    /// admin port BASE+200+i-1
    #[arg(long, value_name = "BASE", default_value_t = BASE_PORT_DEFAULT,
          value_parser = clap::value_parser!(u16).range(1..))]
    base_port: u16,

    /// Directory for the nodes' data (DIR/node-i) and logs (DIR/node-i.log); created if
    /// missing, kept after the cluster stops
    #[arg(long, value_name = "DIR", default_value = DIR_DEFAULT)]
    dir: PathBuf,

    /// Delete the nodes' data and logs in DIR before starting (refused if DIR holds anything
    /// else)
    #[arg(long)]
    clean: bool,

    /// Shards per node
    #[arg(long, value_name = "N", default_value_t = CORES_DEFAULT,
          value_parser = clap::value_parser!(u16).range(1..))]
    cores: u16,

    /// More `ringlog serve` flags for every node, after `--` (for example
    /// `-- --num-partitions 3`)
    #[arg(last = true, value_name = "SERVE_FLAGS")]
    serve_flags: Vec<String>,
}

pub fn run(command: DevCommand) -> anyhow::Result<ExitCode> {
    match command {
        DevCommand::Cluster(args) => run_cluster(&args),
    }
}

/// One node's place in the cluster: its id, ports and files.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NodePlan {
    id: u8,
    kafka: SocketAddr,
    /// `None` for a broker-only node.
    controller: Option<SocketAddr>,
    admin: SocketAddr,
    data_dir: PathBuf,
    log_path: PathBuf,
}

/// The nodes of a `nodes`-node cluster from `base_port` and `dir`, or why their ports do not
/// fit below 65536.
fn plan(nodes: u8, base_port: u16, dir: &Path) -> anyhow::Result<Vec<NodePlan>> {
    assert!((1..=NODES_MAX).contains(&nodes), "nodes checked by clap");
    let highest = u32::from(base_port) + u32::from(ADMIN_PORT_OFFSET) + u32::from(nodes) - 1;
    if highest > u32::from(u16::MAX) {
        bail!(
            "--base-port {base_port} is too high for {nodes} nodes: the last admin port would \
             be {highest}; use at most {}",
            u32::from(u16::MAX) + 1 - u32::from(ADMIN_PORT_OFFSET) - u32::from(nodes)
        );
    }
    let address = |offset: u16, id: u8| {
        SocketAddr::V4(SocketAddrV4::new(
            HOST,
            // Checked above to stay within u16; the order keeps every step in range.
            base_port + offset + (u16::from(id) - 1),
        ))
    };
    let controllers = QUORUM_SIZES
        .into_iter()
        .find(|&size| size <= nodes)
        .expect("a quorum of 1 fits any cluster");
    Ok((1..=nodes)
        .map(|id| NodePlan {
            id,
            kafka: address(0, id),
            controller: (id <= controllers).then(|| address(CONTROLLER_PORT_OFFSET, id)),
            admin: address(ADMIN_PORT_OFFSET, id),
            data_dir: dir.join(format!("node-{id}")),
            log_path: dir.join(format!("node-{id}.log")),
        })
        .collect())
}

/// `--controller-quorum`'s value: `1@127.0.0.1:19192,2@...`, the controllers only.
fn quorum(nodes: &[NodePlan]) -> String {
    nodes
        .iter()
        .filter_map(|node| {
            node.controller
                .map(|controller| format!("{}@{controller}", node.id))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Fails, naming each one, if anything listens on a port of the plan. The check matters:
/// `serve` binds with SO_REUSEPORT, so a node would share a port with another broker of the
/// same user instead of failing. A port that cannot be bound but takes no connection is held
/// only by closed connections in TIME-WAIT (an earlier run's), which SO_REUSEPORT binds over,
/// so it counts as free. A port taken between this check and a node's start makes that node
/// exit, which is reported like any other death.
fn check_ports(nodes: &[NodePlan]) -> anyhow::Result<()> {
    let mut taken = Vec::new();
    for node in nodes {
        let controller = node.controller.map(|address| ("controller", address));
        let listeners = [("Kafka", node.kafka), ("admin", node.admin)]
            .into_iter()
            .chain(controller);
        for (role, address) in listeners {
            if TcpListener::bind(address).is_err()
                && TcpStream::connect_timeout(&address, PORT_PROBE_TIMEOUT).is_ok()
            {
                taken.push(format!(
                    "{address} (node {}'s {role} port): something listens there",
                    node.id
                ));
            }
        }
    }
    if !taken.is_empty() {
        bail!(
            "cannot use these ports:\n  {}\nstop what holds them (another dev cluster?) or \
             pick another --base-port",
            taken.join("\n  ")
        );
    }
    Ok(())
}

/// Whether `name` is something a dev cluster makes in its directory: `node-<id>` or
/// `node-<id>.log`.
fn is_node_entry(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("node-") else {
        return false;
    };
    let id = rest.strip_suffix(".log").unwrap_or(rest);
    !id.is_empty() && id.bytes().all(|byte| byte.is_ascii_digit())
}

/// `--clean`: removes the node directories and logs of earlier runs from `dir`, after checking
/// that `dir` holds nothing else, so a mistyped `--dir` cannot wipe someone's files.
fn clean(dir: &Path) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error).with_context(|| format!("reading {}", dir.display())),
    };
    let mut ours = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let name = entry.file_name();
        match name.to_str() {
            Some(text) if is_node_entry(text) => ours.push(entry.path()),
            _ => bail!(
                "refusing to --clean {}: it holds {:?}, which a dev cluster does not make",
                dir.display(),
                name
            ),
        }
    }
    for path in ours {
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

/// A node's process while it runs.
struct Node {
    plan: NodePlan,
    /// `None` once the node has exited and been reaped.
    child: Option<Child>,
    pid: u32,
    ready: bool,
}

fn run_cluster(args: &ClusterArgs) -> anyhow::Result<ExitCode> {
    // The plan has room for broker-only nodes past the quorum; `ringlog serve` does not run
    // them yet, so such a cluster is refused here rather than losing a node at start.
    if !QUORUM_SIZES.contains(&args.nodes) {
        bail!(
            "--nodes {}: broker-only nodes are not supported yet, so every node is a \
             controller and a cluster has 1, 3 or 5 nodes",
            args.nodes
        );
    }
    let plans = plan(args.nodes, args.base_port, &args.dir)?;
    if args.clean {
        clean(&args.dir)?;
    }
    check_ports(&plans)?;
    for node in &plans {
        std::fs::create_dir_all(&node.data_dir)
            .with_context(|| format!("creating {}", node.data_dir.display()))?;
    }
    let stop = register_signals()?;
    let executable = std::env::current_exe().context("finding the ringlog executable")?;
    let quorum = quorum(&plans);

    let mut nodes: Vec<Node> = Vec::with_capacity(plans.len());
    for plan in plans {
        match spawn(&executable, &plan, &quorum, args) {
            Ok(child) => nodes.push(Node {
                pid: child.id(),
                child: Some(child),
                plan,
                ready: false,
            }),
            Err(error) => {
                stop_all(&mut nodes);
                return Err(error);
            }
        }
    }
    print_started(&nodes);

    let outcome = watch(&mut nodes, &stop);
    if live_count(&nodes) > 0 {
        say(&format!("stopping {} node(s)...", live_count(&nodes)));
        stop_all(&mut nodes);
    }
    outcome
}

/// Makes the first SIGTERM or SIGINT set the returned flag (the cluster then stops cleanly),
/// and a second one exit at once; the nodes then get SIGTERM from the kernel.
fn register_signals() -> anyhow::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        // Registered before the flag, so the first signal finds the flag clear (see serve.rs).
        signal_hook::flag::register_conditional_shutdown(
            signal,
            EXIT_STATUS_SIGNAL_BASE + signal,
            Arc::clone(&stop),
        )
        .with_context(|| format!("registering a handler for signal {signal}"))?;
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .with_context(|| format!("registering a handler for signal {signal}"))?;
    }
    Ok(stop)
}

/// Starts node `plan` as `ringlog serve`, its output going to its log file (truncated).
fn spawn(
    executable: &Path,
    plan: &NodePlan,
    quorum: &str,
    args: &ClusterArgs,
) -> anyhow::Result<Child> {
    let log = File::create(&plan.log_path)
        .with_context(|| format!("creating {}", plan.log_path.display()))?;
    let stderr = log
        .try_clone()
        .with_context(|| format!("opening {}", plan.log_path.display()))?;
    let mut command = Command::new(executable);
    command
        .arg("serve")
        .args(["--node-id", &plan.id.to_string()])
        .arg("--data-dir")
        .arg(&plan.data_dir)
        .args(["--listen", &plan.kafka.to_string()])
        .args(["--advertise", &plan.kafka.to_string()])
        .args(["--admin-listen", &plan.admin.to_string()])
        .args(["--controller-quorum", quorum])
        .args(["--cores", &args.cores.to_string()])
        // The nodes share this machine's cores: pinned, every node's shard 0 would sit on the
        // same CPU.
        .args(["--pin-to-cores", "false"]);
    if let Some(controller) = plan.controller {
        command.args(["--controller-listen", &controller.to_string()]);
    }
    command
        .args(&args.serve_flags)
        // The log is a file: plain text, whatever the terminal this runs in.
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(stderr))
        // Its own process group: a terminal's Ctrl-C must not reach the node, which would take
        // this process's SIGTERM after it as a second signal and skip its clean shutdown.
        .process_group(0);
    // SAFETY: the closure runs between fork and exec and only calls prctl, which is
    // async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            // If this process dies without stopping the node (SIGKILL), the kernel stops it.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
        .spawn()
        .with_context(|| format!("starting node {} ({})", plan.id, executable.display()))
}

/// The table of nodes and how to use the cluster.
fn print_started(nodes: &[Node]) {
    let mut table = Table::new(&["NODE", "KAFKA", "CONTROLLER", "ADMIN", "PID", "LOG"]);
    for node in nodes {
        table.row(vec![
            node.plan.id.to_string(),
            node.plan.kafka.to_string(),
            node.plan
                .controller
                .map_or_else(|| "-".to_string(), |controller| controller.to_string()),
            format!("http://{}/", node.plan.admin),
            node.pid.to_string(),
            node.plan.log_path.display().to_string(),
        ]);
    }
    let bootstrap = nodes
        .iter()
        .map(|node| node.plan.kafka.to_string())
        .collect::<Vec<_>>()
        .join(",");
    say(table.render().trim_end());
    say(&format!("bootstrap servers: {bootstrap}"));
    say(
        "try failover: `kill -9 PID` (or `kill PID`) stops a node; the others keep running. \
         Ctrl-C stops the cluster.",
    );
}

/// Checks on the nodes until a stop is asked for: reports when they are ready, and each one
/// that dies. Returns an error only when every node has died.
fn watch(nodes: &mut [Node], stop: &AtomicBool) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let agent = ureq::AgentBuilder::new()
        .timeout(READY_PROBE_TIMEOUT)
        .build();
    let mut all_ready_reported = false;
    let mut slow_reported = false;
    while !stop.load(Ordering::Relaxed) {
        let mut died = Vec::new();
        for node in nodes.iter_mut() {
            let Some(child) = node.child.as_mut() else {
                continue;
            };
            match child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => {
                    node.child = None;
                    died.push((node.plan.clone(), node.pid, status));
                }
                Err(error) => {
                    eprintln!("cannot check on node {}: {error}", node.plan.id);
                }
            }
        }
        for (plan, pid, status) in died {
            report_death(&plan, pid, status, live_count(nodes));
        }
        if live_count(nodes) == 0 {
            bail!(
                "every node has exited; their logs are in {}",
                nodes[0]
                    .plan
                    .log_path
                    .parent()
                    .unwrap_or(Path::new("."))
                    .display()
            );
        }
        if !all_ready_reported {
            for node in nodes.iter_mut() {
                if node.child.is_some() && !node.ready {
                    node.ready = is_ready(&agent, node.plan.admin);
                }
            }
            // Nodes that died are reported already; readiness is about the ones running.
            let running = live_count(nodes);
            if nodes.iter().all(|node| node.child.is_none() || node.ready) {
                let which = if running == nodes.len() {
                    format!("all {running} nodes")
                } else {
                    format!("the {running} running nodes (of {})", nodes.len())
                };
                say(&format!(
                    "{which} ready after {:.1} s",
                    started.elapsed().as_secs_f64()
                ));
                all_ready_reported = true;
            } else if !slow_reported && started.elapsed() > READY_TIMEOUT {
                let waiting: Vec<String> = nodes
                    .iter()
                    .filter(|node| node.child.is_some() && !node.ready)
                    .map(|node| format!("node {} ({})", node.plan.id, node.plan.log_path.display()))
                    .collect();
                eprintln!(
                    "not ready after {READY_TIMEOUT:?}: {}; still waiting",
                    waiting.join(", ")
                );
                slow_reported = true;
            }
        }
        thread::sleep(POLL_INTERVAL);
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether the node's admin port says it is ready.
fn is_ready(agent: &ureq::Agent, admin: SocketAddr) -> bool {
    agent
        .get(&format!("http://{admin}{READY_PATH}"))
        .call()
        .is_ok()
}

/// Prints that a node exited on its own, with the end of its log and how many nodes are left.
fn report_death(plan: &NodePlan, pid: u32, status: ExitStatus, running: usize) {
    let tail = log_tail(&plan.log_path, LOG_TAIL_LINES);
    eprintln!(
        "node {} (pid {pid}) exited: {status}; {running} node(s) still running. Last lines of {}:\n{tail}",
        plan.id,
        plan.log_path.display()
    );
}

/// The last `lines` lines of the file at `path`, or why it cannot be read.
fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..]
                .iter()
                .map(|line| format!("  | {line}\n"))
                .collect()
        }
        Err(error) => format!("  (cannot read it: {error})\n"),
    }
}

fn live_count(nodes: &[Node]) -> usize {
    nodes.iter().filter(|node| node.child.is_some()).count()
}

/// Stops every node still running: SIGTERM to each, then waits for all up to
/// [`STOP_TIMEOUT`], then SIGKILL for any left. Prints how each one ended.
fn stop_all(nodes: &mut [Node]) {
    for node in nodes.iter() {
        if node.child.is_some() {
            let pid = libc::pid_t::try_from(node.pid).expect("a PID fits pid_t");
            // SAFETY: kill has no memory preconditions. The PID is our child's and it has not
            // been reaped, so it cannot have been reused by another process.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while live_count(nodes) > 0 {
        let overdue = Instant::now() >= deadline;
        for node in nodes.iter_mut() {
            let Some(child) = node.child.as_mut() else {
                continue;
            };
            let status = match child.try_wait() {
                Ok(Some(status)) => Some(status),
                Ok(None) if overdue => {
                    eprintln!(
                        "node {} did not stop within {STOP_TIMEOUT:?} of SIGTERM: killing it",
                        node.plan.id
                    );
                    // The child is ours and unreaped; kill and wait cannot block for long.
                    let _ = child.kill();
                    child.wait().ok()
                }
                Ok(None) => None,
                Err(error) => {
                    eprintln!("cannot check on node {}: {error}", node.plan.id);
                    let _ = child.kill();
                    child.wait().ok()
                }
            };
            if let Some(status) = status {
                say(&format!("node {} stopped: {status}", node.plan.id));
                node.child = None;
            } else if overdue {
                node.child = None;
            }
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Writes `line` and a newline to stdout at once (a test or script may be reading the pipe).
/// A closed stdout (`| head`) must not stop the cluster from running or stopping, so write
/// errors are ignored, where `println!` would panic.
fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_in_three_disjoint_ranges_from_the_base() {
        let nodes = plan(3, 19092, Path::new("/tmp/dev")).expect("plan");
        let ports: Vec<(u8, u16, u16, u16)> = nodes
            .iter()
            .map(|node| {
                (
                    node.id,
                    node.kafka.port(),
                    node.controller.map_or(0, |controller| controller.port()),
                    node.admin.port(),
                )
            })
            .collect();
        assert_eq!(
            ports,
            vec![
                (1, 19092, 19192, 19292),
                (2, 19093, 19193, 19293),
                (3, 19094, 19194, 19294)
            ]
        );
        assert_eq!(nodes[1].data_dir, Path::new("/tmp/dev/node-2"));
        assert_eq!(nodes[1].log_path, Path::new("/tmp/dev/node-2.log"));
        assert_eq!(
            quorum(&nodes),
            "1@127.0.0.1:19192,2@127.0.0.1:19193,3@127.0.0.1:19194"
        );
    }

    #[test]
    fn the_quorum_is_the_first_five_three_or_one_nodes() {
        for (nodes, controllers) in [(1, 1), (2, 1), (3, 3), (4, 3), (5, 5), (9, 5)] {
            let plan = plan(nodes, 19092, Path::new("d")).expect("plan");
            let voters: Vec<u8> = plan
                .iter()
                .filter(|node| node.controller.is_some())
                .map(|node| node.id)
                .collect();
            assert_eq!(
                voters,
                (1..=controllers).collect::<Vec<_>>(),
                "{nodes} nodes"
            );
        }
        let four = plan(4, 19092, Path::new("d")).expect("plan");
        assert_eq!(
            quorum(&four),
            "1@127.0.0.1:19192,2@127.0.0.1:19193,3@127.0.0.1:19194"
        );
    }

    #[test]
    fn a_base_port_too_high_is_refused_with_the_highest_allowed() {
        let highest_allowed = u16::MAX - ADMIN_PORT_OFFSET - u16::from(NODES_MAX) + 1;
        assert!(plan(NODES_MAX, highest_allowed, Path::new("d")).is_ok());
        let error = plan(NODES_MAX, highest_allowed + 1, Path::new("d"))
            .expect_err("too high")
            .to_string();
        assert!(
            error.contains(&format!("use at most {highest_allowed}")),
            "{error}"
        );
    }

    #[test]
    fn only_node_directories_and_logs_count_as_ours() {
        for (name, ours) in [
            ("node-1", true),
            ("node-12.log", true),
            ("node-", false),
            ("node-.log", false),
            ("node-1.txt", false),
            ("notes", false),
        ] {
            assert_eq!(is_node_entry(name), ours, "{name}");
        }
    }

    #[test]
    fn clean_removes_node_entries_and_refuses_foreign_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("node-1/topic-0")).expect("node dir");
        std::fs::write(dir.path().join("node-1.log"), "log").expect("log");
        clean(dir.path()).expect("clean");
        assert_eq!(std::fs::read_dir(dir.path()).expect("read").count(), 0);

        std::fs::write(dir.path().join("node-2.log"), "log").expect("log");
        std::fs::write(dir.path().join("precious.txt"), "keep").expect("file");
        let error = clean(dir.path()).expect_err("foreign file").to_string();
        assert!(error.contains("precious.txt"), "{error}");
        assert!(dir.path().join("node-2.log").exists(), "nothing removed");

        clean(&dir.path().join("missing")).expect("a missing dir is clean");
    }

    #[test]
    fn a_taken_port_is_named_with_its_node_and_role() {
        let holder = TcpListener::bind((HOST, 0)).expect("bind");
        let port = holder.local_addr().expect("address").port();
        // Node 2's admin port is the one held.
        let base = port - ADMIN_PORT_OFFSET - 1;
        let nodes = plan(2, base, Path::new("d")).expect("plan");
        let error = check_ports(&nodes).expect_err("taken").to_string();
        assert!(
            error.contains(&format!("127.0.0.1:{port} (node 2's admin port)")),
            "{error}"
        );
    }
}
