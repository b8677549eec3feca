//! A blocking Kafka connection: frames requests with `kafka-protocol`, negotiates versions with
//! ApiVersions, and splits into a sending and a receiving half so a producer can keep several
//! requests in flight on one socket (one thread writes, another reads the responses in order).

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::ops::RangeInclusive;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// The client id every benchmark connection sends.
pub const CLIENT_ID: &str = "ringlog-bench";

/// A response larger than this is refused rather than allocated: no sane broker answers a
/// benchmark request with more (fetches ask for at most `FETCH_MAX_BYTES`).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// Reads from the socket go through a buffer this big: one syscall per many small responses.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// How long connect and every blocking read or write may take before the run fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Kafka's UNSUPPORTED_VERSION error code.
const UNSUPPORTED_VERSION: i16 = 35;

/// API versions a broker said it serves, by API key.
#[derive(Clone, Debug, Default)]
pub struct Versions {
    ranges: HashMap<i16, (i16, i16)>,
}

impl Versions {
    /// The highest version both this client (`ours`) and the broker support for `key`.
    pub fn pick(&self, key: ApiKey, ours: RangeInclusive<i16>) -> anyhow::Result<i16> {
        let (min, max) = self
            .ranges
            .get(&(key as i16))
            .copied()
            .ok_or_else(|| anyhow!("the broker does not serve {key:?}"))?;
        let best = max.min(*ours.end());
        if best < min.max(*ours.start()) {
            bail!(
                "no common {key:?} version: the broker serves v{min}-v{max}, this client v{}-v{}",
                ours.start(),
                ours.end()
            );
        }
        Ok(best)
    }
}

/// A request encoded as one frame, ready to write.
pub fn encode_request(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    request: &RequestKind,
) -> anyhow::Result<Bytes> {
    let mut frame = BytesMut::with_capacity(128);
    frame.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)))
        .encode(&mut frame, key.request_header_version(version))
        .with_context(|| format!("encoding a {key:?} v{version} request header"))?;
    request
        .encode(&mut frame, version)
        .with_context(|| format!("encoding a {key:?} v{version} request"))?;
    let size = i32::try_from(frame.len() - 4).context("request too large")?;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    Ok(frame.freeze())
}

/// Decodes one response frame (without its length prefix) of `key` at `version`.
pub fn decode_response(
    mut frame: Bytes,
    key: ApiKey,
    version: i16,
    correlation_id: i32,
) -> anyhow::Result<ResponseKind> {
    let header = ResponseHeader::decode(&mut frame, key.response_header_version(version))
        .with_context(|| format!("decoding a {key:?} v{version} response header"))?;
    if header.correlation_id != correlation_id {
        bail!(
            "{key:?} response has correlation id {}, expected {correlation_id}",
            header.correlation_id
        );
    }
    ResponseKind::decode(key, &mut frame, version)
        .with_context(|| format!("decoding a {key:?} v{version} response"))
}

/// The receiving half of a connection.
pub struct Receiver {
    reader: BufReader<TcpStream>,
}

impl Receiver {
    /// Reads one response frame, without its length prefix.
    pub fn read_frame(&mut self) -> anyhow::Result<Bytes> {
        let mut prefix = [0_u8; 4];
        self.reader
            .read_exact(&mut prefix)
            .context("reading a response")?;
        let size = i32::from_be_bytes(prefix);
        let size = usize::try_from(size)
            .ok()
            .filter(|size| *size <= MAX_RESPONSE_BYTES)
            .ok_or_else(|| anyhow!("the broker sent a response of {size} bytes"))?;
        let mut body = vec![0_u8; size];
        self.reader
            .read_exact(&mut body)
            .context("reading a response body")?;
        Ok(Bytes::from(body))
    }
}

/// The sending half of a connection.
pub struct Sender {
    stream: TcpStream,
}

impl Sender {
    pub fn send(&mut self, frame: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(frame).context("sending a request")
    }
}

/// A connection used one request at a time, which can be split for pipelining.
pub struct Connection {
    sender: Sender,
    receiver: Receiver,
    pub versions: Versions,
    next_correlation_id: i32,
}

impl Connection {
    /// Connects to `address` and asks which API versions it serves.
    pub fn connect(address: &str) -> anyhow::Result<Connection> {
        let target = address
            .to_socket_addrs()
            .with_context(|| format!("resolving {address}"))?
            .next()
            .ok_or_else(|| anyhow!("{address} resolves to nothing"))?;
        let stream = TcpStream::connect_timeout(&target, IO_TIMEOUT)
            .with_context(|| format!("connecting to {address}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let reader = BufReader::with_capacity(READ_BUFFER_BYTES, stream.try_clone()?);
        let mut connection = Connection {
            sender: Sender { stream },
            receiver: Receiver { reader },
            versions: Versions::default(),
            next_correlation_id: 0,
        };
        connection.versions = connection
            .negotiate()
            .with_context(|| format!("asking {address} for its API versions"))?;
        Ok(connection)
    }

    fn negotiate(&mut self) -> anyhow::Result<Versions> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        // A broker that does not serve v3 answers in v0 form with UNSUPPORTED_VERSION, which
        // may not even decode as v3; either way, ask again at v0.
        let first = self.call_at(
            ApiKey::ApiVersions,
            3,
            RequestKind::ApiVersions(request.clone()),
        );
        let response = match first {
            Ok(ResponseKind::ApiVersions(response))
                if response.error_code != UNSUPPORTED_VERSION =>
            {
                ResponseKind::ApiVersions(response)
            }
            _ => self.call_at(ApiKey::ApiVersions, 0, RequestKind::ApiVersions(request))?,
        };
        let ResponseKind::ApiVersions(response) = response else {
            bail!("ApiVersions answered with another response kind");
        };
        if response.error_code != 0 {
            bail!("ApiVersions failed with error code {}", response.error_code);
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
    ) -> anyhow::Result<(i16, ResponseKind)> {
        let version = self.versions.pick(key, ours)?;
        Ok((version, self.call_at(key, version, request)?))
    }

    fn call_at(
        &mut self,
        key: ApiKey,
        version: i16,
        request: RequestKind,
    ) -> anyhow::Result<ResponseKind> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let frame = encode_request(key, version, correlation_id, &request)?;
        self.sender.send(&frame)?;
        let response = self.receiver.read_frame()?;
        decode_response(response, key, version, correlation_id)
    }

    /// The two halves, for one writer thread and one reader thread. Correlation ids are then
    /// the caller's to assign.
    pub fn split(self) -> (Sender, Receiver, Versions) {
        (self.sender, self.receiver, self.versions)
    }
}
