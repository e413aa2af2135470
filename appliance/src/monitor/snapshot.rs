//! What happened between two [`Totals`]: per route and overall, the rates, latency percentiles
//! and ratios the recommendation plugins judge (`recommend-types.snapshot` in the contract).

use crate::policy::recommend_types::{Pool, Query, Snapshot, Traffic};

use super::totals::{RouteTotals, Totals};

/// The route name of all traffic together.
pub const ALL_ROUTES: &str = "*";

/// The traffic between `earlier` and `now`, every route then `*`; `cacheable` says whether a
/// route has a cache rule. The pooler's figures are empty until it reports.
pub fn between(earlier: &Totals, now: &Totals, cacheable: impl Fn(&str) -> bool) -> Snapshot {
    let seconds = now
        .at
        .saturating_duration_since(earlier.at)
        .as_secs_f64()
        .max(0.001);
    let compressed_input = now.compressed_input - earlier.compressed_input;
    let compressed_output = now.compressed_output - earlier.compressed_output;
    let savings = ratio(compressed_input - compressed_output, compressed_input).unwrap_or(0.0);
    let none = RouteTotals::default();
    let mut all = RouteTotals::default();
    let mut traffic = Vec::with_capacity(now.routes.len() + 1);
    for (route, totals) in &now.routes {
        let delta = totals.since(earlier.routes.get(route).unwrap_or(&none));
        all.merge(&delta);
        // Requests no route matched count overall only.
        if !route.is_empty() {
            traffic.push(judge(route, &delta, seconds, cacheable(route), savings));
        }
    }
    let any_cacheable = traffic.iter().any(|t| t.cacheable);
    traffic.push(judge(ALL_ROUTES, &all, seconds, any_cacheable, savings));
    let cpu = now.cpu_seconds - earlier.cpu_seconds;
    let idle = now.cpu_idle_seconds - earlier.cpu_idle_seconds;
    let used_memory = now.memory_bytes - now.memory_available_bytes;
    Snapshot {
        traffic,
        pools: pools(earlier, now),
        slow_queries: slow_queries(earlier, now, seconds),
        cpu_percent: ratio(cpu - idle, cpu).map_or(0.0, |r| r * 100.0),
        memory_percent: ratio(used_memory, now.memory_bytes).map_or(0.0, |r| r * 100.0),
    }
}

fn judge(route: &str, delta: &RouteTotals, seconds: f64, cacheable: bool, savings: f64) -> Traffic {
    let millis = |q| percentile(&delta.buckets, q) * 1000.0;
    let compressed = delta.compressible - delta.compressible_uncompressed;
    Traffic {
        route: route.to_string(),
        requests_per_second: delta.requests / seconds,
        latency_avg_ms: ratio(delta.duration_sum, delta.duration_count).unwrap_or(0.0) * 1000.0,
        latency_p50_ms: millis(0.5),
        latency_p90_ms: millis(0.9),
        latency_p99_ms: millis(0.99),
        latency_p999_ms: millis(0.999),
        error_ratio: ratio(delta.errors, delta.requests).unwrap_or(0.0),
        cacheable,
        cache_hit_ratio: cacheable
            .then(|| ratio(delta.cache_hits, delta.cache_hits + delta.cache_misses))
            .flatten(),
        // Compressors count bytes by coding, not by route: a route that compressed anything
        // is credited with the savings of all compression.
        compression_savings_ratio: if compressed > 0.0 { savings } else { 0.0 },
        uncompressed_compressible_ratio: ratio(delta.compressible_uncompressed, delta.compressible)
            .unwrap_or(0.0),
    }
}

/// `part / whole`, when `whole` is more than nothing.
fn ratio(part: f64, whole: f64) -> Option<f64> {
    (whole > 0.0).then(|| (part / whole).clamp(0.0, 1.0))
}

/// The `q` quantile (0 to 1) in seconds of cumulative `buckets`, interpolated linearly within
/// the bucket it falls in (as Prometheus's `histogram_quantile` does); 0 without observations.
/// The pooler's pools: usage and waiting now, the 99th percentile of waits in between.
fn pools(earlier: &Totals, now: &Totals) -> Vec<Pool> {
    now.pools
        .iter()
        .map(|pool| {
            let before = earlier.pools.iter().find(|p| p.name == pool.name);
            let waits: Vec<(f64, f64)> = pool
                .wait_buckets
                .iter()
                .enumerate()
                .map(|(i, &(bound, count))| {
                    let then = before
                        .and_then(|b| b.wait_buckets.get(i))
                        .map_or(0.0, |b| b.1);
                    (bound, count - then)
                })
                .collect();
            Pool {
                name: pool.name.clone(),
                usage_ratio: ratio(pool.active, pool.max).unwrap_or(0.0),
                clients_waiting: pool.waiting as u32,
                wait_p99_ms: percentile(&waits, 0.99) * 1000.0,
            }
        })
        .collect()
}

