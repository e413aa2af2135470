//! The machine's PostgreSQL (127.0.0.1:5432, trust) behind gatehouse's pooler: a database of the
//! tests' own, configs that pool it, and clients that connect directly or through the pooler.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio_postgres::{Client, NoTls};

use super::Gatehouse;

/// The tests' database (created once if missing).
pub const DATABASE: &str = "gatehouse_pool_test";

static CREATED: OnceCell<()> = OnceCell::const_new();

/// Makes sure [`DATABASE`] exists.
pub async fn ensure_database() {
    CREATED
        .get_or_init(|| async {
            let admin = connect_to(
                SocketAddr::from(([127, 0, 0, 1], 5432)),
                "postgres",
                "postgres",
                None,
            )
            .await;
            let exists = admin
                .query_opt("select 1 from pg_database where datname = $1", &[&DATABASE])
                .await
                .unwrap()
                .is_some();
            if !exists {
                // Another test binary may race us to it; either way it exists afterwards.
                let _ = admin
                    .batch_execute(&format!("create database {DATABASE}"))
                    .await;
            }
        })
        .await;
}

/// A config with the pooler in front of [`DATABASE`] (transaction mode, trust unless `extra`
/// says otherwise); `extra` goes into `[pool]`.
pub fn pooled(extra: &str) -> String {
    let auth = match extra.contains("auth_type") {
        true => "",
        false => "auth_type = \"trust\"\n",
    };
    format!(
        "[pool]\n{auth}{extra}\n\n[pool.databases.{DATABASE}]\nhost = \"127.0.0.1\"\nport = 5432\n"
    )
}

/// Starts gatehouse with [`pooled`]`(extra)`, after making sure the database exists.
pub async fn start(extra: &str) -> Gatehouse {
    ensure_database().await;
    Gatehouse::start(&pooled(extra))
}

/// A tokio-postgres client to `addr` (its connection task runs in the background).
pub async fn connect_to(
    addr: SocketAddr,
    user: &str,
    dbname: &str,
    password: Option<&str>,
) -> Client {
    try_connect(addr, user, dbname, password)
        .await
        .unwrap_or_else(|err| panic!("cannot connect to {addr} as {user}: {err}"))
}

/// Like [`connect_to`], returning the error.
pub async fn try_connect(
    addr: SocketAddr,
    user: &str,
    dbname: &str,
    password: Option<&str>,
) -> Result<Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(addr.ip().to_string())
        .port(addr.port())
        .user(user)
        .dbname(dbname)
        .connect_timeout(Duration::from_secs(10));
    if let Some(password) = password {
        config.password(password);
    }
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// A client of the tests' database through the pooler, as `postgres`.
pub async fn pooled_client(gatehouse: &Gatehouse) -> Client {
    connect_to(gatehouse.pool_addr(), "postgres", DATABASE, None).await
}

/// A client straight to PostgreSQL, bypassing the pooler.
pub async fn direct_client() -> Client {
    ensure_database().await;
    connect_to(
        SocketAddr::from(([127, 0, 0, 1], 5432)),
        "postgres",
        DATABASE,
        None,
    )
    .await
}

/// Runs a PostgreSQL command-line tool (psql, pgbench) against the pooler; returns its exit
/// status success, stdout and stderr.
pub async fn tool(gatehouse: &Gatehouse, program: &str, args: &[&str]) -> (bool, String, String) {
    let addr = gatehouse.pool_addr();
    let mut command = Command::new(program);
    command
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &addr.port().to_string(),
            "-U",
            "postgres",
        ])
        .args(args)
        .env("PGCONNECT_TIMEOUT", "10");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|err| panic!("cannot run {program}: {err}"));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A PostgreSQL of a test's own (initdb in a temp dir, run as the `postgres` user on a free
/// loopback port, trusting local TCP), which the test may stop and start again.
pub struct PrivatePostgres {
    pub port: u16,
    dir: tempfile::TempDir,
}

const BIN: &str = "/usr/lib/postgresql/15/bin";

fn as_postgres(args: &[&str]) -> std::process::Output {
    let output = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .output()
        .expect("runuser runs");
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

impl PrivatePostgres {
    /// Creates the cluster and starts it.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(chown.success());
        let data = dir.path().join("data");
        let data = data.to_str().unwrap();
        as_postgres(&[
            &format!("{BIN}/initdb"),
            "-D",
            data,
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]);
        let server = Self {
            port: super::free_port(),
            dir,
        };
        server.start_again();
        server
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Starts the stopped server and waits until it takes connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        as_postgres(&[
            &format!("{BIN}/pg_ctl"),
            "-D",
            &self.data(),
            "-l",
            &log,
            "-o",
            &options,
            "-w",
            "start",
        ]);
    }

    /// Stops it at once (`immediate`: connections are cut, as in a crash).
    pub fn stop(&self) {
        as_postgres(&[
            &format!("{BIN}/pg_ctl"),
            "-D",
            &self.data(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ]);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{BIN}/pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}

/// The one value `sql` answers with: the first column of its only row.
pub async fn value<T>(client: &tokio_postgres::Client, sql: &str) -> T
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    client.query_one(sql, &[]).await.unwrap().get(0)
}
