//! The rate-limit phase: the route's rate-limit plugin decides what the request counts against
//! and how much is allowed; this phase counts (GCRA) and answers. Allowed responses carry the
//! `RateLimit` and `RateLimit-Policy` fields (draft-ietf-httpapi-ratelimit-headers-11); refused
//! ones are `429 Too Many Requests` with `Retry-After` too.
//!
//! Counts live in this process ([`gcra`]), or in Redis when `redis.enabled` ([`shared`]) so
//! that every instance spends from one quota. While Redis is unreachable,
//! `rate_limits.when_redis_down` decides: count in this process alone (open), or refuse with 503
//! (closed).

pub mod gcra;
mod shared;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::body::BoxBody;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use actix_web::{HttpRequest, HttpResponse};

use tracing::{info, warn};

use self::gcra::{Gcra, Quota, Verdict};
use self::shared::SharedLimits;
use super::plugin_call::{self, plain};
use crate::config::{RateLimitsConfig, WhenRedisDown};
use crate::monitor::metrics::{Decision as MetricDecision, Metrics};
use crate::policy::rate_limit_types::{Decision, Deny, Limit};
use crate::policy::{Plugin, Request};
use crate::redis::RedisLink;
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

/// Where counts are kept; lives across reloads.
pub(crate) struct Limiter {
    local: Gcra,
    shared: Option<SharedLimits>,
    /// Whether the last shared decision failed, to log each change once.
    redis_failing: AtomicBool,
}

/// How the phase behaves, per config generation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LimitSettings {
    headers_on_allowed: bool,
    when_redis_down: WhenRedisDown,
}

impl LimitSettings {
    pub(crate) fn new(config: &RateLimitsConfig) -> Self {
        Self {
            headers_on_allowed: config.headers_on_allowed,
            when_redis_down: config.when_redis_down,
        }
    }
}

impl Limiter {
    /// Counts as `config` says; in Redis through `redis` when given and `rate_limits.shared`.
    pub(crate) fn new(config: &RateLimitsConfig, redis: Option<Arc<RedisLink>>) -> Self {
        Self {
            local: Gcra::new(config.max_keys),
            shared: redis.filter(|_| config.shared).map(SharedLimits::new),
            redis_failing: AtomicBool::new(false),
        }
    }

    /// Whether limits are shared through Redis, and Redis is reachable now.
    pub(crate) fn shared_status(&self) -> Option<bool> {
        self.shared.as_ref().map(SharedLimits::is_connected)
    }

    /// Spends `quota` of `key` within `scope`; `None` when it cannot be counted and the
    /// settings say to refuse then.
    async fn spend(
        &self,
        scope: &str,
        key: &str,
        quota: Quota,
        when_redis_down: WhenRedisDown,
    ) -> Option<Verdict> {
        if let Some(shared) = &self.shared {
            // Boxed: a Redis call is a large future, which would otherwise grow every
            // request's state (allocated and moved whole per request by actix).
            let spent = Box::pin(shared.spend(scope, key, quota)).await;
            self.note_redis(spent.as_ref().err(), when_redis_down);
            match spent {
                Ok(verdict) => return Some(verdict),
                Err(_) if when_redis_down == WhenRedisDown::Closed => return None,
                Err(_) => {}
            }
        }
        let now_ns = clock_ms().saturating_mul(1_000_000);
        Some(self.local.spend(scope, key, quota, now_ns))
    }

    /// Logs when shared counting starts or stops failing.
    fn note_redis(&self, failure: Option<&fred::error::Error>, when_redis_down: WhenRedisDown) {
        let failing = failure.is_some();
        if self.redis_failing.swap(failing, Ordering::Relaxed) == failing {
            return;
        }
        match (failure, when_redis_down) {
            (Some(err), WhenRedisDown::Open) => warn!(
                error = %err,
                "shared rate limits: Redis is unreachable; each instance counts alone until it is back"
            ),
            (Some(err), WhenRedisDown::Closed) => warn!(
                error = %err,
                "shared rate limits: Redis is unreachable; limited requests are refused until it is back"
            ),
            (None, _) => info!("shared rate limits: Redis is back; counting in Redis again"),
        }
    }
}

