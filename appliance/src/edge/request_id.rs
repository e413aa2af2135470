//! Request ids: the client's `X-Request-Id` when it sent a sane one, otherwise a new one made of
//! this instance's id and a counter (unique per instance, no syscall or RNG per request).

use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::http::header::{HeaderMap, HeaderValue};

use super::proxy::X_REQUEST_ID;

/// Longest client-supplied id kept.
const MAX_LEN: usize = 200;

/// Makes request ids for one gatehouse instance: `INSTANCE-COUNTER`, 16 hex digits each.
pub struct RequestIds {
    instance: u64,
    next: AtomicU64,
}

impl RequestIds {
    /// `instance` distinguishes this gatehouse from others behind the same load balancer.
    pub fn new(instance: u64) -> Self {
        Self {
            instance,
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
        // Hex digits by hand: the formatter costs more than the rest of this function.
        let mut id = [b'-'; 33];
        write_hex(self.instance, &mut id[..16]);
        write_hex(n, &mut id[17..]);
        HeaderValue::from_bytes(&id).expect("hex digits and a dash are a valid header value")
    }
}

/// `value` as 16 lowercase hex digits.
fn write_hex(value: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = DIGITS[((value >> (60 - 4 * i)) & 0xf) as usize];
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
        assert_eq!(
            ids.for_request(&headers),
            "0000000000000abc-0000000000000001"
        );
        assert_eq!(
            ids.for_request(&HeaderMap::new()),
            "0000000000000abc-0000000000000002"
        );
    }
}
