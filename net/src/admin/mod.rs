//! The admin port: HTTP/1.1 on `--admin-listen`, served by shard 0, with the web console at `/`,
//! Prometheus `/metrics` and a JSON API under `/api/v1/` (health, readiness, brokers, topics,
//! partitions, shards, groups). Every answer is built from snapshots the owning shards take of their own state, one
//! bus message per shard per request, so observing the broker shares nothing with its data path.
//!
//! A connection is a task of its own in the background queue, so admin traffic never delays a
//! produce or fetch. A request head must arrive whole within [`REQUEST_READ_TIMEOUT`] and its
//! response must be taken within [`RESPONSE_WRITE_TIMEOUT`]; anything malformed, too large or
//! not a GET or HEAD gets its status and the connection is closed. Connections beyond
//! [`ADMIN_CONNECTIONS_MAX`] are closed on accept.

pub mod api;
pub mod console;
pub mod http;
pub mod prometheus;
pub mod snapshot;

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use ringlog_engine::rt::net::{ReadHalf, TcpListener, TcpStream, WriteHalf};
use ringlog_engine::rt::{self, TaskClass};

use crate::broker::Broker;
use crate::server::Stopping;
use http::{Parsed, Response, Status, REQUEST_HEAD_BYTES_MAX};

/// How long a client has to send a whole request head, counted from when the server starts
/// waiting for it (so also how long an idle keep-alive connection stays open). Scrapers and
/// curl send a head in one packet; 10 s is generous for a slow link and short enough that a
/// client trickling bytes (slowloris) holds a connection slot only briefly.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a response may take to be accepted by the client's socket. `/metrics` is tens of
/// KiB; a client that does not read it for 10 s is gone or hostile.
pub const RESPONSE_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Admin connections open at once. A Prometheus server or two, a few operators with curl and
/// a dashboard need a handful; 64 bounds what a flood of connections can make shard 0 hold
/// (a task and up to [`REQUEST_HEAD_BYTES_MAX`] bytes each).
pub const ADMIN_CONNECTIONS_MAX: usize = 64;

/// Requests served on one keep-alive connection before it is closed, so one client cannot hold
/// a slot forever; a scraper simply reconnects.
pub const REQUESTS_PER_CONNECTION_MAX: usize = 1000;

/// After refusing a request, how long (and how many bytes) the server goes on reading and
/// discarding what the client still sends before it closes: closing a socket with unread bytes
/// makes the kernel answer with a reset, which can destroy the refusal before the client reads
/// it. A second and 64 KiB cover a client that sent a large request in one go.
const LINGER_TIMEOUT: Duration = Duration::from_secs(1);
const LINGER_BYTES_MAX: usize = 64 * 1024;

/// Bytes read from the socket per step while a head is incomplete: a page, more than a
/// scraper's or curl's whole request head, so most requests take one read.
const READ_STEP_BYTES: usize = 4096;

/// Binds the admin listener on this shard (shard 0).
pub fn bind(address: SocketAddr) -> crate::Result<TcpListener> {
    TcpListener::bind(address).map_err(|source| crate::Error::Io {
        op: "listen on the admin address (--admin-listen)",
        target: address.to_string(),
        source,
    })
}

/// Serves the admin port until the broker stops. Runs in the background queue.
pub fn start(broker: Rc<Broker>, listener: TcpListener, stopping: Rc<Stopping>) {
    rt::spawn_detached(TaskClass::Background, async move {
        let open = Rc::new(Cell::new(0_usize));
        while let Some(stream) =
            crate::server::accept_until_stopped(&listener, &stopping, "admin").await
        {
            if open.get() >= ADMIN_CONNECTIONS_MAX {
                tracing::warn!(
                    limit = ADMIN_CONNECTIONS_MAX,
                    "too many admin connections; closing a new one"
                );
                continue;
            }
            open.set(open.get() + 1);
            let broker = Rc::clone(&broker);
            let stopping = Rc::clone(&stopping);
            let open = Rc::clone(&open);
            rt::spawn_detached(TaskClass::Background, async move {
                futures_lite::future::or(serve(&broker, stream), stopping.wait()).await;
                open.set(open.get() - 1);
            });
        }
    });
}

