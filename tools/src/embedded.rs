//! An embedded Ringlog broker for Rust application tests: the same broker as `ringlog serve`,
//! started inside the test process on a port the kernel picks and a temporary data directory,
//! stopped cleanly and removed when dropped. Any Kafka client connects to
//! [`EmbeddedBroker::bootstrap`].
//!
//! ```
//! use std::time::{Duration, Instant};
//!
//! use rdkafka::config::ClientConfig;
//! use rdkafka::consumer::{BaseConsumer, Consumer};
//! use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
//! use rdkafka::{Message, Offset, TopicPartitionList};
//!
//! let broker = ringlog::EmbeddedBroker::start()?;
//!
//! let producer: BaseProducer = ClientConfig::new()
//!     .set("bootstrap.servers", broker.bootstrap())
//!     .create()?;
//! // The topic is created on first use (`auto_create_topics` is on by default).
//! producer
//!     .send(BaseRecord::to("orders").key("order-1").payload("42 apples"))
//!     .map_err(|(error, _)| error)?;
//! producer.flush(Duration::from_secs(30))?;
//!
//! let consumer: BaseConsumer = ClientConfig::new()
//!     .set("bootstrap.servers", broker.bootstrap())
//!     .set("group.id", "my-test")
//!     .create()?;
//! let mut assignment = TopicPartitionList::new();
//! assignment.add_partition_offset("orders", 0, Offset::Beginning)?;
//! consumer.assign(&assignment)?;
//! let deadline = Instant::now() + Duration::from_secs(30);
//! let message = loop {
//!     assert!(Instant::now() < deadline, "nothing consumed");
//!     if let Some(message) = consumer.poll(Duration::from_millis(100)) {
//!         break message?.detach();
//!     }
//! };
//! assert_eq!(message.key(), Some(&b"order-1"[..]));
//! assert_eq!(message.payload(), Some(&b"42 apples"[..]));
//!
//! // Dropping the broker stops it cleanly (logs synced) and removes its data directory;
//! // `stop` does the same and reports a failed shutdown.
//! broker.stop()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Several brokers may run in one process at once, each on its own port and directory. The
//! broker logs through `tracing`; install a subscriber in the test to see its lines.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ringlog_engine::config::LogConfig;
use ringlog_net::server::Running;
use ringlog_net::{BrokerConfig, Shutdown};

use crate::{Error, Result};

/// How long [`EmbeddedBrokerBuilder::start`] waits for the broker to accept connections. A
/// fresh broker starts in well under a second, even in a debug build; 30 s leaves room for a
/// loaded two-core CI machine running many tests at once, and for a restart that recovers a
/// test's data. Past it something is wrong, and the test should fail rather than hang.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Shards an embedded broker runs unless told otherwise. One: a test's traffic needs no more,
/// and each shard is a thread with its own io_uring and 16 MiB of registered I/O memory, and
/// tests often run several brokers in parallel on small CI machines. More shards (see
/// [`EmbeddedBrokerBuilder::cores`]) test cross-shard paths.
pub const CORES_DEFAULT: usize = 1;

/// The listener when none is set: loopback, port 0 so the kernel picks a free port (no race
/// with other tests for a "free" port found beforehand), and nothing reachable from outside.
const LISTEN_DEFAULT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// The prefix of temporary data directories, so a leftover one says whose it is.
const TEMP_DIR_PREFIX: &str = "ringlog-embedded-";

/// A broker running inside this process. Dropping it stops the broker cleanly (in-flight
/// requests finish, every log is synced and closed, the port is released) and then removes the
/// temporary data directory, if it made one.
///
/// Owned by the thread that started it; the broker itself runs on threads of its own.
pub struct EmbeddedBroker {
    /// `None` once stopped.
    running: Option<Running>,
    local_addr: SocketAddr,
    data_dir: PathBuf,
    /// The temporary data directory, removed when dropped: declared after `running` and only
    /// dropped once the broker has stopped (see `Drop`).
    _temp_dir: Option<tempfile::TempDir>,
}

impl EmbeddedBroker {
    /// Starts a broker with the defaults: one shard, a temporary data directory, loopback on a
    /// port the kernel picks, topics created on first use with one partition.
    pub fn start() -> Result<EmbeddedBroker> {
        EmbeddedBroker::builder().start()
    }

