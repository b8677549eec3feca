//! One client connection: read frames, decode, run each request in its own task, and write the
//! responses in request order (Kafka's rule) while later requests are already being served.
//! A frame that is too large, negative, truncated, of an unknown API or that does not decode
//! closes this connection with a log line; nothing else is affected.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use event_listener::Event;
use kafka_protocol::messages::ApiKey;
use ringlog_engine::rt::net::{ReadHalf, TcpStream, WriteHalf};
use ringlog_engine::rt::{self, Task, TaskClass};

use crate::broker::Broker;
use crate::codec::{self, Decoded, FRAME_SIZE_PREFIX_BYTES, REQUEST_HEADER_PREFIX_BYTES};
use crate::handlers;
use crate::server::Stopping;

/// Requests one connection may have in flight before it stops reading more. librdkafka and the
/// Java client default to 5 in flight per connection; 64 leaves room for pipelining admin and
/// fetch traffic while bounding the memory one connection can pin.
pub const IN_FLIGHT_REQUESTS_MAX: usize = 64;

/// Kafka's `connections.max.idle.ms` default: a connection with nothing in flight that sends
/// nothing for 10 minutes is closed, so abandoned connections do not accumulate.
pub const CONNECTION_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

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
                self.changed.notify(usize::MAX);
                return Some(pending);
            }
            if self.reader_done.get() {
                return None;
            }
            listener.await;
        }
    }

    fn finish_reading(&self) {
        self.reader_done.set(true);
        self.changed.notify(usize::MAX);
    }
}

/// Serves one connection until the client closes it, it sends something malformed, or the
/// broker stops (then in-flight requests still get their responses).
pub async fn serve(broker: Rc<Broker>, stream: TcpStream, stopping: Rc<Stopping>) {
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
    read_requests(&broker, reader, &queue, &stopping, peer).await;
    queue.finish_reading();
    writing.await;
}

async fn read_requests(
    broker: &Rc<Broker>,
    mut reader: ReadHalf,
    queue: &ResponseQueue,
    stopping: &Stopping,
    peer: SocketAddr,
) {
    let max_bytes = broker.config.socket_request_max_bytes;
    loop {
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
        match codec::decode_request(frame) {
            Ok(Decoded::Request(mut request)) => {
                // Kafka reports a member's host as `/address`.
                request.client_host = format!("/{}", peer.ip());
                let broker = Rc::clone(broker);
                let task = rt::spawn(TaskClass::Latency, async move {
                    let (api_key, api_version, correlation_id) =
                        (request.api_key, request.api_version, request.correlation_id);
                    let response = handlers::dispatch(&broker, *request).await?;
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
                match codec::encode_response(ApiKey::ApiVersions, 0, correlation_id, &response) {
                    Ok(bytes) => queue.push(Pending::Ready(bytes)),
                    Err(reason) => {
                        tracing::error!(%reason, "ApiVersions fallback encoding failed");
                        return;
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%peer, %error, "closing connection");
                return;
            }
        }
    }
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
    let _ = writer.flush().await;
    let _ = writer.close().await;
}
