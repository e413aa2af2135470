//! The cache phase, around upstream: the route's cache-rules plugin says whether a request is
//! looked up and under which key, and whether its response is stored and for how long; this
//! phase keeps the entries and answers from them.
//!
//! - A fresh entry whose varying headers match answers at once (`HIT`), with `Age`, and with
//!   `304 Not Modified` to a client whose `If-None-Match` / `If-Modified-Since` it satisfies.
//!   HEAD is answered from GET entries.
//! - A stale entry within its `stale-while-revalidate` window answers at once (`STALE`) while
//!   one background request refreshes it.
//! - Otherwise the request goes upstream (`MISS`), asking for identity, and conditionally when
//!   a stale entry has validators: a `304` refreshes the entry (`REVALIDATED`). When the
//!   upstream fails or answers 5xx, a stale entry within its `stale-if-error` window answers
//!   (`STALE`). Concurrent misses for one key wait for the first ([`flight`]), so N clients make
//!   one upstream request.
//! - A response the plugin says to store is copied as it streams to the client and stored when
//!   its body has ended whole; partial (206), `Vary: *` and oversized responses are not.
//!
//! Tiers: memory (moka, bounded by bytes; the least recently and frequently used entries go
//! first) in front of the state store ([`disk`]), which survives restarts, in front of Redis
//! ([`shared`]), which several instances share.

mod directives;
mod disk;
mod entry;
mod flight;
mod key;
mod persist;
mod purge;
mod shared;
mod stats;
mod warm;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::body::{BoxBody, EitherBody};
use actix_web::http::header::{
    ACCEPT_ENCODING, AGE, CACHE_CONTROL, CONTENT_LOCATION, CONTENT_RANGE, DATE, ETAG, EXPIRES,
    HeaderMap, HeaderName, HeaderValue, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE,
    IF_UNMODIFIED_SINCE, LAST_MODIFIED, RANGE, VARY,
};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use tracing::error;

use self::directives::ClientDirectives;
use self::disk::{DiskTier, Read};
use self::entry::{Entry, Freshness, UntilUseless, now_ms};
use self::flight::{FlightGuard, Flights, Join};
pub use self::purge::{Purge, PurgeReport};
use self::shared::SharedTier;
use self::stats::CacheStats;
pub use self::stats::{CacheReport, KeyReport, TierReport};
pub use self::warm::WarmTarget;
pub(crate) use self::warm::run as warm;
use super::compress::{self, Coding, CompressionSettings};
use super::error::EdgeError;
use super::plugin_call;
use super::proxy::{Capture, UpstreamBody};
use crate::config::CacheConfig;
use crate::policy::cache_types::{RequestRule, Response, ResponseRule, Store};
use crate::policy::{Plugin, PluginVersion, Request};
use crate::redis::RedisLink;
use crate::store::Store as StateStore;

/// The stored responses, kept across reloads.
pub struct ResponseCache {
    tiers: Tiers,
    flights: Arc<Flights>,
    stats: Arc<CacheStats>,
    memory_bound: u64,
    disk_bound: u64,
}

/// Where entries live: memory in front, then the persistent tier, then the shared tier (each
/// when configured).
#[derive(Clone)]
struct Tiers {
    memory: moka::sync::Cache<Arc<str>, Arc<Entry>>,
    disk: Option<Arc<DiskTier>>,
    shared: Option<Arc<SharedTier>>,
}

/// The reloadable settings of the cache phase.
pub struct CacheSettings {
    status_header: Option<HeaderName>,
    max_entry: usize,
    coalesce_timeout: Duration,
    /// Whether clients' `Cache-Control` / `Pragma` limit what the cache answers with.
    client_directives: bool,
    /// Pages to warm, and how often.
    warm: Arc<[WarmTarget]>,
    warm_interval: Duration,
}

/// What the cache status header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheStatus {
    Hit,
    Stale,
    Revalidated,
    Miss,
    Bypass,
}

impl CacheStatus {
    /// Its name in metrics.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Stale => "stale",
            Self::Revalidated => "revalidated",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
        }
    }
}

