//! A stall detector for benchmark cases. On this project's machines glommio 0.9 has been seen
//! to put a shard to sleep in `io_uring_enter` while its appends wait for completions that have
//! already happened; it sleeps until any signal arrives (attaching a debugger "fixes" it).
//! Rather than hang the whole run, the watchdog notices that no progress was made for a while,
//! records what the rings and threads looked like, and wakes the shard threads with a no-op
//! signal. The case is reported as stalled: its numbers include the stall and are not valid.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Once;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

/// No progress for this long while a case runs counts as a stall. Every append and read ticks
/// the progress counter, and the slowest step without ticks (opening or closing a log, a
/// segment roll) takes milliseconds, so seconds of silence is never normal.
const STALL_AFTER: Duration = Duration::from_secs(5);

/// How often the watchdog looks at the progress counter.
const CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// The signal used to interrupt a sleeping shard. SIGURG is ignored by default, so a stray one
/// outside the benchmark harms nothing, and nothing else in this process uses it.
const NUDGE_SIGNAL: libc::c_int = libc::SIGURG;

/// Ticked by every completed append and read, on every shard.
static PROGRESS: AtomicU64 = AtomicU64::new(0);

/// Records progress. One relaxed increment: cheap enough for every append.
pub fn tick() {
    PROGRESS.fetch_add(1, Ordering::Relaxed);
}

/// What the watchdog saw during one case.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StallReport {
    pub case: String,
    /// Times the shard threads had to be woken by a signal.
    pub nudges: u64,
    /// /proc state of the process's threads and io_uring instances at the first stall.
    pub diagnostics: String,
}

/// Watches one case from [`Watchdog::start`] until [`Watchdog::finish`].
pub struct Watchdog {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<StallReport>,
}

impl Watchdog {
    /// Starts watching `case`; shard threads are recognised by `thread_name_prefix`.
    pub fn start(case: &str, thread_name_prefix: &'static str) -> Watchdog {
        install_nudge_handler();
        let (stop, stopped) = mpsc::channel();
        let case = case.to_string();
        let thread = std::thread::spawn(move || watch(case, thread_name_prefix, &stopped));
        Watchdog { stop, thread }
    }

    /// Stops watching and returns what was seen.
    pub fn finish(self) -> StallReport {
        let _ = self.stop.send(());
        self.thread.join().unwrap_or_default()
    }
}

fn watch(case: String, thread_name_prefix: &str, stopped: &mpsc::Receiver<()>) -> StallReport {
    let mut report = StallReport {
        case,
        ..StallReport::default()
    };
    let mut last_progress = PROGRESS.load(Ordering::Relaxed);
    let mut last_change = Instant::now();
    loop {
        match stopped.recv_timeout(CHECK_INTERVAL) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return report,
            Err(RecvTimeoutError::Timeout) => {}
        }
        let progress = PROGRESS.load(Ordering::Relaxed);
        if progress != last_progress {
            last_progress = progress;
            last_change = Instant::now();
            continue;
        }
        if last_change.elapsed() < STALL_AFTER {
            continue;
        }
        if report.nudges == 0 {
            report.diagnostics = diagnostics();
            eprintln!(
                "WARNING: {}: no progress for {:?}; waking the shard threads (see the report's \
                 stall diagnostics)",
                report.case, STALL_AFTER
            );
        }
        report.nudges += 1;
        nudge(thread_name_prefix);
        last_change = Instant::now();
    }
}

extern "C" fn ignore_signal(_signal: libc::c_int) {}

/// Installs a no-op handler without SA_RESTART, so a nudged `io_uring_enter` returns EINTR
/// (which glommio treats as "look at the rings again").
fn install_nudge_handler() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: all-zeroes is a valid sigaction; the handler is async-signal-safe (it does
        // nothing), and the mask is initialised before use.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            action.sa_flags = 0;
            libc::sigaction(NUDGE_SIGNAL, &action, std::ptr::null_mut());
        }
    });
}

/// Sends the nudge signal to every thread of this process whose name starts with `prefix`.
fn nudge(prefix: &str) {
    let process_id = std::process::id() as libc::pid_t;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for task in tasks.flatten() {
        let Some(thread_id) = task
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if name.starts_with(prefix) {
            // SAFETY: tgkill with a valid signal number has no memory-safety requirements.
            unsafe {
                libc::syscall(libc::SYS_tgkill, process_id, thread_id, NUDGE_SIGNAL);
            }
        }
    }
}

/// Each thread's name, state and wait channel, and each io_uring's fdinfo (queue heads and
/// tails, pending polls): enough to tell a lost wakeup from a slow disk.
fn diagnostics() -> String {
    let mut out = String::new();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let path = task.path();
            let read = |file: &str| std::fs::read_to_string(path.join(file)).unwrap_or_default();
            out += &format!(
                "thread {} {} wchan={}\n",
                task.file_name().to_string_lossy(),
                read("comm").trim(),
                read("wchan").trim()
            );
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        for fd in fds.flatten() {
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            if target.to_string_lossy().contains("io_uring") {
                let name = fd.file_name();
                let info = std::fs::read_to_string(format!(
                    "/proc/self/fdinfo/{}",
                    name.to_string_lossy()
                ))
                .unwrap_or_default();
                let interesting: Vec<&str> = info
                    .lines()
                    .filter(|line| {
                        ["SqHead", "SqTail", "CqHead", "CqTail", "  op="]
                            .iter()
                            .any(|key| line.starts_with(key))
                    })
                    .collect();
                out += &format!(
                    "io_uring fd {}: {}\n",
                    name.to_string_lossy(),
                    interesting.join(" ")
                );
            }
        }
    }
    out
}
