//! The default recommendations: the reference deployment's scaling indicators (CPU over 70%,
//! memory over 80%, average response over 2 s, database pool usage over 80%, errors over 2%),
//! and advice on low cache hit ratios, uncompressed compressible responses, pool waits and slow
//! query shapes. Thresholds can be changed in the config, e.g.
//! `config = { cpu_percent = 80, slow_query_ms = 250 }`.

use std::sync::OnceLock;

use gatehouse_sdk::recommend::{RecommendPolicy, Recommendation, Severity, Snapshot, Traffic};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Thresholds {
    cpu_percent: f64,
    memory_percent: f64,
    latency_avg_ms: f64,
    pool_usage_ratio: f64,
    error_ratio: f64,
    /// Below this hit ratio a cacheable route is worth a look.
    cache_hit_ratio: f64,
    /// Above this share of uncompressed compressible responses, compression is worth turning on.
    uncompressed_ratio: f64,
    /// Waits for a pool connection longer than this (p99) are worth a look.
    pool_wait_ms: f64,
    /// Query shapes slower than this on average are worth a look.
    slow_query_ms: f64,
    /// Routes with less traffic than this are too quiet to judge.
    min_requests_per_second: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            cpu_percent: 70.0,
            memory_percent: 80.0,
            latency_avg_ms: 2000.0,
            pool_usage_ratio: 0.8,
            error_ratio: 0.02,
            cache_hit_ratio: 0.5,
            uncompressed_ratio: 0.2,
            pool_wait_ms: 100.0,
            slow_query_ms: 100.0,
            min_requests_per_second: 0.1,
        }
    }
}

fn thresholds() -> &'static Thresholds {
    static THRESHOLDS: OnceLock<Thresholds> = OnceLock::new();
    THRESHOLDS.get_or_init(gatehouse_sdk::host::config_json)
}

fn advice(
    id: String,
    severity: Severity,
    title: String,
    detail: String,
    change: Option<String>,
) -> Recommendation {
    Recommendation {
        id,
        severity,
        title,
        detail,
        suggested_change: change,
    }
}

struct DefaultRecommendations;

impl DefaultRecommendations {
    fn recommend_with(t: &Thresholds, s: &Snapshot) -> Vec<Recommendation> {
        let mut out = Vec::new();
        if s.cpu_percent > t.cpu_percent {
            out.push(advice(
                "cpu-high".into(),
                if s.cpu_percent > 90.0 { Severity::Critical } else { Severity::Warning },
                format!("CPU at {:.0}%", s.cpu_percent),
                format!("Above the {:.0}% scaling indicator: add a CPU or another instance behind the load balancer, and cache more.", t.cpu_percent),
                None,
            ));
        }
        if s.memory_percent > t.memory_percent {
            out.push(advice(
                "memory-high".into(),
                if s.memory_percent > 95.0 { Severity::Critical } else { Severity::Warning },
                format!("Memory at {:.0}%", s.memory_percent),
                format!("Above the {:.0}% scaling indicator: add memory, or lower the cache's memory tier.", t.memory_percent),
                None,
            ));
        }
        let busy = |traffic: &&Traffic| traffic.requests_per_second >= t.min_requests_per_second;
        for traffic in s.traffic.iter().filter(busy) {
            route_advice(t, traffic, &mut out);
        }
        for pool in &s.pools {
            if pool.usage_ratio > t.pool_usage_ratio {
                out.push(advice(
                    format!("pool-usage-high:{}", pool.name),
                    Severity::Warning,
                    format!("Database pool {} at {:.0}% of its connections", pool.name, pool.usage_ratio * 100.0),
                    format!("Above the {:.0}% scaling indicator: allow more server connections if PostgreSQL has room.", t.pool_usage_ratio * 100.0),
                    Some("[pool]\npool_size = 20".into()),
                ));
            }
            if pool.clients_waiting > 0 || pool.wait_p99_ms > t.pool_wait_ms {
                out.push(advice(
                    format!("pool-waits:{}", pool.name),
                    Severity::Warning,
                    format!("Clients wait for database pool {}", pool.name),
                    format!("{} waiting now, p99 wait {:.0} ms: transactions hold connections too long, or the pool is too small.", pool.clients_waiting, pool.wait_p99_ms),
                    Some("[pool]\nmax_overflow = 20".into()),
                ));
            }
        }
        for query in s
            .slow_queries
            .iter()
            .filter(|q| q.mean_ms > t.slow_query_ms)
        {
            out.push(advice(
                format!("slow-query:{}", short_id(&query.fingerprint)),
                Severity::Info,
                format!("Slow query shape: {:.0} ms on average", query.mean_ms),
                format!("{} ({:.1} calls/s, p99 {:.0} ms). Check its plan with EXPLAIN ANALYZE; an index often helps.", query.fingerprint, query.calls_per_second, query.p99_ms),
                None,
            ));
        }
        out
    }
}

