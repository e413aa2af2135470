//! The built-in load test (`gatehouse bench URL`, and on a schedule against configured URLs):
//! for each concurrency level, that many clients send requests back to back over kept-alive
//! connections for a fixed time; latencies go into an HDR histogram. The summary is the
//! reference deployment's table: requests per second, average and p99 latency, failures.

pub mod on_demand;
mod report;
pub mod schedule;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

pub use self::report::table;

/// What to load, how hard and for how long.
#[derive(Debug, Clone)]
pub struct LoadTest {
    /// `http://` or `https://` URL, requested with GET.
    pub url: String,
    /// Concurrent clients, one level after another.
    pub levels: Vec<usize>,
    /// How long each level lasts.
    pub duration: Duration,
    /// Time one request may take before it counts as failed.
    pub timeout: Duration,
}

/// What one level measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LevelResult {
    /// Concurrent clients.
    pub concurrency: usize,
    /// Requests completed (answered or failed).
    pub requests: u64,
    /// Requests that failed: no answer, or a 4xx / 5xx status.
    pub failures: u64,
    /// Completed requests per second.
    pub requests_per_second: f64,
    /// Mean time to the last byte of the answer.
    pub latency_avg_ms: f64,
    /// Median.
    pub latency_p50_ms: f64,
    /// 99th percentile.
    pub latency_p99_ms: f64,
    /// Slowest.
    pub latency_max_ms: f64,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests without an answer, by reason.
    pub errors: BTreeMap<String, u64>,
}

/// A whole run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoadReport {
    /// The URL loaded.
    pub url: String,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// Seconds each level lasted.
    pub seconds_per_level: f64,
    /// One per level, in order.
    pub levels: Vec<LevelResult>,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadTestError {
    /// The URL is not one the client can request.
    #[error("{0:?} is not an http:// or https:// URL")]
    BadUrl(String),
    /// A level of zero clients, or none at all.
    #[error("concurrency levels must be at least 1")]
    NoClients,
    /// The HTTP client or a runtime could not be made.
    #[error("cannot start the load: {0}")]
    Start(String),
}

/// Completed requests so far in the level running, for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    /// Requests completed in the current level.
    pub completed: AtomicU64,
    /// The level running (its index).
    pub level: AtomicU64,
}

/// Runs `test`, level after level, counting into `progress` as it goes.
pub fn run(test: &LoadTest, progress: &Progress) -> Result<LoadReport, LoadTestError> {
    let url: reqwest::Url = test
        .url
        .parse()
        .ok()
        .filter(|url: &reqwest::Url| matches!(url.scheme(), "http" | "https"))
        .ok_or_else(|| LoadTestError::BadUrl(test.url.clone()))?;
    if test.levels.is_empty() || test.levels.contains(&0) {
        return Err(LoadTestError::NoClients);
    }
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut levels = Vec::with_capacity(test.levels.len());
    for (index, &concurrency) in test.levels.iter().enumerate() {
        progress.level.store(index as u64, Ordering::Relaxed);
        progress.completed.store(0, Ordering::Relaxed);
        levels.push(level(test, &url, concurrency, progress)?);
    }
    Ok(LoadReport {
        url: test.url.clone(),
        started_at,
        seconds_per_level: test.duration.as_secs_f64(),
        levels,
    })
}

/// What one thread of clients saw.
struct Tally {
    latencies: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            // Microseconds, 1 µs to an hour, 3 significant digits.
            latencies: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
        }
    }

    fn merge(&mut self, other: Tally) {
        let _ = self.latencies.add(&other.latencies);
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        for (error, n) in other.errors {
            *self.errors.entry(error).or_default() += n;
        }
    }
}

/// `concurrency` clients for `test.duration`, spread over one thread per CPU, each thread
/// running its clients as tasks on a runtime of its own.
fn level(
    test: &LoadTest,
    url: &reqwest::Url,
    concurrency: usize,
    progress: &Progress,
) -> Result<LevelResult, LoadTestError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(concurrency);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tallies = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                // Clients spread evenly: the first `concurrency % threads` threads get one more.
                let clients = concurrency / threads + usize::from(thread < concurrency % threads);
                let stop = Arc::clone(&stop);
                scope.spawn(move || clients_on_thread(test, url, clients, &stop, progress))
            })
            .collect();
        std::thread::sleep(test.duration);
        stop.store(true, Ordering::Relaxed);
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|_| Err("a load thread panicked".into()))
            })
            .collect::<Result<Vec<Tally>, String>>()
    })
    .map_err(LoadTestError::Start)?;
    let seconds = started.elapsed().as_secs_f64();
    let mut total = Tally::new();
    for tally in tallies {
        total.merge(tally);
    }
    let answered: u64 = total.statuses.values().sum();
    let failed_statuses: u64 = total
        .statuses
        .iter()
        .filter(|(status, _)| **status >= 400)
        .map(|(_, n)| n)
        .sum();
    let unanswered: u64 = total.errors.values().sum();
    let millis = |micros: u64| micros as f64 / 1000.0;
    let latencies = &total.latencies;
    Ok(LevelResult {
        concurrency,
        requests: answered + unanswered,
        failures: failed_statuses + unanswered,
        requests_per_second: (answered + unanswered) as f64 / seconds,
        latency_avg_ms: latencies.mean() / 1000.0,
        latency_p50_ms: millis(latencies.value_at_quantile(0.5)),
        latency_p99_ms: millis(latencies.value_at_quantile(0.99)),
        latency_max_ms: millis(latencies.max()),
        statuses: total.statuses,
        errors: total.errors,
    })
}

fn clients_on_thread(
    test: &LoadTest,
    url: &reqwest::Url,
    clients: usize,
    stop: &AtomicBool,
    progress: &Progress,
) -> Result<Tally, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| err.to_string())?;
    let client = reqwest::Client::builder()
        .timeout(test.timeout)
        .pool_max_idle_per_host(clients)
        .build()
        .map_err(|err| err.to_string())?;
    runtime.block_on(async {
        let tasks = (0..clients).map(|_| client_loop(&client, url, stop, progress));
        let mut total = Tally::new();
        for tally in futures_util::future::join_all(tasks).await {
            total.merge(tally);
        }
        Ok(total)
    })
}

/// One client: a request, its whole answer, the next, until told to stop.
async fn client_loop(
    client: &reqwest::Client,
    url: &reqwest::Url,
    stop: &AtomicBool,
    progress: &Progress,
) -> Tally {
    let mut tally = Tally::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let outcome = match client.get(url.clone()).send().await {
            Ok(answer) => {
                let status = answer.status().as_u16();
                answer.bytes().await.map(|_| status)
            }
            Err(err) => Err(err),
        };
        let micros = started.elapsed().as_micros().max(1) as u64;
        let _ = tally.latencies.record(micros);
        match outcome {
            Ok(status) => *tally.statuses.entry(status).or_default() += 1,
            Err(err) => *tally.errors.entry(reason(&err)).or_default() += 1,
        }
        progress.completed.fetch_add(1, Ordering::Relaxed);
    }
    tally
}

/// A short, stable name for why a request got no answer.
fn reason(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timeout".into()
    } else if err.is_connect() {
        "connect".into()
    } else if err.is_body() || err.is_decode() {
        "body".into()
    } else {
        "request".into()
    }
}
