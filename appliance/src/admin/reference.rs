//! The reference deployment's monitoring API, on the same paths so its scripts keep working
//! (with the admin token added): `/api/v5/performance/*`, `/api/v5/monitoring/database/pool`
//! and `/performance/latest.json`. Where a path has a `/api/v1` twin, both share one handler.
//! Every route is described in `openapi.json`, served at `/api/openapi.json`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::Serialize;

use super::api::{post_business_metric, recommendations, trend};
use super::error;
use crate::edge::EdgeState;
use crate::monitor::Monitors;
use crate::monitor::alerts::RuleReport;
use crate::monitor::health::{HealthSources, Status};
use crate::policy::recommend_types::Traffic;

/// The OpenAPI document of the admin API.
const OPENAPI: &str = include_str!("openapi.json");

/// Routes of the reference API (behind the admin token).
pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .service(
            web::scope("/api/v5/performance")
                .route("/metrics", web::get().to(metrics))
                .route("/health", web::get().to(health))
                .route("/alerts", web::get().to(active_alerts))
                .route("/trends/{metric}", web::get().to(trend))
                .route("/recommendations", web::get().to(recommendations))
                .route(
                    "/record-business-metric",
                    web::post().to(post_business_metric),
                ),
        )
        .route("/api/v5/monitoring/database/pool", web::get().to(pool))
        .route("/performance/latest.json", web::get().to(latest_load_test));
}

/// `GET /api/openapi.json` (no token needed: it describes, it does not reveal).
pub(crate) async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}

/// Recent traffic, as the recommendations judge it.
#[derive(Serialize)]
struct PerformanceMetrics {
    generated_at: String,
    window_seconds: f64,
    /// All traffic together.
    overall: Option<Traffic>,
    /// Each route.
    routes: Vec<Traffic>,
    cpu_percent: f64,
    memory_percent: f64,
}

/// `GET /api/v5/performance/metrics`: rates, latency percentiles and ratios of the last
/// `monitoring.window`, overall and per route, with the host's CPU and memory.
async fn metrics(monitors: web::Data<Monitors>) -> HttpResponse {
    let made = web::block(move || monitors.advisor.snapshot()).await;
    let Ok((snapshot, span)) = made else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "metrics failed");
    };
    let (overall, routes): (Vec<Traffic>, Vec<Traffic>) = snapshot
        .traffic
        .into_iter()
        .partition(|t| t.route == crate::monitor::snapshot::ALL_ROUTES);
    HttpResponse::Ok().json(PerformanceMetrics {
        generated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        window_seconds: span.as_secs_f64(),
        overall: overall.into_iter().next(),
        routes,
        cpu_percent: snapshot.cpu_percent,
        memory_percent: snapshot.memory_percent,
    })
}

/// `GET /api/v5/performance/health`: `healthy`, `warning` or `critical`, from the health checks
/// and the alerts firing.
async fn health(sources: web::Data<HealthSources>, monitors: web::Data<Monitors>) -> HttpResponse {
    let made = web::block(move || (sources.report(), monitors.alerts.report(0))).await;
    let Ok((report, alerts)) = made else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "health failed");
    };
    let firing: Vec<&RuleReport> = alerts
        .rules
        .iter()
        .filter(|r| r.state == "firing")
        .collect();
    let critical = firing
        .iter()
        .any(|r| r.rule.severity == crate::config::AlertSeverity::Critical);
    let status = match report.status {
        Status::Down => "critical",
        _ if critical => "critical",
        Status::Degraded => "warning",
        Status::Ok if !firing.is_empty() => "warning",
        Status::Ok => "healthy",
    };
    let firing: Vec<&str> = firing.iter().map(|r| r.rule.name.as_str()).collect();
    HttpResponse::Ok().json(serde_json::json!({
        "status": status,
        "checks": report.status,
        "firing_alerts": firing,
        "uptime_seconds": report.uptime_seconds,
        "version": report.version,
    }))
}

/// `GET /api/v5/performance/alerts`: the rules firing now.
async fn active_alerts(monitors: web::Data<Monitors>) -> HttpResponse {
    let Ok(report) = web::block(move || monitors.alerts.report(0)).await else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "alerts failed");
    };
    let active: Vec<RuleReport> = report
        .rules
        .into_iter()
        .filter(|r| r.state == "firing")
        .collect();
    HttpResponse::Ok().json(serde_json::json!({ "count": active.len(), "alerts": active }))
}

/// `GET /api/v5/monitoring/database/pool`: the pooler's pools (none until it is configured),
/// with the figures a SQLAlchemy pool status gives (size, checked in and out, overflow).
async fn pool(edge: web::Data<EdgeState>) -> HttpResponse {
    let Some(pooler) = edge.pooler() else {
        return HttpResponse::Ok()
            .json(serde_json::json!({ "pooler": "not configured", "pools": [] }));
    };
    let pools: Vec<serde_json::Value> = pooler
        .pools()
        .into_iter()
        .map(|p| {
            let open = p.servers_active + p.servers_idle;
            serde_json::json!({
                "database": p.database,
                "user": p.user,
                "size": open,
                "max": p.servers_max,
                "checked_out": p.servers_active,
                "checked_in": p.servers_idle,
                "waiting": p.clients_waiting,
                "usage_ratio": p.servers_active as f64 / p.servers_max.max(1) as f64,
                "transactions": p.transactions,
                "queries": p.queries,
                "wait_seconds_total": p.wait_seconds,
                "acquire_errors": p.acquire_errors,
            })
        })
        .collect();
    HttpResponse::Ok().json(serde_json::json!({
        "pooler": "running",
        "clients": pooler.clients(),
        "pools": pools,
    }))
}

/// `GET /performance/latest.json`: the latest scheduled load test.
async fn latest_load_test(monitors: web::Data<Monitors>) -> HttpResponse {
    let runs = web::block(move || monitors.load_tests.runs()).await;
    match runs.map(|runs| runs.into_iter().next()) {
        Ok(Some(latest)) => HttpResponse::Ok().json(latest),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "no load test has run yet: set [load_test] enabled = true and urls",
        ),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    }
}
