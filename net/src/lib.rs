//! Ringlog's Kafka wire protocol server: connections, framing, one handler per API, producer
//! state. `server::run` starts a broker on every shard and returns once it has shut down;
//! `server::start` returns once it listens, with the bound address and a handle to stop it.

pub mod admin;
pub mod apis;
pub mod broker;
pub mod client;
pub mod codec;
pub mod codes;
pub mod config;
pub mod connection;
pub mod controller;
pub mod error;
pub mod groups;
pub mod handlers;
pub mod messages;
pub mod metrics;
pub mod producers;
pub mod quorum;
pub mod replica;
pub mod server;
pub mod shutdown;

pub use config::BrokerConfig;
pub use error::{Error, Result};
pub use shutdown::Shutdown;
