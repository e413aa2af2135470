//! Malformed and hostile requests get a clear status and never reach the upstream.

use std::time::Duration;

use crate::support::{Gatehouse, Upstream, app_upstream, raw_exchange, status_of};

async fn setup() -> (Upstream, Gatehouse) {
    let upstream = Upstream::start("a").await;
    let gatehouse = Gatehouse::start(&app_upstream(upstream.addr, ""));
    (upstream, gatehouse)
}

async fn send(gatehouse: &Gatehouse, request: &[u8]) -> String {
    raw_exchange(gatehouse.edge_addr(), request, Duration::from_secs(3)).await
}

#[tokio::test]
async fn bad_header_bytes_are_400() {
    let (upstream, gatehouse) = setup().await;
    for request in [
        &b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n"[..],
        &b"GET / HTTP/1.1\r\nHost: a\r\nX-Nul: a\x00b\r\n\r\n"[..],
        &b"GET / HTTP/1.1\r\nHost: a\r\nX-Ctl: a\x07b\r\n\r\n"[..],
        &b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        &b"GET / HTTP/1.1\r\n\r\n"[..],
    ] {
        let response = send(&gatehouse, request).await;
        assert_eq!(
            status_of(&response),
            400,
            "{:?} -> {response}",
            String::from_utf8_lossy(request)
        );
    }
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn oversized_headers_are_431() {
    let (upstream, gatehouse) = setup().await;
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    assert_eq!(status_of(&send(&gatehouse, huge.as_bytes()).await), 431);
    let many: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
    assert_eq!(status_of(&send(&gatehouse, many.as_bytes()).await), 431);
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn conflicting_lengths_are_400() {
    let (upstream, gatehouse) = setup().await;
    for request in [
        &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        &b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"[..],
        &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"[..],
        &b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"[..],
        &b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello"[..],
    ] {
        let response = send(&gatehouse, request).await;
        assert_eq!(status_of(&response), 400, "{:?} -> {response}", String::from_utf8_lossy(request));
    }
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn absolute_form_for_a_foreign_host_is_refused() {
    let (upstream, gatehouse) = setup().await;
    let foreign = send(
        &gatehouse,
        b"GET http://evil.test/steal HTTP/1.1\r\nHost: good.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&foreign), 400, "{foreign}");
    assert!(
        foreign.contains("different host than the Host header"),
        "{foreign}"
    );
    assert_eq!(upstream.hits(), 0);
    let same = send(
        &gatehouse,
        b"GET http://good.test/ok HTTP/1.1\r\nHost: good.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&same), 200, "{same}");
    assert!(
        same.ends_with("a GET /ok"),
        "the upstream gets origin-form: {same}"
    );
}

#[tokio::test]
async fn targets_headers_paths_and_methods_over_the_limits_get_clear_refusals() {
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&format!(
        r#"
[edge]
max_uri_length = 1024
max_headers = 20
max_header_bytes = "4 KiB"

[[routes]]
path = "/"
upstream = "app"

[[routes]]
path = "/strict/"
upstream = "app"
methods = ["GET", "HEAD"]
reject_encoded_slash = true

[[routes]]
path = "/text/"
upstream = "app"
utf8_only = true

{}"#,
        app_upstream(upstream.addr, "")
    ));
    let send = |request: String| {
        let addr = gatehouse.edge_addr();
        async move {
            let answer =
                raw_exchange(addr, request.as_bytes(), std::time::Duration::from_secs(2)).await;
            (status_of(&answer), answer)
        }
    };
    let get = |target: &str, extra: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n")
    };
    let long = format!("/{}", "a".repeat(1100));
    let many: String = (0..25).map(|i| format!("X-H{i}: v\r\n")).collect();
    let big = format!("X-Big: {}\r\n", "b".repeat(5000));
    let cases = [
        (get(&long, ""), 414),
        (get("/", &many), 431),
        (get("/", &big), 431),
        (get("/a/%zz", ""), 400),
        (get("/a%00b", ""), 400),
        (get("/../etc/passwd", ""), 400),
        (get("/a/%2e%2e/%2e%2e/etc/passwd", ""), 400),
        (get("/strict/a%2Fb", ""), 400),
        (get("/open/a%2Fb", ""), 200),
        (get("/a/../b", ""), 200),
        (get("/text/caf%C3%A9?q=%E2%9C%93", ""), 200),
        (get("/text/%FF", ""), 400),
        (get("/text/ok?q=%C3", ""), 400),
        (get("/open/%FF", ""), 200),
        (
            "DELETE /strict/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_string(),
            405,
        ),
    ];
    for (request, expected) in cases {
        let (status, answer) = send(request.clone()).await;
        let line = request.lines().next().unwrap_or_default();
        let line = &line[..line.len().min(60)];
        assert_eq!(status, expected, "{line}: {answer}");
    }
    let (_, refused) =
        send("DELETE /strict/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_string()).await;
    assert!(
        refused.to_ascii_lowercase().contains("allow: get, head"),
        "{refused}"
    );
    assert_eq!(
        upstream.hits(),
        4,
        "only the four well-formed requests went upstream"
    );
}

#[tokio::test]
async fn bodies_over_the_routes_limit_get_413_declared_or_streamed() {
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&format!(
        "[[routes]]\npath = \"/\"\nupstream = \"app\"\nmax_body = \"1 KiB\"\n\n{}",
        app_upstream(upstream.addr, "")
    ));
    let post = |headers: &str, body: &[u8]| {
        let mut request =
            format!("POST /digest HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{headers}\r\n")
                .into_bytes();
        request.extend_from_slice(body);
        let addr = gatehouse.edge_addr();
        async move { raw_exchange(addr, &request, Duration::from_secs(3)).await }
    };
    let small = post("Content-Length: 512\r\n", &[b'a'; 512]).await;
    assert_eq!(status_of(&small), 200, "{small}");
    let declared = post("Content-Length: 2048\r\n", &[b'a'; 2048]).await;
    assert_eq!(status_of(&declared), 413, "{declared}");
    assert_eq!(
        upstream.hits(),
        1,
        "a declared excess never reaches the upstream"
    );
    let mut chunked = Vec::new();
    for _ in 0..4 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b'b'; 1024]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let streamed = post("Transfer-Encoding: chunked\r\n", &chunked).await;
    assert_eq!(status_of(&streamed), 413, "{streamed}");
}

#[tokio::test]
async fn a_client_that_stops_sending_its_body_gets_408() {
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&format!(
        "[edge]\nrequest_body_timeout = \"300ms\"\n\n{}",
        app_upstream(upstream.addr, "")
    ));
    for (framing, part) in [
        ("Content-Length: 100", &b"0123456789"[..]),
        ("Transfer-Encoding: chunked", b"5\r\nhello\r\n"),
    ] {
        let mut request =
            format!("POST /digest HTTP/1.1\r\nHost: t\r\n{framing}\r\n\r\n").into_bytes();
        request.extend_from_slice(part);
        let answer = send(&gatehouse, &request).await;
        assert_eq!(status_of(&answer), 408, "{framing}: {answer}");
    }
    let complete = send(
        &gatehouse,
        b"POST /digest HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    )
    .await;
    assert_eq!(status_of(&complete), 200, "{complete}");
}

#[tokio::test]
async fn hosts_outside_the_allowlist_get_421_before_routing() {
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&format!(
        "[edge]\nallowed_hosts = [\"shop.test\", \"*.shop.test\"]\n\n[[routes]]\npath = \"/\"\nupstream = \"app\"\n\n{}",
        app_upstream(upstream.addr, "")
    ));
    for (host, expected) in [
        ("shop.test", 200),
        ("SHOP.test:8080", 200),
        ("eu.shop.test", 200),
        ("evil.test", 421),
        ("shop.test.evil", 421),
    ] {
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let answer = raw_exchange(
            gatehouse.edge_addr(),
            request.as_bytes(),
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(status_of(&answer), expected, "{host}: {answer}");
    }
    assert_eq!(upstream.hits(), 3);
}
