//! `ringlog serve`: the broker's entry point. Resolves the broker's settings from flags, a TOML
//! file and `RINGLOG_*` environment variables, wires SIGTERM and SIGINT to a clean shutdown, and
//! runs the broker until it stops.
//!
//! Precedence is flag > config file > environment > built-in default, decided per setting. That
//! is why clap's own `env` support is not used: it would put the environment above the file.
//! Every value any source provides is validated, even one a higher source overrides, so a stale
//! bad value surfaces now rather than on the day the override is removed. An environment
//! variable set to the empty string counts as unset, so a template that leaves one blank falls
//! back instead of failing. Relative paths are relative to the working directory, whatever
//! source names them, so the same path means the same directory everywhere.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::Args;
use ringlog_cluster::controller::sessions::{
    BROKER_HEARTBEAT_INTERVAL_MS_DEFAULT, BROKER_SESSION_TIMEOUT_MS_DEFAULT,
};
use ringlog_cluster::controller::Quorum;
use ringlog_cluster::replication::REPLICA_LAG_TIME_MAX_MS_DEFAULT;
use ringlog_net::config::ClusterConfig;
use ringlog_net::config::{ADMIN_LISTEN_DEFAULT, DATA_DIR_DEFAULT};
use ringlog_net::{BrokerConfig, Shutdown};
use serde::Deserialize;

/// Where each setting is read from: its flag, its key in the TOML file, its environment variable.
/// Error messages and `--help` are built from these, so the three names cannot drift apart.
#[derive(Debug)]
struct Setting {
    flag: &'static str,
    key: &'static str,
    env: &'static str,
    /// What it is, for `--help` and `ringlog config default`.
    what: &'static str,
}

const DATA_DIR: Setting = Setting {
    flag: "--data-dir",
    key: "data_dir",
    env: "RINGLOG_DATA_DIR",
    what: "Directory for partition logs and broker metadata; locked while running",
};
const LISTEN: Setting = Setting {
    flag: "--listen",
    key: "listen",
    env: "RINGLOG_LISTEN",
    what: "Kafka listener address",
};
const ADVERTISE: Setting = Setting {
    flag: "--advertise",
    key: "advertise",
    env: "RINGLOG_ADVERTISE",
    what: "Host and port given to clients in Metadata responses; the host may be a name, an IPv6 one in brackets",
};
const ADMIN_LISTEN: Setting = Setting {
    flag: "--admin-listen",
    key: "admin_listen",
    env: "RINGLOG_ADMIN_LISTEN",
    what: "Admin HTTP listener address: Prometheus /metrics and the JSON admin API under /api/v1/ (docs/operations.md); `off` serves neither",
};
const CORES: Setting = Setting {
    flag: "--cores",
    key: "cores",
    env: "RINGLOG_CORES",
    what: "Shards to run, at least 1",
};
const NODE_ID: Setting = Setting {
    flag: "--node-id",
    key: "node_id",
    env: "RINGLOG_NODE_ID",
    what: "Kafka node.id, 0 or more",
};
const PIN_TO_CORES: Setting = Setting {
    flag: "--pin-to-cores",
    key: "pin_to_cores",
    env: "RINGLOG_PIN_TO_CORES",
    what: "Pin shard i to the i-th CPU the process may use (true or false); turn it off when several brokers share a machine, as `ringlog dev cluster` does",
};
const AUTO_CREATE_TOPICS: Setting = Setting {
    flag: "--auto-create-topics",
    key: "auto_create_topics",
    env: "RINGLOG_AUTO_CREATE_TOPICS",
    what: "Create unknown topics on Metadata and Produce (Kafka auto.create.topics.enable): true or false",
};
const NUM_PARTITIONS: Setting = Setting {
    flag: "--num-partitions",
    key: "num_partitions",
    env: "RINGLOG_NUM_PARTITIONS",
    what: "Partitions of a topic created without a count (Kafka num.partitions), at least 1",
};
const SOCKET_REQUEST_MAX_BYTES: Setting = Setting {
    flag: "--socket-request-max-bytes",
    key: "socket_request_max_bytes",
    env: "RINGLOG_SOCKET_REQUEST_MAX_BYTES",
    what: "Largest request frame accepted (Kafka socket.request.max.bytes)",
};
const LOG_RETENTION_CHECK_INTERVAL_MS: Setting = Setting {
    flag: "--log-retention-check-interval-ms",
    key: "log_retention_check_interval_ms",
    env: "RINGLOG_LOG_RETENTION_CHECK_INTERVAL_MS",
    what: "How often partitions are checked for segments past retention.ms or retention.bytes (Kafka log.retention.check.interval.ms), at least 1",
};
const CONTROLLER_LISTEN: Setting = Setting {
    flag: "--controller-listen",
    key: "controller_listen",
    env: "RINGLOG_CONTROLLER_LISTEN",
    what: "Controller port of a node in the controller quorum (Kafka's CONTROLLER listener); defaults to this node's address in --controller-quorum",
};
const CONTROLLER_QUORUM: Setting = Setting {
    flag: "--controller-quorum",
    key: "controller_quorum",
    env: "RINGLOG_CONTROLLER_QUORUM",
    what: "The controller quorum, id@host:port,... (Kafka controller.quorum.voters): 1, 3 or 5 controllers. A node whose --node-id is listed runs a controller; unset: a single-node cluster with its own controller",
};
const BROKER_RACK: Setting = Setting {
    flag: "--broker-rack",
    key: "broker_rack",
    env: "RINGLOG_BROKER_RACK",
    what: "This broker's rack (Kafka broker.rack): replicas of a partition are spread over racks when every broker has one",
};
const BROKER_SESSION_TIMEOUT_MS: Setting = Setting {
    flag: "--broker-session-timeout-ms",
    key: "broker_session_timeout_ms",
    env: "RINGLOG_BROKER_SESSION_TIMEOUT_MS",
    what: "How long the active controller waits for a broker's heartbeat before fencing it (Kafka broker.session.timeout.ms); a cluster node only",
};
const BROKER_HEARTBEAT_INTERVAL_MS: Setting = Setting {
    flag: "--broker-heartbeat-interval-ms",
    key: "broker_heartbeat_interval_ms",
    env: "RINGLOG_BROKER_HEARTBEAT_INTERVAL_MS",
    what: "How often a broker heartbeats to the active controller (Kafka broker.heartbeat.interval.ms); a cluster node only",
};
const REPLICA_LAG_TIME_MAX_MS: Setting = Setting {
    flag: "--replica-lag-time-max-ms",
    key: "replica_lag_time_max_ms",
    env: "RINGLOG_REPLICA_LAG_TIME_MAX_MS",
    what: "A follower that has not caught up with its leader for this long leaves the ISR (Kafka replica.lag.time.max.ms); a cluster node only",
};
/// Only a flag or the environment can name the file; the file cannot name another.
const CONFIG: Setting = Setting {
    flag: "--config",
    key: "config",
    env: "RINGLOG_CONFIG",
    what: "TOML file of settings (`ringlog config default` prints one with every default; Kafka broker names such as \"log.retention.hours\" are taken too)",
};

/// Every setting, for the test that checks `--help` documents each one.
#[cfg(test)]
const SETTINGS: [&Setting; 18] = [
    &DATA_DIR,
    &LISTEN,
    &ADVERTISE,
    &ADMIN_LISTEN,
    &CORES,
    &NODE_ID,
    &AUTO_CREATE_TOPICS,
    &PIN_TO_CORES,
    &NUM_PARTITIONS,
    &SOCKET_REQUEST_MAX_BYTES,
    &LOG_RETENTION_CHECK_INTERVAL_MS,
    &CONTROLLER_LISTEN,
    &CONTROLLER_QUORUM,
    &BROKER_RACK,
    &BROKER_SESSION_TIMEOUT_MS,
    &BROKER_HEARTBEAT_INTERVAL_MS,
    &REPLICA_LAG_TIME_MAX_MS,
    &CONFIG,
];

/// Bounds of the cluster timings (milliseconds): at least 1, and at most a day, past which a
/// failure would go unnoticed for longer than anyone waits.
const TIMING_MS_MIN: i64 = 1;
const TIMING_MS_MAX: i64 = 24 * 60 * 60 * 1000;

/// A broker runs at least one shard.
const CORES_MIN: i64 = 1;

