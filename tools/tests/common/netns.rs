//! Hosts in network namespaces that a test makes itself, for what must cross a real network:
//! each host is a namespace with one interface (`eth0`, 10.77.0.N/24) on a bridge that lives in
//! a namespace of its own (the switch), so nothing in the machine's own network changes.
//! Partitions are nftables rules inside the hosts' namespaces. Everything is removed on drop.
//!
//! Needs root, iproute2's `ip` and `nft` (Debian's `iproute2` and `nftables`; `tools/test-all.sh`
//! installs them).

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Every network uses this /24: each has its own switch, so networks of parallel tests never
/// see each other's addresses.
const SUBNET: [u8; 3] = [10, 77, 0];

/// The nftables table a partition adds to a host, and deletes when healed.
const PARTITION_TABLE: &str = "ringlog_partition";

/// Networks made by this process so far, to name the next one's namespaces uniquely.
static NETWORKS: AtomicUsize = AtomicUsize::new(0);

/// Why a network cannot be made here (not root, no `ip`, no `nft`), or `None` if it can.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("root (network namespaces)".to_string());
    }
    for (program, arg, package) in [("ip", "-V", "iproute2"), ("nft", "--version", "nftables")] {
        let runs = Command::new(program)
            .arg(arg)
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|output| output.status.success());
        if !runs {
            return Some(format!("`{program}` (Debian's {package})"));
        }
    }
    None
}

/// A switch and the hosts plugged into it.
pub struct Network {
    prefix: String,
    hosts: usize,
}

impl Network {
    /// Makes `hosts` hosts, 10.77.0.1 upwards, all reaching each other.
    pub fn create(hosts: usize) -> Network {
        Network::try_create(hosts).unwrap_or_else(|failure| panic!("{failure}"))
    }

    /// Like [`Network::create`], but the first namespace failing to appear is an error rather
    /// than a panic: root without `CAP_SYS_ADMIN` (a container) has `ip` and `nft` and still
    /// cannot make one, which tests treat as a machine that cannot run them. Any later failure
    /// is a bug and panics.
    pub fn try_create(hosts: usize) -> Result<Network, String> {
        assert!((1..=250).contains(&hosts), "1 to 250 hosts on a /24");
        let prefix = format!(
            "rl{}n{}",
            std::process::id(),
            NETWORKS.fetch_add(1, Ordering::Relaxed)
        );
        let switch = switch_namespace(&prefix);
        let output = Command::new("ip")
            .args(["netns", "add", &switch])
            .stdin(Stdio::null())
            .output()
            .map_err(|error| format!("ip netns add: {error}"))?;
        if !output.status.success() {
            return Err(format!(
                "network namespaces (ip netns add: {})",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        // From here on, dropping the network removes what was made.
        let network = Network { prefix, hosts };
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        for host in 0..hosts {
            let namespace = network.namespace(host);
            // The switch's end of the cable; interface names must stay under 16 bytes.
            let port = format!("port{host}");
            ip(&["netns", "add", &namespace]);
            ip(&[
                "link", "add", "eth0", "netns", &namespace, "type", "veth", "peer", "name", &port,
                "netns", &switch,
            ]);
            let address = format!("{}/24", network.address(host));
            ip(&["-n", &namespace, "addr", "add", &address, "dev", "eth0"]);
            ip(&["-n", &namespace, "link", "set", "eth0", "up"]);
            ip(&["-n", &namespace, "link", "set", "lo", "up"]);
            ip(&["-n", &switch, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &switch, "link", "set", &port, "up"]);
        }
        Ok(network)
    }

    fn switch(&self) -> String {
        switch_namespace(&self.prefix)
    }

    /// The namespace of `host` (as `ip netns` names it).
    pub fn namespace(&self, host: usize) -> String {
        assert!(host < self.hosts, "host {host} of {}", self.hosts);
        format!("{}-h{host}", self.prefix)
    }

    pub fn address(&self, host: usize) -> Ipv4Addr {
        assert!(host < self.hosts, "host {host} of {}", self.hosts);
        Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], host as u8 + 1)
    }

    /// `program` to be run on `host` (`ip netns exec`, which execs it: the child's PID is the
    /// program's, so signals reach it).
    pub fn command(&self, host: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace(host)])
            .arg(program);
        command
    }

    /// Runs `work` on a thread inside `host`'s network namespace: sockets it opens belong to
    /// that host (and keep working when handed to another thread).
    pub fn on_host<T: Send + 'static>(
        &self,
        host: usize,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let path = format!("/var/run/netns/{}", self.namespace(host));
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
            // SAFETY: setns on an open namespace file moves only this thread, which exits
            // after `work`.
            let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(
                entered,
                0,
                "setns {path}: {}",
                std::io::Error::last_os_error()
            );
            work()
        })
        .join()
        .expect("the thread on the host")
    }

    /// Whether a TCP connection from `from` to `to` opens within `timeout`.
    pub fn reaches(&self, from: usize, to: SocketAddr, timeout: Duration) -> bool {
        self.on_host(from, move || {
            TcpStream::connect_timeout(&to, timeout).is_ok()
        })
    }

    /// Splits the network: hosts in `side` and the others no longer exchange a packet (both
    /// directions dropped, as a cut cable or a dead switch port would). Replaces any earlier
    /// partition.
    pub fn partition(&self, side: &[usize]) {
        self.heal();
        for host in 0..self.hosts {
            let here = side.contains(&host);
            let others: Vec<String> = (0..self.hosts)
                .filter(|other| side.contains(other) != here)
                .map(|other| self.address(other).to_string())
                .collect();
            if others.is_empty() {
                continue;
            }
            let set = others.join(", ");
            let rules = format!(
                "table inet {PARTITION_TABLE} {{\n\
                 chain input {{ type filter hook input priority 0; policy accept; ip saddr {{ {set} }} drop; }}\n\
                 chain output {{ type filter hook output priority 0; policy accept; ip daddr {{ {set} }} drop; }}\n\
                 }}\n"
            );
            run_with_input(
                Command::new("ip").args(["netns", "exec", &self.namespace(host), "nft", "-f", "-"]),
                &rules,
            );
        }
    }

    /// Removes every partition.
    pub fn heal(&self) {
        for host in 0..self.hosts {
            // Absent when this host was not partitioned: nothing to remove.
            let _ = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.namespace(host),
                    "nft",
                    "delete",
                    "table",
                ])
                .args(["inet", PARTITION_TABLE])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Network {
    /// Deletes the namespaces, and with them their interfaces and rules. Processes still running
    /// in one keep it alive until they exit: stop them first.
    fn drop(&mut self) {
        for host in 0..self.hosts {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.namespace(host)])
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.switch()])
            .status();
    }
}

/// The namespace of the switch of the network whose names start with `prefix`.
fn switch_namespace(prefix: &str) -> String {
    format!("{prefix}-switch")
}

/// Runs `ip ARGS`, panicking with its error if it fails.
fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("ip {args:?}: {error}"));
    assert!(
        output.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

fn run_with_input(command: &mut Command, input: &str) {
    use std::io::Write as _;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{command:?}: {error}"));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())
        .expect("write the rules");
    let output = child.wait_with_output().expect("wait for nft");
    assert!(
        output.status.success(),
        "{command:?}: {}\n{input}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
}
