//! The cache phase, around upstream: the route's cache-rules plugin says whether a request is
//! looked up and under which key, and whether its response is stored and for how long; this
//! phase keeps the entries and answers from them.
//!
//! - A fresh entry whose varying headers match answers at once (`HIT`), with `Age`, and with
//!   `304 Not Modified` to a client whose `If-None-Match` / `If-Modified-Since` it satisfies.
//!   HEAD is answered from GET entries.
//! - Otherwise the request goes upstream (`MISS`), asking for identity; concurrent misses for one
//!   key wait for the first ([`flight`]), so N clients make one upstream request.
//! - A response the plugin says to store is copied as it streams to the client and stored when
//!   its body has ended whole; partial (206), `Vary: *` and oversized responses are not.
//!
//! The memory tier is moka, bounded by bytes (least recently and frequently used entries go
//! first).

mod entry;
mod flight;
mod key;

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BoxBody, EitherBody};
use actix_web::http::header::{
    ACCEPT_ENCODING, AGE, CACHE_CONTROL, CONTENT_LOCATION, CONTENT_RANGE, DATE, ETAG, EXPIRES,
    HeaderMap, HeaderName, HeaderValue, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, VARY,
};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;

use self::entry::{Entry, now_ms};
use self::flight::{FlightGuard, Flights, Join};
use super::compress::{self, Coding, CompressionSettings};
use super::plugin_call;
use super::proxy::{Capture, UpstreamBody};
use crate::config::CacheConfig;
use crate::policy::cache_types::{RequestRule, Response, ResponseRule, Store};
use crate::policy::{Plugin, PluginVersion, Request};

/// The stored responses, kept across reloads.
pub struct ResponseCache {
    memory: moka::sync::Cache<Arc<str>, Arc<Entry>>,
    flights: Arc<Flights>,
}

/// The reloadable settings of the cache phase.
pub struct CacheSettings {
    status_header: Option<HeaderName>,
    max_entry: usize,
    coalesce_timeout: Duration,
}

/// What the cache status header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheStatus {
    Hit,
    Miss,
    Bypass,
}

/// What the lookup decided.
pub(crate) enum Lookup {
    /// Answer with this (a hit, or the 503 of a failed plugin that fails closed).
    Answer(HttpResponse<BoxBody>, Option<CacheStatus>),
    /// Go upstream; with a [`Fill`] when the response may be stored.
    Upstream(CacheStatus, Option<Fill>),
}

/// A miss that may store the upstream's response.
pub(crate) struct Fill {
    key: Arc<str>,
    request: Request,
    version: Arc<PluginVersion>,
    /// Held while fetching, so concurrent misses for the key wait (none after a wait ran out).
    flight: Option<FlightGuard>,
}

impl ResponseCache {
    /// An empty cache bounded as `config` says.
    pub fn new(config: &CacheConfig) -> Self {
        let memory = moka::sync::Cache::builder()
            .max_capacity(config.memory.as_u64())
            .weigher(|key: &Arc<str>, entry: &Arc<Entry>| {
                u32::try_from(key.len() + entry.weight()).unwrap_or(u32::MAX)
            })
            .build();
        Self {
            memory,
            flights: Arc::default(),
        }
    }

    /// Entries and the bytes they weigh (after pending evictions have run).
    pub fn usage(&self) -> (u64, u64) {
        self.memory.run_pending_tasks();
        (self.memory.entry_count(), self.memory.weighted_size())
    }
}

impl CacheSettings {
    /// The settings in `config`.
    pub fn new(config: &CacheConfig) -> Self {
        Self {
            status_header: HeaderName::try_from(config.status_header.as_str()).ok(),
            max_entry: config.max_entry.as_u64() as usize,
            coalesce_timeout: config.coalesce_timeout,
        }
    }

    /// Says what the cache did, in the configured header.
    pub(crate) fn mark<B>(&self, response: &mut HttpResponse<B>, status: CacheStatus) {
        if let Some(name) = &self.status_header {
            let value = match status {
                CacheStatus::Hit => "HIT",
                CacheStatus::Miss => "MISS",
                CacheStatus::Bypass => "BYPASS",
            };
            response
                .headers_mut()
                .insert(name.clone(), HeaderValue::from_static(value));
        }
    }
}

