//! The admin listener: health endpoints and the JSON API ([`api`]); the web UI joins it later.
//! It serves operators, not the public, and listens on loopback by default.

mod api;

pub(crate) use api::ApiToken;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use crate::edge::liveness;
use crate::monitor::health::{HealthSources, Status};

/// Routes of the admin App.
pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/health", web::get().to(|| async { liveness() }))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .configure(api::configure);
}

/// The full report; 503 when gatehouse cannot serve.
async fn healthz(sources: web::Data<HealthSources>) -> HttpResponse {
    let report = web::block(move || sources.report()).await;
    match report {
        Ok(report) => {
            let status = if report.status == Status::Down {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            HttpResponse::build(status).json(report)
        }
        Err(err) => {
            HttpResponse::InternalServerError().body(format!("health report failed: {err}\n"))
        }
    }
}

/// 200 when ready for traffic, 503 with the reasons otherwise.
async fn readyz(sources: web::Data<HealthSources>) -> HttpResponse {
    let verdict = web::block(move || sources.readiness()).await;
    match verdict {
        Ok(readiness) if readiness.ready => HttpResponse::Ok().json(readiness),
        Ok(readiness) => HttpResponse::ServiceUnavailable().json(readiness),
        Err(err) => {
            HttpResponse::InternalServerError().body(format!("readiness check failed: {err}\n"))
        }
    }
}