/// Kafka node ids are non-negative int32s: -1 means "no node" in Metadata responses.
const NODE_ID_MIN: i64 = 0;
const NODE_ID_MAX: i64 = i32::MAX as i64;

/// Kafka partition counts are int32s, and a topic has at least one partition.
const NUM_PARTITIONS_MIN: i64 = 1;
const NUM_PARTITIONS_MAX: i64 = i32::MAX as i64;

/// Kafka's own bounds for `socket.request.max.bytes`: at least 1, and a frame's length prefix is
/// an int32, so a larger limit could never be reached.
const SOCKET_REQUEST_MAX_BYTES_MIN: i64 = 1;
const SOCKET_REQUEST_MAX_BYTES_MAX: i64 = i32::MAX as i64;

/// Kafka's bounds for `log.retention.check.interval.ms`: at least 1 ms; a long.
const LOG_RETENTION_CHECK_INTERVAL_MS_MIN: i64 = 1;
const LOG_RETENTION_CHECK_INTERVAL_MS_MAX: i64 = i64::MAX;

/// Exit status after a second SIGINT or SIGTERM cut a clean shutdown short: 128 + the signal's
/// number, as a shell reports a process killed by that signal.
const EXIT_STATUS_SIGNAL_BASE: i32 = 128;

/// The command-line flags. Values stay text until [`resolve`] so that flags, the environment and
/// the file go through the same checks and their errors read alike.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    #[arg(long, value_name = "PATH", help = help(&CONFIG, "none"))]
    config: Option<PathBuf>,

    #[arg(long, value_name = "PATH", help = help(&DATA_DIR, DATA_DIR_DEFAULT))]
    data_dir: Option<PathBuf>,

    #[arg(long, value_name = "IP:PORT", help = help(&LISTEN, &default_config().listen.to_string()))]
    listen: Option<String>,

    #[arg(long, value_name = "HOST:PORT", help = help(&ADVERTISE, "the listen address"))]
    advertise: Option<String>,

    #[arg(long, value_name = "IP:PORT|off", help = help(&ADMIN_LISTEN, ADMIN_LISTEN_DEFAULT))]
    admin_listen: Option<String>,

    #[arg(long, value_name = "N", help = help(&CORES, "one per online core"))]
    cores: Option<String>,

    #[arg(long, value_name = "ID", help = help(&NODE_ID, &default_config().node_id.to_string()))]
    node_id: Option<String>,

    #[arg(long, value_name = "BOOL", help = help(&AUTO_CREATE_TOPICS, &default_config().auto_create_topics.to_string()))]
    auto_create_topics: Option<String>,

    #[arg(long, value_name = "BOOL", help = help(&PIN_TO_CORES, &default_config().pin_to_cores.to_string()))]
    pin_to_cores: Option<String>,

    #[arg(long, value_name = "N", help = help(&NUM_PARTITIONS, &default_config().num_partitions.to_string()))]
    num_partitions: Option<String>,

    #[arg(long, value_name = "BYTES", help = help(&SOCKET_REQUEST_MAX_BYTES, &default_config().socket_request_max_bytes.to_string()))]
    socket_request_max_bytes: Option<String>,

    #[arg(long, value_name = "MS", help = help(&LOG_RETENTION_CHECK_INTERVAL_MS, &default_config().log_retention_check_interval_ms.to_string()))]
    log_retention_check_interval_ms: Option<String>,

    #[arg(long, value_name = "HOST:PORT", help = help(&CONTROLLER_LISTEN, "this node's quorum address"))]
    controller_listen: Option<String>,

    #[arg(long, value_name = "ID@HOST:PORT,...", help = help(&CONTROLLER_QUORUM, "none"))]
    controller_quorum: Option<String>,

    #[arg(long, value_name = "RACK", help = help(&BROKER_RACK, "none"))]
    broker_rack: Option<String>,

    #[arg(long, value_name = "MS", help = help(&BROKER_SESSION_TIMEOUT_MS, &BROKER_SESSION_TIMEOUT_MS_DEFAULT.to_string()))]
    broker_session_timeout_ms: Option<String>,

    #[arg(long, value_name = "MS", help = help(&BROKER_HEARTBEAT_INTERVAL_MS, &BROKER_HEARTBEAT_INTERVAL_MS_DEFAULT.to_string()))]
    broker_heartbeat_interval_ms: Option<String>,

    #[arg(long, value_name = "MS", help = help(&REPLICA_LAG_TIME_MAX_MS, &REPLICA_LAG_TIME_MAX_MS_DEFAULT.to_string()))]
    replica_lag_time_max_ms: Option<String>,
}

/// One flag's help line, with the environment variable and default that `--help` must show.
fn help(setting: &Setting, default: &str) -> String {
    format!(
        "{} [env: {}] [default: {default}]",
        setting.what, setting.env
    )
}

/// `ringlog config default`: every setting at its default, as a TOML file `--config` takes, with
/// what each one is; settings without a default value, and the topic defaults, commented out.
pub fn default_file() -> String {
    let defaults = default_config();
    let quoted = |text: &str| toml::Value::String(text.to_string()).to_string();
    let entries: [(&Setting, Option<String>); 17] = [
        (&NODE_ID, Some(defaults.node_id.to_string())),
        (
            &DATA_DIR,
            Some(quoted(&defaults.data_dir.display().to_string())),
        ),
        (&LISTEN, Some(quoted(&defaults.listen.to_string()))),
        (&ADVERTISE, None),
        // `serve`'s own default, not the library's (which has no admin port).
        (
            &ADMIN_LISTEN,
            admin_listen_default().map(|address| quoted(&address.to_string())),
        ),
        (&CORES, defaults.cores.map(|cores| cores.to_string())),
        (
            &AUTO_CREATE_TOPICS,
            Some(defaults.auto_create_topics.to_string()),
        ),
        (&PIN_TO_CORES, Some(defaults.pin_to_cores.to_string())),
        (&NUM_PARTITIONS, Some(defaults.num_partitions.to_string())),
        (
            &SOCKET_REQUEST_MAX_BYTES,
            Some(defaults.socket_request_max_bytes.to_string()),
        ),
        (
            &LOG_RETENTION_CHECK_INTERVAL_MS,
            Some(defaults.log_retention_check_interval_ms.to_string()),
        ),
        (&CONTROLLER_QUORUM, None),
        (&CONTROLLER_LISTEN, None),
        (&BROKER_RACK, None),
        (
            &BROKER_SESSION_TIMEOUT_MS,
            Some(BROKER_SESSION_TIMEOUT_MS_DEFAULT.to_string()),
        ),
        (
            &BROKER_HEARTBEAT_INTERVAL_MS,
            Some(BROKER_HEARTBEAT_INTERVAL_MS_DEFAULT.to_string()),
        ),
        (
            &REPLICA_LAG_TIME_MAX_MS,
            Some(REPLICA_LAG_TIME_MAX_MS_DEFAULT.to_string()),
        ),
    ];
    let mut text = String::from(
        "# Ringlog broker settings: `ringlog serve --config FILE.toml`. Each value shown is the\n\
         # default. Per setting, a flag beats this file, which beats the RINGLOG_* environment.\n\
         # Kafka's broker config names are taken too, quoted at the top level: \"num.partitions\",\n\
         # \"log.retention.hours\", \"log.segment.bytes\", ... (see docs/operations.md).\n",
    );
    for (setting, value) in entries {
        text.push_str(&format!(
            "\n# {}.\n#   flag {}, environment {}\n",
            setting.what, setting.flag, setting.env
        ));
        match value {
            Some(value) => text.push_str(&format!("{} = {value}\n", setting.key)),
            None => text.push_str(&format!("# {} = (no default)\n", setting.key)),
        }
    }
    text.push_str(
        "\n# Topic configs for topics created without their own value, under Kafka's topic config\n\
         # names. None are set by default; these are the values topics get then.\n\
         [topic_defaults]\n",
    );
    for (name, value) in ringlog_engine::config::LogConfig::default().to_pairs() {
        text.push_str(&format!("# {} = {}\n", quoted(name), quoted(&value)));
    }
    text
}

