//! The built-in load test: `gatehouse bench` (the real binary) against a real upstream, through
//! a real gatehouse, and the same test on a schedule, served as `/performance/latest.json`.

use std::time::Duration;

use serde_json::Value;

use crate::support::{Gatehouse, Upstream, eventually, free_port};

/// `gatehouse bench ARGS...`: exit success, stdout, stderr.
async fn bench(args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("bench")
        .args(args)
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_loads_a_real_upstream_through_gatehouse_and_counts_failures() {
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&format!(
        "[upstreams.app]\nservers = [\"{}\"]\n",
        upstream.addr
    ));
    let url = gatehouse.url("/page");
    let (ok, out, err) = bench(&[&url, "-c", "1,4", "-d", "1s", "--json"]).await;
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let levels = report["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 2);
    assert_eq!(levels[1]["concurrency"], 4);
    for level in levels {
        let requests = level["requests"].as_u64().unwrap();
        assert!(requests > 10, "{level}");
        assert_eq!(level["failures"], 0, "{level}");
        assert_eq!(level["statuses"]["200"].as_u64(), Some(requests));
        assert!(level["latency_p99_ms"].as_f64() >= level["latency_p50_ms"].as_f64());
    }
    assert!(upstream.hits() as u64 >= levels[0]["requests"].as_u64().unwrap());

    // The table, and a status that is a failure.
    let failing = gatehouse.url("/status/503");
    let (ok, table, err) = bench(&[&failing, "-c", "2", "-d", "500ms"]).await;
    assert!(ok, "{err}");
    assert!(
        table.contains("Concurrent users | Requests/second"),
        "{table}"
    );
    assert!(table.contains("failed: "), "{table}");
    assert!(table.contains("× 503"), "{table}");

    // Nobody listening: every request fails, none hangs.
    let dead = format!("http://127.0.0.1:{}/", free_port());
    let (ok, out, _) = bench(&[&dead, "-c", "2", "-d", "300ms", "--json"]).await;
    assert!(ok);
    let report: Value = serde_json::from_str(&out).unwrap();
    let level = &report["levels"][0];
    assert_eq!(level["failures"], level["requests"]);
    assert!(level["errors"]["connect"].as_u64().unwrap() > 0, "{level}");

    let (ok, _, err) = bench(&["ftp://example.com/", "-d", "1s"]).await;
    assert!(!ok);
    assert!(err.contains("not an http:// or https:// URL"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_load_tests_are_kept_and_served_as_latest_json() {
    let upstream = Upstream::start("app").await;
    let target = format!("http://{}/scheduled", upstream.addr);
    let gatehouse = Gatehouse::start(&format!(
        r#"
[load_test]
enabled = true
interval = "1s"
urls = ["{target}"]
levels = [2]
duration = "300ms"
history = 2

[upstreams.app]
servers = ["{}"]
"#,
        upstream.addr
    ));
    eventually(Duration::from_secs(15), "two scheduled runs", || async {
        let runs = gatehouse.admin_json("/api/v1/load-tests").await;
        runs.as_array().is_some_and(|runs| runs.len() == 2)
    })
    .await;
    let latest = gatehouse.admin_json("/performance/latest.json").await;
    let report = &latest["reports"][0];
    assert_eq!(report["url"], target.as_str());
    assert!(
        report["levels"][0]["requests"].as_u64().unwrap() > 0,
        "{latest:#}"
    );
    assert_eq!(report["levels"][0]["failures"], 0);
    // Bounded: never more than `history` runs kept.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let runs = gatehouse.admin_json("/api/v1/load-tests").await;
    assert_eq!(runs.as_array().unwrap().len(), 2);
}
