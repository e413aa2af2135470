//! Rate limits shared through Redis: three gatehouses spending from one quota in the machine's
//! Redis and in a real three-node Redis Cluster; and a Redis killed mid-test, with each
//! fallback (`rate_limits.when_redis_down`) applying until it is back.

use std::time::Duration;

use serde_json::Value;

use crate::policies::limited;
use crate::support::redis::{RedisCluster, RedisServer, connected, unique_prefix};
use crate::support::{Gatehouse, Upstream, client, eventually, get_json};

/// A route limited to `limit` requests a minute per client address, counted in the Redis at
/// `url` under `prefix`; `extra` adds keys to `[rate_limits]`.
fn shared_limit(upstream: &Upstream, url: &str, prefix: &str, limit: u32, extra: &str) -> String {
    let quota = format!("config = {{ default = {{ limit = {limit}, window = 60 }} }}");
    format!(
        "[redis]\nenabled = true\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\n\n\
         [rate_limits]\n{extra}\n{}",
        limited(upstream, &quota)
    )
}

/// The status and the `RateLimit` field of one request to `gatehouse`.
async fn request(gatehouse: &Gatehouse) -> (u16, String) {
    let response = client(None)
        .get(gatehouse.url("/limited"))
        .send()
        .await
        .unwrap();
    let state = response
        .headers()
        .get("ratelimit")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (response.status().as_u16(), state)
}

/// Three instances, six requests a minute between them: two through each are allowed, each
/// seeing the quota the others spent; the seventh, through any of them, is refused.
async fn three_instances_share_one_quota(url: &str, name: &str) {
    let upstream = Upstream::start("app").await;
    let site = shared_limit(&upstream, url, &unique_prefix(name), 6, "");
    let instances = [
        Gatehouse::start(&site),
        Gatehouse::start(&site),
        Gatehouse::start(&site),
    ];
    for gatehouse in &instances {
        connected(gatehouse).await;
    }
    let mut remaining = Vec::new();
    for gatehouse in instances.iter().chain(&instances) {
        let (status, state) = request(gatehouse).await;
        assert_eq!(status, 200, "{state}");
        remaining.push(
            state
                .split(";r=")
                .nth(1)
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(
        remaining,
        ["5", "4", "3", "2", "1", "0"],
        "one quota, spent in turn"
    );
    for gatehouse in &instances {
        let (status, state) = request(gatehouse).await;
        assert_eq!(
            status, 429,
            "every instance refuses once the quota is spent"
        );
        assert!(state.contains(";r=0;"), "{state}");
    }
    assert_eq!(upstream.hits(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_one_quota_through_one_redis() {
    three_instances_share_one_quota("redis://127.0.0.1:6379", "limits-single").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_one_quota_through_a_redis_cluster() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    three_instances_share_one_quota(&cluster.url(), "limits-cluster").await;
}

/// Two instances spend a shared quota of 4; Redis is killed; `check` sees what they do then;
/// Redis comes back (empty) and the shared quota applies again.
async fn redis_killed_mid_test(when_down: &str, check: impl AsyncFnOnce(&[Gatehouse; 2])) {
    let mut redis = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    let upstream = Upstream::start("app").await;
    let extra = format!("when_redis_down = \"{when_down}\"");
    let site = shared_limit(&upstream, &redis.url(), "gatehouse:", 4, &extra);
    // The built-in redis-down rule waits 10 s; this one fires at once.
    let site = format!(
        "{site}\n[monitoring]\nsample_interval = \"200ms\"\n\n\
         [[alerts.rules]]\nname = \"redis-down\"\nmeasure = \"redis_up\"\nbelow = 1\n"
    );
    let instances = [Gatehouse::start(&site), Gatehouse::start(&site)];
    for gatehouse in &instances {
        connected(gatehouse).await;
    }
    for gatehouse in instances.iter().chain(&instances) {
        assert_eq!(request(gatehouse).await.0, 200);
    }
    assert_eq!(
        request(&instances[0]).await.0,
        429,
        "the shared quota is spent"
    );

    redis.kill();
    for gatehouse in &instances {
        eventually(Duration::from_secs(10), "Redis seen down", || async {
            get_json(gatehouse.admin_url("/healthz")).await["checks"]["redis"]["status"]
                == "degraded"
        })
        .await;
    }
    check(&instances).await;
    redis_alert(&instances[0], "firing").await;
    let ready: Value = instances[0].admin_json("/readyz").await;
    assert!(
        ready["degraded"][0]
            .as_str()
            .unwrap()
            .contains("rate_limits.when_redis_down"),
        "{ready}"
    );

    let mut redis = tokio::task::spawn_blocking(move || {
        redis.start_again();
        redis
    })
    .await
    .unwrap();
    for gatehouse in &instances {
        connected(gatehouse).await;
    }
    redis_alert(&instances[0], "ok").await;
    let (status, state) = request(&instances[1]).await;
    assert_eq!(
        (status, state.as_str()),
        (200, "\"default\";r=3;t=15"),
        "counted in the new Redis"
    );
    redis.kill();
}

/// Waits until the `redis-down` alert rule of `gatehouse` is in `state`.
async fn redis_alert(gatehouse: &Gatehouse, state: &str) {
    eventually(Duration::from_secs(10), "the redis-down alert", || async {
        let report = gatehouse.admin_json("/api/v1/alerts").await;
        report["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|rule| rule["name"] == "redis-down" && rule["state"] == state)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_killed_fail_open_lets_each_instance_count_alone() {
    redis_killed_mid_test("open", async |instances| {
        for gatehouse in instances {
            let statuses: Vec<u16> =
                futures_util::future::join_all((0..5).map(|_| request(gatehouse)))
                    .await
                    .into_iter()
                    .map(|(status, _)| status)
                    .collect();
            let allowed = statuses.iter().filter(|s| **s == 200).count();
            let refused = statuses.iter().filter(|s| **s == 429).count();
            assert_eq!(
                (allowed, refused),
                (4, 1),
                "the full quota, locally: {statuses:?}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_killed_fail_closed_refuses_limited_requests_with_503() {
    redis_killed_mid_test("closed", async |instances| {
        for gatehouse in instances {
            let response = client(None)
                .get(gatehouse.url("/limited"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 503);
            assert_eq!(response.headers()["retry-after"], "1");
            let body = response.text().await.unwrap();
            assert!(body.contains("Redis is unreachable"), "{body}");
        }
    })
    .await;
}
