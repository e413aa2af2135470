//! Loaded plugins and calling them.
//!
//! Each worker thread keeps one warm instance per plugin version (instantiating costs ~100 µs,
//! a call ~1 µs). A call that traps, runs past its deadline or outgrows its memory discards that
//! instance (its state may be broken) and is counted; the caller applies the plugin's fallback.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use actix_web::HttpRequest;
use actix_web::http::header::HeaderMap;
use arc_swap::ArcSwap;
use wasmtime::{Store, Trap};

use super::bindings::shared::types;
use super::bindings::{cache_rules, rate_limit, recommendations};
use super::engine::{Epoch, PolicyEngine, next_version_id};
use super::host::PluginState;
use super::settings::Settings;

pub use super::bindings::cache_rules::gatehouse::policy::cache_types;
pub use super::bindings::rate_limit::gatehouse::policy::rate_limit_types;
pub use super::bindings::recommendations::gatehouse::policy::recommend_types;
pub use types::Request;

/// The world a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    /// Decides what a request counts against (`decide`).
    RateLimit,
    /// Decides what is cached and how long (`on-request`, `on-response`).
    CacheRules,
    /// Advises from a metrics snapshot (`recommend`).
    Recommendations,
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RateLimit => "rate-limit",
            Self::CacheRules => "cache-rules",
            Self::Recommendations => "recommendations",
        })
    }
}

impl std::str::FromStr for PluginKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        [Self::RateLimit, Self::CacheRules, Self::Recommendations]
            .into_iter()
            .find(|kind| kind.to_string() == text)
            .ok_or_else(|| format!("{text:?}: expected rate-limit, cache-rules or recommendations"))
    }
}

/// What answers when a plugin fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// As if the plugin were not there (no limit, no caching).
    Open,
    /// Refuse the request (503).
    Closed,
}

/// A component prepared for quick instantiation, by kind.
pub(crate) enum Prepared {
    RateLimit(rate_limit::RateLimitPre<PluginState>),
    CacheRules(cache_rules::CacheRulesPre<PluginState>),
    Recommendations(recommendations::RecommendationsPre<PluginState>),
}

enum Instance {
    RateLimit(rate_limit::RateLimit),
    CacheRules(cache_rules::CacheRules),
    Recommendations(recommendations::Recommendations),
}

/// Why a call gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// It ran past its deadline.
    #[error("ran past its deadline")]
    Timeout,
    /// It trapped (a panic, an out-of-bounds access, memory beyond its cap, ...).
    #[error("trapped: {0}")]
    Trap(String),
    /// No instance could be made (the instance pool is exhausted).
    #[error("cannot be instantiated: {0}")]
    Instantiate(String),
}

/// Counters of one plugin version.
#[derive(Debug, Default)]
pub struct PluginStats {
    /// Calls made.
    pub calls: AtomicU64,
    /// Calls that trapped.
    pub traps: AtomicU64,
    /// Calls cut off at the deadline.
    pub timeouts: AtomicU64,
    /// Time spent in calls, in nanoseconds.
    pub nanos: AtomicU64,
    /// Fuel used by calls (about one unit per wasm instruction), when the engine meters.
    pub fuel: AtomicU64,
    /// Calls by duration: bucket `i` counts calls under 2^i microseconds (the last, the rest).
    pub durations: [AtomicU64; DURATION_BUCKETS],
}

/// Buckets of [`PluginStats::durations`]: up to 2^20 µs (about a second), then the rest.
pub(crate) const DURATION_BUCKETS: usize = 22;

