//! The admin port's HTTP/1.1: request heads parsed with `httparse` under a size limit, the
//! routes, and responses encoded with a `Content-Length`. No I/O here, so every edge case is a
//! unit test. Only GET and HEAD are served and no request may carry a body, so a request is
//! just its head.

/// The most bytes a request head (request line and headers) may take. The admin API's requests
/// are a path and a few headers (a browser sends ~1 KiB, curl ~100 bytes); 8 KiB is what many
/// servers allow (nginx's default header buffer), and bounds what a client can make the shard
/// hold per connection.
pub const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;

/// The most headers a request may have: a browser sends about 15.
pub const REQUEST_HEADERS_MAX: usize = 32;

/// An HTTP status this server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    HeadersTooLarge,
    InternalServerError,
    ServiceUnavailable,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::RequestTimeout => 408,
            Status::HeadersTooLarge => 431,
            Status::InternalServerError => 500,
            Status::ServiceUnavailable => 503,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::RequestTimeout => "Request Timeout",
            Status::HeadersTooLarge => "Request Header Fields Too Large",
            Status::InternalServerError => "Internal Server Error",
            Status::ServiceUnavailable => "Service Unavailable",
        }
    }
}

/// What the admin port serves, by path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Metrics,
    Health,
    Ready,
    Brokers,
    Topics,
    Partitions,
    Shards,
    Groups,
    /// A file of the web console.
    Console(Asset),
}

/// The web console's files, compiled into the binary (see [`super::console`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asset {
    Page,
    Script,
    Style,
}

/// Every path served: the web console at `/`, Prometheus' conventional `/metrics`, and the
/// JSON API under `/api/v1/`.
pub const ROUTES: [(&str, Endpoint); 11] = [
    ("/", Endpoint::Console(Asset::Page)),
    ("/console.js", Endpoint::Console(Asset::Script)),
    ("/console.css", Endpoint::Console(Asset::Style)),
    ("/metrics", Endpoint::Metrics),
    ("/api/v1/health", Endpoint::Health),
    ("/api/v1/ready", Endpoint::Ready),
    ("/api/v1/brokers", Endpoint::Brokers),
    ("/api/v1/topics", Endpoint::Topics),
    ("/api/v1/partitions", Endpoint::Partitions),
    ("/api/v1/shards", Endpoint::Shards),
    ("/api/v1/groups", Endpoint::Groups),
];

/// A request this server will answer with an endpoint's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub endpoint: Endpoint,
    /// HEAD: the same headers as GET, no body.
    pub head_only: bool,
    /// Whether the connection stays open after the response (HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`).
    pub keep_alive: bool,
}

/// What the bytes received so far hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A complete request head of `consumed` bytes.
    Request { request: Request, consumed: usize },
    /// Not a whole head yet, and still under the size limit.
    Partial,
    /// Answer with this status and close the connection.
    Refused(Status),
}

/// Parses the request head at the start of `buffer`.
pub fn parse(buffer: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; REQUEST_HEADERS_MAX];
    let mut parsed = httparse::Request::new(&mut headers);
    let consumed = match parsed.parse(buffer) {
        Ok(httparse::Status::Complete(consumed)) => consumed,
        Ok(httparse::Status::Partial) if buffer.len() >= REQUEST_HEAD_BYTES_MAX => {
            return Parsed::Refused(Status::HeadersTooLarge)
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Refused(Status::HeadersTooLarge),
        Err(_) => return Parsed::Refused(Status::BadRequest),
    };
    if consumed > REQUEST_HEAD_BYTES_MAX {
        return Parsed::Refused(Status::HeadersTooLarge);
    }
    // A complete parse always has these; answer garbage rather than trust that.
    let (Some(method), Some(target), Some(minor_version)) =
        (parsed.method, parsed.path, parsed.version)
    else {
        return Parsed::Refused(Status::BadRequest);
    };
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    if !path.starts_with('/') {
        return Parsed::Refused(Status::BadRequest);
    }
    let Some(endpoint) = ROUTES
        .iter()
        .find(|(route, _)| *route == path)
        .map(|(_, endpoint)| *endpoint)
    else {
        return Parsed::Refused(Status::NotFound);
    };
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Parsed::Refused(Status::MethodNotAllowed),
    };
    let mut keep_alive = minor_version >= 1;
    for header in parsed.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("connection") {
            let value = String::from_utf8_lossy(header.value);
            for option in value.split(',').map(str::trim) {
                if option.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if option.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || (name.eq_ignore_ascii_case("content-length") && header.value.trim_ascii() != b"0")
        {
            // A body would have to be read and skipped to find the next request; GET and HEAD
            // have none, so a request claiming one is refused.
            return Parsed::Refused(Status::BadRequest);
        }
    }
    Parsed::Request {
        request: Request {
            endpoint,
            head_only,
            keep_alive,
        },
        consumed,
    }
}

