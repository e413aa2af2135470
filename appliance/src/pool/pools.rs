//! Server connections, pooled per (database, user) with deadpool's managed pool: its manager
//! opens logged-in connections and checks them at checkout; this module adds what PgBouncer users
//! expect on top: overflow connections closed as soon as they fall idle, `min_idle`,
//! `server_idle_timeout`, a lifetime (`recycle`), and backoff while PostgreSQL is unreachable.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, Object, QueueMode, RecycleError, RecycleResult, Timeouts};
use tracing::{debug, warn};

use super::registry::Registry;
use super::server::{ServerConn, ServerError, Target};
use super::stats::{PoolTotals, QueryStats};
use crate::config::{PoolConfig, PoolDatabase, PoolMode};

/// A pooled server connection, returned to its pool when dropped.
pub(crate) type Server = Object<ServerManager>;

/// Longest pause between connection attempts while PostgreSQL refuses or is down.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Idle longer than this, a connection is checked for a close by the server before reuse.
const IDLE_CHECK_AFTER: Duration = Duration::from_secs(1);

/// Opens and checks server connections for one pool.
pub(crate) struct ServerManager {
    key: PoolKey,
    target: Target,
    lifetime: Duration,
    backoff: Mutex<Backoff>,
    registry: Arc<Registry>,
}

#[derive(Default)]
struct Backoff {
    next_attempt: Option<Instant>,
    delay: Duration,
}

impl managed::Manager for ServerManager {
    type Type = ServerConn;
    type Error = ServerError;

    async fn create(&self) -> Result<ServerConn, ServerError> {
        let wait = self.backoff.lock().expect("backoff lock").next_attempt;
        if let Some(at) = wait {
            tokio::time::sleep_until(at.into()).await;
        }
        let result = ServerConn::connect(&self.target, &self.key, &self.registry).await;
        let mut backoff = self.backoff.lock().expect("backoff lock");
        match &result {
            Ok(_) => *backoff = Backoff::default(),
            Err(err) => {
                backoff.delay = (backoff.delay * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
                backoff.next_attempt = Some(Instant::now() + backoff.delay);
                warn!(database = %self.target.dbname, user = %self.target.user, error = %err,
                    retry_in = ?backoff.delay, "cannot open a server connection");
            }
        }
        result
    }

    async fn recycle(
        &self,
        conn: &mut ServerConn,
        metrics: &Metrics,
    ) -> RecycleResult<ServerError> {
        if conn.broken || !conn.is_idle() {
            return Err(RecycleError::message("broken"));
        }
        // A connection idle for a while may have been closed by the server (restart,
        // pg_terminate_backend): one non-blocking read tells, before a client finds out.
        if metrics.last_used() >= IDLE_CHECK_AFTER && !conn.is_open() {
            return Err(RecycleError::message("closed by the server"));
        }
        if conn.created.elapsed() >= self.lifetime {
            return Err(RecycleError::message("past its lifetime"));
        }
        Ok(())
    }
}

/// Identifies a pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    pub(crate) database: String,
    pub(crate) user: String,
}

/// The server connections of one (database, user).
pub(crate) struct ServerPool {
    pub(crate) key: PoolKey,
    pub(crate) mode: PoolMode,
    pool: managed::Pool<ServerManager>,
    /// Connections kept; above this they are overflow.
    size: AtomicUsize,
    min_idle: usize,
    idle_timeout: Duration,
    timeouts: Timeouts,
    /// The ParameterStatus values of the first server connection, shown to clients at login.
    params: OnceLock<Vec<(String, String)>>,
    pub(crate) totals: PoolTotals,
    pub(crate) queries: QueryStats,
    /// Paused from the console: clients wait before they get a server.
    paused: AtomicBool,
    resumed: tokio::sync::Notify,
    /// What it was made from, to tell whether a reload changes it.
    spec: PoolSpec,
    /// Pool-wide statement names some server has prepared without error.
    known_statements: Mutex<std::collections::HashSet<Arc<str>>>,
}

/// Statement names remembered per pool at most (beyond, the set starts over).
const KNOWN_STATEMENTS: usize = 10_000;

/// Everything a pool is built from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PoolSpec {
    database: PoolDatabase,
    password: Option<String>,
    max_overflow: u32,
    min_idle: u32,
    mode: PoolMode,
    pool_timeout: Duration,
    recycle: Duration,
    server_idle_timeout: Duration,
    max_prepared_statements: usize,
}

