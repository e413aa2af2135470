//! Compression through the real edge: cache hits from variants compressed once, everything else
//! compressed as it streams; each coding decodes back to the identical bytes.

use std::io::Read;

use crate::support::{Gatehouse, Upstream, client};

fn decode(coding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => flate2::read::GzDecoder::new(bytes).read_to_end(&mut out),
        "br" => brotli::Decompressor::new(bytes, 4096).read_to_end(&mut out),
        "zstd" => zstd::stream::read::Decoder::new(bytes)
            .unwrap()
            .read_to_end(&mut out),
        other => panic!("unexpected coding {other}"),
    }
    .unwrap();
    out
}

fn site(upstream: &Upstream) -> String {
    format!(
        r#"
[plugins.pages]
kind = "cache-rules"
source = "builtin:cache-rules"

[[routes]]
path = "/"
upstream = "app"
cache = "pages"

[[routes]]
name = "live"
path = "/live/"
upstream = "app"
strip_prefix = true

[upstreams.app]
servers = ["{}"]
"#,
        upstream.addr
    )
}

#[tokio::test]
async fn hits_and_streams_decode_back_to_the_same_bytes_in_every_coding() {
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&site(&upstream));
    let http = client(None);
    let fetch = |path: &str, accept: Option<&'static str>| {
        let mut request = http.get(gatehouse.url(path));
        if let Some(accept) = accept {
            request = request.header("accept-encoding", accept);
        }
        request.send()
    };
    for path in ["/cached/page?pad=20000", "/live/cached/page?pad=20000"] {
        let plain = fetch(path, None).await.unwrap();
        assert!(plain.headers().get("content-encoding").is_none(), "{path}");
        assert!(
            plain.headers()["vary"]
                .to_str()
                .unwrap()
                .contains("Accept-Encoding")
        );
        let plain = plain.bytes().await.unwrap();
        for (accept, coding) in [
            ("gzip", "gzip"),
            ("gzip, br", "br"),
            ("zstd, gzip;q=0.5", "zstd"),
        ] {
            for _ in 0..2 {
                let response = fetch(path, Some(accept)).await.unwrap();
                assert_eq!(
                    response.headers()["content-encoding"],
                    coding,
                    "{path} {accept}"
                );
                if let Some(etag) = response.headers().get("etag") {
                    assert!(
                        etag.to_str().unwrap().starts_with("W/"),
                        "an encoded ETag is weak"
                    );
                }
                let compressed = response.bytes().await.unwrap();
                assert!(
                    compressed.len() < plain.len() / 4,
                    "{path} {coding}: {} bytes",
                    compressed.len()
                );
                // The live upstream echoes the Accept-Encoding it got (the cache asked for
                // identity, so a cached body has the same echo every time).
                let expected = if path.starts_with("/live/") {
                    let plain = String::from_utf8(plain.to_vec()).unwrap();
                    plain
                        .replacen("pad=20000 ", &format!("pad=20000 {accept}"), 1)
                        .into_bytes()
                } else {
                    plain.to_vec()
                };
                assert!(
                    decode(coding, &compressed) == expected,
                    "{path} {coding}: decoded differs"
                );
            }
        }
    }
    assert_eq!(
        upstream.hits(),
        1 + 7,
        "one fill for the cached page; every live request went up"
    );
}

#[tokio::test]
async fn small_bodies_and_unlisted_types_stay_identity() {
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&site(&upstream));
    let http = client(None);
    for path in ["/live/cached/small", "/live/headers", "/cached/small"] {
        let response = http
            .get(gatehouse.url(path))
            .header("accept-encoding", "gzip, br, zstd")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers().get("content-encoding").is_none(),
            "{path}"
        );
    }
}