impl PluginStats {
    /// Counts one call that took `elapsed`.
    fn record(&self, elapsed: std::time::Duration) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        let micros = elapsed.as_micros() as u64;
        // The first power of two above it: 0 µs → bucket 0, 1 µs → 1, 2–3 µs → 2, ...
        let bucket = (u64::BITS - micros.leading_zeros()) as usize;
        self.durations[bucket.min(DURATION_BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// The `q` quantile (0 to 1) of call durations in microseconds, as the upper bound of the
    /// bucket it falls in; none before the first call.
    pub fn quantile_micros(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self
            .durations
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        counts.iter().enumerate().find_map(|(bucket, &count)| {
            seen += count;
            (total > 0 && seen >= rank).then(|| 1u64 << bucket)
        })
    }
}

/// One loaded version of a plugin.
pub struct PluginVersion {
    id: u64,
    /// Its name, config, grants and limits.
    pub settings: Arc<Settings>,
    /// Its world.
    pub kind: PluginKind,
    /// sha256 of its wasm, hex.
    pub sha256: String,
    prepared: Prepared,
    epoch: Epoch,
    deadline_ticks: u64,
    /// Whether calls are metered with fuel (`gatehouse policy test`), and the budget of one.
    fuel_budget: Option<u64>,
    /// Its counters.
    pub stats: PluginStats,
}

/// A thread's warm instance of one plugin version.
struct Warm {
    store: Store<PluginState>,
    instance: Instance,
    version: Weak<PluginVersion>,
}

thread_local! {
    static WARM: RefCell<HashMap<u64, Warm>> = RefCell::new(HashMap::new());
}

impl PluginVersion {
    pub(crate) fn new(
        settings: Arc<Settings>,
        kind: PluginKind,
        sha256: String,
        prepared: Prepared,
        epoch: Epoch,
        deadline_ticks: u64,
        fuel_budget: Option<u64>,
    ) -> Self {
        Self {
            id: next_version_id(),
            settings,
            kind,
            sha256,
            prepared,
            epoch,
            deadline_ticks,
            fuel_budget,
            stats: PluginStats::default(),
        }
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// A rate-limit decision for `request` (whose headers and cookies come from `http`).
    pub fn decide(
        self: &Arc<Self>,
        request: &Request,
        http: Option<&HttpRequest>,
    ) -> Result<rate_limit_types::Decision, CallError> {
        self.call(http, |store, instance| match instance {
            Instance::RateLimit(plugin) => plugin.call_decide(store, request),
            _ => unreachable!("rate-limit plugins are prepared as rate-limit instances"),
        })
    }

    /// Whether and how to look `request` up in the cache.
    pub fn on_request(
        self: &Arc<Self>,
        request: &Request,
        http: Option<&HttpRequest>,
    ) -> Result<cache_types::RequestRule, CallError> {
        self.call(http, |store, instance| match instance {
            Instance::CacheRules(plugin) => plugin.call_on_request(store, request),
            _ => unreachable!("cache-rules plugins are prepared as cache-rules instances"),
        })
    }

    /// Whether and how long to store a response with these `headers`.
    pub fn on_response(
        self: &Arc<Self>,
        request: &Request,
        response: &cache_types::Response,
        headers: &HeaderMap,
        http: Option<&HttpRequest>,
    ) -> Result<cache_types::ResponseRule, CallError> {
        self.call(http, |store, instance| match instance {
            Instance::CacheRules(plugin) => {
                store.data_mut().response_headers = Some(headers.clone());
                let rule = plugin.call_on_response(&mut *store, request, *response);
                store.data_mut().response_headers = None;
                rule
            }
            _ => unreachable!("cache-rules plugins are prepared as cache-rules instances"),
        })
    }

    /// Advice for `snapshot`.
    pub fn recommend(
        self: &Arc<Self>,
        snapshot: &recommend_types::Snapshot,
    ) -> Result<Vec<recommend_types::Recommendation>, CallError> {
        self.call(None, |store, instance| match instance {
            Instance::Recommendations(plugin) => plugin.call_recommend(store, snapshot),
            _ => unreachable!("recommendation plugins are prepared as recommendation instances"),
        })
    }

    /// One call on this thread's warm instance, with the deadline and the request's headers set.
    fn call<R>(
        self: &Arc<Self>,
        http: Option<&HttpRequest>,
        body: impl FnOnce(&mut Store<PluginState>, &Instance) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        // The epoch advances for as long as this call (and an instantiation) may need it.
        let _ticking = self.epoch.clock.start_call();
        WARM.with_borrow_mut(|warm| {
            if !warm.contains_key(&self.id) {
                // Versions replaced by a reload leave their instances here: drop them now.
                warm.retain(|_, w| w.version.strong_count() > 0);
                let fresh = self.instantiate()?;
                warm.insert(self.id, fresh);
            }
            let entry = warm.get_mut(&self.id).expect("inserted above");
            entry.store.data_mut().request = http.cloned();
            entry.store.set_epoch_deadline(self.deadline_ticks);
            if let Some(budget) = self.fuel_budget {
                let _ = entry.store.set_fuel(budget);
            }
            let started = Instant::now();
            let result = body(&mut entry.store, &entry.instance);
            entry.store.data_mut().request = None;
            if let Some(budget) = self.fuel_budget {
                let used = budget - entry.store.get_fuel().unwrap_or(0);
                self.stats.fuel.fetch_add(used, Ordering::Relaxed);
            }
            self.stats.record(started.elapsed());
            result.map_err(|err| {
                // Its memory or globals may be half-updated: never call this instance again.
                let output = warm
                    .remove(&self.id)
                    .map(|w| w.store.data().output.take())
                    .unwrap_or_default();
                self.failed(&err, &output)
            })
        })
    }

    fn instantiate(self: &Arc<Self>) -> Result<Warm, CallError> {
        let mut store = PolicyEngine::store(&self.epoch.engine, &self.settings);
        // Instantiation runs the component's start-up code: under the same limits as a call.
        store.set_epoch_deadline(self.deadline_ticks);
        if let Some(budget) = self.fuel_budget {
            let _ = store.set_fuel(budget);
        }
        let failed = |e: wasmtime::Error| CallError::Instantiate(format!("{e:#}"));
        let instance = match &self.prepared {
            Prepared::RateLimit(pre) => {
                Instance::RateLimit(pre.instantiate(&mut store).map_err(failed)?)
            }
            Prepared::CacheRules(pre) => {
                Instance::CacheRules(pre.instantiate(&mut store).map_err(failed)?)
            }
            Prepared::Recommendations(pre) => {
                Instance::Recommendations(pre.instantiate(&mut store).map_err(failed)?)
            }
        };
        Ok(Warm {
            store,
            instance,
            version: Arc::downgrade(self),
        })
    }

    /// Classifies a failed call; `output` is what the plugin printed (a panic message, usually).
    fn failed(&self, err: &wasmtime::Error, output: &str) -> CallError {
        if matches!(
            err.downcast_ref::<Trap>(),
            Some(Trap::Interrupt | Trap::OutOfFuel)
        ) {
            self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
            return CallError::Timeout;
        }
        self.stats.traps.fetch_add(1, Ordering::Relaxed);
        let trap = err
            .downcast_ref::<Trap>()
            .map_or_else(|| format!("{err:#}"), Trap::to_string);
        CallError::Trap(if output.is_empty() {
            trap
        } else {
            format!("{trap}; it printed: {output}")
        })
    }

    /// One call with harmless input, on a fresh instance: catches a plugin that cannot even start
    /// (a config it cannot parse, a missing grant used at start-up) before it serves traffic.
    pub(crate) fn smoke_test(self: &Arc<Self>) -> Result<(), CallError> {
        let request = Request {
            method: "GET".into(),
            path: "/".into(),
            query: String::new(),
            host: "localhost".into(),
            route: "gatehouse-smoke-test".into(),
            client_ip: "127.0.0.1".into(),
        };
        match self.kind {
            PluginKind::RateLimit => self.decide(&request, None).map(drop),
            PluginKind::CacheRules => {
                self.on_request(&request, None)?;
                let response = cache_types::Response { status: 200 };
                self.on_response(&request, &response, &HeaderMap::new(), None)
                    .map(drop)
            }
            PluginKind::Recommendations => {
                let snapshot = recommend_types::Snapshot {
                    traffic: Vec::new(),
                    pools: Vec::new(),
                    slow_queries: Vec::new(),
                    cpu_percent: 0.0,
                    memory_percent: 0.0,
                };
                self.recommend(&snapshot).map(drop)
            }
        }
    }
}

/// A named plugin as routes see it: the version in use, swapped atomically on reload (calls in
/// flight finish on the version they started with), and the last good one kept for rollback.
pub struct Plugin {
    /// What answers when the plugin fails.
    pub fallback: Fallback,
    current: ArcSwap<PluginVersion>,
    previous: Mutex<Option<Arc<PluginVersion>>>,
}

impl Plugin {
    /// A plugin running `version`.
    pub fn new(version: Arc<PluginVersion>, fallback: Fallback) -> Self {
        Self {
            fallback,
            current: ArcSwap::new(version),
            previous: Mutex::new(None),
        }
    }

    /// The version in use.
    pub fn current(&self) -> Arc<PluginVersion> {
        self.current.load_full()
    }

    /// Puts `version` in use; the one it replaces becomes the rollback target.
    pub fn swap(&self, version: Arc<PluginVersion>) {
        let old = self.current.swap(version);
        *self.previous.lock().unwrap_or_else(|p| p.into_inner()) = Some(old);
    }

    /// The version a rollback would go back to.
    pub fn previous(&self) -> Option<Arc<PluginVersion>> {
        self.previous
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Goes back to the version before the last swap; false when there is none.
    pub fn rollback(&self) -> bool {
        let previous = self
            .previous
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match previous {
            Some(version) => {
                self.current.store(version);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn call_durations_give_a_p99_bucket() {
        let stats = PluginStats::default();
        assert_eq!(stats.quantile_micros(0.99), None);
        for _ in 0..98 {
            stats.record(Duration::from_micros(3));
        }
        stats.record(Duration::from_micros(100));
        stats.record(Duration::from_secs(5));
        assert_eq!(stats.calls.load(Ordering::Relaxed), 100);
        assert_eq!(stats.quantile_micros(0.5), Some(4), "3 µs is under 4");
        assert_eq!(
            stats.quantile_micros(0.99),
            Some(128),
            "100 µs is under 128"
        );
        assert_eq!(
            stats.quantile_micros(1.0),
            Some(1 << (DURATION_BUCKETS - 1))
        );
    }
}
