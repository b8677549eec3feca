//! `server::start` on a listen address with port 0: every shard listens on the one port the
//! kernel picked, Metadata advertises that port (not 0), and startup failures come back as
//! errors instead of hanging the caller.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use kafka_protocol::messages::{ApiKey, MetadataRequest, RequestKind, ResponseKind};
use ringlog_net::{BrokerConfig, Error, Shutdown};

use common::round_trip;

/// Shards of the brokers started here: more than one, so that shard 0 binding first and the
/// others following it is exercised.
const SHARDS: usize = 2;

/// A fresh data directory starts in well under a second; the rest is room for a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Starts a broker on `data_dir` with [`port_zero_config`], failing the test if it does not.
fn start_on(data_dir: &std::path::Path, what: &str) -> ringlog_net::server::Running {
    ringlog_net::server::start_within(port_zero_config(data_dir), Shutdown::new(), START_TIMEOUT)
        .unwrap_or_else(|error| panic!("{what}: {error}"))
}

fn port_zero_config(data_dir: &std::path::Path) -> BrokerConfig {
    let mut config = BrokerConfig::new(data_dir);
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.cores = Some(SHARDS);
    config
}

/// The sockets listening on `port` on 127.0.0.1, from /proc/net/tcp (address and port in hex,
/// state 0A is LISTEN).
fn listening_sockets(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A")
        })
        .count()
}

#[test]
fn every_shard_listens_on_the_port_the_kernel_picked_and_metadata_advertises_it() {
    let data = tempfile::tempdir().expect("tempdir");
    let running = start_on(data.path(), "the broker starts");
    let address = running.local_addr();
    assert_eq!(address.ip(), std::net::Ipv4Addr::LOCALHOST);
    assert_ne!(
        address.port(),
        0,
        "the bound port is reported, not the one asked for"
    );
    assert_eq!(
        listening_sockets(address.port()),
        SHARDS,
        "one listening socket per shard on {address}"
    );

    let mut stream = common::connect(address);
    for version in [0, 12] {
        let response = round_trip(
            &mut stream,
            RequestKind::Metadata(MetadataRequest::default().with_topics(Some(Vec::new()))),
            ApiKey::Metadata,
            version,
            i32::from(version),
        );
        let ResponseKind::Metadata(metadata) = response else {
            panic!("not a Metadata response: {response:?}");
        };
        assert_eq!(metadata.brokers.len(), 1, "{metadata:?}");
        assert_eq!(metadata.brokers[0].host.as_str(), "127.0.0.1");
        assert_eq!(
            metadata.brokers[0].port,
            i32::from(address.port()),
            "Metadata v{version} advertises the bound port"
        );
    }
    drop(stream);

    running.stop().expect("the broker stops cleanly");
    assert_eq!(listening_sockets(address.port()), 0, "the port is released");
    assert!(
        std::net::TcpStream::connect(address).is_err(),
        "nothing accepts on {address} after the stop"
    );
}

#[test]
fn a_port_taken_by_another_socket_fails_the_start_with_an_error() {
    // A std listener does not set SO_REUSEPORT, so no shard may share its port.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = port_zero_config(data.path());
    config.listen = taken.local_addr().expect("local address");
    let outcome = ringlog_net::server::start_within(config, Shutdown::new(), START_TIMEOUT);
    match outcome {
        Err(Error::Io { op, target, source }) => {
            assert_eq!(op, "listen on");
            assert_eq!(target, taken.local_addr().expect("address").to_string());
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse, "{source}");
        }
        Err(other) => panic!("expected the bind error, got {other}"),
        Ok(running) => panic!("started on a taken port: {}", running.local_addr()),
    }
    // The failed broker let go of its data directory.
    let running = start_on(
        data.path(),
        "a broker starts on the same directory afterwards",
    );
    running.stop().expect("the broker stops cleanly");
}

#[test]
fn a_second_broker_on_a_locked_data_directory_is_refused_at_once() {
    let data = tempfile::tempdir().expect("tempdir");
    let first = start_on(data.path(), "the first broker starts");
    match ringlog_net::server::start(port_zero_config(data.path()), Shutdown::new()) {
        Err(Error::DataDirLocked { .. }) => {}
        Err(other) => panic!("expected DataDirLocked, got {other}"),
        Ok(second) => panic!("a second broker started on {}", second.local_addr()),
    }
    first.stop().expect("the first broker stops cleanly");
}

#[test]
fn a_corrupt_metadata_file_fails_the_start_with_its_error_instead_of_hanging() {
    let data = tempfile::tempdir().expect("tempdir");
    let first = start_on(data.path(), "the first broker starts");
    first.stop().expect("the first broker stops cleanly");
    let metadata = data.path().join("cluster-metadata.json");
    assert!(metadata.exists(), "the broker wrote {}", metadata.display());
    std::fs::write(&metadata, b"garbage{").expect("corrupt the metadata file");
    // Shard 0 fails to load the metadata; the other shard, waiting for it to join the bus,
    // must stop too, so the start returns shard 0's error rather than waiting (here: until
    // START_TIMEOUT, then StartTimeout).
    let outcome = ringlog_net::server::start_within(
        port_zero_config(data.path()),
        Shutdown::new(),
        START_TIMEOUT,
    );
    match outcome {
        Err(error) => {
            let text = error.to_string();
            assert!(text.contains("cluster-metadata.json"), "{text}");
        }
        Ok(running) => panic!(
            "started on a corrupt metadata file: {}",
            running.local_addr()
        ),
    }
}
