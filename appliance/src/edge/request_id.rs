//! Request ids: the client's `X-Request-Id` when it sent a sane one, otherwise a new one made of
//! this instance's id and a counter (unique per instance, no syscall or RNG per request).

use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::http::header::{HeaderMap, HeaderValue};

use super::proxy::X_REQUEST_ID;

/// Longest client-supplied id kept.
const MAX_LEN: usize = 200;

/// Makes request ids for one gatehouse instance.
pub struct RequestIds {
    instance: String,
    next: AtomicU64,
}

impl RequestIds {
    /// `instance` distinguishes this gatehouse from others behind the same load balancer.
    pub fn new(instance: u64) -> Self {
        Self {
            instance: format!("{instance:016x}"),
            next: AtomicU64::new(1),
        }
    }

    /// The id of a request with these headers.
    pub fn for_request(&self, headers: &HeaderMap) -> HeaderValue {
        if let Some(given) = headers.get(&X_REQUEST_ID)
            && is_sane(given)
        {
            return given.clone();
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{}-{n:08x}", self.instance))
            .expect("hex is a valid header value")
    }
}

/// Visible ASCII without spaces or quotes, and not too long: safe to log and to pass on.
fn is_sane(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_sane_client_id_and_replaces_junk() {
        let ids = RequestIds::new(0xabc);
        let mut headers = HeaderMap::new();
        headers.insert(X_REQUEST_ID.clone(), HeaderValue::from_static("trace-123"));
        assert_eq!(ids.for_request(&headers), "trace-123");
        headers.insert(X_REQUEST_ID.clone(), HeaderValue::from_static("has space"));
        assert_eq!(ids.for_request(&headers), "0000000000000abc-00000001");
        assert_eq!(
            ids.for_request(&HeaderMap::new()),
            "0000000000000abc-00000002"
        );
    }
}
