//! One client connection: read frames, decode, run each request in its own task, and write the
//! responses in request order (Kafka's rule) while later requests are already being served.
//! A frame that is too large, negative, truncated, of an unknown API or that does not decode
//! closes this connection with a log line; nothing else is affected.
//!
//! The kernel spreads connections over the shards (SO_REUSEPORT) without knowing what they will
//! do, so a producer's connection often lands on a shard that owns none of its partitions, and
//! every Produce then crosses the bus twice (there and back), which costs 45-80% more broker CPU
//! per message (`docs/benchmarks.md`, hot path round 2). So a connection whose first Produce requests all go to one other shard is
//! handed over to that shard: when a Produce names only partitions owned by shard S, and this
//! connection has no request in flight and no response being written, the socket's descriptor
//! is duplicated and sent to S with the frame (`BrokerRequest::AdoptConnection`); S serves
//! that frame and the connection from then on, and this shard drops its copy. Nothing is in
//! flight on either side at that moment, so responses keep Kafka's order. Only the first
//! [`HANDOVER_PRODUCE_REQUESTS_MAX`] Produce requests are considered: a connection is moved at
//! most once, early.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use event_listener::Event;
use kafka_protocol::messages::{ApiKey, RequestKind};
use ringlog_engine::rt::net::{ReadHalf, TcpStream, WriteHalf};
use ringlog_engine::rt::{self, Task, TaskClass};
use ringlog_engine::TopicPartition;

use crate::broker::Broker;
use crate::codec::{self, Decoded, FRAME_SIZE_PREFIX_BYTES, REQUEST_HEADER_PREFIX_BYTES};
use crate::handlers;
use crate::messages::{BrokerRequest, BrokerResponse, Handover};
use crate::server::Stopping;
use crate::{codes, metrics};

/// Requests one connection may have in flight before it stops reading more. librdkafka and the
/// Java client default to 5 in flight per connection; 64 leaves room for pipelining admin and
/// fetch traffic while bounding the memory one connection can pin.
pub const IN_FLIGHT_REQUESTS_MAX: usize = 64;

/// Kafka's `connections.max.idle.ms` default: a connection with nothing in flight that sends
/// nothing for 10 minutes is closed, so abandoned connections do not accumulate.
pub const CONNECTION_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// How many of a connection's first Produce requests may trigger its handover to the shard
/// owning their partitions; after that it stays where it is. The first Produce usually comes
/// right after the Metadata answer, with nothing in flight; a few more allow for a client that
/// pipelines from the start.
pub const HANDOVER_PRODUCE_REQUESTS_MAX: usize = 8;

/// Request bodies are read in steps of at most this many bytes, so memory grows with the bytes
/// that actually arrive, not with the size a frame claims.
const READ_STEP_BYTES: usize = 1 << 20;

/// A response slot: the task producing it (None for acks=0 produce) or bytes ready to write.
enum Pending {
    Task(Task<Option<Bytes>>),
    Ready(Bytes),
}

/// The responses still to write, in request order. Owned by the connection.
#[derive(Default)]
struct ResponseQueue {
    pending: RefCell<VecDeque<Pending>>,
    reader_done: Cell<bool>,
    /// The writer is waiting for a response slot: nothing is being written.
    writer_waiting: Cell<bool>,
    /// The connection went to another shard: the writer must not close the socket.
    handed_over: Cell<bool>,
    changed: Event,
}

impl ResponseQueue {
    fn push(&self, pending: Pending) {
        self.pending.borrow_mut().push_back(pending);
        self.changed.notify(usize::MAX);
    }

    fn len(&self) -> usize {
        self.pending.borrow().len()
    }

    async fn wait_below(&self, limit: usize) {
        loop {
            let listener = self.changed.listen();
            if self.len() < limit {
                return;
            }
            listener.await;
        }
    }

