//! The PostgreSQL pooler: applications point their `DATABASE_URL` at it instead of PostgreSQL.
//!
//! ```text
//! client ─▶ listener ─▶ client (startup, auth) ─▶ session ─▶ pools (deadpool, per database
//!                                                   │          and user) ─▶ server (logged-in
//!                                                   │          PostgreSQL connection)
//!                                                   └─ prepared (statement renaming), settings
//!                                                      and sql (session state), cancel
//! ```
//!
//! It runs on its own tokio runtime, apart from the HTTP edge, so a flood on one never starves
//! the other: with `pool.workers = 1`, one thread drives a single-threaded runtime (as PgBouncer
//! runs one thread: no wake-ups across threads, the least work per message); with more, a
//! multi-threaded one. It owns its listeners and server connections; it must not touch the
//! edge or the store.

mod auth;
mod cancel;
mod client;
mod codec;
mod console;
pub mod health;
mod pools;
mod prepared;
mod registry;
mod server;
mod session;
mod settings;
mod sql;
mod stats;
mod views;

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config::{PoolConfig, Problem};
use crate::edge::tls::CertResolver;
use auth::Users;
use pools::Pools;
use registry::Registry;

/// How often idle and aged server connections are closed and `min_idle` topped up.
const MAINTAIN_INTERVAL: Duration = Duration::from_secs(1);

/// Re-reads and applies the whole configuration (the console's `RELOAD`).
pub type ReloadHook = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What every client task reads.
pub(crate) struct Shared {
    config: ArcSwap<PoolConfig>,
    users: ArcSwap<Users>,
    pools: Arc<Pools>,
    registry: Arc<Registry>,
    /// Client connections open now.
    clients: AtomicUsize,
    /// Databases paused from the console (`*`: all).
    paused: Mutex<HashSet<String>>,
    reload: ReloadHook,
    /// The TLS configuration clients get when they ask (`pool.tls`).
    tls: arc_swap::ArcSwapOption<rustls::ServerConfig>,
    /// The databases' last probes.
    health: health::Health,
    /// Where transaction spans go (`traces.pool`).
    traces: Option<Arc<crate::telemetry::traces::Traces>>,
}

impl Shared {
    pub(crate) fn config(&self) -> arc_swap::Guard<Arc<PoolConfig>> {
        self.config.load()
    }

    pub(crate) fn is_paused(&self, database: &str) -> bool {
        let paused = self.paused.lock().expect("paused lock");
        paused.contains(database) || paused.contains("*")
    }