    /// A builder for a broker with other settings.
    pub fn builder() -> EmbeddedBrokerBuilder {
        EmbeddedBrokerBuilder::default()
    }

    /// The address for a Kafka client's `bootstrap.servers`: `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> String {
        connectable(self.local_addr()).to_string()
    }

    /// The address the broker listens on (the kernel's port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The data directory: the temporary one, or the one given to
    /// [`EmbeddedBrokerBuilder::data_dir`].
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops the broker cleanly, waits for it, and reports whether its shutdown succeeded
    /// (dropping it does the same but can only log a failure). The temporary data directory is
    /// removed afterwards.
    pub fn stop(mut self) -> Result<()> {
        match self.running.take() {
            Some(running) => running.stop().map_err(Error::from),
            None => Ok(()),
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            if let Err(error) = running.stop() {
                tracing::error!(
                    address = %self.local_addr, %error,
                    "the embedded broker did not stop cleanly"
                );
            }
        }
        // The fields drop after this: the temporary directory goes once the broker is gone.
    }
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("EmbeddedBroker")
            .field("local_addr", &self.local_addr)
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

/// Settings for an [`EmbeddedBroker`]; [`EmbeddedBrokerBuilder::start`] starts it.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until .start() is called"]
pub struct EmbeddedBrokerBuilder {
    /// Everything but the data directory, which is chosen at start.
    config: BrokerConfig,
    data_dir: Option<PathBuf>,
}

impl Default for EmbeddedBrokerBuilder {
    fn default() -> Self {
        let mut config = BrokerConfig::new(PathBuf::new());
        config.listen = LISTEN_DEFAULT;
        config.cores = Some(CORES_DEFAULT);
        // Tests run beside each other and beside the test harness's threads: pinning every
        // embedded broker's shard 0 to the first CPU would stack them all there, and a pinned
        // shard spins before it sleeps. Unpinned, the kernel spreads them.
        config.pin_to_cores = false;
        EmbeddedBrokerBuilder {
            config,
            data_dir: None,
        }
    }
}

impl EmbeddedBrokerBuilder {
    /// Shards (threads, each with its own io_uring) to run; at least 1. Default
    /// [`CORES_DEFAULT`].
    pub fn cores(mut self, cores: usize) -> Self {
        self.config.cores = Some(cores);
        self
    }

    /// Pin shard `i` to the `i`-th CPU the process may run on (default false). Two brokers
    /// pinned in one process share those CPUs, which works but halves what each gets.
    pub fn pin_to_cores(mut self, pin: bool) -> Self {
        self.config.pin_to_cores = pin;
        self
    }

    /// The listen address (default `127.0.0.1:0`: loopback, a port the kernel picks). A fixed
    /// port lets a restarted broker keep its clients' bootstrap address.
    pub fn listen(mut self, address: SocketAddr) -> Self {
        self.config.listen = address;
        self
    }

