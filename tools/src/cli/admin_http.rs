//! A client of Ringlog's admin HTTP API (`/api/v1/...` on `serve --admin-listen`), for what the
//! Kafka protocol cannot tell, such as a broker's shards. Blocking, plain HTTP, JSON answers.

use std::time::Duration;

use serde::de::DeserializeOwned;

use super::{CliError, EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE};

/// The port of `ringlog serve`'s default admin listener (`ADMIN_LISTEN_DEFAULT` in
/// `ringlog_net::config`, Redpanda's admin port), tried when no admin URL is given.
pub const ADMIN_PORT_DEFAULT: u16 = 9644;

/// How long connecting to the admin port may take. A broker accepts in well under a millisecond
/// on loopback and a few milliseconds across a network; a host that drops the connection
/// attempt must not hold up a command that only guessed the address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a whole request may take. A shard answers the broker's snapshot request in
/// microseconds; the broker gives up on a stuck shard after 5 s (`GATHER_TIMEOUT` in
/// `ringlog_net::admin::api`) and answers 503, which is worth waiting a moment longer for.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(6);

/// A failed admin request, with the exit status it calls for when the user asked for it.
#[derive(Debug)]
pub struct AdminError {
    pub status: u8,
    pub message: String,
}

impl AdminError {
    pub fn failed(message: String) -> AdminError {
        AdminError {
            status: EXIT_FAILED,
            message,
        }
    }

    pub fn into_cli(self, hint: impl Into<String>) -> CliError {
        CliError {
            status: self.status,
            message: self.message,
            hint: Some(hint.into()),
        }
    }
}

/// One broker's admin API.
pub struct AdminApi {
    agent: ureq::Agent,
    /// `http://HOST:PORT`, without a trailing slash.
    url: String,
}

impl AdminApi {
    /// The API at `url`; a bare `HOST:PORT` means `http://HOST:PORT`.
    pub fn new(url: &str) -> AdminApi {
        let url = url.trim().trim_end_matches('/');
        let url = if url.contains("://") {
            url.to_string()
        } else {
            format!("http://{url}")
        };
        AdminApi {
            agent: ureq::AgentBuilder::new()
                .timeout_connect(CONNECT_TIMEOUT)
                .timeout(REQUEST_TIMEOUT)
                .build(),
            url,
        }
    }

    /// `http://HOST:PORT` on the admin port of the broker at `address` (`HOST:PORT` of its Kafka
    /// listener, `[IPv6]:PORT` too), assuming the default admin port.
    pub fn guess(address: &str) -> AdminApi {
        let host = match address.trim().rsplit_once(':') {
            Some((host, _port)) => host,
            None => address.trim(),
        };
        AdminApi::new(&format!("http://{host}:{ADMIN_PORT_DEFAULT}"))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// GETs `path` (`/api/v1/...`) and decodes its JSON answer.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, AdminError> {
        let url = format!("{}{path}", self.url);
        let response = match self.agent.get(&url).call() {
            Ok(response) => response,
            Err(ureq::Error::Status(status, response)) => {
                let body = response.into_string().unwrap_or_default();
                return Err(AdminError::failed(format!(
                    "GET {url} answered {status}: {}",
                    body.trim()
                )));
            }
            Err(ureq::Error::Transport(transport)) => {
                // No HTTP answer: nothing listens, or something that is not HTTP (a Kafka port
                // closes on the first bytes) is unreachable as far as the admin API goes.
                let status = match transport.kind() {
                    ureq::ErrorKind::InvalidUrl | ureq::ErrorKind::UnknownScheme => EXIT_USAGE,
                    ureq::ErrorKind::Dns
                    | ureq::ErrorKind::ConnectionFailed
                    | ureq::ErrorKind::Io => EXIT_UNREACHABLE,
                    _ => EXIT_FAILED,
                };
                // The transport error names the URL, when it got as far as parsing it.
                let message = if transport.url().is_some() {
                    format!("GET {transport}")
                } else {
                    format!("GET {url}: {transport}")
                };
                return Err(AdminError { status, message });
            }
        };
        let body = response.into_string().map_err(|error| {
            AdminError::failed(format!("GET {url}: reading the answer: {error}"))
        })?;
        serde_json::from_str(&body).map_err(|error| {
            AdminError::failed(format!(
                "GET {url}: not the answer of a Ringlog admin API ({error})"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_port_is_the_one_serve_listens_on() {
        let port = ringlog_net::config::ADMIN_LISTEN_DEFAULT
            .rsplit_once(':')
            .map(|(_, port)| port);
        assert_eq!(port, Some(ADMIN_PORT_DEFAULT.to_string().as_str()));
    }

    #[test]
    fn urls_get_a_scheme_and_lose_trailing_slashes() {
        assert_eq!(
            AdminApi::new("127.0.0.1:9644").url(),
            "http://127.0.0.1:9644"
        );
        assert_eq!(
            AdminApi::new(" http://admin.example:19644/ ").url(),
            "http://admin.example:19644"
        );
    }

    #[test]
    fn guesses_take_the_host_of_a_kafka_address() {
        assert_eq!(
            AdminApi::guess("127.0.0.1:9092").url(),
            "http://127.0.0.1:9644"
        );
        assert_eq!(AdminApi::guess("[::1]:9092").url(), "http://[::1]:9644");
        assert_eq!(
            AdminApi::guess(" kafka-1.internal:19092").url(),
            "http://kafka-1.internal:9644"
        );
        assert_eq!(AdminApi::guess("kafka-1").url(), "http://kafka-1:9644");
    }
}
