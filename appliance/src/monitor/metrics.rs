//! The metrics registry: one place every subsystem reports to, exposed at `/metrics` on the
//! admin listener in the OpenMetrics text format (which Prometheus scrapes), with conventional
//! names and units (`_seconds`, `_bytes`, `_total`).
//!
//! Two kinds of metric:
//! - events, counted on the request path as they happen: requests, latency, rejections by
//!   reason, upstream errors, rate-limit decisions ([`Metrics`]);
//! - state, read only when scraped: cache, plugins, connections, upstream health, the process
//!   and the host ([`super::live`]), so the request path never pays for it.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use super::business::BusinessMetrics;

/// Latency buckets: 100 µs to about a minute, each 1.5 times the last, so a percentile read
/// from them is within 25% of the truth.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 1.5, 34))
}

type Latency = Family<RouteLabels, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Arc<str>,
    method: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    route: Arc<str>,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodingLabels {
    coding: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteCodingLabels {
    route: Arc<str>,
    coding: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    route: Arc<str>,
    result: &'static str,
}

/// Bytes into and out of one coding's compressor (their ratio is the compression ratio, their
/// difference the bandwidth saved).
#[derive(Clone, Debug, Default)]
pub struct CompressionCounters {
    /// Bytes compressed.
    pub input: Counter,
    /// Bytes they compressed to.
    pub output: Counter,
}

/// The longest policy label, in characters.
const POLICY_LABEL_CHARS: usize = 64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    route: Arc<str>,
    policy: String,
    decision: &'static str,
}

/// What a rate-limit phase decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Counted and within the quota, or let through by the plugin without counting.
    Allowed,
    /// Over the quota (429).
    Limited,
    /// Refused by the plugin itself.
    Denied,
    /// Not countable: shared limits with Redis down and `when_redis_down = "closed"` (503).
    Unavailable,
    /// The plugin failed; its fallback applied.
    Failed,
}

impl Decision {
    fn name(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Limited => "limited",
            Self::Denied => "denied",
            Self::Unavailable => "unavailable",
            Self::Failed => "failed",
        }
    }
}

/// Event metrics, shared by every worker.
pub struct Metrics {
    registry: Registry,
    business: Arc<BusinessMetrics>,
    requests: Family<RequestLabels, Counter>,
    duration: Latency,
    response_bytes: Family<RouteLabels, Counter>,
    rejections: Family<ReasonLabels, Counter>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    upstream_header_time: Latency,
    rate_limits: Family<DecisionLabels, Counter>,
    compression_input: Family<CodingLabels, Counter>,
    compression_output: Family<CodingLabels, Counter>,
    compressible: Family<RouteCodingLabels, Counter>,
    cache: Family<CacheLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("gatehouse");
        let requests = Family::default();
        registry.register(
            "http_requests",
            "Requests answered, by route, method and status class",
            requests.clone(),
        );
        let duration: Latency = Family::new_with_constructor(latency_buckets);
        registry.register_with_unit(
            "http_request_duration",
            "From the request head to the last byte of the response, by route",
            Unit::Seconds,
            duration.clone(),
        );
        let response_bytes = Family::default();
        registry.register_with_unit(
            "http_response_body",
            "Response body bytes sent, by route",
            Unit::Bytes,
            response_bytes.clone(),
        );
        let rejections = Family::default();
        registry.register(
            "http_rejections",
            "Requests refused before reaching an upstream, by reason and status",
            rejections.clone(),
        );
        let upstream_errors = Family::default();
        registry.register(
            "upstream_errors",
            "Upstream failures answered with 502, 503 or 504, by route and reason",
            upstream_errors.clone(),
        );
        let upstream_header_time: Latency = Family::new_with_constructor(latency_buckets);
        registry.register_with_unit(
            "upstream_response_header_duration",
            "From sending the request upstream to its response head, by route",
            Unit::Seconds,
            upstream_header_time.clone(),
        );
        let rate_limits = Family::default();
        registry.register(
            "rate_limit_decisions",
            "Rate-limit phase outcomes, by route, policy and decision",
            rate_limits.clone(),
        );
        let compression_input = Family::default();
        registry.register_with_unit(
            "compression_input",
            "Bytes given to the compressor (responses and cache variants), by coding",
            Unit::Bytes,
            compression_input.clone(),
        );
        let compression_output = Family::default();
        registry.register_with_unit(
            "compression_output",
            "Bytes the compressor made of them, by coding",
            Unit::Bytes,
            compression_output.clone(),
        );
        let compressible = Family::default();
        registry.register(
            "http_compressible_responses",
            "Responses worth compressing (type and length), by route and the coding they were sent in",
            compressible.clone(),
        );
        let cache = Family::default();
        registry.register(
            "cache_requests",
            "What the cache did (X-Cache: hit, stale, revalidated, miss, bypass), by route",
            cache.clone(),
        );
        let business = Arc::new(BusinessMetrics::default());
        registry.register_collector(business.collector());
        Self {
            registry,
            business,
            requests,
            duration,
            response_bytes,
            rejections,
            upstream_errors,
            upstream_header_time,
            rate_limits,
            compression_input,
            compression_output,
            compressible,
            cache,
        }
    }
}

/// One answered request, as the finish phase saw it.
pub struct Answered<'a> {
    /// The route's name; `None` when no route matched.
    pub route: Option<&'a Arc<str>>,
    /// The request method.
    pub method: &'a Method,
    /// The response status.
    pub status: StatusCode,
    /// Head to last byte.
    pub duration: Duration,
    /// Body bytes sent.
    pub bytes: u64,
    /// Time to the upstream's response head, when one answered.
    pub upstream_header_time: Option<Duration>,
    /// What the cache did (`hit`, `miss`, ...), on routes with a cache.
    pub cache: Option<&'static str>,
    /// The coding a response worth compressing was sent in (`identity` when it went
    /// uncompressed).
    pub coding: Option<&'static str>,
}