/// What the lookup decided.
pub(crate) enum Lookup {
    /// Answer with this (a hit, a stale entry, or the 503 of a failed plugin that fails
    /// closed); with a [`Fill`] when the entry is to be refreshed in the background.
    Answer(HttpResponse<BoxBody>, Option<CacheStatus>, Option<Fill>),
    /// Go upstream; with a [`Fill`] when the response may be stored.
    Upstream(CacheStatus, Option<Fill>),
}

/// A request to the upstream whose response may be stored.
pub(crate) struct Fill {
    key: Arc<str>,
    host: String,
    request: Request,
    version: Arc<PluginVersion>,
    /// Held while fetching, so concurrent misses for the key wait (none after a wait ran out).
    flight: Option<FlightGuard>,
    /// The stale entry this request may revalidate, or answer with when the upstream fails.
    stale: Option<Arc<Entry>>,
    /// Whether the answer may be stored (not when the client said `no-store`).
    storable: bool,
}

/// How a [`Fill`] ended.
#[allow(clippy::large_enum_variant)] // made once per request and matched at once
pub(crate) enum Settled {
    /// Answer from the cache (revalidated, or stale because the upstream failed).
    Answer(HttpResponse<BoxBody>, CacheStatus),
    /// Pass the upstream's outcome on.
    Forward(Result<HttpResponse<UpstreamBody>, EdgeError>),
}

impl ResponseCache {
    /// An empty memory tier bounded as `config` says, in front of the persistent tier in
    /// `store` (when given and `cache.disk` is not zero), in front of the shared tier in Redis
    /// (when a `redis` link is given).
    pub(crate) fn new(
        config: &CacheConfig,
        store: Option<Arc<dyn StateStore>>,
        redis: Option<Arc<RedisLink>>,
    ) -> Self {
        let memory = moka::sync::Cache::builder()
            .max_capacity(config.memory.as_u64())
            .weigher(|key: &Arc<str>, entry: &Arc<Entry>| {
                u32::try_from(key.len() + entry.weight()).unwrap_or(u32::MAX)
            })
            .expire_after(UntilUseless)
            .build();
        let disk_bound = config.disk.as_u64();
        let disk = store
            .filter(|_| disk_bound > 0)
            .map(|store| Arc::new(DiskTier::open(store, disk_bound)));
        let local = Tiers {
            memory,
            disk,
            shared: None,
        };
        let shared = redis
            .and_then(|link| {
                SharedTier::start(link, local.clone())
                    .map_err(|err| error!(error = %err, "the shared cache tier cannot start; local tiers only"))
                    .ok()
            })
            .map(Arc::new);
        Self {
            tiers: Tiers { shared, ..local },
            flights: Arc::default(),
            stats: Arc::default(),
            memory_bound: config.memory.as_u64(),
            disk_bound,
        }
    }

    /// Entries and the bytes they weigh in memory (after pending evictions have run).
    pub fn usage(&self) -> (u64, u64) {
        let memory = &self.tiers.memory;
        memory.run_pending_tasks();
        (memory.entry_count(), memory.weighted_size())
    }

    /// Whether the shared tier is configured, and reachable now.
    pub fn shared_status(&self) -> Option<bool> {
        self.tiers
            .shared
            .as_ref()
            .map(|shared| shared.is_connected())
    }

    /// The `limit` entries in memory that answered most, most first.
    pub fn top_keys(&self, limit: usize) -> Vec<KeyReport> {
        let now = now_ms();
        let mut keys: Vec<KeyReport> = self
            .tiers
            .memory
            .iter()
            .map(|(key, entry)| KeyReport {
                key: key.to_string(),
                host: entry.host.clone(),
                bytes: entry.body.len() as u64,
                hits: entry.hits.load(Ordering::Relaxed),
                age_seconds: entry.age(now).as_secs(),
                tags: entry.fresh.tags.clone(),
            })
            .collect();
        keys.sort_by(|a, b| b.hits.cmp(&a.hits).then_with(|| a.key.cmp(&b.key)));
        keys.truncate(limit);
        keys
    }

    /// Sizes by tier and what the cache has done since start.
    pub fn report(&self) -> CacheReport {
        let (entries, bytes) = self.usage();
        let memory = TierReport {
            entries,
            bytes,
            bound: self.memory_bound,
        };
        let disk = self.tiers.disk.as_ref().map(|disk| {
            let (entries, bytes) = disk.usage();
            TierReport {
                entries,
                bytes,
                bound: self.disk_bound,
            }
        });
        self.stats.report(memory, disk, self.shared_status())
    }

