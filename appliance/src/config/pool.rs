//! `[pool]`: the PostgreSQL pooler. Knobs carry the reference deployment's names (`DB_POOL_*`
//! set them) and PgBouncer's where they differ (`server_lifetime` for `recycle`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Problem, durations};

/// The pooler: off until a database is configured.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Where applications connect (their `DATABASE_URL`). Default `["127.0.0.1:6432"]`.
    pub listen: Vec<SocketAddr>,
    /// TLS for clients that ask for it (`sslmode=require`). Default: none (they are told the
    /// server does not do TLS).
    pub tls: Option<PoolTls>,
    /// Threads serving pooled connections; 0 means one per CPU. Default `0`.
    pub workers: usize,
    /// When a server connection goes back to the pool: `"transaction"` (after each
    /// transaction) or `"session"` (when the client disconnects). Default `"transaction"`.
    pub mode: PoolMode,
    /// Server connections kept per (database, user) (`DB_POOL_SIZE`). Default `10`.
    pub pool_size: u32,
    /// Burst connections above `pool_size`, closed when they fall idle (`DB_MAX_OVERFLOW`).
    /// Default `20`.
    pub max_overflow: u32,
    /// Server connections opened ahead of need and kept open per pool. Default `0`.
    pub min_idle: u32,
    /// How long a client waits for a server connection before it gets an error
    /// (`DB_POOL_TIMEOUT`, seconds or `"60s"`). Default `"60s"`.
    #[serde(with = "durations")]
    pub pool_timeout: Duration,
    /// Server connections are replaced after this age (`DB_POOL_RECYCLE`; PgBouncer's
    /// `server_lifetime`). Default `"300s"`.
    #[serde(with = "durations", alias = "server_lifetime")]
    pub recycle: Duration,
    /// Server connections idle this long are closed (down to `min_idle`). Default `"600s"`.
    #[serde(with = "durations")]
    pub server_idle_timeout: Duration,
    /// Session mode: `DISCARD ALL` before a server connection serves another session.
    /// Transaction mode tracks settings and always resets after a pinned client (see the
    /// pooler's docs), whatever this says. Default `true`.
    pub reset_on_return: bool,
    /// Client connections accepted at most; more are refused with an error. Default `10000`.
    pub max_client_conn: usize,
    /// A query running longer is cancelled; `"0s"` turns it off. Default `"0s"`.
    #[serde(with = "durations")]
    pub query_timeout: Duration,
    /// A client that leaves a transaction open and idle this long is disconnected (the server
    /// rolls back); `"0s"` turns it off. Default `"0s"`.
    #[serde(with = "durations")]
    pub idle_transaction_timeout: Duration,
    /// How clients prove who they are: `"scram-sha-256"`, `"md5"` or `"trust"` (only when set
    /// explicitly: anyone who can connect gets in). Default `"scram-sha-256"`.
    pub auth_type: AuthType,
    /// A PgBouncer `userlist.txt` (`"user" "password"` lines; the password plain, `md5…` or
    /// `SCRAM-SHA-256$…`), read in addition to `users`. Default: none.
    pub auth_file: Option<PathBuf>,
    /// Users allowed in, by name. Default: none.
    pub users: BTreeMap<String, PoolUser>,
    /// Users who may open the admin console (database `gatehouse`). Default: none.
    pub admin_users: Vec<String>,
    /// Prepared statements kept per server connection in transaction mode; the least recently
    /// used is closed beyond it. Default `500`.
    pub max_prepared_statements: usize,
    /// A frontend message longer than this is refused and the client disconnected.
    /// Default `"256MiB"`.
    pub max_message_size: bytesize::ByteSize,
    /// Databases clients may name, each pooled separately per user. Default: none (the
    /// pooler is off).
    pub databases: BTreeMap<String, PoolDatabase>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 6432))],
            tls: None,
            workers: 0,
            mode: PoolMode::Transaction,
            pool_size: 10,
            max_overflow: 20,
            min_idle: 0,
            pool_timeout: Duration::from_secs(60),
            recycle: Duration::from_secs(300),
            server_idle_timeout: Duration::from_secs(600),
            reset_on_return: true,
            max_client_conn: 10_000,
            query_timeout: Duration::ZERO,
            idle_transaction_timeout: Duration::ZERO,
            auth_type: AuthType::ScramSha256,
            auth_file: None,
            users: BTreeMap::new(),
            admin_users: Vec::new(),
            max_prepared_statements: 500,
            max_message_size: bytesize::ByteSize::mib(256),
            databases: BTreeMap::new(),
        }
    }
}

