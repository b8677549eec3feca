//! The net crate's error type. Kafka error codes are a separate type ([`crate::codes`]).

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage engine failed.
    #[error(transparent)]
    Engine(#[from] ringlog_engine::Error),

    /// Another process holds the data directory's lock.
    #[error("data directory {path} is locked by another ringlog process (pid {holder}); stop it or choose another --data-dir")]
    DataDirLocked {
        path: std::path::PathBuf,
        holder: String,
    },

    /// A setting is out of range or inconsistent.
    #[error("invalid config {key}: {reason}")]
    InvalidConfig { key: String, reason: String },

    /// The broker did not listen within the time [`crate::server::start_within`] was given; it
    /// was asked to stop.
    #[error("the broker did not start listening within {waited:?}; it was asked to stop")]
    StartTimeout { waited: std::time::Duration },

    /// The broker was asked to stop while this shard waited for the others to start: another
    /// shard failed (its error is the one reported) or a signal came.
    #[error("stopped while starting")]
    StoppedWhileStarting,

    /// This node's controller of the quorum did not start (its port, its files).
    #[error("the controller did not start: {0}")]
    Controller(String),

    /// The broker's shards all ended without listening and without an error: not expected,
    /// since a shard returns only after listening or with the error that stopped it.
    #[error("the broker stopped before it listened")]
    StoppedBeforeListening,

    /// An I/O operation outside the engine failed (sockets, the lock file).
    #[error("{op} {target}: {source}")]
    Io {
        op: &'static str,
        target: String,
        source: std::io::Error,
    },

    /// A Kafka peer's answer could not be used (a bad frame, a failed decode), or a request to
    /// it could not be encoded.
    #[error("{0}")]
    Peer(String),

    /// A Kafka peer refused a request with an error code.
    #[error("{op}: {}{}", crate::client::error_name(*code), message.as_deref().map(|message| format!(" ({message})")).unwrap_or_default())]
    Kafka {
        op: String,
        code: i16,
        message: Option<String>,
    },

    /// The peer does not serve an API at any version this client speaks.
    #[error("{0}")]
    UnsupportedApi(String),
}
