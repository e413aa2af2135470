//! The PostgreSQL pooler against the machine's real PostgreSQL, driven by real clients: psql,
//! pgbench, tokio-postgres and psycopg 3.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::postgres::{
    self, DATABASE, direct_client, pooled_client, start, tool, try_connect, value,
};

#[tokio::test]
async fn psql_runs_queries_through_the_pooler() {
    let gatehouse = start("").await;
    let (ok, out, err) = tool(
        &gatehouse,
        "psql",
        &[
            "-d",
            DATABASE,
            "-Atc",
            "select 40 + 2; select current_database()",
        ],
    )
    .await;
    assert!(ok, "psql failed: {err}");
    assert_eq!(out, format!("42\n{DATABASE}\n"));

    // A database the pooler does not know is refused by name.
    let (ok, _, err) = tool(&gatehouse, "psql", &["-d", "nope", "-c", "select 1"]).await;
    assert!(!ok);
    assert!(err.contains("database \"nope\" does not exist"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_runs_in_every_query_mode_on_few_server_connections() {
    let gatehouse = start("pool_size = 3\nmax_overflow = 0").await;
    let (ok, _, err) = tool(&gatehouse, "pgbench", &["-i", "-q", "-s", "1", DATABASE]).await;
    assert!(ok, "pgbench -i failed: {err}");
    for mode in ["simple", "extended", "prepared"] {
        let (ok, out, err) = tool(
            &gatehouse,
            "pgbench",
            &["-n", "-M", mode, "-c", "8", "-j", "2", "-t", "40", DATABASE],
        )
        .await;
        assert!(ok, "pgbench -M {mode} failed: {out}\n{err}");
        assert!(
            out.contains("number of transactions actually processed: 320/320"),
            "pgbench -M {mode}: {out}"
        );
        assert!(
            out.contains("number of failed transactions: 0"),
            "pgbench -M {mode}: {out}"
        );
    }
    let direct = direct_client().await;
    let servers: i64 = direct
        .query_one(
            "select count(*) from pg_stat_activity where datname = $1 and application_name = 'gatehouse'",
            &[&DATABASE],
        )
        .await
        .unwrap()
        .get(0);
    assert!(servers <= 3, "{servers} server connections for a pool of 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_statements_survive_changing_servers() {
    let gatehouse = start("pool_size = 2\nmax_overflow = 0").await;
    let mut tasks = Vec::new();
    for n in 0..6i32 {
        let addr = gatehouse.pool_addr();
        tasks.push(tokio::spawn(async move {
            let client = postgres::connect_to(addr, "postgres", DATABASE, None).await;
            // Prepared once, executed many times, on whichever server the client gets.
            let add = client.prepare("select $1::int4 + $2::int4").await.unwrap();
            let echo = client.prepare("select $1::text").await.unwrap();
            for i in 0..50i32 {
                let sum: i32 = client.query_one(&add, &[&n, &i]).await.unwrap().get(0);
                assert_eq!(sum, n + i);
                let text: String = client
                    .query_one(&echo, &[&format!("c{n}")])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(text, format!("c{n}"));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_prepared_statements_with_clashing_names() {
    let gatehouse = start("pool_size = 1\nmax_overflow = 0").await;
    // psycopg names its statements _pg3_0, _pg3_1, ... per connection: two connections on one
    // server connection clash unless the pooler renames them.
    let script = r#"
import sys, psycopg
dsn = sys.argv[1]
a = psycopg.connect(dsn, autocommit=True)
b = psycopg.connect(dsn, autocommit=True)
for i in range(20):
    assert a.execute("select %s::int * 2", (i,), prepare=True).fetchone()[0] == i * 2
    assert b.execute("select %s::text || 'x'", (str(i),), prepare=True).fetchone()[0] == f"{i}x"
with a.transaction():
    a.execute("select %s::int", (1,), prepare=True)
print("ok")
"#;
    let dsn = format!(
        "host=127.0.0.1 port={} user=postgres dbname={DATABASE}",
        gatehouse.pool_addr().port()
    );
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-c", script, &dsn])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "psycopg failed: {stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_settings_never_leak_to_another_client() {
    let gatehouse = start("pool_size = 1\nmax_overflow = 0").await;
    let a = pooled_client(&gatehouse).await;
    let b = pooled_client(&gatehouse).await;
    a.batch_execute("SET application_name = 'client-a'; SET statement_timeout = '7s'")
        .await
        .unwrap();
    let b_name: String = value(&b, "show application_name").await;
    let b_timeout: String = value(&b, "show statement_timeout").await;
    assert_ne!(b_name, "client-a");
    assert_eq!(b_timeout, "0");
    // A gets its own settings back on the one server connection both share.
    let a_name: String = value(&a, "show application_name").await;
    let a_timeout: String = value(&a, "show statement_timeout").await;
    assert_eq!((a_name.as_str(), a_timeout.as_str()), ("client-a", "7s"));
    let a_pid: i32 = value(&a, "select pg_backend_pid()").await;
    let b_pid: i32 = value(&b, "select pg_backend_pid()").await;
    assert_eq!(a_pid, b_pid, "both clients share the one server connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrackable_state_pins_the_client_and_is_reset_after_it() {
    let gatehouse = start("pool_size = 2\nmax_overflow = 0").await;
    let a = pooled_client(&gatehouse).await;
    a.batch_execute("create temp table scratch (x int); insert into scratch values (1)")
        .await
        .unwrap();
    a.query_one("select pg_advisory_lock(424242)", &[])
        .await
        .unwrap();
    let b = pooled_client(&gatehouse).await;
    for _ in 0..5 {
        // A keeps its server, so its temp table is always there; B never sees it.
        let count: i64 = value(&a, "select count(*) from scratch").await;
        assert_eq!(count, 1);
        let err = b
            .query_one("select count(*) from scratch", &[])
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE)
        );
    }
    let locked: bool = value(&b, "select pg_try_advisory_lock(424242)").await;
    assert!(!locked, "A holds the lock");
    drop(a);
    // A is gone: its server was reset (DISCARD ALL releases advisory locks and temp tables).
    crate::support::eventually(Duration::from_secs(10), "A's lock released", || async {
        let c = pooled_client(&gatehouse).await;
        let got: bool = value(&c, "select pg_try_advisory_lock(424242)").await;
        if got {
            c.query_one("select pg_advisory_unlock(424242)", &[])
                .await
                .unwrap();
        }
        got
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_transaction_is_rolled_back() {
    let gatehouse = start("pool_size = 1\nmax_overflow = 0").await;
    let a = pooled_client(&gatehouse).await;
    a.batch_execute("begin; create table left_behind (x int)")
        .await
        .unwrap();
    drop(a);
    let b = pooled_client(&gatehouse).await;
    crate::support::eventually(Duration::from_secs(10), "the pool serves B", || async {
        b.query_one("select to_regclass('left_behind') is null", &[])
            .await
            .is_ok_and(|row| row.get::<_, bool>(0))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_dying_mid_transaction_fails_only_its_client() {
    let gatehouse = start("pool_size = 1\nmax_overflow = 0").await;
    let a = pooled_client(&gatehouse).await;
    a.batch_execute("begin").await.unwrap();
    let pid: i32 = value(&a, "select pg_backend_pid()").await;
    let direct = direct_client().await;
    direct
        .query_one("select pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    assert!(a.query_one("select 1", &[]).await.is_err());
    // The pool opens a new server connection for the next client.
    let b = pooled_client(&gatehouse).await;
    let new_pid: i32 = value(&b, "select pg_backend_pid()").await;
    assert_ne!(new_pid, pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waiting_past_pool_timeout_gets_an_error() {
    let gatehouse = start("pool_size = 1\nmax_overflow = 0\npool_timeout = \"1s\"").await;
    let a = pooled_client(&gatehouse).await;
    a.batch_execute("begin").await.unwrap();
    let b = pooled_client(&gatehouse).await;
    let started = Instant::now();
    let err = b.query_one("select 1", &[]).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    let text = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(text.contains("pool_timeout"), "{err:?}");
    a.batch_execute("commit").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_server_running_the_query() {
    let gatehouse = start("").await;
    let client = pooled_client(&gatehouse).await;
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move { client.query_one("select pg_sleep(30)", &[]).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("the query ends soon after the cancel")
        .unwrap();
    let err = result.unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
    );
}

#[tokio::test]
async fn scram_and_md5_logins_check_the_password() {
    postgres::ensure_database().await;
    for method in ["scram-sha-256", "md5"] {
        let gatehouse = postgres::start(&format!(
            "auth_type = \"{method}\"\n[pool.users.postgres]\npassword = \"right horse\""
        ))
        .await;
        let addr = gatehouse.pool_addr();
        let client = try_connect(addr, "postgres", DATABASE, Some("right horse"))
            .await
            .unwrap_or_else(|err| panic!("{method} with the right password: {err}"));
        let one: i32 = value(&client, "select 1").await;
        assert_eq!(one, 1);
        for (user, password) in [("postgres", "wrong"), ("nobody", "right horse")] {
            let err = try_connect(addr, user, DATABASE, Some(password))
                .await
                .err();
            let err = err.unwrap_or_else(|| panic!("{method}: {user}/{password} got in"));
            assert_eq!(
                err.code(),
                Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD),
                "{method}: {err:?}"
            );
        }
    }
}

/// Reads until the server closes or sends an ErrorResponse; returns everything read.
async fn read_reply(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    out
}

fn startup_packet(user: &str, database: &str) -> Vec<u8> {
    let mut body = 196_608i32.to_be_bytes().to_vec();
    for part in ["user", user, "database", database, ""] {
        body.extend_from_slice(part.as_bytes());
        body.push(0);
    }
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend(body);
    packet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_get_an_error_and_a_closed_connection() {
    let gatehouse = start("max_message_size = \"64KiB\"").await;
    let bystander = pooled_client(&gatehouse).await;
    let cases: [(&str, Vec<u8>); 4] = [
        ("unknown message type", b"z\0\0\0\x04".to_vec()),
        ("invalid message length", b"Q\0\0\0\x01".to_vec()),
        ("exceeds pool.max_message_size", {
            let mut m = b"Q".to_vec();
            m.extend(1_000_000i32.to_be_bytes());
            m
        }),
        ("invalid Query", b"Q\0\0\0\x06ab".to_vec()),
    ];
    for (expected, message) in cases {
        let mut stream = TcpStream::connect(gatehouse.pool_addr()).await.unwrap();
        stream
            .write_all(&startup_packet("postgres", DATABASE))
            .await
            .unwrap();
        // Up to ReadyForQuery.
        let mut greeting = vec![0u8; 4096];
        let mut read = 0;
        while !greeting[..read].windows(6).any(|w| w == b"Z\0\0\0\x05I") {
            let n = stream.read(&mut greeting[read..]).await.unwrap();
            assert!(n > 0, "closed during login");
            read += n;
        }
        stream.write_all(&message).await.unwrap();
        let reply = String::from_utf8_lossy(&read_reply(&mut stream).await).into_owned();
        assert!(
            reply.starts_with('E') && reply.contains("08P01"),
            "{expected}: {reply:?}"
        );
        assert!(reply.contains(expected), "{expected}: {reply:?}");
    }
    // A broken startup packet too.
    let mut stream = TcpStream::connect(gatehouse.pool_addr()).await.unwrap();
    stream.write_all(&[0, 0, 0, 8, 0, 9, 0, 0]).await.unwrap();
    let reply = String::from_utf8_lossy(&read_reply(&mut stream).await).into_owned();
    assert!(
        reply.contains("unsupported protocol version 9.0"),
        "{reply:?}"
    );
    // Nobody else noticed.
    let one: i32 = value(&bystander, "select 1").await;
    assert_eq!(one, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_offered_and_can_be_required() {
    let ca = crate::support::TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = ca.issue(dir.path(), "pool");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.pem).unwrap();
    let gatehouse = start(&format!(
        "[pool.tls]\ncert = \"{}\"\nkey = \"{}\"\nrequire = true",
        cert.display(),
        key.display()
    ))
    .await;
    let psql = |mode: &'static str| {
        let port = gatehouse.pool_addr().port().to_string();
        let ca_path = ca_path.clone();
        async move {
            let output = tokio::task::spawn_blocking(move || {
                std::process::Command::new("psql")
                    .args([
                        "-h",
                        "localhost",
                        "-p",
                        &port,
                        "-U",
                        "postgres",
                        "-d",
                        DATABASE,
                    ])
                    .args(["-c", "\\conninfo"])
                    .env("PGSSLMODE", mode)
                    .env("PGSSLROOTCERT", ca_path)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap();
            (
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }
    };
    // The certificate is checked against the test CA and the host name.
    let (out, err) = psql("verify-full").await;
    assert!(
        out.contains("SSL connection (protocol: TLSv1.3"),
        "{out}{err}"
    );
    let (_, err) = psql("disable").await;
    assert!(err.contains("TLS is required"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarting_gives_errors_then_the_pool_recovers() {
    let server = postgres::PrivatePostgres::start();
    let gatehouse = crate::support::Gatehouse::start(&format!(
        "[pool]\nauth_type = \"trust\"\npool_timeout = \"2s\"\n\
         [pool.databases.postgres]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"postgres\"\n",
        server.port
    ));
    let addr = gatehouse.pool_addr();
    let client = postgres::connect_to(addr, "postgres", "postgres", None).await;
    client.batch_execute("select 1").await.unwrap();
    let readiness = || async {
        crate::support::json_of(gatehouse.admin(reqwest::Method::GET, "/readyz")).await
    };
    crate::support::eventually(
        Duration::from_secs(15),
        "the database probed ok",
        || async {
            let health = crate::support::get_json(gatehouse.admin_url("/healthz")).await;
            health["checks"]["databases"]["detail"]["postgres"]["status"] == "ok"
        },
    )
    .await;

    server.stop();
    // The client's server connection is gone: an error, not a hang.
    let started = Instant::now();
    assert!(client.batch_execute("select 1").await.is_err());
    // New clients get an error within pool_timeout while PostgreSQL is down.
    let attempt = match try_connect(addr, "postgres", "postgres", None).await {
        Ok(client) => client.batch_execute("select 1").await,
        Err(err) => Err(err),
    };
    assert!(attempt.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );

    crate::support::eventually(
        Duration::from_secs(15),
        "/readyz says the database is down",
        || async {
            readiness().await["reasons"].as_array().is_some_and(|r| {
                r.iter().any(|r| {
                    r.as_str()
                        .unwrap_or_default()
                        .starts_with("database postgres:")
                })
            })
        },
    )
    .await;

    server.start_again();
    crate::support::eventually(Duration::from_secs(20), "ready again", || async {
        readiness().await["ready"] == true
    })
    .await;
    crate::support::eventually(Duration::from_secs(20), "the pool serves again", || async {
        match try_connect(addr, "postgres", "postgres", None).await {
            Ok(client) => client.batch_execute("select 1").await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_keeps_one_server_per_client_and_discards_after() {
    let gatehouse = start("mode = \"session\"\npool_size = 1\nmax_overflow = 0").await;
    let a = pooled_client(&gatehouse).await;
    a.batch_execute("SET application_name = 'mine'; create temp table kept (x int)")
        .await
        .unwrap();
    let pid: i32 = value(&a, "select pg_backend_pid()").await;
    // Session mode needs no tracking: the temp table is there in every later transaction.
    for _ in 0..3 {
        a.query_one("select count(*) from kept", &[]).await.unwrap();
    }
    drop(a);
    let b = pooled_client(&gatehouse).await;
    let row = b
        .query_one(
            "select pg_backend_pid(), current_setting('application_name'), to_regclass('kept') is null",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, i32>(0),
        pid,
        "the one server connection, reused"
    );
    assert_ne!(row.get::<_, String>(1), "mine");
    assert!(row.get::<_, bool>(2), "the temp table was discarded");
}
