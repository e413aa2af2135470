//! The wasmtime engine every plugin runs on, and loading: compile (or fetch the compiled
//! artifact), check the contract and the grants, prepare, smoke-test.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tracing::warn;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

use super::bindings::{cache_rules, rate_limit, recommendations};
use super::host::{self, PluginState};
use super::plugin::{PluginKind, PluginVersion, Prepared};
use super::settings::{Grant, Limits, PluginKv, Settings};
use crate::store::{Store as StateStore, Tree};

/// The version of the contract this gatehouse speaks.
pub const CONTRACT_VERSION: &str = "0.1.0";

/// How often the epoch advances: the granularity of call deadlines.
const TICK: Duration = Duration::from_millis(2);

/// Largest linear memory any plugin may have (each plugin's own cap is at most this).
pub const MAX_MEMORY: usize = 64 * 1024 * 1024;

/// Call stack a plugin may use: well under a worker thread's 2 MiB.
const MAX_WASM_STACK: usize = 512 * 1024;

/// Why a plugin cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The engine cannot be set up.
    #[error("policy engine: {0}")]
    Engine(String),
    /// The bytes are not a valid WebAssembly component.
    #[error("not a valid WebAssembly component: {0}")]
    Compile(String),
    /// Built against another version of the contract.
    #[error(
        "built against gatehouse:policy@{found}, but this gatehouse speaks @{CONTRACT_VERSION}: rebuild it with a matching gatehouse-sdk"
    )]
    WrongVersion {
        /// The version the plugin imports.
        found: String,
    },
    /// Imports a capability its config does not grant.
    #[error(
        "imports gatehouse:policy/{interface}, which its config does not grant: add \"{grant}\" to its grants"
    )]
    NotGranted {
        /// The interface.
        interface: &'static str,
        /// The grant that would allow it.
        grant: &'static str,
    },
    /// Imports something gatehouse does not provide.
    #[error(
        "imports {0}, which gatehouse does not provide (plugins get no filesystem, network or clock beyond gatehouse:policy/clock)"
    )]
    Unsupported(String),
    /// Does not export what its kind requires.
    #[error("is not a {kind} plugin: {why}")]
    WrongKind {
        /// The configured kind.
        kind: PluginKind,
        /// What wasmtime found missing or mismatched.
        why: String,
    },
    /// Trapped, timed out or ran out of memory on its first call.
    #[error("failed its first call: {0}")]
    SmokeTest(String),
}

/// What [`PolicyEngine::inspect`] found.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The kind its exports make it, if any.
    pub kind: Option<PluginKind>,
    /// The grants its imports need.
    pub grants: BTreeSet<Grant>,
    /// Everything it imports.
    pub imports: Vec<String>,
    /// sha256 of the wasm, hex.
    pub sha256: String,
}

/// What to load.
pub struct PluginSpec {
    /// Name in config.
    pub name: String,
    /// Which world it must implement.
    pub kind: PluginKind,
    /// What `plugin-config.get` returns.
    pub config: String,
    /// What it may import.
    pub grants: BTreeSet<Grant>,
    /// Its limits.
    pub limits: Limits,
}

/// One wasmtime engine (compiled code is only valid for the engine that compiled it), its
/// linker, and the thread that advances the epoch so calls can be cut off.
pub struct PolicyEngine {
    engine: Engine,
    linker: Linker<PluginState>,
    /// Where compiled artifacts and plugin key-value data live (none in `gatehouse check`).
    store: Option<Arc<dyn StateStore>>,
    compatibility: u64,
    /// Fuel per call when metering (`gatehouse policy test`): counts instructions.
    fuel_budget: Option<u64>,
    ticker: Ticker,
}

/// Fuel a metered call may use: far more than any policy needs, so the deadline still decides.
const FUEL_BUDGET: u64 = 10_000_000_000;

impl PolicyEngine {
    /// An engine with the pooling allocator, epoch interruption and the host interfaces linked.
    pub fn new(store: Option<Arc<dyn StateStore>>) -> Result<Self, LoadError> {
        Self::build(store, false)
    }

