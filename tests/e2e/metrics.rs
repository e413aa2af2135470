//! `/metrics` on the admin listener: requests, rejections by reason, upstream failures and
//! rate-limit decisions counted as they happen, state read when scraped; the whole page read by
//! the official Prometheus client's OpenMetrics parser.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use reqwest::Method;

use crate::support::{Gatehouse, Upstream, client, free_port};

/// `text` parsed by `prometheus_client.openmetrics.parser`: each sample as
/// `name{label="value",...}` (labels sorted) to its value. Fails the test if the parser refuses.
pub fn parse(text: &str) -> HashMap<String, f64> {
    let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value}")
"#;
    let mut parser = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with prometheus_client (tests/run installs it)");
    parser
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = parser.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the OpenMetrics parser refused the page: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let (sample, value) = line.rsplit_once(' ').unwrap();
            (sample.to_string(), value.parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_rejections_failures_and_decisions() {
    let upstream = Upstream::start("app").await;
    let dead = free_port();
    let gatehouse = Gatehouse::start(&format!(
        r#"
[plugins.limits]
kind = "rate-limit"
source = "builtin:rate-limit"
config = {{ default = {{ limit = 2, window = 60 }} }}

[[routes]]
name = "limited"
path = "/limited/"
upstream = "app"
rate_limit = "limits"

[[routes]]
name = "strict"
path = "/strict/"
upstream = "app"
methods = ["GET"]

[[routes]]
name = "pages"
path = "/cached/"
upstream = "app"

[[routes]]
name = "gone"
path = "/gone/"
upstream = "gone"

[upstreams.app]
servers = ["{}"]

[upstreams.gone]
servers = ["127.0.0.1:{dead}"]
"#,
        upstream.addr
    ));
    let http = client(None);
    let send = |method: Method, path: &str| http.request(method, gatehouse.url(path)).send();
    for _ in 0..3 {
        send(Method::GET, "/limited/x").await.unwrap();
    }
    assert_eq!(
        send(Method::DELETE, "/strict/x").await.unwrap().status(),
        405
    );
    assert_eq!(
        send(Method::GET, "/strict/%zz").await.unwrap().status(),
        400
    );
    assert_eq!(send(Method::GET, "/gone/x").await.unwrap().status(), 502);
    let compressed = http
        .get(gatehouse.url("/cached/x?pad=2000"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(compressed.headers()["content-encoding"], "gzip");
    // Counted when the body has been sent whole.
    let sent = compressed.bytes().await.unwrap().len() as f64;

    let unauthorized = http
        .get(gatehouse.admin_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    let page = gatehouse
        .admin(Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let samples = parse(&page.text().await.unwrap());
    let value = |sample: &str| {
        *samples
            .get(sample)
            .unwrap_or_else(|| panic!("no sample {sample} in {samples:#?}"))
    };
    assert_eq!(
        value(r#"gatehouse_http_requests_total{method="GET",route="limited",status="2xx"}"#),
        2.0
    );
    assert_eq!(
        value(r#"gatehouse_http_requests_total{method="GET",route="limited",status="4xx"}"#),
        1.0
    );
    assert_eq!(
        value(
            r#"gatehouse_rate_limit_decisions_total{decision="allowed",policy="default",route="limited"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            r#"gatehouse_rate_limit_decisions_total{decision="limited",policy="default",route="limited"}"#
        ),
        1.0
    );
    assert_eq!(
        value(r#"gatehouse_http_rejections_total{reason="method_not_allowed",status="405"}"#),
        1.0
    );
    assert_eq!(
        value(r#"gatehouse_http_rejections_total{reason="bad_path",status="400"}"#),
        1.0
    );
    assert_eq!(
        value(r#"gatehouse_upstream_errors_total{reason="connect",route="gone"}"#),
        1.0
    );
    assert_eq!(
        value(r#"gatehouse_http_request_duration_seconds_count{route="limited"}"#),
        3.0
    );
    assert_eq!(
        value(r#"gatehouse_upstream_servers{state="unavailable",upstream="gone"}"#)
            + value(r#"gatehouse_upstream_servers{state="available",upstream="gone"}"#),
        1.0
    );
    assert_eq!(
        value(r#"gatehouse_plugin_calls_total{plugin="limits"}"#),
        3.0 + 1.0,
        "three requests and the smoke test at load"
    );
    assert!(value("process_resident_memory_bytes{}") > 1e6);
    assert!(value("process_open_fds{}") > 0.0);
    assert!(value("gatehouse_host_memory_total_bytes{}") > 1e6);
    assert!(value(r#"gatehouse_host_cpu_seconds_total{mode="idle"}"#) > 0.0);
    assert_eq!(
        value(r#"gatehouse_http_compressible_responses_total{coding="gzip",route="pages"}"#),
        1.0
    );
    let gzip_in = value(r#"gatehouse_compression_input_bytes_total{coding="gzip"}"#);
    let gzip_out = value(r#"gatehouse_compression_output_bytes_total{coding="gzip"}"#);
    assert!(gzip_in > 2000.0, "{gzip_in}");
    assert_eq!(gzip_out, sent, "what was sent is what the compressor made");
    assert_eq!(
        value(r#"gatehouse_compression_input_bytes_total{coding="br"}"#),
        0.0
    );
}
