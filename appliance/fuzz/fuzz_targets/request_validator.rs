//! The request validator on whatever the HTTP/1 parser the edge uses lets through: it must never
//! panic, and a path it passes must decode without NUL and stay under the root.
//!
//! `cargo fuzz run request_validator -s none` (from `appliance/`); CI runs it for a bounded time.

#![no_main]

use actix_codec::Decoder;
use actix_http::h1::{Codec, Message};
use actix_http::{HttpMessage, ServiceConfig};
use actix_web::test::TestRequest;
use bytes::BytesMut;
use gatehouse::config::EdgeConfig;
use gatehouse::edge::validate::{RequestLimits, check_request};
use libfuzzer_sys::fuzz_target;
use percent_encoding::percent_decode_str;

thread_local! {
    /// The parser's settings, made once: making them starts actix's date service, which needs
    /// a local task set to spawn on (it is never run here; parsing needs no date).
    static SETTINGS: ServiceConfig = {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        tokio::task::LocalSet::new().block_on(&runtime, async { ServiceConfig::default() })
    };
}

fuzz_target!(|data: &[u8]| {
    let mut buffer = BytesMut::from(data);
    let mut codec = SETTINGS.with(|settings| Codec::new(settings.clone()));
    let Ok(Some(Message::Item(head))) = codec.decode(&mut buffer) else {
        return;
    };
    let mut request = TestRequest::default()
        .method(head.method().clone())
        .uri(&head.uri().to_string())
        .version(head.version());
    for (name, value) in head.headers() {
        request = request.append_header((name.clone(), value.clone()));
    }
    let req = request.to_http_request();
    let limits = RequestLimits::new(&EdgeConfig::default());
    if check_request(&req, &limits).is_ok() {
        assert!(
            stays_under_root(req.path()),
            "passed a path that climbs or holds NUL: {:?}",
            req.path()
        );
    }
});

/// A second, plain reading of the rule: decode each segment, refuse NUL, count depth.
fn stays_under_root(path: &str) -> bool {
    let mut depth: i64 = 0;
    for segment in path.split('/').skip(1) {
        let decoded: Vec<u8> = percent_decode_str(segment).collect();
        if decoded.contains(&0) {
            return false;
        }
        match decoded.as_slice() {
            b"" | b"." => {}
            b".." => depth -= 1,
            _ => depth += 1,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}
