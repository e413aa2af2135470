//! Each upstream timeout: connect, response header, body idle.

use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::support::{Gatehouse, Upstream, client};

/// A listener that never accepts, with its accept queue already full: the kernel drops further
/// SYNs, so connecting to it hangs (on loopback, without any foreign address).
fn black_hole() -> (socket2::Socket, Vec<std::net::TcpStream>) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(stream) => fillers.push(stream),
            Err(_) => break,
        }
    }
    (socket, fillers)
}

#[tokio::test]
async fn connect_timeout_answers_504() {
    let (hole, _fillers) = black_hole();
    let addr = hole.local_addr().unwrap().as_socket().unwrap();
    let gatehouse = Gatehouse::start(&format!(
        "[upstreams.app]\nservers = [\"{addr}\"]\nconnect_timeout = \"300ms\"\nretries = 0\n"
    ));
    let started = Instant::now();
    let response = client(None).get(gatehouse.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 504);
    assert_eq!(
        response.text().await.unwrap(),
        "504 Gateway Timeout: connecting to the upstream server timed out\n"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn response_header_timeout_answers_504() {
    let upstream = Upstream::start("a").await;
    let gatehouse = Gatehouse::start(&format!(
        "[upstreams.app]\nservers = [\"{}\"]\nresponse_header_timeout = \"300ms\"\n",
        upstream.addr
    ));
    let http = client(None);
    let response = http
        .get(gatehouse.url("/slow?ms=3000"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    assert_eq!(
        response.text().await.unwrap(),
        "504 Gateway Timeout: the upstream server did not answer in time\n"
    );
    assert_eq!(upstream.hits(), 1, "a response timeout is not retried");
    let fast = http.get(gatehouse.url("/slow?ms=10")).send().await.unwrap();
    assert_eq!(fast.status(), 200);
}

#[tokio::test]
async fn body_idle_timeout_cuts_a_stalled_body() {
    let upstream = Upstream::start("a").await;
    let gatehouse = Gatehouse::start(&format!(
        "[upstreams.app]\nservers = [\"{}\"]\nbody_idle_timeout = \"300ms\"\n",
        upstream.addr
    ));
    let http = client(None);
    let response = http
        .get(gatehouse.url("/stall?ms=3000"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the head was already sent");
    let mut stream = response.bytes_stream();
    let mut received = Vec::new();
    let mut failed = false;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => received.extend_from_slice(&bytes),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(
        failed,
        "a stalled body must end in an error, got {received:?}"
    );
    assert_eq!(received, b"12345");
    let whole = http
        .get(gatehouse.url("/stall?ms=100"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        &whole[..],
        b"1234512345",
        "a pause shorter than the idle timeout is fine"
    );
}
