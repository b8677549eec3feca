//! The library's error type. The `ringlog` binary reports its failures through `anyhow`; this
//! type is for code that embeds a broker and wants to match on what went wrong.

use std::path::PathBuf;
use std::time::Duration;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The temporary data directory could not be created.
    #[error("creating a temporary data directory in {parent}: {source}")]
    TempDir {
        parent: PathBuf,
        source: std::io::Error,
    },

    /// A builder setting is out of range or unknown.
    #[error("invalid embedded broker setting {key}: {reason}")]
    InvalidConfig { key: String, reason: String },

    /// The broker did not accept connections in time. It was asked to stop; its data
    /// directory is left in place for a look at what it was doing.
    #[error("the embedded broker did not start within {waited:?}; its data directory {data_dir} is kept")]
    StartTimeout { waited: Duration, data_dir: PathBuf },

    /// The broker failed to start (data directory locked or unusable, address taken, ...) or
    /// to stop cleanly.
    #[error(transparent)]
    Broker(#[from] ringlog_net::Error),
}
