//! The JSON admin API under `/api/v1/`: what operators (and later the web UI) read and do.
//! Errors are JSON too: `{"error": "..."}` with a 4xx status.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use std::sync::Arc;

use super::error;
use crate::edge::EdgeState;
use crate::edge::cache::Purge;
use crate::monitor::advisor::{Advice, Advisor};
use crate::monitor::alerts::Alerts;

/// Routes of the API.
pub(crate) fn configure(config: &mut web::ServiceConfig) {
    let json = web::JsonConfig::default()
        .limit(64 * 1024)
        .error_handler(|err, _| {
            let answer = error(
                StatusCode::BAD_REQUEST,
                &format!("invalid request body: {err}"),
            );
            actix_web::error::InternalError::from_response(err, answer).into()
        });
    config.service(
        web::scope("/api/v1")
            .app_data(json)
            .route("/cache", web::get().to(cache_report))
            .route("/cache/purge", web::post().to(purge))
            .route("/cache/hosts/{host}", web::delete().to(purge_host))
            .route("/plugins", web::get().to(plugins))
            .route("/plugins/{name}/rollback", web::post().to(rollback))
            .route("/alerts", web::get().to(alerts))
            .route("/recommendations", web::get().to(recommendations))
            .route(
                "/recommendations/refresh",
                web::post().to(refresh_recommendations),
            ),
    );
}

/// How many events `GET /api/v1/alerts` lists.
const ALERT_HISTORY_SHOWN: usize = 100;

/// `GET /api/v1/alerts`: every rule with its state, and the latest firings and resolutions.
async fn alerts(alerts: web::Data<Alerts>) -> HttpResponse {
    match web::block(move || alerts.report(ALERT_HISTORY_SHOWN)).await {
        Ok(report) => HttpResponse::Ok().json(report),
        Err(err) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("alerts failed: {err}"),
        ),
    }
}

/// `GET /api/v1/recommendations`: the latest advice and the snapshot it judged.
async fn recommendations(advisor: web::Data<Advisor>) -> HttpResponse {
    advice(web::block(move || advisor.latest()).await)
}

/// `POST /api/v1/recommendations/refresh`: judge the traffic of the window now.
async fn refresh_recommendations(advisor: web::Data<Advisor>) -> HttpResponse {
    advice(web::block(move || advisor.refresh()).await)
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

/// `GET /api/v1/plugins`: each loaded policy plugin, its version, counters and rollback target.
async fn plugins(edge: web::Data<EdgeState>) -> HttpResponse {
    let runtime = edge.runtime();
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
            serde_json::json!({
                "name": name,
                "kind": version.kind.to_string(),
                "sha256": version.sha256,
                "calls": calls,
                "traps": read(&stats.traps),
                "timeouts": read(&stats.timeouts),
                "mean_call_us": (calls > 0).then(|| read(&stats.nanos) as f64 / calls as f64 / 1000.0),
                "rollback_to": plugin.previous().map(|previous| previous.sha256.clone()),
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
