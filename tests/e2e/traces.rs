//! Traces over OTLP to real receivers (gRPC and HTTP/protobuf): a server span per request with
//! the HTTP semantic conventions, children for the phases, the client's `traceparent` as parent
//! and the trace carried on to the upstream; sampling; and a collector that is down changes
//! nothing for requests; collectors over TLS, with a private CA and a client certificate.

use std::time::Duration;

use serde_json::Value;

use crate::support::otlp::{Collector, ReceivedSpan, ServerTls};
use crate::support::{Gatehouse, TestCa, Upstream, api_site, client, eventually, free_port};

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

fn traced(upstream: &Upstream, traces: &str) -> Gatehouse {
    Gatehouse::start(&api_site(
        upstream,
        &format!("[traces]\nenabled = true\n{traces}"),
    ))
}

/// The `traceparent` the upstream received, from `/headers`.
async fn upstream_traceparent(gatehouse: &Gatehouse, traceparent: Option<&str>) -> Option<String> {
    let mut request = client(None).get(gatehouse.url("/headers"));
    if let Some(parent) = traceparent {
        request = request.header("traceparent", parent);
    }
    let seen: Value = request.send().await.unwrap().json().await.unwrap();
    seen["headers"]["traceparent"][0]
        .as_str()
        .map(str::to_string)
}

/// The value of `name` (with its labels, as [`crate::metrics::parse`] writes them) on `/metrics`.
async fn sample(gatehouse: &Gatehouse, name: &str) -> f64 {
    let samples = crate::metrics::parse(&gatehouse.admin_text("/metrics").await);
    samples.get(name).copied().unwrap_or_default()
}

async fn failed_exports(gatehouse: &Gatehouse) -> f64 {
    sample(gatehouse, "gatehouse_trace_exports_failed_total{}").await
}

