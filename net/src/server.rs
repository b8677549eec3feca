//! Starts the broker: locks the data directory, starts one shard per core, and on every shard
//! opens the shard's partitions, joins the cross-core bus and accepts Kafka connections on the
//! shared port. Shutdown (SIGTERM/SIGINT through [`Shutdown`]) stops accepting, lets in-flight
//! requests finish, closes every log cleanly and returns.
//!
//! [`run`] blocks until the broker has stopped (`ringlog serve`); [`start`] returns once every
//! shard listens, with the address bound, so a listen address with port 0 works (tests and the
//! embedded broker).

use std::cell::Cell;
use std::fs::File;
use std::future::Future;
use std::io::{Read, Seek, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use event_listener::Event;
use ringlog_engine::bus::BusBuilder;
use ringlog_engine::rt::fs::Storage;
use ringlog_engine::rt::net::{TcpListener, TcpStream};
use ringlog_engine::rt::{self, RuntimeConfig, ShardContext, TaskClass};
use ringlog_engine::shard::table::ShardTable;
use ringlog_engine::shard::{Shard, ShardConfig};

use crate::admin;
use crate::broker::{Broker, ControllerRole};
use crate::connection::Connections;
use crate::controller::Controller;
use crate::messages::{BrokerRequest, BrokerResponse};
use crate::quorum::QuorumLink;
use crate::{BrokerConfig, Error, Result, Shutdown};
use ringlog_cluster::controller::{ControllerConfig, ControllerNode};

/// How often each shard looks at the shutdown flag a signal handler sets. A signal cannot wake
/// an executor, so it is polled; 50 ms is imperceptible at shutdown and costs nothing.
const SHUTDOWN_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How long in-flight requests may take to finish at shutdown before connections are dropped:
/// Kafka's default `request.timeout.ms`, the longest a client waits for an answer anyway.
pub const SHUTDOWN_DRAIN_GRACE: Duration = Duration::from_secs(30);

/// The lock file in the data directory.
pub const LOCK_FILE: &str = ".lock";

/// Runs a broker until `shutdown` is triggered, then stops accepting, finishes in-flight
/// requests, syncs every log and writes the clean-shutdown markers. Blocks the calling thread.
pub fn run(config: BrokerConfig, shutdown: Shutdown) -> Result<()> {
    start(config, shutdown)?.wait()
}

/// Starts a broker on threads of its own and returns once every shard accepts connections.
/// Startup errors (the data directory locked or unusable, the address taken, a log that cannot
/// be opened) are returned here; [`Running::wait`] reports those of the run itself.
///
/// Waits as long as startup takes, which includes recovering every partition log; see
/// [`start_within`] for a bounded wait.
pub fn start(config: BrokerConfig, shutdown: Shutdown) -> Result<Running> {
    start_inner(config, shutdown, None)
}

/// [`start`], giving up after `limit`: the broker is then asked to stop (it does once it gets
/// far enough to look), it is not waited for, and [`Error::StartTimeout`] is returned.
pub fn start_within(config: BrokerConfig, shutdown: Shutdown, limit: Duration) -> Result<Running> {
    start_inner(config, shutdown, Some(limit))
}

fn start_inner(
    config: BrokerConfig,
    shutdown: Shutdown,
    limit: Option<Duration>,
) -> Result<Running> {
    // Every path below is opened through io_uring, where a bare relative directory name
    // ("data", no "./") fails to open as a partition's parent; absolute, it means the same.
    let mut config = config;
    if let Ok(absolute) = std::path::absolute(&config.data_dir) {
        config.data_dir = absolute;
    }
    // Locked on the caller's thread, so a second broker on the same directory fails here.
    let lock = DataDirLock::acquire(&config.data_dir)?;
    let runtime = RuntimeConfig {
        shard_count: config.cores,
        pin_to_cores: config.pin_to_cores,
        name: "ringlog-shard".into(),
        ..RuntimeConfig::default()
    };
    let shard_count = runtime.resolved_shard_count()?;
    let quorum = start_controller(&config)?;
    let bus = BusBuilder::<BrokerRequest, BrokerResponse>::new(shard_count);
    let config = Arc::new(config);
    tracing::info!(
        listen = %config.listen, data_dir = %config.data_dir.display(), shards = shard_count,
        node_id = config.node_id, "starting broker"
    );
    let (listening_sender, listening) = mpsc::channel();
    let listener_start = Arc::new(ListenerStart::new(shard_count, listening_sender));
    let stopper = shutdown.clone();
    let thread = std::thread::Builder::new()
        .name("ringlog-broker".into())
        .spawn(move || {
            let controller = quorum.clone();
            let outcomes = rt::run_shards(&runtime, move |context| {
                let config = Arc::clone(&config);
                let quorum = quorum.clone();
                let bus = bus.clone();
                let shutdown = shutdown.clone();
                let listener_start = Arc::clone(&listener_start);
                async move {
                    let outcome = shard_main(
                        context,
                        config,
                        quorum,
                        bus,
                        shutdown.clone(),
                        Arc::clone(&listener_start),
                    )
                    .await;
                    if outcome.is_err() {
                        // A broker missing a shard cannot serve: the shards already listening
                        // stop, and those waiting for shard 0's address stop waiting.
                        listener_start.abandon();
                        shutdown.trigger();
                    }
                    outcome
                }
            });
            // The controller stops after the shards, which may still heartbeat to it.
            drop(controller);
            drop(lock);
            let mut first_error = None;
            for outcome in outcomes? {
                if let Err(error) = outcome {
                    first_error.get_or_insert(error);
                }
            }
            match first_error {
                Some(error) => Err(error),
                None => {
                    tracing::info!("broker stopped cleanly");
                    Ok(())
                }
            }
        })
        .map_err(|source| Error::Io {
            op: "spawn",
            target: "the broker thread".into(),
            source,
        })?;
    let received = match limit {
        None => listening
            .recv()
            .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        Some(limit) => listening.recv_timeout(limit),
    };
    match received {
        Ok(local_addr) => Ok(Running {
            local_addr,
            shutdown: stopper,
            thread: Some(thread),
        }),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            stopper.trigger();
            Err(Error::StartTimeout {
                waited: limit.unwrap_or_default(),
            })
        }
        // Every shard has let go of the channel without all of them listening: one failed,
        // and the broker's thread says which and why.
        Err(mpsc::RecvTimeoutError::Disconnected) => match thread.join() {
            Ok(Err(error)) => Err(error),
            Ok(Ok(())) => Err(Error::StoppedBeforeListening),
            Err(panic) => std::panic::resume_unwind(panic),
        },
    }
}

