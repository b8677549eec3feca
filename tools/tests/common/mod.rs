//! The end-to-end test harness: runs `ringlog serve` as a real child process on a free loopback
//! port and a temporary data directory, stops it the way an operator does (SIGTERM, exit status 0)
//! or the way a crash does (SIGKILL), restarts it on the same data, and runs the external Kafka
//! clients (Python, kcat) with bounded waits.
//!
//! Every wait here is bounded, and only processes this harness started are ever signalled, by
//! their PID; a broker still running when its [`Broker`] is dropped is killed then.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

pub mod cluster;
pub mod netns;
pub mod rdkafka;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// How long a broker gets to accept connections and answer ApiVersions after it is spawned. A
/// debug build recovering a small data directory needs well under a second; 20 s leaves room for
/// a loaded two-core CI machine.
pub const BROKER_START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a broker gets to exit after SIGTERM. A clean shutdown flushes and closes every
/// partition log; the tests' logs are a few MiB at most.
pub const BROKER_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a single external client run (one Python scenario, one kcat call) may take before it
/// is killed and the test fails. The longest, a Python scenario, produces and reads back about a
/// thousand messages and a few 1 MiB ones.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);

/// How often a polling wait looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Attempts at starting a broker on a fresh port when the port picked was taken in between.
const START_ATTEMPTS: usize = 3;

/// Set (to anything but `0` or empty) when the external clients must be present: a missing one
/// fails the test instead of skipping it. `tools/test-all.sh` sets it.
pub const REQUIRE_CLIENTS_ENV: &str = "RINGLOG_REQUIRE_CLIENTS";

/// The Python interpreter that has `confluent_kafka` and `kafka` installed
/// (`tools/test-all.sh` points it at its venv).
pub const PYTHON_ENV: &str = "RINGLOG_TEST_PYTHON";

/// True when [`REQUIRE_CLIENTS_ENV`] says missing clients are failures.
pub fn clients_required() -> bool {
    std::env::var(REQUIRE_CLIENTS_ENV).is_ok_and(|value| !value.is_empty() && value != "0")
}

/// Reports a missing external client: panics when clients are required, else prints why the
/// test is skipped. Callers return right after.
pub fn missing_client(what: &str) {
    if clients_required() {
        panic!("{what} is missing and {REQUIRE_CLIENTS_ENV} is set: run tools/test-all.sh");
    }
    eprintln!("SKIPPED: {what} is missing (tools/test-all.sh installs it; set {REQUIRE_CLIENTS_ENV}=1 to fail instead)");
}

/// The Python interpreter to run the client scripts with, if it can import `modules`.
pub fn python_with(modules: &[&str]) -> Option<PathBuf> {
    let python = match std::env::var_os(PYTHON_ENV) {
        Some(path) => PathBuf::from(path),
        None => {
            missing_client(&format!("{PYTHON_ENV} (a Python with the Kafka clients)"));
            return None;
        }
    };
    let imports = modules
        .iter()
        .map(|module| format!("import {module}"))
        .collect::<Vec<_>>()
        .join("; ");
    let output = Command::new(&python)
        .args(["-c", &imports])
        .stdin(Stdio::null())
        .output();
    match output {
        Ok(output) if output.status.success() => Some(python),
        Ok(output) => {
            missing_client(&format!(
                "Python modules {modules:?} in {} ({})",
                python.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
            None
        }
        Err(error) => {
            missing_client(&format!("{} ({error})", python.display()));
            None
        }
    }
}

/// The `kcat` binary, if it is on the PATH.
pub fn kcat() -> Option<PathBuf> {
    match Command::new("kcat").arg("-V").stdin(Stdio::null()).output() {
        Ok(output) if output.status.success() => Some(PathBuf::from("kcat")),
        _ => {
            missing_client("kcat");
            None
        }
    }
}

/// The directory of the Python client scripts.
pub fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// A loopback port that was free a moment ago: bind port 0, read the port, release it.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

/// The `ringlog` binary under test, without the `RINGLOG_*` variables of the environment the
/// tests run in: the binary reads its settings from them, and a test's outcome must depend on
/// its own arguments only.
pub fn ringlog_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringlog"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("RINGLOG_") {
            command.env_remove(name);
        }
    }
    command
}

