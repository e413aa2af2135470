//! The edge: the public HTTP(S) listeners and the phases every request goes through.
//!
//! Requests flow down the phases, responses flow back up. The order is the contract:
//!
//! | # | phase | module | what it does (default) |
//! |---|-------|--------|------------------------|
//! | 1 | validate | [`validate`] | refuses what must not reach routing: a foreign absolute-form target (400); actix-http already refused malformed heads (400), oversized heads (431) and smuggling attempts (400) |
//! | 2 | route | [`router`] | host, then longest path prefix; no match is 404 |
//! | 3 | rate limit | [`ratelimit`] | the route's rate-limit plugin decides the key and quota, GCRA counts; over the quota is 429 (no plugin: nothing) |
//! | 4 | upstream | [`proxy`] | picks a server (balancing, health, ejection), forwards with timeouts and bounded retries, streams bodies both ways |
//! | 5 | finish | [`finish`] | when the response body has ended: the access-log line, and the request leaves the in-flight count the drain waits for |
//!
//! The response cache (around upstream), response headers and compression (on the way back up)
//! slot in as their own modules in this order.
//!
//! This module owns the request path and must not block: no file or store I/O per request.

pub mod error;
pub mod finish;
pub(crate) mod proxy;
pub mod ratelimit;
pub(crate) mod redirect;
pub mod request_id;
pub mod router;
pub mod tls;
pub(crate) mod validate;

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::http::header::{CONTENT_TYPE, HeaderValue};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use arc_swap::ArcSwap;

use self::error::EdgeError;
use self::finish::{ActiveRequests, RequestNotes};
use self::proxy::{UpstreamBody, UpstreamOutcome, X_REQUEST_ID};
use self::ratelimit::Outcome;
use self::ratelimit::gcra::Gcra;
use self::request_id::RequestIds;
use self::router::Router;
use crate::config::{AccessLogFormat, Config};
use crate::policy::Plugins;
use crate::upstream::{UpstreamGroup, build_groups};

/// What the edge workers share. The reloadable part is swapped whole on reload, so a request sees
/// one consistent config from start to end.
pub struct EdgeState {
    runtime: ArcSwap<EdgeRuntime>,
    ids: RequestIds,
    active: Arc<ActiveRequests>,
    /// Rate-limit counts, kept across reloads.
    gcra: Gcra,
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
    ) -> (Self, Vec<Arc<UpstreamGroup>>) {
        let empty = BTreeMap::new();
        let (groups, fresh) =
            build_groups(&config.upstreams, previous.map_or(&empty, |p| &p.groups));
        let runtime = Self {
            router: Router::new(&config.routes, &groups, &plugins),
            groups,
            health_path: config.edge.health_path.clone(),
            access_log: config.log.access,
            plugins,
        };
        (runtime, fresh)
    }
}

impl EdgeState {
    /// The edge for `config` with its loaded `plugins`; `instance` distinguishes this gatehouse
    /// in request ids.
    pub fn new(config: &Config, plugins: Plugins, instance: u64) -> Self {
        Self {
            runtime: ArcSwap::from_pointee(EdgeRuntime::build(config, plugins, None).0),
            ids: RequestIds::new(instance),
            active: Arc::default(),
            gcra: Gcra::default(),
        }
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
        let (next, fresh) = EdgeRuntime::build(config, plugins, Some(&self.runtime()));
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
    let runtime = state.runtime();
    if let Err(err) = validate::check_target(&req) {
        return refuse(err);
    }
    if !runtime.health_path.is_empty() && req.path() == runtime.health_path {
        return liveness().map_body(|_, body| UpstreamBody::right(body));
    }
    let host = validate::authority(&req)
        .map(validate::host_name)
        .unwrap_or_default();
    let Some(route) = runtime.router.find(host, req.path()) else {
        return refuse(EdgeError::NoRoute);
    };
    let request_id = state.ids.for_request(req.headers());
    let mut outcome = UpstreamOutcome::default();

    let mut limit_fields = None;
    if let Some(plugin) = &route.rate_limit {
        let client_ip = req.peer_addr().map(|addr| addr.ip());
        match ratelimit::apply(plugin, &state.gcra, &req, host, &route.name, client_ip) {
            Outcome::Continue(fields) => limit_fields = fields,
            Outcome::Answer(answer) => {
                let answer = answer.map_body(|_, body| UpstreamBody::right(body));
                return complete(&req, &runtime, route, request_id, outcome, answer);
            }
        }
    }

    let mut response = match proxy::forward(&req, payload, route, &request_id, &mut outcome).await {
        Ok(response) => response,
        Err(err) => {
            tracing::debug!(route = %route.name, source = ?err.source(), error = %err, "request failed");
            refuse(err)
        }
    };
    for (name, value) in limit_fields.into_iter().flatten() {
        response.headers_mut().insert(name, value);
    }
    complete(&req, &runtime, route, request_id, outcome, response)
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
    if runtime.logs_access() {
        req.extensions_mut().insert(RequestNotes {
            route: Some(Arc::clone(&route.name)),
            request_id: request_id.to_str().ok().map(str::to_string),
            upstream: outcome,
        });
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
