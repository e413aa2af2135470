//! The edge: the public HTTP(S) listeners and the phases every request goes through.
//!
//! Requests flow down the phases, responses flow back up. The order is the contract:
//!
//! | # | phase | module | what it does (default) |
//! |---|-------|--------|------------------------|
//! | 1 | validate | [`validate`] | refuses what must not reach routing: a foreign absolute-form target (400), a target or header section over the limits (414, 431), a malformed path or one climbing above the root (400); actix-http already refused malformed heads (400), oversized heads (431) and smuggling attempts (400). After routing: addresses the route refuses (403), encoded slashes or paths and queries that are not UTF-8 where refused (400), declared bodies over the route's limit (413), methods the route refuses (405), CORS preflights (answered). Streamed bodies are counted (413) and timed (408) as they go upstream |
//! | 2 | route | [`router`] | host, then longest path prefix; no match is 404 |
//! | 3 | rate limit | [`ratelimit`] | the route's rate-limit plugin decides the key and quota, GCRA counts (in Redis when shared); over the quota is 429, uncountable with `when_redis_down = "closed"` is 503 (no plugin: nothing) |
//! | 4 | cache | [`cache`] | the route's cache-rules plugin decides the key; a fresh entry answers; a miss goes on, coalesced, and its response may be stored (no plugin: nothing) |
//! | 5 | upstream | [`proxy`] | picks a server (balancing, health, ejection), forwards with timeouts and bounded retries, streams bodies both ways |
//! | 6 | finish | [`finish`] | when the response body has ended: the metrics, the access-log line, and the request leaves the in-flight count the drain waits for |
//!
//! On the way back up: compression ([`compress`]), then, for every routed answer, browser
//! caching ([`browser_cache`]), security headers ([`security_headers`]) and CORS fields
//! ([`cors`]). Static-file routes ([`files`]) answer from disk in place of the cache and upstream
//! phases.
//!
//! This module owns the request path and must not block: no file or store I/O per request.

pub mod browser_cache;
pub mod cache;
pub mod client_ip;
pub mod compress;
pub mod connections;
pub mod cors;
pub mod error;
pub mod files;
pub mod finish;
mod plugin_call;
pub(crate) mod proxy;
pub mod ratelimit;
pub(crate) mod redirect;
pub mod request_id;
pub mod router;
pub mod security_headers;
pub(crate) mod server;
mod spans;
pub mod tls;
pub mod validate;

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::body::BoxBody;
use actix_web::dev::Extensions;
use actix_web::http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, web};
use arc_swap::ArcSwap;
use opentelemetry::trace::{SpanKind, TraceContextExt};
use tracing::error;

use self::cache::{CacheSettings, CacheStatus, Fill, Lookup, ResponseCache, Settled};
use self::client_ip::Networks;
use self::compress::CompressionSettings;
use self::connections::{Caps, ConnectionSlot, Connections};
use self::error::EdgeError;
use self::finish::{ActiveRequests, RequestNotes};
use self::proxy::{UpstreamBody, UpstreamOutcome, X_REQUEST_ID};
use self::ratelimit::{LimitSettings, Limiter, Outcome};
use self::request_id::RequestIds;
use self::router::{Backend, HostPattern, Router};
use self::spans::phase;
use self::validate::RequestLimits;
use crate::config::{AccessLogFormat, Config};
use crate::monitor::metrics::Metrics;
use crate::policy::Plugins;
use crate::redis::RedisLink;
use crate::store::Store;
use crate::telemetry::traces::Traces;
use crate::upstream::{UpstreamGroup, build_groups};

/// What the edge workers share. The reloadable part is swapped whole on reload, so a request sees
/// one consistent config from start to end.
pub struct EdgeState {
    runtime: ArcSwap<EdgeRuntime>,
    ids: RequestIds,
    active: Arc<ActiveRequests>,
    /// Rate-limit counts, kept across reloads.
    limiter: Limiter,
    /// Stored responses, kept across reloads.
    cache: ResponseCache,
    /// Open client connections.
    connections: Arc<Connections>,
    /// What the edge has done, for `/metrics`.
    metrics: Arc<Metrics>,
    /// Request traces over OTLP (read at start).
    traces: Option<Arc<Traces>>,
    /// The PostgreSQL pooler, when it runs: the admin API and the metrics read it from here.
    pooler: std::sync::OnceLock<crate::pool::PoolerView>,
    /// The ACME sites, when any: their HTTP-01 challenges are answered on every listener.
    acme: std::sync::OnceLock<Arc<crate::acme::Acme>>,
}

