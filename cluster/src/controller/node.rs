//! A controller of the quorum, running: [`ControllerNode`] starts openraft, the controller port
//! and the stores on a thread of its own with a single-threaded tokio runtime, and offers the
//! broker side a runtime-agnostic API: propose a command (answered by the leader, wherever it
//! is), ask who leads, follow the applied state.
//!
//! Bootstrap rule: a controller whose directory is empty (no vote, no log) and whose id is the
//! lowest of the quorum initializes the cluster with the whole quorum as its membership; the
//! others wait to hear from it. Whichever controller then leads proposes `InitializeCluster`
//! (a new cluster id, or the configured seed image) until one is applied. A controller whose
//! directory was lost must not rejoin as if new: its vote is gone, which Raft's safety assumes
//! cannot happen. Replacing a controller is a membership change, not yet offered here.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::SnapshotPolicy;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use super::command::{CommandResponse, ControllerState, MetadataCommand, COMMAND_BYTES_MAX};
use super::liveness::{HeartbeatReply, Liveness};
use super::log_store::LogStore;
use super::network::{
    self, commit_here, NetworkFactory, ProposeRefusal, Request, Response, PAYLOAD_ENTRIES_MAX,
    SNAPSHOT_CHUNK_BYTES,
};
use super::quorum::Quorum;
use super::sessions::{Heartbeat, BROKER_SESSION_TIMEOUT_MS_DEFAULT};
use super::state_machine::StateMachineStore;
use super::{ControllerId, Error, Raft, Result};
use crate::metadata::{new_cluster_id, MetadataImage};

/// How long a proposal may wait for a leader to commit it. An election takes a few election
/// timeouts at worst; past this the caller gets [`Error::NoLeader`] (nothing applied) or
/// [`Error::Indeterminate`], and Kafka clients retry on their own.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a proposal waits between two tries when there is no leader, or the one it tried
/// said it is not the leader any more; a leader change wakes it sooner.
const PROPOSE_RETRY_INTERVAL: Duration = Duration::from_millis(50);

/// How long a heartbeat may take to reach the active controller and be answered; a broker
/// heartbeats every 2 s by default, so a slower answer is as good as lost.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the controller thread may take to open its stores, bind and start openraft.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one chunk of a snapshot may take to arrive and be written, durably for the last.
/// A chunk is [`SNAPSHOT_CHUNK_BYTES`]; openraft's 200 ms default leaves no room for an fsync
/// on a busy disk.
const INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 5_000;

/// openraft's timing and snapshot knobs. The defaults suit production; tests shrink them.
#[derive(Clone, Debug)]
pub struct ControllerTuning {
    /// How often the leader heartbeats, and how long one AppendEntries may take (openraft uses
    /// the interval as that RPC's timeout), so it must cover a follower's fsync.
    pub heartbeat_interval_ms: u64,
    /// A follower that hears no leader for a random time in this range starts an election.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// A snapshot is taken after this many entries since the last one.
    pub snapshot_every_entries: u64,
    /// Entries kept in the log after a snapshot, so a follower a little behind catches up from
    /// the log rather than receiving the whole snapshot.
    pub entries_kept_after_snapshot: u64,
}

impl Default for ControllerTuning {
    /// 250 ms heartbeats (an fsync on a busy disk fits) and 1-2 s elections, about KRaft's;
    /// a snapshot every 1024 commands keeps the log, replayed at every start, short; 256
    /// entries kept cover a follower that was away for a burst of commands.
    fn default() -> Self {
        ControllerTuning {
            heartbeat_interval_ms: 250,
            election_timeout_min_ms: 1_000,
            election_timeout_max_ms: 2_000,
            snapshot_every_entries: 1_024,
            entries_kept_after_snapshot: 256,
        }
    }
}