impl PoolSpec {
    pub(crate) fn new(
        database: &PoolDatabase,
        config: &PoolConfig,
        password: Option<String>,
    ) -> Self {
        Self {
            database: PoolDatabase {
                pool_size: Some(database.pool_size.unwrap_or(config.pool_size)),
                mode: Some(database.mode.unwrap_or(config.mode)),
                ..database.clone()
            },
            password,
            max_overflow: config.max_overflow,
            min_idle: config.min_idle,
            mode: database.mode.unwrap_or(config.mode),
            pool_timeout: config.pool_timeout,
            recycle: config.recycle,
            server_idle_timeout: config.server_idle_timeout,
            max_prepared_statements: config.max_prepared_statements,
        }
    }

    fn size(&self) -> usize {
        self.database.pool_size.unwrap_or(1) as usize
    }
}

/// Why a client gets no server.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AcquireError {
    #[error("no server connection became free within pool_timeout ({0:?})")]
    Timeout(Duration),
    #[error("{0}")]
    Server(ServerError),
    #[error("the pool is closed")]
    Closed,
}

impl AcquireError {
    pub(crate) fn code(&self) -> &str {
        match self {
            Self::Timeout(_) => "53300",
            Self::Server(err) => err.code(),
            Self::Closed => "57P01",
        }
    }
}

impl ServerPool {
    fn new(key: PoolKey, spec: PoolSpec, registry: &Arc<Registry>, paused: bool) -> Self {
        let size = spec.size();
        let database = &spec.database;
        let target = Target {
            host: database.host.clone(),
            port: database.port,
            dbname: database
                .dbname
                .clone()
                .unwrap_or_else(|| key.database.clone()),
            user: database.user.clone().unwrap_or_else(|| key.user.clone()),
            password: database.password.clone().or_else(|| spec.password.clone()),
            max_prepared: spec.max_prepared_statements,
        };
        let manager = ServerManager {
            key: key.clone(),
            target,
            lifetime: spec.recycle,
            backoff: Mutex::default(),
            registry: Arc::clone(registry),
        };
        // Recycling does no I/O that could block (one non-blocking read at most): no timer.
        let timeouts = Timeouts {
            wait: Some(spec.pool_timeout),
            create: Some(spec.pool_timeout),
            recycle: None,
        };
        let pool = managed::Pool::builder(manager)
            .max_size(size + spec.max_overflow as usize)
            // The most recently used connection first: the rest fall idle and overflow closes.
            .queue_mode(QueueMode::Lifo)
            .timeouts(timeouts)
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .expect("a runtime is given, so timeouts are allowed");
        Self {
            key,
            mode: spec.mode,
            pool,
            size: AtomicUsize::new(size),
            min_idle: spec.min_idle as usize,
            idle_timeout: spec.server_idle_timeout,
            timeouts,
            params: OnceLock::new(),
            totals: PoolTotals::default(),
            queries: QueryStats::default(),
            paused: AtomicBool::new(paused),
            resumed: tokio::sync::Notify::new(),
            spec,
            known_statements: Mutex::default(),
        }
    }

    /// A server prepared `name` without error: its text is valid SQL here.
    pub(crate) fn learn_statement(&self, name: Arc<str>) {
        let mut known = self.known_statements.lock().expect("statements lock");
        if known.len() >= KNOWN_STATEMENTS {
            known.clear();
        }
        known.insert(name);
    }

    pub(crate) fn knows_statement(&self, name: &str) -> bool {
        self.known_statements
            .lock()
            .expect("statements lock")
            .contains(name)
    }

    /// Connections: open, idle, allowed.
    pub(crate) fn status(&self) -> deadpool::Status {
        self.pool.status()
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    pub(crate) fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
        if !paused {
            self.resumed.notify_waiters();
        }
    }

    /// Returns once the pool is not paused.
    pub(crate) async fn wait_unpaused(&self) {
        while self.is_paused() {
            let resumed = self.resumed.notified();
            if !self.is_paused() {
                return;
            }
            resumed.await;
        }
    }