/// A broker started by [`start`], serving on its own threads. Dropping it stops the broker
/// cleanly and waits for it, like [`Running::stop`] without the outcome.
pub struct Running {
    local_addr: SocketAddr,
    shutdown: Shutdown,
    /// `None` once waited for.
    thread: Option<JoinHandle<Result<()>>>,
}

impl Running {
    /// The address every shard listens on: `listen`, with the port the kernel chose when
    /// `listen` asked for port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The broker's shutdown request; triggering it makes the broker stop.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// True once the broker has stopped (after a shutdown, or a failure).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits until the broker has stopped (its [`Shutdown`] was triggered, here or by whoever
    /// else holds it) and returns how the run ended.
    pub fn wait(mut self) -> Result<()> {
        self.join()
    }

    /// Asks the broker to stop and waits until it has: connections drained, every log synced
    /// and closed, the data directory unlocked.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown.trigger();
        self.join()
    }

    fn join(&mut self) -> Result<()> {
        match self.thread.take().map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(error))) => Err(error),
            // Shards abort the process on panic, so this is a panic of the broker thread's
            // own few lines: a bug, passed on.
            Some(Err(panic)) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.thread.is_none() {
            return;
        }
        self.shutdown.trigger();
        if let Err(error) = self.join() {
            tracing::error!(%error, "the broker failed");
        }
    }
}

