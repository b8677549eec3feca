//! The broker's settings: what `ringlog serve` resolves from flags, its TOML file and the
//! environment, and what an embedded broker is started with.

use std::net::SocketAddr;
use std::path::PathBuf;

use ringlog_cluster::controller::sessions::{
    BROKER_HEARTBEAT_INTERVAL_MS_DEFAULT, BROKER_SESSION_TIMEOUT_MS_DEFAULT,
};
use ringlog_cluster::controller::{ControllerTuning, Quorum};
use ringlog_cluster::replication::REPLICA_LAG_TIME_MAX_MS_DEFAULT;

/// Kafka's `socket.request.max.bytes` default: a request frame larger than this (100 MiB) is
/// refused before any of it is read.
pub const SOCKET_REQUEST_MAX_BYTES_DEFAULT: usize = 100 * 1024 * 1024;

/// Kafka's `num.partitions` default: topics auto-created or created without a partition count.
pub const NUM_PARTITIONS_DEFAULT: i32 = 1;

/// The Kafka listener's default address: the embedded single-node default of `ringlog serve`.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:9092";

/// The admin HTTP listener's default address in `ringlog serve`: loopback, on Redpanda's admin
/// port, so the unauthenticated API is not reachable from other hosts unless asked for.
pub const ADMIN_LISTEN_DEFAULT: &str = "127.0.0.1:9644";

/// The data directory of `ringlog serve` with no arguments.
pub const DATA_DIR_DEFAULT: &str = "./ringlog-data";

/// Everything a broker needs to start.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// Kafka's `node.id`.
    pub node_id: i32,
    /// Where partition logs and broker metadata live; locked exclusively while running.
    pub data_dir: PathBuf,
    /// The Kafka listener (every shard binds it with SO_REUSEPORT). Port 0 asks the kernel for a
    /// free port, which [`crate::server::start`] reports.
    pub listen: SocketAddr,
    /// The host and port put in Metadata responses; defaults to the bound listen address.
    pub advertise: Option<(String, u16)>,
    /// The admin HTTP listener (Prometheus `/metrics` and the JSON API under `/api/v1/`),
    /// served by shard 0; `None` serves none. `ringlog serve` defaults it to
    /// [`ADMIN_LISTEN_DEFAULT`], [`BrokerConfig::new`] to `None`.
    pub admin_listen: Option<SocketAddr>,
    /// Shards to run; `None` means one per online core.
    pub cores: Option<usize>,
    /// Pin shard `i` to the `i`-th CPU the process may run on (default true: a broker owns its
    /// cores). Unpinned shards share the CPUs with everything else and do not spin before
    /// sleeping, which suits a broker inside a test process.
    pub pin_to_cores: bool,
    /// Kafka's `auto.create.topics.enable` (default true).
    pub auto_create_topics: bool,
    /// Kafka's `num.partitions` (default 1).
    pub num_partitions: i32,
    /// Kafka's `socket.request.max.bytes` (default 100 MiB).
    pub socket_request_max_bytes: usize,
    /// Kafka's `log.retention.check.interval.ms` (5 minutes): how often each shard deletes
    /// segments past their topic's `retention.ms` or `retention.bytes`.
    pub log_retention_check_interval_ms: i64,
    /// Broker-wide topic config defaults under Kafka's topic config names (`retention.ms`, ...),
    /// applied to topics created without their own value.
    pub topic_defaults: Vec<(String, String)>,
    /// Records an offsets partition holds before it is checkpointed (Ringlog's own; Kafka
    /// compacts `__consumer_offsets` instead). Only tests lower it.
    pub offsets_checkpoint_records_min: u64,
    /// Kafka's `offsets.retention.minutes` (7 days), in milliseconds: how long an empty
    /// group's committed offsets are kept.
    pub offsets_retention_ms: i64,
    /// Kafka's `offsets.retention.check.interval.ms` (10 minutes).
    pub offsets_retention_check_interval_ms: i64,
    /// Kafka's `broker.rack`: placement spreads a partition's replicas over racks when every
    /// broker has one.
    pub broker_rack: Option<String>,
    /// A node of a multi-node cluster (`--controller-quorum`); `None`: a single-node cluster
    /// whose controller is the broker's own shard 0 (`crate::controller`).
    pub cluster: Option<ClusterConfig>,
}

/// How a node takes part in a multi-node cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The controller quorum (Kafka's `controller.quorum.voters`).
    pub quorum: Quorum,
    /// Where this node's controller listens.
    pub controller_listen: String,
    /// openraft's timings; tests shrink them.
    pub tuning: ControllerTuning,
    /// Kafka's `broker.heartbeat.interval.ms`.
    pub heartbeat_interval_ms: u64,
    /// Kafka's `broker.session.timeout.ms`: a broker silent this long is fenced.
    pub session_timeout_ms: u64,
    /// Kafka's `replica.lag.time.max.ms`: a follower that has not caught up for this long
    /// leaves the ISR.
    pub replica_lag_time_max_ms: u64,
}