    /// Waits up to `pool_timeout` for a server connection.
    pub(crate) async fn acquire(&self) -> Result<Server, AcquireError> {
        // A free connection is taken at once, without arming the wait timer.
        let at_once = Timeouts {
            wait: Some(Duration::ZERO),
            ..self.timeouts
        };
        let got = match self.pool.timeout_get(&at_once).await {
            Err(managed::PoolError::Timeout(managed::TimeoutType::Wait)) => {
                self.pool.timeout_get(&self.timeouts).await
            }
            got => got,
        };
        let server = got.map_err(|err| match err {
            managed::PoolError::Backend(err) => AcquireError::Server(err),
            managed::PoolError::Closed => AcquireError::Closed,
            _ => AcquireError::Timeout(self.timeouts.wait.unwrap_or_default()),
        })?;
        self.params.get_or_init(|| server.params.clone());
        Ok(server)
    }

    /// Returns a connection. Broken ones are closed, and so are overflow ones nobody waits for.
    pub(crate) fn release(&self, server: Server) {
        if server.broken {
            drop(Object::take(server));
            return;
        }
        // Without overflow there is nothing to close (and no pool lock to take to find out).
        if self.spec.max_overflow > 0 {
            let status = self.pool.status();
            if status.size > self.size.load(Ordering::Relaxed) && status.waiting == 0 {
                drop(Object::take(server));
            }
        }
    }

    /// The server's parameters for a client's login (one connection is opened if none was).
    pub(crate) async fn params(&self) -> Result<Vec<(String, String)>, AcquireError> {
        if let Some(params) = self.params.get() {
            return Ok(params.clone());
        }
        let server = self.acquire().await?;
        self.release(server);
        Ok(self.params.get().cloned().unwrap_or_default())
    }

    /// Closes connections idle past `server_idle_timeout` or past their lifetime (keeping
    /// `min_idle`), then opens connections up to `min_idle`.
    async fn maintain(&self) {
        let status = self.pool.status();
        let mut removable = status.size.saturating_sub(self.min_idle);
        let idle_timeout = self.idle_timeout;
        let lifetime = self.pool.manager().lifetime;
        self.pool.retain(|conn, metrics| {
            let expired = metrics.last_used() >= idle_timeout || conn.created.elapsed() >= lifetime;
            if expired && removable > 0 {
                removable -= 1;
                return false;
            }
            true
        });
        let missing = self.min_idle.saturating_sub(self.pool.status().size);
        let mut opened = Vec::with_capacity(missing);
        for _ in 0..missing {
            match self.pool.get().await {
                Ok(server) => opened.push(server),
                Err(err) => {
                    debug!(error = %err, "cannot open a min_idle connection");
                    break;
                }
            }
        }
    }
}

/// Every pool, created at the first login of its (database, user).
#[derive(Default)]
pub(crate) struct Pools {
    by_key: Mutex<HashMap<PoolKey, Arc<ServerPool>>>,
}

impl Pools {
    /// The pool of `key`, made from `spec` if there is none (or its spec changed: the old
    /// one serves its clients until they leave, new ones get the new pool).
    pub(crate) fn get_or_create(
        &self,
        key: PoolKey,
        spec: PoolSpec,
        registry: &Arc<Registry>,
        paused: bool,
    ) -> Arc<ServerPool> {
        let mut pools = self.by_key.lock().expect("pools lock");
        if let Some(pool) = pools.get(&key)
            && pool.spec == spec
        {
            return Arc::clone(pool);
        }
        let pool = Arc::new(ServerPool::new(key.clone(), spec, registry, paused));
        pools.insert(key, Arc::clone(&pool));
        pool
    }

    /// Forgets the pools whose database is gone from the config; their clients finish.
    pub(crate) fn retain_databases(&self, keep: impl Fn(&str) -> bool) {
        self.by_key
            .lock()
            .expect("pools lock")
            .retain(|key, _| keep(&key.database));
    }

    pub(crate) fn all(&self) -> Vec<Arc<ServerPool>> {
        self.by_key
            .lock()
            .expect("pools lock")
            .values()
            .cloned()
            .collect()
    }

    /// Runs [`ServerPool::maintain`] on every pool, every `interval`.
    pub(crate) async fn maintain_forever(self: Arc<Self>, interval: Duration) {
        let mut ticks = tokio::time::interval(interval);
        loop {
            ticks.tick().await;
            for pool in self.all() {
                pool.maintain().await;
            }
        }
    }

    /// Closes every pool: waiting clients get an error, idle connections close.
    pub(crate) fn close(&self) {
        for pool in self.all() {
            pool.pool.close();
        }
    }
}