/// How the shards' listeners come up, shared by every shard and by [`start`]'s caller.
///
/// Shard 0 binds `listen` first and records the address it got, which has the real port when
/// `listen` asks for port 0 (the kernel picks a free one); the other shards then bind that same
/// address (SO_REUSEPORT), so all of them share one port. The last shard to listen tells the
/// caller the address.
struct ListenerStart {
    /// Where shard 0 bound the listener. Every shard's [`Broker`] holds it, to advertise the
    /// real port; it is set before any shard accepts a connection.
    address: Arc<OnceLock<SocketAddr>>,
    /// Set when a shard failed to start, so the others stop waiting for shard 0's address.
    abandoned: AtomicBool,
    /// Notified (across threads) once `address` or `abandoned` is set.
    decided: Event,
    /// Shards not yet listening, and the caller's channel, which the last of them takes.
    pending: Mutex<(usize, Option<mpsc::Sender<SocketAddr>>)>,
}

impl ListenerStart {
    fn new(shard_count: usize, caller: mpsc::Sender<SocketAddr>) -> Self {
        ListenerStart {
            address: Arc::new(OnceLock::new()),
            abandoned: AtomicBool::new(false),
            decided: Event::new(),
            pending: Mutex::new((shard_count, Some(caller))),
        }
    }

    /// Binds this shard's listener: shard 0 on `listen`, every other shard on the address
    /// shard 0 got.
    async fn bind(&self, shard_id: usize, listen: SocketAddr) -> Result<TcpListener> {
        let io_error = |address: SocketAddr| {
            move |source| Error::Io {
                op: "listen on",
                target: address.to_string(),
                source,
            }
        };
        if shard_id == 0 {
            let listener = TcpListener::bind(listen).map_err(io_error(listen))?;
            let address = listener.local_addr().map_err(io_error(listen))?;
            // Only shard 0 sets it, once.
            let _ = self.address.set(address);
            self.decided.notify(usize::MAX);
            return Ok(listener);
        }
        let address = loop {
            let decided = self.decided.listen();
            if let Some(address) = self.address.get() {
                break *address;
            }
            if self.abandoned.load(Ordering::SeqCst) {
                return Err(io_error(listen)(std::io::Error::other(
                    "another shard failed to start",
                )));
            }
            decided.await;
        };
        TcpListener::bind(address).map_err(io_error(address))
    }

    /// Gives up the start after a shard failed: shards waiting for shard 0's address fail.
    fn abandon(&self) {
        self.abandoned.store(true, Ordering::SeqCst);
        self.decided.notify(usize::MAX);
    }

    /// Records that one more shard listens; the last one tells the caller.
    fn listening(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.0 -= 1;
        if pending.0 == 0 {
            if let (Some(caller), Some(address)) = (pending.1.take(), self.address.get()) {
                // The caller may have given up waiting (start_within); nothing else to tell.
                let _ = caller.send(*address);
            }
        }
    }
}

/// Runs `wait` until it finishes or the broker is asked to stop, whichever comes first.
async fn unless_stopped<T>(shutdown: &Shutdown, wait: impl Future<Output = T>) -> Result<T> {
    let stopped = async {
        while !shutdown.is_triggered() {
            rt::sleep(SHUTDOWN_POLL_INTERVAL).await;
        }
        Err(Error::StoppedWhileStarting)
    };
    futures_lite::future::or(async { Ok(wait.await) }, stopped).await
}

/// Starts this node's controller of the quorum, in a multi-node cluster: on a thread of its
/// own, with its files under `<data-dir>/controller`.
fn start_controller(config: &BrokerConfig) -> Result<Option<Arc<ControllerNode>>> {
    let Some(cluster) = &config.cluster else {
        return Ok(None);
    };
    let dir = config.data_dir.join(CONTROLLER_DIR);
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        op: "create",
        target: dir.display().to_string(),
        source,
    })?;
    let mut controller = ControllerConfig::new(
        config.node_id as u64,
        cluster.controller_listen.clone(),
        cluster.quorum.clone(),
        dir,
    );
    controller.tuning = cluster.tuning.clone();
    controller.session_timeout_ms = cluster.session_timeout_ms;
    tracing::info!(
        quorum = %cluster.quorum, listen = %cluster.controller_listen,
        "starting the controller"
    );
    let node =
        ControllerNode::start(controller).map_err(|error| Error::Controller(error.to_string()))?;
    Ok(Some(Arc::new(node)))
}

/// The controller's directory inside the data directory.
pub const CONTROLLER_DIR: &str = "controller";