    /// Drops what `purge` names from every tier, and from every instance sharing the Redis
    /// tier. The local tiers are purged even when Redis cannot be.
    pub async fn purge(&self, purge: &Purge) -> PurgeReport {
        let mut gone = self.tiers.purge_local(purge);
        let shared = match &self.tiers.shared {
            None => None,
            Some(shared) => Some(match shared.purge(purge).await {
                Ok(keys) => {
                    gone.extend(keys.into_iter().map(Arc::from));
                    "ok".to_string()
                }
                Err(err) => format!("failed: {err}"),
            }),
        };
        PurgeReport {
            purged: gone.len(),
            shared,
        }
    }

    /// Waits until the persistent tier has every entry stored so far (before the state store is
    /// flushed at shutdown).
    pub fn flush(&self) {
        if let Some(disk) = &self.tiers.disk {
            disk.flush(Duration::from_secs(10));
        }
    }

    fn upstream(&self, status: CacheStatus, fill: Option<Fill>) -> Lookup {
        self.stats.count(status);
        Lookup::Upstream(status, fill)
    }

    fn answered(
        &self,
        answer: HttpResponse<BoxBody>,
        status: CacheStatus,
        refresh: Option<Fill>,
    ) -> Lookup {
        self.stats.count(status);
        Lookup::Answer(answer, Some(status), refresh)
    }

    fn settled(&self, answer: HttpResponse<BoxBody>, status: CacheStatus) -> Settled {
        self.stats.count(status);
        Settled::Answer(answer, status)
    }

    /// The entry under `key`: from memory, or else from the persistent tier, or else from the
    /// shared tier (then kept in memory).
    async fn get(&self, key: &Arc<str>) -> Option<Arc<Entry>> {
        if let Some(entry) = self.tiers.memory.get(key) {
            return Some(entry);
        }
        // Boxed: the lower tiers' reads (sled, Redis) are large futures, and inline they would
        // grow every request's state, which actix allocates and moves whole per request.
        Box::pin(self.get_below_memory(key)).await
    }

    /// Reads the persistent and shared tiers, and keeps what they had in memory.
    async fn get_below_memory(&self, key: &Arc<str>) -> Option<Arc<Entry>> {
        let mut found = None;
        if let Some(disk) = &self.tiers.disk {
            match disk.get(key).await {
                Read::Found(entry) => found = Some(entry),
                Read::Corrupt => self.stats.count_corrupt(),
                Read::Absent => {}
            }
        }
        if found.is_none()
            && let Some(shared) = &self.tiers.shared
        {
            match shared.get(key).await {
                Some(Ok(entry)) => found = Some(Arc::new(entry)),
                Some(Err(_)) => self.stats.count_corrupt(),
                None => {}
            }
        }
        let entry = found?;
        self.tiers
            .memory
            .insert(Arc::clone(key), Arc::clone(&entry));
        Some(entry)
    }
}

impl Tiers {
    fn insert(&self, key: Arc<str>, entry: Arc<Entry>) {
        if let Some(disk) = &self.disk {
            disk.put(Arc::clone(&key), Arc::clone(&entry));
        }
        if let Some(shared) = &self.shared {
            shared.put(&key, Arc::clone(&entry));
        }
        self.memory.insert(key, entry);
    }

    /// Drops what `purge` names from the memory and persistent tiers; returns their keys.
    fn purge_local(&self, purge: &Purge) -> BTreeSet<Arc<str>> {
        let mut gone: BTreeSet<Arc<str>> = BTreeSet::new();
        for (key, entry) in self.memory.iter() {
            if purge.matches(&key, &entry.host, &entry.fresh.tags) {
                self.memory.invalidate(&*key);
                gone.insert(Arc::clone(&key));
            }
        }
        if let Some(disk) = &self.disk {
            for (key, indexed) in disk.entries() {
                if purge.matches(&key, &indexed.host, &indexed.tags) {
                    disk.remove(&key);
                    gone.insert(Arc::clone(&key));
                }
            }
        }
        gone
    }
}