/// One config generation of the edge.
pub struct EdgeRuntime {
    /// Routes, in match order.
    pub router: Router,
    /// Upstream groups by name.
    pub groups: BTreeMap<String, Arc<UpstreamGroup>>,
    /// Liveness path answered on the edge; empty for none.
    pub health_path: String,
    /// Access log format.
    pub access_log: AccessLogFormat,
    /// Policy plugins by name.
    pub plugins: Plugins,
    /// How the cache phase behaves.
    pub cache: CacheSettings,
    /// What is compressed, and how hard.
    pub compression: CompressionSettings,
    /// Limits on request targets and header sections.
    limits: RequestLimits,
    /// How the rate-limit phase answers.
    rate_limits: LimitSettings,
    /// Host names answered for; empty for any.
    allowed_hosts: Vec<HostPattern>,
    /// Proxies whose `X-Forwarded-For` is believed.
    trusted_proxies: Networks,
    /// Connection caps.
    caps: Caps,
}

impl EdgeRuntime {
    /// Whether access-log lines are written (the format is not off and a writer is installed).
    pub(crate) fn logs_access(&self) -> bool {
        self.access_log != AccessLogFormat::Off && crate::telemetry::access_log_enabled()
    }

    /// The generation for `config` with `plugins`, and the upstream groups that did not exist
    /// before.
    fn build(
        config: &Config,
        plugins: Plugins,
        previous: Option<&EdgeRuntime>,
        metrics: &Metrics,
    ) -> (Self, Vec<Arc<UpstreamGroup>>) {
        let empty = BTreeMap::new();
        let (groups, fresh) =
            build_groups(&config.upstreams, previous.map_or(&empty, |p| &p.groups));
        let runtime = Self {
            router: Router::new(config, &groups, &plugins),
            groups,
            health_path: config.edge.health_path.clone(),
            access_log: config.log.access,
            plugins,
            cache: CacheSettings::new(&config.cache),
            compression: CompressionSettings::new(&config.compression, metrics),
            limits: RequestLimits::new(&config.edge),
            rate_limits: LimitSettings::new(&config.rate_limits),
            allowed_hosts: config
                .edge
                .allowed_hosts
                .iter()
                .map(|h| HostPattern::parse(h))
                .collect(),
            trusted_proxies: Networks::new(&config.edge.trusted_proxies),
            caps: Caps {
                total: config.edge.max_connections,
                per_ip: config.edge.max_connections_per_ip,
            },
        };
        (runtime, fresh)
    }
}

impl EdgeState {
    /// The edge for `config` with its loaded `plugins`; `instance` distinguishes this gatehouse
    /// in request ids; the cache keeps its persistent tier in `store`, when given.
    pub fn new(
        config: &Config,
        plugins: Plugins,
        instance: u64,
        store: Option<Arc<dyn Store>>,
    ) -> Self {
        let redis = config
            .redis
            .enabled
            .then(|| RedisLink::start(&config.redis))
            .and_then(|started| {
                started
                    .map_err(|err| error!(error = %err, "Redis cannot be used; cache and limits stay local"))
                    .ok()
            })
            .map(Arc::new);
        let metrics = Arc::new(Metrics::default());
        Self {
            runtime: ArcSwap::from_pointee(EdgeRuntime::build(config, plugins, None, &metrics).0),
            ids: RequestIds::new(instance),
            active: Arc::default(),
            limiter: Limiter::new(&config.rate_limits, redis.clone()),
            cache: ResponseCache::new(&config.cache, store, redis),
            connections: Arc::default(),
            metrics,
            traces: Traces::start(&config.traces),
            pooler: std::sync::OnceLock::new(),
            acme: std::sync::OnceLock::new(),
        }
    }

    /// The pooler, when it runs.
    pub fn pooler(&self) -> Option<&crate::pool::PoolerView> {
        self.pooler.get()
    }

    /// Makes the running pooler visible to the admin API and the metrics (once, at start).
    pub fn set_pooler(&self, view: crate::pool::PoolerView) {
        let _ = self.pooler.set(view);
    }