/// `application/json`, for the `/api/v1/` endpoints.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// The Prometheus text exposition format, version 0.0.4.
pub const CONTENT_TYPE_PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `text/plain`, for errors.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; charset=utf-8";

/// The web console's page, script and stylesheet.
pub const CONTENT_TYPE_HTML: &str = "text/html; charset=utf-8";
pub const CONTENT_TYPE_JAVASCRIPT: &str = "text/javascript; charset=utf-8";
pub const CONTENT_TYPE_CSS: &str = "text/css; charset=utf-8";

/// Headers of every console file: the page may load only its own script, stylesheet and
/// API (so a topic or group name a client chose can never run as script, even if it slipped
/// past the console's escaping), may not be framed, and is revalidated on each load so an
/// upgraded broker serves its own console.
pub const CONSOLE_HEADERS: &[(&str, &str)] = &[
    (
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; \
         form-action 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-cache"),
];

/// A response to encode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: Status,
    pub content_type: &'static str,
    /// Headers besides Content-Type, Content-Length and Connection.
    pub headers: &'static [(&'static str, &'static str)],
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: Status, value: &serde_json::Value) -> Response {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
        body.push(b'\n');
        Response {
            status,
            content_type: CONTENT_TYPE_JSON,
            headers: &[],
            body,
        }
    }

    /// A plain-text error: the status line's reason and `detail`.
    pub fn error(status: Status, detail: &str) -> Response {
        Response {
            status,
            content_type: CONTENT_TYPE_TEXT,
            headers: &[],
            body: format!("{} {}: {detail}\n", status.code(), status.reason()).into_bytes(),
        }
    }

    /// The bytes to send: status line, headers, and (unless `head_only`) the body.
    pub fn encode(&self, head_only: bool, keep_alive: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n",
            self.status.code(),
            self.status.reason(),
            self.content_type,
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" },
        )
        .into_bytes();
        if self.status == Status::MethodNotAllowed {
            out.extend_from_slice(b"Allow: GET, HEAD\r\n");
        }
        for (name, value) in self.headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(endpoint: Endpoint, head_only: bool, keep_alive: bool) -> Result<Request, Status> {
        Ok(Request {
            endpoint,
            head_only,
            keep_alive,
        })
    }

    #[test]
    fn routes_and_methods() {
        let cases: &[(&str, Result<Request, Status>)] = &[
            (
                "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
                request(Endpoint::Metrics, false, true),
            ),
            (
                "HEAD /api/v1/topics?pretty=1 HTTP/1.1\r\n\r\n",
                request(Endpoint::Topics, true, true),
            ),
            (
                "GET /api/v1/groups HTTP/1.0\r\n\r\n",
                request(Endpoint::Groups, false, false),
            ),
            (
                "GET /api/v1/ready HTTP/1.1\r\nConnection: close\r\n\r\n",
                request(Endpoint::Ready, false, false),
            ),
            (
                "GET /api/v1/health HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
                request(Endpoint::Health, false, true),
            ),
            ("GET /metrics/ HTTP/1.1\r\n\r\n", Err(Status::NotFound)),
            (
                "GET /?refresh=1 HTTP/1.1\r\n\r\n",
                request(Endpoint::Console(Asset::Page), false, true),
            ),
            ("GET /index.html HTTP/1.1\r\n\r\n", Err(Status::NotFound)),
            ("GET /api/v1/nope HTTP/1.1\r\n\r\n", Err(Status::NotFound)),
            (
                "POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
                Err(Status::MethodNotAllowed),
            ),
            (
                "DELETE /api/v1/topics HTTP/1.1\r\n\r\n",
                Err(Status::MethodNotAllowed),
            ),
            (
                "GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
                Err(Status::BadRequest),
            ),
            (
                "GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(Status::BadRequest),
            ),
            (
                "GET /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                request(Endpoint::Metrics, false, true),
            ),
        ];
        for (text, expected) in cases {
            // Each text is one whole request head, so a request consumes all of it.
            let expected = match expected.clone() {
                Ok(request) => Parsed::Request {
                    request,
                    consumed: text.len(),
                },
                Err(status) => Parsed::Refused(status),
            };
            assert_eq!(parse(text.as_bytes()), expected, "{text:?}");
        }
    }

    #[test]
    fn garbage_is_a_bad_request() {
        let cases: &[&[u8]] = &[
            b"\x00\x00\x00\x10\x00\x12\x00\x00garbage\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /metrics HTTP/9.9\r\n\r\n",
            b"GET /metrics\r\n\r\n",
            b"GET http://example.com/metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
            b"G\xffT /metrics HTTP/1.1\r\n\r\n",
        ];
        for bytes in cases {
            assert_eq!(
                parse(bytes),
                Parsed::Refused(Status::BadRequest),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn an_incomplete_head_waits_until_the_limit() {
        assert_eq!(parse(b""), Parsed::Partial);
        assert_eq!(parse(b"GET /metr"), Parsed::Partial);
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),
            Parsed::Partial
        );
        let mut oversized = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
        oversized.resize(REQUEST_HEAD_BYTES_MAX, b'a');
        assert_eq!(parse(&oversized), Parsed::Refused(Status::HeadersTooLarge));
        // One byte short of the limit is still waiting for the rest.
        assert_eq!(
            parse(&oversized[..REQUEST_HEAD_BYTES_MAX - 1]),
            Parsed::Partial
        );
    }

    #[test]
    fn too_many_headers_are_refused() {
        let mut text = String::from("GET /metrics HTTP/1.1\r\n");
        for index in 0..=REQUEST_HEADERS_MAX {
            text.push_str(&format!("X-{index}: y\r\n"));
        }
        text.push_str("\r\n");
        assert_eq!(
            parse(text.as_bytes()),
            Parsed::Refused(Status::HeadersTooLarge)
        );
    }

    #[test]
    fn pipelined_requests_parse_one_at_a_time() {
        let first = b"GET /api/v1/health HTTP/1.1\r\n\r\n";
        let text = [&first[..], b"GET /metrics HTTP/1.1\r\n\r\n"].concat();
        let Parsed::Request { consumed, .. } = parse(&text) else {
            panic!("first request");
        };
        assert_eq!(consumed, first.len());
        let second = Parsed::Request {
            request: Request {
                endpoint: Endpoint::Metrics,
                head_only: false,
                keep_alive: true,
            },
            consumed: text.len() - consumed,
        };
        assert_eq!(parse(&text[consumed..]), second);
    }

    #[test]
    fn responses_carry_length_and_connection() {
        let response = Response {
            status: Status::Ok,
            content_type: CONTENT_TYPE_JSON,
            headers: &[],
            body: b"{}".to_vec(),
        };
        assert_eq!(
            String::from_utf8(response.encode(false, true)).expect("utf-8"),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
             Connection: keep-alive\r\n\r\n{}"
        );
        // HEAD: the GET's headers, Content-Length included, and no body.
        assert_eq!(
            String::from_utf8(response.encode(true, false)).expect("utf-8"),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
             Connection: close\r\n\r\n"
        );
        let refused = Response::error(Status::MethodNotAllowed, "only GET and HEAD");
        let text = String::from_utf8(refused.encode(false, false)).expect("utf-8");
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nAllow: GET, HEAD\r\n"), "{text}");
        assert!(
            text.ends_with("\r\n\r\n405 Method Not Allowed: only GET and HEAD\n"),
            "{text}"
        );
    }
}