impl ClusterConfig {
    pub fn new(quorum: Quorum, controller_listen: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            quorum,
            controller_listen: controller_listen.into(),
            tuning: ControllerTuning::default(),
            heartbeat_interval_ms: BROKER_HEARTBEAT_INTERVAL_MS_DEFAULT,
            session_timeout_ms: BROKER_SESSION_TIMEOUT_MS_DEFAULT,
            replica_lag_time_max_ms: REPLICA_LAG_TIME_MAX_MS_DEFAULT,
        }
    }
}

/// Kafka's `log.retention.check.interval.ms` default, the shard's own: 5 minutes.
pub const LOG_RETENTION_CHECK_INTERVAL_MS_DEFAULT: i64 =
    ringlog_engine::shard::RETENTION_CHECK_INTERVAL_DEFAULT.as_millis() as i64;

/// Kafka's `offsets.retention.minutes` default (10080, 7 days), in milliseconds: long enough
/// that a consumer group stopped over a long weekend resumes where it was.
pub const OFFSETS_RETENTION_MS_DEFAULT: i64 = 7 * 24 * 60 * 60 * 1000;

/// Kafka's `offsets.retention.check.interval.ms` default: expiry is a cleanup, ten minutes late
/// is fine, and the check walks every group of the shard.
pub const OFFSETS_RETENTION_CHECK_INTERVAL_MS_DEFAULT: i64 = 600_000;

impl BrokerConfig {
    /// The embedded default: a single node on 127.0.0.1:9092 with data in `./ringlog-data`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        BrokerConfig {
            node_id: 1,
            data_dir: data_dir.into(),
            listen: LISTEN_DEFAULT
                .parse()
                .expect("the default listen address parses"),
            advertise: None,
            admin_listen: None,
            cores: None,
            pin_to_cores: true,
            auto_create_topics: true,
            num_partitions: NUM_PARTITIONS_DEFAULT,
            socket_request_max_bytes: SOCKET_REQUEST_MAX_BYTES_DEFAULT,
            log_retention_check_interval_ms: LOG_RETENTION_CHECK_INTERVAL_MS_DEFAULT,
            topic_defaults: Vec::new(),
            offsets_checkpoint_records_min:
                crate::groups::coordinator::OFFSETS_CHECKPOINT_RECORDS_MIN,
            offsets_retention_ms: OFFSETS_RETENTION_MS_DEFAULT,
            offsets_retention_check_interval_ms: OFFSETS_RETENTION_CHECK_INTERVAL_MS_DEFAULT,
            broker_rack: None,
            cluster: None,
        }
    }

    /// The address clients are told to connect to, as far as the config alone says:
    /// [`BrokerConfig::advertised_for`] the configured listen address. Before the listener is
    /// bound this is the best there is (a log line at start-up); a running broker advertises
    /// the bound address (`Broker::advertised`), whose port differs when `listen` has port 0.
    pub fn advertised(&self) -> (String, u16) {
        self.advertised_for(self.listen)
    }

    /// The address clients are told to connect to when the listener is bound to `bound`:
    /// `advertise`, else `bound`. A wildcard address (0.0.0.0, ::) cannot be connected to, so
    /// loopback is advertised for it, which serves local clients; remote ones need `advertise`.
    pub fn advertised_for(&self, bound: SocketAddr) -> (String, u16) {
        self.advertise.clone().unwrap_or_else(|| {
            let ip = bound.ip();
            let host = if ip.is_unspecified() {
                if ip.is_ipv4() { "127.0.0.1" } else { "::1" }.to_string()
            } else {
                ip.to_string()
            };
            (host, bound.port())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_advertises_loopback() {
        let mut config = BrokerConfig::new("data");
        config.listen = "0.0.0.0:9092".parse().expect("address");
        assert_eq!(config.advertised(), ("127.0.0.1".to_string(), 9092));
        config.listen = "[::]:9093".parse().expect("address");
        assert_eq!(config.advertised(), ("::1".to_string(), 9093));
        config.advertise = Some(("broker.example".into(), 19092));
        assert_eq!(config.advertised(), ("broker.example".to_string(), 19092));
    }

    #[test]
    fn the_bound_port_is_advertised_unless_advertise_is_set() {
        let mut config = BrokerConfig::new("data");
        config.listen = "0.0.0.0:0".parse().expect("address");
        let bound = "0.0.0.0:40123".parse().expect("address");
        assert_eq!(config.advertised(), ("127.0.0.1".to_string(), 0));
        assert_eq!(
            config.advertised_for(bound),
            ("127.0.0.1".to_string(), 40123)
        );
        config.advertise = Some(("broker.example".into(), 19092));
        assert_eq!(
            config.advertised_for(bound),
            ("broker.example".to_string(), 19092)
        );
    }
}