/// Asks `plugin` about `req` and looks it up.
#[allow(clippy::too_many_arguments)] // the phase's inputs, each used once
pub(crate) async fn lookup(
    cache: &ResponseCache,
    settings: &CacheSettings,
    compression: &CompressionSettings,
    plugin: &Plugin,
    req: &HttpRequest,
    request: Request,
    host: &str,
) -> Lookup {
    let version = plugin.current();
    let parts = match version.on_request(&request, Some(req)) {
        Ok(RequestRule::Lookup(parts)) => parts,
        Ok(RequestRule::Bypass) => return Lookup::Upstream(CacheStatus::Bypass, None),
        Err(err) => {
            return match plugin_call::fallback(plugin, "cache-rules", &err) {
                None => Lookup::Upstream(CacheStatus::Bypass, None),
                Some(answer) => Lookup::Answer(answer, None),
            };
        }
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return Lookup::Upstream(CacheStatus::Bypass, None);
    }
    let key: Arc<str> = key::build(&parts, req, host).into();
    let mut waited = false;
    loop {
        if let Some(entry) = cache.memory.get(&key) {
            let now = now_ms();
            if entry.is_fresh(now) && entry.matches(req) {
                let answer = answer(&entry, req, now, compression);
                return Lookup::Answer(answer, Some(CacheStatus::Hit));
            }
        }
        // A HEAD response has no body to store: it goes upstream alone.
        if req.method() == Method::HEAD {
            return Lookup::Upstream(CacheStatus::Miss, None);
        }
        let flight = match (waited, cache.flights.join(&key)) {
            (false, Join::Wait(wait)) => {
                let _ = tokio::time::timeout(settings.coalesce_timeout, wait.done()).await;
                waited = true;
                continue;
            }
            (_, Join::Lead(guard)) => Some(guard),
            (true, Join::Wait(_)) => None,
        };
        let fill = Fill {
            key,
            request,
            version,
            flight,
        };
        return Lookup::Upstream(CacheStatus::Miss, Some(fill));
    }
}

impl Fill {
    /// Stores `response` when the plugin says so: its body is copied as it streams to the client
    /// and the entry is stored once the body has ended whole.
    pub(crate) fn store(
        self,
        cache: &ResponseCache,
        settings: &CacheSettings,
        compression: &CompressionSettings,
        req: &HttpRequest,
        response: HttpResponse<UpstreamBody>,
    ) -> HttpResponse<UpstreamBody> {
        let status = response.status();
        let rule = self.version.on_response(
            &self.request,
            &Response {
                status: status.as_u16(),
            },
            response.headers(),
            Some(req),
        );
        let Ok(ResponseRule::Store(store)) = rule else {
            return response;
        };
        let Some(vary) = varying(&store, response.headers(), req) else {
            return response;
        };
        if store.ttl_ms == 0 || !storable(status, response.headers(), settings.max_entry) {
            return response;
        }
        let headers = response.headers().clone();
        let compressible_type = compression.compressible(&headers, u64::MAX);
        let min_length = compression.min_length();
        let memory = cache.memory.clone();
        let Fill { key, flight, .. } = self;
        let complete = Box::new(move |body: Bytes| {
            let compressible = compressible_type && body.len() as u64 >= min_length;
            let entry = Entry {
                status,
                headers,
                compressible,
                variants: Default::default(),
                body,
                stored_at_ms: now_ms(),
                ttl_ms: store.ttl_ms,
                vary,
                tags: store.tags,
            };
            memory.insert(key, Arc::new(entry));
            // Only now may the waiters look again.
            drop(flight);
        });
        let limit = settings.max_entry;
        response.map_body(|_, body| match body {
            EitherBody::Left { body } => {
                EitherBody::left(body.captured(Capture::new(limit, complete)))
            }
            tunnel => tunnel,
        })
    }
}

/// The request headers the entry varies on, with this request's values: the plugin's list and
/// the response's `Vary`, less `Accept-Encoding` (entries are identity; encodings are the
/// cache's own). `None` for `Vary: *`, which no later request can match.
fn varying(
    store: &Store,
    headers: &HeaderMap,
    req: &HttpRequest,
) -> Option<Vec<(HeaderName, Option<HeaderValue>)>> {
    let from_response = headers
        .get_all(VARY)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty());
    let mut names: Vec<HeaderName> = Vec::new();
    for name in store.vary.iter().map(String::as_str).chain(from_response) {
        if name == "*" {
            return None;
        }
        if let Ok(name) = HeaderName::try_from(name)
            && name != actix_web::http::header::ACCEPT_ENCODING
            && !names.contains(&name)
        {
            names.push(name);
        }
    }
    Some(
        names
            .into_iter()
            .map(|name| {
                let value = req.headers().get(&name).cloned();
                (name, value)
            })
            .collect(),
    )
}

/// Whether a response may be stored whole: not a part of something (206, `Content-Range`), not
/// declared larger than `max_entry`.
fn storable(status: StatusCode, headers: &HeaderMap, max_entry: usize) -> bool {
    let declared = super::proxy::headers::content_length(headers);
    status != StatusCode::PARTIAL_CONTENT
        && !headers.contains_key(CONTENT_RANGE)
        && declared.is_none_or(|length| length <= max_entry as u64)
}