/// Query shapes called in between, slowest on average first.
fn slow_queries(earlier: &Totals, now: &Totals, seconds: f64) -> Vec<Query> {
    let mut queries: Vec<Query> = now
        .queries
        .iter()
        .filter_map(|shape| {
            let before = earlier.queries.iter().find(|q| q.text == shape.text);
            let calls = shape.calls - before.map_or(0, |b| b.calls);
            let time = shape.total.as_secs_f64() - before.map_or(0.0, |b| b.total.as_secs_f64());
            (calls > 0).then(|| Query {
                fingerprint: shape.text.clone(),
                calls_per_second: calls as f64 / seconds,
                mean_ms: time / calls as f64 * 1000.0,
                p99_ms: shape.p99.as_secs_f64() * 1000.0,
            })
        })
        .collect();
    queries.sort_by(|a, b| b.mean_ms.total_cmp(&a.mean_ms));
    queries.truncate(SLOW_QUERIES_SHOWN);
    queries
}

/// Query shapes a snapshot lists at most.
const SLOW_QUERIES_SHOWN: usize = 10;

fn percentile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let Some(&(_, total)) = buckets.last() else {
        return 0.0;
    };
    if total <= 0.0 {
        return 0.0;
    }
    let rank = q * total;
    let (mut lower_bound, mut lower_count) = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                // Slower than the largest bound: that bound is all that is known.
                return lower_bound;
            }
            let within = count - lower_count;
            let share = if within > 0.0 {
                (rank - lower_count) / within
            } else {
                1.0
            };
            return lower_bound + (bound - lower_bound) * share;
        }
        (lower_bound, lower_count) = (bound, count);
    }
    lower_bound
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use super::*;

    fn totals(at: Instant, routes: &[(&str, RouteTotals)]) -> Totals {
        Totals {
            at,
            routes: routes
                .iter()
                .map(|(name, t)| (name.to_string(), t.clone()))
                .collect::<BTreeMap<_, _>>(),
            compressed_input: 0.0,
            compressed_output: 0.0,
            cpu_seconds: 100.0,
            cpu_idle_seconds: 80.0,
            memory_bytes: 1000.0,
            memory_available_bytes: 400.0,
            redis_up: None,
            pools: Vec::new(),
            queries: Vec::new(),
        }
    }

    #[test]
    fn percentiles_interpolate_within_buckets() {
        let buckets = [
            (0.01, 50.0),
            (0.02, 90.0),
            (0.04, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert!((percentile(&buckets, 0.5) - 0.01).abs() < 1e-9);
        assert!((percentile(&buckets, 0.7) - 0.015).abs() < 1e-9);
        assert!((percentile(&buckets, 0.99) - 0.038).abs() < 1e-9);
        assert_eq!(percentile(&[], 0.5), 0.0);
        let slowest = [(0.01, 0.0), (f64::INFINITY, 4.0)];
        assert_eq!(percentile(&slowest, 0.5), 0.01);
    }

    #[test]
    fn rates_and_ratios_cover_only_the_time_between() {
        let start = Instant::now();
        let before = RouteTotals {
            requests: 100.0,
            errors: 10.0,
            duration_sum: 10.0,
            duration_count: 100.0,
            buckets: vec![(0.1, 100.0), (f64::INFINITY, 100.0)],
            cache_hits: 5.0,
            cache_misses: 5.0,
            compressible: 0.0,
            compressible_uncompressed: 0.0,
            rate_limit_refused: 0.0,
        };
        let after = RouteTotals {
            requests: 300.0,
            errors: 14.0,
            duration_sum: 30.0,
            duration_count: 300.0,
            buckets: vec![(0.1, 250.0), (f64::INFINITY, 300.0)],
            cache_hits: 95.0,
            cache_misses: 15.0,
            compressible: 40.0,
            compressible_uncompressed: 30.0,
            rate_limit_refused: 3.0,
        };
        let earlier = totals(start, &[("api", before)]);
        let mut now = totals(start + Duration::from_secs(10), &[("api", after)]);
        now.cpu_seconds = 120.0;
        now.cpu_idle_seconds = 85.0;
        let snapshot = between(&earlier, &now, |route| route == "api");
        let api = &snapshot.traffic[0];
        assert_eq!(api.route, "api");
        assert!((api.requests_per_second - 20.0).abs() < 1e-9);
        assert!((api.error_ratio - 0.02).abs() < 1e-9);
        assert!((api.latency_avg_ms - 100.0).abs() < 1e-9);
        // 150 of the 200 new answers took at most 100 ms; the rest more than the largest bound.
        assert!((api.latency_p50_ms - 200.0 / 3.0).abs() < 1e-6);
        assert_eq!(api.latency_p99_ms, 100.0);
        assert_eq!(api.cache_hit_ratio, Some(0.9));
        assert_eq!(api.uncompressed_compressible_ratio, 0.75);
        assert_eq!(snapshot.traffic[1].route, ALL_ROUTES);
        assert!((snapshot.cpu_percent - 75.0).abs() < 1e-9);
        assert!((snapshot.memory_percent - 60.0).abs() < 1e-9);
    }

    #[test]
    fn unmatched_requests_count_overall_only() {
        let start = Instant::now();
        let misses = RouteTotals {
            requests: 4.0,
            ..RouteTotals::default()
        };
        let now = totals(start + Duration::from_secs(2), &[("", misses)]);
        let snapshot = between(&totals(start, &[]), &now, |_| false);
        assert_eq!(snapshot.traffic.len(), 1);
        assert_eq!(snapshot.traffic[0].route, ALL_ROUTES);
        assert!((snapshot.traffic[0].requests_per_second - 2.0).abs() < 1e-9);
        assert_eq!(snapshot.traffic[0].cache_hit_ratio, None);
    }
}
