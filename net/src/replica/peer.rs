//! A connection from a shard to another broker's Kafka port, for replication: one request at a
//! time, each bounded in time, over the shard's own ring. Frames are built and read with the
//! same codec as the blocking client (`crate::client`), which must never run on a shard.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use ringlog_engine::rt;
use ringlog_engine::rt::net::{ReadHalf, TcpStream, WriteHalf};

use crate::client::{decode_response, encode_request};
use crate::codec::FRAME_SIZE_PREFIX_BYTES;

/// The client id replication requests carry (Kafka's followers send `broker-N-fetcher-M`).
const CLIENT_ID: &str = "ringlog-replica-fetcher";

/// The largest response a peer may send: a fetch answers at most `replica.fetch.response.
/// max.bytes` (10 MiB by default) plus headers; anything larger is a broken peer.
pub const PEER_RESPONSE_BYTES_MAX: usize = 64 << 20;

/// How long connecting to a peer may take.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Protocol(String),
}

pub struct Peer {
    reader: ReadHalf,
    writer: WriteHalf,
    next_correlation_id: i32,
}

impl Peer {
    pub async fn connect(address: SocketAddr) -> Result<Peer, PeerError> {
        let stream = rt::timeout(PEER_CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .ok_or(PeerError::Timeout(PEER_CONNECT_TIMEOUT))??;
        stream.set_nodelay(true)?;
        let (reader, writer) = stream.split();
        Ok(Peer {
            reader,
            writer,
            next_correlation_id: 0,
        })
    }

    /// Sends `request` and waits for its response, for at most `timeout`. After an error the
    /// connection is in an unknown state: drop it.
    pub async fn call(
        &mut self,
        key: ApiKey,
        version: i16,
        request: RequestKind,
        timeout: Duration,
    ) -> Result<ResponseKind, PeerError> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let frame = encode_request(key, version, correlation_id, CLIENT_ID, &request)
            .map_err(|error| PeerError::Protocol(error.to_string()))?;
        let exchange = async {
            self.writer.write_all(&frame).await?;
            self.writer.flush().await?;
            let mut prefix = [0u8; FRAME_SIZE_PREFIX_BYTES];
            self.reader.read_exact(&mut prefix).await?;
            let size = i32::from_be_bytes(prefix);
            if size < 0 || size as usize > PEER_RESPONSE_BYTES_MAX {
                return Err(PeerError::Protocol(format!(
                    "a response frame of {size} bytes"
                )));
            }
            let mut body = BytesMut::zeroed(size as usize);
            self.reader.read_exact(&mut body).await?;
            Ok::<Bytes, PeerError>(body.freeze())
        };
        let body = rt::timeout(timeout, exchange)
            .await
            .ok_or(PeerError::Timeout(timeout))??;
        decode_response(body, key, version, correlation_id)
            .map_err(|error| PeerError::Protocol(error.to_string()))
    }
}