/// Held by every running [`Broker`] of a test binary. Each broker runs two shards and CI has two
/// cores: brokers of parallel tests would only slow each other into timeouts.
static ONE_BROKER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// One `ringlog serve` child process and the data directory it owns.
pub struct Broker {
    child: Option<Child>,
    /// Released after `Drop` has stopped the child.
    _one_at_a_time: MutexGuard<'static, ()>,
    addr: SocketAddr,
    /// The admin HTTP listener, on its own free port (tests run in parallel, and other
    /// brokers on the machine may hold the default 9644); `None` when a test's own flags set
    /// `--admin-listen`.
    admin_addr: Option<SocketAddr>,
    /// The data directory, kept across restarts; removed when the `Broker` is dropped.
    data_dir: tempfile::TempDir,
    /// Holds every run's stderr file (`stderr-<run>.log`); kept across restarts.
    log_dir: tempfile::TempDir,
    extra_args: Vec<String>,
    /// `RUST_LOG` for the broker, when a test reads its debug log.
    log_filter: Option<String>,
    run: usize,
}

impl Broker {
    /// Starts a broker on a fresh data directory with the default flags.
    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// Starts a broker on a fresh data directory with `extra_args` after the standard flags.
    pub fn start_with(extra_args: &[&str]) -> Broker {
        Broker::start_logging(extra_args, None)
    }

    /// [`Broker::start_with`], with the broker's `RUST_LOG` set to `log_filter`.
    pub fn start_logging(extra_args: &[&str], log_filter: Option<&str>) -> Broker {
        // A test that failed while holding the lock poisons it; the next test may still run.
        let one_at_a_time = ONE_BROKER_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut broker = Broker {
            child: None,
            _one_at_a_time: one_at_a_time,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_addr: None,
            data_dir: tempfile::Builder::new()
                .prefix("ringlog-e2e-data-")
                .tempdir()
                .expect("create the data directory"),
            log_dir: tempfile::Builder::new()
                .prefix("ringlog-e2e-logs-")
                .tempdir()
                .expect("create the log directory"),
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
            log_filter: log_filter.map(str::to_string),
            run: 0,
        };
        broker.spawn_until_ready();
        broker
    }

