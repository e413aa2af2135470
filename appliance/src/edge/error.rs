//! The one error type of the request path: where it came from, the status the client gets, and
//! whether another server may be tried.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, HeaderValue};

/// Who is at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The client sent something we refuse.
    Downstream,
    /// A server behind us failed.
    Upstream,
}

/// What went wrong on the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EdgeError {
    /// A request target in absolute form (or HTTP/2's `:authority`) names another host than the
    /// `Host` header.
    #[error("the request target names a different host than the Host header")]
    MisdirectedTarget,
    /// The request target is longer than `edge.max_uri_length`.
    #[error("the request target is too long")]
    UriTooLong,
    /// More header fields than `edge.max_headers`, or more bytes than `edge.max_header_bytes`.
    #[error("the request header fields are too many or too large")]
    HeadersTooLarge,
    /// The path has malformed percent-encoding, or a NUL byte.
    #[error("the path is malformed (bad percent-encoding or a NUL byte)")]
    BadPath,
    /// The path's dot-segments climb above the root (`/../`, also when percent-encoded).
    #[error("the path climbs above the root")]
    PathEscapesRoot,
    /// The path has an encoded slash (`%2F`) on a route that refuses them.
    #[error("encoded slashes are not accepted on this route")]
    EncodedSlash,
    /// The path or query is not UTF-8 on a route that demands it.
    #[error("the path or query is not valid UTF-8")]
    NotUtf8,
    /// The route does not accept the method.
    #[error("this route does not accept this method")]
    MethodNotAllowed,
    /// Over `edge.max_connections` or `edge.max_connections_per_ip`.
    #[error("too many connections; retry shortly")]
    TooManyConnections,
    /// The request body is larger than the route's `max_body`.
    #[error("the request body is larger than this route accepts")]
    BodyTooLarge,
    /// The request names a host not in `edge.allowed_hosts`.
    #[error("this server does not answer for that host")]
    UnknownHost,
    /// The client's address is denied, or not allowed, on this route.
    #[error("this route does not accept requests from this address")]
    AddressRefused,
    /// The client's request body broke off while it was being forwarded.
    #[error("the request body ended before it was complete")]
    ClientBody,
    /// The client paused longer than `edge.request_body_timeout` while sending its body.
    #[error("the request body stopped arriving")]
    ClientBodyTimeout,
    /// No route matches the host and path.
    #[error("no route for this host and path")]
    NoRoute,
    /// Every server of the group is down, ejected or already tried.
    #[error("no healthy upstream server is available")]
    NoHealthyUpstream,
    /// The TCP connection to the server failed (refused, unreachable, DNS).
    #[error("the upstream server could not be reached")]
    Connect,
    /// The TCP connection to the server took longer than `connect_timeout`.
    #[error("connecting to the upstream server timed out")]
    ConnectTimeout,
    /// The response head did not arrive within `response_header_timeout`.
    #[error("the upstream server did not answer in time")]
    ResponseTimeout,
    /// The connection broke or the server answered something that is not HTTP, before any
    /// response reached the client.
    #[error("the upstream server closed the connection or sent an invalid response")]
    BadResponse,
}

impl EdgeError {
    /// The status the client gets.
    pub fn status(self) -> StatusCode {
        match self {
            Self::MisdirectedTarget
            | Self::ClientBody
            | Self::BadPath
            | Self::PathEscapesRoot
            | Self::EncodedSlash
            | Self::NotUtf8 => StatusCode::BAD_REQUEST,
            Self::ClientBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::AddressRefused => StatusCode::FORBIDDEN,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
            Self::UnknownHost => StatusCode::MISDIRECTED_REQUEST,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::NoHealthyUpstream => StatusCode::SERVICE_UNAVAILABLE,
            Self::Connect | Self::BadResponse => StatusCode::BAD_GATEWAY,
            Self::ConnectTimeout | Self::ResponseTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Who is at fault.
    pub fn source(self) -> Source {
        match self {
            Self::MisdirectedTarget
            | Self::UriTooLong
            | Self::HeadersTooLarge
            | Self::BadPath
            | Self::PathEscapesRoot
            | Self::EncodedSlash
            | Self::NotUtf8
            | Self::MethodNotAllowed
            | Self::TooManyConnections
            | Self::AddressRefused
            | Self::UnknownHost
            | Self::BodyTooLarge
            | Self::ClientBody
            | Self::ClientBodyTimeout
            | Self::NoRoute => Source::Downstream,
            _ => Source::Upstream,
        }
    }

    /// Whether an idempotent request without a body may be sent to another server: only when
    /// the failed server cannot have started processing it.
    pub fn retry_safe(self) -> bool {
        matches!(
            self,
            Self::Connect | Self::ConnectTimeout | Self::BadResponse
        )
    }

    /// Whether the failure counts towards ejecting the server: it could not be reached, did not
    /// answer in time, or broke the connection (nginx's `error` and `timeout`).
    pub fn counts_against_server(self) -> bool {
        matches!(
            self,
            Self::Connect | Self::ConnectTimeout | Self::ResponseTimeout | Self::BadResponse
        )
    }

    /// A name for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Self::MisdirectedTarget => "misdirected_target",
            Self::UriTooLong => "uri_too_long",
            Self::HeadersTooLarge => "headers_too_large",
            Self::BadPath => "bad_path",
            Self::PathEscapesRoot => "path_escapes_root",
            Self::EncodedSlash => "encoded_slash",
            Self::NotUtf8 => "not_utf8",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::TooManyConnections => "too_many_connections",
            Self::BodyTooLarge => "body_too_large",
            Self::UnknownHost => "unknown_host",
            Self::AddressRefused => "address_refused",
            Self::ClientBody => "client_body",
            Self::ClientBodyTimeout => "client_body_timeout",
            Self::NoRoute => "no_route",
            Self::NoHealthyUpstream => "no_healthy_upstream",
            Self::Connect => "connect",
            Self::ConnectTimeout => "connect_timeout",
            Self::ResponseTimeout => "response_timeout",
            Self::BadResponse => "bad_response",
        }
    }

    /// Leaves this error in `response`'s extensions, for the finish phase to count.
    pub fn mark(self, response: &mut HttpResponse) {
        response.extensions_mut().insert(self);
    }

    /// A short plain-text answer: the status line and one sentence.
    pub fn response(self) -> HttpResponse {
        let status = self.status();
        let body = format!(
            "{} {}: {self}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("Error")
        );
        let mut response = HttpResponse::with_body(status, body).map_into_boxed_body();
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        self.mark(&mut response);
        response
    }
}
