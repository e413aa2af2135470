//! Advice when a route misses its service-level objective.
//!
//! Each objective names a route, a latency percentile target and an error budget. A route slower
//! than its target is a warning, twice as slow a critical; errors burn the budget at
//! `error ratio / budget` times the sustainable rate: above 1 is a warning, at 10 or more (the
//! budget of a month gone in three days) a critical. Slowness on a cacheable route with a poor
//! hit ratio comes with a suggested cache setting. Quiet routes are not judged.
//!
//! ```toml
//! [plugins.slo]
//! kind = "recommendations"
//! source = "examples/plugins/dist/endpoint-slo.wasm"
//! config = { objectives = [
//!   { route = "checkout", percentile = "p99", latency_ms = 300, error_budget = 0.001 },
//!   { route = "api", percentile = "p90", latency_ms = 150 },
//! ] }
//! ```

use std::sync::OnceLock;

use gatehouse_sdk::recommend::{RecommendPolicy, Recommendation, Severity, Snapshot, Traffic};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    objectives: Vec<Objective>,
    /// Requests per second below which a route is too quiet to judge.
    min_requests_per_second: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Objective {
    route: String,
    #[serde(default)]
    percentile: Percentile,
    latency_ms: f64,
    /// Share of requests that may fail (5xx), 0 to 1.
    #[serde(default = "Objective::default_budget")]
    error_budget: f64,
}

impl Objective {
    fn default_budget() -> f64 {
        0.01
    }
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Percentile {
    P50,
    P90,
    #[default]
    P99,
    P999,
}

impl Percentile {
    fn of(self, traffic: &Traffic) -> f64 {
        match self {
            Self::P50 => traffic.latency_p50_ms,
            Self::P90 => traffic.latency_p90_ms,
            Self::P99 => traffic.latency_p99_ms,
            Self::P999 => traffic.latency_p999_ms,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::P50 => "p50",
            Self::P90 => "p90",
            Self::P99 => "p99",
            Self::P999 => "p99.9",
        }
    }
}

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(gatehouse_sdk::host::config_json)
}

struct EndpointSlo;

impl EndpointSlo {
    fn recommend_with(config: &Config, snapshot: &Snapshot) -> Vec<Recommendation> {
        let quiet = config.min_requests_per_second.unwrap_or(0.1);
        config
            .objectives
            .iter()
            .filter_map(|objective| {
                let traffic = snapshot
                    .traffic
                    .iter()
                    .find(|t| t.route == objective.route)?;
                (traffic.requests_per_second >= quiet).then_some((objective, traffic))
            })
            .flat_map(|(objective, traffic)| {
                [latency(objective, traffic), errors(objective, traffic)]
            })
            .flatten()
            .collect()
    }
}

fn latency(objective: &Objective, traffic: &Traffic) -> Option<Recommendation> {
    let (percentile, target) = (objective.percentile, objective.latency_ms);
    let observed = percentile.of(traffic);
    if observed <= target {
        return None;
    }
    let severity = if observed >= 2.0 * target {
        Severity::Critical
    } else {
        Severity::Warning
    };
    // A slow median means every request is slow (the app or the database); a fast median under a
    // slow tail points at queueing, cold caches or a few heavy requests.
    let shape = if traffic.latency_p50_ms > target {
        "Even the median request is over the target: the upstream itself is slow for this route."
    } else {
        "The median is within target, so the tail is the problem: look at queueing, pool waits and heavy requests."
    };
    let poorly_cached = traffic.cacheable && traffic.cache_hit_ratio.is_some_and(|hit| hit < 0.5);
    let suggested_change = poorly_cached.then(|| {
        // Serving stale while one refresh runs takes the upstream's latency off the hit path.
        format!(
            "# the cache-rules plugin bound to route \"{}\"\nconfig = {{ stale_while_revalidate = 30 }}",
            traffic.route
        )
    });
    Some(Recommendation {
        id: format!("slo:{}:latency", traffic.route),
        severity,
        title: format!(
            "{}: {} latency {:.0} ms misses its {:.0} ms objective",
            traffic.route,
            percentile.name(),
            observed,
            target
        ),
        detail: format!(
            "p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms at {:.1} req/s. {shape}",
            traffic.latency_p50_ms,
            traffic.latency_p90_ms,
            traffic.latency_p99_ms,
            traffic.requests_per_second
        ),
        suggested_change,
    })
}

