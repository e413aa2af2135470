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
            .route("/cache/hosts/{host}", web::delete().to(purge_host))
            .route("/plugins", web::get().to(plugins))
            .route("/plugins/{name}/rollback", web::post().to(rollback)),
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