fn route_advice(t: &Thresholds, traffic: &Traffic, out: &mut Vec<Recommendation>) {
    let route = &traffic.route;
    let scope = if route == "*" {
        "overall".to_string()
    } else {
        format!("on route {route}")
    };
    if traffic.latency_avg_ms > t.latency_avg_ms {
        out.push(advice(
            format!("latency-high:{route}"),
            Severity::Warning,
            format!("Average response {:.1} s {scope}", traffic.latency_avg_ms / 1000.0),
            format!("Above the {:.0} s scaling indicator (p99 {:.0} ms): cache it, or add upstream capacity.", t.latency_avg_ms / 1000.0, traffic.latency_p99_ms),
            None,
        ));
    }
    if traffic.error_ratio > t.error_ratio {
        out.push(advice(
            format!("error-rate-high:{route}"),
            if traffic.error_ratio > 0.1 {
                Severity::Critical
            } else {
                Severity::Warning
            },
            format!("{:.1}% errors {scope}", traffic.error_ratio * 100.0),
            format!(
                "Above the {:.0}% scaling indicator: look at the upstream's logs and /healthz.",
                t.error_ratio * 100.0
            ),
            None,
        ));
    }
    if let Some(hit_ratio) = traffic.cache_hit_ratio
        && traffic.cacheable
        && hit_ratio < t.cache_hit_ratio
    {
        out.push(advice(
            format!("cache-hit-low:{route}"),
            Severity::Info,
            format!("Cache hit ratio {:.0}% {scope}", hit_ratio * 100.0),
            "Responses are cacheable but rarely served from cache: a longer TTL, a key without volatile query parameters, or stale-while-revalidate would help.".into(),
            None,
        ));
    }
    if traffic.uncompressed_compressible_ratio > t.uncompressed_ratio {
        out.push(advice(
            format!("compression-missing:{route}"),
            Severity::Info,
            format!("{:.0}% of compressible responses sent uncompressed {scope}", traffic.uncompressed_compressible_ratio * 100.0),
            "Text and JSON compress to a fifth of their size; clients that accept gzip, br or zstd should get it.".into(),
            None,
        ));
    }
}

/// A short stable id for a query fingerprint (FNV-1a).
fn short_id(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

impl RecommendPolicy for DefaultRecommendations {
    fn recommend(snapshot: &Snapshot) -> Vec<Recommendation> {
        Self::recommend_with(thresholds(), snapshot)
    }
}

gatehouse_sdk::recommend_policy!(DefaultRecommendations);

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_sdk::host::parse_config;
    use gatehouse_sdk::recommend::{Pool, Query};

    fn quiet() -> Snapshot {
        Snapshot {
            traffic: vec![],
            pools: vec![],
            slow_queries: vec![],
            cpu_percent: 20.0,
            memory_percent: 40.0,
        }
    }

    fn traffic(route: &str) -> Traffic {
        Traffic {
            route: route.into(),
            requests_per_second: 50.0,
            latency_avg_ms: 40.0,
            latency_p50_ms: 30.0,
            latency_p90_ms: 60.0,
            latency_p99_ms: 120.0,
            latency_p999_ms: 300.0,
            error_ratio: 0.001,
            cacheable: true,
            cache_hit_ratio: Some(0.9),
            compression_savings_ratio: 0.8,
            uncompressed_compressible_ratio: 0.0,
        }
    }

    fn ids(snapshot: &Snapshot) -> Vec<String> {
        DefaultRecommendations::recommend_with(&Thresholds::default(), snapshot)
            .into_iter()
            .map(|r| r.id)
            .collect()
    }

    #[test]
    fn a_healthy_system_gets_no_advice() {
        let mut snapshot = quiet();
        snapshot.traffic.push(traffic("api"));
        assert!(ids(&snapshot).is_empty());
    }

    #[test]
    fn the_reference_scaling_indicators() {
        let mut snapshot = quiet();
        snapshot.cpu_percent = 75.0;
        snapshot.memory_percent = 85.0;
        let mut slow = traffic("api");
        slow.latency_avg_ms = 2500.0;
        slow.error_ratio = 0.05;
        snapshot.traffic.push(slow);
        snapshot.pools.push(Pool {
            name: "app".into(),
            usage_ratio: 0.9,
            clients_waiting: 0,
            wait_p99_ms: 0.0,
        });
        assert_eq!(
            ids(&snapshot),
            [
                "cpu-high",
                "memory-high",
                "latency-high:api",
                "error-rate-high:api",
                "pool-usage-high:app"
            ]
        );
    }

    #[test]
    fn cache_compression_pool_waits_and_slow_queries() {
        let mut snapshot = quiet();
        let mut site = traffic("site");
        site.cache_hit_ratio = Some(0.1);
        site.uncompressed_compressible_ratio = 0.6;
        snapshot.traffic.push(site);
        snapshot.pools.push(Pool {
            name: "app".into(),
            usage_ratio: 0.5,
            clients_waiting: 3,
            wait_p99_ms: 250.0,
        });
        snapshot.slow_queries.push(Query {
            fingerprint: "select * from orders where customer_id = $1".into(),
            calls_per_second: 12.0,
            mean_ms: 340.0,
            p99_ms: 900.0,
        });
        let found = ids(&snapshot);
        assert_eq!(
            found[..3],
            [
                "cache-hit-low:site",
                "compression-missing:site",
                "pool-waits:app"
            ]
        );
        assert!(found[3].starts_with("slow-query:"));
    }

    #[test]
    fn quiet_routes_are_not_judged_and_thresholds_are_configurable() {
        let mut snapshot = quiet();
        let mut idle = traffic("admin");
        idle.requests_per_second = 0.01;
        idle.latency_avg_ms = 9000.0;
        snapshot.traffic.push(idle);
        assert!(ids(&snapshot).is_empty());
        snapshot.cpu_percent = 75.0;
        let relaxed = parse_config::<Thresholds>(r#"{"cpu_percent": 80}"#);
        assert!(DefaultRecommendations::recommend_with(&relaxed, &snapshot).is_empty());
    }
}