    /// The ACME sites, when any.
    pub fn acme(&self) -> Option<&Arc<crate::acme::Acme>> {
        self.acme.get()
    }

    /// Makes the ACME sites visible to the listeners, the admin API and the metrics (once, at
    /// start).
    pub fn set_acme(&self, acme: Arc<crate::acme::Acme>) {
        let _ = self.acme.set(acme);
    }

    /// Request traces, when exported.
    pub fn traces(&self) -> Option<&Arc<Traces>> {
        self.traces.as_ref()
    }

    /// Event metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether Redis is in use, and everything that uses it reaches it now.
    pub fn redis_status(&self) -> Option<bool> {
        let statuses = [self.cache.shared_status(), self.limiter.shared_status()];
        statuses
            .into_iter()
            .flatten()
            .reduce(|all, connected| all && connected)
    }

    /// Counts a connection just accepted (`connection` is actix's stream) in its extensions.
    pub(crate) fn on_connect(&self, connection: &dyn std::any::Any, extensions: &mut Extensions) {
        let runtime = self.runtime();
        let ip = connections::peer_ip(connection);
        let exempt = ip.is_some_and(|ip| runtime.trusted_proxies.contains(ip));
        extensions.insert(self.connections.open(ip, runtime.caps, exempt));
        connections::mark_tls(connection, extensions);
    }

    /// Open client connections.
    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// The response cache.
    pub fn cache(&self) -> &ResponseCache {
        &self.cache
    }

    /// Requests in flight.
    pub fn active(&self) -> &Arc<ActiveRequests> {
        &self.active
    }

    /// The current generation.
    pub fn runtime(&self) -> Arc<EdgeRuntime> {
        self.runtime.load_full()
    }

    /// Swaps in a new generation built from `config`; returns the upstream groups that are new
    /// (their health checks need starting). Unchanged groups carry on as they were; servers that
    /// stay in a changed group keep their health. Requests in flight finish on the generation
    /// they started with.
    pub fn apply(&self, config: &Config, plugins: Plugins) -> Vec<Arc<UpstreamGroup>> {
        let previous = self.runtime();
        let (next, fresh) = EdgeRuntime::build(config, plugins, Some(&previous), &self.metrics);
        self.runtime.store(Arc::new(next));
        fresh
    }
}