/// What a controller needs to start.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    pub node_id: ControllerId,
    /// The address to bind the controller port to; the quorum list says how others reach it.
    pub listen: String,
    pub quorum: Quorum,
    /// The controller's own directory (`raft-log`, `raft-vote`, `raft-committed`, `snapshot`).
    pub data_dir: PathBuf,
    pub tuning: ControllerTuning,
    /// Kafka's `broker.session.timeout.ms`: the active controller fences a broker it has not
    /// heard from for this long.
    pub session_timeout_ms: u64,
    /// The image a new cluster starts from (a single-node broker's `cluster-metadata.json`
    /// when it becomes a quorum); a new empty image with a random cluster id when `None`.
    pub seed_image: Option<MetadataImage>,
}

impl ControllerConfig {
    pub fn new(
        node_id: ControllerId,
        listen: impl Into<String>,
        quorum: Quorum,
        data_dir: impl Into<PathBuf>,
    ) -> ControllerConfig {
        ControllerConfig {
            node_id,
            listen: listen.into(),
            quorum,
            data_dir: data_dir.into(),
            tuning: ControllerTuning::default(),
            session_timeout_ms: BROKER_SESSION_TIMEOUT_MS_DEFAULT,
            seed_image: None,
        }
    }
}

/// A running controller. Dropping it stops it (as [`ControllerNode::shutdown`] does).
pub struct ControllerNode {
    id: ControllerId,
    address: SocketAddr,
    raft: Raft,
    state_machine: StateMachineStore,
    liveness: Liveness,
    quorum: Quorum,
    runtime: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// What the controller thread hands back once it runs.
struct Started {
    address: SocketAddr,
    raft: Raft,
    state_machine: StateMachineStore,
    liveness: Liveness,
    runtime: tokio::runtime::Handle,
}

impl ControllerNode {
    /// Starts a controller, binding `config.listen`. Returns once the stores are open and the
    /// port listens, or with the error that stopped it (a corrupt log names its file).
    pub fn start(config: ControllerConfig) -> Result<ControllerNode> {
        Self::start_inner(config, None)
    }

    /// Starts a controller on a listener the caller bound (tests bind port 0 to learn the
    /// port before writing the quorum list).
    pub fn start_with_listener(
        config: ControllerConfig,
        listener: std::net::TcpListener,
    ) -> Result<ControllerNode> {
        Self::start_inner(config, Some(listener))
    }

    fn start_inner(
        config: ControllerConfig,
        listener: Option<std::net::TcpListener>,
    ) -> Result<ControllerNode> {
        if !config.quorum.contains(config.node_id) {
            return Err(Error::NotInQuorum(config.node_id));
        }
        let (ready_sender, ready) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel();
        let id = config.node_id;
        let quorum = config.quorum.clone();
        let thread = std::thread::Builder::new()
            .name(format!("ringlog-controller-{id}"))
            .spawn(move || run(config, listener, ready_sender, stopped))
            .map_err(|source| Error::Io {
                op: "spawn the controller thread",
                path: PathBuf::new(),
                source,
            })?;
        let started = match ready.recv_timeout(START_TIMEOUT) {
            Ok(Ok(started)) => started,
            Ok(Err(error)) => {
                let _ = thread.join();
                return Err(error);
            }
            Err(_) => {
                return Err(Error::Raft(format!(
                    "the controller did not start within {} s",
                    START_TIMEOUT.as_secs()
                )))
            }
        };
        Ok(ControllerNode {
            id,
            address: started.address,
            raft: started.raft,
            state_machine: started.state_machine,
            liveness: started.liveness,
            quorum,
            runtime: started.runtime,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn id(&self) -> ControllerId {
        self.id
    }

    /// The address the controller port is bound to.
    pub fn listen_address(&self) -> SocketAddr {
        self.address
    }

    /// The leader this controller knows of, if any.
    pub fn current_leader(&self) -> Option<ControllerId> {
        self.raft.metrics().borrow().current_leader
    }

    /// The state this controller has applied.
    pub fn state(&self) -> Arc<ControllerState> {
        self.state_machine.state()
    }

    /// Every state this controller applies, starting with the current one. A tokio watch
    /// receiver: `borrow` and `has_changed` work from any thread, `changed` from any executor.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ControllerState>> {
        self.state_machine.subscribe()
    }

    /// openraft's own view (term, leader, log indexes), for tests and the admin port.
    pub fn raft_metrics(
        &self,
    ) -> watch::Receiver<openraft::RaftMetrics<ControllerId, openraft::BasicNode>> {
        self.raft.metrics()
    }

    /// Proposes `command` and resolves to what applying it returned. Committed by the leader,
    /// forwarded there if it is another controller. The future does not need tokio: a glommio
    /// shard can await it.
    pub fn propose(
        &self,
        command: MetadataCommand,
    ) -> impl Future<Output = Result<CommandResponse>> + Send + 'static {
        let receiver = self.submit(command);
        async move {
            match receiver {
                Ok(receiver) => receiver.await.unwrap_or(Err(Error::Stopped)),
                Err(error) => Err(error),
            }
        }
    }

    /// Sends a broker's heartbeat to the active controller (this one, or forwarded) and
    /// resolves to its answer. Like [`ControllerNode::propose`], the future needs no tokio.
    pub fn heartbeat(
        &self,
        heartbeat: Heartbeat,
    ) -> impl Future<Output = Result<HeartbeatReply>> + Send + 'static {
        let (sender, receiver) = oneshot::channel();
        let liveness = self.liveness.clone();
        let raft = self.raft.clone();
        let quorum = self.quorum.clone();
        self.runtime.spawn(async move {
            let _ = sender.send(send_heartbeat(&raft, &liveness, &quorum, heartbeat).await);
        });
        async move { receiver.await.unwrap_or(Err(Error::Stopped)) }
    }

