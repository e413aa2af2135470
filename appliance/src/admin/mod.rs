//! The admin listener: health endpoints, `/metrics`, the JSON API ([`api`]) and the reference
//! deployment's paths ([`reference`]), described by `/api/openapi.json`, and the web UI
//! ([`ui`], logged in with [`login`]).
//! It serves operators, not the public, and listens on loopback by default. Everything but
//! `/health*` needs the admin token ([`token`]); the control socket ([`control`]) lets the
//! machine's operator rotate it.

mod api;
mod control;
mod dashboard;
mod login;
mod operate;
mod reference;
mod session;
mod token;
mod ui;

pub(crate) use control::serve as serve_control;
pub use control::{RotateFailure, rotate_token};
pub(crate) use token::AdminAuth;
pub use token::RotateError;

use std::sync::Arc;
use std::time::Instant;

use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use actix_web::middleware::{Next, from_fn};
use actix_web::{HttpMessage, HttpResponse, web};

use self::token::Refusal;

use crate::edge::liveness;
use crate::monitor::health::{HealthSources, Status};
use crate::monitor::live;

/// Routes of the admin App.
pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/health", web::get().to(|| async { liveness() }))
        .route("/healthz", web::get().to(healthz))
        .route("/api/openapi.json", web::get().to(reference::openapi))
        .configure(ui::configure)
        .service(
            web::resource("/ui/login")
                .app_data(json_body())
                .route(web::post().to(login::login)),
        )
        .service(
            web::scope("")
                .wrap(from_fn(require_token))
                .app_data(json_body())
                .app_data(query_string())
                .route("/readyz", web::get().to(readyz))
                .route("/metrics", web::get().to(metrics))
                .route("/ui/logout", web::post().to(login::logout))
                .configure(api::configure)
                .configure(reference::configure),
        );
}

/// Every metric, in the OpenMetrics text format (for Prometheus).
async fn metrics(sources: web::Data<HealthSources>) -> HttpResponse {
    let text = web::block(move || {
        let live = live::registry(Arc::clone(&sources.edge), sources.started);
        sources.edge.metrics().render(&live)
    })
    .await;
    match text {
        Ok(text) => HttpResponse::Ok()
            .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(text),
        Err(err) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("metrics failed: {err}"),
        ),
    }
}

/// Refuses calls without the admin token or a web UI session, and addresses that failed too
/// often. A session's calls that change something need its CSRF token too.
async fn require_token(
    req: ServiceRequest,
    next: Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let auth = req
        .app_data::<web::Data<AdminAuth>>()
        .expect("the admin App has its AdminAuth");
    let client = req.peer_addr().map(|addr| addr.ip());
    let authorization = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
    let cookie = req.cookie(session::COOKIE);
    let checked = match (authorization, cookie) {
        (None, Some(cookie)) => {
            let changes = !req.method().is_safe();
            let csrf = req
                .headers()
                .get(session::CSRF_HEADER)
                .map(HeaderValue::as_bytes);
            auth.sessions
                .check(cookie.value(), changes, csrf, Instant::now())
                .map(|session| {
                    req.extensions_mut().insert(session);
                })
                .map_err(|why| login::session_refusal(&why))
        }
        (authorization, _) => auth.check(client, authorization).map_err(|why| {
            if why == Refusal::Unauthorized {
                tracing::warn!(client = ?client, path = req.path(), "admin call without the right token");
            }
            refusal(why)
        }),
    };
    match checked {
        Ok(()) => Ok(next.call(req).await?.map_into_boxed_body()),
        Err(refused) => Ok(req.into_response(refused)),
    }
}

/// The answer to a missing or wrong token.
fn refusal(why: Refusal) -> HttpResponse {
    match why {
        Refusal::Unauthorized => {
            let mut answer = error(
                StatusCode::UNAUTHORIZED,
                "this call needs Authorization: Bearer <admin token>",
            );
            answer
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            answer
        }
        Refusal::TooManyFailures(wait) => {
            let retry = wait.as_millis().div_ceil(1000).max(1) as u64;
            let mut answer = error(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("too many failed attempts from this address; retry in {retry} s"),
            );
            answer
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry));
            answer
        }
    }
}

/// JSON bodies of at most 64 KiB; a bad one is a 400 whose JSON error names the field.
fn json_body() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(64 * 1024)
        .error_handler(|err, _| {
            let answer = error(
                StatusCode::BAD_REQUEST,
                &format!("invalid request body: {err}"),
            );
            actix_web::error::InternalError::from_response(err, answer).into()
        })
}

/// A query string that does not parse is a 400 with a JSON error.
fn query_string() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _| {
        let answer = error(
            StatusCode::BAD_REQUEST,
            &format!("invalid query string: {err}"),
        );
        actix_web::error::InternalError::from_response(err, answer).into()
    })
}

/// A JSON error answer: `{"error": "..."}`.
fn error(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "error": message }))
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