async fn wait_for_span(collector: &Collector, name: &str) -> Vec<ReceivedSpan> {
    eventually(
        Duration::from_secs(10),
        &format!("span {name} exported"),
        || async { collector.spans().iter().any(|s| s.name == name) },
    )
    .await;
    collector.spans()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_grpc_collector_with_parents_attributes_and_propagation() {
    let upstream = Upstream::start("app").await;
    let collector = Collector::grpc().await;
    let gatehouse = traced(
        &upstream,
        &format!(
            "endpoint = \"http://{}\"\nresource = {{ \"deployment.environment\" = \"test\" }}",
            collector.addr
        ),
    );
    let parent = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    let carried = upstream_traceparent(&gatehouse, Some(&parent))
        .await
        .expect("traceparent upstream");
    let parts: Vec<&str> = carried.split('-').collect();
    assert_eq!(parts[1], TRACE, "the upstream continues the client's trace");
    assert_ne!(parts[2], CLIENT_SPAN, "under gatehouse's own span");

    let spans = wait_for_span(&collector, "GET api").await;
    let server = spans.iter().find(|s| s.name == "GET api").unwrap();
    assert_eq!(server.trace_id, TRACE);
    assert_eq!(server.parent_span_id, CLIENT_SPAN);
    assert_eq!(server.kind, 2, "server");
    assert_eq!(server.service, "gatehouse");
    for (key, value) in [
        ("http.request.method", "GET"),
        ("http.route", "api"),
        ("url.path", "/headers"),
        ("url.scheme", "http"),
        ("http.response.status_code", "200"),
        ("client.address", "127.0.0.1"),
    ] {
        assert_eq!(
            server.attributes.get(key).map(String::as_str),
            Some(value),
            "{key}: {server:#?}"
        );
    }
    let call = spans
        .iter()
        .find(|s| s.name == "upstream")
        .expect("an upstream span");
    assert_eq!(call.parent_span_id, server.span_id);
    assert_eq!(call.kind, 3, "client");
    assert_eq!(
        call.span_id, parts[2],
        "the upstream's parent is the call's span"
    );
    assert_eq!(call.attributes["http.response.status_code"], "200");
    let validate = spans
        .iter()
        .find(|s| s.name == "validate")
        .expect("a validation span");
    assert_eq!(validate.parent_span_id, server.span_id);
    assert!(
        spans
            .iter()
            .any(|s| s.name == "compress" && s.parent_span_id == server.span_id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_http_collector_and_sampling_follows_the_ratio_and_the_parent() {
    let upstream = Upstream::start("app").await;
    let collector = Collector::http().await;
    let gatehouse = traced(
        &upstream,
        &format!(
            "protocol = \"http\"\nendpoint = \"http://{}/v1/traces\"\nsampling_ratio = 0.0\nservice_name = \"edge-a\"",
            collector.addr
        ),
    );
    // Not sampled: no span, but the upstream still gets a traceparent (flags 00).
    let unsampled = upstream_traceparent(&gatehouse, None).await.unwrap();
    assert!(unsampled.ends_with("-00"), "{unsampled}");
    // A sampled parent is followed whatever the ratio says.
    let parent = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    upstream_traceparent(&gatehouse, Some(&parent))
        .await
        .unwrap();
    let spans = wait_for_span(&collector, "GET api").await;
    let servers: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.kind == 2).collect();
    assert_eq!(servers.len(), 1, "{spans:#?}");
    assert_eq!(servers[0].trace_id, TRACE);
    assert_eq!(servers[0].service, "edge-a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_changes_nothing_for_requests() {
    let upstream = Upstream::start("app").await;
    let gatehouse = traced(
        &upstream,
        &format!(
            "endpoint = \"http://127.0.0.1:{}\"\nqueue_size = 8\nexport_timeout = \"1s\"",
            free_port()
        ),
    );
    let http = client(None);
    for _ in 0..100 {
        let answer = http.get(gatehouse.url("/x")).send().await.unwrap();
        assert_eq!(answer.status(), 200);
    }
    eventually(Duration::from_secs(10), "lost spans counted", || async {
        let dropped = sample(
            &gatehouse,
            "gatehouse_trace_spans_total{outcome=\"dropped\"}",
        )
        .await;
        dropped > 0.0 || failed_exports(&gatehouse).await > 0.0
    })
    .await;
}

/// TLS material for a collector that wants client certificates from the test CA, and the
/// `[traces]` lines of a client: `ca_file` trusts that CA, `identity` shows a certificate.
struct MutualTls {
    _dir: tempfile::TempDir,
    server: ServerTls,
    ca_file: String,
    identity: String,
}

impl MutualTls {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &ca.pem).unwrap();
        let (cert, key, _) = ca.issue(dir.path(), "collector");
        let (client_cert, client_key, _) = ca.issue(dir.path(), "exporter");
        let server = ServerTls {
            cert: std::fs::read(cert).unwrap(),
            key: std::fs::read(key).unwrap(),
            client_ca: Some(ca.pem.into_bytes()),
        };
        Self {
            ca_file: format!("ca_file = {:?}\n", ca_file.display().to_string()),
            identity: format!(
                "client_cert = {:?}\nclient_key = {:?}\n",
                client_cert.display().to_string(),
                client_key.display().to_string()
            ),
            server,
            _dir: dir,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_collectors_over_tls_that_ask_for_a_client_certificate() {
    let upstream = Upstream::start("app").await;
    let tls = MutualTls::new();
    for (protocol, collector, path) in [
        ("grpc", Collector::grpc_tls(&tls.server).await, ""),
        ("http", Collector::http_tls(&tls.server).await, "/v1/traces"),
    ] {
        let gatehouse = traced(
            &upstream,
            &format!(
                "protocol = \"{protocol}\"\nendpoint = \"https://{}{path}\"\n{}{}",
                collector.addr, tls.ca_file, tls.identity
            ),
        );
        let answer = client(None).get(gatehouse.url("/x")).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        let spans = wait_for_span(&collector, "GET api").await;
        assert!(
            spans.iter().any(|s| s.name == "upstream"),
            "{protocol}: {spans:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_refuses_the_exporters_certificate_gets_no_spans_and_requests_go_on() {
    let upstream = Upstream::start("app").await;
    let tls = MutualTls::new();
    let collector = Collector::grpc_tls(&tls.server).await;
    // The CA is trusted, but there is no client certificate to show.
    let gatehouse = traced(
        &upstream,
        &format!(
            "endpoint = \"https://{}\"\nexport_timeout = \"1s\"\n{}",
            collector.addr, tls.ca_file
        ),
    );
    let http = client(None);
    for _ in 0..5 {
        let answer = http.get(gatehouse.url("/x")).send().await.unwrap();
        assert_eq!(answer.status(), 200);
    }
    eventually(
        Duration::from_secs(10),
        "the failed export counted",
        || async { failed_exports(&gatehouse).await > 0.0 },
    )
    .await;
    assert!(collector.spans().is_empty(), "{:#?}", collector.spans());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_transactions_are_spans_when_asked_for() {
    use crate::support::postgres::{DATABASE, ensure_database, pooled, pooled_client, value};
    ensure_database().await;
    let collector = Collector::grpc().await;
    let gatehouse = Gatehouse::start(&format!(
        "{}\n[traces]\nenabled = true\npool = true\nendpoint = \"http://{}\"\n",
        pooled("pool_size = 1\nmax_overflow = 0\npool_timeout = \"1s\""),
        collector.addr
    ));
    let client = pooled_client(&gatehouse).await;
    let two: i32 = value(&client, "select 2").await;
    assert_eq!(two, 2);
    let spans = wait_for_span(&collector, "pool.transaction").await;
    let span = spans.iter().find(|s| s.name == "pool.transaction").unwrap();
    assert_eq!(span.kind, 2, "server");
    assert_eq!(span.parent_span_id, "", "a root");
    for (key, value) in [
        ("db.system.name", "postgresql"),
        ("db.namespace", DATABASE),
        ("db.user", "postgres"),
        ("server.address", "127.0.0.1:5432"),
        ("client.address", "127.0.0.1"),
    ] {
        assert_eq!(
            span.attributes.get(key).map(String::as_str),
            Some(value),
            "{key}: {span:#?}"
        );
    }
    let wait: f64 = span.attributes["gatehouse.pool.wait"].parse().unwrap();
    assert!(wait >= 0.0);
    assert!(!span.attributes.contains_key("db.response.status_code"));

    // A transaction that finds no server within pool_timeout is a failed span.
    client.batch_execute("begin").await.unwrap();
    let other = pooled_client(&gatehouse).await;
    assert!(other.query_one("select 1", &[]).await.is_err());
    client.batch_execute("commit").await.unwrap();
    eventually(
        Duration::from_secs(10),
        "a failed transaction's span",
        || async {
            collector.spans().iter().any(|s| {
                s.name == "pool.transaction"
                    && s.attributes
                        .get("db.response.status_code")
                        .map(String::as_str)
                        == Some("53300")
            })
        },
    )
    .await;
}
