//! What the web UI reads beyond the plain API: the overview's time series, the routes table
//! and the configuration in force.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde_json::json;

use super::error;
use crate::config::explain;
use crate::monitor::{Monitors, dashboard};
use crate::operations::Operations;

/// Routes of the dashboard's reads, inside `/api/v1`.
pub(super) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/overview", web::get().to(overview))
        .route("/routes", web::get().to(routes))
        .route("/config", web::get().to(config_in_force));
}

/// `GET /api/v1/overview`: all traffic over the monitoring window, a point per reading.
async fn overview(
    monitors: web::Data<Monitors>,
    operations: web::Data<Operations>,
) -> HttpResponse {
    let window = operations.config().config.monitoring.window;
    let made = web::block(move || dashboard::overview(&monitors.readings, window)).await;
    match made {
        Ok(overview) => HttpResponse::Ok().json(overview),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    }
}

/// `GET /api/v1/routes`: each configured route, its policies and its traffic over the window.
async fn routes(monitors: web::Data<Monitors>, operations: web::Data<Operations>) -> HttpResponse {
    let loaded = operations.config();
    let window = loaded.config.monitoring.window;
    let figures = match web::block(move || dashboard::routes(&monitors.readings, window)).await {
        Ok(figures) => figures,
        Err(err) => return error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    };
    let rows: Vec<serde_json::Value> = loaded
        .config
        .routes
        .iter()
        .enumerate()
        .map(|(index, route)| {
            let name = route.name_or_index(index);
            let traffic = figures.iter().find(|f| f.name == name);
            json!({
                "name": name,
                "hosts": route.hosts,
                "path": route.path,
                "upstream": route.root.as_ref().map_or(route.upstream.clone(), |root| format!("files {}", root.display())),
                "rate_limit": route.rate_limit,
                "cache": route.cache,
                "requests_per_second": traffic.map_or(0.0, |t| t.requests_per_second),
                "latency_p50_ms": traffic.map_or(0.0, |t| t.latency_p50_ms),
                "latency_p99_ms": traffic.map_or(0.0, |t| t.latency_p99_ms),
                "error_ratio": traffic.map_or(0.0, |t| t.error_ratio),
                "cache_hit_ratio": traffic.and_then(|t| t.cache_hit_ratio),
                "rate_limited": traffic.map_or(0.0, |t| t.rate_limited),
            })
        })
        .collect();
    HttpResponse::Ok().json(rows)
}

/// `GET /api/v1/config`: every value in force by dotted key, secrets hidden, with its source.
async fn config_in_force(operations: web::Data<Operations>) -> HttpResponse {
    let loaded = operations.config();
    HttpResponse::Ok().json(json!({ "settings": explain::settings(&loaded) }))
}
