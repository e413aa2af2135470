//! Recommendations through the real edge: traffic goes through gatehouse to a real upstream,
//! the metrics are read back into a snapshot of the window, and the recommendation plugins
//! (the built-in one, or the configured ones) judge it on the admin API.

use reqwest::Method;
use serde_json::Value;

use crate::support::{Gatehouse, Upstream, api_site, client, json_of};

/// The ids of the recommendations in `advice`.
fn ids(advice: &Value) -> Vec<&str> {
    advice["recommendations"]
        .as_array()
        .expect("a list of recommendations")
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect()
}

/// The ids of the recommendations about `route` (the machine's own, such as CPU, depend on
/// what else runs beside the test).
fn ids_for<'a>(advice: &'a Value, route: &str) -> Vec<&'a str> {
    let suffix = format!(":{route}");
    ids(advice)
        .into_iter()
        .filter(|id| id.ends_with(&suffix))
        .collect()
}

/// The snapshot's traffic record of `route`.
fn traffic<'a>(advice: &'a Value, route: &str) -> &'a Value {
    advice["snapshot"]["traffic"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["route"] == route)
        .unwrap_or_else(|| panic!("no traffic for {route} in {advice:#}"))
}

async fn refresh(gatehouse: &Gatehouse) -> Value {
    json_of(gatehouse.admin(Method::POST, "/api/v1/recommendations/refresh")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builtin_advisor_judges_errors_cache_misses_and_missing_compression() {
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&format!(
        r#"
[compression]
enabled = false

[plugins.rules]
kind = "cache-rules"
source = "builtin:cache-rules"

[[routes]]
name = "pages"
path = "/cached/"
upstream = "app"
cache = "rules"

[[routes]]
name = "broken"
path = "/status/"
upstream = "app"

[upstreams.app]
servers = ["{}"]
"#,
        upstream.addr
    ));
    let http = client(None);
    for i in 0..20 {
        let page = http
            .get(gatehouse.url(&format!("/cached/{i}?pad=3000")))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(page.headers()["x-cache"], "MISS");
        page.bytes().await.unwrap();
    }
    for _ in 0..10 {
        let failed = http.get(gatehouse.url("/status/503")).send().await.unwrap();
        assert_eq!(failed.status(), 503);
        failed.bytes().await.unwrap();
    }

    let advice = refresh(&gatehouse).await;
    let found = ids(&advice);
    for expected in [
        "error-rate-high:broken",
        "cache-hit-low:pages",
        "compression-missing:pages",
    ] {
        assert!(found.contains(&expected), "{expected} missing: {advice:#}");
    }
    assert!(!found.contains(&"error-rate-high:pages"), "{advice:#}");
    let first = &advice["recommendations"][0];
    assert_eq!(
        first["severity"], "critical",
        "most severe first: {advice:#}"
    );
    assert_eq!(first["plugin"], "recommendations");
    assert_eq!(advice["failures"], Value::Array(vec![]));

    let pages = traffic(&advice, "pages");
    assert!(pages["requests_per_second"].as_f64().unwrap() > 0.0);
    assert!(pages["latency_p99_ms"].as_f64().unwrap() > 0.0);
    assert!(pages["latency_p50_ms"].as_f64() <= pages["latency_p99_ms"].as_f64());
    assert_eq!(pages["cacheable"], true);
    assert_eq!(pages["cache_hit_ratio"], 0.0);
    assert_eq!(pages["uncompressed_compressible_ratio"], 1.0);
    assert_eq!(traffic(&advice, "broken")["error_ratio"], 1.0);
    let all = traffic(&advice, "*");
    assert!((all["error_ratio"].as_f64().unwrap() - 10.0 / 30.0).abs() < 1e-9);
    assert!(advice["snapshot"]["memory_percent"].as_f64().unwrap() > 0.0);

    // The latest advice is kept for readers until the next refresh.
    let latest = gatehouse.admin_json("/api/v1/recommendations").await;
    assert_eq!(latest["generated_at"], advice["generated_at"]);
    assert_eq!(ids(&latest), found);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_advisors_replace_the_builtin_and_judge_only_the_window() {
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&api_site(
        &upstream,
        r#"
[monitoring]
window = "5s"
sample_interval = "500ms"

[plugins.strict]
kind = "recommendations"
source = "builtin:recommendations"
config = { error_ratio = 0.6 }
"#,
    ));
    let http = client(None);
    let send = async |path: &str| {
        http.get(gatehouse.url(path))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    };
    for _ in 0..10 {
        send("/status/500").await;
        send("/ok").await;
    }
    // Half the answers failed: above the built-in's 2%, not above this plugin's 60%.
    let advice = refresh(&gatehouse).await;
    assert!(ids_for(&advice, "api").is_empty(), "{advice:#}");
    assert_eq!(traffic(&advice, "api")["error_ratio"], 0.5);
    for _ in 0..10 {
        send("/status/500").await;
    }
    let advice = refresh(&gatehouse).await;
    assert_eq!(
        ids_for(&advice, "api"),
        ["error-rate-high:api"],
        "{advice:#}"
    );
    assert_eq!(advice["recommendations"][0]["plugin"], "strict");

    // Once the failures are older than the window, they are no longer judged.
    tokio::time::sleep(std::time::Duration::from_millis(6000)).await;
    send("/ok").await;
    let advice = refresh(&gatehouse).await;
    assert_eq!(traffic(&advice, "api")["error_ratio"], 0.0, "{advice:#}");
    assert!(ids_for(&advice, "api").is_empty(), "{advice:#}");
    assert!(advice["window_seconds"].as_f64().unwrap() < 6.0);
}