/// The phase for one request: where it counts, how it answers, where it reports.
pub(crate) struct Phase<'a> {
    pub(crate) limiter: &'a Limiter,
    pub(crate) settings: LimitSettings,
    pub(crate) metrics: &'a Metrics,
    /// The route's name, for the metrics.
    pub(crate) route: &'a Arc<str>,
}

impl Phase<'_> {
    /// Applies `plugin` to `request` (`req` as plugins see it).
    pub(crate) async fn apply(
        &self,
        plugin: &Plugin,
        req: &HttpRequest,
        request: &Request,
    ) -> Outcome {
        let version = plugin.current();
        let decision = version.decide(request, Some(req));
        let (policy, outcome) = match decision {
            Ok(Decision::Allow) => (None, Outcome::Continue(None)),
            Ok(Decision::Deny(deny)) => (None, Outcome::Answer(denied(deny))),
            Ok(Decision::Limit(limit)) => {
                let quota = quota(&limit);
                let when_down = self.settings.when_redis_down;
                let verdict = self
                    .limiter
                    .spend(&limit.policy, &limit.key, quota, when_down)
                    .await;
                let outcome = match verdict {
                    Some(verdict) => answer(&limit, quota, verdict, self.settings),
                    None => Outcome::Answer(uncountable()),
                };
                (Some(limit.policy), outcome)
            }
            Err(err) => {
                let answer = plugin_call::fallback(plugin, "rate-limit", &err);
                let policy = version.name().to_string();
                self.metrics
                    .rate_limit(self.route, policy, MetricDecision::Failed);
                return answer.map_or(Outcome::Continue(None), Outcome::Answer);
            }
        };
        let decision = match &outcome {
            Outcome::Continue(_) => MetricDecision::Allowed,
            Outcome::Answer(answer) => match answer.status() {
                StatusCode::TOO_MANY_REQUESTS if policy.is_some() => MetricDecision::Limited,
                StatusCode::SERVICE_UNAVAILABLE if policy.is_some() => MetricDecision::Unavailable,
                _ => MetricDecision::Denied,
            },
        };
        let policy = policy.unwrap_or_else(|| version.name().to_string());
        self.metrics.rate_limit(self.route, policy, decision);
        outcome
    }
}

fn quota(limit: &Limit) -> Quota {
    let q = &limit.quota;
    Quota {
        limit: q.limit,
        window: Duration::from_millis(u64::from(q.window_ms)),
        burst: q.burst,
        cost: q.cost,
    }
}

fn answer(limit: &Limit, quota: Quota, verdict: Verdict, settings: LimitSettings) -> Outcome {
    if verdict.allowed && !settings.headers_on_allowed {
        return Outcome::Continue(None);
    }
    let name = structured_string(&limit.policy);
    let window = seconds(quota.window);
    let policy = field(&name, [("q", quota.limit.into()), ("w", window)]);
    let reset = seconds(verdict.reset);
    let state = field(&name, [("r", verdict.remaining.into()), ("t", reset)]);
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

/// Limits are shared, Redis is unreachable, and the config says to refuse then.
fn uncountable() -> HttpResponse<BoxBody> {
    let mut response = plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "503 Service Unavailable: rate limits cannot be checked now (Redis is unreachable)\n"
            .to_string(),
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
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

/// `name;key=number;key=number`, written without the formatting machinery: every counted
/// request carries two of these.
fn field(name: &str, parameters: [(&str, u64); 2]) -> HeaderValue {
    let mut value = String::with_capacity(name.len() + 32);
    value.push_str(name);
    let mut digits = itoa::Buffer::new();
    for (key, number) in parameters {
        value.push(';');
        value.push_str(key);
        value.push('=');
        value.push_str(digits.format(number));
    }
    HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static("\"invalid\""))
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