    /// The next response slot, or None once the reader is done and everything is written.
    async fn next(&self) -> Option<Pending> {
        loop {
            let listener = self.changed.listen();
            if let Some(pending) = self.pending.borrow_mut().pop_front() {
                self.writer_waiting.set(false);
                self.changed.notify(usize::MAX);
                return Some(pending);
            }
            if self.reader_done.get() {
                return None;
            }
            self.writer_waiting.set(true);
            listener.await;
        }
    }

    /// Nothing in flight: no response pending and none being written.
    fn is_idle(&self) -> bool {
        self.len() == 0 && self.writer_waiting.get()
    }

    fn finish_reading(&self) {
        self.reader_done.set(true);
        self.changed.notify(usize::MAX);
    }
}

/// This shard's client connections: the stop they watch, and how many are open (accepted here
/// or adopted from another shard), so a stopping shard can wait for them.
pub struct Connections {
    stopping: Rc<Stopping>,
    open: Cell<usize>,
    all_closed: Event,
}

impl Connections {
    pub fn new(stopping: Rc<Stopping>) -> Rc<Connections> {
        Rc::new(Connections {
            stopping,
            open: Cell::new(0),
            all_closed: Event::new(),
        })
    }

    pub fn open(&self) -> usize {
        self.open.get()
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.is_stopped()
    }

    /// Serves `stream` in a task of its own; `first_frame` is a request already read from it
    /// (by the shard that handed it over), served first.
    pub fn spawn(
        self: &Rc<Self>,
        broker: Rc<Broker>,
        stream: TcpStream,
        first_frame: Option<Bytes>,
    ) {
        self.open.set(self.open.get() + 1);
        let connections = Rc::clone(self);
        rt::spawn_detached(TaskClass::Latency, async move {
            let stopping = Rc::clone(&connections.stopping);
            serve(broker, stream, stopping, first_frame).await;
            connections.open.set(connections.open.get() - 1);
            connections.all_closed.notify(usize::MAX);
        });
    }

    /// Returns once every connection has closed.
    pub async fn wait_closed(&self) {
        loop {
            let listener = self.all_closed.listen();
            if self.open.get() == 0 {
                return;
            }
            listener.await;
        }
    }
}

/// Serves one connection until the client closes it, it sends something malformed, the broker
/// stops (then in-flight requests still get their responses), or it is handed to another shard.
pub async fn serve(
    broker: Rc<Broker>,
    stream: TcpStream,
    stopping: Rc<Stopping>,
    first_frame: Option<Bytes>,
) {
    let peer = stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let _ = stream.set_nodelay(true);
    let (reader, writer) = stream.split();
    let queue = Rc::new(ResponseQueue::default());
    let writing = rt::spawn(
        TaskClass::Latency,
        write_responses(writer, Rc::clone(&queue), peer),
    );
    read_requests(&broker, reader, &queue, &stopping, peer, first_frame).await;
    queue.finish_reading();
    writing.await;
}

async fn read_requests(
    broker: &Rc<Broker>,
    mut reader: ReadHalf,
    queue: &ResponseQueue,
    stopping: &Stopping,
    peer: SocketAddr,
    mut first_frame: Option<Bytes>,
) {
    let max_bytes = broker.config.socket_request_max_bytes;
    // An adopted connection was considered by the shard that handed it over.
    let mut produce_requests_considered = if first_frame.is_some() {
        HANDOVER_PRODUCE_REQUESTS_MAX
    } else {
        0
    };
    loop {
        if let Some(frame) = first_frame.take() {
            if !serve_frame(broker, frame, queue, peer) {
                return;
            }
            continue;
        }
        queue.wait_below(IN_FLIGHT_REQUESTS_MAX).await;
        let idle = queue.len() == 0;
        let frame = futures_lite::future::or(
            async { Some(read_frame(&mut reader, max_bytes).await) },
            async {
                // A connection waiting for responses is not idle, however long they take.
                if idle {
                    futures_lite::future::or(stopping.wait(), rt::sleep(CONNECTION_IDLE_TIMEOUT))
                        .await;
                } else {
                    stopping.wait().await;
                }
                None
            },
        )
        .await;
        let frame = match frame {
            None if !stopping.is_stopped() => {
                tracing::debug!(%peer, "closing idle connection");
                return;
            }
            None => return,
            Some(Ok(Some(frame))) => frame,
            Some(Ok(None)) => return,
            Some(Err(reason)) => {
                tracing::warn!(%peer, %reason, "closing connection");
                return;
            }
        };
        if produce_requests_considered < HANDOVER_PRODUCE_REQUESTS_MAX
            && frame.get(..2) == Some(&(ApiKey::Produce as i16).to_be_bytes()[..])
        {
            produce_requests_considered += 1;
            match hand_over(broker, &reader, queue, &frame, peer).await {
                HandoverOutcome::Kept => {}
                HandoverOutcome::Moved => {
                    queue.handed_over.set(true);
                    return;
                }
                HandoverOutcome::Lost => return,
            }
        }
        if !serve_frame(broker, frame, queue, peer) {
            return;
        }
    }
}

