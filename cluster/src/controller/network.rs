//! Controllers talk over TCP: each message is a frame, a 4-byte big-endian length then that many
//! bytes of JSON (a [`Request`] or a [`Response`]); one request at a time per connection, each
//! answered in turn. JSON because serde_json is already here, the volume is small (metadata
//! commands, heartbeats, a snapshot of the image now and then) and a capture can be read by eye.
//!
//! Both sides live here: `Peer` is openraft's `RaftNetwork` to one controller (connects on
//! first use, drops the connection on any failure and connects again on the next call), and
//! [`serve`] answers the port. Besides openraft's three RPCs, a `Propose` request carries a
//! command from a controller that is not the leader to the one that is.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    ClientWriteError, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::command::{CommandResponse, MetadataCommand};
use super::liveness::{HeartbeatReply, Liveness};
use super::sessions::Heartbeat;
use super::{ControllerId, Raft, TypeConfig};

/// The largest frame, either way. An AppendEntries carries at most `PAYLOAD_ENTRIES_MAX`
/// commands of at most [`super::COMMAND_BYTES_MAX`] each (16 MiB), and a snapshot chunk of
/// `SNAPSHOT_CHUNK_BYTES` is at most 4 MiB as a JSON array of numbers; 32 MiB holds either
/// with room, and refuses a garbage length before anything is allocated for it.
pub const FRAME_BYTES_MAX: usize = 32 * 1024 * 1024;

/// The most entries openraft puts in one AppendEntries (see [`FRAME_BYTES_MAX`]). Metadata
/// commands are few; 16 per round trip is plenty to catch a follower up.
pub const PAYLOAD_ENTRIES_MAX: u64 = 16;

/// The size of the pieces a snapshot is sent in (see [`FRAME_BYTES_MAX`]).
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;

/// How long connecting to another controller may take. Controllers sit on one network; a peer
/// that takes longer is as good as down for an election, and openraft retries.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long the rest of a frame may take once its first byte has arrived: a peer that starts a
/// message and stalls (or a stray client sending garbage) loses its connection, not a task.
pub const FRAME_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may stay silent between requests before it is closed. A leader sends
/// heartbeats every fraction of a second, so only dead or stray connections get this old.
pub const CONNECTION_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The most connections the controller port serves at once. Each other controller holds a few
/// (replication, votes, forwarded commands); past this a stray client is refused instead of
/// costing memory.
pub const CONNECTIONS_MAX: usize = 64;

/// What one controller asks another.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<ControllerId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A command for the leader to commit, from a controller that is not the leader.
    Propose(MetadataCommand),
    /// A broker's heartbeat, for the leader's sessions.
    Heartbeat(Heartbeat),
}

/// The answer to a [`Request`] of the same name.
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    AppendEntries(Result<AppendEntriesResponse<ControllerId>, RaftError<ControllerId>>),
    Vote(Result<VoteResponse<ControllerId>, RaftError<ControllerId>>),
    InstallSnapshot(
        Result<
            InstallSnapshotResponse<ControllerId>,
            RaftError<ControllerId, InstallSnapshotError>,
        >,
    ),
    Propose(Result<CommandResponse, ProposeRefusal>),
    Heartbeat(Result<HeartbeatReply, ProposeRefusal>),
}

/// Why a forwarded command was not committed.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeRefusal {
    /// Not the leader (any more): the command was not applied; try `leader`.
    #[error("not the leader; the leader is {leader:?}")]
    NotLeader { leader: Option<ControllerId> },
    /// The command may or may not have been applied.
    #[error("{0}")]
    Failed(String),
}

/// A transport failure, as openraft's error types want it (an `std::error::Error`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(pub String);

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("frame of {0} bytes exceeds {FRAME_BYTES_MAX}")]
    TooLarge(usize),
    #[error("undecodable frame: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("timed out")]
    Timeout,
}

