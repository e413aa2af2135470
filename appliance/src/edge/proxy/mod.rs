//! The upstream phase: send the request to a server of the route's group and stream the answer
//! back. Bodies stream both ways and are never buffered whole.
//!
//! Retries: only idempotent requests without a body, only after failures that mean the server
//! did not answer (connect errors, a broken connection before any response), each to a server
//! not tried yet, at most `retries` times.

mod body;
pub(crate) mod headers;
mod websocket;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_http::{ConnectionType, RequestHead, ResponseHead};
use actix_web::body::{BodySize, BoxBody, EitherBody};
use actix_web::error::PayloadError;
use actix_web::http::header::{HOST, HeaderMap, HeaderName, HeaderValue, TRANSFER_ENCODING};
use actix_web::http::{Method, StatusCode, Uri};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures_util::stream::LocalBoxStream;
use futures_util::{FutureExt, StreamExt, stream};
use tracing::warn;

pub(crate) use self::body::{Capture, ProxyBody};
use self::headers::{Forwarding, add_forwarding, content_length, strip_hop_by_hop};
use super::error::EdgeError;
use super::router::Route;
use crate::config::UpstreamConfig;
use crate::upstream::client::{Answer, Outgoing, ResponseBody};
use crate::upstream::{InFlight, Peer, PickContext, UpstreamGroup};

