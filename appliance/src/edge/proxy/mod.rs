//! The upstream phase: send the request to a server of the route's group and stream the answer
//! back. Bodies stream both ways and are never buffered whole.
//!
//! Retries: only idempotent requests without a body, only after failures that mean the server
//! cannot have started on the request (connect errors, a broken connection before any response),
//! each to a server not tried yet, at most `retries` times.

mod body;
pub(crate) mod headers;
mod websocket;

use std::time::{Duration, Instant};

use actix_web::body::{BodyStream, BoxBody, EitherBody, SizedStream};
use actix_web::http::header::{
    CONTENT_LENGTH, HOST, HeaderMap, HeaderName, HeaderValue, TRANSFER_ENCODING,
};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::{FutureExt, StreamExt, stream};
use tracing::warn;

use self::body::ProxyBody;
use self::headers::{Forwarding, add_forwarding, strip_hop_by_hop};
use super::error::EdgeError;
use super::router::Route;
use crate::upstream::PickContext;

/// The header that carries the request id to the upstream and back to the client.
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The body type of a proxied response: streamed from the upstream, or (for the rare WebSocket
/// tunnel) boxed.
pub(crate) type UpstreamBody = EitherBody<ProxyBody<awc::ClientResponse>, BoxBody>;

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
    /// `Content-Length` bytes, streamed.
    Sized(u64, web::Payload),
    /// Unknown length (chunked, or HTTP/2 without `Content-Length`), streamed.
    Stream(BoxBody),
}

/// Forwards `req` along `route`, recording what happened in `outcome`.
pub(crate) async fn forward(
    req: &HttpRequest,
    payload: web::Payload,
    route: &Route,
    request_id: &HeaderValue,
    outcome: &mut UpstreamOutcome,
) -> Result<HttpResponse<UpstreamBody>, EdgeError> {
    let group = &route.group;
    let config = &group.config;
    let client_ip = req.peer_addr().map(|addr| addr.ip());
    let upgrade = websocket::is_upgrade(req);

    let mut headers = req.headers().clone();
    strip_hop_by_hop(&mut headers, upgrade);
    let forwarding = Forwarding {
        client_ip,
        proto: if req.app_config().secure() {
            "https"
        } else {
            "http"
        },
        host: super::validate::authority_value(req),
    };
    add_forwarding(&mut headers, &forwarding);
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    let path = route.upstream_path(req.uri());
    let pick = PickContext {
        client_ip,
        headers: req.headers(),
    };

    if upgrade {
        let index = group
            .select(&pick, &[])
            .ok_or(EdgeError::NoHealthyUpstream)?;
        let peer = &group.peers[index];
        set_host(
            &mut headers,
            config.preserve_host,
            peer.authority().as_str(),
        );
        outcome.server = Some(peer.addr.clone());
        outcome.attempts = 1;
        let target = websocket::Target {
            peer,
            path,
            connect_timeout: config.connect_timeout,
            response_header_timeout: config.response_header_timeout,
        };
        let result =
            websocket::tunnel(req, payload, &headers, target, peer.health.start_request()).await;
        record(peer, &result, config);
        return result.map(|res| res.map_body(|_, body| EitherBody::right(BoxBody::new(body))));
    }

    let mut body = Some(classify_body(req, payload));
    let retryable = is_idempotent(req.method()) && matches!(body, Some(RequestBody::Empty));
    let attempts = if retryable {
        1 + config.retries as usize
    } else {
        1
    };
    let client = group.client();
    let mut tried: Vec<usize> = Vec::with_capacity(attempts);
    loop {
        let Some(index) = group.select(&pick, &tried) else {
            return Err(EdgeError::NoHealthyUpstream);
        };
        tried.push(index);
        let peer = &group.peers[index];
        let last = tried.len() >= attempts;
        let mut request = client.request(req.method().clone(), peer.uri(path.clone()));
        *request.headers_mut() = if last {
            std::mem::take(&mut headers)
        } else {
            headers.clone()
        };
        set_host(
            request.headers_mut(),
            config.preserve_host,
            peer.authority().as_str(),
        );

        let in_flight = peer.health.start_request();
        let started = Instant::now();
        let sent = match body.take().unwrap_or(RequestBody::Empty) {
            RequestBody::Empty => {
                // Keep the body replayable for the next attempt.
                body = Some(RequestBody::Empty);
                request.send()
            }
            RequestBody::Sized(length, payload) => {
                request.send_body(SizedStream::new(length, payload))
            }
            RequestBody::Stream(stream) => request.send_body(stream),
        };
        let result = sent.await.map_err(EdgeError::from);
        outcome.server = Some(peer.addr.clone());
        outcome.attempts = tried.len() as u32;
        record(peer, &result, config);
        match result {
            Ok(response) => {
                outcome.header_time = Some(started.elapsed());
                return Ok(into_response(response, config.body_idle_timeout, in_flight));
            }
            Err(err) if retryable && err.retry_safe() && !last => continue,
            Err(err) => return Err(err),
        }
    }
}