pub async fn write_frame(
    stream: &mut TcpStream,
    message: &impl Serialize,
) -> Result<(), FrameError> {
    let body = serde_json::to_vec(message)?;
    if body.len() > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await?;
    Ok(())
}

/// Reads one frame: `None` if the peer closed the connection before sending a byte of it.
/// Waits up to `first_byte_timeout` for it to start, then [`FRAME_READ_TIMEOUT`] for the rest.
pub async fn read_frame<T: DeserializeOwned>(
    stream: &mut TcpStream,
    first_byte_timeout: Duration,
) -> Result<Option<T>, FrameError> {
    let mut prefix = [0u8; 4];
    let first = tokio::time::timeout(first_byte_timeout, stream.read(&mut prefix[..1]))
        .await
        .map_err(|_| FrameError::Timeout)??;
    if first == 0 {
        return Ok(None);
    }
    let body = tokio::time::timeout(FRAME_READ_TIMEOUT, async {
        stream.read_exact(&mut prefix[1..]).await?;
        let length = u32::from_be_bytes(prefix) as usize;
        if length > FRAME_BYTES_MAX {
            return Err(FrameError::TooLarge(length));
        }
        // Grows as bytes arrive rather than trusting the length with an allocation up front.
        let mut body = Vec::new();
        (&mut *stream)
            .take(length as u64)
            .read_to_end(&mut body)
            .await?;
        if body.len() < length {
            return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(body)
    })
    .await
    .map_err(|_| FrameError::Timeout)??;
    Ok(Some(serde_json::from_slice(&body)?))
}

/// Why a call to another controller failed.
#[derive(Debug)]
pub enum CallError {
    /// Not connected: the request was not sent.
    Unreachable(io::Error),
    /// The request may have been sent; its answer did not come.
    Failed(FrameError),
}

/// Connects to `address` within [`CONNECT_TIMEOUT`].
pub async fn connect(address: &str) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sends `request` on `stream` and reads its answer, within `timeout`.
pub async fn call_on(
    stream: &mut TcpStream,
    request: &Request,
    timeout: Duration,
) -> Result<Response, FrameError> {
    tokio::time::timeout(timeout, async {
        write_frame(stream, request).await?;
        read_frame(stream, timeout)
            .await?
            .ok_or(FrameError::Io(io::ErrorKind::UnexpectedEof.into()))
    })
    .await
    .map_err(|_| FrameError::Timeout)?
}

/// openraft's connection to one other controller.
pub struct Peer {
    target: ControllerId,
    address: String,
    /// Taken out for the duration of a call and put back only after a whole answer was read,
    /// so a call that fails or is abandoned (openraft drops RPCs that outlive their time)
    /// never leaves a half-read answer for the next one.
    stream: Option<TcpStream>,
}

impl Peer {
    async fn call(&mut self, request: &Request, timeout: Duration) -> Result<Response, CallError> {
        let mut stream = match self.stream.take() {
            Some(stream) => stream,
            None => connect(&self.address)
                .await
                .map_err(CallError::Unreachable)?,
        };
        let response = call_on(&mut stream, request, timeout)
            .await
            .map_err(CallError::Failed)?;
        self.stream = Some(stream);
        Ok(response)
    }

    fn rpc_error<E: std::error::Error>(
        &self,
        error: CallError,
    ) -> RPCError<ControllerId, BasicNode, E> {
        match error {
            CallError::Unreachable(error) => RPCError::Unreachable(Unreachable::new(&error)),
            CallError::Failed(error) => RPCError::Network(NetworkError::new(&TransportError(
                format!("controller {} at {}: {error}", self.target, self.address),
            ))),
        }
    }

    /// A well-formed answer of the wrong kind: the two sides disagree about the connection,
    /// so it is dropped.
    fn unexpected<E: std::error::Error>(&mut self) -> RPCError<ControllerId, BasicNode, E> {
        self.stream = None;
        RPCError::Network(NetworkError::new(&TransportError(format!(
            "controller {} answered with the wrong kind of response",
            self.target
        ))))
    }
}

/// Makes a [`Peer`] for each controller openraft talks to.
pub struct NetworkFactory;

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Peer;

    async fn new_client(&mut self, target: ControllerId, node: &BasicNode) -> Peer {
        Peer {
            target,
            address: node.addr.clone(),
            stream: None,
        }
    }
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<ControllerId, BasicNode, RaftError<ControllerId, E>>>;

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<ControllerId>> {
        let response = self
            .call(&Request::AppendEntries(request), option.hard_ttl())
            .await;
        match response.map_err(|error| self.rpc_error(error))? {
            Response::AppendEntries(result) => {
                result.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
            }
            _ => Err(self.unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<ControllerId>, InstallSnapshotError> {
        let response = self
            .call(&Request::InstallSnapshot(request), option.hard_ttl())
            .await;
        match response.map_err(|error| self.rpc_error(error))? {
            Response::InstallSnapshot(result) => {
                result.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
            }
            _ => Err(self.unexpected()),
        }
    }

    async fn vote(
        &mut self,
        request: VoteRequest<ControllerId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<ControllerId>> {
        let response = self.call(&Request::Vote(request), option.hard_ttl()).await;
        match response.map_err(|error| self.rpc_error(error))? {
            Response::Vote(result) => {
                result.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
            }
            _ => Err(self.unexpected()),
        }
    }
}

/// Serves the controller port until the task is dropped: one task per connection, at most
/// [`CONNECTIONS_MAX`]. A connection that sends something that is not a frame of a request
/// (too long, not JSON, too slow) is closed with a log line; nothing else is affected.
pub async fn serve(
    listener: TcpListener,
    raft: Raft,
    liveness: Liveness,
    propose_timeout: Duration,
) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off rather than spin.
                tracing::warn!(%error, "controller port: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::warn!(%peer, "controller port: {CONNECTIONS_MAX} connections open, refusing one");
            continue;
        };
        let raft = raft.clone();
        let liveness = liveness.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(error) = serve_connection(stream, &raft, &liveness, propose_timeout).await {
                tracing::warn!(%peer, %error, "controller port: closing a connection");
            }
        });
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    raft: &Raft,
    liveness: &Liveness,
    propose_timeout: Duration,
) -> Result<(), FrameError> {
    stream.set_nodelay(true)?;
    loop {
        let Some(request) = read_frame::<Request>(&mut stream, CONNECTION_IDLE_TIMEOUT).await?
        else {
            return Ok(());
        };
        let response = match request {
            Request::AppendEntries(request) => {
                Response::AppendEntries(raft.append_entries(request).await)
            }
            Request::Vote(request) => Response::Vote(raft.vote(request).await),
            Request::InstallSnapshot(request) => {
                Response::InstallSnapshot(raft.install_snapshot(request).await)
            }
            Request::Propose(command) => {
                Response::Propose(commit_here(raft, command, propose_timeout).await)
            }
            Request::Heartbeat(heartbeat) => {
                Response::Heartbeat(liveness.heartbeat(heartbeat).await)
            }
        };
        write_frame(&mut stream, &response).await?;
    }
}

/// Commits `command` if this controller is the leader.
pub async fn commit_here(
    raft: &Raft,
    command: MetadataCommand,
    timeout: Duration,
) -> Result<CommandResponse, ProposeRefusal> {
    match tokio::time::timeout(timeout, raft.client_write(command)).await {
        Ok(Ok(response)) => Ok(response.data),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
            Err(ProposeRefusal::NotLeader {
                leader: forward.leader_id,
            })
        }
        Ok(Err(error)) => Err(ProposeRefusal::Failed(error.to_string())),
        Err(_) => Err(ProposeRefusal::Failed(format!(
            "not committed within {} ms",
            timeout.as_millis()
        ))),
    }
}