    /// Like [`PolicyEngine::new`], but every call also counts its fuel (about one unit per wasm
    /// instruction, in [`super::PluginStats::fuel`]): for `gatehouse policy test`, not serving.
    pub fn metered() -> Result<Self, LoadError> {
        Self::build(None, true)
    }

    fn build(store: Option<Arc<dyn StateStore>>, metered: bool) -> Result<Self, LoadError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(256);
        pool.total_core_instances(1024);
        pool.total_memories(256);
        pool.total_tables(1024);
        pool.max_memory_size(MAX_MEMORY);

        let mut config = Config::new();
        config.wasm_component_model(true);
        // On by default in 48.x and several times slower for synchronous calls; we need no async.
        config.concurrency_support(false);
        config.epoch_interruption(true);
        config.consume_fuel(metered);
        config.max_wasm_stack(MAX_WASM_STACK);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| LoadError::Engine(format!("{e:#}")))?;

        let mut linker = Linker::new(&engine);
        host::link(&mut linker).map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let compatibility = hasher.finish();
        let ticker = Ticker::start(engine.clone());
        Ok(Self {
            engine,
            linker,
            store,
            compatibility,
            fuel_budget: metered.then_some(FUEL_BUDGET),
            ticker,
        })
    }

    /// Loads `wasm` as the plugin described by `spec`: compiled (or taken from the artifact
    /// cache), checked against the contract and the grants, prepared, and called once.
    pub fn load(&self, spec: PluginSpec, wasm: &[u8]) -> Result<Arc<PluginVersion>, LoadError> {
        let sha256 = hex(&Sha256::digest(wasm));
        let component = self.component(wasm, &sha256)?;
        check_imports(&self.engine, &component, &spec.grants)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WrongKind {
                kind: spec.kind,
                why: format!("{e:#}"),
            })?;
        let wrong_kind = |e: wasmtime::Error| LoadError::WrongKind {
            kind: spec.kind,
            why: format!("{e:#}"),
        };
        let prepared = match spec.kind {
            PluginKind::RateLimit => {
                Prepared::RateLimit(rate_limit::RateLimitPre::new(pre).map_err(wrong_kind)?)
            }
            PluginKind::CacheRules => {
                Prepared::CacheRules(cache_rules::CacheRulesPre::new(pre).map_err(wrong_kind)?)
            }
            PluginKind::Recommendations => Prepared::Recommendations(
                recommendations::RecommendationsPre::new(pre).map_err(wrong_kind)?,
            ),
        };
        let kv = match &self.store {
            Some(store) if spec.grants.contains(&Grant::Kv) => Some(
                PluginKv::open(Arc::clone(store), &spec.name, spec.limits.kv_bytes)
                    .map_err(|e| LoadError::Engine(format!("plugin storage: {e}")))?,
            ),
            _ => None,
        };
        let deadline_ticks = spec.limits.deadline.as_nanos().div_ceil(TICK.as_nanos()) as u64 + 1;
        let settings = Arc::new(Settings {
            name: spec.name,
            config: spec.config,
            grants: spec.grants,
            limits: spec.limits,
            kv,
        });
        let version = Arc::new(PluginVersion::new(
            settings,
            spec.kind,
            sha256,
            prepared,
            Epoch {
                engine: self.engine.clone(),
                clock: Arc::clone(&self.ticker.clock),
            },
            deadline_ticks,
            self.fuel_budget,
        ));
        version
            .smoke_test()
            .map_err(|e| LoadError::SmokeTest(e.to_string()))?;
        Ok(version)
    }

    /// What a component is, without loading it as a plugin: the kind its exports make it, and the
    /// grants its imports need.
    pub fn inspect(&self, wasm: &[u8]) -> Result<Inspection, LoadError> {
        let component = self.component(wasm, &hex(&Sha256::digest(wasm)))?;
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let kind = if exports.iter().any(|e| e == "decide") {
            Some(PluginKind::RateLimit)
        } else if exports.iter().any(|e| e == "on-request") {
            Some(PluginKind::CacheRules)
        } else if exports.iter().any(|e| e == "recommend") {
            Some(PluginKind::Recommendations)
        } else {
            None
        };
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let grants = Grant::ALL
            .into_iter()
            .filter(|g| {
                imports.iter().any(|i| {
                    i.strip_prefix("gatehouse:policy/")
                        .is_some_and(|r| r.starts_with(&format!("{}@", g.interface())))
                })
            })
            .collect();
        Ok(Inspection {
            kind,
            grants,
            imports,
            sha256: hex(&Sha256::digest(wasm)),
        })
    }

    /// The compiled component: from the artifact cache when this engine compiled these exact
    /// bytes before, otherwise compiled now (tens of milliseconds) and cached.
    fn component(&self, wasm: &[u8], sha256: &str) -> Result<Component, LoadError> {
        let key = format!("{sha256}/{:016x}", self.compatibility);
        if let Some(store) = &self.store
            && let Ok(Some(artifact)) = store.get(Tree::Artifacts, key.as_bytes())
        {
            // SAFETY: the artifact was produced by `Component::serialize` on an engine with this
            // compatibility hash (part of the key) and written only by gatehouse into its own
            // state store; artifacts from anywhere else are never deserialized.
            #[allow(unsafe_code)]
            match unsafe { Component::deserialize(&self.engine, &artifact) } {
                Ok(component) => return Ok(component),
                Err(err) => warn!(error = %err, "cached plugin artifact unusable; compiling again"),
            }
        }
        let component =
            Component::new(&self.engine, wasm).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        if let Some(store) = &self.store
            && let Ok(artifact) = component.serialize()
            && let Err(err) = store.put(Tree::Artifacts, key.as_bytes(), &artifact)
        {
            warn!(error = %err, "cannot cache the compiled plugin; it will be compiled again next start");
        }
        Ok(component)
    }

    /// A fresh store for a plugin instance, with its limits.
    pub(crate) fn store(engine: &Engine, settings: &Arc<Settings>) -> Store<PluginState> {
        let mut store = Store::new(engine, PluginState::new(Arc::clone(settings)));
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_trap();
        store
    }
}

