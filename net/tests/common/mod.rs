//! An in-process broker for the net crate's integration tests, and raw Kafka requests to it.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use ringlog_net::{BrokerConfig, Shutdown};

/// How long the broker may take to start accepting.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one request may take to be answered.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A broker running `ringlog_net::server::run` on a thread of this process.
pub struct InProcessBroker {
    pub address: SocketAddr,
    shutdown: Shutdown,
    thread: Option<thread::JoinHandle<ringlog_net::Result<()>>>,
}

impl InProcessBroker {
    pub fn start(data_dir: &Path) -> InProcessBroker {
        InProcessBroker::start_with(data_dir, |_| {})
    }

    /// Starts a broker whose config `adjust` changes first.
    pub fn start_with(data_dir: &Path, adjust: impl FnOnce(&mut BrokerConfig)) -> InProcessBroker {
        let port = free_port();
        let mut config = BrokerConfig::new(data_dir);
        adjust(&mut config);
        config.listen = SocketAddr::from(([127, 0, 0, 1], port));
        config.cores = Some(2);
        let shutdown = Shutdown::new();
        let stopper = shutdown.clone();
        let thread = thread::spawn(move || ringlog_net::server::run(config, stopper));
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        drop(connect(address));
        InProcessBroker {
            address,
            shutdown,
            thread: Some(thread),
        }
    }

    pub fn connect(&self) -> TcpStream {
        connect(self.address)
    }

    /// Stops the broker cleanly and waits for it.
    pub fn stop(mut self) {
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            thread
                .join()
                .expect("broker thread")
                .expect("broker stopped cleanly");
        }
    }
}

impl Drop for InProcessBroker {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub fn connect(address: SocketAddr) -> TcpStream {
    let started = Instant::now();
    loop {
        match TcpStream::connect(address) {
            Ok(stream) => {
                stream
                    .set_read_timeout(Some(RESPONSE_TIMEOUT))
                    .expect("timeout");
                return stream;
            }
            Err(error) if started.elapsed() < START_TIMEOUT => {
                let _ = error;
                thread::sleep(Duration::from_millis(50));
            }
            Err(error) => panic!("broker did not start: {error}"),
        }
    }
}

pub fn round_trip(
    stream: &mut TcpStream,
    request: RequestKind,
    key: ApiKey,
    version: i16,
    correlation_id: i32,
) -> ResponseKind {
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("sweep")))
        .encode(&mut frame, key.request_header_version(version))
        .expect("header encodes");
    request
        .encode(&mut frame, version)
        .unwrap_or_else(|error| panic!("{key:?} v{version} request: {error}"));
    let size = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    stream.write_all(&frame).expect("write");
    let mut prefix = [0_u8; 4];
    stream
        .read_exact(&mut prefix)
        .unwrap_or_else(|error| panic!("{key:?} v{version}: no response ({error})"));
    let size = i32::from_be_bytes(prefix) as usize;
    let mut body = vec![0_u8; size];
    stream.read_exact(&mut body).expect("response body");
    let mut body = Bytes::from(body);
    let header = ResponseHeader::decode(&mut body, key.response_header_version(version))
        .expect("response header decodes");
    assert_eq!(header.correlation_id, correlation_id, "{key:?} v{version}");
    let response = ResponseKind::decode(key, &mut body, version)
        .unwrap_or_else(|error| panic!("{key:?} v{version} response: {error}"));
    assert_eq!(body.remaining(), 0, "{key:?} v{version}: trailing bytes");
    response
}