    /// The Kafka listener, `127.0.0.1:PORT`, as clients take it for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin HTTP listener (`/metrics`, `/api/v1/...`) of the current run.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
            .expect("the test's own flags set --admin-listen, so the harness did not pick one")
    }

    /// `http://127.0.0.1:PORT/path` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr())
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The PID of the running broker.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the broker is running").id()
    }

    /// True while the broker process has not exited.
    pub fn is_alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Panics unless the broker is still running.
    pub fn assert_alive(&mut self, context: &str) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the broker exited ({status}) {context}");
            }
        } else {
            panic!("the broker is not running {context}");
        }
    }

    /// Stops the broker with SIGTERM and asserts it exits with status 0 within
    /// [`BROKER_STOP_TIMEOUT`].
    pub fn stop(&mut self) {
        let status = self.signal_and_wait(libc::SIGTERM, BROKER_STOP_TIMEOUT);
        match status {
            Some(status) if status.success() => {}
            Some(status) => panic!("the broker exited with {status} after SIGTERM, not 0"),
            None => {
                self.kill();
                panic!(
                    "the broker did not exit within {BROKER_STOP_TIMEOUT:?} of SIGTERM (killed)"
                );
            }
        }
    }

    /// Kills the broker with SIGKILL, as a crash or power cut would, and reaps it.
    pub fn kill(&mut self) {
        let status = self.signal_and_wait(libc::SIGKILL, BROKER_STOP_TIMEOUT);
        assert!(status.is_some(), "the broker survived SIGKILL");
    }

    /// Starts the broker again on the same data directory. The port is a new free one: clients
    /// after a restart bootstrap afresh, and a fresh port keeps a lingering socket of the old
    /// process from ever making the test flaky.
    pub fn restart(&mut self) {
        assert!(
            !self.is_alive(),
            "restart needs the broker stopped or killed first"
        );
        self.child = None;
        self.spawn_until_ready();
    }

    /// The path of the current run's stderr file.
    pub fn stderr_path(&self) -> PathBuf {
        self.log_dir.path().join(format!("stderr-{}.log", self.run))
    }

    /// The last part of the current run's stderr, framed for a failure message.
    pub fn stderr_report(&self) -> String {
        let path = self.stderr_path();
        let text = std::fs::read(&path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|error| format!("(cannot read {}: {error})", path.display()));
        format!(
            "--- broker stderr ({}), last 8 KiB ---\n{}\n--- end of broker stderr ---",
            path.display(),
            tail(&text, 8 * 1024)
        )
    }

    fn spawn_until_ready(&mut self) {
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            self.run += 1;
            self.addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let own_admin_flag = self
                .extra_args
                .iter()
                .any(|arg| arg.starts_with("--admin-listen"));
            self.admin_addr =
                (!own_admin_flag).then(|| SocketAddr::from(([127, 0, 0, 1], free_port())));
            match self.spawn_once() {
                Ok(()) => return,
                Err(failure) => {
                    let retry = failure.contains("in use");
                    last_failure = failure;
                    if !retry {
                        break;
                    }
                }
            }
        }
        panic!("the broker did not start: {last_failure}");
    }

    /// One attempt: spawn and wait for an ApiVersions answer and, if the harness picked the
    /// admin port, for that port to accept. On failure the child is gone.
    fn spawn_once(&mut self) -> Result<(), String> {
        let stderr_path = self.stderr_path();
        let stderr = File::create(&stderr_path).expect("create the broker's stderr file");
        let stdout = stderr.try_clone().expect("clone the stderr file");
        // Only the flags below count.
        let mut command = ringlog_command();
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .arg("--listen")
            .arg(self.addr.to_string())
            .args(["--cores", "2", "--node-id", "1"])
            .args(
                self.admin_addr
                    .iter()
                    .flat_map(|admin| ["--admin-listen".to_string(), admin.to_string()]),
            )
            .args(&self.extra_args)
            // Plain text in the stderr file, for failure reports.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr));
        if let Some(filter) = &self.log_filter {
            command.env("RUST_LOG", filter);
        }
        let child = command
            .spawn()
            .map_err(|error| format!("spawning {:?}: {error}", command.get_program()))?;
        self.child = Some(child);

        let deadline = Instant::now() + BROKER_START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    let report = self.stderr_report();
                    let in_use = if report.contains("Address already in use")
                        || report.contains("AddrInUse")
                    {
                        " (address in use)"
                    } else {
                        ""
                    };
                    return Err(format!(
                        "the broker exited during startup with {status}{in_use}\n{report}"
                    ));
                }
            }
            // Shard 0 binds the admin port just after its Kafka listener, which another shard
            // may have opened first: ready means both accept.
            let admin_ok = || {
                self.admin_addr.is_none_or(|admin| {
                    TcpStream::connect_timeout(&admin, Duration::from_millis(500)).is_ok()
                })
            };
            if api_versions_ok(self.addr, Duration::from_millis(500)) && admin_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                self.child = None;
                return Err(format!(
                    "the broker did not answer ApiVersions on {} within {BROKER_START_TIMEOUT:?} (killed)\n{}",
                    self.addr,
                    self.stderr_report()
                ));
            }
            thread::sleep(POLL_INTERVAL * 4);
        }
    }

    /// Sends `signal` to our child by its PID and waits up to `timeout` for it to exit.
    fn signal_and_wait(&mut self, signal: libc::c_int, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        let pid = libc::pid_t::try_from(child.id()).expect("a PID fits pid_t");
        // SAFETY: kill(2) has no memory effects; the PID is our own unreaped child, so it cannot
        // have been reused by another process.
        unsafe {
            libc::kill(pid, signal);
        }
        wait_with_deadline(child, timeout)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // A failing test shows what the broker said, whatever the assertion that failed.
        if thread::panicking() {
            eprintln!("{}", self.stderr_report());
        }
        if let Some(child) = self.child.as_mut() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = wait_with_deadline(child, BROKER_STOP_TIMEOUT);
            }
        }
    }
}

