//! What the phases that call policy plugins (rate limit, cache) share: the request as plugins
//! see it, and how a failing plugin is reported and answered.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::body::BoxBody;
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use tracing::warn;

use super::client_ip::ip_text;
use crate::policy::{CallError, Fallback, Plugin, Request};
use crate::upstream::clock_ms;

/// `req` (from `client_ip`, sent to `host`, matched by `route`) as a plugin sees it.
pub(crate) fn request(
    req: &HttpRequest,
    client_ip: Option<IpAddr>,
    host: &str,
    route: &str,
) -> Request {
    Request {
        method: req.method().as_str().to_string(),
        path: req.path().to_string(),
        query: req.query_string().to_string(),
        host: host.to_string(),
        route: route.to_string(),
        client_ip: client_ip.map(ip_text).unwrap_or_default(),
    }
}

/// Reports a failed call of `plugin` (in the `phase` phase) and says what its fallback does:
/// `None` goes on as if the plugin were not there, `Some` is the 503 to answer.
pub(crate) fn fallback(
    plugin: &Plugin,
    phase: &str,
    err: &CallError,
) -> Option<HttpResponse<BoxBody>> {
    warn_rarely(&format!(
        "{phase} plugin {} {err}; applying its fallback ({:?})",
        plugin.current().name(),
        plugin.fallback
    ));
    match plugin.fallback {
        Fallback::Open => None,
        Fallback::Closed => Some(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("503 Service Unavailable: the {phase} policy failed\n"),
        )),
    }
}

/// A short plain-text answer.
pub(crate) fn plain(status: StatusCode, body: String) -> HttpResponse<BoxBody> {
    let mut response = HttpResponse::with_body(status, body).map_into_boxed_body();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A failing plugin fails on every request: log it at most once a second.
fn warn_rarely(message: &str) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = clock_ms();
    let last = LAST.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 1000
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        warn!("{message}");
    }
}
