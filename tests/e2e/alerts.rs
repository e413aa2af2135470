//! Alerts through the real edge: traffic to a real upstream crosses a rule's threshold, the rule
//! fires and later resolves, a real webhook receiver gets both, and the admin API shows the
//! rules and the history. A failing webhook is retried a bounded number of times.

use std::time::Duration;

use serde_json::Value;

use crate::support::{Gatehouse, Upstream, api_site, client, eventually};

/// The rule called `name` in the alerts report.
fn rule<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no rule {name} in {report:#}"))
}

fn recorded(hook: &Upstream) -> Vec<Value> {
    hook.recorded()
        .iter()
        .map(|body| serde_json::from_slice(body).expect("a JSON event"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_fires_on_errors_resolves_when_they_stop_and_the_webhook_hears_both() {
    let upstream = Upstream::start("app").await;
    let hook = Upstream::start("hook").await;
    let gatehouse = Gatehouse::start(&api_site(
        &upstream,
        &format!(
            r#"
[monitoring]
window = "10s"
sample_interval = "200ms"

[alerts]
defaults = false
webhook = "http://{}/record"

[[alerts.rules]]
name = "api-errors"
measure = "error_ratio"
route = "api"
above = 0.5
for = "400ms"
window = "2s"
severity = "critical"
min_requests_per_second = 0
"#,
            hook.addr
        ),
    ));
    let before = gatehouse.admin_json("/api/v1/alerts").await;
    assert_eq!(rule(&before, "api-errors")["state"], "ok", "{before:#}");
    assert_eq!(before["history"], Value::Array(vec![]));

    let http = client(None);
    for _ in 0..10 {
        let failed = http.get(gatehouse.url("/status/500")).send().await.unwrap();
        failed.bytes().await.unwrap();
    }
    eventually(Duration::from_secs(10), "the rule fires", || async {
        let report = gatehouse.admin_json("/api/v1/alerts").await;
        rule(&report, "api-errors")["state"] == "firing"
    })
    .await;
    let report = gatehouse.admin_json("/api/v1/alerts").await;
    let firing = rule(&report, "api-errors");
    assert_eq!(firing["value"], 1.0);
    assert_eq!(firing["severity"], "critical");
    assert!(firing["since"].as_str().unwrap().ends_with('Z'));

    // No more errors: once they are older than the rule's window, it resolves.
    eventually(Duration::from_secs(10), "the rule resolves", || async {
        let report = gatehouse.admin_json("/api/v1/alerts").await;
        rule(&report, "api-errors")["state"] == "ok"
    })
    .await;
    eventually(Duration::from_secs(5), "the webhook hears both", || async {
        hook.recorded().len() == 2
    })
    .await;
    let events = recorded(&hook);
    assert_eq!(events[0]["rule"], "api-errors");
    assert_eq!(events[0]["state"], "firing");
    assert_eq!(events[0]["route"], "api");
    assert_eq!(events[0]["measure"], "error_ratio");
    assert!(
        events[0]["summary"].as_str().unwrap().contains("above 0.5"),
        "{events:#?}"
    );
    assert_eq!(events[1]["state"], "resolved");

    let report = gatehouse.admin_json("/api/v1/alerts").await;
    let history: Vec<&Value> = report["history"].as_array().unwrap().iter().collect();
    assert_eq!(history.len(), 2, "{report:#}");
    assert_eq!(history[0]["state"], "resolved", "newest first");
    assert_eq!(history[1]["state"], "firing");

    // A reload takes new rules at once, as Prometheus reloads its rule files.
    gatehouse
        .reload_with(&api_site(
            &upstream,
            "[alerts]\ndefaults = false\n\n[[alerts.rules]]\nname = \"api-slow\"\n\
             measure = \"latency_p99_ms\"\nroute = \"api\"\nabove = 500\n",
        ))
        .unwrap();
    let report = gatehouse.admin_json("/api/v1/alerts").await;
    let names: Vec<&str> = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api-slow"]);
    assert_eq!(
        report["history"].as_array().unwrap().len(),
        2,
        "history stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_webhook_is_tried_a_bounded_number_of_times_beside_the_default_rules() {
    let upstream = Upstream::start("app").await;
    let hook = Upstream::start("hook").await;
    let gatehouse = Gatehouse::start(&format!(
        r#"
[monitoring]
sample_interval = "200ms"

[alerts]
webhook = "http://{}/status/503"
webhook_attempts = 2

[[alerts.rules]]
name = "quiet"
measure = "requests_per_second"
below = 1000000

[upstreams.app]
servers = ["{}"]
"#,
        hook.addr, upstream.addr
    ));
    // The rule holds at once (no traffic is below any rate): one firing, tried twice.
    hook.wait_for_hits(2).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(hook.hits(), 2, "no more tries than webhook_attempts");

    let report = gatehouse.admin_json("/api/v1/alerts").await;
    assert_eq!(rule(&report, "quiet")["state"], "firing");
    // The reference deployment's scaling indicators are rules too, held for 2 minutes.
    for name in [
        "cpu-high",
        "memory-high",
        "latency-high",
        "pool-usage-high",
        "error-rate-high",
    ] {
        assert_eq!(rule(&report, name)["for"], "2m", "{report:#}");
    }
    assert_eq!(rule(&report, "cpu-high")["above"], 70.0);
    assert_eq!(rule(&report, "error-rate-high")["above"], 0.02);
}