async fn shard_main(
    context: ShardContext,
    config: Arc<BrokerConfig>,
    quorum: Option<Arc<ControllerNode>>,
    bus: BusBuilder<BrokerRequest, BrokerResponse>,
    shutdown: Shutdown,
    listener_start: Arc<ListenerStart>,
) -> Result<()> {
    let storage = Storage::Real;
    storage.prime_data_dir(&config.data_dir).await?;
    let shard = Shard::new(
        context.shard_id,
        storage.clone(),
        ShardConfig {
            retention_check_interval: Duration::from_millis(
                config.log_retention_check_interval_ms.max(1) as u64,
            ),
            auto_high_watermark: quorum.is_none(),
            ..ShardConfig::new(&config.data_dir)
        },
        ShardTable::new(context.shard_count),
    );
    shard.start_background();
    let controller = match (&quorum, context.shard_id.0) {
        (Some(node), 0) => Some(ControllerRole::Quorum(QuorumLink::new(
            Arc::clone(node),
            context.shard_count,
        ))),
        (None, 0) => Some(ControllerRole::Single(
            Controller::load(
                storage.clone(),
                config.data_dir.clone(),
                context.shard_count,
            )
            .await?,
        )),
        _ => None,
    };
    let broker = Broker::new(
        Arc::clone(&config),
        Arc::clone(&listener_start.address),
        shard,
        storage,
        context.shard_count,
        controller,
        quorum.clone(),
    );
    // Registered before joining the bus, so it runs after the bus has closed: by then no
    // shard can send this one more work, and every log can be closed.
    let closing = Rc::clone(&broker);
    context.on_shutdown(move || async move {
        if let Err(error) = closing.shutdown().await {
            tracing::error!(shard = %closing.shard_id, %error, "closing logs failed");
        }
    });
    crate::groups::GroupCoordinator::start_timer(&broker);
    if quorum.is_some() {
        crate::replica::Replication::start_timer(&broker);
    }
    // Joining the bus waits for every shard, and a shard other than 0 then waits for shard 0's
    // metadata: if another shard failed to start (a corrupt metadata file, say), neither ever
    // comes, so both waits end when that failure triggers the shutdown.
    let bus = unless_stopped(&shutdown, bus.join(&context)).await??;
    broker.set_bus(Rc::clone(&bus));
    let serving = Rc::clone(&broker);
    bus.serve(move |_from, request| Rc::clone(&serving).handle(request));
    if let Some(ControllerRole::Single(controller)) = &broker.controller {
        controller.bootstrap(&broker).await;
    } else if let Some(ControllerRole::Quorum(link)) = &broker.controller {
        unless_stopped(&shutdown, link.bootstrap(&broker)).await?;
    } else {
        unless_stopped(&shutdown, broker.wait_ready()).await?;
    }

    let listener = listener_start
        .bind(usize::from(context.shard_id.0), config.listen)
        .await?;
    // Shard 0 serves the admin port. Bound once the metadata is loaded, when every shard is
    // past waiting for it: a failure then stops the whole broker (the other shards see the
    // shutdown flag and stop too) with an error naming the address.
    let admin = match config.admin_listen {
        Some(address) if context.shard_id.0 == 0 => match admin::bind(address) {
            Ok(listener) => Some((address, listener)),
            Err(error) => {
                shutdown.trigger();
                return Err(error);
            }
        },
        _ => None,
    };
    if context.shard_id.0 == 0 {
        let (host, port) = broker.advertised();
        tracing::info!(
            listen = %listener.local_addr().unwrap_or(config.listen),
            advertised_host = %host, advertised_port = port,
            "accepting Kafka connections"
        );
    }
    broker.set_serving();
    let stopping = Rc::new(Stopping::default());
    let watcher = Rc::clone(&stopping);
    let leaving = Rc::clone(&broker);
    rt::spawn_detached(TaskClass::Background, async move {
        while !shutdown.is_triggered() {
            rt::sleep(SHUTDOWN_POLL_INTERVAL).await;
        }
        // A cluster node hands its leaderships over while it still serves.
        if let Some(ControllerRole::Quorum(link)) = &leaving.controller {
            link.controlled_shutdown(&leaving).await;
        }
        watcher.stop();
    });
    let connections = Connections::new(Rc::clone(&stopping));
    broker.set_connections(Rc::clone(&connections));
    if let Some((address, listener)) = admin {
        tracing::info!(admin_listen = %address, "serving the admin HTTP API and /metrics");
        admin::start(Rc::clone(&broker), listener, Rc::clone(&stopping));
    }
    // The accept loop is a task of its own: this (main) task only waits for the stop, so the
    // runtime's stall guard can poll it without each poll leaving a waker on a pending accept.
    let accepting = rt::spawn(TaskClass::Latency, {
        let broker = Rc::clone(&broker);
        let stopping = Rc::clone(&stopping);
        let connections = Rc::clone(&connections);
        async move {
            accept_loop(listener, broker, stopping, connections).await;
        }
    });
    listener_start.listening();
    stopping.wait().await;
    accepting.await;
    let drained = rt::timeout(SHUTDOWN_DRAIN_GRACE, connections.wait_closed()).await;
    if drained.is_none() {
        tracing::warn!(
            shard = %context.shard_id, open = connections.open(),
            "connections still busy after the shutdown grace; closing anyway"
        );
    }
    Ok(())
}

