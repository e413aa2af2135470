//! Trends and business metrics through the real App: traffic through the edge and values
//! posted by the app become time series in the state store, read back by metric, labels and
//! range on the admin API.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Gatehouse, Upstream, api_site, client, eventually};

async fn post_business(gatehouse: &Gatehouse, body: Value) -> (u16, Value) {
    let answer = gatehouse
        .admin(Method::POST, "/api/v1/business-metrics")
        .json(&body)
        .send()
        .await
        .unwrap();
    (answer.status().as_u16(), answer.json().await.unwrap())
}

/// The points of the only series `path` answers with.
fn points(answer: &Value) -> Vec<(u64, f64)> {
    let series = answer["series"].as_array().expect("a list of series");
    assert_eq!(series.len(), 1, "{answer:#}");
    series[0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_business_values_become_time_series() {
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&api_site(&upstream, ""));
    let order = json!({ "name": "orders", "value": 3, "labels": { "plan": "pro" }, "add": true });
    assert_eq!(
        post_business(&gatehouse, order.clone()).await.1["value"],
        3.0
    );
    assert_eq!(post_business(&gatehouse, order).await.1["value"], 6.0);
    let (status, refused) =
        post_business(&gatehouse, json!({ "name": "Orders!", "value": 1 })).await;
    assert_eq!(status, 400);
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("not a metric or label name")
    );
    let (status, _) = post_business(&gatehouse, json!({ "name": "x", "value": "lots" })).await;
    assert_eq!(status, 400);

    let page = gatehouse.admin_text("/metrics").await;
    assert!(
        page.contains("gatehouse_business_orders{plan=\"pro\"} 6.0"),
        "{page}"
    );

    let http = client(None);
    for _ in 0..5 {
        http.get(gatehouse.url("/x")).send().await.unwrap();
    }
    let requests = "/api/v1/trends/gatehouse_http_requests_total?since=5m&label.route=api";
    eventually(
        Duration::from_secs(10),
        "points up to all 5 requests",
        || async {
            let answer = gatehouse.admin_json(requests).await;
            let points = answer["series"][0]["points"].as_array().cloned();
            points.is_some_and(|p| p.len() >= 2 && p.last().unwrap()[1] == 5.0)
        },
    )
    .await;
    let answer = gatehouse.admin_json(requests).await;
    assert_eq!(answer["step_seconds"], 1);
    let counts = points(&answer);
    assert_eq!(counts.last().unwrap().1, 5.0, "{answer:#}");
    assert!(
        counts.windows(2).all(|pair| pair[0].0 < pair[1].0),
        "in time order"
    );

    let rates = gatehouse.admin_json(&format!("{requests}&rate=true")).await;
    assert!(points(&rates).iter().all(|(_, rate)| *rate >= 0.0));

    let orders = gatehouse
        .admin_json("/api/v1/trends/gatehouse_business_orders?since=5m&label.plan=pro")
        .await;
    assert_eq!(points(&orders).last().unwrap().1, 6.0);

    let listed = gatehouse.admin_json("/api/v1/trends").await;
    assert!(
        listed["metrics"]["gatehouse_http_requests_total"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert_eq!(listed["metrics"]["gatehouse_business_orders"], 1);

    let bad = gatehouse
        .admin(Method::GET, "/api/v1/trends/x?since=forever")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let bad = gatehouse
        .admin(Method::GET, "/api/v1/trends/x?colour=blue")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}
