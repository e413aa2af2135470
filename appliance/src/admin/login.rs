//! Logging in to the web UI: the admin token buys a session cookie ([`session`]), and logging
//! out ends it. The token rules still hold: a wrong one counts as a guess from that address.

use std::time::Instant;

use actix_web::cookie::{Cookie, SameSite, time};
use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::session::{self, Session};
use super::token::{AdminAuth, Refusal};
use super::{error, refusal};

/// The login form.
#[derive(Deserialize)]
pub(super) struct Credentials {
    token: String,
}

/// `POST /ui/login` with `{"token": ...}`: sets the session cookie, answers `{"csrf": ...}`.
pub(super) async fn login(
    req: HttpRequest,
    auth: web::Data<AdminAuth>,
    credentials: web::Json<Credentials>,
) -> HttpResponse {
    let client = req.peer_addr().map(|addr| addr.ip());
    match auth.check_token(client, Some(credentials.token.as_bytes())) {
        Ok(()) => {}
        Err(Refusal::Unauthorized) => {
            tracing::warn!(client = ?client, "web UI login with a wrong token");
            return error(StatusCode::UNAUTHORIZED, "wrong admin token");
        }
        Err(why) => return refusal(why),
    }
    let login = auth.sessions.start(Instant::now());
    tracing::info!(client = ?client, "web UI login");
    let lifetime = time::Duration::seconds(session::LIFETIME.as_secs() as i64);
    HttpResponse::Ok()
        .cookie(cookie(login.cookie).max_age(lifetime).finish())
        .json(serde_json::json!({ "csrf": login.csrf }))
}

/// `POST /ui/logout` (behind the session check): ends the session and clears the cookie.
pub(super) async fn logout(req: HttpRequest, auth: web::Data<AdminAuth>) -> HttpResponse {
    if let Some(cookie) = req.cookie(session::COOKIE) {
        auth.sessions.end(cookie.value());
    }
    let mut gone = cookie(String::new()).finish();
    gone.make_removal();
    HttpResponse::NoContent().cookie(gone).finish()
}

/// `GET /api/v1/session`: the CSRF token of the caller's session (`null` for a bearer token,
/// which needs none).
pub(super) async fn current(req: HttpRequest) -> HttpResponse {
    let csrf = req.extensions().get::<Session>().map(|s| s.csrf.clone());
    HttpResponse::Ok().json(serde_json::json!({ "csrf": csrf }))
}

/// The session cookie: only for HTTP (no script reads it), only over TLS or to localhost, and
/// never on a request another site starts.
fn cookie(value: String) -> actix_web::cookie::CookieBuilder<'static> {
    Cookie::build(session::COOKIE, value)
        .path("/")
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
}

/// The answer to a session cookie that does not pass.
pub(super) fn session_refusal(why: &session::SessionRefusal) -> HttpResponse {
    match why {
        session::SessionRefusal::Unknown => error(
            StatusCode::UNAUTHORIZED,
            "the session has ended; log in again",
        ),
        session::SessionRefusal::MissingCsrf => error(
            StatusCode::FORBIDDEN,
            "this call changes something: it needs the session's X-CSRF-Token header",
        ),
    }
}