/// Feeds the server's health: a response is a success, a connect failure or timeout counts
/// towards ejection.
fn record<T>(
    peer: &crate::upstream::Peer,
    result: &Result<T, EdgeError>,
    config: &crate::config::UpstreamConfig,
) {
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

fn set_host(headers: &mut HeaderMap, preserve_host: bool, authority: &str) {
    if !preserve_host && let Ok(value) = HeaderValue::from_str(authority) {
        headers.insert(HOST, value);
    }
}

/// Sorts the request body into what can be replayed and what must stream once.
fn classify_body(req: &HttpRequest, mut payload: web::Payload) -> RequestBody {
    let headers = req.headers();
    if headers.contains_key(TRANSFER_ENCODING) {
        return RequestBody::Stream(BoxBody::new(BodyStream::new(payload)));
    }
    if let Some(length) = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    {
        return if length == 0 {
            RequestBody::Empty
        } else {
            RequestBody::Sized(length, payload)
        };
    }
    // No framing headers: HTTP/1.1 has no body then, but an HTTP/2 request may still carry DATA
    // frames. A finished stream answers at once, so peek without waiting.
    match payload.next().now_or_never() {
        Some(None) => RequestBody::Empty,
        Some(Some(first)) => RequestBody::Stream(BoxBody::new(BodyStream::new(
            stream::iter([first]).chain(payload),
        ))),
        None => RequestBody::Stream(BoxBody::new(BodyStream::new(payload))),
    }
}

/// RFC 9110 §9.2.2.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The client's response: the upstream's status and end-to-end headers (moved, not copied), and
/// its body streamed with the upstream's length.
fn into_response(
    response: awc::ClientResponse,
    idle_timeout: Duration,
    in_flight: crate::upstream::InFlight,
) -> HttpResponse<UpstreamBody> {
    let status = response.status();
    let mut headers = HeaderMap::new();
    let response = response.map_body(|head, payload| {
        std::mem::swap(&mut headers, &mut head.headers);
        payload
    });
    strip_hop_by_hop(&mut headers, false);
    let length = body_length(&headers, status);
    let body = ProxyBody::new(response, length, idle_timeout, in_flight);
    let mut out = HttpResponse::with_body(status, EitherBody::left(body));
    *out.headers_mut() = headers;
    out
}

/// The response body's length, when the upstream framed it with `Content-Length`. Responses
/// that never carry a body (1xx, 204, 304) are empty whatever they declare; a 304 keeps its
/// declared `Content-Length` header, as RFC 9110 allows. A HEAD answer declares the GET's length
/// and carries no bytes: actix writes that length and sends no body for HEAD.
fn body_length(headers: &HeaderMap, status: StatusCode) -> Option<u64> {
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Some(0);
    }
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse().ok())
}
