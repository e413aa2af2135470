//! Proxying: bodies, headers, errors, WebSocket.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use tokio::io::AsyncWriteExt;

use crate::support::{
    Gatehouse, Scripted, Upstream, app_upstream, client, digest, pattern, raw_exchange, status_of,
};

const TEN_MB: usize = 10 * 1024 * 1024;

#[tokio::test]
async fn ten_megabytes_stream_both_ways() {
    let upstream = Upstream::start("a").await;
    let gatehouse = Gatehouse::start(&app_upstream(upstream.addr, ""));
    let body: Vec<u8> = (0..TEN_MB).map(pattern).collect();

    let uploaded = client(None)
        .post(gatehouse.url("/digest"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 200);
    assert_eq!(
        uploaded.text().await.unwrap(),
        format!("{TEN_MB} {}", digest(&body, 0)),
        "the upstream got every byte"
    );

    let big = client(None)
        .get(gatehouse.url(&format!("/big?bytes={TEN_MB}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        big.content_length(),
        Some(TEN_MB as u64),
        "Content-Length is passed through"
    );
    let big = big.bytes().await.unwrap();
    assert_eq!(big.len(), TEN_MB);
    assert!(big.iter().enumerate().all(|(i, b)| *b == pattern(i)));
}

/// The upstream sends 64 KiB and then waits for the test, which waits for those bytes: a proxy
/// that buffered the whole response would deadlock here.
#[tokio::test]
async fn response_bodies_are_not_buffered() {
    let upstream = Upstream::start("a").await;
    let gatehouse = Gatehouse::start(&app_upstream(upstream.addr, ""));
    let response = client(None)
        .get(gatehouse.url(&format!("/gated?bytes={TEN_MB}")))
        .send()
        .await
        .unwrap();
    let mut stream = response.bytes_stream();
    let mut received = 0usize;
    let first = tokio::time::timeout(Duration::from_secs(10), async {
        while received < 64 * 1024 {
            received += stream.next().await.unwrap().unwrap().len();
        }
    })
    .await;
    assert!(
        first.is_ok(),
        "the first chunk never arrived: the response was buffered"
    );
    upstream.open_gate();
    while let Some(chunk) = stream.next().await {
        received += chunk.unwrap().len();
    }
    assert_eq!(received, TEN_MB);
}

/// The client sends one chunk and then waits until the upstream has it: a proxy that buffered
/// the whole request body would deadlock here.
#[tokio::test]
async fn request_bodies_are_not_buffered() {
    let upstream = Upstream::start("a").await;
    let gatehouse = Gatehouse::start(&app_upstream(upstream.addr, ""));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(tokio_stream(rx));
    let request = tokio::spawn(
        client(None)
            .post(gatehouse.url("/upload-gated"))
            .body(body)
            .send(),
    );
    tx.send(Ok(vec![7u8; 64 * 1024])).await.unwrap();
    let arrived =
        tokio::time::timeout(Duration::from_secs(10), upstream.first_chunk_received()).await;
    assert!(
        arrived.is_ok(),
        "the upstream never saw the first chunk: the request was buffered"
    );
    for _ in 0..16 {
        tx.send(Ok(vec![7u8; 64 * 1024])).await.unwrap();
    }
    drop(tx);
    let response = request.await.unwrap().unwrap();
    assert_eq!(response.text().await.unwrap(), (17 * 64 * 1024).to_string());
}

fn tokio_stream<T>(mut rx: tokio::sync::mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn forwarding_headers_request_id_and_hop_by_hop() {
    let upstream = Upstream::start("a").await;
    let gatehouse = Gatehouse::start(&app_upstream(upstream.addr, ""));
    let response = client(None)
        .get(gatehouse.url("/headers"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "x-drop-me")
        .header("x-drop-me", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9v")
        .send()
        .await
        .unwrap();
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let seen: serde_json::Value = response.json().await.unwrap();
    let header = |name: &str| seen["headers"][name][0].as_str().map(str::to_string);
    let edge = gatehouse.edge_addr();
    assert_eq!(
        header("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(header("x-forwarded-host"), Some(edge.to_string()));
    assert_eq!(
        header("forwarded"),
        Some(format!("for=127.0.0.1;host=\"{edge}\";proto=http"))
    );
    assert_eq!(
        header("host"),
        Some(edge.to_string()),
        "the client's Host is preserved"
    );
    assert_eq!(
        header("x-request-id"),
        Some(request_id.clone()),
        "the upstream gets the id the client gets"
    );
    assert!(request_id.len() > 10);
    for gone in ["x-drop-me", "keep-alive", "proxy-authorization"] {
        assert_eq!(header(gone), None, "{gone} must not reach the upstream");
    }
    assert_eq!(seen["target"], "/headers", "the upstream gets origin-form");

    let given = client(None)
        .get(gatehouse.url("/headers"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "abc-123");
}

#[tokio::test]
async fn route_prefix_strip_and_host_routing() {
    let api = Upstream::start("api").await;
    let site = Upstream::start("site").await;
    let admin = Upstream::start("admin").await;
    let gatehouse = Gatehouse::start(&format!(
        r#"
[[routes]]
path = "/"
upstream = "site"

[[routes]]
path = "/api/"
upstream = "api"
strip_prefix = true

[[routes]]
hosts = ["admin.test"]
path = "/"
upstream = "admin"

[upstreams.site]
servers = ["{}"]
[upstreams.api]
servers = ["{}"]
[upstreams.admin]
servers = ["{}"]
"#,
        site.addr, api.addr, admin.addr
    ));
    let get = |path: &str, host: Option<&str>| {
        let mut request = client(None).get(gatehouse.url(path));
        if let Some(host) = host {
            request = request.header("host", host);
        }
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    assert_eq!(get("/index.html", None).await, "site GET /index.html");
    assert_eq!(get("/api/users?x=1", None).await, "api GET /users");
    assert_eq!(
        get("/api/users", Some("admin.test")).await,
        "admin GET /api/users"
    );
}

#[tokio::test]
async fn upstream_failures_get_short_clear_answers() {
    let mut upstream = Upstream::start("a").await;
    let gatehouse = Gatehouse::start(&format!(
        "[upstreams.app]\nservers = [\"{}\"]\nretries = 0\neject = {{ failures = 2, cooldown = \"1h\" }}\n\n[[routes]]\nhosts = [\"only.test\"]\nupstream = \"app\"\n",
        upstream.addr
    ));
    let http = client(None);
    let no_route = http.get(gatehouse.url("/")).send().await.unwrap();
    assert_eq!(no_route.status(), 404);
    assert_eq!(
        no_route.text().await.unwrap(),
        "404 Not Found: no route for this host and path\n"
    );

    upstream.stop().await;
    let get = || {
        http.get(gatehouse.url("/"))
            .header("host", "only.test")
            .send()
    };
    let refused = get().await.unwrap();
    assert_eq!(refused.status(), 502);
    assert_eq!(
        refused.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(
        refused.text().await.unwrap(),
        "502 Bad Gateway: the upstream server could not be reached\n"
    );
    let _ = get().await.unwrap(); // second failure ejects the only server
    let ejected = get().await.unwrap();
    assert_eq!(ejected.status(), 503);
    assert_eq!(
        ejected.text().await.unwrap(),
        "503 Service Unavailable: no healthy upstream server is available\n"
    );
}

#[tokio::test]
async fn head_and_no_content_keep_their_framing() {
    let upstream = Upstream::start("a").await;
    let gatehouse = Gatehouse::start(&app_upstream(upstream.addr, ""));
    let head = client(None)
        .head(gatehouse.url("/big?bytes=1000"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "1000");
    let no_content = client(None)
        .get(gatehouse.url("/status/204"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_content.status(), 204);
    assert!(no_content.bytes().await.unwrap().is_empty());
}

/// A 304 declares the length of the resource but carries no body (RFC 9110 §15.4.5): the client
/// gets the header without waiting for a body, and the next requests still work. (actix-http's
/// client would wait for those bytes, so gatehouse closes such an upstream connection rather than
/// reuse it: one reconnect, never a desynchronised connection.)
#[tokio::test]
async fn not_modified_keeps_its_length_and_the_connection() {
    let upstream = Scripted::start(
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\nETag: \"v1\"\r\n\r\n",
    )
    .await;
    let gatehouse = Gatehouse::start(&app_upstream(upstream.addr, ""));
    let http = client(None);
    for _ in 0..3 {
        let response = http
            .get(gatehouse.url("/page"))
            .header("if-none-match", "\"v1\"")
            .send();
        let response = tokio::time::timeout(Duration::from_secs(5), response)
            .await
            .expect("no hang")
            .unwrap();
        assert_eq!(response.status(), 304);
        assert_eq!(response.headers()["content-length"], "1000");
        assert!(response.bytes().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn websocket_upgrades_pass_through() {
    let upstream = Upstream::start("a").await;
    let gatehouse = Gatehouse::start(&app_upstream(upstream.addr, ""));
    let url = format!("ws://{}/ws", gatehouse.edge_addr());
    let (mut socket, response) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket handshake through gatehouse");
    assert_eq!(response.status(), 101);
    for text in ["hello", "through", "the gatehouse"] {
        socket.send(Message::text(text)).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed, Message::text(text));
    }
    let big = vec![42u8; 300_000];
    socket.send(Message::binary(big.clone())).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed.into_data().to_vec(), big);
    socket.close(None).await.unwrap();
    gatehouse.wait_until_idle().await;
}

/// A server may send interim 1xx answers (103 Early Hints) before the real one: the client gets
/// the real one, and the next request on the pooled connection gets its own (no desync).
#[tokio::test]
async fn interim_responses_are_skipped() {
    let upstream = Scripted::start(
        b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
    )
    .await;
    let gatehouse = Gatehouse::start(&app_upstream(upstream.addr, ""));
    let http = client(None);
    for _ in 0..3 {
        let response = http.get(gatehouse.url("/")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "final");
    }
}

/// gatehouse answers `Expect: 100-continue` itself; the server never sees it, and a bodiless
/// request carrying it is not a failure.
#[tokio::test]
async fn expect_continue_is_answered_at_the_edge() {
    let upstream = Upstream::start("a").await;
    let gatehouse = Gatehouse::start(&format!(
        "[upstreams.app]\nservers = [\"{}\"]\neject = {{ failures = 1, cooldown = \"1h\" }}\n",
        upstream.addr
    ));
    let with_body = raw_exchange(
        gatehouse.edge_addr(),
        b"POST /headers HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\nhello",
        Duration::from_secs(5),
    )
    .await;
    assert!(with_body.contains("200 OK"), "{with_body}");
    assert!(
        !with_body.to_ascii_lowercase().contains("\"expect\""),
        "the server saw Expect: {with_body}"
    );
    for _ in 0..3 {
        let bodiless = http_get_with(&gatehouse, "expect", "100-continue").await;
        assert_eq!(
            bodiless, 200,
            "a bodiless request with Expect must not fail or eject"
        );
    }
}

async fn http_get_with(gatehouse: &Gatehouse, name: &str, value: &str) -> u16 {
    let request =
        format!("GET /who HTTP/1.1\r\nHost: a\r\n{name}: {value}\r\nConnection: close\r\n\r\n");
    status_of(
        &raw_exchange(
            gatehouse.edge_addr(),
            request.as_bytes(),
            Duration::from_secs(5),
        )
        .await,
    )
}

/// A client that hangs up in the middle of its upload is the client's failure, not the server's.
#[tokio::test]
async fn client_aborted_uploads_do_not_eject_servers() {
    let upstream = Upstream::start("a").await;
    let gatehouse = Gatehouse::start(&format!(
        "[upstreams.app]\nservers = [\"{}\"]\neject = {{ failures = 1, cooldown = \"1h\" }}\n",
        upstream.addr
    ));
    for _ in 0..3 {
        let mut socket = tokio::net::TcpStream::connect(gatehouse.edge_addr())
            .await
            .unwrap();
        socket
            .write_all(
                b"POST /digest HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nonly a little",
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(socket);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let response = client(None)
        .get(gatehouse.url("/who"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "the server was ejected for the clients' aborted uploads"
    );
}

/// With the default settings (one retry) and a single server that refuses connections, the
/// client hears that the server could not be reached, not that none was available.
#[tokio::test]
async fn the_last_failure_is_reported_after_retries() {
    let dead = format!("127.0.0.1:{}", crate::support::free_port());
    let gatehouse = Gatehouse::start(&format!("[upstreams.app]\nservers = [\"{dead}\"]\n"));
    let response = client(None).get(gatehouse.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 502);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("could not be reached")
    );
}

/// A server that refuses the upgrade answers like any request, with its body framed correctly.
#[tokio::test]
async fn refused_websocket_upgrades_come_back_intact() {
    let upstream = Scripted::start(
        b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nnope!\r\n0\r\n\r\n",
    )
    .await;
    let gatehouse = Gatehouse::start(&app_upstream(upstream.addr, ""));
    let response = raw_exchange(gatehouse.edge_addr(), WS_HANDSHAKE, Duration::from_secs(3)).await;
    assert_eq!(status_of(&response), 403, "{response}");
    assert!(
        response.ends_with("nope!\r\n0\r\n\r\n") || response.ends_with("\r\n\r\nnope!"),
        "{response:?}"
    );
}

/// The 101 carries exactly one `Upgrade` and one `Connection` header (browsers refuse repeats).
#[tokio::test]
async fn websocket_handshake_headers_are_not_repeated() {
    let upstream = Upstream::start("a").await;
    let gatehouse = Gatehouse::start(&app_upstream(upstream.addr, ""));
    let response = raw_exchange(
        gatehouse.edge_addr(),
        WS_HANDSHAKE,
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(status_of(&response), 101, "{response}");
    let head = response
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .to_ascii_lowercase();
    for name in ["upgrade:", "connection:", "sec-websocket-accept:"] {
        assert_eq!(
            head.lines().filter(|l| l.starts_with(name)).count(),
            1,
            "{name} in {head}"
        );
    }
    gatehouse.wait_until_idle().await;
}

const WS_HANDSHAKE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