/// What `ringlog serve` runs with when no source sets anything.
fn default_config() -> BrokerConfig {
    BrokerConfig::new(DATA_DIR_DEFAULT)
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let env = |name: &str| std::env::var_os(name);
    let file = config_path(&args, &env).map(ConfigFile::read).transpose()?;
    let config = resolve(&args, file.as_ref(), &env)?;
    log_config(&config, file.as_ref().map(|file| file.path.as_path()));

    let shutdown = Shutdown::new();
    register_signals(&shutdown)?;
    ringlog_net::server::run(config, shutdown).context("the broker failed")?;
    tracing::info!("broker stopped");
    Ok(ExitCode::SUCCESS)
}

/// Makes the first SIGTERM or SIGINT ask the broker to stop cleanly, and a second one, of either
/// kind, end the process at once, for when a clean stop hangs and the operator gives up on it.
fn register_signals(shutdown: &Shutdown) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for signal in [SIGTERM, SIGINT] {
        // The exit is registered before the flag is set, so on the first signal it still sees
        // the flag clear and does nothing; from the second signal on it sees the flag set.
        signal_hook::flag::register_conditional_shutdown(
            signal,
            EXIT_STATUS_SIGNAL_BASE + signal,
            shutdown.flag(),
        )
        .with_context(|| format!("registering a handler for signal {signal}"))?;
        signal_hook::flag::register(signal, shutdown.flag())
            .with_context(|| format!("registering a handler for signal {signal}"))?;
    }
    Ok(())
}

fn log_config(config: &BrokerConfig, file: Option<&Path>) {
    let (advertised_host, advertised_port) = config.advertised();
    tracing::info!(
        config_file = ?file,
        node_id = config.node_id,
        data_dir = %config.data_dir.display(),
        listen = %config.listen,
        advertise = %host_port(&advertised_host, advertised_port),
        admin_listen = ?config.admin_listen,
        cores = ?config.cores,
        auto_create_topics = config.auto_create_topics,
        num_partitions = config.num_partitions,
        socket_request_max_bytes = config.socket_request_max_bytes,
        log_retention_check_interval_ms = config.log_retention_check_interval_ms,
        topic_defaults = ?config.topic_defaults,
        "starting broker"
    );
    if config.advertise.is_none() && config.listen.ip().is_unspecified() {
        tracing::warn!(
            listen = %config.listen,
            advertised = %host_port(&advertised_host, advertised_port),
            "listening on all interfaces without --advertise: clients on other hosts need \
             --advertise HOST:PORT to reach this broker"
        );
    }
}

/// `host:port`, with an IPv6 host in brackets so the port stays unambiguous.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A config file as read from disk; parsed by [`resolve`], which does no I/O.
#[derive(Debug)]
pub struct ConfigFile {
    path: PathBuf,
    text: String,
}

impl ConfigFile {
    fn read(path: PathBuf) -> anyhow::Result<ConfigFile> {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Ok(ConfigFile { path, text })
    }
}

/// The config file to read, if any: `--config` beats `RINGLOG_CONFIG`.
fn config_path(flags: &ServeArgs, env: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    flags
        .config
        .clone()
        .or_else(|| env_value(env, &CONFIG).map(PathBuf::from))
}

/// The broker's config from the three sources, highest precedence first: flags, the config file
/// (if one was named), the environment (`env` looks a variable up; tests pass a map).
pub fn resolve(
    flags: &ServeArgs,
    file: Option<&ConfigFile>,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> anyhow::Result<BrokerConfig> {
    let from_flags = text_layer(Source::Flag, flags)?;
    let from_file = file.map(file_layer).transpose()?.unwrap_or_default();
    let from_env = text_layer(Source::Env, &env_settings(env)?)?;
    from_flags.or(from_file).or(from_env).into_config()
}

/// Where a value came from, for error messages.
#[derive(Clone, Copy, Debug)]
enum Source<'a> {
    Flag,
    File(&'a Path),
    Env,
}

impl Source<'_> {
    fn describe(self, setting: &Setting) -> String {
        match self {
            Source::Flag => format!("flag {}", setting.flag),
            Source::File(path) => format!("`{}` in config file {}", setting.key, path.display()),
            Source::Env => format!("environment variable {}", setting.env),
        }
    }
}

/// One source's settings, validated; `None` where the source says nothing.
#[derive(Debug, Default)]
struct Layer {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    advertise: Option<(String, u16)>,
    /// `Some(None)`: the source turned the admin port off.
    admin_listen: Option<Option<SocketAddr>>,
    cores: Option<usize>,
    node_id: Option<i32>,
    auto_create_topics: Option<bool>,
    pin_to_cores: Option<bool>,
    num_partitions: Option<i32>,
    socket_request_max_bytes: Option<usize>,
    log_retention_check_interval_ms: Option<i64>,
    controller_listen: Option<String>,
    controller_quorum: Option<Quorum>,
    broker_rack: Option<String>,
    broker_session_timeout_ms: Option<u64>,
    broker_heartbeat_interval_ms: Option<u64>,
    replica_lag_time_max_ms: Option<u64>,
    topic_defaults: Option<Vec<(String, String)>>,
}

impl Layer {
    /// This layer, with `lower` filling in what it leaves unset.
    fn or(self, lower: Layer) -> Layer {
        Layer {
            data_dir: self.data_dir.or(lower.data_dir),
            listen: self.listen.or(lower.listen),
            advertise: self.advertise.or(lower.advertise),
            admin_listen: self.admin_listen.or(lower.admin_listen),
            cores: self.cores.or(lower.cores),
            node_id: self.node_id.or(lower.node_id),
            auto_create_topics: self.auto_create_topics.or(lower.auto_create_topics),
            pin_to_cores: self.pin_to_cores.or(lower.pin_to_cores),
            num_partitions: self.num_partitions.or(lower.num_partitions),
            socket_request_max_bytes: self
                .socket_request_max_bytes
                .or(lower.socket_request_max_bytes),
            log_retention_check_interval_ms: self
                .log_retention_check_interval_ms
                .or(lower.log_retention_check_interval_ms),
            controller_listen: self.controller_listen.or(lower.controller_listen),
            controller_quorum: self.controller_quorum.or(lower.controller_quorum),
            broker_rack: self.broker_rack.or(lower.broker_rack),
            broker_session_timeout_ms: self
                .broker_session_timeout_ms
                .or(lower.broker_session_timeout_ms),
            broker_heartbeat_interval_ms: self
                .broker_heartbeat_interval_ms
                .or(lower.broker_heartbeat_interval_ms),
            replica_lag_time_max_ms: self
                .replica_lag_time_max_ms
                .or(lower.replica_lag_time_max_ms),
            topic_defaults: self.topic_defaults.or(lower.topic_defaults),
        }
    }

    fn into_config(self) -> anyhow::Result<BrokerConfig> {
        let defaults = default_config();
        let node_id = self.node_id.unwrap_or(defaults.node_id);
        let cluster = match (self.controller_quorum, self.controller_listen) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(anyhow!(
                    "{} needs {}: a controller port belongs to a member of the controller quorum",
                    CONTROLLER_LISTEN.flag,
                    CONTROLLER_QUORUM.flag
                ))
            }
            (Some(quorum), listen) => {
                let mut cluster = cluster_config(node_id, quorum, listen)?;
                if let Some(timeout) = self.broker_session_timeout_ms {
                    cluster.session_timeout_ms = timeout;
                }
                if let Some(interval) = self.broker_heartbeat_interval_ms {
                    cluster.heartbeat_interval_ms = interval;
                }
                if let Some(lag) = self.replica_lag_time_max_ms {
                    cluster.replica_lag_time_max_ms = lag;
                }
                if cluster.heartbeat_interval_ms >= cluster.session_timeout_ms {
                    return Err(anyhow!(
                        "{} ({} ms) must be shorter than {} ({} ms), or every broker is fenced",
                        BROKER_HEARTBEAT_INTERVAL_MS.flag,
                        cluster.heartbeat_interval_ms,
                        BROKER_SESSION_TIMEOUT_MS.flag,
                        cluster.session_timeout_ms
                    ));
                }
                Some(cluster)
            }
        };
        // A struct literal rather than field assignments, so a field added to BrokerConfig
        // fails to compile here until it has a setting.
        Ok(BrokerConfig {
            node_id,
            data_dir: self.data_dir.unwrap_or(defaults.data_dir),
            listen: self.listen.unwrap_or(defaults.listen),
            advertise: self.advertise.or(defaults.advertise),
            // `ringlog serve` serves the admin port unless told not to; BrokerConfig::new (the
            // library's default, for embedded and test brokers) leaves it off.
            admin_listen: self.admin_listen.unwrap_or_else(admin_listen_default),
            cores: self.cores.or(defaults.cores),
            // A served broker owns its cores unless told to share them; an embedded one, inside
            // a test process, leaves them unpinned.
            pin_to_cores: self.pin_to_cores.unwrap_or(defaults.pin_to_cores),
            auto_create_topics: self
                .auto_create_topics
                .unwrap_or(defaults.auto_create_topics),
            num_partitions: self.num_partitions.unwrap_or(defaults.num_partitions),
            socket_request_max_bytes: self
                .socket_request_max_bytes
                .unwrap_or(defaults.socket_request_max_bytes),
            log_retention_check_interval_ms: self
                .log_retention_check_interval_ms
                .unwrap_or(defaults.log_retention_check_interval_ms),
            topic_defaults: self.topic_defaults.unwrap_or(defaults.topic_defaults),
            // Not an operator setting: only tests checkpoint offsets partitions sooner.
            offsets_checkpoint_records_min: defaults.offsets_checkpoint_records_min,
            // Kafka's defaults until the operator-surface issue exposes them.
            offsets_retention_ms: defaults.offsets_retention_ms,
            offsets_retention_check_interval_ms: defaults.offsets_retention_check_interval_ms,
            broker_rack: self.broker_rack.or(defaults.broker_rack),
            cluster,
        })
    }
}

