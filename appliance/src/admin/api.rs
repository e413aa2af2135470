//! The JSON admin API under `/api/v1/`: what operators (and later the web UI) read and do.
//! Errors are JSON too: `{"error": "..."}` with a 4xx status.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use std::sync::Arc;

use super::{dashboard, error, login, operate};
use crate::edge::EdgeState;
use crate::edge::cache::Purge;
use crate::monitor::Monitors;
use crate::monitor::advisor::Advice;
use crate::monitor::business::Posted;
use crate::monitor::trends::TrendQuery;
use crate::operations::Operations;

/// Routes of the API.
pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::scope("/api/v1")
            .route("/cache", web::get().to(cache_report))
            .route("/cache/keys", web::get().to(cache_keys))
            .route("/cache/purge", web::post().to(purge))
            .route("/cache/hosts/{host}", web::delete().to(purge_host))
            .route("/plugins", web::get().to(plugins))
            .route("/plugins/{name}/rollback", web::post().to(rollback))
            .route("/alerts", web::get().to(alerts))
            .route("/pool", web::get().to(pool))
            .route("/business-metrics", web::post().to(post_business_metric))
            .route("/load-tests", web::get().to(load_tests))
            .route("/trends", web::get().to(trend_metrics))
            .route("/trends/{metric}", web::get().to(trend))
            .route("/recommendations", web::get().to(recommendations))
            .route(
                "/recommendations/refresh",
                web::post().to(refresh_recommendations),
            )
            .route("/session", web::get().to(login::current))
            .configure(dashboard::configure)
            .configure(operate::configure),
    );
}

/// How many events `GET /api/v1/alerts` lists.
const ALERT_HISTORY_SHOWN: usize = 100;

/// `GET /api/v1/alerts`: every rule with its state, and the latest firings and resolutions.
async fn alerts(monitors: web::Data<Monitors>) -> HttpResponse {
    match web::block(move || monitors.alerts.report(ALERT_HISTORY_SHOWN)).await {
        Ok(report) => HttpResponse::Ok().json(report),
        Err(err) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("alerts failed: {err}"),
        ),
    }
}

/// `GET /api/v1/pool`: the pooler's pools, stats, clients, servers, databases and query
/// shapes (what its console's `SHOW` commands list).
async fn pool(edge: web::Data<EdgeState>) -> HttpResponse {
    let Some(pooler) = edge.pooler().cloned() else {
        return HttpResponse::Ok().json(serde_json::json!({ "enabled": false }));
    };
    match web::block(move || pooler.json()).await {
        Ok(report) => HttpResponse::Ok().json(report),
        Err(err) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("pool report failed: {err}"),
        ),
    }
}

/// `GET /api/v1/recommendations`: the latest advice and the snapshot it judged.
pub(super) async fn recommendations(monitors: web::Data<Monitors>) -> HttpResponse {
    advice(web::block(move || monitors.advisor.latest()).await)
}

/// `POST /api/v1/recommendations/refresh`: judge the traffic of the window now.
async fn refresh_recommendations(monitors: web::Data<Monitors>) -> HttpResponse {
    advice(web::block(move || monitors.advisor.refresh()).await)
}

fn advice(made: Result<Arc<Advice>, actix_web::error::BlockingError>) -> HttpResponse {
    match made {
        Ok(advice) => HttpResponse::Ok().json(&*advice),
        Err(err) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("recommendations failed: {err}"),
        ),
    }
}

/// `GET /api/v1/cache`: sizes by tier and counters.
async fn cache_report(edge: web::Data<EdgeState>) -> HttpResponse {
    HttpResponse::Ok().json(edge.cache().report())
}

/// How many keys `GET /api/v1/cache/keys` lists, by default and at most.
const KEYS_SHOWN: (usize, usize) = (50, 1000);

/// How many keys to list.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysQuery {
    limit: Option<usize>,
}

/// `GET /api/v1/cache/keys?limit=50`: the entries in memory that answered most.
async fn cache_keys(edge: web::Data<EdgeState>, query: web::Query<KeysQuery>) -> HttpResponse {
    let limit = query.limit.unwrap_or(KEYS_SHOWN.0).min(KEYS_SHOWN.1);
    HttpResponse::Ok().json(edge.cache().top_keys(limit))
}

/// `POST /api/v1/cache/purge` with one of `{"key": ...}`, `{"prefix": ...}`, `{"tag": ...}`,
/// `{"host": ...}`.
async fn purge(edge: web::Data<EdgeState>, what: web::Json<Purge>) -> HttpResponse {
    purged(&edge, &what).await
}

/// `DELETE /api/v1/cache/hosts/{host}`: everything cached for a host.
async fn purge_host(edge: web::Data<EdgeState>, host: web::Path<String>) -> HttpResponse {
    purged(&edge, &Purge::Host(host.into_inner())).await
}

async fn purged(edge: &EdgeState, what: &Purge) -> HttpResponse {
    let report = edge.cache().purge(what).await;
    tracing::info!(?what, purged = report.purged, shared = ?report.shared, "cache purged");
    HttpResponse::Ok().json(report)
}