fn errors(objective: &Objective, traffic: &Traffic) -> Option<Recommendation> {
    let burn = traffic.error_ratio / objective.error_budget.max(f64::MIN_POSITIVE);
    if burn <= 1.0 {
        return None;
    }
    Some(Recommendation {
        id: format!("slo:{}:errors", traffic.route),
        severity: if burn >= 10.0 {
            Severity::Critical
        } else {
            Severity::Warning
        },
        title: format!(
            "{}: {:.2}% errors burn its error budget {:.1}x too fast",
            traffic.route,
            traffic.error_ratio * 100.0,
            burn
        ),
        detail: format!(
            "The objective allows {:.2}% of requests to fail. At this rate a 30-day budget lasts {:.1} days.",
            objective.error_budget * 100.0,
            30.0 / burn
        ),
        suggested_change: None,
    })
}

impl RecommendPolicy for EndpointSlo {
    fn recommend(snapshot: &Snapshot) -> Vec<Recommendation> {
        Self::recommend_with(config(), snapshot)
    }
}

gatehouse_sdk::recommend_policy!(EndpointSlo);

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_sdk::host::parse_config;

    fn traffic(route: &str, p50: f64, p99: f64, error_ratio: f64) -> Traffic {
        Traffic {
            route: route.into(),
            requests_per_second: 20.0,
            latency_avg_ms: p50,
            latency_p50_ms: p50,
            latency_p90_ms: (p50 + p99) / 2.0,
            latency_p99_ms: p99,
            latency_p999_ms: p99 * 1.5,
            error_ratio,
            cacheable: true,
            cache_hit_ratio: Some(0.2),
            compression_savings_ratio: 0.7,
            uncompressed_compressible_ratio: 0.0,
        }
    }

    fn recommend(traffic: Vec<Traffic>) -> Vec<Recommendation> {
        let config: Config = parse_config(
            r#"{"objectives": [{"route": "checkout", "latency_ms": 300, "error_budget": 0.001},
                               {"route": "api", "percentile": "p50", "latency_ms": 100}]}"#,
        );
        let snapshot = Snapshot {
            traffic,
            pools: vec![],
            slow_queries: vec![],
            cpu_percent: 10.0,
            memory_percent: 10.0,
        };
        EndpointSlo::recommend_with(&config, &snapshot)
    }

    #[test]
    fn routes_within_their_objectives_get_no_advice() {
        assert!(
            recommend(vec![
                traffic("checkout", 50.0, 250.0, 0.0005),
                traffic("api", 90.0, 900.0, 0.0)
            ])
            .is_empty()
        );
    }

    #[test]
    fn a_slow_tail_is_a_warning_and_twice_the_target_is_critical() {
        let advice = recommend(vec![traffic("checkout", 50.0, 400.0, 0.0)]);
        assert_eq!(advice.len(), 1);
        assert_eq!(advice[0].id, "slo:checkout:latency");
        assert!(matches!(advice[0].severity, Severity::Warning));
        assert!(
            advice[0]
                .title
                .contains("p99 latency 400 ms misses its 300 ms"),
            "{}",
            advice[0].title
        );
        assert!(advice[0].detail.contains("the tail is the problem"));
        assert!(
            advice[0]
                .suggested_change
                .as_deref()
                .unwrap()
                .contains("route \"checkout\"")
        );

        let critical = recommend(vec![traffic("checkout", 700.0, 900.0, 0.0)]);
        assert!(matches!(critical[0].severity, Severity::Critical));
        assert!(critical[0].detail.contains("Even the median"));
    }

    #[test]
    fn errors_are_judged_by_how_fast_they_burn_the_budget() {
        let warning = recommend(vec![traffic("checkout", 50.0, 100.0, 0.002)]);
        assert_eq!(warning[0].id, "slo:checkout:errors");
        assert!(matches!(warning[0].severity, Severity::Warning));
        assert!(
            warning[0].detail.contains("lasts 15.0 days"),
            "{}",
            warning[0].detail
        );
        let critical = recommend(vec![traffic("checkout", 50.0, 100.0, 0.05)]);
        assert!(matches!(critical[0].severity, Severity::Critical));
    }

    #[test]
    fn quiet_and_unknown_routes_are_not_judged() {
        let mut quiet = traffic("checkout", 900.0, 900.0, 0.5);
        quiet.requests_per_second = 0.01;
        assert!(recommend(vec![quiet, traffic("other", 900.0, 900.0, 0.5)]).is_empty());
    }
}