    /// Keep the data in `path` instead of a temporary directory: it is created if missing and
    /// left in place when the broker stops, so a later broker can start on the same data. The
    /// filesystem must support O_DIRECT: ext4 and xfs do, tmpfs since Linux 6.6.
    pub fn data_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(path.into());
        self
    }

    /// Kafka's `auto.create.topics.enable` (default true): Metadata and Produce for an unknown
    /// topic create it.
    pub fn auto_create_topics(mut self, enabled: bool) -> Self {
        self.config.auto_create_topics = enabled;
        self
    }

    /// Kafka's `num.partitions` (default 1): partitions of a topic created without a count.
    pub fn num_partitions(mut self, partitions: i32) -> Self {
        self.config.num_partitions = partitions;
        self
    }

    /// A broker-wide default for a Kafka topic config (`retention.ms`, `segment.bytes`, ...),
    /// applied to topics created without their own value. Checked at [`start`](Self::start).
    pub fn topic_default(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        self.config
            .topic_defaults
            .retain(|(existing, _)| *existing != name);
        self.config.topic_defaults.push((name, value.into()));
        self
    }

    /// Starts the broker and returns once it accepts connections, or with the reason it could
    /// not (waiting at most [`START_TIMEOUT`]).
    pub fn start(self) -> Result<EmbeddedBroker> {
        let EmbeddedBrokerBuilder {
            mut config,
            data_dir,
        } = self;
        check(&config)?;
        let (data_dir, temp_dir) = match data_dir {
            Some(path) => (path, None),
            None => {
                let parent = std::env::temp_dir();
                let temp_dir = tempfile::Builder::new()
                    .prefix(TEMP_DIR_PREFIX)
                    .tempdir_in(&parent)
                    .map_err(|source| Error::TempDir { parent, source })?;
                (temp_dir.path().to_path_buf(), Some(temp_dir))
            }
        };
        config.data_dir = data_dir.clone();
        match ringlog_net::server::start_within(config, Shutdown::new(), START_TIMEOUT) {
            Ok(running) => Ok(EmbeddedBroker {
                local_addr: running.local_addr(),
                running: Some(running),
                data_dir,
                _temp_dir: temp_dir,
            }),
            Err(ringlog_net::Error::StartTimeout { waited }) => {
                // The broker may still be writing there until it sees the stop: keep it.
                if let Some(temp_dir) = temp_dir {
                    let _ = temp_dir.keep();
                }
                Err(Error::StartTimeout { waited, data_dir })
            }
            Err(error) => Err(error.into()),
        }
    }
}

/// The settings the broker itself would only reject later (a topic default when the first
/// topic is created), checked now so a typo fails the start, naming the setting.
fn check(config: &BrokerConfig) -> Result<()> {
    if config.num_partitions < 1 {
        return Err(Error::InvalidConfig {
            key: "num_partitions".into(),
            reason: format!("{} is not at least 1", config.num_partitions),
        });
    }
    let mut log_config = LogConfig::default();
    for (name, value) in &config.topic_defaults {
        log_config
            .set(name, value)
            .map_err(|error| Error::InvalidConfig {
                key: format!("topic_default {name}"),
                reason: match error {
                    ringlog_engine::Error::InvalidConfig { reason, .. } => reason,
                    other => other.to_string(),
                },
            })?;
    }
    Ok(())
}

/// Where a client on this host connects for a listener bound to `address`: a wildcard address
/// (0.0.0.0, ::) is reached over loopback.
fn connectable(address: SocketAddr) -> SocketAddr {
    let ip = match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, address.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listener_is_reached_over_loopback() {
        let wildcard: SocketAddr = "0.0.0.0:4321".parse().expect("address");
        assert_eq!(connectable(wildcard).to_string(), "127.0.0.1:4321");
        let wildcard: SocketAddr = "[::]:4321".parse().expect("address");
        assert_eq!(connectable(wildcard).to_string(), "[::1]:4321");
        let specific: SocketAddr = "127.0.0.2:4321".parse().expect("address");
        assert_eq!(connectable(specific), specific);
    }

    #[test]
    fn bad_settings_are_refused_before_anything_starts() {
        let error = EmbeddedBroker::builder()
            .topic_default("retention.ms", "soon")
            .start()
            .expect_err("a bad topic default is refused");
        assert!(
            matches!(&error, Error::InvalidConfig { key, .. } if key == "topic_default retention.ms"),
            "{error}"
        );
        let error = EmbeddedBroker::builder()
            .topic_default("no.such.config", "1")
            .start()
            .expect_err("an unknown topic config is refused");
        assert!(error.to_string().contains("no.such.config"), "{error}");
        let error = EmbeddedBroker::builder()
            .num_partitions(0)
            .start()
            .expect_err("zero partitions are refused");
        assert!(
            matches!(&error, Error::InvalidConfig { key, .. } if key == "num_partitions"),
            "{error}"
        );
    }

    #[test]
    fn a_later_topic_default_replaces_an_earlier_one() {
        let builder = EmbeddedBroker::builder()
            .topic_default("retention.ms", "1000")
            .topic_default("segment.bytes", "1048576")
            .topic_default("retention.ms", "2000");
        assert_eq!(
            builder.config.topic_defaults,
            vec![
                ("segment.bytes".to_string(), "1048576".to_string()),
                ("retention.ms".to_string(), "2000".to_string()),
            ]
        );
    }
}
