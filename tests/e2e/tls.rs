//! TLS: a test CA, HTTP/2 by ALPN, TLS versions, certificate reload under a live connection,
//! and the HTTP → HTTPS redirect.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::SupportedProtocolVersion;
use rustls::version::{TLS12, TLS13};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::support::{
    Gatehouse, Scripted, TestCa, Upstream, digest, eventually, raw_exchange, status_of,
};

fn tls_config(upstream: SocketAddr, cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "[edge.tls]\nlisten = [\"127.0.0.1:0\"]\ncert = \"{}\"\nkey = \"{}\"\n{extra}\n[upstreams.app]\nservers = [\"{upstream}\"]\n",
        cert.display(),
        key.display(),
    )
}

/// A gatehouse serving HTTPS, with a certificate for localhost from a fresh test CA.
struct Https {
    ca: TestCa,
    /// Holds the certificate files.
    certs: TempDir,
    cert: PathBuf,
    key: PathBuf,
    /// The certificate served at start (DER).
    leaf: Vec<u8>,
    gatehouse: Gatehouse,
}

impl Https {
    /// In front of `upstream`; `extra` follows the `[edge.tls]` keys (more keys, or more tables).
    fn start(upstream: SocketAddr, extra: &str) -> Self {
        let ca = TestCa::new();
        let certs = tempfile::tempdir().unwrap();
        let (cert, key, leaf) = ca.issue(certs.path(), "live");
        let gatehouse = Gatehouse::start(&tls_config(upstream, &cert, &key, extra));
        Self {
            ca,
            certs,
            cert,
            key,
            leaf,
            gatehouse,
        }
    }

    fn url(&self, path: &str) -> String {
        format!(
            "https://localhost:{}{path}",
            self.gatehouse.tls_addr().port()
        )
    }

    /// A client that trusts the test CA and resolves localhost to the TLS listener.
    fn client(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only([reqwest::Certificate::from_pem(self.ca.pem.as_bytes()).unwrap()])
            .resolve("localhost", self.gatehouse.tls_addr())
    }

    /// A raw TLS connection that offers only `versions`.
    async fn connect(
        &self,
        versions: &[&'static SupportedProtocolVersion],
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca.pem.as_bytes()).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = TcpStream::connect(self.gatehouse.tls_addr()).await?;
        TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    }

    /// The certificate a new TLS 1.3 handshake gets.
    async fn served_leaf(&self) -> Vec<u8> {
        leaf_of(&self.connect(&[&TLS13]).await.unwrap())
    }
}

fn leaf_of(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// One keep-alive HTTP/1.1 exchange on an open TLS connection.
async fn get_over(stream: &mut TlsStream<TcpStream>, path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= length {
                return body.to_string();
            }
        }
    }
}

#[tokio::test]
async fn https_serves_http2_and_http1_with_the_test_ca() {
    let upstream = Upstream::start("a").await;
    let https = Https::start(upstream.addr, "");
    let url = https.url("/headers");

    let h2 = https
        .client()
        .build()
        .unwrap()
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(
        h2.version(),
        reqwest::Version::HTTP_2,
        "ALPN must select h2"
    );
    let seen: serde_json::Value = h2.json().await.unwrap();
    assert_eq!(seen["headers"]["x-forwarded-proto"][0], "https");
    let authority = format!("localhost:{}", https.gatehouse.tls_addr().port());
    assert_eq!(
        seen["headers"]["host"][0], authority,
        "h2 :authority becomes Host"
    );

    let h1 = https
        .client()
        .http1_only()
        .build()
        .unwrap()
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(h1.version(), reqwest::Version::HTTP_11);
    assert_eq!(h1.status(), 200);

    let untrusting = reqwest::Client::builder()
        .no_proxy()
        .resolve("localhost", https.gatehouse.tls_addr())
        .build()
        .unwrap();
    assert!(
        untrusting.get(&url).send().await.is_err(),
        "a client without the test CA must refuse the certificate"
    );
}

/// An HTTP/2 request body without Content-Length still streams to the upstream.
#[tokio::test]
async fn http2_request_bodies_reach_the_upstream() {
    let upstream = Upstream::start("a").await;
    let https = Https::start(upstream.addr, "");
    let chunks: Vec<Vec<u8>> = (0..20).map(|i| vec![i as u8; 10_000]).collect();
    let expected = format!("200000 {}", chunks.iter().fold(0, |h, c| digest(c, h)));
    let chunks = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
    let body = reqwest::Body::wrap_stream(chunks);
    let response = https
        .client()
        .build()
        .unwrap()
        .post(https.url("/digest"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.text().await.unwrap(), expected);
}

#[tokio::test]
async fn only_tls_1_2_and_1_3_are_offered() {
    let upstream = Upstream::start("a").await;
    let https = Https::start(upstream.addr, "");
    for version in [&TLS12, &TLS13] {
        let mut stream = https.connect(&[version]).await.expect("handshake");
        assert_eq!(stream.get_ref().1.protocol_version(), Some(version.version));
        assert_eq!(get_over(&mut stream, "/who").await, "a GET /who");
    }
    // A client that offers nothing newer than TLS 1.0 gets an alert, not a ServerHello.
    let answer = raw_exchange(
        https.gatehouse.tls_addr(),
        &tls10_client_hello(),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(
        answer.as_bytes().first(),
        Some(&0x15),
        "expected a TLS alert record, got {answer:?}"
    );
}

/// A minimal TLS 1.0 ClientHello: one cipher suite, no extensions.
fn tls10_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x01];
    hello.extend_from_slice(&[7u8; 32]); // random
    hello.extend_from_slice(&[0x00, 0x00, 0x02, 0x00, 0x2f, 0x01, 0x00]); // no session, AES128-SHA, null compression
    let mut handshake = vec![0x01, 0x00, 0x00, hello.len() as u8];
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
    record.extend(handshake);
    record
}

