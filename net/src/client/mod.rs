//! A blocking Kafka client connection, for tools and the benchmark (never for shards: it blocks
//! its thread). Frames requests with `kafka-protocol`, negotiates versions with ApiVersions, and
//! splits into a sending and a receiving half so a producer can keep several requests in flight
//! on one socket (one thread writes, another reads the responses in order).

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::ops::RangeInclusive;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::error::{Error, Result};

pub mod admin;
pub mod group;

/// A Kafka error code by its name in Kafka (`TOPIC_ALREADY_EXISTS`), or "error code N" for a
/// code this client does not know.
pub fn error_name(code: i16) -> String {
    match kafka_protocol::ResponseError::try_from_code(code) {
        None => "NONE".to_string(),
        Some(kafka_protocol::ResponseError::Unknown(_)) => format!("error code {code}"),
        Some(error) => {
            let camel = format!("{error:?}");
            let mut name = String::with_capacity(camel.len() + 8);
            for (index, character) in camel.chars().enumerate() {
                if character.is_ascii_uppercase() && index > 0 {
                    name.push('_');
                }
                name.push(character.to_ascii_uppercase());
            }
            name
        }
    }
}

/// A protocol string from a Rust one.
pub fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

/// The error for a response of the wrong kind (a broker bug, or a client one).
pub fn wrong_kind(key: ApiKey) -> Error {
    Error::Peer(format!("{key:?} answered with another response kind"))
}

/// A response larger than this is refused rather than allocated: a Fetch asks for at most a
/// few hundred MiB (`fetch.max.bytes` defaults to 50 MiB), and a length past this is garbage.
pub const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Reads from the socket go through a buffer this big: one syscall per many small responses.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// How long connect and every blocking read or write may take before the call fails: Kafka's
/// `request.timeout.ms` default, the longest a broker should take to answer anything.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Kafka's UNSUPPORTED_VERSION error code.
const UNSUPPORTED_VERSION: i16 = 35;

/// The ApiVersions version tried first: v3 is flexible and carries the client's name.
const API_VERSIONS_VERSION: i16 = 3;

/// API versions a broker said it serves, by API key.
#[derive(Clone, Debug, Default)]
pub struct Versions {
    ranges: HashMap<i16, (i16, i16)>,
}

impl Versions {
    /// The highest version both this client (`ours`) and the broker support for `key`.
    pub fn pick(&self, key: ApiKey, ours: RangeInclusive<i16>) -> Result<i16> {
        let (min, max) =
            self.ranges.get(&(key as i16)).copied().ok_or_else(|| {
                Error::UnsupportedApi(format!("the broker does not serve {key:?}"))
            })?;
        let best = max.min(*ours.end());
        if best < min.max(*ours.start()) {
            return Err(Error::UnsupportedApi(format!(
                "no common {key:?} version: the broker serves v{min}-v{max}, this client v{}-v{}",
                ours.start(),
                ours.end()
            )));
        }
        Ok(best)
    }

    /// Whether the broker serves `key` at all.
    pub fn serves(&self, key: ApiKey) -> bool {
        self.ranges.contains_key(&(key as i16))
    }
}

/// A request encoded as one frame, length prefix included, ready to write.
pub fn encode_request(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &'static str,
    request: &RequestKind,
) -> Result<Bytes> {
    let mut frame = BytesMut::with_capacity(128);
    frame.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(client_id)))
        .encode(&mut frame, key.request_header_version(version))
        .map_err(|error| {
            Error::Peer(format!(
                "encoding a {key:?} v{version} request header: {error}"
            ))
        })?;
    request
        .encode(&mut frame, version)
        .map_err(|error| Error::Peer(format!("encoding a {key:?} v{version} request: {error}")))?;
    let size = i32::try_from(frame.len() - 4).map_err(|_| {
        Error::Peer(format!(
            "a {key:?} request of {} bytes is too large",
            frame.len()
        ))
    })?;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    Ok(frame.freeze())
}

/// Decodes one response frame (without its length prefix) of `key` at `version`.
pub fn decode_response(
    mut frame: Bytes,
    key: ApiKey,
    version: i16,
    correlation_id: i32,
) -> Result<ResponseKind> {
    let header = ResponseHeader::decode(&mut frame, key.response_header_version(version)).map_err(
        |error| {
            Error::Peer(format!(
                "decoding a {key:?} v{version} response header: {error}"
            ))
        },
    )?;
    if header.correlation_id != correlation_id {
        return Err(Error::Peer(format!(
            "{key:?} response has correlation id {}, expected {correlation_id}",
            header.correlation_id
        )));
    }
    ResponseKind::decode(key, &mut frame, version)
        .map_err(|error| Error::Peer(format!("decoding a {key:?} v{version} response: {error}")))
}

/// The receiving half of a connection.
pub struct Receiver {
    reader: BufReader<TcpStream>,
    peer: String,
}

impl Receiver {
    /// Reads one response frame, without its length prefix.
    pub fn read_frame(&mut self) -> Result<Bytes> {
        let mut prefix = [0_u8; 4];
        self.reader
            .read_exact(&mut prefix)
            .map_err(|source| self.io_error("reading a response from", source))?;
        let size = i32::from_be_bytes(prefix);
        let size = usize::try_from(size)
            .ok()
            .filter(|size| *size <= RESPONSE_BYTES_MAX)
            .ok_or_else(|| Error::Peer(format!("{} sent a response of {size} bytes", self.peer)))?;
        let mut body = vec![0_u8; size];
        self.reader
            .read_exact(&mut body)
            .map_err(|source| self.io_error("reading a response body from", source))?;
        Ok(Bytes::from(body))
    }

