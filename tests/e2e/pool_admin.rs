//! The pooler's admin side: its PgBouncer-style console (through psql), `/api/v1/pool`, the
//! reference API's pool endpoint, `/metrics`, and RELOAD.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::support::json_of;
use crate::support::postgres::{self, DATABASE, pooled_client, tool, value};

/// `psql` into the console database as `postgres`; stdout, or the error text.
async fn console(gatehouse: &crate::support::Gatehouse, command: &str) -> Result<String, String> {
    let (ok, out, err) = tool(
        gatehouse,
        "psql",
        &["-d", "gatehouse", "-AtF", "|", "-c", command],
    )
    .await;
    if ok { Ok(out) } else { Err(err) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_pools_clients_servers_and_queries() {
    let gatehouse = postgres::start("admin_users = [\"postgres\"]\npool_size = 2").await;
    let client = pooled_client(&gatehouse).await;
    for n in 0..5i32 {
        let row = client
            .query_one("select $1::int4 * 3", &[&n])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), n * 3);
    }
    client.batch_execute("select 1 where 2 = 3").await.unwrap();

    let pools = console(&gatehouse, "SHOW POOLS").await.unwrap();
    let line = pools
        .lines()
        .find(|l| l.starts_with(DATABASE))
        .unwrap_or_else(|| panic!("{pools}"));
    let fields: Vec<&str> = line.split('|').collect();
    // database|user|cl_active|cl_waiting|cl_idle|sv_active|sv_idle|sv_max|...|pool_mode|paused
    assert_eq!(fields[1], "postgres");
    assert_eq!(fields[4], "1", "one idle client: {line}");
    assert_eq!(fields[7], "22", "pool_size 2 + max_overflow 20: {line}");
    assert_eq!(fields[10], "transaction");

    let clients = console(&gatehouse, "show clients;").await.unwrap();
    assert!(
        clients
            .lines()
            .any(|l| l.starts_with("C|postgres|") && l.contains("|idle|")),
        "{clients}"
    );
    let servers = console(&gatehouse, "SHOW SERVERS").await.unwrap();
    assert!(
        servers.lines().any(|l| l.starts_with("S|postgres|")),
        "{servers}"
    );
    let databases = console(&gatehouse, "SHOW DATABASES").await.unwrap();
    assert!(
        databases.contains(&format!("{DATABASE}|127.0.0.1|5432|")),
        "{databases}"
    );
    let stats = console(&gatehouse, "SHOW STATS").await.unwrap();
    let stats_line = stats.lines().find(|l| l.starts_with(DATABASE)).unwrap();
    let queries: u64 = stats_line.split('|').nth(3).unwrap().parse().unwrap();
    assert!(queries >= 6, "{stats_line}");

    // Literals are gone from the shapes; the six calls of the prepared one are one shape.
    let shapes = console(&gatehouse, "SHOW QUERIES").await.unwrap();
    assert!(
        shapes
            .lines()
            .any(|l| l.contains("|select $1::int4 * 3|") || l.contains("|select ?::int4 * ?|")),
        "{shapes}"
    );
    assert!(shapes.contains("|select ? where ? = ?|1|"), "{shapes}");

    let unknown = console(&gatehouse, "SHOW NONSENSE").await.unwrap_err();
    assert!(unknown.contains("no view nonsense"), "{unknown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admin_users_get_the_console() {
    let gatehouse = postgres::start("admin_users = [\"someone_else\"]").await;
    let err = console(&gatehouse, "SHOW POOLS").await.unwrap_err();
    assert!(err.contains("not in pool.admin_users"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_new_transactions_until_resume() {
    let gatehouse = postgres::start("admin_users = [\"postgres\"]").await;
    let pause = async || assert_eq!(console(&gatehouse, "PAUSE").await.unwrap().trim(), "PAUSE");
    let resume = async || {
        console(&gatehouse, "RESUME").await.unwrap();
    };
    holds_until_resumed(&gatehouse, pause, resume).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_pauses_and_resumes_like_the_console() {
    let gatehouse = postgres::start("").await;
    let call =
        async |path: &str| json_of(gatehouse.admin(Method::POST, path).json(&json!({}))).await;
    let pause = async || assert_eq!(call("/api/v1/pool/pause").await["paused"], json!(["*"]));
    let resume = async || assert_eq!(call("/api/v1/pool/resume").await["paused"], json!([]));
    holds_until_resumed(&gatehouse, pause, resume).await;
}

/// A client's next transaction waits while paused and runs once resumed.
async fn holds_until_resumed(
    gatehouse: &crate::support::Gatehouse,
    pause: impl AsyncFn(),
    resume: impl AsyncFn(),
) {
    let client = pooled_client(gatehouse).await;
    client.batch_execute("select 1").await.unwrap();
    pause().await;
    let paused = tokio::spawn(async move {
        client
            .query_one("select 2", &[])
            .await
            .map(|row| row.get::<_, i32>(0))
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !paused.is_finished(),
        "a query ran while the pool was paused"
    );
    resume().await;
    let two = tokio::time::timeout(Duration::from_secs(10), paused)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(two.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_a_database_without_dropping_clients() {
    let gatehouse = postgres::start("admin_users = [\"postgres\"]").await;
    let client = pooled_client(&gatehouse).await;
    let (ok, _, err) = tool(&gatehouse, "psql", &["-d", "alias", "-c", "select 1"]).await;
    assert!(!ok && err.contains("does not exist"), "{err}");
    let config = std::fs::read_to_string(&gatehouse.config_path).unwrap();
    std::fs::write(
        &gatehouse.config_path,
        format!("{config}\n[pool.databases.alias]\ndbname = \"{DATABASE}\"\n"),
    )
    .unwrap();
    console(&gatehouse, "RELOAD").await.unwrap();
    let (ok, out, err) = tool(
        &gatehouse,
        "psql",
        &["-d", "alias", "-Atc", "select current_database()"],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), DATABASE);
    // The client from before the reload still works.
    let one: i32 = value(&client, "select 1").await;
    assert_eq!(one, 1);

    // A broken config is refused with its location; everything keeps running.
    std::fs::write(
        &gatehouse.config_path,
        format!("{config}\n[pool.databases.broken]\nnonsense = 1\n"),
    )
    .unwrap();
    let err = console(&gatehouse, "RELOAD").await.unwrap_err();
    assert!(err.contains("nonsense"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_and_metrics_show_the_pools() {
    let gatehouse = postgres::start("pool_size = 3").await;
    let client = pooled_client(&gatehouse).await;
    client.batch_execute("select 1; select 2").await.unwrap();

    let report = json_of(gatehouse.admin(reqwest::Method::GET, "/api/v1/pool")).await;
    assert_eq!(report["enabled"], true);
    assert_eq!(report["mode"], "transaction");
    let pool = report["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["database"] == DATABASE)
        .unwrap();
    assert_eq!(pool["sv_max"], 23);
    assert!(
        report["queries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["query"] == "select ?; select ?"),
        "{report}"
    );

    let reference =
        json_of(gatehouse.admin(reqwest::Method::GET, "/api/v5/monitoring/database/pool")).await;
    assert_eq!(reference["pooler"], "running");
    assert_eq!(reference["pools"][0]["max"], 23);

    // The page is valid OpenMetrics with the pool's families in it.
    let samples = crate::metrics::parse(&gatehouse.admin_text("/metrics").await);
    let labels = format!("database=\"{DATABASE}\",user=\"postgres\"");
    assert_eq!(
        samples[&format!("gatehouse_pool_server_connections_max{{{labels}}}")],
        23.0
    );
    assert!(samples[&format!("gatehouse_pool_transactions_total{{{labels}}}")] >= 1.0);
    assert!(samples[&format!("gatehouse_pool_queries_total{{{labels}}}")] >= 1.0);
    assert_eq!(samples["gatehouse_pool_client_connections{}"], 1.0);
}
