//! Load tests started from the admin API (the web UI's load test page): one at a time, against a
//! URL of `[load_test].urls` only, so the admin listener cannot be turned into a load generator
//! against anything else. A finished run joins the scheduled runs' history.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{info, warn};

use super::schedule::{LoadTestLog, ScheduledRun};
use super::{LoadReport, LoadTest, Progress};

/// The longest level a caller may ask for.
pub const MAX_DURATION: Duration = Duration::from_secs(120);
/// The most clients one level may have.
pub const MAX_CLIENTS: usize = 1000;
/// The most levels one run may have.
pub const MAX_LEVELS: usize = 6;

/// The run going on, and the last one that ended.
pub struct OnDemand {
    log: Arc<LoadTestLog>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    running: Option<Running>,
    last: Option<Result<LoadReport, String>>,
}

struct Running {
    test: LoadTest,
    started: Instant,
    progress: Arc<Progress>,
}

/// What the load test page shows.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Whether a run is going on.
    pub running: bool,
    /// Its URL, or the last run's.
    pub url: Option<String>,
    /// 0 to 1, by time.
    pub progress: f64,
    /// The index of the level running.
    pub level: Option<u64>,
    /// Requests completed in that level.
    pub completed: Option<u64>,
    /// The last run's report, once it ended.
    pub report: Option<LoadReport>,
    /// Why the last run failed.
    pub error: Option<String>,
}

/// Why a run cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// One is going on.
    #[error("a load test is already running against {0}")]
    Busy(String),
    /// The request is out of bounds.
    #[error("{0}")]
    Refused(String),
}

impl OnDemand {
    /// Runs that end go to `log`.
    pub fn new(log: Arc<LoadTestLog>) -> Self {
        Self {
            log,
            state: Mutex::new(State::default()),
        }
    }

    /// Starts `test` on its own thread when `allowed` lists its URL and its size is in bounds.
    pub fn start(self: &Arc<Self>, test: LoadTest, allowed: &[String]) -> Result<(), StartError> {
        if !allowed.contains(&test.url) {
            return Err(StartError::Refused(format!(
                "{:?} is not in load_test.urls; only configured URLs are loaded",
                test.url
            )));
        }
        if test.levels.is_empty()
            || test.levels.len() > MAX_LEVELS
            || test.levels.iter().any(|&n| n == 0 || n > MAX_CLIENTS)
        {
            return Err(StartError::Refused(format!(
                "concurrency: 1 to {MAX_LEVELS} levels of 1 to {MAX_CLIENTS} clients"
            )));
        }
        if test.duration.is_zero() || test.duration > MAX_DURATION {
            return Err(StartError::Refused(format!(
                "duration: more than 0 s and at most {} s per level",
                MAX_DURATION.as_secs()
            )));
        }
        let progress = Arc::new(Progress::default());
        {
            let mut state = self.lock();
            if let Some(running) = &state.running {
                return Err(StartError::Busy(running.test.url.clone()));
            }
            state.running = Some(Running {
                test: test.clone(),
                started: Instant::now(),
                progress: Arc::clone(&progress),
            });
        }
        info!(url = test.url, levels = ?test.levels, "load test started from the admin API");
        let this = Arc::clone(self);
        std::thread::Builder::new()
            .name("load-test".into())
            .spawn(move || this.run(&test, &progress))
            .map_err(|err| {
                self.lock().running = None;
                StartError::Refused(format!("cannot start a thread: {err}"))
            })?;
        Ok(())
    }

    fn run(&self, test: &LoadTest, progress: &Progress) {
        let outcome = super::run(test, progress).map_err(|err| err.to_string());
        let finished_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let run = match &outcome {
            Ok(report) => ScheduledRun {
                finished_at,
                reports: vec![report.clone()],
                errors: Vec::new(),
            },
            Err(why) => {
                warn!(url = test.url, error = why, "load test failed");
                ScheduledRun {
                    finished_at,
                    reports: Vec::new(),
                    errors: vec![format!("{}: {why}", test.url)],
                }
            }
        };
        self.log.record(&run);
        let mut state = self.lock();
        state.running = None;
        state.last = Some(outcome);
    }

    /// The run going on, or the last one.
    pub fn status(&self) -> Status {
        let state = self.lock();
        if let Some(running) = &state.running {
            let total = running.test.duration.as_secs_f64() * running.test.levels.len() as f64;
            let elapsed = running.started.elapsed().as_secs_f64();
            return Status {
                running: true,
                url: Some(running.test.url.clone()),
                progress: (elapsed / total).min(0.99),
                level: Some(running.progress.level.load(Ordering::Relaxed)),
                completed: Some(running.progress.completed.load(Ordering::Relaxed)),
                report: None,
                error: None,
            };
        }
        let (report, error) = match &state.last {
            Some(Ok(report)) => (Some(report.clone()), None),
            Some(Err(why)) => (None, Some(why.clone())),
            None => (None, None),
        };
        Status {
            running: false,
            url: report.as_ref().map(|r| r.url.clone()),
            progress: if state.last.is_some() { 1.0 } else { 0.0 },
            level: None,
            completed: None,
            report,
            error,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("load test state lock")
    }
}
