//! WebSocket pass-through. After the upgrade, actix hands over the client connection as a raw
//! byte stream (the request payload) and writes our response body raw, so the tunnel is a plain
//! TCP connection to the server: send the handshake, relay the 101, then copy bytes both ways.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_LENGTH, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::uri::PathAndQuery;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::headers::strip_hop_by_hop;
use crate::edge::error::EdgeError;
use crate::upstream::{InFlight, Peer};

/// Largest response head accepted from the server.
const MAX_HEAD: usize = 64 * 1024;
/// Most response headers accepted from the server.
const MAX_HEADERS: usize = 100;
const READ_CHUNK: usize = 16 * 1024;

/// Whether the request asks for a WebSocket upgrade (HTTP/1.1 only; HTTP/2 has no upgrade).
pub(crate) fn is_upgrade(req: &HttpRequest) -> bool {
    req.head().upgrade()
        && req
            .headers()
            .get(actix_web::http::header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// What the tunnel needs to reach the server.
pub(crate) struct Target<'a> {
    pub(crate) peer: &'a Peer,
    pub(crate) path: PathAndQuery,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_header_timeout: Duration,
}

/// Opens the tunnel; returns the server's answer (a 101 whose body is the server's side of the
/// connection, or its refusal).
pub(crate) async fn tunnel(
    req: &HttpRequest,
    payload: web::Payload,
    headers: &HeaderMap,
    target: Target<'_>,
    in_flight: InFlight,
) -> Result<HttpResponse, EdgeError> {
    let connect = TcpStream::connect(target.peer.addr.as_str());
    let mut upstream = match timeout(target.connect_timeout, connect).await {
        Err(_) => return Err(EdgeError::ConnectTimeout),
        Ok(Err(_)) => return Err(EdgeError::Connect),
        Ok(Ok(stream)) => stream,
    };
    let _ = upstream.set_nodelay(true);
    upstream
        .write_all(&request_head(req.method().as_str(), &target.path, headers))
        .await
        .map_err(|_| EdgeError::BadResponse)?;

    let (status, response_headers, leftover) = timeout(
        target.response_header_timeout,
        read_response_head(&mut upstream),
    )
    .await
    .map_err(|_| EdgeError::ResponseTimeout)??;

    let upgraded = status == StatusCode::SWITCHING_PROTOCOLS;
    let (from_server, mut to_server) = upstream.into_split();
    if upgraded {
        actix_rt::spawn(async move {
            let mut payload = payload;
            while let Some(Ok(chunk)) = payload.next().await {
                if to_server.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            let _ = to_server.shutdown().await;
        });
    }
    // A refusal (not 101) may keep its connection alive: its body ends at its Content-Length.
    let limit = if upgraded {
        u64::MAX
    } else {
        content_length(&response_headers).unwrap_or(u64::MAX)
    };
    let mut leftover = leftover;
    leftover.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let reader = from_server.take(limit - leftover.len() as u64);
    // The server's side, leftover first, until it closes; the guard counts the whole tunnel.
    let rest = stream::unfold(Some((reader, in_flight)), |state| async {
        let (mut reader, guard) = state?;
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        match reader.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(buf.freeze()), Some((reader, guard)))),
            Err(err) => Some((Err(err), None)),
        }
    });
    let body = stream::iter((!leftover.is_empty()).then_some(Ok(leftover))).chain(rest);

    let mut response = HttpResponse::build(status);
    if upgraded {
        response.upgrade("websocket");
    }
    let mut out = response.streaming(body);
    let mut relayed = response_headers;
    strip_hop_by_hop(&mut relayed, upgraded);
    for (name, value) in relayed {
        out.headers_mut().append(name, value);
    }
    Ok(out)
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn request_head(method: &str, path: &PathAndQuery, headers: &HeaderMap) -> Vec<u8> {
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(method.as_bytes());
    head.push(b' ');
    head.extend_from_slice(path.as_str().as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Reads until a complete response head; returns it and the bytes that followed it.
async fn read_response_head(
    upstream: &mut TcpStream,
) -> Result<(StatusCode, HeaderMap, Bytes), EdgeError> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if upstream
            .read_buf(&mut buf)
            .await
            .map_err(|_| EdgeError::BadResponse)?
            == 0
        {
            return Err(EdgeError::BadResponse);
        }
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut slots);
        match parsed.parse(&buf).map_err(|_| EdgeError::BadResponse)? {
            httparse::Status::Partial if buf.len() < MAX_HEAD => continue,
            httparse::Status::Partial => return Err(EdgeError::BadResponse),
            httparse::Status::Complete(length) => {
                let status = parsed
                    .code
                    .and_then(|code| StatusCode::from_u16(code).ok())
                    .ok_or(EdgeError::BadResponse)?;
                let mut headers = HeaderMap::new();
                for header in parsed.headers.iter() {
                    let name = HeaderName::from_bytes(header.name.as_bytes());
                    let value = HeaderValue::from_bytes(header.value);
                    if let (Ok(name), Ok(value)) = (name, value) {
                        headers.append(name, value);
                    }
                }
                let leftover = buf.split_off(length).freeze();
                return Ok((status, headers, leftover));
            }
        }
    }
}
