//! The shared cache tier: two gatehouses in front of one upstream sharing a real Redis (the
//! machine's, on 6379) and a real three-node Redis Cluster started for the test; and a
//! gatehouse whose Redis is down, answering from its local tiers.

use std::time::Duration;

use serde_json::{Value, json};

use crate::cache::{cached_site, x_cache};
use crate::support::redis::{RedisCluster, connected, unique_prefix};
use crate::support::{Gatehouse, Upstream, client, eventually, free_port, get_json, json_of};

/// Purges through `gatehouse`'s admin API; the report.
async fn purge(gatehouse: &Gatehouse, what: Value) -> Value {
    json_of(
        gatehouse
            .admin(reqwest::Method::POST, "/api/v1/cache/purge")
            .json(&what),
    )
    .await
}

/// A site cached through Redis at `url`, under a key prefix of its own (tests share the Redis).
fn shared_site(upstream: &Upstream, url: &str, prefix: &str) -> String {
    format!(
        "[redis]\nenabled = true\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\n{}",
        cached_site(upstream, "builtin:cache-rules")
    )
}

/// Whether Redis (any node of it, on `port`) holds `key`; `-c` follows cluster redirects.
fn stored_in_redis(port: u16, key: &str) -> bool {
    let output = std::process::Command::new("redis-cli")
        .args(["-c", "-p", &port.to_string(), "exists", key])
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&output.stdout).trim() == "1"
}

/// Fills through one instance, answers through the other, purges through the first. `port` is
/// a node of the Redis at `url`.
async fn two_instances_share(url: &str, port: u16, name: &str) {
    let upstream = Upstream::start("app").await;
    let prefix = unique_prefix(name);
    let site = shared_site(&upstream, url, &prefix);
    let (first, second) = (Gatehouse::start(&site), Gatehouse::start(&site));
    connected(&first).await;
    connected(&second).await;
    let http = client(None);
    let get = |gatehouse: &Gatehouse, path: &str| http.get(gatehouse.url(path)).send();

    let filled = get(&first, "/cached/shared?tag=news").await.unwrap();
    assert_eq!(x_cache(&filled), "MISS");
    let body = filled.text().await.unwrap();
    // The fill reaches Redis in the background.
    let key = format!("{prefix}cache:e:127.0.0.1/cached/shared?tag=news");
    eventually(Duration::from_secs(5), "the entry in Redis", || async {
        stored_in_redis(port, &key)
    })
    .await;
    eventually(
        Duration::from_secs(5),
        "the other instance hits",
        || async {
            let answer = get(&second, "/cached/shared?tag=news").await.unwrap();
            x_cache(&answer) == "HIT" && answer.text().await.unwrap() == body
        },
    )
    .await;
    assert_eq!(upstream.hits(), 1, "one upstream request for two instances");

    let purged = purge(&first, json!({"tag": "news"})).await;
    assert_eq!(purged["shared"], "ok", "{purged}");
    assert!(purged["purged"].as_u64().unwrap() >= 1, "{purged}");
    eventually(
        Duration::from_secs(5),
        "the purge reached the other instance",
        || async { x_cache(&get(&second, "/cached/shared?tag=news").await.unwrap()) == "MISS" },
    )
    .await;
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_entries_and_purges_through_one_redis() {
    two_instances_share("redis://127.0.0.1:6379", 6379, "single").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_entries_and_purges_through_a_redis_cluster() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    two_instances_share(&cluster.url(), cluster.port(), "cluster").await;
}

#[tokio::test]
async fn with_redis_down_the_cache_answers_from_its_local_tiers_and_says_so() {
    let upstream = Upstream::start("app").await;
    let nowhere = format!("redis://127.0.0.1:{}", free_port());
    let gatehouse = Gatehouse::start(&shared_site(&upstream, &nowhere, &unique_prefix("down")));
    let http = client(None);
    let first = http
        .get(gatehouse.url("/cached/local"))
        .send()
        .await
        .unwrap();
    assert_eq!((first.status().as_u16(), x_cache(&first)), (200, "MISS"));
    let second = http
        .get(gatehouse.url("/cached/local"))
        .send()
        .await
        .unwrap();
    assert_eq!((second.status().as_u16(), x_cache(&second)), (200, "HIT"));
    assert_eq!(upstream.hits(), 1);

    let health = get_json(gatehouse.admin_url("/healthz")).await;
    assert_eq!(health["checks"]["redis"]["status"], "degraded", "{health}");
    assert_eq!(health["checks"]["redis"]["detail"]["connected"], false);
    let ready = gatehouse
        .admin(reqwest::Method::GET, "/readyz")
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "still ready: the local tiers serve");
    let ready: Value = ready.json().await.unwrap();
    assert!(
        ready["degraded"][0]
            .as_str()
            .unwrap()
            .contains("Redis is unreachable"),
        "{ready}"
    );
    let purged = purge(&gatehouse, json!({"prefix": ""})).await;
    assert_eq!(purged["purged"], 1, "the local tiers were purged: {purged}");
    assert!(
        purged["shared"].as_str().unwrap().starts_with("failed"),
        "{purged}"
    );
}