/// Accepts connections until the broker stops; each connection runs in its own task.
async fn accept_loop(
    listener: TcpListener,
    broker: Rc<Broker>,
    stopping: Rc<Stopping>,
    connections: Rc<Connections>,
) {
    while let Some(stream) = accept_until_stopped(&listener, &stopping, "Kafka").await {
        connections.spawn(Rc::clone(&broker), stream, None);
    }
}

/// After a failed accept (EMFILE, say) wait this long before the next, rather than spin.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(10);

/// The next connection on `listener`, or `None` once the broker is stopping. A failed accept
/// is logged (naming the `port`) and retried after a short wait.
pub(crate) async fn accept_until_stopped(
    listener: &TcpListener,
    stopping: &Stopping,
    port: &'static str,
) -> Option<TcpStream> {
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            stopping.wait().await;
            None
        })
        .await;
        match accepted? {
            Ok(stream) => return Some(stream),
            Err(error) => {
                tracing::warn!(%error, port, "accept failed");
                rt::sleep(ACCEPT_RETRY_DELAY).await;
            }
        }
    }
}

/// Set once the broker is stopping: the accept loop and every connection's reader watch it.
///
/// One per shard.
#[derive(Default)]
pub struct Stopping {
    stopped: Cell<bool>,
    event: Event,
}

impl Stopping {
    pub fn stop(&self) {
        self.stopped.set(true);
        self.event.notify(usize::MAX);
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.get()
    }

    pub async fn wait(&self) {
        loop {
            let listener = self.event.listen();
            if self.stopped.get() {
                return;
            }
            listener.await;
        }
    }
}

/// An exclusive `flock` on `<data-dir>/.lock`, holding the owner's pid, for the broker's life.
struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    fn acquire(data_dir: &Path) -> Result<DataDirLock> {
        let io = |op: &'static str, path: &Path| {
            let target = path.display().to_string();
            move |source| Error::Io { op, target, source }
        };
        std::fs::create_dir_all(data_dir).map_err(io("create data directory", data_dir))?;
        let path: PathBuf = data_dir.join(LOCK_FILE);
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("open lock file", &path))?;
        // SAFETY: flock on a file descriptor this function owns; no memory is involved.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(Error::DataDirLocked {
                path: data_dir.to_path_buf(),
                holder: if holder.is_empty() {
                    "unknown".into()
                } else {
                    holder.to_string()
                },
            });
        }
        file.set_len(0).map_err(io("truncate lock file", &path))?;
        file.rewind().map_err(io("rewind lock file", &path))?;
        writeln!(file, "{}", std::process::id()).map_err(io("write lock file", &path))?;
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DataDirLock::acquire(dir.path()).expect("first lock");
        let error = DataDirLock::acquire(dir.path())
            .err()
            .expect("second lock refused");
        let message = error.to_string();
        assert!(
            message.contains("locked by another ringlog process"),
            "{message}"
        );
        assert!(
            message.contains(&std::process::id().to_string()),
            "{message}"
        );
        drop(first);
        DataDirLock::acquire(dir.path()).expect("free again");
    }
}
