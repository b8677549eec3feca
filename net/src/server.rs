//! Starts the broker: locks the data directory, starts one shard per core, and on every shard
//! opens the shard's partitions, joins the cross-core bus and accepts Kafka connections on the
//! shared port. Shutdown (SIGTERM/SIGINT through [`Shutdown`]) stops accepting, lets in-flight
//! requests finish, closes every log cleanly and returns.

use std::cell::Cell;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use event_listener::Event;
use ringlog_engine::bus::BusBuilder;
use ringlog_engine::rt::fs::Storage;
use ringlog_engine::rt::net::TcpListener;
use ringlog_engine::rt::{self, RuntimeConfig, ShardContext, TaskClass};
use ringlog_engine::shard::table::ShardTable;
use ringlog_engine::shard::{Shard, ShardConfig};

use crate::admin;
use crate::broker::Broker;
use crate::connection::Connections;
use crate::controller::Controller;
use crate::messages::{BrokerRequest, BrokerResponse};
use crate::{BrokerConfig, Error, Result, Shutdown};

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
    let lock = DataDirLock::acquire(&config.data_dir)?;
    let runtime = RuntimeConfig {
        shard_count: config.cores,
        name: "ringlog-shard".into(),
        ..RuntimeConfig::default()
    };
    let shard_count = runtime.resolved_shard_count()?;
    let bus = BusBuilder::<BrokerRequest, BrokerResponse>::new(shard_count);
    let config = Arc::new(config);
    tracing::info!(
        listen = %config.listen, data_dir = %config.data_dir.display(), shards = shard_count,
        node_id = config.node_id, "starting broker"
    );
    let outcomes = rt::run_shards(&runtime, move |context| {
        let config = Arc::clone(&config);
        let bus = bus.clone();
        let shutdown = shutdown.clone();
        async move { shard_main(context, config, bus, shutdown).await }
    })?;
    drop(lock);
    let mut first_error = None;
    for outcome in outcomes {
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
}

async fn shard_main(
    context: ShardContext,
    config: Arc<BrokerConfig>,
    bus: BusBuilder<BrokerRequest, BrokerResponse>,
    shutdown: Shutdown,
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
            ..ShardConfig::new(&config.data_dir)
        },
        ShardTable::new(context.shard_count),
    );
    shard.start_background();
    let controller = if context.shard_id.0 == 0 {
        Some(
            Controller::load(
                storage.clone(),
                config.data_dir.clone(),
                context.shard_count,
            )
            .await?,
        )
    } else {
        None
    };
    let broker = Broker::new(
        Arc::clone(&config),
        shard,
        storage,
        context.shard_count,
        controller,
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
    let bus = bus.join(&context).await?;
    broker.set_bus(Rc::clone(&bus));
    let serving = Rc::clone(&broker);
    bus.serve(move |_from, request| Rc::clone(&serving).handle(request));
    if let Some(controller) = &broker.controller {
        controller.bootstrap(&broker).await;
    } else {
        broker.wait_ready().await;
    }

    let listener = TcpListener::bind(config.listen).map_err(|source| Error::Io {
        op: "listen on",
        target: config.listen.to_string(),
        source,
    })?;
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
        tracing::info!(listen = %config.listen, "accepting Kafka connections");
    }
    broker.set_serving();
    let stopping = Rc::new(Stopping::default());
    let watcher = Rc::clone(&stopping);
    rt::spawn_detached(TaskClass::Background, async move {
        while !shutdown.is_triggered() {
            rt::sleep(SHUTDOWN_POLL_INTERVAL).await;
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
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            stopping.wait().await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(stream)) => stream,
            Some(Err(error)) => {
                tracing::warn!(%error, "accept failed");
                rt::sleep(ACCEPT_RETRY_DELAY).await;
                continue;
            }
        };
        connections.spawn(Rc::clone(&broker), stream, None);
    }
}

/// After a failed accept (EMFILE, say) wait this long before the next, rather than spin.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(10);

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