/// What became of a connection offered to another shard.
enum HandoverOutcome {
    /// Not offered, or refused: this shard serves it on.
    Kept,
    /// The other shard serves it (and the frame) now.
    Moved,
    /// The other shard stopped while taking it: nobody can tell whether it was adopted, so it
    /// is closed here (the client reconnects, as after any broker-side close).
    Lost,
}

/// Hands the connection to the shard owning every partition `frame` (a Produce) names, if that
/// is another shard and nothing is in flight on this connection.
async fn hand_over(
    broker: &Rc<Broker>,
    reader: &ReadHalf,
    queue: &ResponseQueue,
    frame: &Bytes,
    peer: SocketAddr,
) -> HandoverOutcome {
    if !queue.is_idle() {
        return HandoverOutcome::Kept;
    }
    let Some(target) = produce_partitions(broker, frame).and_then(|partitions| {
        let table = broker.table();
        let mut shards = partitions.iter().map(|partition| table.lookup(partition));
        let first = shards.next()??;
        shards
            .all(|shard| shard == Some(first))
            .then_some(first)
            .filter(|shard| *shard != broker.shard_id)
    }) else {
        return HandoverOutcome::Kept;
    };
    let socket = match reader.duplicate() {
        Ok(socket) => socket,
        Err(error) => {
            tracing::debug!(%peer, %error, "cannot duplicate a socket to hand it over");
            return HandoverOutcome::Kept;
        }
    };
    let handover = Handover {
        socket,
        first_frame: frame.clone(),
    };
    match broker
        .call(target, BrokerRequest::AdoptConnection(handover))
        .await
    {
        Some(BrokerResponse::Adopted(true)) => {
            tracing::debug!(%peer, from = %broker.shard_id, to = %target, "connection handed over");
            HandoverOutcome::Moved
        }
        Some(_) => HandoverOutcome::Kept,
        None => {
            tracing::warn!(%peer, to = %target, "shard stopped while taking a connection; closing it");
            HandoverOutcome::Lost
        }
    }
}

/// The partitions a Produce frame writes to; None if it does not decode as a Produce or names
/// a topic id this shard does not know.
fn produce_partitions(broker: &Broker, frame: &Bytes) -> Option<Vec<TopicPartition>> {
    let Ok(Decoded::Request(request)) = codec::decode_request(frame.clone()) else {
        return None;
    };
    let RequestKind::Produce(produce) = request.body else {
        return None;
    };
    let image = broker.metadata();
    let mut partitions = Vec::new();
    for topic in &produce.topic_data {
        let name = if request.api_version >= handlers::produce::TOPIC_ID_VERSION {
            image.topic_by_id(topic.topic_id.as_u128())?.0.clone()
        } else {
            topic.name.0.to_string()
        };
        for partition in &topic.partition_data {
            partitions.push(TopicPartition::new(name.clone(), partition.index));
        }
    }
    Some(partitions)
}