    fn io_error(&self, op: &'static str, source: std::io::Error) -> Error {
        Error::Io {
            op,
            target: self.peer.clone(),
            source,
        }
    }
}

/// The sending half of a connection.
pub struct Sender {
    stream: TcpStream,
    peer: String,
}

impl Sender {
    pub fn send(&mut self, frame: &[u8]) -> Result<()> {
        self.stream.write_all(frame).map_err(|source| Error::Io {
            op: "sending a request to",
            target: self.peer.clone(),
            source,
        })
    }
}

/// A connection used one request at a time, which can be split for pipelining.
pub struct Connection {
    sender: Sender,
    receiver: Receiver,
    pub versions: Versions,
    client_id: &'static str,
    next_correlation_id: i32,
}

impl Connection {
    /// Connects to `address` (host:port) as `client_id` and asks which API versions it serves.
    pub fn connect(address: &str, client_id: &'static str) -> Result<Connection> {
        let io_error = |op: &'static str| {
            move |source| Error::Io {
                op,
                target: address.to_string(),
                source,
            }
        };
        let target = address
            .to_socket_addrs()
            .map_err(io_error("resolving"))?
            .next()
            .ok_or_else(|| Error::Io {
                op: "resolving",
                target: address.to_string(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
            })?;
        let stream =
            TcpStream::connect_timeout(&target, IO_TIMEOUT).map_err(io_error("connecting to"))?;
        stream
            .set_nodelay(true)
            .and_then(|()| stream.set_read_timeout(Some(IO_TIMEOUT)))
            .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
            .map_err(io_error("configuring the socket to"))?;
        let reader = BufReader::with_capacity(
            READ_BUFFER_BYTES,
            stream
                .try_clone()
                .map_err(io_error("cloning the socket to"))?,
        );
        let mut connection = Connection {
            sender: Sender {
                stream,
                peer: address.to_string(),
            },
            receiver: Receiver {
                reader,
                peer: address.to_string(),
            },
            versions: Versions::default(),
            client_id,
            next_correlation_id: 0,
        };
        connection.versions = connection.negotiate()?;
        Ok(connection)
    }

    fn negotiate(&mut self) -> Result<Versions> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(self.client_id))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        // A broker that does not serve v3 answers in v0 form with UNSUPPORTED_VERSION, which
        // may not even decode as v3; either way, ask again at v0.
        let first = self.call_at(
            ApiKey::ApiVersions,
            API_VERSIONS_VERSION,
            RequestKind::ApiVersions(request.clone()),
        );
        let response = match first {
            Ok(ResponseKind::ApiVersions(response))
                if response.error_code != UNSUPPORTED_VERSION =>
            {
                ResponseKind::ApiVersions(response)
            }
            Err(error @ Error::Io { .. }) => return Err(error),
            _ => self.call_at(ApiKey::ApiVersions, 0, RequestKind::ApiVersions(request))?,
        };
        let ResponseKind::ApiVersions(response) = response else {
            return Err(wrong_kind(ApiKey::ApiVersions));
        };
        if response.error_code != 0 {
            return Err(Error::Kafka {
                op: "ApiVersions".into(),
                code: response.error_code,
                message: None,
            });
        }
        Ok(Versions {
            ranges: response
                .api_keys
                .iter()
                .map(|api| (api.api_key, (api.min_version, api.max_version)))
                .collect(),
        })
    }

    /// Sends `request` at the best common version within `ours` and waits for its response.
    pub fn call(
        &mut self,
        key: ApiKey,
        ours: RangeInclusive<i16>,
        request: RequestKind,
    ) -> Result<(i16, ResponseKind)> {
        let version = self.versions.pick(key, ours)?;
        Ok((version, self.call_at(key, version, request)?))
    }

    fn call_at(&mut self, key: ApiKey, version: i16, request: RequestKind) -> Result<ResponseKind> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let frame = encode_request(key, version, correlation_id, self.client_id, &request)?;
        self.sender.send(&frame)?;
        let response = self.receiver.read_frame()?;
        decode_response(response, key, version, correlation_id)
    }

    /// Sends `request` at `version` and does not wait: for a Produce with acks=0, which a
    /// broker never answers.
    pub fn send_only(&mut self, key: ApiKey, version: i16, request: RequestKind) -> Result<()> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let frame = encode_request(key, version, correlation_id, self.client_id, &request)?;
        self.sender.send(&frame)
    }

    /// The peer's address, as given to [`Connection::connect`].
    pub fn peer(&self) -> &str {
        &self.sender.peer
    }

    /// The two halves, for one writer thread and one reader thread. Correlation ids are then
    /// the caller's to assign.
    pub fn split(self) -> (Sender, Receiver, Versions) {
        (self.sender, self.receiver, self.versions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_kafkas() {
        assert_eq!(error_name(36), "TOPIC_ALREADY_EXISTS");
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(6), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(9999), "error code 9999");
    }

    #[test]
    fn versions_pick_the_highest_common_one() {
        let versions = Versions {
            ranges: HashMap::from([(ApiKey::Metadata as i16, (0, 12))]),
        };
        assert_eq!(versions.pick(ApiKey::Metadata, 1..=9).ok(), Some(9));
        assert_eq!(versions.pick(ApiKey::Metadata, 4..=20).ok(), Some(12));
        assert!(versions.pick(ApiKey::Metadata, 13..=14).is_err());
        assert!(versions.pick(ApiKey::Fetch, 0..=12).is_err());
    }
}
