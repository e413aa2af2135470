//! A stored response and what decides whether it may answer a request.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use actix_web::http::header::{
    AGE, CONTENT_ENCODING, CONTENT_LENGTH, ETAG, HeaderMap, HeaderName, HeaderValue, LAST_MODIFIED,
    TRANSFER_ENCODING,
};
use bytes::Bytes;

use crate::policy::cache_types::Store;

/// How long past its freshness an entry with validators is kept for revalidation (nginx's
/// `inactive` default); the size bounds evict cold entries sooner.
pub(crate) const REVALIDATION_KEEP_MS: u64 = 10 * 60 * 1000;

/// One response as stored: status, end-to-end headers and the whole body (identity).
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// When it was stored, in milliseconds since the Unix epoch (entries outlive the process).
    pub(crate) stored_at_ms: u64,
    /// How long from `stored_at_ms` it is fresh and servable stale, and its purge tags.
    pub(crate) fresh: Freshness,
    /// The host the request named, to purge a whole site by.
    pub(crate) host: String,
    /// The request headers it varies on, with the values the storing request had.
    pub(crate) vary: Vec<(HeaderName, Option<HeaderValue>)>,
    /// Whether clients get it compressed (by type and size).
    pub(crate) compressible: bool,
    /// The body in each compressed coding ([`Coding::COMPRESSED`] order), made on first demand:
    /// a hit never compresses twice.
    ///
    /// [`Coding::COMPRESSED`]: crate::edge::compress::Coding::COMPRESSED
    pub(crate) variants: [OnceLock<Bytes>; 3],
    /// Requests it answered while in memory (for the admin API's top keys).
    pub(crate) hits: AtomicU64,
}

impl Entry {
    /// Bytes it holds in memory, for the memory tier's bound. Compressed variants come later
    /// and are smaller than the body: counting the body twice keeps the bound honest without
    /// re-weighing entries.
    pub(crate) fn weight(&self) -> usize {
        self.body.len() + self.stored_size() + std::mem::size_of::<Self>()
    }

