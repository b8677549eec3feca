//! The `ringlog` library: an embedded broker for Rust application tests ([`EmbeddedBroker`]),
//! the same broker `ringlog serve` runs, started inside the test process.

pub mod embedded;
mod error;

pub use embedded::{EmbeddedBroker, EmbeddedBrokerBuilder};
pub use error::{Error, Result};