/// Refuses imports outside the contract: another contract version, ungranted capabilities, and
/// anything but the inert `wasi:io` and `wasi:cli` a Rust guest brings along.
fn check_imports(
    engine: &Engine,
    component: &Component,
    grants: &BTreeSet<Grant>,
) -> Result<(), LoadError> {
    for (name, _) in component.component_type().imports(engine) {
        if let Some(rest) = name.strip_prefix("gatehouse:policy/") {
            let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
            if version != CONTRACT_VERSION {
                return Err(LoadError::WrongVersion {
                    found: version.to_string(),
                });
            }
            if let Some(grant) = Grant::ALL.into_iter().find(|g| g.interface() == interface)
                && !grants.contains(&grant)
            {
                return Err(LoadError::NotGranted {
                    interface: grant.interface(),
                    grant: grant.name(),
                });
            }
        } else if !(name.starts_with("wasi:io/") || name.starts_with("wasi:cli/")) {
            return Err(LoadError::Unsupported(name.to_string()));
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Ticks without a call after which the ticker sleeps (one second): an idle gatehouse does not
/// wake 500 times a second.
const IDLE_TICKS: u32 = 500;

/// The epoch's pace, as calls see it: each call marks its start and end, so the ticker runs
/// while any call may need its deadline, and sleeps when none has come for a while.
#[derive(Default)]
pub(crate) struct Clock {
    started: AtomicU64,
    finished: AtomicU64,
    /// The ticker is parked (or about to be): the next call wakes it.
    asleep: AtomicBool,
    stop: AtomicBool,
    ticker: std::sync::OnceLock<std::thread::Thread>,
}

/// A call in progress on the [`Clock`]; it ends when dropped.
pub(crate) struct Ticking<'a>(&'a Clock);

impl Clock {
    /// Marks a call's start; the epoch advances at least until the returned guard is dropped.
    pub(crate) fn start_call(&self) -> Ticking<'_> {
        // Sequentially consistent with the ticker's `asleep` then `started`: either it sees
        // this call, or this call sees it asleep and wakes it.
        self.started.fetch_add(1, Ordering::SeqCst);
        if self.asleep.load(Ordering::SeqCst)
            && let Some(ticker) = self.ticker.get()
        {
            ticker.unpark();
        }
        Ticking(self)
    }

    fn calls(&self) -> (u64, u64) {
        (
            self.started.load(Ordering::SeqCst),
            self.finished.load(Ordering::SeqCst),
        )
    }
}

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::SeqCst);
    }
}

