//! Gatehouse's own queries to each configured database, through deadpool-postgres and apart
//! from the pools clients use (a full pool must not make a healthy database look down): a
//! `select 1` every few seconds for `/healthz` and `/readyz`, and the top of
//! `pg_stat_statements` when the extension is installed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deadpool_postgres::tokio_postgres::NoTls;
use deadpool_postgres::{Pool, Runtime};
use serde::Serialize;

use super::Shared;
use crate::config::{PoolConfig, PoolDatabase};

/// How often each database is probed.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// How long a probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// `pg_stat_statements` is read every this many probes.
const STATEMENTS_EVERY: u32 = 12;
/// Statements shown, by total time.
const STATEMENTS_SHOWN: i64 = 20;

/// The last probe of one database.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// `ok`, `down`, or `unchecked` (no credentials to log in with).
    pub status: &'static str,
    /// Why it is not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Time `select 1` took.
    pub latency_ms: f64,
    /// When, in Unix seconds.
    pub checked_at: u64,
    /// The top of `pg_stat_statements`, when the extension is there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statements: Option<Vec<Statement>>,
}

/// A `pg_stat_statements` row.
#[derive(Debug, Clone, Serialize)]
pub struct Statement {
    /// The normalised statement, as PostgreSQL keeps it.
    pub query: String,
    /// Times run.
    pub calls: i64,
    /// Total execution time.
    pub total_ms: f64,
    /// Mean execution time.
    pub mean_ms: f64,
    /// Rows returned or affected.
    pub rows: i64,
}

/// Probes by database name.
#[derive(Debug, Default)]
pub(crate) struct Health {
    probes: Mutex<BTreeMap<String, Probe>>,
}

impl Health {
    pub(crate) fn probes(&self) -> BTreeMap<String, Probe> {
        self.probes.lock().expect("health lock").clone()
    }
}

/// Who to log in as: the database's own user, else the first configured user with a plain
/// password.
fn credentials(config: &PoolConfig, database: &PoolDatabase) -> Option<(String, Option<String>)> {
    if let Some(user) = &database.user {
        let password = database.password.clone().or_else(|| {
            config
                .users
                .get(user)
                .map(|u| u.password.clone())
                .filter(|p| !p.starts_with("md5") && !p.starts_with("SCRAM-SHA-256$"))
        });
        return Some((user.clone(), password));
    }
    config.users.iter().find_map(|(name, user)| {
        let plain =
            !user.password.starts_with("md5") && !user.password.starts_with("SCRAM-SHA-256$");
        plain.then(|| (name.clone(), Some(user.password.clone())))
    })
}

fn make_pool(name: &str, config: &PoolConfig, database: &PoolDatabase) -> Option<Pool> {
    let (user, password) = credentials(config, database)?;
    let mut pg = deadpool_postgres::Config::new();
    pg.host = Some(database.host.clone());
    pg.port = Some(database.port);
    pg.dbname = Some(database.dbname.clone().unwrap_or_else(|| name.to_string()));
    pg.user = Some(user);
    pg.password = password;
    pg.application_name = Some("gatehouse-health".into());
    pg.connect_timeout = Some(PROBE_TIMEOUT);
    pg.pool = Some(deadpool_postgres::PoolConfig::new(1));
    pg.create_pool(Some(Runtime::Tokio1), NoTls).ok()
}

/// Probes every configured database forever.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut pools: BTreeMap<String, (PoolDatabase, Option<Pool>)> = BTreeMap::new();
    let mut ticks = tokio::time::interval(PROBE_INTERVAL);
    let mut round: u32 = 0;
    loop {
        ticks.tick().await;
        let config = shared.config.load_full();
        pools.retain(|name, (database, _)| config.databases.get(name) == Some(database));
        for (name, database) in &config.databases {
            let (_, pool) = pools
                .entry(name.clone())
                .or_insert_with(|| (database.clone(), make_pool(name, &config, database)));
            let probe = match pool {
                Some(pool) => {
                    let probe = probe(pool, round.is_multiple_of(STATEMENTS_EVERY)).await;
                    // Closed between probes: an idle connection of ours would count against
                    // the server's max_connections (and the pool's limit, as operators see it).
                    pool.retain(|_, _| false);
                    probe
                }
                None => Probe {
                    status: "unchecked",
                    error: Some(format!(
                        "no credentials to check with: set pool.databases.{name}.user (and password)"
                    )),
                    latency_ms: 0.0,
                    checked_at: now_unix(),
                    statements: None,
                },
            };
            let mut probes = shared.health.probes.lock().expect("health lock");
            let statements = probe
                .statements
                .clone()
                .or_else(|| probes.get(name).and_then(|p| p.statements.clone()));
            probes.insert(
                name.clone(),
                Probe {
                    statements,
                    ..probe
                },
            );
        }
        shared
            .health
            .probes
            .lock()
            .expect("health lock")
            .retain(|name, _| config.databases.contains_key(name));
        round = round.wrapping_add(1);
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn probe(pool: &Pool, with_statements: bool) -> Probe {
    let started = Instant::now();
    let checked = tokio::time::timeout(PROBE_TIMEOUT, async {
        let client = pool.get().await.map_err(|err| err.to_string())?;
        client
            .simple_query("select 1")
            .await
            .map_err(|err| err.to_string())?;
        let statements = match with_statements {
            true => statements(&client).await,
            false => None,
        };
        Ok::<_, String>(statements)
    })
    .await
    .unwrap_or_else(|_| Err(format!("no answer within {PROBE_TIMEOUT:?}")));
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    match checked {
        Ok(statements) => Probe {
            status: "ok",
            error: None,
            latency_ms,
            checked_at: now_unix(),
            statements,
        },
        Err(error) => Probe {
            status: "down",
            error: Some(error),
            latency_ms,
            checked_at: now_unix(),
            statements: None,
        },
    }
}

/// The top of `pg_stat_statements`, or `None` when the extension is not installed (or not
/// readable by this user).
async fn statements(client: &deadpool_postgres::Client) -> Option<Vec<Statement>> {
    let installed = client
        .query_opt(
            "select 1 from pg_extension where extname = 'pg_stat_statements'",
            &[],
        )
        .await
        .ok()??;
    drop(installed);
    let rows = client
        .query(
            "select query, calls, total_exec_time, mean_exec_time, rows \
             from pg_stat_statements order by total_exec_time desc limit $1",
            &[&STATEMENTS_SHOWN],
        )
        .await
        .ok()?;
    Some(
        rows.iter()
            .map(|row| Statement {
                query: row.get(0),
                calls: row.get(1),
                total_ms: row.get(2),
                mean_ms: row.get(3),
                rows: row.get(4),
            })
            .collect(),
    )
}
