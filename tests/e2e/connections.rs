//! Connection caps and slow clients through the real edge: a client over its per-address cap
//! gets a clear 503, a closed connection frees its place, and 500 half-open sockets (a
//! slowloris) do not stop other clients.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Gatehouse, Upstream, app_upstream, client, eventually, status_of};

/// Sends a keep-alive GET on `stream` and reads the answer's head and short body.
async fn ask(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn a_client_over_its_connection_cap_gets_503_until_it_closes_one() {
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&format!(
        "[edge]\nmax_connections_per_ip = 3\n\n[[routes]]\npath = \"/\"\nupstream = \"app\"\n\n{}",
        app_upstream(upstream.addr, "")
    ));
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(gatehouse.edge_addr()).await.unwrap();
        assert_eq!(status_of(&ask(&mut stream).await), 200);
        open.push(stream);
    }
    let mut fourth = TcpStream::connect(gatehouse.edge_addr()).await.unwrap();
    let refused = ask(&mut fourth).await;
    assert_eq!(status_of(&refused), 503, "{refused}");
    let lower = refused.to_ascii_lowercase();
    assert!(
        lower.contains("retry-after: 1") && lower.contains("connection: close"),
        "{refused}"
    );
    drop(open.pop());
    eventually(Duration::from_secs(5), "a place freed", || async {
        let mut stream = TcpStream::connect(gatehouse.edge_addr()).await.unwrap();
        status_of(&ask(&mut stream).await) == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_half_open_sockets_do_not_stop_other_clients() {
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&format!(
        "[edge]\nmax_connections_per_ip = 1000\n\n[[routes]]\npath = \"/\"\nupstream = \"app\"\n\n{}",
        app_upstream(upstream.addr, "")
    ));
    let http = client(None);
    let burst = || async {
        let started = Instant::now();
        for _ in 0..100 {
            let response = http.get(gatehouse.url("/")).send().await.unwrap();
            assert_eq!(response.status(), 200);
        }
        started.elapsed()
    };
    let quiet = burst().await;
    let mut slow = Vec::new();
    for _ in 0..500 {
        let mut stream = TcpStream::connect(gatehouse.edge_addr()).await.unwrap();
        // A head that never ends: the slowloris.
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-A: ")
            .await
            .unwrap();
        slow.push(stream);
    }
    let loaded = burst().await;
    eprintln!("100 requests: {quiet:?} alone, {loaded:?} beside 500 half-open sockets");
    assert_eq!(slow.len(), 500);
}
