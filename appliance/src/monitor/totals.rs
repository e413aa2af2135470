//! Running totals read from one rendering of the metrics: per route and for the machine. Two
//! readings some time apart give rates, ratios and latency percentiles over that time
//! ([`super::snapshot`]).

use std::collections::BTreeMap;
use std::time::Instant;

use super::exposition::{Sample, samples};

/// Totals of one route since start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteTotals {
    /// Requests answered.
    pub requests: f64,
    /// Those answered with a 5xx.
    pub errors: f64,
    /// Seconds spent answering them.
    pub duration_sum: f64,
    /// Answers whose duration was measured.
    pub duration_count: f64,
    /// Cumulative latency buckets: (upper bound in seconds, answers at most that slow).
    pub buckets: Vec<(f64, f64)>,
    /// Answered from a cache entry (fresh, stale or revalidated).
    pub cache_hits: f64,
    /// Looked up and not found (went to the upstream for a storable answer).
    pub cache_misses: f64,
    /// Compressible responses (type and length), however they were sent.
    pub compressible: f64,
    /// Those sent uncompressed.
    pub compressible_uncompressed: f64,
    /// Requests the rate-limit phase refused (limited, denied, or unavailable).
    pub rate_limit_refused: f64,
}

/// Everything the monitors judge, as of one instant.
#[derive(Debug, Clone)]
pub struct Totals {
    /// When it was read.
    pub at: Instant,
    /// By route name (`""` for requests no route matched).
    pub routes: BTreeMap<String, RouteTotals>,
    /// Bytes given to compressors, all codings.
    pub compressed_input: f64,
    /// Bytes they made of them.
    pub compressed_output: f64,
    /// The machine's CPU seconds, all modes and CPUs.
    pub cpu_seconds: f64,
    /// Those spent idle (or waiting for I/O).
    pub cpu_idle_seconds: f64,
    /// The machine's memory.
    pub memory_bytes: f64,
    /// Memory available without swapping.
    pub memory_available_bytes: f64,
    /// 1 while Redis is reachable, 0 while not; none without Redis.
    pub redis_up: Option<f64>,
    /// The pooler's pools, when it runs (read from it, not from the text).
    pub pools: Vec<PoolSample>,
    /// The pooler's query shapes that took the most time so far.
    pub queries: Vec<crate::pool::QueryFigures>,
}

/// One pool as of a reading.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolSample {
    /// `database/user`.
    pub name: String,
    /// Server connections serving a client.
    pub active: f64,
    /// Server connections allowed.
    pub max: f64,
    /// Clients waiting now.
    pub waiting: f64,
    /// Cumulative waits by upper bound in seconds (the last bound infinite).
    pub wait_buckets: Vec<(f64, f64)>,
}

impl Totals {
    /// Reads `text` (the OpenMetrics rendering of every metric), taken at `at`.
    pub fn read(text: &str, at: Instant) -> Self {
        let mut totals = Self {
            at,
            routes: BTreeMap::new(),
            compressed_input: 0.0,
            compressed_output: 0.0,
            cpu_seconds: 0.0,
            cpu_idle_seconds: 0.0,
            memory_bytes: 0.0,
            memory_available_bytes: 0.0,
            redis_up: None,
            pools: Vec::new(),
            queries: Vec::new(),
        };
        for sample in samples(text) {
            totals.add(&sample);
        }
        totals
    }

    fn add(&mut self, sample: &Sample<'_>) {
        let value = sample.value;
        match sample.name {
            "gatehouse_compression_input_bytes_total" => self.compressed_input += value,
            "gatehouse_compression_output_bytes_total" => self.compressed_output += value,
            "gatehouse_host_cpu_seconds_total" => {
                self.cpu_seconds += value;
                if matches!(sample.label("mode").as_deref(), Some("idle" | "iowait")) {
                    self.cpu_idle_seconds += value;
                }
            }
            "gatehouse_host_memory_total_bytes" => self.memory_bytes = value,
            "gatehouse_host_memory_available_bytes" => self.memory_available_bytes = value,
            "gatehouse_redis_up" => self.redis_up = Some(value),
            name => {
                if let Some(route) = sample.label("route") {
                    let totals = self.routes.entry(route.into_owned()).or_default();
                    totals.add(name, sample);
                }
            }
        }
    }
}

