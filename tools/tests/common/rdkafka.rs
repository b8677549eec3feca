//! Helpers for the tests that drive a broker with the `rdkafka` crate.

use rdkafka::config::ClientConfig;

/// A client config for `bootstrap` with `settings` (librdkafka property names) on top.
pub fn client_config(bootstrap: &str, settings: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (key, value) in settings {
        config.set(*key, *value);
    }
    config
}
