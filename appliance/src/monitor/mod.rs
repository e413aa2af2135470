//! Monitoring: what gatehouse knows about its own health ([`health`]), what it has done
//! ([`metrics`], [`live`], plus the app's own [`business`] metrics), what that means:
//! recommendations ([`advisor`]) and alerts ([`alerts`]) judged on snapshots of recent traffic
//! ([`readings`], [`snapshot`]), and how it went over time ([`trends`]); all on a schedule
//! ([`schedule`]). Reads other subsystems' state; never changes it.

pub mod advisor;
pub mod alerts;
pub mod business;
pub mod dashboard;
mod exposition;
pub mod health;
pub mod live;
pub mod metrics;
pub mod readings;
pub mod schedule;
pub mod snapshot;
pub mod totals;
pub mod trends;

use std::sync::Arc;
use std::time::Instant;

use self::advisor::Advisor;
use self::alerts::Alerts;
use self::readings::Readings;
use self::trends::Trends;
use crate::config::Config;
use crate::edge::EdgeState;
use crate::loadtest::on_demand::OnDemand;
use crate::loadtest::schedule::LoadTestLog;
use crate::store::Store;

/// The monitors of one running gatehouse, as the schedule and the admin API share them.
#[derive(Clone)]
pub struct Monitors {
    /// Recent readings of the metrics.
    pub readings: Arc<Readings>,
    /// Recommendations.
    pub advisor: Arc<Advisor>,
    /// Alert rules.
    pub alerts: Arc<Alerts>,
    /// Time series, unless turned off.
    pub trends: Option<Arc<Trends>>,
    /// Scheduled load test runs (and those started from the admin API).
    pub load_tests: Arc<LoadTestLog>,
    /// The load test started from the admin API.
    pub on_demand: Arc<OnDemand>,
}

impl Monitors {
    /// The monitors of `edge` as `config` sets them, keeping what lasts in `store`.
    pub fn new(edge: &Arc<EdgeState>, store: Arc<dyn Store>, config: &Config) -> Self {
        let keep = config.monitoring.window;
        let readings = Arc::new(Readings::new(Arc::clone(edge), Instant::now(), keep));
        let advisor = Arc::new(Advisor::new(
            Arc::clone(&readings),
            Arc::clone(&store),
            config.monitoring.window,
        ));
        let alerts = Arc::new(Alerts::new(
            Arc::clone(&readings),
            Arc::clone(&store),
            config,
        ));
        let trends = config
            .trends
            .enabled
            .then(|| Arc::new(Trends::new(Arc::clone(&store), &config.trends)));
        let load_tests = Arc::new(LoadTestLog::new(store, config.load_test.history));
        Self {
            advisor,
            alerts,
            trends,
            on_demand: Arc::new(OnDemand::new(Arc::clone(&load_tests))),
            load_tests,
            readings,
        }
    }
}