impl RouteTotals {
    fn add(&mut self, name: &str, sample: &Sample<'_>) {
        let value = sample.value;
        match name {
            "gatehouse_http_requests_total" => {
                self.requests += value;
                if sample.label("status").as_deref() == Some("5xx") {
                    self.errors += value;
                }
            }
            "gatehouse_http_request_duration_seconds_sum" => self.duration_sum = value,
            "gatehouse_http_request_duration_seconds_count" => self.duration_count = value,
            "gatehouse_http_request_duration_seconds_bucket" => {
                let bound = sample.label("le").and_then(|le| match le.as_ref() {
                    "+Inf" => Some(f64::INFINITY),
                    finite => finite.parse().ok(),
                });
                if let Some(bound) = bound {
                    self.buckets.push((bound, value));
                }
            }
            "gatehouse_cache_requests_total" => match sample.label("result").as_deref() {
                Some("hit" | "stale" | "revalidated") => self.cache_hits += value,
                Some("miss") => self.cache_misses += value,
                _ => {}
            },
            "gatehouse_rate_limit_decisions_total" => {
                if matches!(
                    sample.label("decision").as_deref(),
                    Some("limited" | "denied" | "unavailable")
                ) {
                    self.rate_limit_refused += value;
                }
            }
            "gatehouse_http_compressible_responses_total" => {
                self.compressible += value;
                if sample.label("coding").as_deref() == Some("identity") {
                    self.compressible_uncompressed += value;
                }
            }
            _ => {}
        }
    }

    /// These plus `other` (same bucket bounds): several routes together.
    pub fn merge(&mut self, other: &RouteTotals) {
        self.combine(other, 1.0);
    }

    /// What was added to `earlier` to make these: the totals of the time between.
    pub fn since(&self, earlier: &RouteTotals) -> RouteTotals {
        let mut delta = self.clone();
        delta.combine(earlier, -1.0);
        delta
    }

    fn combine(&mut self, other: &RouteTotals, sign: f64) {
        let add = |mine: &mut f64, theirs: f64| *mine += sign * theirs;
        add(&mut self.requests, other.requests);
        add(&mut self.errors, other.errors);
        add(&mut self.duration_sum, other.duration_sum);
        add(&mut self.duration_count, other.duration_count);
        add(&mut self.cache_hits, other.cache_hits);
        add(&mut self.cache_misses, other.cache_misses);
        add(&mut self.compressible, other.compressible);
        add(
            &mut self.compressible_uncompressed,
            other.compressible_uncompressed,
        );
        add(&mut self.rate_limit_refused, other.rate_limit_refused);
        if self.buckets.is_empty() {
            self.buckets = other.buckets.iter().map(|&(b, n)| (b, sign * n)).collect();
        } else {
            for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
                mine.1 += sign * theirs.1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_the_machine_are_read_from_the_rendering() {
        let text = r#"gatehouse_http_requests_total{route="api",method="GET",status="2xx"} 8
gatehouse_http_requests_total{route="api",method="POST",status="5xx"} 2
gatehouse_http_request_duration_seconds_sum{route="api"} 0.5
gatehouse_http_request_duration_seconds_count{route="api"} 10
gatehouse_http_request_duration_seconds_bucket{route="api",le="0.1"} 9
gatehouse_http_request_duration_seconds_bucket{route="api",le="+Inf"} 10
gatehouse_cache_requests_total{route="api",result="hit"} 3
gatehouse_cache_requests_total{route="api",result="stale"} 1
gatehouse_cache_requests_total{route="api",result="miss"} 4
gatehouse_cache_requests_total{route="api",result="bypass"} 2
gatehouse_http_compressible_responses_total{route="api",coding="gzip"} 6
gatehouse_rate_limit_decisions_total{route="api",policy="p",decision="allowed"} 9
gatehouse_rate_limit_decisions_total{route="api",policy="p",decision="limited"} 3
gatehouse_rate_limit_decisions_total{route="api",policy="p",decision="denied"} 1
gatehouse_http_compressible_responses_total{route="api",coding="identity"} 2
gatehouse_compression_input_bytes_total{coding="gzip"} 1000
gatehouse_compression_output_bytes_total{coding="gzip"} 200
gatehouse_host_cpu_seconds_total{mode="user"} 30
gatehouse_host_cpu_seconds_total{mode="idle"} 60
gatehouse_host_cpu_seconds_total{mode="iowait"} 10
gatehouse_host_memory_total_bytes 1000
gatehouse_host_memory_available_bytes 250
gatehouse_redis_up 0
"#;
        let totals = Totals::read(text, Instant::now());
        let api = &totals.routes["api"];
        assert_eq!((api.requests, api.errors), (10.0, 2.0));
        assert_eq!((api.duration_sum, api.duration_count), (0.5, 10.0));
        assert_eq!(api.buckets, [(0.1, 9.0), (f64::INFINITY, 10.0)]);
        assert_eq!((api.cache_hits, api.cache_misses), (4.0, 4.0));
        assert_eq!(api.rate_limit_refused, 4.0);
        assert_eq!(
            (api.compressible, api.compressible_uncompressed),
            (8.0, 2.0)
        );
        assert_eq!(
            (totals.compressed_input, totals.compressed_output),
            (1000.0, 200.0)
        );
        assert_eq!((totals.cpu_seconds, totals.cpu_idle_seconds), (100.0, 70.0));
        assert_eq!(
            (totals.memory_bytes, totals.memory_available_bytes),
            (1000.0, 250.0)
        );
    }
}
