//! A real upstream HTTP/1.1 server (hyper) for the tests, on a port of its own.
//!
//! Paths:
//! - `/headers`: the request's method, target and headers as JSON
//! - `/echo`: streams the request body back (full duplex: small bodies only, see [`digest`])
//! - `/digest`: reads the whole body, answers `LENGTH DIGEST` (see [`digest`])
//! - `/big?bytes=N`: N bytes of [`pattern`], streamed in 64 KiB chunks with a Content-Length
//! - `/gated?bytes=N`: the first 64 KiB, then waits for [`Upstream::open_gate`], then the rest
//! - `/upload-gated`: reads the body, signalling [`Upstream::first_chunk_received`] after the
//!   first chunk; answers the byte count
//! - `/slow?ms=N`: answers after N ms
//! - `/stall?ms=N`: sends half of a 10-byte body, stalls N ms, sends the rest
//! - `/status/N`: answers status N
//! - `/record`: keeps the request body (see [`Upstream::recorded`]), answers 204
//! - `/ws`: WebSocket echo
//! - `/cached/...?ms=N`: after N ms, `NAME GET TARGET ACCEPT-ENCODING` as text/plain with
//!   `Cache-Control: max-age=60`, an `ETag` and a `Last-Modified` (add `&vary=NAME` for a
//!   `Vary`, `&cookie` for a `Set-Cookie`, `&pad=N` for N more bytes of text, `&max_age=N`,
//!   `&swr=N` and `&sie=N` for other Cache-Control directives, `&tag=T` for a `Cache-Tag`);
//!   `304 Not Modified` to `If-None-Match: "v1"`
//! - `/typed/...?type=T`: `typed` as media type T (add `&own=1` for `Cache-Control: no-cache`,
//!   `&stack=1` for `Server`, `X-Powered-By` and `X-Frame-Options: SAMEORIGIN`)
//! - anything else: `NAME METHOD PATH`

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt, stream};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

type Body = BoxBody<Bytes, std::io::Error>;

const CHUNK: usize = 64 * 1024;

/// The byte at position `i` of every generated body.
pub fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

/// A cheap checksum of a body, the same on both sides of a test.
pub fn digest(bytes: &[u8], seed: u64) -> u64 {
    bytes.iter().fold(seed, |h, b| {
        h.wrapping_mul(1_099_511_628_211)
            .wrapping_add(u64::from(*b))
    })
}

/// Shared by the server's connections and the test.
#[derive(Default)]
struct State {
    name: String,
    hits: AtomicUsize,
    gate: Notify,
    first_chunk: Notify,
    recorded: std::sync::Mutex<Vec<Bytes>>,
}