#[tokio::test]
async fn certificate_reloads_without_dropping_connections() {
    let upstream = Upstream::start("a").await;
    let https = Https::start(upstream.addr, "reload_interval = \"100ms\"");
    let mut held = https.connect(&[&TLS13]).await.unwrap();
    assert_eq!(leaf_of(&held), https.leaf);
    assert_eq!(get_over(&mut held, "/who").await, "a GET /who");

    // Replace the files in place, as certbot or an operator would: the poller picks them up.
    let (new_cert, new_key, second) = https.ca.issue(https.certs.path(), "next");
    std::fs::copy(&new_key, &https.key).unwrap();
    std::fs::copy(&new_cert, &https.cert).unwrap();
    eventually(
        Duration::from_secs(5),
        "new handshakes get the new certificate",
        || async { https.served_leaf().await == second },
    )
    .await;
    assert_eq!(
        get_over(&mut held, "/who").await,
        "a GET /who",
        "the held connection still works"
    );

    // A reload (what SIGHUP does) with a broken key keeps the old certificate and says why.
    std::fs::write(&https.key, "not a key").unwrap();
    let err = https
        .gatehouse
        .reload_with(&tls_config(upstream.addr, &https.cert, &https.key, ""))
        .unwrap_err();
    let err = err.to_string();
    assert!(
        err.contains("edge.tls.key") && err.contains("private key"),
        "{err}"
    );
    assert_eq!(https.served_leaf().await, second);
    assert_eq!(get_over(&mut held, "/who").await, "a GET /who");
}

/// A reload refused for its certificate changes nothing: the running certificate's files are still
/// the ones watched, so their renewal is picked up.
#[tokio::test]
async fn a_refused_certificate_reload_keeps_watching_the_running_files() {
    let upstream = Upstream::start("a").await;
    let https = Https::start(upstream.addr, "reload_interval = \"100ms\"");
    let missing = https.certs.path().join("missing.crt");
    let refused = tls_config(
        upstream.addr,
        &missing,
        &https.key,
        "reload_interval = \"100ms\"",
    );
    let err = https.gatehouse.reload_with(&refused).unwrap_err();
    assert!(err.to_string().contains("edge.tls.cert"), "{err}");

    let (new_cert, new_key, renewed) = https.ca.issue(https.certs.path(), "renewed");
    std::fs::copy(&new_key, &https.key).unwrap();
    std::fs::copy(&new_cert, &https.cert).unwrap();
    eventually(
        Duration::from_secs(5),
        "the renewal of the running files is picked up",
        || async { https.served_leaf().await == renewed },
    )
    .await;
}

/// Over HTTP/2 a 304 must not turn into `content-length: 0` (the resource is not empty).
#[tokio::test]
async fn http2_not_modified_keeps_no_false_length() {
    let upstream = Scripted::start(
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\nETag: \"v1\"\r\n\r\n",
    )
    .await;
    let https = Https::start(upstream.addr, "");
    let response = https
        .client()
        .build()
        .unwrap()
        .get(https.url("/page"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 304);
    let length = response
        .headers()
        .get("content-length")
        .map(|v| v.to_str().unwrap());
    assert_ne!(length, Some("0"));
    assert_eq!(response.headers()["etag"], "\"v1\"");
}

#[tokio::test]
async fn redirect_listener_sends_clients_to_https() {
    let upstream = Upstream::start("a").await;
    let https = Https::start(
        upstream.addr,
        "[edge.redirect]\nlisten = [\"127.0.0.1:0\"]\n",
    );
    let response = raw_exchange(
        https.gatehouse.redirect_addr(),
        b"POST /login?next=/home HTTP/1.1\r\nHost: example.test:8080\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status_of(&response), 308, "{response}");
    let location = format!(
        "location: https://example.test:{}/login?next=/home",
        https.gatehouse.tls_addr().port()
    );
    assert!(
        response.to_ascii_lowercase().contains(&location),
        "{response}"
    );
    assert_eq!(upstream.hits(), 0);
}

/// actix's graceful stop alone waits for idle HTTP/2 connections until the deadline; gatehouse
/// stops once the requests in flight are done.
#[tokio::test]
async fn idle_http2_connections_do_not_hold_a_shutdown() {
    let upstream = Upstream::start("a").await;
    let https = Https::start(upstream.addr, "[edge]\ndrain_timeout = \"30s\"\n");
    let client = https.client().build().unwrap();
    let warm = client.get(https.url("/who")).send().await.unwrap();
    assert_eq!(warm.version(), reqwest::Version::HTTP_2);
    let slow = tokio::spawn(client.get(https.url("/slow?ms=1000")).send());
    upstream.wait_for_hits(2).await;

    let started = std::time::Instant::now();
    https.gatehouse.begin_shutdown();
    let response = slow
        .await
        .unwrap()
        .expect("the in-flight request finishes during the drain");
    assert_eq!(response.text().await.unwrap(), "slow done");
    let Https { gatehouse, .. } = https;
    tokio::task::spawn_blocking(move || gatehouse.wait())
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown waited {:?} for an idle connection",
        started.elapsed()
    );
    drop(client);
}
