//! Readings of the metrics taken on a schedule and kept for as long as a monitor looks back, so
//! a recommendation or an alert judges the last minutes of traffic rather than everything since
//! start.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::live;
use super::snapshot;
use super::totals::{PoolSample, Totals};
use crate::edge::EdgeState;
use crate::policy::recommend_types::Snapshot;

/// Query shapes a reading keeps (those that took the most time so far).
const QUERIES_SAMPLED: usize = 50;

/// The readings of the last `keep`, oldest first.
pub struct Readings {
    edge: Arc<EdgeState>,
    started: Instant,
    keep: Duration,
    ring: Mutex<VecDeque<Arc<Totals>>>,
}

impl Readings {
    /// Readings of `edge` (in a process started at `started`) kept for `keep`; the first is
    /// taken now.
    pub fn new(edge: Arc<EdgeState>, started: Instant, keep: Duration) -> Self {
        let readings = Self {
            edge,
            started,
            keep,
            ring: Mutex::new(VecDeque::new()),
        };
        readings.sample();
        readings
    }

    /// Every metric now, in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let live = live::registry(Arc::clone(&self.edge), self.started);
        self.edge.metrics().render(&live)
    }

    /// The metrics as of now, not kept.
    pub fn read(&self) -> Totals {
        let mut totals = Totals::read(&self.render(), Instant::now());
        if let Some(pooler) = self.edge.pooler() {
            totals.pools = pooler
                .pools()
                .into_iter()
                .map(|p| {
                    let mut cumulative = 0.0;
                    PoolSample {
                        name: format!("{}/{}", p.database, p.user),
                        active: p.servers_active as f64,
                        max: p.servers_max as f64,
                        waiting: p.clients_waiting as f64,
                        wait_buckets: p
                            .wait_buckets
                            .iter()
                            .map(|&(bound, count)| {
                                cumulative += count as f64;
                                (bound, cumulative)
                            })
                            .collect(),
                    }
                })
                .collect();
            totals.queries = pooler.busiest_queries(QUERIES_SAMPLED);
        }
        totals
    }

    /// Takes a reading and keeps it; forgets those older than needed.
    pub fn sample(&self) -> Arc<Totals> {
        let reading = Arc::new(self.read());
        let mut ring = self.ring.lock().expect("readings lock");
        ring.push_back(Arc::clone(&reading));
        // Keep the newest reading at least `keep` old: it starts the longest window.
        while ring
            .get(1)
            .is_some_and(|next| reading.at.saturating_duration_since(next.at) >= self.keep)
        {
            ring.pop_front();
        }
        reading
    }

    /// Where a window of `span` ending now starts: the newest reading at least `span` old, or
    /// the oldest one kept when none is that old yet.
    pub fn start_of(&self, span: Duration) -> Arc<Totals> {
        let ring = self.ring.lock().expect("readings lock");
        let now = Instant::now();
        let old_enough = ring
            .iter()
            .rev()
            .find(|reading| now.saturating_duration_since(reading.at) >= span);
        Arc::clone(
            old_enough
                .or(ring.front())
                .expect("the first reading is taken at start"),
        )
    }

    /// Every reading kept, oldest first.
    pub fn kept(&self) -> Vec<Arc<Totals>> {
        self.ring
            .lock()
            .expect("readings lock")
            .iter()
            .cloned()
            .collect()
    }

    /// The edge read.
    pub fn edge(&self) -> &Arc<EdgeState> {
        &self.edge
    }

    /// The traffic of the `span` up to `now`, and the span it really covers (less just after
    /// start).
    pub fn snapshot(&self, span: Duration, now: &Totals) -> (Snapshot, Duration) {
        let earlier = self.start_of(span);
        let snapshot = self.between(&earlier, now);
        (snapshot, now.at.saturating_duration_since(earlier.at))
    }

    /// The traffic between two readings.
    pub fn between(&self, earlier: &Totals, now: &Totals) -> Snapshot {
        let runtime = self.edge.runtime();
        snapshot::between(earlier, now, |name| {
            runtime
                .router
                .routes()
                .any(|route| &*route.name == name && route.cache.is_some())
        })
    }
}
