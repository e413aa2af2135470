//! WebSocket pass-through. The handshake goes to the server like any request (so a refusal comes
//! back as an ordinary response); on `101 Switching Protocols` the server's connection and the
//! client's are joined. After an upgrade actix hands over the client connection as a raw byte
//! stream (the request payload) and writes the response body raw, so the tunnel is two copies.

use actix_http::ResponseHead;
use actix_web::http::header::UPGRADE;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::BytesMut;
use futures_util::{StreamExt, stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::headers::strip_hop_by_hop;
use crate::upstream::InFlight;

const READ_CHUNK: usize = 16 * 1024;

/// Whether the request asks for a WebSocket upgrade (HTTP/1.1 only; HTTP/2 has no upgrade).
pub(crate) fn is_upgrade(req: &HttpRequest) -> bool {
    req.head().upgrade()
        && req
            .headers()
            .get(UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// Answers the client with the server's 101 and joins the two connections; the in-flight guard
/// counts the whole tunnel.
pub(crate) fn relay(
    mut head: ResponseHead,
    server: TcpStream,
    leftover: BytesMut,
    client: web::Payload,
    in_flight: InFlight,
) -> HttpResponse {
    let (from_server, mut to_server) = server.into_split();
    actix_rt::spawn(async move {
        let mut client = client;
        while let Some(Ok(chunk)) = client.next().await {
            if to_server.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to_server.shutdown().await;
    });
    let rest = stream::unfold(Some((from_server, in_flight)), |state| async {
        let (mut reader, guard) = state?;
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        match reader.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(buf.freeze()), Some((reader, guard)))),
            Err(err) => Some((Err(err), None)),
        }
    });
    let early = (!leftover.is_empty()).then(|| Ok(leftover.freeze()));
    let body = stream::iter(early).chain(rest);

    // `upgrade()` writes `Upgrade` and `Connection` itself; the server's copies would repeat them.
    let mut headers = std::mem::take(&mut head.headers);
    strip_hop_by_hop(&mut headers, false);
    let mut response = HttpResponse::SwitchingProtocols()
        .upgrade("websocket")
        .streaming(body);
    for (name, value) in headers {
        response.headers_mut().append(name, value);
    }
    response
}
