//! Load tests on a schedule (`[load_test]`, off by default): every `interval`, each configured
//! URL in turn, and nothing else. Runs are kept in the state store (a bounded history); the
//! latest is `/performance/latest.json`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use super::{LoadReport, LoadTest, Progress};
use crate::config::LoadTestConfig;
use crate::store::{BoundedLog, Store, Tree};

/// One scheduled run: a report per URL.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduledRun {
    /// When it ended (RFC 3339).
    pub finished_at: String,
    /// One per URL that could be loaded.
    pub reports: Vec<LoadReport>,
    /// URLs that could not be, and why.
    pub errors: Vec<String>,
}

/// The runs kept in the state store.
pub struct LoadTestLog(BoundedLog);

impl LoadTestLog {
    /// The log in `store`, keeping `history` runs.
    pub fn new(store: Arc<dyn Store>, history: usize) -> Self {
        Self(BoundedLog::new(store, Tree::LoadTests, history))
    }

    /// Keeps `run`, dropping the oldest beyond the bound.
    pub fn record(&self, run: &ScheduledRun) {
        if let Err(err) = self.0.append(run) {
            error!(error = %err, "cannot keep a load test run");
        }
    }

    /// The runs kept, newest first.
    pub fn runs(&self) -> Vec<ScheduledRun> {
        self.0.latest(usize::MAX)
    }
}

/// Runs the configured load tests every `config.interval`, until the process stops.
pub async fn run(config: LoadTestConfig, log: Arc<LoadTestLog>) {
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is now: the first run waits a whole interval, as cron would.
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let config = config.clone();
        let made = actix_web::web::block(move || once(&config)).await;
        match made {
            Ok(run) => log.record(&run),
            Err(err) => warn!(error = %err, "the scheduled load test failed"),
        }
    }
}

/// Each configured URL once, one after another.
fn once(config: &LoadTestConfig) -> ScheduledRun {
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    for url in &config.urls {
        let test = LoadTest {
            url: url.clone(),
            levels: config.levels.clone(),
            duration: config.duration,
            timeout: config.timeout,
        };
        match super::run(&test, &Progress::default()) {
            Ok(report) => {
                let heaviest = report.levels.last();
                info!(
                    url,
                    rps = heaviest.map(|l| l.requests_per_second),
                    failures = heaviest.map(|l| l.failures),
                    "scheduled load test done"
                );
                reports.push(report);
            }
            Err(err) => errors.push(format!("{url}: {err}")),
        }
    }
    ScheduledRun {
        finished_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        reports,
        errors,
    }
}