    /// Bytes it takes stored (about: the persistent tier's bound).
    pub(crate) fn stored_size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 16)
            .sum();
        let tags: usize = self.fresh.tags.iter().map(String::len).sum();
        self.body.len() + headers + tags + self.host.len() + 64
    }

    /// Whether it is still fresh at `now_ms`.
    pub(crate) fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms < self.stale_at_ms()
    }

    /// Whether, stale, it may answer at `now_ms` while a background refresh runs (RFC 5861 §3).
    pub(crate) fn may_answer_while_revalidating(&self, now_ms: u64) -> bool {
        now_ms
            < self
                .stale_at_ms()
                .saturating_add(self.fresh.stale_while_revalidate_ms)
    }

    /// Whether, stale, it may answer at `now_ms` because the upstream failed (RFC 5861 §4).
    pub(crate) fn may_answer_on_error(&self, now_ms: u64) -> bool {
        now_ms
            < self
                .stale_at_ms()
                .saturating_add(self.fresh.stale_if_error_ms)
    }

    /// Whether a stale copy can be revalidated with a conditional request.
    pub(crate) fn has_validators(&self) -> bool {
        self.headers.contains_key(ETAG) || self.headers.contains_key(LAST_MODIFIED)
    }

    /// How much longer it stays fresh at `now_ms` (0 once stale).
    pub(crate) fn fresh_for_ms(&self, now_ms: u64) -> u64 {
        self.stale_at_ms().saturating_sub(now_ms)
    }

    /// How long it has been stale at `now_ms` (0 while fresh).
    pub(crate) fn stale_for_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.stale_at_ms())
    }

    fn stale_at_ms(&self) -> u64 {
        self.stored_at_ms.saturating_add(self.fresh.ttl_ms)
    }

    /// Until when it is worth keeping: through its stale windows, and while a conditional
    /// request may still revalidate it (a 304 costs the upstream no body): at least
    /// [`REVALIDATION_KEEP_MS`] or one more lifetime.
    pub(crate) fn keep_until_ms(&self) -> u64 {
        let fresh = &self.fresh;
        let revalidation = if self.has_validators() {
            fresh.ttl_ms.max(REVALIDATION_KEEP_MS)
        } else {
            0
        };
        let extra = fresh
            .stale_while_revalidate_ms
            .max(fresh.stale_if_error_ms)
            .max(revalidation);
        self.stale_at_ms().saturating_add(extra)
    }

    /// This entry refreshed by a `304 Not Modified` at `now_ms`: the 304's fields replace the
    /// stored ones (RFC 9111 §4.3.4), except those that describe the stored body's bytes. Its
    /// freshness is none until the caller sets what the plugin says of the refreshed response.
    pub(crate) fn refreshed(&self, not_modified: &HeaderMap, now_ms: u64) -> Self {
        let mut headers = self.headers.clone();
        for name in not_modified.keys() {
            if [CONTENT_LENGTH, CONTENT_ENCODING, TRANSFER_ENCODING].contains(name) {
                continue;
            }
            headers.remove(name);
            for value in not_modified.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        Self {
            status: self.status,
            headers,
            body: self.body.clone(),
            stored_at_ms: now_ms,
            fresh: Freshness::default(),
            host: self.host.clone(),
            vary: self.vary.clone(),
            compressible: self.compressible,
            variants: self.variants.clone(),
            // A revalidated entry keeps counting where it left off.
            hits: AtomicU64::new(self.hits.load(std::sync::atomic::Ordering::Relaxed)),
        }
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

/// How long a response stays fresh and may be served stale, and its purge tags: what the
/// plugin said when it was stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Freshness {
    /// Fresh for this long.
    pub(crate) ttl_ms: u64,
    /// Once stale, it may still answer for this long while one background refresh runs.
    pub(crate) stale_while_revalidate_ms: u64,
    /// Once stale, it may still answer for this long when the upstream fails.
    pub(crate) stale_if_error_ms: u64,
    /// Tags to purge by.
    pub(crate) tags: Vec<String>,
}

impl Freshness {
    /// What the plugin's `store` says, less its varying headers.
    pub(crate) fn of(store: &Store) -> Self {
        Self {
            ttl_ms: store.ttl_ms,
            stale_while_revalidate_ms: store.stale_while_revalidate_ms,
            stale_if_error_ms: store.stale_if_error_ms,
            tags: store.tags.clone(),
        }
    }
}

/// Something a tier keeps until a known time.
pub(crate) trait Kept {
    /// Milliseconds since the Unix epoch after which it is useless.
    fn keep_until_ms(&self) -> u64;
}

impl Kept for Entry {
    fn keep_until_ms(&self) -> u64 {
        Entry::keep_until_ms(self)
    }
}

/// The expiry of a tier's entries: each goes once it is useless (no longer fresh, servable
/// stale or revalidatable), so a tier holds no dead weight until the size bound evicts it.
pub(crate) struct UntilUseless;

impl<V: Kept> moka::Expiry<Arc<str>, Arc<V>> for UntilUseless {
    fn expire_after_create(&self, _: &Arc<str>, value: &Arc<V>, _: Instant) -> Option<Duration> {
        Some(Duration::from_millis(
            value.keep_until_ms().saturating_sub(now_ms()),
        ))
    }

    fn expire_after_update(
        &self,
        key: &Arc<str>,
        value: &Arc<V>,
        updated_at: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, value, updated_at)
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
            fresh: Freshness {
                ttl_ms: 2_000,
                stale_while_revalidate_ms: 1_000,
                stale_if_error_ms: 5_000,
                tags: vec!["t".into()],
            },
            host: "shop.test".into(),
            vary,
            compressible: false,
            variants: Default::default(),
            hits: Default::default(),
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
    fn stale_windows_count_from_the_end_of_freshness() {
        let entry = entry(Vec::new());
        assert!(entry.may_answer_while_revalidating(12_999));
        assert!(!entry.may_answer_while_revalidating(13_000));
        assert!(entry.may_answer_on_error(16_999));
        assert!(!entry.may_answer_on_error(17_000));
        assert_eq!(entry.keep_until_ms(), 17_000, "the widest stale window");
    }

    #[test]
    fn a_304_refreshes_the_fields_and_freshness_but_keeps_the_body() {
        let mut stale = entry(Vec::new());
        stale
            .headers
            .insert(ETAG, HeaderValue::from_static("\"v1\""));
        stale
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert_eq!(
            stale.keep_until_ms(),
            12_000 + REVALIDATION_KEEP_MS,
            "kept for revalidation"
        );
        let mut not_modified = HeaderMap::new();
        not_modified.insert(ETAG, HeaderValue::from_static("\"v1\""));
        not_modified.insert(AGE, HeaderValue::from_static("0"));
        not_modified.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        let mut refreshed = stale.refreshed(&not_modified, 20_000);
        assert!(
            !refreshed.is_fresh(20_000),
            "fresh only once the plugin says so"
        );
        refreshed.fresh.ttl_ms = 60_000;
        assert!(refreshed.is_fresh(79_999));
        assert_eq!(refreshed.headers.get(AGE).unwrap(), "0");
        assert_eq!(
            refreshed.headers.get(CONTENT_LENGTH).unwrap(),
            "5",
            "the stored body's length"
        );
        assert_eq!(refreshed.body, stale.body);
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
