//! Kafka framing: a request frame's header and body decoded with the `kafka-protocol` crate,
//! and responses encoded with their size prefix. Nothing here trusts a length it has not
//! checked against the bytes that remain (the crate's array decoders are patched to do the same,
//! see `net/vendor/kafka-protocol/README.ringlog.md`).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::apis;

/// api_key (2), api_version (2), correlation_id (4): the fixed start of every request header.
pub const REQUEST_HEADER_PREFIX_BYTES: usize = 8;

/// The 4-byte big-endian size that precedes every request and response.
pub const FRAME_SIZE_PREFIX_BYTES: usize = 4;

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    /// The client's address as JoinGroup records it; set by the connection (empty until then).
    pub client_host: String,
    pub body: RequestKind,
}

/// What a request frame turned out to be.
#[derive(Debug)]
pub enum Decoded {
    Request(Box<Request>),
    /// ApiVersions at a version this broker does not know: answered with a v0 response carrying
    /// UNSUPPORTED_VERSION and the versions served, so the client can pick one (KIP-511).
    UnknownApiVersions {
        correlation_id: i32,
    },
}

/// Why a frame was refused; the connection is closed with this in the log line.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is shorter than a request header")]
    TooShort(usize),
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("{key:?} version {version} is not served")]
    UnsupportedVersion { key: ApiKey, version: i16 },
    #[error("malformed {key:?} v{version} request: {reason}")]
    Malformed {
        key: ApiKey,
        version: i16,
        reason: String,
    },
}

/// Decodes one request frame (without its size prefix).
pub fn decode_request(mut frame: Bytes) -> Result<Decoded, FrameError> {
    if frame.len() < REQUEST_HEADER_PREFIX_BYTES {
        return Err(FrameError::TooShort(frame.len()));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let api_version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(raw_key).map_err(|()| FrameError::UnknownApiKey(raw_key))?;
    if !apis::is_served(api_key, api_version) {
        let newer_api_versions = api_key == ApiKey::ApiVersions && api_version >= 0;
        if newer_api_versions {
            return Ok(Decoded::UnknownApiVersions { correlation_id });
        }
        return Err(FrameError::UnsupportedVersion {
            key: api_key,
            version: api_version,
        });
    }
    let malformed = |reason: String| FrameError::Malformed {
        key: api_key,
        version: api_version,
        reason,
    };
    let header_version = api_key.request_header_version(api_version);
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|error| malformed(format!("header: {error:#}")))?;
    let body = RequestKind::decode(api_key, &mut frame, api_version)
        .map_err(|error| malformed(format!("{error:#}")))?;
    Ok(Decoded::Request(Box::new(Request {
        api_key,
        api_version,
        correlation_id,
        client_id: header.client_id.map(|id| id.to_string()),
        client_host: String::new(),
        body,
    })))
}

/// Encodes a response with its header and size prefix, ready to write.
pub fn encode_response(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    response: &ResponseKind,
) -> Result<Bytes, String> {
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header
        .encode(&mut out, api_key.response_header_version(api_version))
        .map_err(|error| format!("response header: {error:#}"))?;
    response
        .encode(&mut out, api_version)
        .map_err(|error| format!("{api_key:?} v{api_version} response: {error:#}"))?;
    let size = out.len() - FRAME_SIZE_PREFIX_BYTES;
    let size = i32::try_from(size).map_err(|_| format!("response of {size} bytes"))?;
    out[..FRAME_SIZE_PREFIX_BYTES].copy_from_slice(&size.to_be_bytes());
    Ok(out.freeze())
}

/// Reads the size prefix of a frame.
pub fn frame_size(prefix: [u8; FRAME_SIZE_PREFIX_BYTES]) -> i32 {
    (&prefix[..]).get_i32()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{MetadataRequest, RequestHeader};

    fn frame(key: i16, version: i16, body: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        out.put_i16(key);
        out.put_i16(version);
        out.put_i32(42);
        out.put_i16(-1); // null client id
        out.extend_from_slice(body);
        out.freeze()
    }

    #[test]
    fn decodes_a_metadata_request() {
        let mut out = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(3)
            .with_request_api_version(1)
            .with_correlation_id(7)
            .encode(&mut out, 1)
            .expect("encodes");
        MetadataRequest::default()
            .with_topics(None)
            .encode(&mut out, 1)
            .expect("encodes");
        match decode_request(out.freeze()).expect("decodes") {
            Decoded::Request(request) => {
                assert_eq!(request.api_key, ApiKey::Metadata);
                assert_eq!(request.correlation_id, 7);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn absurd_array_length_is_malformed_not_an_allocation() {
        // Metadata v1: topics array claiming i32::MAX entries, followed by four bytes.
        let body = [0x7f, 0xff, 0xff, 0xff, 0, 1, b'a', 0];
        let error = decode_request(frame(3, 1, &body)).expect_err("malformed");
        assert!(matches!(error, FrameError::Malformed { .. }), "{error}");
    }

    #[test]
    fn unknown_keys_and_versions() {
        assert!(matches!(
            decode_request(frame(9999, 0, &[])),
            Err(FrameError::UnknownApiKey(9999))
        ));
        assert!(matches!(
            decode_request(frame(0, 2, &[])),
            Err(FrameError::UnsupportedVersion { .. })
        ));
        assert!(matches!(
            decode_request(frame(18, 99, &[])),
            Ok(Decoded::UnknownApiVersions { correlation_id: 42 })
        ));
        assert!(matches!(
            decode_request(Bytes::from_static(&[0, 3])),
            Err(FrameError::TooShort(2))
        ));
    }
}