/// The header that carries the request id to the upstream and back to the client.
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The body type of a proxied response: streamed from the upstream, or (for the rare WebSocket
/// tunnel) boxed.
pub(crate) type UpstreamBody = EitherBody<ProxyBody<ResponseBody>, BoxBody>;

/// What the access log learns about the upstream side.
#[derive(Debug, Default, Clone)]
pub(crate) struct UpstreamOutcome {
    /// `host:port` of the last server tried.
    pub(crate) server: Option<String>,
    /// Time from sending the request to the response head.
    pub(crate) header_time: Option<Duration>,
    /// Servers tried.
    pub(crate) attempts: u32,
}

/// The request body as the upstream will get it.
enum RequestBody {
    /// Nothing to send: replayable, so the request may be retried.
    Empty,
    /// Streamed once, with its length when the client gave one.
    Streamed(
        BodySize,
        LocalBoxStream<'static, Result<Bytes, PayloadError>>,
    ),
}

/// Forwards `req` along `route` to a server of its `group`, recording what happened in `outcome`. `shape` has the last word
/// on the request headers (the cache asks for identity, and conditionally).
pub(crate) async fn forward(
    req: &HttpRequest,
    payload: web::Payload,
    route: &Route,
    group: &Arc<UpstreamGroup>,
    request_id: &HeaderValue,
    shape: impl FnOnce(&mut HeaderMap),
    outcome: &mut UpstreamOutcome,
) -> Result<HttpResponse<UpstreamBody>, EdgeError> {
    let config = &group.config;
    let client_ip = req.peer_addr().map(|addr| addr.ip());
    let upgrade = websocket::is_upgrade(req);

    let mut headers = req.headers().clone();
    strip_hop_by_hop(&mut headers, upgrade);
    let forwarding = Forwarding {
        client_ip,
        proto: if super::connections::over_tls(req) {
            "https"
        } else {
            "http"
        },
        host: super::validate::authority_value(req),
    };
    add_forwarding(&mut headers, &forwarding);
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    shape(&mut headers);
    let path = route.upstream_path(req.uri());
    let pick = PickContext {
        client_ip,
        headers: req.headers(),
    };

    // After an upgrade the client's payload is its side of the tunnel, not a body to forward.
    let (mut body, mut tunnel) = if upgrade {
        (Some(RequestBody::Empty), Some(payload))
    } else {
        (Some(classify_body(req, payload, route)), None)
    };
    let retryable =
        !upgrade && is_idempotent(req.method()) && matches!(body, Some(RequestBody::Empty));
    let attempts = if retryable {
        1 + config.retries as usize
    } else {
        1
    };
    let pool = group.pool();
    let mut tried: Vec<usize> = Vec::with_capacity(attempts);
    let mut last_error = None;
    loop {
        // With no server left to try, the client hears why the last attempt failed.
        let Some(index) = group.select(&pick, &tried) else {
            return Err(last_error.unwrap_or(EdgeError::NoHealthyUpstream));
        };
        tried.push(index);
        let peer = &group.peers[index];
        let last = tried.len() >= attempts;

        let mut head = RequestHead::default();
        head.method = req.method().clone();
        head.uri = Uri::from(path.clone());
        head.headers = if last {
            std::mem::take(&mut headers)
        } else {
            headers.clone()
        };
        if !config.preserve_host
            && let Ok(authority) = HeaderValue::from_str(peer.authority().as_str())
        {
            head.headers.insert(HOST, authority);
        }
        if upgrade {
            head.set_connection_type(ConnectionType::Upgrade);
        }
        let outgoing = match body.take() {
            Some(RequestBody::Streamed(size, chunks)) => Outgoing {
                size,
                chunks: Some(chunks),
            },
            _ => {
                body = Some(RequestBody::Empty);
                Outgoing::empty()
            }
        };

        let in_flight = peer.health.start_request();
        let started = Instant::now();
        let result = pool.send(index, &peer.addr, head, outgoing).await;
        outcome.server = Some(peer.addr.clone());
        outcome.attempts = tried.len() as u32;
        record(peer, &result, config);
        match result {
            Ok(Answer::Response(head, body)) => {
                outcome.header_time = Some(started.elapsed());
                return Ok(into_response(
                    head,
                    body,
                    config.body_idle_timeout,
                    in_flight,
                ));
            }
            Ok(Answer::Upgraded(head, io, leftover)) => {
                outcome.header_time = Some(started.elapsed());
                let client = tunnel.take().expect("only upgrade requests are upgraded");
                let response = websocket::relay(head, io, leftover, client, in_flight);
                return Ok(response.map_body(|_, body| EitherBody::right(body)));
            }
            Err(err) if retryable && err.retry_safe() && !last => last_error = Some(err),
            Err(err) => return Err(err),
        }
    }
}

/// Feeds the server's health: a response is a success; a failure the server is to blame for
/// counts towards ejection.
fn record<T>(peer: &Peer, result: &Result<T, EdgeError>, config: &UpstreamConfig) {
    match result {
        Ok(_) => peer.health.record_success(),
        Err(err) if err.counts_against_server() => {
            if peer.health.record_failure(&config.eject) {
                warn!(server = %peer.addr, reason = %err, cooldown = ?config.eject.cooldown,
                    "upstream server ejected after consecutive failures");
            }
        }
        Err(_) => {}
    }
}

/// Sorts the request body into what can be replayed and what must stream once.
fn classify_body(req: &HttpRequest, mut payload: web::Payload, route: &Route) -> RequestBody {
    let headers = req.headers();
    let limited = |body| client_body(body, route.max_body, route.body_timeout);
    if headers.contains_key(TRANSFER_ENCODING) {
        return RequestBody::Streamed(BodySize::Stream, limited(payload.boxed_local()));
    }
    if let Some(length) = content_length(headers) {
        // The length was checked against max_body, and actix reads no more than it says.
        return match length {
            0 => RequestBody::Empty,
            n => RequestBody::Streamed(BodySize::Sized(n), limited(payload.boxed_local())),
        };
    }
    // No framing headers: HTTP/1.1 has no body then, but an HTTP/2 request may still carry DATA
    // frames. A finished stream answers at once, so peek without waiting.
    match payload.next().now_or_never() {
        Some(None) => RequestBody::Empty,
        Some(Some(first)) => RequestBody::Streamed(
            BodySize::Stream,
            limited(stream::iter([first]).chain(payload).boxed_local()),
        ),
        None => RequestBody::Streamed(BodySize::Stream, limited(payload.boxed_local())),
    }
}

/// `body`, counted and timed as it streams: past `max_body` bytes it ends with `Overflow`
/// (413), and after a pause longer than `idle` with a timed-out `Io` error (408). Either way
/// the upstream connection, mid-body, is not reused.
fn client_body(
    body: LocalBoxStream<'static, Result<Bytes, PayloadError>>,
    max_body: u64,
    idle: Duration,
) -> LocalBoxStream<'static, Result<Bytes, PayloadError>> {
    stream::unfold((body, 0u64), move |(mut body, mut seen)| async move {
        let chunk = match tokio::time::timeout(idle, body.next()).await {
            Err(_) => Err(PayloadError::Io(std::io::ErrorKind::TimedOut.into())),
            Ok(None) => return None,
            Ok(Some(chunk)) => chunk.and_then(|chunk| {
                seen += chunk.len() as u64;
                if seen > max_body {
                    return Err(PayloadError::Overflow);
                }
                Ok(chunk)
            }),
        };
        Some((chunk, (body, seen)))
    })
    .boxed_local()
}

/// RFC 9110 §9.2.2.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The client's response: the upstream's status and end-to-end headers (moved, not copied), and
/// its body streamed with the upstream's framing.
fn into_response(
    mut head: ResponseHead,
    body: ResponseBody,
    idle_timeout: Duration,
    in_flight: InFlight,
) -> HttpResponse<UpstreamBody> {
    let status = head.status;
    let mut headers = std::mem::take(&mut head.headers);
    strip_hop_by_hop(&mut headers, false);
    let size = body_size(&headers, status);
    let body = ProxyBody::new(body, size, idle_timeout, in_flight);
    let mut out = HttpResponse::with_body(status, EitherBody::left(body));
    *out.headers_mut() = headers;
    out
}

/// The size actix frames the response with. Responses that never carry a body (1xx, 204, 304)
/// have none whatever they declare; a 304 keeps its `Content-Length` header, as RFC 9110 allows.
/// A HEAD answer declares the GET's length and carries no bytes: actix writes that length and
/// sends no body for HEAD.
fn body_size(headers: &HeaderMap, status: StatusCode) -> BodySize {
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return BodySize::None;
    }
    content_length(headers).map_or(BodySize::Stream, BodySize::Sized)
}