/// The answer from `entry` to `req` at `now_ms`, in the coding the client prefers.
fn answer(
    entry: &Entry,
    req: &HttpRequest,
    now_ms: u64,
    compression: &CompressionSettings,
) -> HttpResponse<BoxBody> {
    let age = HeaderValue::from(entry.age(now_ms).as_secs());
    let coding = if entry.compressible {
        compress::negotiate(req.headers().get(ACCEPT_ENCODING), |_| true)
    } else {
        Coding::Identity
    };
    let mut headers = entry.headers.clone();
    if entry.compressible {
        compress::mark_varying(&mut headers);
    }
    if coding != Coding::Identity {
        compress::mark_encoded(&mut headers, coding);
    }
    if entry.status == StatusCode::OK && not_modified(req, &headers) {
        // RFC 9110 §15.4.5: the fields a 200 would have sent that describe the representation.
        let mut response = HttpResponse::NotModified().finish();
        let out = response.headers_mut();
        for name in [
            CACHE_CONTROL,
            CONTENT_LOCATION,
            DATE,
            ETAG,
            EXPIRES,
            VARY,
            LAST_MODIFIED,
        ] {
            for value in headers.get_all(&name) {
                out.append(name.clone(), value.clone());
            }
        }
        out.insert(AGE, age);
        return response;
    }
    let body = match coding.slot() {
        None => entry.body.clone(),
        Some(slot) => entry.variants[slot]
            .get_or_init(|| compression.compress(&entry.body, coding))
            .clone(),
    };
    let mut response = HttpResponse::with_body(entry.status, BoxBody::new(body));
    *response.headers_mut() = headers;
    response.headers_mut().insert(AGE, age);
    response
}

/// Whether the client's validators match the entry's (RFC 9110 §13.1): `If-None-Match` by weak
/// comparison of entity tags, or, without it, `If-Modified-Since` against `Last-Modified`.
fn not_modified(req: &HttpRequest, stored: &HeaderMap) -> bool {
    let text = |headers: &HeaderMap, name| {
        headers
            .get(&name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    if let Some(wanted) = text(req.headers(), IF_NONE_MATCH) {
        let Some(etag) = text(stored, ETAG) else {
            return false;
        };
        let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_string();
        return wanted.trim() == "*" || wanted.split(',').any(|tag| opaque(tag) == opaque(&etag));
    }
    let since =
        text(req.headers(), IF_MODIFIED_SINCE).and_then(|t| httpdate::parse_http_date(&t).ok());
    let modified = text(stored, LAST_MODIFIED).and_then(|t| httpdate::parse_http_date(&t).ok());
    matches!((since, modified), (Some(since), Some(modified)) if modified <= since)
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn stored() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ETAG, HeaderValue::from_static("\"v1\""));
        headers.insert(
            LAST_MODIFIED,
            HeaderValue::from_static("Sun, 01 Nov 2026 10:00:00 GMT"),
        );
        headers
    }

    fn asks(header: (HeaderName, &'static str)) -> bool {
        not_modified(
            &TestRequest::get().insert_header(header).to_http_request(),
            &stored(),
        )
    }

    #[test]
    fn validators_match_by_weak_etag_or_by_date() {
        assert!(asks((IF_NONE_MATCH, "\"v1\"")));
        assert!(asks((IF_NONE_MATCH, "W/\"v1\"")));
        assert!(asks((IF_NONE_MATCH, "\"v0\", \"v1\"")));
        assert!(asks((IF_NONE_MATCH, "*")));
        assert!(!asks((IF_NONE_MATCH, "\"v2\"")));
        assert!(asks((IF_MODIFIED_SINCE, "Sun, 01 Nov 2026 10:00:00 GMT")));
        assert!(!asks((IF_MODIFIED_SINCE, "Sat, 31 Oct 2026 10:00:00 GMT")));
        assert!(
            !asks((IF_MODIFIED_SINCE, "yesterday")),
            "a bad date is ignored"
        );
        assert!(!not_modified(
            &TestRequest::get().to_http_request(),
            &stored()
        ));
    }

    #[test]
    fn partial_and_oversized_responses_are_not_stored() {
        let mut headers = HeaderMap::new();
        assert!(storable(StatusCode::OK, &headers, 10));
        assert!(!storable(StatusCode::PARTIAL_CONTENT, &headers, 10));
        headers.insert(
            actix_web::http::header::CONTENT_LENGTH,
            HeaderValue::from_static("11"),
        );
        assert!(!storable(StatusCode::OK, &headers, 10));
    }

    #[test]
    fn vary_star_is_never_stored_and_accept_encoding_is_the_caches_own() {
        let store = Store {
            ttl_ms: 1,
            stale_while_revalidate_ms: 0,
            stale_if_error_ms: 0,
            vary: vec!["accept-language".into()],
            tags: Vec::new(),
        };
        let req = TestRequest::get()
            .insert_header(("accept-language", "fr"))
            .to_http_request();
        let mut headers = HeaderMap::new();
        headers.insert(
            VARY,
            HeaderValue::from_static("Accept-Encoding, Accept-Language, Cookie"),
        );
        let vary = varying(&store, &headers, &req).unwrap();
        let names: Vec<&str> = vary.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["accept-language", "cookie"]);
        assert_eq!(vary[0].1, Some(HeaderValue::from_static("fr")));
        headers.insert(VARY, HeaderValue::from_static("*"));
        assert!(varying(&store, &headers, &req).is_none());
    }
}