/// Advances the engine's epoch every [`TICK`] while calls come, until dropped.
struct Ticker {
    clock: Arc<Clock>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: Engine) -> Self {
        let clock = Arc::new(Clock::default());
        let shared = Arc::clone(&clock);
        let thread = std::thread::Builder::new()
            .name("policy-epoch".into())
            .spawn(move || tick(&engine, &shared))
            .expect("spawn the policy epoch thread");
        let _ = clock.ticker.set(thread.thread().clone());
        Self {
            clock,
            thread: Some(thread),
        }
    }
}

fn tick(engine: &Engine, clock: &Clock) {
    let (mut seen, mut idle) = (clock.calls(), 0);
    while !clock.stop.load(Ordering::Relaxed) {
        std::thread::sleep(TICK);
        engine.increment_epoch();
        let now = clock.calls();
        // Busy: calls started since the last look, or one is still running.
        if now != seen || now.0 != now.1 {
            (seen, idle) = (now, 0);
            continue;
        }
        idle += 1;
        if idle < IDLE_TICKS {
            continue;
        }
        clock.asleep.store(true, Ordering::SeqCst);
        // A call that started before `asleep` was set did not wake us: look once more.
        if clock.calls() == seen && !clock.stop.load(Ordering::SeqCst) {
            std::thread::park();
        }
        clock.asleep.store(false, Ordering::SeqCst);
        idle = 0;
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.clock.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// The engine a plugin version runs on, and the clock its calls' deadlines count on.
pub(crate) struct Epoch {
    pub(crate) engine: Engine,
    pub(crate) clock: Arc<Clock>,
}

/// A process-wide counter for plugin version ids (the key of each thread's warm instances).
pub(crate) fn next_version_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::policy::{PluginKind, Request};

    /// Whether the ticker reads `asleep` within ten seconds.
    fn becomes(clock: &Clock, asleep: bool) -> bool {
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < until {
            if clock.asleep.load(Ordering::SeqCst) == asleep {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn an_idle_ticker_sleeps_and_a_looping_call_still_meets_its_deadline() {
        let engine = PolicyEngine::new(None).unwrap();
        let wasm = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/policies/misbehaving.wasm"
        ))
        .unwrap();
        let spec = PluginSpec {
            name: "looping".into(),
            kind: PluginKind::RateLimit,
            config: r#"{"mode":"loop"}"#.into(),
            grants: BTreeSet::from([Grant::Config, Grant::Kv]),
            limits: Limits {
                deadline: Duration::from_millis(20),
                memory_bytes: 16 << 20,
                kv_bytes: 1 << 20,
            },
        };
        let plugin = engine.load(spec, &wasm).unwrap();
        let clock = &engine.ticker.clock;
        assert!(
            becomes(clock, true),
            "no calls for a second: the ticker sleeps"
        );
        let request = Request {
            method: "GET".into(),
            path: "/boom".into(),
            query: String::new(),
            host: "shop.example".into(),
            route: "api".into(),
            client_ip: "203.0.113.7".into(),
        };
        // The call wakes the ticker, or its deadline would never come and this would hang.
        assert!(plugin.decide(&request, None).is_err());
        assert!(becomes(clock, true), "idle again: asleep again");
    }
}
