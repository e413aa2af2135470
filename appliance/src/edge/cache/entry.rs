//! A stored response and what decides whether it may answer a request.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use actix_web::http::header::{AGE, HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;

/// One response as stored: status, end-to-end headers and the whole body (identity).
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// When it was stored, in milliseconds since the Unix epoch (entries outlive the process).
    pub(crate) stored_at_ms: u64,
    /// Fresh for this long after `stored_at_ms`.
    pub(crate) ttl_ms: u64,
    /// The request headers it varies on, with the values the storing request had.
    pub(crate) vary: Vec<(HeaderName, Option<HeaderValue>)>,
    /// Tags to purge by.
    pub(crate) tags: Vec<String>,
    /// Whether clients get it compressed (by type and size).
    pub(crate) compressible: bool,
    /// The body in each compressed coding ([`Coding::COMPRESSED`] order), made on first demand:
    /// a hit never compresses twice.
    ///
    /// [`Coding::COMPRESSED`]: crate::edge::compress::Coding::COMPRESSED
    pub(crate) variants: [OnceLock<Bytes>; 3],
}

impl Entry {
    /// Bytes it holds, for the memory bound.
    pub(crate) fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 16)
            .sum();
        let tags: usize = self.tags.iter().map(String::len).sum();
        // Compressed variants come later and are smaller than the body: counting the body
        // twice keeps the bound honest without re-weighing entries.
        2 * self.body.len() + headers + tags + std::mem::size_of::<Self>()
    }

    /// Whether it is still fresh at `now_ms`.
    pub(crate) fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms < self.stored_at_ms.saturating_add(self.ttl_ms)
    }

    /// Whether `req` carries the same values of the varying headers as the request that stored
    /// it (RFC 9111 §4.1).
    pub(crate) fn matches(&self, req: &HttpRequest) -> bool {
        self.vary
            .iter()
            .all(|(name, value)| req.headers().get(name) == value.as_ref())
    }

    /// Its age at `now_ms`: the time it has been stored plus the age it arrived with.
    pub(crate) fn age(&self, now_ms: u64) -> Duration {
        let arrived_with = self
            .headers
            .get(AGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Duration::from_millis(now_ms.saturating_sub(self.stored_at_ms))
            + Duration::from_secs(arrived_with)
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::ACCEPT_LANGUAGE;
    use actix_web::test::TestRequest;

    use super::*;

    fn entry(vary: Vec<(HeaderName, Option<HeaderValue>)>) -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert(AGE, HeaderValue::from_static("5"));
        Entry {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(b"hello"),
            stored_at_ms: 10_000,
            ttl_ms: 2_000,
            vary,
            tags: vec!["t".into()],
            compressible: false,
            variants: Default::default(),
        }
    }

    #[test]
    fn freshness_and_age_count_from_storage_plus_the_arriving_age() {
        let entry = entry(Vec::new());
        assert!(entry.is_fresh(11_999));
        assert!(!entry.is_fresh(12_000));
        assert_eq!(entry.age(11_500), Duration::from_millis(6_500));
        assert!(entry.weight() > 5);
    }

    #[test]
    fn a_variant_answers_only_requests_with_the_same_varying_headers() {
        let french = entry(vec![(
            ACCEPT_LANGUAGE,
            Some(HeaderValue::from_static("fr")),
        )]);
        let ask = |lang: Option<&str>| {
            let mut request = TestRequest::get();
            if let Some(lang) = lang {
                request = request.insert_header((ACCEPT_LANGUAGE, lang));
            }
            french.matches(&request.to_http_request())
        };
        assert!(ask(Some("fr")));
        assert!(!ask(Some("de")));
        assert!(!ask(None));
        let none = entry(vec![(ACCEPT_LANGUAGE, None)]);
        assert!(none.matches(&TestRequest::get().to_http_request()));
    }
}