/// A node of a multi-node cluster: in the quorum it runs a controller, on `listen` or else on
/// its own address in the quorum list; outside it, it would be a broker only.
fn cluster_config(
    node_id: i32,
    quorum: Quorum,
    listen: Option<String>,
) -> anyhow::Result<ClusterConfig> {
    let id = node_id as u64;
    if !quorum.contains(id) {
        return Err(anyhow!(
            "node {node_id} is not in the controller quorum {quorum}: broker-only nodes are not \
             supported yet, so every node must be listed in {}",
            CONTROLLER_QUORUM.flag
        ));
    }
    let listen = match listen {
        Some(listen) => listen,
        None => quorum
            .address(id)
            .expect("the quorum contains the node")
            .to_string(),
    };
    Ok(ClusterConfig::new(quorum, listen))
}

/// The environment's settings in the flags' shape, so both go through [`text_layer`].
fn env_settings(env: &dyn Fn(&str) -> Option<OsString>) -> anyhow::Result<ServeArgs> {
    let text = |setting: &Setting| -> anyhow::Result<Option<String>> {
        env_value(env, setting)
            .map(|value| {
                value.into_string().map_err(|value| {
                    anyhow!(
                        "{}: {value:?} is not valid UTF-8",
                        Source::Env.describe(setting)
                    )
                })
            })
            .transpose()
    };
    Ok(ServeArgs {
        config: None,
        data_dir: env_value(env, &DATA_DIR).map(PathBuf::from),
        listen: text(&LISTEN)?,
        advertise: text(&ADVERTISE)?,
        admin_listen: text(&ADMIN_LISTEN)?,
        cores: text(&CORES)?,
        node_id: text(&NODE_ID)?,
        auto_create_topics: text(&AUTO_CREATE_TOPICS)?,
        pin_to_cores: text(&PIN_TO_CORES)?,
        num_partitions: text(&NUM_PARTITIONS)?,
        socket_request_max_bytes: text(&SOCKET_REQUEST_MAX_BYTES)?,
        log_retention_check_interval_ms: text(&LOG_RETENTION_CHECK_INTERVAL_MS)?,
        controller_listen: text(&CONTROLLER_LISTEN)?,
        controller_quorum: text(&CONTROLLER_QUORUM)?,
        broker_rack: text(&BROKER_RACK)?,
        broker_session_timeout_ms: text(&BROKER_SESSION_TIMEOUT_MS)?,
        broker_heartbeat_interval_ms: text(&BROKER_HEARTBEAT_INTERVAL_MS)?,
        replica_lag_time_max_ms: text(&REPLICA_LAG_TIME_MAX_MS)?,
    })
}

/// A setting's environment variable, with the empty string read as unset.
fn env_value(env: &dyn Fn(&str) -> Option<OsString>, setting: &Setting) -> Option<OsString> {
    env(setting.env).filter(|value| !value.is_empty())
}

/// Validates a text source: the command line or the environment.
fn text_layer(source: Source<'_>, settings: &ServeArgs) -> anyhow::Result<Layer> {
    Ok(Layer {
        data_dir: path_setting(source, &DATA_DIR, settings.data_dir.clone())?,
        listen: text_setting(source, &LISTEN, &settings.listen, parse_socket_addr)?,
        advertise: text_setting(source, &ADVERTISE, &settings.advertise, parse_advertise)?,
        admin_listen: text_setting(
            source,
            &ADMIN_LISTEN,
            &settings.admin_listen,
            parse_admin_listen,
        )?,
        cores: text_integer(source, &CORES, &settings.cores, CORES_MIN, i64::MAX)?,
        node_id: text_integer(
            source,
            &NODE_ID,
            &settings.node_id,
            NODE_ID_MIN,
            NODE_ID_MAX,
        )?,
        auto_create_topics: text_setting(
            source,
            &AUTO_CREATE_TOPICS,
            &settings.auto_create_topics,
            parse_bool,
        )?,
        pin_to_cores: text_setting(source, &PIN_TO_CORES, &settings.pin_to_cores, parse_bool)?,
        num_partitions: text_integer(
            source,
            &NUM_PARTITIONS,
            &settings.num_partitions,
            NUM_PARTITIONS_MIN,
            NUM_PARTITIONS_MAX,
        )?,
        socket_request_max_bytes: text_integer(
            source,
            &SOCKET_REQUEST_MAX_BYTES,
            &settings.socket_request_max_bytes,
            SOCKET_REQUEST_MAX_BYTES_MIN,
            SOCKET_REQUEST_MAX_BYTES_MAX,
        )?,
        log_retention_check_interval_ms: text_integer(
            source,
            &LOG_RETENTION_CHECK_INTERVAL_MS,
            &settings.log_retention_check_interval_ms,
            LOG_RETENTION_CHECK_INTERVAL_MS_MIN,
            LOG_RETENTION_CHECK_INTERVAL_MS_MAX,
        )?,
        controller_listen: text_setting(
            source,
            &CONTROLLER_LISTEN,
            &settings.controller_listen,
            parse_host_port,
        )?,
        controller_quorum: text_setting(
            source,
            &CONTROLLER_QUORUM,
            &settings.controller_quorum,
            parse_quorum,
        )?,
        broker_rack: text_setting(source, &BROKER_RACK, &settings.broker_rack, parse_rack)?,
        broker_session_timeout_ms: text_integer(
            source,
            &BROKER_SESSION_TIMEOUT_MS,
            &settings.broker_session_timeout_ms,
            TIMING_MS_MIN,
            TIMING_MS_MAX,
        )?,
        broker_heartbeat_interval_ms: text_integer(
            source,
            &BROKER_HEARTBEAT_INTERVAL_MS,
            &settings.broker_heartbeat_interval_ms,
            TIMING_MS_MIN,
            TIMING_MS_MAX,
        )?,
        replica_lag_time_max_ms: text_integer(
            source,
            &REPLICA_LAG_TIME_MAX_MS,
            &settings.replica_lag_time_max_ms,
            TIMING_MS_MIN,
            TIMING_MS_MAX,
        )?,
        topic_defaults: None,
    })
}

fn text_setting<T>(
    source: Source<'_>,
    setting: &Setting,
    text: &Option<String>,
    parse: fn(&str) -> Parsed<T>,
) -> anyhow::Result<Option<T>> {
    text.as_deref()
        .map(|text| checked(source, setting, &text, parse(text)))
        .transpose()
}

fn text_integer<T: TryFrom<i64>>(
    source: Source<'_>,
    setting: &Setting,
    text: &Option<String>,
    min: i64,
    max: i64,
) -> anyhow::Result<Option<T>> {
    text.as_deref()
        .map(|text| checked(source, setting, &text, parse_integer(text, min, max)))
        .transpose()
}

fn path_setting(
    source: Source<'_>,
    setting: &Setting,
    path: Option<PathBuf>,
) -> anyhow::Result<Option<PathBuf>> {
    if path
        .as_ref()
        .is_some_and(|path| path.as_os_str().is_empty())
    {
        return checked(
            source,
            setting,
            &"",
            Err("expected a directory path".into()),
        );
    }
    Ok(path)
}