/// The pooler's TLS.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolTls {
    /// PEM certificate chain, leaf first. Required.
    pub cert: PathBuf,
    /// PEM private key. Required.
    pub key: PathBuf,
    /// Refuse clients that do not ask for TLS. Default `false`.
    #[serde(default)]
    pub require: bool,
}

/// When a server connection is returned to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolMode {
    /// When the client disconnects.
    Session,
    /// When a transaction ends (ReadyForQuery `I`).
    Transaction,
}

/// How clients authenticate to the pooler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthType {
    /// SCRAM-SHA-256 (what PostgreSQL itself defaults to).
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// MD5 challenge-response.
    Md5,
    /// No password asked.
    Trust,
}

/// A user allowed to connect.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolUser {
    /// Plain, or as PostgreSQL stores it (`md5…`, `SCRAM-SHA-256$…`). A plain password also
    /// logs this user in to the server when its database names no password.
    pub password: String,
}

/// A database behind the pooler.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolDatabase {
    /// PostgreSQL host. Default `"127.0.0.1"`.
    pub host: String,
    /// PostgreSQL port. Default `5432`.
    pub port: u16,
    /// Name on the server. Default: the name clients use.
    pub dbname: Option<String>,
    /// Log in to the server as this user, whoever the client is. Default: the client's user.
    pub user: Option<String>,
    /// Password for the server. Default: the client user's plain password, if it has one.
    pub password: Option<String>,
    /// Overrides `pool.pool_size` for this database.
    pub pool_size: Option<u32>,
    /// Overrides `pool.mode` for this database.
    pub mode: Option<PoolMode>,
}

impl Default for PoolDatabase {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 5432,
            dbname: None,
            user: None,
            password: None,
            pool_size: None,
            mode: None,
        }
    }
}

/// The name of the admin console's database.
pub const ADMIN_DATABASE: &str = "gatehouse";

impl PoolConfig {
    /// The pooler runs when at least one database is configured.
    pub fn enabled(&self) -> bool {
        !self.databases.is_empty()
    }

    pub(super) fn check(&self, problems: &mut Vec<Problem>) {
        if self.pool_size == 0 {
            problems.push(Problem::new("pool.pool_size", "must be at least 1"));
        }
        if self.min_idle > self.pool_size {
            problems.push(Problem::new(
                "pool.min_idle",
                format!("must not exceed pool.pool_size ({})", self.pool_size),
            ));
        }
        if self.enabled() && self.listen.is_empty() {
            problems.push(Problem::new(
                "pool.listen",
                "needs at least one address when databases are configured",
            ));
        }
        if self.max_client_conn == 0 {
            problems.push(Problem::new("pool.max_client_conn", "must be at least 1"));
        }
        if self.max_prepared_statements == 0 {
            problems.push(Problem::new(
                "pool.max_prepared_statements",
                "must be at least 1",
            ));
        }
        if self.max_message_size.as_u64() < 1024 {
            problems.push(Problem::new(
                "pool.max_message_size",
                "must be at least 1KiB",
            ));
        }
        if self.pool_timeout.is_zero() {
            problems.push(Problem::new("pool.pool_timeout", "must be longer than 0s"));
        }
        for (name, database) in &self.databases {
            let key = |field: &str| format!("pool.databases.{name}.{field}");
            if name == ADMIN_DATABASE {
                problems.push(Problem::new(
                    &format!("pool.databases.{name}"),
                    format!("{ADMIN_DATABASE} is the admin console's name; choose another"),
                ));
            }
            if database.host.is_empty() {
                problems.push(Problem::new(&key("host"), "must not be empty"));
            }
            if database.pool_size == Some(0) {
                problems.push(Problem::new(&key("pool_size"), "must be at least 1"));
            }
        }
        for (name, user) in &self.users {
            if user.password.is_empty() && self.auth_type != AuthType::Trust {
                problems.push(Problem::new(
                    &format!("pool.users.{name}.password"),
                    "must not be empty (or set pool.auth_type = \"trust\")",
                ));
            }
        }
    }
}