/// Polls `child` until it exits or `timeout` passes.
pub fn wait_with_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// The last `max_bytes` of `text`, on a character boundary.
pub fn tail(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut start = text.len() - max_bytes;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// The ApiVersions API key.
pub const API_VERSIONS_KEY: i16 = 18;

/// A hand-encoded ApiVersions v0 request frame (size prefix included): the one request every
/// Kafka broker answers, whatever else it supports.
pub fn api_versions_v0_frame(correlation_id: i32) -> Vec<u8> {
    let client_id = b"ringlog-e2e";
    let mut body = Vec::new();
    body.extend_from_slice(&API_VERSIONS_KEY.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&correlation_id.to_be_bytes());
    body.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    body.extend_from_slice(client_id);
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// Sends ApiVersions v0 on a new connection and returns the response's error code and API keys,
/// or why there is none. Bounded by `timeout` for the connect and for each read and write.
pub fn api_versions_v0(addr: SocketAddr, timeout: Duration) -> Result<(i16, Vec<i16>), String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|error| format!("connect: {error}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|error| format!("set timeouts: {error}"))?;
    let correlation_id = 0x5eed;
    stream
        .write_all(&api_versions_v0_frame(correlation_id))
        .map_err(|error| format!("write: {error}"))?;
    let mut size = [0u8; 4];
    stream
        .read_exact(&mut size)
        .map_err(|error| format!("read size: {error}"))?;
    let size = i32::from_be_bytes(size);
    if !(10..=1 << 20).contains(&size) {
        return Err(format!("response size {size} is not plausible"));
    }
    let mut body = vec![0u8; size as usize];
    stream
        .read_exact(&mut body)
        .map_err(|error| format!("read body: {error}"))?;
    let _ = stream.shutdown(Shutdown::Both);
    let got_correlation_id = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    if got_correlation_id != correlation_id {
        return Err(format!(
            "correlation id {got_correlation_id}, expected {correlation_id}"
        ));
    }
    let error_code = i16::from_be_bytes([body[4], body[5]]);
    let count = i32::from_be_bytes([body[6], body[7], body[8], body[9]]);
    if count < 0 || 10 + count as usize * 6 > body.len() {
        return Err(format!(
            "api_keys count {count} does not fit a {size}-byte response"
        ));
    }
    let keys = (0..count as usize)
        .map(|index| {
            let at = 10 + index * 6;
            i16::from_be_bytes([body[at], body[at + 1]])
        })
        .collect();
    Ok((error_code, keys))
}

/// True when the broker at `addr` answers ApiVersions v0 with error code 0.
pub fn api_versions_ok(addr: SocketAddr, timeout: Duration) -> bool {
    matches!(api_versions_v0(addr, timeout), Ok((0, _)))
}

/// What an external command did.
#[derive(Debug)]
pub struct RunOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl RunOutput {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Runs `command` with `stdin` as its standard input, collecting its output, and kills it (by its
/// PID, it is our child) if it is still running after `timeout`; the error then says so and
/// carries what it printed.
pub fn run_bounded(
    command: &mut Command,
    stdin: &[u8],
    timeout: Duration,
) -> Result<RunOutput, String> {
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("spawning {description}: {error}"))?;
    let mut child_stdin = child.stdin.take().expect("piped stdin");
    let input = stdin.to_vec();
    let writer = thread::spawn(move || {
        // A child that exits without reading all of it is not this function's failure.
        let _ = child_stdin.write_all(&input);
    });
    let mut child_stdout = child.stdout.take().expect("piped stdout");
    let stdout_reader = thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = child_stdout.read_to_end(&mut bytes);
        bytes
    });
    let mut child_stderr = child.stderr.take().expect("piped stderr");
    let stderr_reader = thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = child_stderr.read_to_end(&mut bytes);
        bytes
    });
    let status = wait_with_deadline(&mut child, timeout);
    let timed_out = status.is_none();
    let status = match status {
        Some(status) => status,
        None => {
            let _ = child.kill();
            child
                .wait()
                .map_err(|error| format!("reaping {description}: {error}"))?
        }
    };
    let _ = writer.join();
    let output = RunOutput {
        status,
        stdout: stdout_reader.join().unwrap_or_default(),
        stderr: stderr_reader.join().unwrap_or_default(),
    };
    if timed_out {
        return Err(format!(
            "{description} did not finish within {timeout:?} (killed)\n--- stdout ---\n{}\n--- stderr ---\n{}",
            tail(&output.stdout_text(), 8 * 1024),
            tail(&output.stderr_text(), 8 * 1024)
        ));
    }
    Ok(output)
}

/// Runs `command` like [`run_bounded`] and panics, with its output, unless it exits 0. (The
/// broker's stderr follows when the test's [`Broker`] is dropped.)
pub fn run_ok(what: &str, command: &mut Command, stdin: &[u8]) -> RunOutput {
    match run_bounded(command, stdin, CLIENT_TIMEOUT) {
        Ok(output) if output.status.success() => output,
        Ok(output) => panic!(
            "{what} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            output.status,
            tail(&output.stdout_text(), 8 * 1024),
            tail(&output.stderr_text(), 16 * 1024)
        ),
        Err(failure) => panic!("{what}: {failure}"),
    }
}

/// A topic name unique to this test run, so reruns against the same broker never collide.
pub fn unique_topic(stem: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    format!("{stem}-{}-{nanos:09}", std::process::id())
}