impl Metrics {
    /// Counts one answered request.
    pub fn answered(&self, answered: &Answered<'_>) {
        let route = route_label(answered.route);
        self.requests
            .get_or_create(&RequestLabels {
                route: Arc::clone(&route),
                method: method_label(answered.method),
                status: status_class(answered.status),
            })
            .inc();
        let route = RouteLabels { route };
        self.duration
            .get_or_create(&route)
            .observe(answered.duration.as_secs_f64());
        self.response_bytes
            .get_or_create(&route)
            .inc_by(answered.bytes);
        if let Some(header_time) = answered.upstream_header_time {
            self.upstream_header_time
                .get_or_create(&route)
                .observe(header_time.as_secs_f64());
        }
        if let Some(result) = answered.cache {
            let route = Arc::clone(&route.route);
            self.cache
                .get_or_create(&CacheLabels { route, result })
                .inc();
        }
        if let Some(coding) = answered.coding {
            let route = route.route;
            self.compressible
                .get_or_create(&RouteCodingLabels { route, coding })
                .inc();
        }
    }

    /// Counts a request refused before any upstream, with the `reason` and `status` it got.
    pub fn rejected(&self, reason: &'static str, status: StatusCode) {
        let labels = ReasonLabels {
            reason,
            status: status.as_u16(),
        };
        self.rejections.get_or_create(&labels).inc();
    }

    /// Counts an upstream failure on `route`.
    pub fn upstream_failed(&self, route: Option<&Arc<str>>, reason: &'static str) {
        let labels = UpstreamErrorLabels {
            route: route_label(route),
            reason,
        };
        self.upstream_errors.get_or_create(&labels).inc();
    }

    /// Counts a rate-limit `decision` on `route` under `policy` (taken: the plugin's answer
    /// is already a string of its own).
    pub fn rate_limit(&self, route: &Arc<str>, mut policy: String, decision: Decision) {
        // Policy names come from plugins: bounded, so one cannot grow a label without end.
        // A name of no more bytes than that has no more characters: only a long one is walked.
        if policy.len() > POLICY_LABEL_CHARS
            && let Some((cut, _)) = policy.char_indices().nth(POLICY_LABEL_CHARS)
        {
            policy.truncate(cut);
        }
        let labels = DecisionLabels {
            route: Arc::clone(route),
            policy,
            decision: decision.name(),
        };
        self.rate_limits.get_or_create(&labels).inc();
    }

    /// The counters of `coding` (its `Content-Encoding` token), to keep and bump directly.
    pub fn compression(&self, coding: &'static str) -> CompressionCounters {
        let labels = CodingLabels { coding };
        CompressionCounters {
            input: self.compression_input.get_or_create(&labels).clone(),
            output: self.compression_output.get_or_create(&labels).clone(),
        }
    }

    /// The values the app posts (orders, sign-ups, ...).
    pub fn business(&self) -> &Arc<BusinessMetrics> {
        &self.business
    }

    /// The event metrics, then `live` (state read now), in the OpenMetrics text format.
    pub fn render(&self, live: &Registry) -> String {
        let mut text = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut text, &self.registry)
            .and_then(|()| encode_registry(&mut text, live))
            .and_then(|()| encode_eof(&mut text));
        text
    }
}

fn route_label(route: Option<&Arc<str>>) -> Arc<str> {
    static NONE: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    route.map_or_else(
        || Arc::clone(NONE.get_or_init(|| Arc::from(""))),
        Arc::clone,
    )
}

/// The method, or `_OTHER` for any outside the standard ones (clients choose methods freely;
/// the name is OpenTelemetry's).
pub(crate) fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_method_and_class() {
        let metrics = Metrics::default();
        let route: Arc<str> = Arc::from("api");
        for status in [200, 204, 404] {
            metrics.answered(&Answered {
                route: Some(&route),
                method: &Method::from_bytes(b"BREW").unwrap(),
                status: StatusCode::from_u16(status).unwrap(),
                duration: Duration::from_millis(3),
                bytes: 10,
                upstream_header_time: None,
                cache: (status == 200).then_some("hit"),
                coding: Some("gzip"),
            });
        }
        let text = metrics.render(&Registry::default());
        assert!(
            text.contains(
                "gatehouse_http_requests_total{route=\"api\",method=\"_OTHER\",status=\"2xx\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("gatehouse_http_response_body_bytes_total{route=\"api\"} 30"));
        assert!(text.contains("gatehouse_http_request_duration_seconds_count{route=\"api\"} 3"));
        assert!(text.contains("gatehouse_cache_requests_total{route=\"api\",result=\"hit\"} 1"));
        assert!(text.contains(
            "gatehouse_http_compressible_responses_total{route=\"api\",coding=\"gzip\"} 3"
        ));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn long_policy_names_are_cut() {
        let metrics = Metrics::default();
        let route: Arc<str> = Arc::from("r");
        metrics.rate_limit(&route, "p".repeat(500), Decision::Limited);
        let text = metrics.render(&Registry::default());
        let expected = format!(
            "gatehouse_rate_limit_decisions_total{{route=\"r\",policy=\"{}\",decision=\"limited\"}} 1",
            "p".repeat(POLICY_LABEL_CHARS)
        );
        assert!(text.contains(&expected), "{text}");
    }
}