/// Every edge request enters here (the App's default service).
pub(crate) async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<EdgeState>,
) -> HttpResponse<UpstreamBody> {
    if req
        .conn_data::<ConnectionSlot>()
        .is_some_and(|slot| slot.over)
    {
        return connections::busy().map_body(|_, body| UpstreamBody::right(body));
    }
    let runtime = state.runtime();
    let validating = phase(&req, &state, "validate", SpanKind::Internal);
    let path = match validate::check_request(&req, &runtime.limits) {
        Ok(path) => path,
        Err(err) => return refuse(err),
    };
    if !runtime.health_path.is_empty() && req.path() == runtime.health_path {
        return liveness().map_body(|_, body| UpstreamBody::right(body));
    }
    if let Some(answer) = state
        .acme()
        .and_then(|acme| acme.challenges().http_response(req.path()))
    {
        return answer.map_body(|_, body| UpstreamBody::right(body));
    }
    let host = validate::authority(&req)
        .map(validate::host_name)
        .unwrap_or_default();
    if !runtime.allowed_hosts.is_empty() && !runtime.allowed_hosts.iter().any(|h| h.matches(host)) {
        return refuse(EdgeError::UnknownHost);
    }
    let Some(route) = runtime.router.find(host, req.path()) else {
        return refuse(EdgeError::NoRoute);
    };
    let request_id = state.ids.for_request(req.headers());
    let mut outcome = UpstreamOutcome::default();

    let client_ip = runtime.trusted_proxies.client_ip(&req);
    if let Some(refusal) = validate::route_refusal(route, &req, client_ip, path) {
        let answer = refusal.map_body(|_, body| UpstreamBody::right(body));
        return complete(&req, &runtime, route, request_id, outcome, answer);
    }
    drop(validating);

    // Preflights are answered here: they reach neither the limits nor the upstream.
    if let Some(answer) = route.cors.as_ref().and_then(|cors| cors.preflight(&req)) {
        let answer = answer.map_body(|_, body| UpstreamBody::right(body));
        return complete(&req, &runtime, route, request_id, outcome, answer);
    }

    let plugin_request = (route.rate_limit.is_some() || route.cache.is_some())
        .then(|| plugin_call::request(&req, client_ip, host, &route.name));
    let mut limit_fields = None;
    if let (Some(plugin), Some(request)) = (&route.rate_limit, &plugin_request) {
        let limits = ratelimit::Phase {
            limiter: &state.limiter,
            settings: runtime.rate_limits,
            metrics: &state.metrics,
            route: &route.name,
        };
        let _limiting = phase(&req, &state, "rate_limit", SpanKind::Internal);
        match limits.apply(plugin, &req, request).await {
            Outcome::Continue(fields) => limit_fields = fields,
            Outcome::Answer(answer) => {
                let answer = answer.map_body(|_, body| UpstreamBody::right(body));
                return complete(&req, &runtime, route, request_id, outcome, answer);
            }
        }
    }

    let group = match &route.backend {
        Backend::Upstream(group) => group,
        Backend::Files(files) => {
            let path = route.upstream_path(req.uri());
            let response = files.serve(&req, path.path()).await;
            let response = response.map_body(|_, body| UpstreamBody::right(body));
            let mut response = runtime.compression.apply(&req, response);
            add_headers(&mut response, limit_fields);
            return complete(&req, &runtime, route, request_id, outcome, response);
        }
    };

    let (mut cache_status, mut fill) = (None, None);
    if let (Some(plugin), Some(request)) = (&route.cache, plugin_request) {
        let (cache, settings, compression) = (&state.cache, &runtime.cache, &runtime.compression);
        let _looking = phase(&req, &state, "cache.lookup", SpanKind::Internal);
        match cache::lookup(cache, settings, compression, plugin, &req, request, host).await {
            Lookup::Answer(answer, status, refresh) => {
                if let Some(refresh) = refresh {
                    refresh_in_background(
                        state.clone(),
                        Arc::clone(&runtime),
                        req.clone(),
                        refresh,
                    );
                }
                let answer = cached(&runtime, answer, status, limit_fields);
                return complete(&req, &runtime, route, request_id, outcome, answer);
            }
            Lookup::Upstream(status, to_fill) => (cache_status, fill) = (Some(status), to_fill),
        }
    }

    let calling = phase(&req, &state, "upstream", SpanKind::Client);
    let shape = |headers: &mut HeaderMap| {
        if let Some(fill) = &fill {
            fill.shape(headers);
        }
        // The upstream continues the trace under this call's span.
        spans::propagate(&req, &state, calling.as_ref(), headers);
    };
    let forwarded = proxy::forward(
        &req,
        payload,
        route,
        group,
        &request_id,
        shape,
        &mut outcome,
    )
    .await;
    if let Ok(answer) = &forwarded {
        let status = i64::from(answer.status().as_u16());
        spans::note(calling.as_ref(), "http.response.status_code", status);
    }
    if let Some(server) = &outcome.server {
        spans::note(calling.as_ref(), "server.address", server.clone());
    }
    drop(calling);
    let forwarded = match fill {
        None => forwarded,
        Some(fill) => {
            let (cache, settings, compression) =
                (&state.cache, &runtime.cache, &runtime.compression);
            match fill.settle(cache, settings, compression, &req, forwarded) {
                Settled::Answer(answer, status) => {
                    let answer = cached(&runtime, answer, Some(status), limit_fields);
                    return complete(&req, &runtime, route, request_id, outcome, answer);
                }
                Settled::Forward(forwarded) => forwarded,
            }
        }
    };
    let mut response = forwarded.unwrap_or_else(|err| {
        tracing::debug!(route = %route.name, source = ?err.source(), error = %err, "request failed");
        refuse(err)
    });
    if let Some(status) = cache_status {
        runtime.cache.mark(&mut response, status);
    }
    let compressing = phase(&req, &state, "compress", SpanKind::Internal);
    let mut response = runtime.compression.apply(&req, response);
    drop(compressing);
    add_headers(&mut response, limit_fields);
    complete(&req, &runtime, route, request_id, outcome, response)
}

