//! What the web UI's overview and routes pages show: the readings kept, turned into a time
//! series of all traffic (one point per pair of readings, plus one for now), and per-route
//! figures over the monitoring window.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::readings::Readings;
use super::snapshot::ALL_ROUTES;
use super::totals::Totals;
use crate::policy::recommend_types::Snapshot;

/// The point since the last reading is added once it spans this much.
const LATEST_SPAN: Duration = Duration::from_secs(1);

/// All traffic over the window.
#[derive(Debug, Serialize)]
pub struct Overview {
    /// How far back the points go at most.
    pub window_seconds: u64,
    /// Oldest first; the last one ends now.
    pub points: Vec<Point>,
}

/// All traffic between two readings, stamped with the end.
#[derive(Debug, Serialize)]
pub struct Point {
    /// Unix seconds.
    pub t: f64,
    pub requests_per_second: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    /// 5xx answers, 0 to 1.
    pub error_ratio: f64,
    /// Hits among cacheable requests, 0 to 1; none without a cache rule.
    pub cache_hit_ratio: Option<f64>,
    pub compression_saved_bytes_per_second: f64,
    /// Server connections in use over those allowed, all pools; none without the pooler.
    pub pool_usage: Option<f64>,
    pub cpu_percent: f64,
    pub memory_percent: f64,
}

/// One route over the window.
#[derive(Debug, Serialize)]
pub struct RouteFigures {
    pub name: String,
    pub requests_per_second: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub error_ratio: f64,
    pub cache_hit_ratio: Option<f64>,
    /// Requests the rate-limit phase refused in the window.
    pub rate_limited: f64,
}

/// The overview of the readings kept, and of the time since the last one.
pub fn overview(readings: &Readings, window: Duration) -> Overview {
    let now = readings.read();
    let kept = readings.kept();
    let clock = Clock::new();
    let mut points: Vec<Point> = kept
        .windows(2)
        .map(|pair| point(readings, &pair[0], &pair[1], &clock))
        .collect();
    // Since the last reading: shown once it spans long enough not to be noise.
    if let Some(last) = kept.last()
        && now.at.saturating_duration_since(last.at) >= LATEST_SPAN
    {
        points.push(point(readings, last, &now, &clock));
    }
    Overview {
        window_seconds: window.as_secs(),
        points,
    }
}

/// Each route's figures between the start of `window` and now, busiest first.
pub fn routes(readings: &Readings, window: Duration) -> Vec<RouteFigures> {
    let now = readings.read();
    let earlier = readings.start_of(window);
    let snapshot = readings.between(&earlier, &now);
    let mut routes: Vec<RouteFigures> = snapshot
        .traffic
        .into_iter()
        .filter(|traffic| traffic.route != ALL_ROUTES)
        .map(|traffic| {
            let refused = |totals: &Totals| {
                totals
                    .routes
                    .get(&traffic.route)
                    .map_or(0.0, |route| route.rate_limit_refused)
            };
            RouteFigures {
                rate_limited: refused(&now) - refused(&earlier),
                requests_per_second: traffic.requests_per_second,
                latency_p50_ms: traffic.latency_p50_ms,
                latency_p99_ms: traffic.latency_p99_ms,
                error_ratio: traffic.error_ratio,
                cache_hit_ratio: traffic.cache_hit_ratio,
                name: traffic.route,
            }
        })
        .collect();
    routes.sort_by(|a, b| b.requests_per_second.total_cmp(&a.requests_per_second));
    routes
}

fn point(readings: &Readings, earlier: &Totals, now: &Totals, clock: &Clock) -> Point {
    let snapshot: Snapshot = readings.between(earlier, now);
    let all = snapshot
        .traffic
        .iter()
        .find(|traffic| traffic.route == ALL_ROUTES)
        .expect("a snapshot ends with all traffic");
    let saved = (now.compressed_input - earlier.compressed_input)
        - (now.compressed_output - earlier.compressed_output);
    let (active, max) = now
        .pools
        .iter()
        .fold((0.0, 0.0), |(a, m), pool| (a + pool.active, m + pool.max));
    Point {
        t: clock.unix(now.at),
        requests_per_second: all.requests_per_second,
        latency_p50_ms: all.latency_p50_ms,
        latency_p99_ms: all.latency_p99_ms,
        error_ratio: all.error_ratio,
        cache_hit_ratio: all.cache_hit_ratio,
        compression_saved_bytes_per_second: saved.max(0.0) / seconds_between(earlier, now),
        pool_usage: (max > 0.0).then(|| active / max),
        cpu_percent: snapshot.cpu_percent,
        memory_percent: snapshot.memory_percent,
    }
}

fn seconds_between(earlier: &Totals, now: &Totals) -> f64 {
    now.at
        .saturating_duration_since(earlier.at)
        .as_secs_f64()
        .max(0.001)
}

/// Turns the monotonic instants of readings into wall-clock time.
struct Clock {
    instant: Instant,
    unix: f64,
}

impl Clock {
    fn new() -> Self {
        Self {
            instant: Instant::now(),
            unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        }
    }

    fn unix(&self, at: Instant) -> f64 {
        self.unix - self.instant.saturating_duration_since(at).as_secs_f64()
    }
}
