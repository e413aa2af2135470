//! What the admin API (and so the web UI) may do beyond purging the cache: pause and resume the
//! pooler, upload a plugin build, run a load test against a configured URL, reload the config.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::error;
use crate::edge::EdgeState;
use crate::loadtest::LoadTest;
use crate::loadtest::on_demand::StartError;
use crate::monitor::Monitors;
use crate::operations::{Operations, UploadError};

/// The largest plugin build accepted.
const MAX_PLUGIN_BYTES: usize = 32 * 1024 * 1024;

/// Routes of the operations, inside `/api/v1`.
pub(super) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/pool/pause", web::post().to(pause_pool))
        .route("/pool/resume", web::post().to(resume_pool))
        .service(
            web::resource("/plugins/{name}")
                .app_data(web::PayloadConfig::new(MAX_PLUGIN_BYTES))
                .route(web::post().to(upload_plugin)),
        )
        .route("/load-tests", web::post().to(start_load_test))
        .route("/load-tests/current", web::get().to(load_test_status))
        .route("/load-tests/targets", web::get().to(load_test_targets))
        .route("/config/reload", web::post().to(reload));
}

/// Which databases a pause or resume is for.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolTarget {
    /// One database; all when absent.
    database: Option<String>,
}

/// `POST /api/v1/pool/pause` with `{}` or `{"database": ...}`: new transactions wait; answers
/// once the servers in use are back, with the pooler's report.
async fn pause_pool(edge: web::Data<EdgeState>, target: web::Json<PoolTarget>) -> HttpResponse {
    let Some(pooler) = edge.pooler() else {
        return error(StatusCode::CONFLICT, "the pooler is not enabled");
    };
    pooler.pause(target.database.as_deref()).await;
    tracing::warn!(database = ?target.database, "pooler paused from the admin API");
    HttpResponse::Ok().json(pooler.json())
}

/// `POST /api/v1/pool/resume` with `{}` or `{"database": ...}`.
async fn resume_pool(edge: web::Data<EdgeState>, target: web::Json<PoolTarget>) -> HttpResponse {
    let Some(pooler) = edge.pooler() else {
        return error(StatusCode::CONFLICT, "the pooler is not enabled");
    };
    pooler.resume(target.database.as_deref());
    tracing::info!(database = ?target.database, "pooler resumed from the admin API");
    HttpResponse::Ok().json(pooler.json())
}

/// `POST /api/v1/plugins/{name}` with a component as the body: checked, then written over the
/// plugin's file and put in use. The version it replaces stays for rollback.
async fn upload_plugin(
    operations: web::Data<Operations>,
    name: web::Path<String>,
    wasm: web::Bytes,
) -> HttpResponse {
    let name = name.into_inner();
    let uploaded = {
        let name = name.clone();
        web::block(move || operations.upload_plugin(name, wasm.to_vec())).await
    };
    match uploaded {
        Ok(Ok(sha256)) => HttpResponse::Ok().json(json!({ "name": name, "sha256": sha256 })),
        Ok(Err(why)) => {
            let status = match why {
                UploadError::Unknown(_) => StatusCode::NOT_FOUND,
                UploadError::BuiltIn(..) => StatusCode::CONFLICT,
                UploadError::Invalid(_) => StatusCode::BAD_REQUEST,
                UploadError::Write(..) | UploadError::Stopping => StatusCode::INTERNAL_SERVER_ERROR,
            };
            tracing::warn!(plugin = name, error = %why, "plugin upload refused");
            error(status, &why.to_string())
        }
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    }
}

/// A load test asked for.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadTestRequest {
    /// One of `load_test.urls`.
    url: String,
    /// Levels of concurrent clients; default `load_test.levels`.
    concurrency: Option<Vec<usize>>,
    /// Per level, like `"10s"`; default `load_test.duration`.
    duration: Option<String>,
}

/// `POST /api/v1/load-tests`: starts a run against a configured URL; 202, or 409 while one runs.
async fn start_load_test(
    monitors: web::Data<Monitors>,
    operations: web::Data<Operations>,
    asked: web::Json<LoadTestRequest>,
) -> HttpResponse {
    let loaded = operations.config();
    let config = &loaded.config.load_test;
    let duration = match asked.duration.as_deref().map(humantime::parse_duration) {
        None => config.duration,
        Some(Ok(duration)) => duration,
        Some(Err(err)) => return error(StatusCode::BAD_REQUEST, &format!("duration: {err}")),
    };
    let asked = asked.into_inner();
    let test = LoadTest {
        url: asked.url,
        levels: asked.concurrency.unwrap_or_else(|| config.levels.clone()),
        duration,
        timeout: config.timeout,
    };
    match monitors.on_demand.start(test, &config.urls) {
        Ok(()) => HttpResponse::Accepted().json(json!({ "started": true })),
        Err(StartError::Busy(url)) => error(
            StatusCode::CONFLICT,
            &format!("a load test is already running against {url}"),
        ),
        Err(why) => error(StatusCode::BAD_REQUEST, &why.to_string()),
    }
}

/// `GET /api/v1/load-tests/current`: the run going on (progress), or the last one's report.
async fn load_test_status(monitors: web::Data<Monitors>) -> HttpResponse {
    HttpResponse::Ok().json(monitors.on_demand.status())
}

/// `GET /api/v1/load-tests/targets`: the URLs a load test may be run against, and the defaults.
async fn load_test_targets(operations: web::Data<Operations>) -> HttpResponse {
    let loaded = operations.config();
    let config = &loaded.config.load_test;
    HttpResponse::Ok().json(json!({
        "urls": config.urls,
        "concurrency": config.levels,
        "duration": humantime::format_duration(config.duration).to_string(),
        "max_duration_seconds": crate::loadtest::on_demand::MAX_DURATION.as_secs(),
    }))
}

/// `POST /api/v1/config/reload`: as SIGHUP, but answering: 200, or 422 with the problems (file,
/// key and line).
async fn reload(operations: web::Data<Operations>) -> HttpResponse {
    match web::block(move || operations.reload()).await {
        Ok(Ok(())) => {
            tracing::info!("configuration reloaded from the admin API");
            HttpResponse::Ok().json(json!({ "reloaded": true }))
        }
        Ok(Err(why)) => error(StatusCode::UNPROCESSABLE_ENTITY, &why),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    }
}
