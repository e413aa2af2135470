//! The rate-limit phase: the route's rate-limit plugin decides what the request counts against
//! and how much is allowed; this phase counts (GCRA) and answers. Allowed responses carry the
//! `RateLimit` and `RateLimit-Policy` fields (draft-ietf-httpapi-ratelimit-headers-11); refused
//! ones are `429 Too Many Requests` with `Retry-After` too.

pub mod gcra;

use std::time::Duration;

use actix_web::body::BoxBody;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use actix_web::{HttpRequest, HttpResponse};

use self::gcra::{Gcra, Quota};
use super::plugin_call::{self, plain};
use crate::policy::rate_limit_types::{Decision, Deny, Limit};
use crate::policy::{Plugin, Request};
use crate::upstream::clock_ms;

static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// What the phase decided.
pub(crate) enum Outcome {
    /// Go on; the fields to add to the response, when the request was counted.
    Continue(Option<[(HeaderName, HeaderValue); 2]>),
    /// Answer now.
    Answer(HttpResponse<BoxBody>),
}

/// Applies `plugin` to `request` (`req` as plugins see it).
pub(crate) fn apply(plugin: &Plugin, gcra: &Gcra, req: &HttpRequest, request: &Request) -> Outcome {
    match plugin.current().decide(request, Some(req)) {
        Ok(Decision::Allow) => Outcome::Continue(None),
        Ok(Decision::Deny(deny)) => Outcome::Answer(denied(deny)),
        Ok(Decision::Limit(limit)) => count(gcra, &limit),
        Err(err) => match plugin_call::fallback(plugin, "rate-limit", &err) {
            None => Outcome::Continue(None),
            Some(answer) => Outcome::Answer(answer),
        },
    }
}

fn count(gcra: &Gcra, limit: &Limit) -> Outcome {
    let q = &limit.quota;
    let quota = Quota {
        limit: q.limit,
        window: Duration::from_millis(u64::from(q.window_ms)),
        burst: q.burst,
        cost: q.cost,
    };
    let verdict = gcra.spend(
        &limit.policy,
        &limit.key,
        quota,
        clock_ms().saturating_mul(1_000_000),
    );
    let name = structured_string(&limit.policy);
    let policy = field(&format!("{name};q={};w={}", q.limit, seconds(quota.window)));
    let state = field(&format!(
        "{name};r={};t={}",
        verdict.remaining,
        seconds(verdict.reset)
    ));
    if verdict.allowed {
        return Outcome::Continue(Some([
            (RATELIMIT_POLICY.clone(), policy),
            (RATELIMIT.clone(), state),
        ]));
    }
    let retry = seconds(verdict.retry_after).max(1);
    let mut response = plain(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "429 Too Many Requests: the {} rate limit is used up; retry in {retry} s\n",
            limit.policy.escape_default()
        ),
    );
    let headers = response.headers_mut();
    headers.insert(RETRY_AFTER, HeaderValue::from(retry));
    headers.insert(RATELIMIT_POLICY.clone(), policy);
    headers.insert(RATELIMIT.clone(), state);
    Outcome::Answer(response)
}

/// The plugin's own refusal. Its status must be an error status and its headers valid; what is
/// not is replaced rather than trusted.
fn denied(deny: Deny) -> HttpResponse<BoxBody> {
    let status = StatusCode::from_u16(deny.status)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error());
    let mut response = HttpResponse::with_body(status.unwrap_or(StatusCode::FORBIDDEN), deny.body)
        .map_into_boxed_body();
    for header in deny.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(header.name),
            HeaderValue::try_from(header.value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// Whole seconds, rounded up (a client told 0 would retry at once).
fn seconds(duration: Duration) -> u64 {
    duration
        .as_nanos()
        .div_ceil(1_000_000_000)
        .min(u128::from(u64::MAX)) as u64
}

/// An RFC 8941 string: quoted, printable ASCII, `"` and `\` escaped.
fn structured_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text
        .chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control())
    {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn field(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("\"invalid\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_names_become_structured_strings() {
        assert_eq!(structured_string("api"), "\"api\"");
        assert_eq!(structured_string("a\"b\\c\n"), "\"a\\\"b\\\\c\"");
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(seconds(Duration::from_millis(1)), 1);
        assert_eq!(seconds(Duration::from_secs(2)), 2);
        assert_eq!(seconds(Duration::ZERO), 0);
    }
}