impl CacheSettings {
    /// The settings in `config`.
    pub fn new(config: &CacheConfig) -> Self {
        Self {
            status_header: HeaderName::try_from(config.status_header.as_str()).ok(),
            max_entry: config.max_entry.as_u64() as usize,
            coalesce_timeout: config.coalesce_timeout,
            client_directives: config.client_directives,
            warm: config
                .warm
                .iter()
                .filter_map(|target| WarmTarget::parse(target).ok())
                .collect(),
            warm_interval: config.warm_interval,
        }
    }

    /// Says what the cache did, in the configured header and to the finish phase (metrics).
    pub(crate) fn mark<B>(&self, response: &mut HttpResponse<B>, status: CacheStatus) {
        if let Some(name) = &self.status_header {
            let value = match status {
                CacheStatus::Hit => "HIT",
                CacheStatus::Stale => "STALE",
                CacheStatus::Revalidated => "REVALIDATED",
                CacheStatus::Miss => "MISS",
                CacheStatus::Bypass => "BYPASS",
            };
            response
                .headers_mut()
                .insert(name.clone(), HeaderValue::from_static(value));
        }
        response.extensions_mut().insert(status);
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
        Ok(RequestRule::Bypass) => return cache.upstream(CacheStatus::Bypass, None),
        Err(err) => {
            return match plugin_call::fallback(plugin, "cache-rules", &err) {
                None => cache.upstream(CacheStatus::Bypass, None),
                Some(answer) => Lookup::Answer(answer, None, None),
            };
        }
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return cache.upstream(CacheStatus::Bypass, None);
    }
    let key: Arc<str> = key::build(&parts, req, host).into();
    let asks = if settings.client_directives {
        ClientDirectives::of(req.headers())
    } else {
        ClientDirectives::default()
    };
    let fill = |flight, stale| Fill {
        key: Arc::clone(&key),
        host: host.to_string(),
        request: request.clone(),
        version: Arc::clone(&version),
        flight,
        stale,
        storable: !asks.no_store,
    };
    let head = req.method() == Method::HEAD;
    let mut waited = false;
    loop {
        let now = now_ms();
        let stale = match cache.get(&key).await {
            Some(entry) if entry.matches(req) => {
                let age = entry.age(now).as_millis() as u64;
                if entry.is_fresh(now) && asks.accept_fresh(age, entry.fresh_for_ms(now)) {
                    let answer = answer(&entry, req, now, compression, &cache.stats);
                    return cache.answered(answer, CacheStatus::Hit, None);
                }
                let stale_ok = !entry.is_fresh(now)
                    && (asks.accept_stale(age, entry.stale_for_ms(now))
                        || (asks.allow_background_revalidation()
                            && entry.may_answer_while_revalidating(now)));
                if stale_ok {
                    // One refresh at a time; a HEAD cannot refresh a body.
                    let refresh = match cache.flights.join(&key) {
                        Join::Lead(guard) if !head => Some(fill(Some(guard), Some(entry.clone()))),
                        _ => None,
                    };
                    let answer = answer(&entry, req, now, compression, &cache.stats);
                    return cache.answered(answer, CacheStatus::Stale, refresh);
                }
                Some(entry)
            }
            _ => None,
        };
        if asks.only_if_cached {
            let answer = HttpResponse::GatewayTimeout()
                .content_type("text/plain; charset=utf-8")
                .body("not in the cache (only-if-cached)\n");
            return cache.answered(answer, CacheStatus::Miss, None);
        }
        // A HEAD response has no body to store: it goes upstream alone.
        if head {
            return cache.upstream(CacheStatus::Miss, None);
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
        return cache.upstream(CacheStatus::Miss, Some(fill(flight, stale)));
    }
}

impl Fill {
    /// The host the request named.
    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// Shapes the upstream request: identity (the cache encodes itself), none of the client's
    /// own conditions or ranges (the whole representation is wanted), and the stale entry's
    /// validators, so an unchanged resource costs a 304 instead of a body.
    pub(crate) fn shape(&self, headers: &mut HeaderMap) {
        // An absent Accept-Encoding would mean "any coding" (RFC 9110 §12.5.3).
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        for name in [
            IF_NONE_MATCH,
            IF_MODIFIED_SINCE,
            IF_MATCH,
            IF_UNMODIFIED_SINCE,
            IF_RANGE,
            RANGE,
        ] {
            headers.remove(name);
        }
        if let Some(stale) = &self.stale {
            for (validator, condition) in
                [(ETAG, IF_NONE_MATCH), (LAST_MODIFIED, IF_MODIFIED_SINCE)]
            {
                if let Some(value) = stale.headers.get(validator) {
                    headers.insert(condition, value.clone());
                }
            }
        }
    }