/// A running test upstream. Stopping it closes the listener and every open connection.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    server: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Starts a server called `name` on a free loopback port.
    pub async fn start(name: &str) -> Self {
        Self::start_on(name, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts a server called `name` on `addr`.
    pub async fn start_on(name: &str, addr: SocketAddr) -> Self {
        let state = Arc::new(State {
            name: name.to_string(),
            ..State::default()
        });
        let mut upstream = Self {
            addr,
            state,
            server: None,
        };
        upstream.listen(addr).await;
        upstream
    }

    async fn listen(&mut self, addr: SocketAddr) {
        let listener = TcpListener::bind(addr).await.expect("bind test upstream");
        self.addr = listener.local_addr().unwrap();
        let state = Arc::clone(&self.state);
        let task = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&state);
                connections.spawn(async move {
                    let service = service_fn(move |req| handle(Arc::clone(&state), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .with_upgrades()
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        self.server = Some(task);
    }

    /// Closes the listener and all connections; returns once they are closed.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.listen(self.addr).await;
    }

    /// Requests served so far.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Waits until `n` requests have reached the server (so a slow one is now in flight).
    pub async fn wait_for_hits(&self, n: usize) {
        let what = format!("{n} requests reached the upstream");
        super::eventually(Duration::from_secs(5), &what, || async { self.hits() >= n }).await;
    }

    /// The bodies `/record` received, in order.
    pub fn recorded(&self) -> Vec<Bytes> {
        self.state.recorded.lock().unwrap().clone()
    }

    /// Lets `/gated` send the rest of its body.
    pub fn open_gate(&self) {
        self.state.gate.notify_one();
    }

    /// Resolves when `/upload-gated` has received its first chunk.
    pub async fn first_chunk_received(&self) {
        self.state.first_chunk.notified().await;
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// `Cache-Control` of a `/cached/` answer: `max-age` (60 unless `max_age` says), and
/// `stale-while-revalidate` / `stale-if-error` when `swr` / `sie` give them.
fn cache_control(query: &BTreeMap<String, String>) -> String {
    let mut directives = vec![format!(
        "max-age={}",
        query.get("max_age").map_or("60", String::as_str)
    )];
    for (key, directive) in [("swr", "stale-while-revalidate"), ("sie", "stale-if-error")] {
        if let Some(seconds) = query.get(key) {
            directives.push(format!("{directive}={seconds}"));
        }
    }
    directives.join(", ")
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_string();
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let number = |key: &str| {
        query
            .get(key)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let response = match path.as_str() {
        "/headers" => {
            let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (name, value) in req.headers() {
                headers
                    .entry(name.to_string())
                    .or_default()
                    .push(String::from_utf8_lossy(value.as_bytes()).into());
            }
            let doc = serde_json::json!({ "method": req.method().as_str(), "target": req.uri().to_string(), "headers": headers });
            text(StatusCode::OK, doc.to_string())
        }
        "/echo" => {
            let length = req.headers().get("content-length").cloned();
            let mut response =
                Response::new(req.into_body().map_err(std::io::Error::other).boxed());
            if let Some(length) = length {
                response.headers_mut().insert("content-length", length);
            }
            response
        }
        "/digest" => {
            let mut body = req.into_body();
            let (mut length, mut hash) = (0usize, 0u64);
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    length += data.len();
                    hash = digest(data, hash);
                }
            }
            text(StatusCode::OK, format!("{length} {hash}"))
        }
        "/big" => generated(number("bytes") as usize, None),
        "/gated" => generated(number("bytes") as usize, Some(Arc::clone(&state))),
        "/upload-gated" => {
            let mut body = req.into_body();
            let mut total = 0usize;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Some(data) = frame.data_ref() {
                    if total == 0 && !data.is_empty() {
                        state.first_chunk.notify_one();
                    }
                    total += data.len();
                }
            }
            text(StatusCode::OK, total.to_string())
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(number("ms"))).await;
            text(StatusCode::OK, "slow done".into())
        }
        "/stall" => {
            let pause = Duration::from_millis(number("ms"));
            let frames = stream::iter([0u8, 1]).then(move |i| async move {
                if i == 1 {
                    tokio::time::sleep(pause).await;
                }
                Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"12345")))
            });
            let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
            response
                .headers_mut()
                .insert("content-length", "10".parse().unwrap());
            response
        }
        "/ws" => websocket(req),
        "/not-modified" => {
            let mut response = text(StatusCode::NOT_MODIFIED, String::new());
            response
                .headers_mut()
                .insert("content-length", "1000".parse().unwrap());
            response
        }
        _ if path.starts_with("/typed/") => {
            let mut response = text(StatusCode::OK, "typed".into());
            let headers = response.headers_mut();
            let media_type = query.get("type").map_or("text/plain", String::as_str);
            headers.insert("content-type", media_type.parse().unwrap());
            if query.contains_key("own") {
                headers.insert("cache-control", "no-cache".parse().unwrap());
            }
            if query.contains_key("stack") {
                headers.insert("server", "test-upstream/1.0".parse().unwrap());
                headers.insert("x-powered-by", "PHP/8.3".parse().unwrap());
                headers.insert("x-frame-options", "SAMEORIGIN".parse().unwrap());
            }
            response
        }
        _ if path.starts_with("/cached/")
            && req
                .headers()
                .get("if-none-match")
                .is_some_and(|v| v == "\"v1\"") =>
        {
            let mut response = text(StatusCode::NOT_MODIFIED, String::new());
            let headers = response.headers_mut();
            headers.insert("etag", "\"v1\"".parse().unwrap());
            headers.insert("cache-control", cache_control(&query).parse().unwrap());
            response
        }
        _ if path.starts_with("/cached/") => {
            tokio::time::sleep(Duration::from_millis(number("ms"))).await;
            let encoding = req
                .headers()
                .get("accept-encoding")
                .map(|v| v.to_str().unwrap_or("?").to_string());
            let mut body = format!(
                "{} {} {} {}",
                state.name,
                req.method(),
                req.uri(),
                encoding.unwrap_or_default()
            );
            let text_of = b"gatehouse text\n";
            body.extend(
                (0..number("pad") as usize).map(|i| char::from(text_of[i % text_of.len()])),
            );
            let mut response = text(StatusCode::OK, body);
            let headers = response.headers_mut();
            headers.insert("content-type", "text/plain".parse().unwrap());
            headers.insert("cache-control", cache_control(&query).parse().unwrap());
            headers.insert("etag", "\"v1\"".parse().unwrap());
            if let Some(tag) = query.get("tag") {
                headers.insert("cache-tag", tag.parse().unwrap());
            }
            headers.insert(
                "last-modified",
                "Sun, 01 Nov 2026 10:00:00 GMT".parse().unwrap(),
            );
            if let Some(name) = query.get("vary") {
                headers.insert("vary", name.parse().unwrap());
            }
            if req
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "cookie"))
            {
                headers.insert("set-cookie", "visitor=1".parse().unwrap());
            }
            response
        }
        "/record" => {
            let body = req.into_body().collect().await.map(|b| b.to_bytes());
            state
                .recorded
                .lock()
                .unwrap()
                .push(body.unwrap_or_default());
            text(StatusCode::NO_CONTENT, String::new())
        }
        _ if path.starts_with("/status/") => {
            let code = path["/status/".len()..].parse().unwrap_or(500);
            text(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                format!("status {code}"),
            )
        }
        _ => text(
            StatusCode::OK,
            format!("{} {} {}", state.name, req.method(), path),
        ),
    };
    Ok(response)
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
}