    /// How far this controller has applied the metadata log (a broker's heartbeat reports it:
    /// a fenced broker is let in once it has applied its own registration).
    pub fn applied_index(&self) -> u64 {
        self.raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |log_id| log_id.index)
    }

    /// [`ControllerNode::propose`], blocking the calling thread: for tools and tests, never
    /// for a shard or from inside a tokio runtime.
    pub fn propose_blocking(&self, command: MetadataCommand) -> Result<CommandResponse> {
        self.submit(command)?
            .blocking_recv()
            .unwrap_or(Err(Error::Stopped))
    }

    fn submit(
        &self,
        command: MetadataCommand,
    ) -> Result<oneshot::Receiver<Result<CommandResponse>>> {
        let bytes = serde_json::to_vec(&command)
            .expect("commands always serialize")
            .len();
        if bytes > COMMAND_BYTES_MAX {
            return Err(Error::CommandTooLarge { bytes });
        }
        let (sender, receiver) = oneshot::channel();
        let raft = self.raft.clone();
        let quorum = self.quorum.clone();
        let id = self.id;
        // If the runtime has stopped the task is dropped, and so is `sender`: `Stopped`.
        self.runtime.spawn(async move {
            let _ = sender.send(propose(&raft, &quorum, id, command).await);
        });
        Ok(receiver)
    }

    /// Stops openraft, closes the port and joins the thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ControllerNode {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// The controller thread.
fn run(
    config: ControllerConfig,
    listener: Option<std::net::TcpListener>,
    ready: std::sync::mpsc::Sender<Result<Started>>,
    stopped: oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(source) => {
            let _ = ready.send(Err(Error::Io {
                op: "start the controller runtime",
                path: PathBuf::new(),
                source,
            }));
            return;
        }
    };
    runtime.block_on(async move {
        let raft = match start_raft(&config, listener).await {
            Ok((started, serve_listener)) => {
                let raft = started.raft.clone();
                let state_machine = started.state_machine.clone();
                tokio::spawn(network::serve(
                    serve_listener,
                    raft.clone(),
                    started.liveness.clone(),
                    PROPOSE_TIMEOUT,
                ));
                tokio::spawn(started.liveness.clone().expire_sessions());
                tokio::spawn(initialize_cluster(
                    raft.clone(),
                    state_machine,
                    config.node_id,
                    config.seed_image.clone(),
                ));
                if ready.send(Ok(started)).is_err() {
                    let _ = raft.shutdown().await;
                    return;
                }
                raft
            }
            Err(error) => {
                let _ = ready.send(Err(error));
                return;
            }
        };
        let _ = stopped.await;
        if let Err(error) = raft.shutdown().await {
            tracing::warn!(%error, "controller: openraft did not stop cleanly");
        }
    });
    // Dropping the runtime cancels the port's tasks and closes every socket.
    drop(runtime);
}