/// An answer from the cache (already in the client's coding), marked with what the cache did.
fn cached(
    runtime: &EdgeRuntime,
    answer: HttpResponse<BoxBody>,
    status: Option<CacheStatus>,
    limit_fields: LimitFields,
) -> HttpResponse<UpstreamBody> {
    let mut answer = answer.map_body(|_, body| UpstreamBody::right(body));
    if let Some(status) = status {
        runtime.cache.mark(&mut answer, status);
    }
    add_headers(&mut answer, limit_fields);
    answer
}

/// Refreshes a stale entry off the request path: the same request without its client, settled
/// as a miss would be. It runs on this worker's thread (an `HttpRequest` stays on its thread).
fn refresh_in_background(
    state: web::Data<EdgeState>,
    runtime: Arc<EdgeRuntime>,
    req: HttpRequest,
    fill: Fill,
) {
    actix_web::rt::spawn(async move {
        let Some(route) = runtime.router.find(fill.host(), req.path()) else {
            return;
        };
        let Backend::Upstream(group) = &route.backend else {
            return;
        };
        let Ok(payload) = web::Payload::from_request(&req, &mut actix_http::Payload::None).await
        else {
            return;
        };
        let request_id = state.ids.for_request(req.headers());
        let mut outcome = UpstreamOutcome::default();
        let shape = |headers: &mut HeaderMap| fill.shape(headers);
        let forwarded = proxy::forward(
            &req,
            payload,
            route,
            group,
            &request_id,
            shape,
            &mut outcome,
        )
        .await;
        let (cache, settings, compression) = (&state.cache, &runtime.cache, &runtime.compression);
        if let Settled::Forward(Ok(response)) =
            fill.settle(cache, settings, compression, &req, forwarded)
        {
            // Reading the body to its end is what stores it.
            let _ = actix_web::body::to_bytes(response.into_body()).await;
        }
    });
}

/// The rate limit's `RateLimit-*` fields, when the route has a limit.
type LimitFields = Option<[(HeaderName, HeaderValue); 2]>;

fn add_headers<B>(response: &mut HttpResponse<B>, headers: LimitFields) {
    for (name, value) in headers.into_iter().flatten() {
        response.headers_mut().insert(name, value);
    }
}

/// What every routed answer gets: the request id, and the notes the access log reads.
fn complete(
    req: &HttpRequest,
    runtime: &EdgeRuntime,
    route: &router::Route,
    request_id: HeaderValue,
    outcome: UpstreamOutcome,
    mut response: HttpResponse<UpstreamBody>,
) -> HttpResponse<UpstreamBody> {
    if let Some(server) = req.extensions().get::<spans::RequestSpan>() {
        let span = server.0.span();
        if span.is_recording() {
            span.update_name(format!("{} {}", req.method(), route.name));
            let route = route.name.to_string();
            span.set_attribute(opentelemetry::KeyValue::new("http.route", route));
        }
    }
    let logs = runtime.logs_access();
    req.extensions_mut().insert(RequestNotes {
        route: Some(Arc::clone(&route.name)),
        request_id: logs
            .then(|| request_id.to_str().ok().map(str::to_string))
            .flatten(),
        upstream: outcome,
    });
    if let Some(browser_cache) = &route.browser_cache {
        browser_cache.apply(req, &mut response);
    }
    route
        .security_headers
        .apply(&mut response, connections::over_tls(req));
    if let Some(cors) = &route.cors {
        cors.apply(req, &mut response);
    }
    response
        .headers_mut()
        .insert(X_REQUEST_ID.clone(), request_id);
    response
}

fn refuse(err: EdgeError) -> HttpResponse<UpstreamBody> {
    err.response().map_body(|_, body| UpstreamBody::right(body))
}

/// `200 ok`: the process is alive and serving. Readiness is the admin listener's `/readyz`.
pub(crate) fn liveness() -> HttpResponse {
    let mut response = HttpResponse::Ok().body("ok\n");
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    /// The size of what `f` returns, found without calling it.
    fn returned_size<F, A, B, C, R>(_: &F) -> usize
    where
        F: Fn(A, B, C) -> R,
    {
        size_of::<R>()
    }

    #[test]
    fn a_requests_state_stays_small() {
        // actix-web allocates this future per request and moves it whole into the allocation:
        // rarely awaited large futures (the store's and Redis's reads) belong in boxes of their
        // own. It was 8.6 KB with them inline, 2.5 KB without.
        let size = returned_size(&super::handle);
        assert!(size <= 4096, "a request's state takes {size} bytes");
    }
}
