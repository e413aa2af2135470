//! The reference deployment's monitoring paths (`/api/v5/...`, `/performance/latest.json`) and
//! the OpenAPI document: every documented route answers with one of its documented statuses,
//! and bad input gets a 400 naming the field.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Gatehouse, Upstream, api_site, client, json_of};

fn gatehouse_for(upstream: &Upstream) -> Gatehouse {
    Gatehouse::start(&api_site(upstream, ""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_answers_as_documented() {
    let upstream = Upstream::start("app").await;
    let gatehouse = gatehouse_for(&upstream);
    // The document itself needs no token.
    let doc = json_of(client(None).get(gatehouse.admin_url("/api/openapi.json"))).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{paths:#?}");
    for (path, operations) in paths {
        let concrete = path
            .replace("{metric}", "gatehouse_http_requests_total")
            .replace("{host}", "example.com")
            .replace("{name}", "nothing-loaded");
        for (method, operation) in operations.as_object().unwrap() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut request = gatehouse.admin(method.clone(), &concrete);
            if path.ends_with("business-metrics") || path.ends_with("record-business-metric") {
                request = request.json(&json!({ "name": "orders", "value": 1 }));
            } else if path.ends_with("/purge") {
                request = request.json(&json!({ "key": "nothing" }));
            }
            let status = request.send().await.unwrap().status().as_u16().to_string();
            let documented = operation["responses"].as_object().unwrap();
            assert!(
                documented.contains_key(&status),
                "{method} {concrete} answered {status}, documented: {:?}",
                documented.keys().collect::<Vec<_>>()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_paths_report_traffic_health_alerts_and_take_business_metrics() {
    let upstream = Upstream::start("app").await;
    let gatehouse = gatehouse_for(&upstream);
    let http = client(None);
    for _ in 0..4 {
        http.get(gatehouse.url("/x")).send().await.unwrap();
    }

    let metrics = gatehouse.admin_json("/api/v5/performance/metrics").await;
    let api = &metrics["routes"][0];
    assert_eq!(api["route"], "api", "{metrics:#}");
    assert!(api["requests_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(metrics["overall"]["route"], "*");
    assert!(metrics["memory_percent"].as_f64().unwrap() > 0.0);

    let health = gatehouse.admin_json("/api/v5/performance/health").await;
    assert_eq!(health["status"], "healthy", "{health:#}");
    assert_eq!(health["firing_alerts"], json!([]));
    let alerts = gatehouse.admin_json("/api/v5/performance/alerts").await;
    assert_eq!(alerts, json!({ "count": 0, "alerts": [] }));

    let advice = gatehouse
        .admin_json("/api/v5/performance/recommendations")
        .await;
    assert!(advice["recommendations"].is_array(), "{advice:#}");

    // The reference scripts' field names are accepted.
    let recorded = json_of(
        gatehouse
            .admin(Method::POST, "/api/v5/performance/record-business-metric")
            .json(&json!({ "metric_name": "signups", "value": 2, "tags": { "plan": "free" } })),
    )
    .await;
    assert_eq!(recorded, json!({ "name": "signups", "value": 2.0 }));
    let missing = gatehouse
        .admin(Method::POST, "/api/v5/performance/record-business-metric")
        .json(&json!({ "name": "signups" }))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    let why: Value = missing.json().await.unwrap();
    assert!(why["error"].as_str().unwrap().contains("`value`"), "{why}");

    let bad_range = gatehouse
        .admin(
            Method::GET,
            "/api/v5/performance/trends/gatehouse_http_requests_total?range=soon",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(bad_range.status(), 400);
    let why: Value = bad_range.json().await.unwrap();
    assert!(
        why["error"].as_str().unwrap().starts_with("range="),
        "{why}"
    );
    let trend = gatehouse
        .admin_json("/api/v5/performance/trends/gatehouse_http_requests_total?range=10m&step=1m")
        .await;
    assert_eq!(trend["step_seconds"], 60);

    let pool = gatehouse
        .admin_json("/api/v5/monitoring/database/pool")
        .await;
    assert_eq!(pool["pools"], json!([]));
    let latest = gatehouse
        .admin(Method::GET, "/performance/latest.json")
        .send()
        .await
        .unwrap();
    assert_eq!(latest.status(), 404);
}