/// The config file's shape. Numbers are read as TOML integers and then range-checked like the
/// other sources' text, so `cores = 0` gets the same message as `--cores 0`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    advertise: Option<String>,
    admin_listen: Option<String>,
    cores: Option<i64>,
    node_id: Option<i64>,
    auto_create_topics: Option<bool>,
    pin_to_cores: Option<bool>,
    num_partitions: Option<i64>,
    socket_request_max_bytes: Option<i64>,
    log_retention_check_interval_ms: Option<i64>,
    controller_listen: Option<String>,
    controller_quorum: Option<String>,
    broker_rack: Option<String>,
    broker_session_timeout_ms: Option<i64>,
    broker_heartbeat_interval_ms: Option<i64>,
    replica_lag_time_max_ms: Option<i64>,
    topic_defaults: Option<BTreeMap<String, TopicConfigValue>>,
}

/// A `[topic_defaults]` value. Kafka topic configs are strings on the wire, but TOML users write
/// `"retention.ms" = 604800000` as often as the quoted form, so numbers and booleans are taken
/// too and turned into the text Kafka would use.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TopicConfigValue {
    Text(String),
    Integer(i64),
    Boolean(bool),
}

impl TopicConfigValue {
    fn into_text(self) -> String {
        match self {
            TopicConfigValue::Text(text) => text,
            TopicConfigValue::Integer(integer) => integer.to_string(),
            TopicConfigValue::Boolean(boolean) => boolean.to_string(),
        }
    }
}