/// `bytes` bytes of the pattern; with a gate, stops after the first chunk until it opens.
fn generated(bytes: usize, gate: Option<Arc<State>>) -> Response<Body> {
    let chunks = stream::iter((0..bytes).step_by(CHUNK)).then(move |start| {
        let gate = gate.clone();
        async move {
            if start == CHUNK
                && let Some(state) = gate
            {
                state.gate.notified().await;
            }
            let end = (start + CHUNK).min(bytes);
            let chunk: Vec<u8> = (start..end).map(pattern).collect();
            Ok::<_, std::io::Error>(Frame::data(Bytes::from(chunk)))
        }
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(chunks)));
    response
        .headers_mut()
        .insert("content-length", bytes.to_string().parse().unwrap());
    response
}

/// Answers the handshake, then echoes every message.
fn websocket(mut req: Request<Incoming>) -> Response<Body> {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return text(StatusCode::BAD_REQUEST, "not a websocket handshake".into());
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(message)) = socket.next().await {
            if message.is_close() || socket.send(message).await.is_err() {
                break;
            }
        }
    });
    let mut response = text(StatusCode::SWITCHING_PROTOCOLS, String::new());
    let headers = response.headers_mut();
    headers.insert("upgrade", "websocket".parse().unwrap());
    headers.insert("connection", "upgrade".parse().unwrap());
    headers.insert(
        "sec-websocket-accept",
        derive_accept_key(key.as_bytes()).parse().unwrap(),
    );
    response
}

/// An upstream that answers every request with the same raw bytes, keeping the connection open:
/// for answers hyper would never send (e.g. a 304 with a `Content-Length`).
pub struct Scripted {
    /// Where it listens.
    pub addr: SocketAddr,
    server: JoinHandle<()>,
}

impl Scripted {
    /// Starts answering with `response` on a free loopback port.
    pub async fn start(response: &'static [u8]) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            while let Ok((mut socket, _)) = listener.accept().await {
                tasks.spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while let Ok(n) = socket.read(&mut chunk).await {
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        // One answer per complete request head (the requests here have no body).
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            if socket.write_all(response).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Self { addr, server }
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.server.abort();
    }
}