/// `GET /api/v1/plugins`: each loaded policy plugin, its version, counters, rollback target and
/// source (a file can be replaced by an upload; a built-in cannot).
async fn plugins(edge: web::Data<EdgeState>, operations: web::Data<Operations>) -> HttpResponse {
    let runtime = edge.runtime();
    let loaded = operations.config();
    let list: Vec<serde_json::Value> = runtime
        .plugins
        .iter()
        .map(|(name, plugin)| {
            let version = plugin.current();
            let stats = &version.stats;
            let read = |counter: &std::sync::atomic::AtomicU64| {
                counter.load(std::sync::atomic::Ordering::Relaxed)
            };
            let calls = read(&stats.calls);
            let source = loaded.config.plugins.get(name).map(|p| p.source.as_str());
            serde_json::json!({
                "name": name,
                "kind": version.kind.to_string(),
                "sha256": version.sha256,
                "calls": calls,
                "traps": read(&stats.traps),
                "timeouts": read(&stats.timeouts),
                "mean_call_us": (calls > 0).then(|| read(&stats.nanos) as f64 / calls as f64 / 1000.0),
                "p99_call_us": stats.quantile_micros(0.99),
                "rollback_to": plugin.previous().map(|previous| previous.sha256.clone()),
                "source": source,
                "uploadable": source.is_some_and(|s| !s.starts_with("builtin:")),
            })
        })
        .collect();
    HttpResponse::Ok().json(list)
}

/// `POST /api/v1/plugins/{name}/rollback`: back to the version before the last swap, until the
/// next reload or rebuild of its file.
async fn rollback(edge: web::Data<EdgeState>, name: web::Path<String>) -> HttpResponse {
    let runtime = edge.runtime();
    let Some(plugin) = runtime.plugins.get(&name) else {
        return error(StatusCode::NOT_FOUND, &format!("no plugin named {name:?}"));
    };
    if !plugin.rollback() {
        return error(
            StatusCode::CONFLICT,
            &format!("plugin {name:?} has no previous version to roll back to"),
        );
    }
    let sha256 = plugin.current().sha256.clone();
    tracing::warn!(plugin = %name, %sha256, "plugin rolled back by the admin API");
    HttpResponse::Ok().json(serde_json::json!({ "name": name.as_str(), "sha256": sha256 }))
}

/// `POST /api/v1/business-metrics` with `{"name": ..., "value": ..., "labels": {...}, "add":
/// bool}`: sets (or adds to) a business metric; answers with the value now held.
pub(super) async fn post_business_metric(
    edge: web::Data<EdgeState>,
    posted: web::Json<Posted>,
) -> HttpResponse {
    let name = posted.name.clone();
    match edge.metrics().business().post(posted.into_inner()) {
        Ok(value) => HttpResponse::Ok().json(serde_json::json!({ "name": name, "value": value })),
        Err(refused) => error(StatusCode::BAD_REQUEST, &refused.to_string()),
    }
}

/// `GET /api/v1/load-tests`: the scheduled load test runs kept, newest first.
async fn load_tests(monitors: web::Data<Monitors>) -> HttpResponse {
    match web::block(move || monitors.load_tests.runs()).await {
        Ok(runs) => HttpResponse::Ok().json(runs),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    }
}

/// `GET /api/v1/trends`: every metric recorded, with its number of series.
async fn trend_metrics(monitors: web::Data<Monitors>) -> HttpResponse {
    let Some(trends) = monitors.trends.clone() else {
        return trends_off();
    };
    match web::block(move || trends.metrics()).await {
        Ok(metrics) => HttpResponse::Ok().json(serde_json::json!({ "metrics": metrics })),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    }
}

/// `GET /api/v1/trends/{metric}?since=1h` (or `from` / `to` in unix seconds; `range` is
/// `since`), with `label.NAME=VALUE` to pick series, `step=1m` for coarser points and
/// `rate=true` for per-second rates of counters.
pub(super) async fn trend(
    monitors: web::Data<Monitors>,
    metric: web::Path<String>,
    params: web::Query<Vec<(String, String)>>,
) -> HttpResponse {
    let Some(trends) = monitors.trends.clone() else {
        return trends_off();
    };
    let now = std::time::SystemTime::now();
    let query = match trend_query(metric.into_inner(), &params, now) {
        Ok(query) => query,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    match web::block(move || trends.query(&query, now)).await {
        Ok(answer) => HttpResponse::Ok().json(answer),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    }
}

fn trends_off() -> HttpResponse {
    error(
        StatusCode::NOT_FOUND,
        "trends are turned off (trends.enabled)",
    )
}

/// The query in `params`: `since` or `range` (a duration, default 1h) or `from` and `to` (unix
/// seconds), `step` (a duration), `rate`, and `label.NAME` filters. Errors name the parameter.
fn trend_query(
    metric: String,
    params: &[(String, String)],
    now: std::time::SystemTime,
) -> Result<TrendQuery, String> {
    let now = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut query = TrendQuery {
        metric,
        labels: Vec::new(),
        from: now.saturating_sub(3600),
        to: now,
        step: None,
        rate: false,
    };
    let duration = |name: &str, value: &str| {
        humantime::parse_duration(value)
            .or_else(|_| value.parse().map(std::time::Duration::from_secs))
            .map_err(|err| format!("{name}={value:?}: {err}"))
    };
    let seconds = |value: &str| {
        value
            .parse::<u64>()
            .map_err(|_| format!("from/to={value:?}: not a time in unix seconds"))
    };
    for (name, value) in params {
        match name.as_str() {
            "since" | "range" => query.from = now.saturating_sub(duration(name, value)?.as_secs()),
            "from" => query.from = seconds(value)?,
            "to" => query.to = seconds(value)?,
            "step" => query.step = Some(duration(name, value)?.as_secs().max(1)),
            "rate" => query.rate = matches!(value.as_str(), "true" | "1"),
            label => match label.strip_prefix("label.") {
                Some(label) => query.labels.push((label.to_string(), value.clone())),
                None => return Err(format!("unknown parameter {name:?}")),
            },
        }
    }
    if query.from > query.to {
        return Err("from is after to".into());
    }
    Ok(query)
}
