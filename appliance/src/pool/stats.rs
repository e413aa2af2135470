//! What the pooler counts: per pool, transactions, queries, bytes and waits (atomics on the
//! relay path); per query shape (the normalised text, literals replaced by `?`), calls, time,
//! rows, errors and a latency histogram. These feed `SHOW STATS`, `SHOW QUERIES`,
//! `/api/v1/pool`, `/metrics` and the slow-query recommendations.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

/// Upper bounds of the wait-time histogram, in seconds (`+Inf` follows).
pub(crate) const WAIT_BUCKETS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0,
];

/// Query shapes kept at most; calls of further shapes are counted together.
const MAX_SHAPES: usize = 1000;
/// Slowest time a latency histogram holds (an hour); slower is recorded as that.
const MAX_RECORDED_MICROS: u64 = 3_600_000_000;
/// Longest normalised text kept.
const MAX_TEXT: usize = 2000;

/// Totals of one pool.
#[derive(Debug, Default)]
pub(crate) struct PoolTotals {
    pub(crate) transactions: AtomicU64,
    pub(crate) queries: AtomicU64,
    /// Bytes from clients to servers.
    pub(crate) received: AtomicU64,
    /// Bytes from servers to clients.
    pub(crate) sent: AtomicU64,
    pub(crate) transaction_micros: AtomicU64,
    pub(crate) query_micros: AtomicU64,
    pub(crate) wait_micros: AtomicU64,
    /// Clients that got no server (pool_timeout, or PostgreSQL refused).
    pub(crate) acquire_errors: AtomicU64,
    /// Waits by [`WAIT_BUCKETS`] (the last one: longer).
    wait_buckets: [AtomicU64; WAIT_BUCKETS.len() + 1],
}

impl PoolTotals {
    pub(crate) fn waited(&self, wait: Duration) {
        self.wait_micros
            .fetch_add(wait.as_micros() as u64, Ordering::Relaxed);
        let seconds = wait.as_secs_f64();
        let bucket = WAIT_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(WAIT_BUCKETS.len());
        self.wait_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Waits per bucket, not cumulative.
    pub(crate) fn wait_counts(&self) -> Vec<u64> {
        self.wait_buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }
}

/// One query shape's figures.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    pub(crate) text: String,
    pub(crate) calls: u64,
    pub(crate) errors: u64,
    pub(crate) rows: u64,
    pub(crate) total: Duration,
    /// Grows with the slowest time recorded (to an hour at most), so a shape of fast
    /// queries stays small.
    latency_micros: Histogram<u32>,
}

impl Shape {
    pub(crate) fn mean(&self) -> Duration {
        Duration::from_secs_f64(self.total.as_secs_f64() / self.calls.max(1) as f64)
    }

    pub(crate) fn p99(&self) -> Duration {
        Duration::from_micros(self.latency_micros.value_at_quantile(0.99))
    }
}

/// Query shapes by fingerprint.
#[derive(Debug, Default)]
pub(crate) struct QueryStats {
    shapes: Mutex<HashMap<u64, Shape>>,
    /// Calls of shapes beyond [`MAX_SHAPES`].
    untracked: AtomicU64,
}

/// One finished query, as the relay saw it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Finished {
    pub(crate) fingerprint: u64,
    pub(crate) took: Duration,
    pub(crate) rows: u64,
    pub(crate) failed: bool,
}

impl QueryStats {
    /// Records a query; `text` is asked for only the first time its shape is seen.
    pub(crate) fn record(&self, finished: Finished, text: impl FnOnce() -> String) {
        let mut shapes = self.shapes.lock().expect("query stats lock");
        let full = shapes.len() >= MAX_SHAPES;
        let shape = match shapes.get_mut(&finished.fingerprint) {
            Some(shape) => shape,
            None if full => {
                self.untracked.fetch_add(1, Ordering::Relaxed);
                return;
            }
            None => {
                let mut text = text();
                if text.len() > MAX_TEXT {
                    let mut end = MAX_TEXT;
                    while !text.is_char_boundary(end) {
                        end -= 1;
                    }
                    text.truncate(end);
                }
                shapes.entry(finished.fingerprint).or_insert(Shape {
                    text,
                    calls: 0,
                    errors: 0,
                    rows: 0,
                    total: Duration::ZERO,
                    latency_micros: Histogram::new(2).expect("2 significant figures are valid"),
                })
            }
        };
        shape.calls += 1;
        shape.errors += u64::from(finished.failed);
        shape.rows += finished.rows;
        shape.total += finished.took;
        let micros = (finished.took.as_micros() as u64).clamp(1, MAX_RECORDED_MICROS);
        // Auto-resizing: it only fails for values it can never hold, and those are clamped.
        let _ = shape.latency_micros.record(micros);
    }

    /// Every shape, the most total time first.
    pub(crate) fn shapes(&self) -> Vec<Shape> {
        let mut shapes: Vec<Shape> = self
            .shapes
            .lock()
            .expect("query stats lock")
            .values()
            .cloned()
            .collect();
        shapes.sort_by_key(|shape| std::cmp::Reverse(shape.total));
        shapes
    }
}

/// Rows a CommandComplete tag reports (`SELECT 5`, `INSERT 0 5`, `UPDATE 3`...).
pub(crate) fn rows_of_tag(tag: &[u8]) -> u64 {
    let tag = tag.strip_suffix(b"\0").unwrap_or(tag);
    let last = tag.rsplit(|&b| b == b' ').next().unwrap_or_default();
    std::str::from_utf8(last)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_rows_from_command_tags() {
        assert_eq!(rows_of_tag(b"SELECT 5\0"), 5);
        assert_eq!(rows_of_tag(b"INSERT 0 12\0"), 12);
        assert_eq!(rows_of_tag(b"BEGIN\0"), 0);
    }

    #[test]
    fn keeps_shapes_by_fingerprint() {
        let stats = QueryStats::default();
        for (ms, failed) in [(1, false), (3, true)] {
            stats.record(
                Finished {
                    fingerprint: 7,
                    took: Duration::from_millis(ms),
                    rows: 2,
                    failed,
                },
                || "select ?".to_string(),
            );
        }
        let shapes = stats.shapes();
        assert_eq!(shapes.len(), 1);
        let shape = &shapes[0];
        assert_eq!((shape.calls, shape.errors, shape.rows), (2, 1, 4));
        assert!(shape.mean().abs_diff(Duration::from_millis(2)) < Duration::from_micros(1));
        assert!(shape.p99() >= Duration::from_millis(2));
        assert_eq!(shape.text, "select ?");
    }

    #[test]
    fn buckets_waits() {
        let totals = PoolTotals::default();
        totals.waited(Duration::from_micros(50));
        totals.waited(Duration::from_secs(60));
        let counts = totals.wait_counts();
        assert_eq!(counts[0], 1);
        assert_eq!(counts[WAIT_BUCKETS.len()], 1);
    }
}