/// Decodes `frame` and queues its response; false if the connection must close.
fn serve_frame(broker: &Rc<Broker>, frame: Bytes, queue: &ResponseQueue, peer: SocketAddr) -> bool {
    match codec::decode_request(frame) {
        Ok(Decoded::Request(mut request)) => {
            // Kafka reports a member's host as `/address`.
            request.client_host = format!("/{}", peer.ip());
            let broker = Rc::clone(broker);
            let task = rt::spawn(TaskClass::Latency, async move {
                let (api_key, api_version, correlation_id) =
                    (request.api_key, request.api_version, request.correlation_id);
                let started = Instant::now();
                let response = handlers::dispatch(&broker, *request).await;
                let error_code = response
                    .as_ref()
                    .map_or(codes::NONE, metrics::response_error_code);
                broker
                    .metrics
                    .record_request(api_key, error_code, started.elapsed());
                let response = response?;
                match codec::encode_response(api_key, api_version, correlation_id, &response) {
                    Ok(bytes) => Some(bytes),
                    Err(reason) => {
                        tracing::error!(?api_key, api_version, %reason, "response encoding failed");
                        None
                    }
                }
            });
            queue.push(Pending::Task(task));
        }
        Ok(Decoded::UnknownApiVersions { correlation_id }) => {
            let response = handlers::api_versions::unsupported_version_response();
            broker.metrics.count_request(
                ApiKey::ApiVersions as i16,
                metrics::response_error_code(&response),
            );
            match codec::encode_response(ApiKey::ApiVersions, 0, correlation_id, &response) {
                Ok(bytes) => queue.push(Pending::Ready(bytes)),
                Err(reason) => {
                    tracing::error!(%reason, "ApiVersions fallback encoding failed");
                    return false;
                }
            }
        }
        Err(error) => {
            tracing::warn!(%peer, %error, "closing connection");
            return false;
        }
    }
    true
}

/// Reads one frame: `Ok(None)` when the peer closed cleanly between frames.
async fn read_frame(reader: &mut ReadHalf, max_bytes: usize) -> Result<Option<Bytes>, String> {
    let mut prefix = [0_u8; FRAME_SIZE_PREFIX_BYTES];
    let mut filled = 0;
    while filled < prefix.len() {
        match reader.read(&mut prefix[filled..]).await {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => {
                return Err(format!(
                    "connection closed inside a size prefix ({filled} of 4 bytes)"
                ))
            }
            Ok(read) => filled += read,
            Err(error) => return Err(format!("read failed: {error}")),
        }
    }
    let size = codec::frame_size(prefix);
    if size < 0 {
        return Err(format!("negative frame size {size}"));
    }
    let size = size as usize;
    if size > max_bytes {
        return Err(format!(
            "frame of {size} bytes exceeds socket.request.max.bytes {max_bytes}"
        ));
    }
    if size < REQUEST_HEADER_PREFIX_BYTES {
        return Err(format!(
            "frame of {size} bytes is shorter than a request header"
        ));
    }
    let mut body = BytesMut::new();
    while body.len() < size {
        let start = body.len();
        let step = (size - start).min(READ_STEP_BYTES);
        body.resize(start + step, 0);
        reader
            .read_exact(&mut body[start..])
            .await
            .map_err(|error| format!("frame of {size} bytes cut short after {start}: {error}"))?;
    }
    Ok(Some(body.freeze()))
}

async fn write_responses(mut writer: WriteHalf, queue: Rc<ResponseQueue>, peer: SocketAddr) {
    let mut broken = false;
    while let Some(pending) = queue.next().await {
        let bytes = match pending {
            Pending::Ready(bytes) => Some(bytes),
            Pending::Task(task) => task.await,
        };
        // After a failed write the requests still run to completion (a produce is not undone
        // by a lost answer); their responses are dropped, and the reader ends when the socket
        // reports the failure too.
        if let (Some(bytes), false) = (bytes, broken) {
            if let Err(error) = writer.write_all(&bytes).await {
                tracing::debug!(%peer, %error, "write failed; dropping the connection");
                broken = true;
            }
        }
    }
    if queue.handed_over.get() {
        // The socket lives on in another shard: closing would shut it down there too.
        return;
    }
    let _ = writer.flush().await;
    let _ = writer.close().await;
}