async fn start_raft(
    config: &ControllerConfig,
    listener: Option<std::net::TcpListener>,
) -> Result<(Started, TcpListener)> {
    let listen_error = |source| Error::Listen {
        address: config.listen.clone(),
        source,
    };
    let listener = match listener {
        Some(listener) => {
            listener.set_nonblocking(true).map_err(listen_error)?;
            TcpListener::from_std(listener).map_err(listen_error)?
        }
        None => TcpListener::bind(&config.listen)
            .await
            .map_err(listen_error)?,
    };
    let address = listener.local_addr().map_err(listen_error)?;
    let log_store = LogStore::open(&config.data_dir)?;
    let state_machine = StateMachineStore::open(&config.data_dir)?;
    let tuning = &config.tuning;
    let raft_config = openraft::Config {
        cluster_name: "ringlog-controller".into(),
        heartbeat_interval: tuning.heartbeat_interval_ms,
        election_timeout_min: tuning.election_timeout_min_ms,
        election_timeout_max: tuning.election_timeout_max_ms,
        install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT_MS,
        max_payload_entries: PAYLOAD_ENTRIES_MAX,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(tuning.snapshot_every_entries),
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        max_in_snapshot_log_to_keep: tuning.entries_kept_after_snapshot,
        ..Default::default()
    }
    .validate()
    .map_err(|error| Error::Raft(format!("invalid tuning: {error}")))?;
    let raft = Raft::new(
        config.node_id,
        Arc::new(raft_config),
        NetworkFactory,
        log_store,
        state_machine.clone(),
    )
    .await
    .map_err(|error| Error::Raft(error.to_string()))?;
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|error| Error::Raft(error.to_string()))?;
    if !initialized && config.node_id == config.quorum.lowest_id() {
        tracing::info!(quorum = %config.quorum, "controller: initializing a new cluster");
        match raft.initialize(config.quorum.nodes()).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(error) => return Err(Error::Raft(error.to_string())),
        }
    }
    let liveness = Liveness::new(
        config.node_id,
        raft.clone(),
        state_machine.clone(),
        config.session_timeout_ms,
    );
    let started = Started {
        address,
        raft,
        state_machine,
        liveness,
        runtime: tokio::runtime::Handle::current(),
    };
    Ok((started, listener))
}

/// Proposes `InitializeCluster` whenever this controller leads a cluster that has no id yet.
async fn initialize_cluster(
    raft: Raft,
    state_machine: StateMachineStore,
    id: ControllerId,
    seed: Option<MetadataImage>,
) {
    let mut metrics = raft.metrics();
    let mut states = state_machine.subscribe();
    loop {
        if states.borrow_and_update().is_initialized() {
            return;
        }
        if metrics.borrow_and_update().current_leader == Some(id) {
            let mut image = seed
                .clone()
                .unwrap_or_else(|| MetadataImage::new(String::new()));
            if image.cluster_id.is_empty() {
                image.cluster_id = new_cluster_id();
            }
            let command = MetadataCommand::InitializeCluster { image };
            if let Err(error) = commit_here(&raft, command, PROPOSE_TIMEOUT).await {
                tracing::info!(%error, "controller: cluster id not committed yet");
            }
            continue;
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            changed = states.changed() => if changed.is_err() { return },
        }
    }
}