/// Serves one admin connection: requests in order, until the client closes it, a request asks
/// to close, or a request is refused.
async fn serve(broker: &Rc<Broker>, stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (mut reader, mut writer) = stream.split();
    let mut buffer: Vec<u8> = Vec::new();
    let mut refused = false;
    for _ in 0..REQUESTS_PER_CONNECTION_MAX {
        let parsed =
            match rt::timeout(REQUEST_READ_TIMEOUT, read_head(&mut reader, &mut buffer)).await {
                Some(Ok(Some(parsed))) => parsed,
                // Closed between requests, or the socket failed: nobody to answer.
                Some(Ok(None)) | Some(Err(_)) => break,
                None if buffer.is_empty() => break,
                None => Parsed::Refused(Status::RequestTimeout),
            };
        let (bytes, keep_alive) = match parsed {
            Parsed::Request { request, consumed } => {
                buffer.drain(..consumed);
                let response = api::respond(broker, request.endpoint).await;
                (
                    response.encode(request.head_only, request.keep_alive),
                    request.keep_alive,
                )
            }
            Parsed::Refused(status) => {
                tracing::debug!(%peer, status = status.code(), "admin request refused");
                refused = true;
                let response = Response::error(status, refusal_detail(status));
                (response.encode(false, false), false)
            }
            Parsed::Partial => unreachable!("read_head returns only complete parses"),
        };
        if !write(&mut writer, &bytes).await || !keep_alive {
            break;
        }
    }
    let _ = rt::timeout(RESPONSE_WRITE_TIMEOUT, writer.close()).await;
    if refused {
        let _ = rt::timeout(LINGER_TIMEOUT, discard(&mut reader)).await;
    }
}

/// Reads and drops what the client sends, until it closes or [`LINGER_BYTES_MAX`].
async fn discard(reader: &mut ReadHalf) {
    let mut scratch = [0_u8; READ_STEP_BYTES];
    let mut total = 0;
    while total < LINGER_BYTES_MAX {
        match reader.read(&mut scratch).await {
            Ok(0) | Err(_) => return,
            Ok(read) => total += read,
        }
    }
}

fn refusal_detail(status: Status) -> &'static str {
    match status {
        Status::NotFound => "see docs/operations.md for the admin endpoints",
        Status::MethodNotAllowed => "the admin API serves GET and HEAD only",
        Status::HeadersTooLarge => "the request head is over the size limit",
        Status::RequestTimeout => "the request head did not arrive in time",
        _ => "not an HTTP/1.x GET or HEAD request without a body",
    }
}

/// Reads until `buffer` starts with a complete (or refused) request head. `Ok(None)`: the
/// client closed the connection before sending anything more.
async fn read_head(reader: &mut ReadHalf, buffer: &mut Vec<u8>) -> std::io::Result<Option<Parsed>> {
    loop {
        if !buffer.is_empty() {
            match http::parse(buffer) {
                Parsed::Partial => {}
                parsed => return Ok(Some(parsed)),
            }
        }
        let start = buffer.len();
        let step = READ_STEP_BYTES.min(REQUEST_HEAD_BYTES_MAX - start);
        buffer.resize(start + step, 0);
        let read = reader.read(&mut buffer[start..]).await;
        buffer.truncate(start + *read.as_ref().unwrap_or(&0));
        if read? == 0 {
            return Ok(None);
        }
    }
}

/// Writes a response; false if the client is gone or too slow.
async fn write(writer: &mut WriteHalf, bytes: &[u8]) -> bool {
    matches!(
        rt::timeout(RESPONSE_WRITE_TIMEOUT, writer.write_all(bytes)).await,
        Some(Ok(()))
    )
}