    /// Settles the upstream's `outcome`: a failure or a 5xx is answered from a stale entry
    /// within its `stale-if-error` window; a 304 refreshes the stale entry and answers from it;
    /// any other response streams on, stored when the plugin says so.
    pub(crate) fn settle(
        self,
        cache: &ResponseCache,
        settings: &CacheSettings,
        compression: &CompressionSettings,
        req: &HttpRequest,
        outcome: Result<HttpResponse<UpstreamBody>, EdgeError>,
    ) -> Settled {
        let now = now_ms();
        let failed = outcome
            .as_ref()
            .map_or(true, |response| response.status().is_server_error());
        if let Some(stale) = self.stale.as_ref().filter(|_| failed)
            && stale.may_answer_on_error(now)
        {
            let answer = answer(stale, req, now, compression, &cache.stats);
            return cache.settled(answer, CacheStatus::Stale);
        }
        match outcome {
            Ok(response) if response.status() == StatusCode::NOT_MODIFIED => {
                match self.stale.clone() {
                    Some(stale) => {
                        let entry = self.revalidated(cache, &stale, response.headers(), req, now);
                        let answer = answer(&entry, req, now, compression, &cache.stats);
                        cache.settled(answer, CacheStatus::Revalidated)
                    }
                    None => Settled::Forward(Ok(response)),
                }
            }
            Ok(response) => {
                Settled::Forward(Ok(self.store(cache, settings, compression, req, response)))
            }
            Err(err) => Settled::Forward(Err(err)),
        }
    }

    /// `stale` refreshed by a 304's `headers`, stored for as long as the plugin now says.
    fn revalidated(
        self,
        cache: &ResponseCache,
        stale: &Entry,
        headers: &HeaderMap,
        req: &HttpRequest,
        now: u64,
    ) -> Arc<Entry> {
        let mut entry = stale.refreshed(headers, now);
        let rule = self.version.on_response(
            &self.request,
            &Response {
                status: entry.status.as_u16(),
            },
            &entry.headers,
            Some(req),
        );
        let store = match rule {
            Ok(ResponseRule::Store(store)) if store.ttl_ms > 0 => Some(store),
            _ => None,
        };
        if let Some(store) = &store {
            entry.fresh = Freshness::of(store);
        }
        let entry = Arc::new(entry);
        if store.is_some() && self.storable {
            cache.tiers.insert(self.key, Arc::clone(&entry));
        }
        entry
    }

    /// Stores `response` when the plugin says so: its body is copied as it streams to the client
    /// and the entry is stored once the body has ended whole.
    fn store(
        self,
        cache: &ResponseCache,
        settings: &CacheSettings,
        compression: &CompressionSettings,
        req: &HttpRequest,
        response: HttpResponse<UpstreamBody>,
    ) -> HttpResponse<UpstreamBody> {
        if !self.storable {
            return response;
        }
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
        let tiers = cache.tiers.clone();
        let Fill {
            key, flight, host, ..
        } = self;
        let complete = Box::new(move |body: Bytes| {
            let compressible = compressible_type && body.len() as u64 >= min_length;
            let entry = Entry {
                status,
                headers,
                compressible,
                variants: Default::default(),
                hits: Default::default(),
                body,
                stored_at_ms: now_ms(),
                fresh: Freshness::of(&store),
                host,
                vary,
            };
            tiers.insert(key, Arc::new(entry));
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
    stats: &CacheStats,
) -> HttpResponse<BoxBody> {
    entry.hits.fetch_add(1, Ordering::Relaxed);
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
    if req.method() != Method::HEAD {
        stats.served(body.len(), entry.body.len());
    }
    let mut response = HttpResponse::with_body(entry.status, BoxBody::new(body));
    *response.headers_mut() = headers;
    response.headers_mut().insert(AGE, age);
    if entry.compressible {
        // For the metrics: the coding this compressible answer went out in.
        response.extensions_mut().insert(coding);
    }
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
