//! The JSON admin API under `/api/v1/`: what operators (and later the web UI) read and do.
//! Errors are JSON too: `{"error": "..."}` with a 4xx status.

use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};
use sha2::{Digest, Sha256};

use crate::edge::EdgeState;
use crate::edge::cache::Purge;

/// The admin token, kept as its digest: comparing digests takes the same time whatever the
/// guess shares with the token.
pub(crate) struct ApiToken(Option<[u8; 32]>);

impl ApiToken {
    /// Requires `token` when given.
    pub(crate) fn new(token: Option<&str>) -> Self {
        Self(token.map(digest))
    }
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

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
            .wrap(actix_web::middleware::from_fn(require_token))
            .route("/cache", web::get().to(cache_report))
            .route("/cache/purge", web::post().to(purge))
            .route("/cache/hosts/{host}", web::delete().to(purge_host)),
    );
}

/// Refuses calls without the configured token.
async fn require_token(
    req: ServiceRequest,
    next: Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let expected = req.app_data::<web::Data<ApiToken>>().and_then(|t| t.0);
    if let Some(expected) = expected {
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|token| digest(token.trim()));
        if given != Some(expected) {
            let mut answer = error(
                StatusCode::UNAUTHORIZED,
                "this call needs Authorization: Bearer <admin.token>",
            );
            answer
                .headers_mut()
                .insert(WWW_AUTHENTICATE, "Bearer".parse().expect("valid header"));
            return Ok(req.into_response(answer));
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

fn error(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "error": message }))
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
