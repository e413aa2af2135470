//! Load balancing, health checks, ejection and retries.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::{Gatehouse, Upstream, app_upstream, client, eventually, free_port, text_of};

async fn servers_of(
    gatehouse: &Gatehouse,
    n: usize,
    header: Option<(&str, String)>,
) -> HashMap<String, usize> {
    let http = client(None);
    let mut counts = HashMap::new();
    for i in 0..n {
        let mut request = http.get(gatehouse.url("/who"));
        if let Some((name, value)) = &header {
            request = request.header(*name, format!("{value}-{}", i % 7));
        }
        let body = request.send().await.unwrap().text().await.unwrap();
        let name = body.split_whitespace().next().unwrap().to_string();
        *counts.entry(name).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn round_robin_spreads_by_weight() {
    let (a, b, c) = (
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
    );
    let gatehouse = Gatehouse::start(&format!(
        "[edge]\nworkers = 2\n[upstreams.app]\nservers = [\"{}\", \"{}\", {{ addr = \"{}\", weight = 2 }}]\n",
        a.addr, b.addr, c.addr
    ));
    let counts = servers_of(&gatehouse, 400, None).await;
    assert_eq!(
        (counts["a"], counts["b"], counts["c"]),
        (100, 100, 200),
        "{counts:?}"
    );
}

#[tokio::test]
async fn least_conn_avoids_the_busy_server() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let gatehouse = Gatehouse::start(&format!(
        "[upstreams.app]\nbalance = \"least_conn\"\nservers = [\"{}\", \"{}\"]\n",
        a.addr, b.addr
    ));
    // Hold one slow request on one of the servers, then see where the others go.
    let slow = tokio::spawn(client(None).get(gatehouse.url("/slow?ms=1500")).send());
    eventually(
        Duration::from_secs(5),
        "the slow request reached a server",
        || async { a.hits() + b.hits() == 1 },
    )
    .await;
    let busy = if a.hits() == 1 { "a" } else { "b" };
    let counts = servers_of(&gatehouse, 20, None).await;
    assert_eq!(
        counts.get(busy),
        None,
        "least_conn sent requests to the busy server: {counts:?}"
    );
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
}

#[tokio::test]
async fn hash_on_a_header_is_sticky() {
    let (a, b, c) = (
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
    );
    let gatehouse = Gatehouse::start(&format!(
        "[upstreams.app]\nbalance = \"hash\"\nhash_key = \"header:x-user\"\nservers = [\"{}\", \"{}\", \"{}\"]\n",
        a.addr, b.addr, c.addr
    ));
    let http = client(None);
    for user in ["alice", "bob", "carol", "dave", "erin"] {
        let mut seen = Vec::new();
        for _ in 0..5 {
            let body = text_of(http.get(gatehouse.url("/who")).header("x-user", user)).await;
            seen.push(body.split_whitespace().next().unwrap().to_string());
        }
        seen.dedup();
        assert_eq!(seen.len(), 1, "user {user} moved between servers: {seen:?}");
    }
    let spread = servers_of(&gatehouse, 210, Some(("x-user", "u".into()))).await;
    assert!(
        spread.len() >= 2,
        "7 distinct keys all hashed to one server: {spread:?}"
    );
}

#[tokio::test]
async fn a_stopped_server_is_ejected_and_returns_when_started() {
    let mut a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gatehouse = Gatehouse::start(&format!(
        r#"
[upstreams.app]
servers = ["{}", "{}"]
retries = 0
eject = {{ failures = 1, cooldown = "60s" }}
health_check = {{ path = "/health", interval = "100ms", timeout = "500ms", rise = 2, fall = 2 }}
"#,
        a.addr, b.addr
    ));
    let http = client(None);
    a.stop().await;
    // Passive: the first failed request ejects `a`; everything after goes to `b`.
    let mut failures = 0;
    for _ in 0..10 {
        let response = http.get(gatehouse.url("/who")).send().await.unwrap();
        if response.status() != 200 {
            failures += 1;
            continue;
        }
        assert_eq!(response.text().await.unwrap(), "b GET /who");
    }
    assert!(
        failures <= 1,
        "an ejected server kept getting traffic ({failures} failures)"
    );
    let server_a = |report: &serde_json::Value| {
        report["checks"]["upstreams"]["detail"]["app"]["servers"][0].clone()
    };
    let healthz = || async {
        client(None)
            .get(gatehouse.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    eventually(
        Duration::from_secs(5),
        "active checks mark the stopped server down",
        || async {
            let report = healthz().await;
            server_a(&report)["checks_passing"] == false && report["status"] == "degraded"
        },
    )
    .await;

    // Active checks bring it back (and clear the ejection) once it answers again.
    a.restart().await;
    eventually(
        Duration::from_secs(5),
        "the restarted server is back in rotation",
        || async { server_a(&healthz().await)["available"] == true },
    )
    .await;
    let counts = servers_of(&gatehouse, 20, None).await;
    assert_eq!((counts["a"], counts["b"]), (10, 10), "{counts:?}");
}

#[tokio::test]
async fn get_is_retried_on_connect_failure_and_post_is_not() {
    let live = Upstream::start("live").await;
    let dead = format!("127.0.0.1:{}", free_port());
    let gatehouse = Gatehouse::start(&format!(
        "[upstreams.app]\nservers = [\"{dead}\", \"{}\"]\nretries = 1\neject = {{ failures = 0 }}\n",
        live.addr
    ));
    let http = client(None);
    for _ in 0..6 {
        let response = http.get(gatehouse.url("/who")).send().await.unwrap();
        assert_eq!(
            response.status(),
            200,
            "GET must be retried on the live server"
        );
    }
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            http.post(gatehouse.url("/who"))
                .body("x")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 502).count(),
        3,
        "POST goes to each server once and is not retried: {statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(live.hits(), 9);
}

#[tokio::test]
async fn readiness_follows_upstream_health() {
    let mut a = Upstream::start("a").await;
    let gatehouse = Gatehouse::start(&format!(
        "[upstreams.app]\nservers = [\"{}\"]\nhealth_check = {{ path = \"/health\", interval = \"100ms\", rise = 1, fall = 1 }}\n",
        a.addr
    ));
    let http = client(None);
    assert_eq!(
        gatehouse
            .admin(reqwest::Method::GET, "/readyz")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    a.stop().await;
    eventually(
        Duration::from_secs(5),
        "readyz turns 503 when no upstream is available",
        || async {
            let response = gatehouse
                .admin(reqwest::Method::GET, "/readyz")
                .send()
                .await
                .unwrap();
            response.status() == 503
                && response
                    .text()
                    .await
                    .unwrap()
                    .contains("no upstream server is available")
        },
    )
    .await;
    let healthz = http
        .get(gatehouse.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 503);
    assert_eq!(
        http.get(gatehouse.admin_url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "liveness stays up"
    );
    let edge_liveness = http.get(gatehouse.url("/health")).send().await.unwrap();
    assert_eq!(
        edge_liveness.status(),
        200,
        "the edge answers /health itself, upstream or not"
    );
    assert_eq!(edge_liveness.text().await.unwrap(), "ok\n");
    a.restart().await;
    eventually(Duration::from_secs(5), "ready again", || async {
        gatehouse
            .admin(reqwest::Method::GET, "/readyz")
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
}

/// A server taken out by active checks comes back when a reload removes the checks (nothing
/// else would ever bring it back).
#[tokio::test]
async fn removing_health_checks_on_reload_restores_servers() {
    let a = Upstream::start("a").await;
    let with_checks = format!(
        "[upstreams.app]\nservers = [\"{}\"]\nhealth_check = {{ path = \"/status/500\", interval = \"100ms\", rise = 1, fall = 1 }}\n",
        a.addr
    );
    let gatehouse = Gatehouse::start(&with_checks);
    let http = client(None);
    eventually(
        Duration::from_secs(5),
        "the failing checks take the server out",
        || async {
            http.get(gatehouse.url("/who"))
                .send()
                .await
                .unwrap()
                .status()
                == 503
        },
    )
    .await;
    gatehouse.reload_with(&app_upstream(a.addr, "")).unwrap();
    let response = http.get(gatehouse.url("/who")).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "a GET /who");
}
