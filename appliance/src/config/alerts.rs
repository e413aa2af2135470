//! `[alerts]`: threshold rules over recent traffic and the machine, and where to send their
//! firing and resolution.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::durations;

/// Alert rules and their notification.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// The reference deployment's scaling indicators as rules, each held for 2 minutes: CPU
    /// over 70%, memory over 80%, average response over 2 s, database pool usage over 80%,
    /// errors over 2%. Default `true`.
    pub defaults: bool,
    /// More rules (`[[alerts.rules]]`). Default: none.
    pub rules: Vec<AlertRule>,
    /// Each firing and resolution is POSTed here as JSON (`http://` or `https://`). Default:
    /// none.
    pub webhook: Option<String>,
    /// Tries per notification before it is given up (logged), waiting 1 s, 2 s, 4 s, ...
    /// between them. Default `3`.
    pub webhook_attempts: u32,
    /// Time one try may take. Default `"5s"`.
    #[serde(with = "durations")]
    pub webhook_timeout: Duration,
    /// Firings and resolutions kept in the history (in the state store). Default `1000`.
    pub history: usize,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            defaults: true,
            rules: Vec::new(),
            webhook: None,
            webhook_attempts: 3,
            webhook_timeout: Duration::from_secs(5),
            history: 1000,
        }
    }
}

/// One rule: `measure` of `route` above (or below) a threshold over `window`, for `for`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// Its name, unique among the rules. Required.
    pub name: String,
    /// What is watched. Required.
    pub measure: Measure,
    /// The route whose traffic is measured, or `"*"` for all. Default `"*"`.
    #[serde(default = "AlertRule::all_routes")]
    pub route: String,
    /// Fires while the measure is above this.
    #[serde(default)]
    pub above: Option<f64>,
    /// Fires while the measure is below this.
    #[serde(default)]
    pub below: Option<f64>,
    /// How long the condition must hold before the alert fires. Default `"0s"`.
    #[serde(rename = "for", with = "durations", default)]
    pub hold: Duration,
    /// The span of recent traffic the measure covers (at most `monitoring.window`).
    /// Default `"1m"`.
    #[serde(with = "durations", default = "AlertRule::default_window")]
    pub window: Duration,
    /// `"info"`, `"warning"` or `"critical"`. Default `"warning"`.
    #[serde(default)]
    pub severity: AlertSeverity,
    /// Traffic measures are not judged below this many requests per second, so that one
    /// failed request on a quiet route is not a 100% error rate. Default `0.1`.
    #[serde(default = "AlertRule::default_min_rate")]
    pub min_requests_per_second: f64,
}

impl AlertRule {
    fn all_routes() -> String {
        "*".into()
    }
    fn default_window() -> Duration {
        Duration::from_secs(60)
    }
    fn default_min_rate() -> f64 {
        0.1
    }

    /// While Redis is unreachable: shared rate limits fall back to counting per instance (or
    /// refuse, when `closed`) and the cache to its local tiers. Added when Redis is enabled.
    pub fn redis_down(severity: AlertSeverity) -> AlertRule {
        AlertRule {
            name: "redis-down".into(),
            measure: Measure::RedisUp,
            route: Self::all_routes(),
            above: None,
            below: Some(1.0),
            hold: Duration::from_secs(10),
            window: Self::default_window(),
            severity,
            min_requests_per_second: 0.0,
        }
    }

    /// The built-in rules: the reference deployment's scaling indicators.
    pub fn defaults() -> Vec<AlertRule> {
        let rule = |name: &str, measure, above| AlertRule {
            name: name.into(),
            measure,
            route: Self::all_routes(),
            above: Some(above),
            below: None,
            hold: Duration::from_secs(120),
            window: Self::default_window(),
            severity: AlertSeverity::Warning,
            min_requests_per_second: Self::default_min_rate(),
        };
        vec![
            rule("cpu-high", Measure::CpuPercent, 70.0),
            rule("memory-high", Measure::MemoryPercent, 80.0),
            rule("latency-high", Measure::LatencyAvgMs, 2000.0),
            rule("pool-usage-high", Measure::PoolUsageRatio, 0.8),
            rule("error-rate-high", Measure::ErrorRatio, 0.02),
        ]
    }
}

/// What a rule watches: the figures of a recommendations snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Host CPU use, 0 to 100.
    CpuPercent,
    /// Host memory use, 0 to 100.
    MemoryPercent,
    /// Requests per second.
    RequestsPerSecond,
    /// Average response time.
    LatencyAvgMs,
    /// Median response time.
    LatencyP50Ms,
    /// 90th percentile response time.
    LatencyP90Ms,
    /// 99th percentile response time.
    LatencyP99Ms,
    /// 99.9th percentile response time.
    LatencyP999Ms,
    /// Share of 5xx answers, 0 to 1.
    ErrorRatio,
    /// Share of cache hits on a cached route, 0 to 1.
    CacheHitRatio,
    /// The busiest database pool's share of its connections in use, 0 to 1.
    PoolUsageRatio,
    /// 1 while Redis is reachable, 0 while not (shared limits and cache fall back).
    RedisUp,
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertSeverity {
    /// Worth knowing.
    Info,
    /// Worth acting on soon.
    #[default]
    Warning,
    /// Act now.
    Critical,
}