    /// `PAUSE [db]`: new transactions wait; returns once the servers in use are back.
    pub(crate) async fn pause(&self, database: Option<&str>) {
        self.paused
            .lock()
            .expect("paused lock")
            .insert(database.unwrap_or("*").to_string());
        let matches = |pool: &pools::ServerPool| database.is_none_or(|db| pool.key.database == db);
        for pool in self.pools.all() {
            if matches(&pool) {
                pool.set_paused(true);
            }
        }
        loop {
            let busy = self.pools.all().iter().any(|pool| {
                let status = pool.status();
                matches(pool) && status.size > status.available
            });
            if !busy {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The databases paused (`*`: all), sorted.
    pub(crate) fn paused(&self) -> Vec<String> {
        let mut paused: Vec<String> = self
            .paused
            .lock()
            .expect("paused lock")
            .iter()
            .cloned()
            .collect();
        paused.sort();
        paused
    }

    /// `RESUME [db]`.
    pub(crate) fn resume(&self, database: Option<&str>) {
        let mut paused = self.paused.lock().expect("paused lock");
        match database {
            Some(db) => {
                paused.remove(db);
            }
            None => paused.clear(),
        }
        let everything = paused.contains("*");
        for pool in self.pools.all() {
            if !everything && !paused.contains(&pool.key.database) {
                pool.set_paused(false);
            }
        }
    }

    /// `RELOAD`: the whole configuration, through the app (validated, then applied).
    pub(crate) async fn reload(self: &Arc<Self>) -> Result<(), String> {
        let shared = Arc::clone(self);
        tokio::task::spawn_blocking(move || (shared.reload)())
            .await
            .map_err(|err| err.to_string())?
    }
}

/// A running pooler. Stopping it closes every client and server connection.
pub struct Pooler {
    threads: Threads,
    shared: Arc<Shared>,
}

/// The threads the pooler's tasks run on.
enum Threads {
    /// A single-threaded runtime, driven by a thread of its own until told to stop.
    One {
        handle: tokio::runtime::Handle,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    },
    /// A multi-threaded runtime.
    Many(Option<tokio::runtime::Runtime>),
}

impl Threads {
    fn start(workers: usize) -> std::io::Result<Self> {
        if workers > 1 {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .thread_name("gatehouse-pool")
                .enable_all()
                .build()?;
            return Ok(Self::Many(Some(runtime)));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("gatehouse-pool".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                runtime.shutdown_background();
            })?;
        Ok(Self::One {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn handle(&self) -> tokio::runtime::Handle {
        match self {
            Self::One { handle, .. } => handle.clone(),
            Self::Many(runtime) => runtime.as_ref().expect("running").handle().clone(),
        }
    }

    /// Stops every task; connections close with them.
    fn stop(&mut self) {
        match self {
            Self::One { stop, thread, .. } => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
                if let Some(thread) = thread.take() {
                    let _ = thread.join();
                }
            }
            Self::Many(runtime) => {
                if let Some(runtime) = runtime.take() {
                    runtime.shutdown_background();
                }
            }
        }
    }
}

/// Read access to a running pooler for the admin API and metrics.
#[derive(Clone)]
pub struct PoolerView(Arc<Shared>);

impl PoolerView {
    /// Every table of the admin console (pools, stats, clients, servers, databases, queries).
    pub fn json(&self) -> serde_json::Value {
        views::all_json(&self.0)
    }

    /// Holds new transactions of `database` (all, when `None`), as the console's `PAUSE`;
    /// returns once the servers in use are back.
    pub async fn pause(&self, database: Option<&str>) {
        self.0.pause(database).await;
    }

    /// Lets them go again, as the console's `RESUME`.
    pub fn resume(&self, database: Option<&str>) {
        self.0.resume(database);
    }

    /// Per pool: database, user, server connections in use, allowed, clients waiting, and
    /// totals, for `/metrics`.
    pub fn pools(&self) -> Vec<PoolFigures> {
        self.0
            .pools
            .all()
            .iter()
            .map(|pool| {
                let status = pool.status();
                let waiting = self
                    .0
                    .registry
                    .clients()
                    .iter()
                    .filter(|c| c.pool == pool.key && c.link.state() == registry::State::Waiting)
                    .count();
                let totals = &pool.totals;
                let get = stats::PoolTotals::get;
                PoolFigures {
                    database: pool.key.database.clone(),
                    user: pool.key.user.clone(),
                    servers_active: (status.size - status.available) as u64,
                    servers_idle: status.available as u64,
                    servers_max: status.max_size as u64,
                    clients_waiting: waiting as u64,
                    transactions: get(&totals.transactions),
                    queries: get(&totals.queries),
                    received_bytes: get(&totals.received),
                    sent_bytes: get(&totals.sent),
                    query_seconds: get(&totals.query_micros) as f64 / 1e6,
                    wait_seconds: get(&totals.wait_micros) as f64 / 1e6,
                    acquire_errors: get(&totals.acquire_errors),
                    wait_buckets: stats::WAIT_BUCKETS
                        .iter()
                        .copied()
                        .chain([f64::INFINITY])
                        .zip(totals.wait_counts())
                        .collect(),
                }
            })
            .collect()
    }

    /// Each database's last probe (gatehouse's own `select 1`, and `pg_stat_statements`).
    pub fn databases(&self) -> std::collections::BTreeMap<String, health::Probe> {
        self.0.health.probes()
    }

    /// Client connections open now.
    pub fn clients(&self) -> u64 {
        self.0.clients.load(std::sync::atomic::Ordering::Relaxed) as u64
    }

    /// The query shapes that took the most time in all, at most `limit`.
    pub fn busiest_queries(&self, limit: usize) -> Vec<QueryFigures> {
        let mut shapes: Vec<QueryFigures> = self
            .0
            .pools
            .all()
            .iter()
            .flat_map(|pool| pool.queries.shapes())
            .map(|shape| QueryFigures {
                calls: shape.calls,
                total: shape.total,
                p99: shape.p99(),
                text: shape.text,
            })
            .collect();
        shapes.sort_by_key(|shape| std::cmp::Reverse(shape.total));
        shapes.truncate(limit);
        shapes
    }
}

/// One pool's figures, as `/metrics` shows them.
#[derive(Debug, Clone)]
pub struct PoolFigures {
    /// Database name as clients use it.
    pub database: String,
    /// User.
    pub user: String,
    /// Server connections serving a client.
    pub servers_active: u64,
    /// Server connections idle in the pool.
    pub servers_idle: u64,
    /// Server connections allowed (pool size plus overflow).
    pub servers_max: u64,
    /// Clients waiting for a server connection.
    pub clients_waiting: u64,
    /// Transactions served.
    pub transactions: u64,
    /// Queries (request groups) served.
    pub queries: u64,
    /// Bytes from clients.
    pub received_bytes: u64,
    /// Bytes to clients.
    pub sent_bytes: u64,
    /// Time queries took, summed.
    pub query_seconds: f64,
    /// Time clients waited for a server, summed.
    pub wait_seconds: f64,
    /// Clients that got no server connection.
    pub acquire_errors: u64,
    /// Waits by upper bound in seconds (not cumulative; the last bound is infinite).
    pub wait_buckets: Vec<(f64, u64)>,
}

/// A query shape's figures.
#[derive(Debug, Clone)]
pub struct QueryFigures {
    /// Normalised text.
    pub text: String,
    /// Calls so far.
    pub calls: u64,
    /// Time taken, summed.
    pub total: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

/// Checks what the config alone cannot: the user list and the TLS files load.
pub fn check(config: &PoolConfig) -> Result<(), Problem> {
    Users::load(config).map_err(|err| {
        let key = if matches!(err, auth::UsersError::Secret { .. }) {
            "pool.users"
        } else {
            "pool.auth_file"
        };
        Problem::new(key, err.to_string())
    })?;
    tls_config(config)?;
    Ok(())
}

/// The rustls configuration of `pool.tls`, loaded from its files.
fn tls_config(config: &PoolConfig) -> Result<Option<Arc<rustls::ServerConfig>>, Problem> {
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    let resolver = CertResolver::from_files(&tls.cert, &tls.key, "pool.tls")
        .map_err(|err| Problem::new(err.config_key(), err.to_string()))?;
    Ok(Some(Arc::new(crate::edge::tls::server_config(Arc::new(
        resolver,
    )))))
}

impl Pooler {
    /// Starts serving on `listeners` (already bound); `reload` applies a new configuration;
    /// each transaction is a span in `traces`, when given.
    pub fn start(
        config: &PoolConfig,
        listeners: Vec<StdListener>,
        reload: ReloadHook,
        traces: Option<Arc<crate::telemetry::traces::Traces>>,
    ) -> Result<Self, String> {
        let users = Users::load(config).map_err(|err| err.to_string())?;
        let tls = tls_config(config).map_err(|problem| problem.message)?;
        let workers = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let threads = Threads::start(workers)
            .map_err(|err| format!("cannot start the pooler's threads: {err}"))?;
        let runtime = threads.handle();
        let shared = Arc::new(Shared {
            config: ArcSwap::from_pointee(config.clone()),
            users: ArcSwap::from_pointee(users),
            pools: Arc::new(Pools::default()),
            registry: Arc::new(Registry::default()),
            clients: AtomicUsize::new(0),
            paused: Mutex::default(),
            reload,
            tls: arc_swap::ArcSwapOption::new(tls),
            health: health::Health::default(),
            traces,
        });
        let entered = runtime.enter();
        for listener in listeners {
            let addr = listener.local_addr().ok();
            let listener = TcpListener::from_std(listener)
                .map_err(|err| format!("cannot serve the pooler listener: {err}"))?;
            info!(addr = ?addr, mode = ?config.mode, "pooler listening");
            runtime.spawn(accept(Arc::clone(&shared), listener));
        }
        runtime.spawn(Arc::clone(&shared.pools).maintain_forever(MAINTAIN_INTERVAL));
        runtime.spawn(health::run(Arc::clone(&shared)));
        drop(entered);
        Ok(Self { threads, shared })
    }

    /// Read access for the admin API and metrics.
    pub fn view(&self) -> PoolerView {
        PoolerView(Arc::clone(&self.shared))
    }

    /// Applies a new (validated) `[pool]`: users, databases, sizes and timeouts. New logins
    /// get pools built from it; clients already in keep theirs until they leave. The listen
    /// addresses and threads change only with a restart.
    pub fn reload(&self, config: &PoolConfig) -> Result<(), String> {
        let users = Users::load(config).map_err(|err| err.to_string())?;
        let tls = tls_config(config).map_err(|problem| problem.message)?;
        self.shared.users.store(Arc::new(users));
        self.shared.tls.store(tls);
        self.shared.config.store(Arc::new(config.clone()));
        self.shared
            .pools
            .retain_databases(|db| config.databases.contains_key(db));
        Ok(())
    }

    /// Closes the pools and stops every task (connections close with them).
    pub fn stop(mut self) {
        self.shared.pools.close();
        self.threads.stop();
    }
}

impl Drop for Pooler {
    fn drop(&mut self) {
        self.threads.stop();
    }
}

async fn accept(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(client::serve(Arc::clone(&shared), stream, peer));
            }
            // Out of file descriptors, most likely: wait instead of spinning.
            Err(err) => {
                warn!(error = %err, "pooler cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The listen addresses, as bound.
pub(crate) fn local_addrs(listeners: &[StdListener]) -> Vec<SocketAddr> {
    listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect()
}

/// What the pooler reads from every query it relays: the session effects and the shape
/// (returned). For the benchmark.
#[doc(hidden)]
pub fn read_query(sql: &str) -> u64 {
    sql::effects(sql).fingerprint
}

/// Reads `data` as a client's bytes: a startup packet, then frontend messages, each framed and
/// checked, its SQL read for session effects and shapes, and (as in transaction mode) its
/// statement names rewritten, until the bytes end or a message is refused. Returns the
/// messages accepted. For the fuzz target: it must never panic.
#[doc(hidden)]
pub fn decode_client_bytes(data: &[u8]) -> usize {
    let mut buf = bytes::BytesMut::from(data);
    if let Ok(Some(len)) = codec::startup_len(&buf) {
        let packet = buf.split_to(len);
        if codec::parse_startup(&packet).is_err() {
            return 0;
        }
    }
    let mut statements = prepared::ClientStatements::default();
    let mut server_statements = prepared::ServerStatements::new(4);
    let mut expect = prepared::Expectations::default();
    let mut out = bytes::BytesMut::new();
    let mut accepted = 0;
    while let Ok(Some((tag, len))) = codec::frontend_frame(&buf, 1 << 20) {
        let msg = buf.split_to(len);
        let text = match tag {
            b'Q' | b'P' => codec::sql_text(&msg),
            _ => Some(""),
        };
        let Some(text) = text else { break };
        let _ = sql::effects(text);
        let _ = sql::normalize(text);
        let mut side = prepared::ServerSide {
            statements: &mut server_statements,
            expect: &mut expect,
        };
        if prepared::rewrite(&msg, &mut statements, &mut side, &mut out).is_err() {
            break;
        }
        if tag == b'S' {
            expect.group_sent();
            expect.group_done(&mut server_statements);
        }
        accepted += 1;
    }
    accepted
}