/// What a Kafka broker config name sets when it appears at the top level of the file.
#[derive(Clone, Copy, Debug)]
enum KafkaName {
    /// One of Ringlog's own settings, by its file key.
    Setting(&'static str),
    /// A broker-wide topic default, by its topic config name, with the factor that turns the
    /// broker config's unit into the topic config's (hours to milliseconds, ...).
    TopicDefault(&'static str, i64),
}

const MS_PER_MINUTE: i64 = 60_000;
const MS_PER_HOUR: i64 = 60 * MS_PER_MINUTE;

/// Kafka's broker config names this file takes, quoted, beside Ringlog's own keys: the same
/// settings under the names a Kafka operator knows (`server.properties`).
const KAFKA_NAMES: [(&str, KafkaName); 25] = [
    ("node.id", KafkaName::Setting("node_id")),
    (
        "controller.quorum.voters",
        KafkaName::Setting("controller_quorum"),
    ),
    ("broker.rack", KafkaName::Setting("broker_rack")),
    (
        "broker.session.timeout.ms",
        KafkaName::Setting("broker_session_timeout_ms"),
    ),
    (
        "broker.heartbeat.interval.ms",
        KafkaName::Setting("broker_heartbeat_interval_ms"),
    ),
    (
        "replica.lag.time.max.ms",
        KafkaName::Setting("replica_lag_time_max_ms"),
    ),
    ("log.dir", KafkaName::Setting("data_dir")),
    ("num.partitions", KafkaName::Setting("num_partitions")),
    (
        "auto.create.topics.enable",
        KafkaName::Setting("auto_create_topics"),
    ),
    (
        "socket.request.max.bytes",
        KafkaName::Setting("socket_request_max_bytes"),
    ),
    (
        "log.retention.check.interval.ms",
        KafkaName::Setting("log_retention_check_interval_ms"),
    ),
    (
        "log.retention.ms",
        KafkaName::TopicDefault("retention.ms", 1),
    ),
    (
        "log.retention.minutes",
        KafkaName::TopicDefault("retention.ms", MS_PER_MINUTE),
    ),
    (
        "log.retention.hours",
        KafkaName::TopicDefault("retention.ms", MS_PER_HOUR),
    ),
    (
        "log.retention.bytes",
        KafkaName::TopicDefault("retention.bytes", 1),
    ),
    (
        "log.segment.bytes",
        KafkaName::TopicDefault("segment.bytes", 1),
    ),
    ("log.roll.ms", KafkaName::TopicDefault("segment.ms", 1)),
    (
        "log.roll.hours",
        KafkaName::TopicDefault("segment.ms", MS_PER_HOUR),
    ),
    (
        "log.cleanup.policy",
        KafkaName::TopicDefault("cleanup.policy", 1),
    ),
    (
        "message.max.bytes",
        KafkaName::TopicDefault("max.message.bytes", 1),
    ),
    (
        "min.insync.replicas",
        KafkaName::TopicDefault("min.insync.replicas", 1),
    ),
    (
        "log.flush.interval.messages",
        KafkaName::TopicDefault("flush.messages", 1),
    ),
    (
        "log.flush.interval.ms",
        KafkaName::TopicDefault("flush.ms", 1),
    ),
    (
        "log.message.timestamp.type",
        KafkaName::TopicDefault("message.timestamp.type", 1),
    ),
    (
        "unclean.leader.election.enable",
        KafkaName::TopicDefault("unclean.leader.election.enable", 1),
    ),
];

/// Rewrites the Kafka broker names at the top level of `table` into Ringlog's keys and
/// `[topic_defaults]` entries, and returns each (Kafka name, Ringlog key) rewritten, so an error
/// about the value can name the key the file has. Two names for one setting are refused, as is
/// a dotted key that is no Kafka name this file knows (a typo must not be ignored).
fn translate_kafka_names(
    path: &Path,
    table: &mut toml::Table,
) -> anyhow::Result<Vec<(String, &'static str)>> {
    let mut renamed = Vec::new();
    let dotted: Vec<String> = table
        .keys()
        .filter(|key| key.contains('.'))
        .cloned()
        .collect();
    for name in dotted {
        let Some((_, meaning)) = KAFKA_NAMES.iter().find(|(known, _)| *known == name) else {
            let known: Vec<&str> = KAFKA_NAMES.iter().map(|(known, _)| *known).collect();
            return Err(anyhow!(
                "unknown key `{name}` in config file {}; the Kafka broker names it takes are: {}",
                path.display(),
                known.join(", ")
            ));
        };
        let value = table.remove(&name).expect("the key was just listed");
        match *meaning {
            KafkaName::Setting(key) => {
                if table.contains_key(key) {
                    return Err(anyhow!(
                        "config file {}: `{name}` and `{key}` are the same setting; keep one",
                        path.display()
                    ));
                }
                table.insert(key.to_string(), value);
                renamed.push((name, key));
            }
            KafkaName::TopicDefault(topic_config, factor) => {
                let value = match (value, factor) {
                    (value, 1) => value,
                    (toml::Value::Integer(units), factor) => {
                        toml::Value::Integer(units.checked_mul(factor).ok_or_else(|| {
                            anyhow!("config file {}: `{name}` is too large", path.display())
                        })?)
                    }
                    (other, _) => {
                        return Err(anyhow!(
                            "config file {}: `{name}` must be a whole number, not {other}",
                            path.display()
                        ))
                    }
                };
                let defaults = table
                    .entry("topic_defaults")
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let Some(defaults) = defaults.as_table_mut() else {
                    return Err(anyhow!(
                        "config file {}: `topic_defaults` must be a table",
                        path.display()
                    ));
                };
                if defaults.contains_key(topic_config) {
                    return Err(anyhow!(
                        "config file {}: `{name}` and topic_defaults.\"{topic_config}\" are the \
                         same setting; keep one",
                        path.display()
                    ));
                }
                defaults.insert(topic_config.to_string(), value);
            }
        }
    }
    Ok(renamed)
}

fn file_layer(file: &ConfigFile) -> anyhow::Result<Layer> {
    let path = file.path.as_path();
    let mut table: toml::Table =
        toml::from_str(&file.text).with_context(|| format!("config file {}", path.display()))?;
    let renamed = translate_kafka_names(path, &mut table)?;
    file_settings(file, table).map_err(|error| {
        if renamed.is_empty() {
            return error;
        }
        let names: Vec<String> = renamed
            .iter()
            .map(|(kafka, key)| format!("`{kafka}` is read as `{key}`"))
            .collect();
        error.context(format!(
            "in config file {}, {}",
            path.display(),
            names.join(", ")
        ))
    })
}

/// The settings of a config file whose Kafka names are already translated.
fn file_settings(file: &ConfigFile, table: toml::Table) -> anyhow::Result<Layer> {
    let path = file.path.as_path();
    let settings = FileSettings::deserialize(table)
        .with_context(|| format!("config file {}", path.display()))?;
    let source = Source::File(path);
    Ok(Layer {
        data_dir: path_setting(source, &DATA_DIR, settings.data_dir)?,
        listen: text_setting(source, &LISTEN, &settings.listen, parse_socket_addr)?,
        advertise: text_setting(source, &ADVERTISE, &settings.advertise, parse_advertise)?,
        admin_listen: text_setting(
            source,
            &ADMIN_LISTEN,
            &settings.admin_listen,
            parse_admin_listen,
        )?,
        cores: file_integer(source, &CORES, settings.cores, CORES_MIN, i64::MAX)?,
        node_id: file_integer(source, &NODE_ID, settings.node_id, NODE_ID_MIN, NODE_ID_MAX)?,
        auto_create_topics: settings.auto_create_topics,
        pin_to_cores: settings.pin_to_cores,
        num_partitions: file_integer(
            source,
            &NUM_PARTITIONS,
            settings.num_partitions,
            NUM_PARTITIONS_MIN,
            NUM_PARTITIONS_MAX,
        )?,
        socket_request_max_bytes: file_integer(
            source,
            &SOCKET_REQUEST_MAX_BYTES,
            settings.socket_request_max_bytes,
            SOCKET_REQUEST_MAX_BYTES_MIN,
            SOCKET_REQUEST_MAX_BYTES_MAX,
        )?,
        log_retention_check_interval_ms: file_integer(
            source,
            &LOG_RETENTION_CHECK_INTERVAL_MS,
            settings.log_retention_check_interval_ms,
            LOG_RETENTION_CHECK_INTERVAL_MS_MIN,
            LOG_RETENTION_CHECK_INTERVAL_MS_MAX,
        )?,
        controller_listen: text_setting(
            source,
            &CONTROLLER_LISTEN,
            &settings.controller_listen,
            parse_host_port,
        )?,
        controller_quorum: text_setting(
            source,
            &CONTROLLER_QUORUM,
            &settings.controller_quorum,
            parse_quorum,
        )?,
        broker_rack: text_setting(source, &BROKER_RACK, &settings.broker_rack, parse_rack)?,
        broker_session_timeout_ms: file_integer(
            source,
            &BROKER_SESSION_TIMEOUT_MS,
            settings.broker_session_timeout_ms,
            TIMING_MS_MIN,
            TIMING_MS_MAX,
        )?,
        broker_heartbeat_interval_ms: file_integer(
            source,
            &BROKER_HEARTBEAT_INTERVAL_MS,
            settings.broker_heartbeat_interval_ms,
            TIMING_MS_MIN,
            TIMING_MS_MAX,
        )?,
        replica_lag_time_max_ms: file_integer(
            source,
            &REPLICA_LAG_TIME_MAX_MS,
            settings.replica_lag_time_max_ms,
            TIMING_MS_MIN,
            TIMING_MS_MAX,
        )?,
        topic_defaults: settings
            .topic_defaults
            .map(|table| checked_topic_defaults(path, table))
            .transpose()?,
    })
}

/// The `[topic_defaults]` as Kafka's text values, each checked as a topic config now, so a bad
/// one stops the broker at start rather than failing every topic created later.
fn checked_topic_defaults(
    path: &Path,
    table: BTreeMap<String, TopicConfigValue>,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut config = ringlog_engine::config::LogConfig::default();
    table
        .into_iter()
        .map(|(name, value)| {
            let text = value.into_text();
            config.set(&name, &text).map_err(|error| {
                anyhow!(
                    "topic_defaults.\"{name}\" in config file {}: invalid value \"{text}\": {}",
                    path.display(),
                    match error {
                        ringlog_engine::Error::InvalidConfig { reason, .. } => reason,
                        other => other.to_string(),
                    }
                )
            })?;
            Ok((name, text))
        })
        .collect()
}

fn file_integer<T: TryFrom<i64>>(
    source: Source<'_>,
    setting: &Setting,
    value: Option<i64>,
    min: i64,
    max: i64,
) -> anyhow::Result<Option<T>> {
    value
        .map(|value| checked(source, setting, &value, check_integer(value, min, max)))
        .transpose()
}

/// A parsed value, or why the text is not one.
type Parsed<T> = Result<T, String>;

/// Turns a parse failure into an error that names the source, the setting and the value.
fn checked<T>(
    source: Source<'_>,
    setting: &Setting,
    value: &dyn std::fmt::Display,
    parsed: Parsed<T>,
) -> anyhow::Result<T> {
    parsed.map_err(|reason| {
        anyhow!(
            "{}: invalid value \"{value}\": {reason}",
            source.describe(setting)
        )
    })
}

fn parse_socket_addr(text: &str) -> Parsed<SocketAddr> {
    text.parse()
        .map_err(|_| "expected an IP address and port, such as 127.0.0.1:9092 or [::1]:9092".into())
}

/// What `--admin-listen` turns the admin port off with.
const ADMIN_LISTEN_OFF: &str = "off";

/// The admin address `ringlog serve` uses when no source names one.
fn admin_listen_default() -> Option<SocketAddr> {
    Some(
        ADMIN_LISTEN_DEFAULT
            .parse()
            .expect("the default admin address parses"),
    )
}

/// An admin address, or `off` for none.
fn parse_admin_listen(text: &str) -> Parsed<Option<SocketAddr>> {
    if text == ADMIN_LISTEN_OFF {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| "expected an IP address and port, such as 127.0.0.1:9644, or off".into())
}

/// `host:port` as clients will be told it. The host may be a name, since it is only passed on,
/// but an IPv6 address must be bracketed: unbracketed, its last group would read as the port.
fn parse_advertise(text: &str) -> Parsed<(String, u16)> {
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err("expected host:port, such as broker1.example.com:9092".into());
    };
    let host = match host.strip_prefix('[') {
        Some(bracketed) => bracketed
            .strip_suffix(']')
            .ok_or("an IPv6 host's opening bracket is not closed")?,
        None if host.contains(':') => {
            return Err("an IPv6 host must be in brackets, such as [::1]:9092".into())
        }
        None => host,
    };
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    // Port 0 means "any port" to bind, but clients cannot connect to it.
    match port.parse::<u16>() {
        Ok(port) if port != 0 => Ok((host.to_string(), port)),
        _ => Err(format!(
            "the port \"{port}\" is not a number from 1 to 65535"
        )),
    }
}

/// A controller port: `host:port`, a name or an address, port 1 to 65535.
fn parse_host_port(text: &str) -> Parsed<String> {
    parse_advertise(text).map(|_| text.to_string())
}

fn parse_quorum(text: &str) -> Parsed<Quorum> {
    Quorum::parse(text).map_err(|error| match error {
        ringlog_cluster::controller::Error::InvalidQuorum { reason, .. } => reason,
        other => other.to_string(),
    })
}

/// Kafka takes any rack name; an empty one would read as "no rack" to some tools.
fn parse_rack(text: &str) -> Parsed<String> {
    if text.trim().is_empty() {
        return Err("expected a rack name".into());
    }
    Ok(text.to_string())
}

/// Only the two spellings TOML itself uses, so a value means the same in every source.
fn parse_bool(text: &str) -> Parsed<bool> {
    match text {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

fn parse_integer<T: TryFrom<i64>>(text: &str, min: i64, max: i64) -> Parsed<T> {
    let value = text
        .parse::<i64>()
        .map_err(|_| "expected a whole number".to_string())?;
    check_integer(value, min, max)
}

fn check_integer<T: TryFrom<i64>>(value: i64, min: i64, max: i64) -> Parsed<T> {
    if value < min {
        return Err(format!("must be at least {min}"));
    }
    if value > max {
        return Err(format!("must be at most {max}"));
    }
    // Only fails where the target type is narrower than the range allows, such as a 64-bit
    // count on a 32-bit target.
    T::try_from(value).map_err(|_| "too large for this platform".to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn flags(args: &[&str]) -> ServeArgs {
        let argv = std::iter::once("serve").chain(args.iter().copied());
        match TestCli::try_parse_from(argv) {
            Ok(cli) => cli.args,
            Err(error) => panic!("test flags {args:?} do not parse: {error}"),
        }
    }

    fn file(text: &str) -> ConfigFile {
        ConfigFile {
            path: PathBuf::from("/etc/ringlog.toml"),
            text: text.to_string(),
        }
    }

    type Env<'a> = &'a [(&'a str, &'a str)];

    fn resolve_with(
        args: &[&str],
        file_text: Option<&str>,
        env: &[(&str, &str)],
    ) -> anyhow::Result<BrokerConfig> {
        let env: HashMap<String, OsString> = env
            .iter()
            .map(|(name, value)| (name.to_string(), OsString::from(value)))
            .collect();
        let file = file_text.map(file);
        resolve(&flags(args), file.as_ref(), &|name| env.get(name).cloned())
    }

    fn resolved(args: &[&str], file_text: Option<&str>, env: &[(&str, &str)]) -> BrokerConfig {
        match resolve_with(args, file_text, env) {
            Ok(config) => config,
            Err(error) => panic!("resolve failed: {error:#}"),
        }
    }

    fn error(args: &[&str], file_text: Option<&str>, env: &[(&str, &str)]) -> String {
        match resolve_with(args, file_text, env) {
            Ok(config) => panic!("resolve succeeded: {config:?}"),
            Err(error) => format!("{error:#}"),
        }
    }

    #[test]
    fn the_default_file_resolves_to_the_defaults() {
        let text = default_file();
        assert_eq!(
            format!("{:?}", resolved(&[], Some(&text), &[])),
            format!("{:?}", resolved(&[], None, &[]))
        );
        // Every setting a file can hold is in it, and every topic config is listed.
        for setting in SETTINGS.iter().filter(|setting| setting.key != "config") {
            assert!(
                text.contains(&format!("{} = ", setting.key)),
                "{}",
                setting.key
            );
        }
        assert!(
            text.contains("# \"retention.ms\" = \"604800000\""),
            "{text}"
        );
        assert!(
            text.contains("\nadmin_listen = \"127.0.0.1:9644\"\n"),
            "{text}"
        );
    }

    #[test]
    fn kafka_broker_names_set_the_same_settings() {
        let config = resolved(
            &[],
            Some(
                r#"
                "num.partitions" = 4
                "auto.create.topics.enable" = false
                "log.retention.hours" = 2
                "log.segment.bytes" = 1048576
                "log.cleanup.policy" = "compact"
                [topic_defaults]
                "max.message.bytes" = 2097152
                "#,
            ),
            &[],
        );
        assert_eq!(config.num_partitions, 4);
        assert!(!config.auto_create_topics);
        let mut defaults = config.topic_defaults.clone();
        defaults.sort();
        assert_eq!(
            defaults,
            vec![
                ("cleanup.policy".to_string(), "compact".to_string()),
                ("max.message.bytes".into(), "2097152".into()),
                ("retention.ms".into(), "7200000".into()),
                ("segment.bytes".into(), "1048576".into()),
            ]
        );
    }

    #[test]
    fn kafka_names_that_clash_or_do_not_exist_are_refused() {
        let both = error(&[], Some("num_partitions = 2\n\"num.partitions\" = 3"), &[]);
        assert!(
            both.contains("`num.partitions` and `num_partitions` are the same setting"),
            "{both}"
        );
        let both = error(
            &[],
            Some("\"log.retention.ms\" = 1\n[topic_defaults]\n\"retention.ms\" = 2"),
            &[],
        );
        assert!(both.contains("same setting"), "{both}");
        let typo = error(&[], Some("\"log.retention.hourz\" = 1"), &[]);
        assert!(typo.contains("unknown key `log.retention.hourz`"), "{typo}");
        assert!(typo.contains("log.retention.hours"), "{typo}");
        let text = error(&[], Some("\"log.retention.hours\" = \"two\""), &[]);
        assert!(text.contains("must be a whole number"), "{text}");
    }

    #[test]
    fn bad_topic_defaults_are_refused_at_start_with_their_name() {
        let bad = error(
            &[],
            Some("[topic_defaults]\n\"retention.ms\" = \"soon\""),
            &[],
        );
        assert!(bad.contains("topic_defaults.\"retention.ms\""), "{bad}");
        assert!(bad.contains("\"soon\""), "{bad}");
        let unknown = error(&[], Some("[topic_defaults]\n\"retention.msec\" = 1"), &[]);
        assert!(unknown.contains("unknown topic config"), "{unknown}");
    }

    #[test]
    fn no_sources_give_the_embedded_default() {
        let config = resolved(&[], None, &[]);
        // The library's default, plus the admin port, which only `ringlog serve` opens unasked.
        let expected = BrokerConfig {
            admin_listen: Some("127.0.0.1:9644".parse().expect("address")),
            ..BrokerConfig::new("./ringlog-data")
        };
        assert_eq!(format!("{config:?}"), format!("{expected:?}"));
        assert_eq!(config.listen.to_string(), "127.0.0.1:9092");
    }

    #[test]
    fn the_admin_port_can_be_turned_off_from_any_source() {
        assert_eq!(
            resolved(&["--admin-listen", "off"], None, &[]).admin_listen,
            None
        );
        assert_eq!(
            resolved(&[], Some("admin_listen = \"off\""), &[]).admin_listen,
            None
        );
        assert_eq!(
            resolved(&[], None, &[("RINGLOG_ADMIN_LISTEN", "off")]).admin_listen,
            None
        );
        // A flag's address beats the environment's off, and the other way round.
        let config = resolved(
            &["--admin-listen", "127.0.0.1:1"],
            None,
            &[("RINGLOG_ADMIN_LISTEN", "off")],
        );
        assert_eq!(
            config.admin_listen,
            Some("127.0.0.1:1".parse().expect("address"))
        );
        let config = resolved(
            &["--admin-listen", "off"],
            None,
            &[("RINGLOG_ADMIN_LISTEN", "127.0.0.1:1")],
        );
        assert_eq!(config.admin_listen, None);
        let message = error(&["--admin-listen", "Off"], None, &[]);
        assert!(message.contains("or off"), "{message}");
    }

    const ALL_FLAGS: &[&str] = &[
        "--data-dir=/flag",
        "--listen=10.0.0.1:1",
        "--advertise=flag.example:1",
        "--admin-listen=10.0.0.1:11",
        "--cores=1",
        "--node-id=1",
        "--auto-create-topics=false",
        "--num-partitions=1",
        "--socket-request-max-bytes=1",
    ];

    const ALL_FILE: &str = r#"
        data_dir = "/file"
        listen = "10.0.0.2:2"
        advertise = "file.example:2"
        admin_listen = "10.0.0.2:22"
        cores = 2
        node_id = 2
        auto_create_topics = true
        num_partitions = 2
        socket_request_max_bytes = 2
        [topic_defaults]
        "retention.ms" = "2"
    "#;

    const ALL_ENV: &[(&str, &str)] = &[
        ("RINGLOG_DATA_DIR", "/env"),
        ("RINGLOG_LISTEN", "10.0.0.3:3"),
        ("RINGLOG_ADVERTISE", "env.example:3"),
        ("RINGLOG_ADMIN_LISTEN", "10.0.0.3:33"),
        ("RINGLOG_CORES", "3"),
        ("RINGLOG_NODE_ID", "3"),
        ("RINGLOG_AUTO_CREATE_TOPICS", "false"),
        ("RINGLOG_NUM_PARTITIONS", "3"),
        ("RINGLOG_SOCKET_REQUEST_MAX_BYTES", "3"),
    ];

    /// Every setting that `number` (1 = flag, 2 = file, 3 = env) set, as the sources above
    /// spell it.
    fn assert_from(config: &BrokerConfig, number: u16, auto_create_topics: bool) {
        let name = ["", "flag", "file", "env"][usize::from(number)];
        assert_eq!(config.data_dir, PathBuf::from(format!("/{name}")));
        assert_eq!(
            config.listen.to_string(),
            format!("10.0.0.{number}:{number}")
        );
        assert_eq!(config.advertise, Some((format!("{name}.example"), number)));
        assert_eq!(
            config.admin_listen.map(|address| address.to_string()),
            Some(format!("10.0.0.{number}:{number}{number}"))
        );
        assert_eq!(config.cores, Some(usize::from(number)));
        assert_eq!(config.node_id, i32::from(number));
        assert_eq!(config.auto_create_topics, auto_create_topics);
        assert_eq!(config.num_partitions, i32::from(number));
        assert_eq!(config.socket_request_max_bytes, usize::from(number));
    }

    #[test]
    fn flags_beat_file_beats_env_beats_default() {
        assert_from(&resolved(ALL_FLAGS, Some(ALL_FILE), ALL_ENV), 1, false);
        assert_from(&resolved(&[], Some(ALL_FILE), ALL_ENV), 2, true);
        assert_from(&resolved(&[], None, ALL_ENV), 3, false);
        // The file's topic defaults survive flags, which have none to override them with.
        assert_eq!(
            resolved(ALL_FLAGS, Some(ALL_FILE), ALL_ENV).topic_defaults,
            vec![("retention.ms".to_string(), "2".to_string())]
        );
    }

    #[test]
    fn precedence_is_per_setting() {
        let config = resolved(
            &["--cores", "4"],
            Some("listen = \"10.0.0.5:5\""),
            &[("RINGLOG_NODE_ID", "6"), ("RINGLOG_CORES", "7")],
        );
        assert_eq!(config.cores, Some(4));
        assert_eq!(config.listen.to_string(), "10.0.0.5:5");
        assert_eq!(config.node_id, 6);
        assert_eq!(config.data_dir, PathBuf::from(DATA_DIR_DEFAULT));
    }

    #[test]
    fn empty_env_var_is_unset() {
        let config = resolved(&[], None, &[("RINGLOG_CORES", ""), ("RINGLOG_LISTEN", "")]);
        assert_eq!(config.cores, None);
        assert_eq!(config.listen.to_string(), "127.0.0.1:9092");
    }

    #[test]
    fn bad_values_name_source_setting_and_value() {
        // Flags, config file text, environment, and what the error must say.
        type Case<'a> = (&'a [&'a str], Option<&'a str>, Env<'a>, &'a str);
        let cases: &[Case] = &[
            (
                &["--cores", "0"],
                None,
                &[],
                "flag --cores: invalid value \"0\": must be at least 1",
            ),
            (
                &[],
                Some("cores = 0"),
                &[],
                "`cores` in config file /etc/ringlog.toml: invalid value \"0\": must be at least 1",
            ),
            (
                &[],
                None,
                &[("RINGLOG_CORES", "0")],
                "environment variable RINGLOG_CORES: invalid value \"0\": must be at least 1",
            ),
            (
                &["--cores", "four"],
                None,
                &[],
                "flag --cores: invalid value \"four\": expected a whole number",
            ),
            (
                &["--num-partitions", "0"],
                None,
                &[],
                "flag --num-partitions: invalid value \"0\": must be at least 1",
            ),
            (
                &[],
                Some("num_partitions = 3000000000"),
                &[],
                "`num_partitions` in config file /etc/ringlog.toml: invalid value \"3000000000\": must be at most 2147483647",
            ),
            (
                &["--node-id=-1"],
                None,
                &[],
                "flag --node-id: invalid value \"-1\": must be at least 0",
            ),
            (
                &[],
                None,
                &[("RINGLOG_SOCKET_REQUEST_MAX_BYTES", "0")],
                "environment variable RINGLOG_SOCKET_REQUEST_MAX_BYTES: invalid value \"0\": must be at least 1",
            ),
            (
                &["--listen", "localhost:9092"],
                None,
                &[],
                "flag --listen: invalid value \"localhost:9092\": expected an IP address and port",
            ),
            (
                &[],
                Some("admin_listen = \"127.0.0.1\""),
                &[],
                "`admin_listen` in config file /etc/ringlog.toml: invalid value \"127.0.0.1\": expected an IP address and port",
            ),
            (
                &["--advertise", "broker1"],
                None,
                &[],
                "flag --advertise: invalid value \"broker1\": expected host:port",
            ),
            (
                &[],
                None,
                &[("RINGLOG_ADVERTISE", "broker1:http")],
                "environment variable RINGLOG_ADVERTISE: invalid value \"broker1:http\": the port \"http\" is not a number from 1 to 65535",
            ),
            (
                &["--advertise", "broker1:0"],
                None,
                &[],
                "the port \"0\" is not a number from 1 to 65535",
            ),
            (
                &["--advertise", "::1:9092"],
                None,
                &[],
                "an IPv6 host must be in brackets",
            ),
            (&["--advertise", ":9092"], None, &[], "the host is empty"),
            (
                &["--auto-create-topics", "yes"],
                None,
                &[],
                "flag --auto-create-topics: invalid value \"yes\": expected true or false",
            ),
            (
                &[],
                None,
                &[("RINGLOG_AUTO_CREATE_TOPICS", "1")],
                "environment variable RINGLOG_AUTO_CREATE_TOPICS: invalid value \"1\": expected true or false",
            ),
            (
                &[],
                Some("data_dir = \"\""),
                &[],
                "`data_dir` in config file /etc/ringlog.toml: invalid value \"\": expected a directory path",
            ),
            // A wrongly typed TOML value is caught by the TOML parser, which names the file
            // and the key.
            (
                &[],
                Some("cores = \"4\""),
                &[],
                "config file /etc/ringlog.toml: invalid type: string \"4\", expected i64\nin `cores`",
            ),
        ];
        for (args, file_text, env, expected) in cases {
            let message = error(args, *file_text, env);
            assert!(
                message.contains(expected),
                "for {args:?} {file_text:?} {env:?}: expected {expected:?} in {message:?}"
            );
        }
    }

    #[test]
    fn a_bad_value_fails_even_when_overridden() {
        let message = error(&["--cores", "2"], None, &[("RINGLOG_CORES", "zero")]);
        assert!(message.contains("RINGLOG_CORES"), "{message}");
    }

    #[test]
    fn unknown_file_keys_are_errors_naming_the_key() {
        for text in [
            "bogus = 1",
            "[topic_default]\n\"retention.ms\" = \"1\"",
            "config = \"x\"",
        ] {
            let message = error(&[], Some(text), &[]);
            let key = text
                .trim_start_matches('[')
                .split([' ', ']'])
                .next()
                .unwrap_or_default();
            assert!(
                message.contains(&format!("unknown field `{key}`"))
                    && message.contains("/etc/ringlog.toml"),
                "{message}"
            );
        }
    }

    #[test]
    fn topic_defaults_take_kafka_names_and_any_scalar() {
        let config = resolved(
            &[],
            Some(
                r#"
                [topic_defaults]
                "retention.ms" = "604800000"
                "segment.bytes" = 1073741824
                "unclean.leader.election.enable" = true
                "#,
            ),
            &[],
        );
        assert_eq!(
            config.topic_defaults,
            vec![
                ("retention.ms".to_string(), "604800000".to_string()),
                ("segment.bytes".to_string(), "1073741824".to_string()),
                (
                    "unclean.leader.election.enable".to_string(),
                    "true".to_string()
                ),
            ]
        );
    }

    #[test]
    fn advertise_takes_names_and_bracketed_ipv6() {
        let config = resolved(&["--advertise", "broker-1.example.com:19092"], None, &[]);
        assert_eq!(config.advertised(), ("broker-1.example.com".into(), 19092));
        let config = resolved(&["--advertise", "[::1]:9092"], None, &[]);
        assert_eq!(config.advertised(), ("::1".into(), 9092));
        assert_eq!(host_port("::1", 9092), "[::1]:9092");
    }

    #[test]
    fn config_flag_beats_config_env() {
        let env = |name: &str| (name == CONFIG.env).then(|| OsString::from("/env.toml"));
        let from_flag = config_path(&flags(&["--config", "/flag.toml"]), &env);
        assert_eq!(from_flag, Some(PathBuf::from("/flag.toml")));
        let from_env = config_path(&flags(&[]), &env);
        assert_eq!(from_env, Some(PathBuf::from("/env.toml")));
        let from_neither = config_path(&flags(&[]), &|_| None);
        assert_eq!(from_neither, None);
    }

    #[test]
    fn help_documents_every_flag_with_env_and_default() {
        let command = TestCli::command();
        for setting in SETTINGS {
            let long = setting.flag.trim_start_matches("--");
            let Some(arg) = command
                .get_arguments()
                .find(|arg| arg.get_long() == Some(long))
            else {
                panic!("no flag {}", setting.flag);
            };
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(
                help.contains(&format!("[env: {}]", setting.env)) && help.contains("[default: "),
                "{}: {help}",
                setting.flag
            );
        }
        assert_eq!(command.get_arguments().count(), SETTINGS.len());
    }
}