/// Gets `command` committed by the leader, wherever it is, within [`PROPOSE_TIMEOUT`].
async fn propose(
    raft: &Raft,
    quorum: &Quorum,
    id: ControllerId,
    command: MetadataCommand,
) -> Result<CommandResponse> {
    let deadline = Instant::now() + PROPOSE_TIMEOUT;
    let mut metrics = raft.metrics();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Error::NoLeader {
                timeout_ms: PROPOSE_TIMEOUT.as_millis() as u64,
            });
        }
        let leader = metrics.borrow_and_update().current_leader;
        match leader {
            Some(leader) if leader == id => {
                match tokio::time::timeout(remaining, raft.client_write(command.clone())).await {
                    Ok(Ok(response)) => return Ok(response.data),
                    // Not appended, or appended and then truncated by a new leader: not applied.
                    Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {}
                    Ok(Err(error)) => return Err(Error::Raft(error.to_string())),
                    Err(_) => {
                        return Err(Error::Indeterminate(
                            "appended but not committed in time".into(),
                        ))
                    }
                }
            }
            Some(leader) => {
                // openraft only elects members; an unknown id is treated as no leader.
                if let Some(address) = quorum.address(leader) {
                    match forward(address, &command, remaining).await {
                        Forwarded::Done(response) => return Ok(response),
                        Forwarded::NotApplied => {}
                        Forwarded::Unknown(reason) => {
                            return Err(Error::Indeterminate(format!(
                                "forwarded to controller {leader}: {reason}"
                            )))
                        }
                    }
                }
            }
            None => {}
        }
        // Wait for a leader change, or retry after a short while.
        let wait = PROPOSE_RETRY_INTERVAL.min(remaining);
        let _ = tokio::time::timeout(wait, metrics.changed()).await;
    }
}

/// A heartbeat answered here if this controller leads, else by the leader over the controller
/// port; one try, since the broker heartbeats again soon anyway.
async fn send_heartbeat(
    raft: &Raft,
    liveness: &Liveness,
    quorum: &Quorum,
    heartbeat: Heartbeat,
) -> Result<HeartbeatReply> {
    let leader = raft.metrics().borrow().current_leader;
    let timeout_ms = HEARTBEAT_TIMEOUT.as_millis() as u64;
    let Some(leader) = leader else {
        return Err(Error::NoLeader { timeout_ms });
    };
    let refused = |refusal: ProposeRefusal| Error::Raft(refusal.to_string());
    if leader == liveness_id(raft) {
        return liveness.heartbeat(heartbeat).await.map_err(refused);
    }
    let address = quorum
        .address(leader)
        .ok_or(Error::NoLeader { timeout_ms })?;
    let mut stream = tokio::time::timeout(HEARTBEAT_TIMEOUT, network::connect(address))
        .await
        .map_err(|_| Error::NoLeader { timeout_ms })?
        .map_err(|error| Error::Raft(error.to_string()))?;
    match network::call_on(
        &mut stream,
        &Request::Heartbeat(heartbeat),
        HEARTBEAT_TIMEOUT,
    )
    .await
    {
        Ok(Response::Heartbeat(reply)) => reply.map_err(refused),
        Ok(_) => Err(Error::Raft("a response of the wrong kind".into())),
        Err(error) => Err(Error::Raft(error.to_string())),
    }
}

fn liveness_id(raft: &Raft) -> ControllerId {
    raft.metrics().borrow().id
}

enum Forwarded {
    Done(CommandResponse),
    /// Certainly not applied: not sent, or refused by a controller that is not the leader.
    NotApplied,
    Unknown(String),
}

/// Sends `command` to the leader at `address` on a connection of its own (commands are rare;
/// a fresh connection cannot carry a stale answer).
async fn forward(address: &str, command: &MetadataCommand, timeout: Duration) -> Forwarded {
    let Ok(mut stream) = network::connect(address).await else {
        return Forwarded::NotApplied;
    };
    let request = Request::Propose(command.clone());
    match network::call_on(&mut stream, &request, timeout).await {
        Ok(Response::Propose(Ok(response))) => Forwarded::Done(response),
        Ok(Response::Propose(Err(ProposeRefusal::NotLeader { .. }))) => Forwarded::NotApplied,
        Ok(Response::Propose(Err(ProposeRefusal::Failed(reason)))) => Forwarded::Unknown(reason),
        Ok(_) => Forwarded::Unknown("a response of the wrong kind".into()),
        Err(error) => Forwarded::Unknown(error.to_string()),
    }
}
