//! What a client's `Cache-Control` (or HTTP/1.0 `Pragma: no-cache`) asks of the cache
//! (RFC 9111 §5.2.1): `no-cache`, `max-age`, `min-fresh` and `max-stale` limit which entries may
//! answer, `only-if-cached` forbids going upstream, `no-store` forbids storing the answer.
//! Unknown directives and malformed values are ignored, as the RFC allows.

use actix_web::http::header::{CACHE_CONTROL, HeaderMap, PRAGMA};

/// The client's limits; the default (no header) limits nothing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientDirectives {
    pub(crate) no_store: bool,
    pub(crate) only_if_cached: bool,
    no_cache: bool,
    max_age: Option<u64>,
    /// `max-stale` without a value accepts any staleness.
    max_stale: Option<u64>,
    min_fresh: Option<u64>,
}

impl ClientDirectives {
    /// The directives in `headers`.
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let mut asks = Self::default();
        let mut any = false;
        let directives = headers
            .get_all(CACHE_CONTROL)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .take(64);
        for directive in directives {
            any = true;
            let (name, value) = match directive.split_once('=') {
                Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            let seconds = value.and_then(|v| v.parse::<u64>().ok());
            match name.to_ascii_lowercase().as_str() {
                "no-cache" => asks.no_cache = true,
                "no-store" => asks.no_store = true,
                "only-if-cached" => asks.only_if_cached = true,
                "max-age" => asks.max_age = seconds.or(asks.max_age),
                "min-fresh" => asks.min_fresh = seconds.or(asks.min_fresh),
                "max-stale" => {
                    asks.max_stale = match value {
                        None => Some(u64::MAX),
                        Some(_) => seconds.or(asks.max_stale),
                    }
                }
                _ => {}
            }
        }
        // RFC 9111 §5.4: Pragma counts only when there is no Cache-Control.
        if !any {
            asks.no_cache = headers
                .get_all(PRAGMA)
                .filter_map(|v| v.to_str().ok())
                .any(|v| {
                    v.split(',')
                        .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
                });
        }
        asks
    }

    /// Whether a fresh entry `age_ms` old, fresh for `fresh_left_ms` more, may answer.
    /// (Milliseconds, and strictly younger: `max-age=0` always asks for a revalidation, as
    /// clients mean it.)
    pub(crate) fn accept_fresh(&self, age_ms: u64, fresh_left_ms: u64) -> bool {
        !self.no_cache
            && self
                .max_age
                .is_none_or(|max| age_ms < max.saturating_mul(1000))
            && self
                .min_fresh
                .is_none_or(|min| fresh_left_ms >= min.saturating_mul(1000))
    }

    /// Whether an entry `age_ms` old and stale for `stale_ms` may answer because the client
    /// accepts staleness (`max-stale`).
    pub(crate) fn accept_stale(&self, age_ms: u64, stale_ms: u64) -> bool {
        !self.no_cache
            && self
                .max_age
                .is_none_or(|max| age_ms < max.saturating_mul(1000))
            && self
                .max_stale
                .is_some_and(|max| stale_ms <= max.saturating_mul(1000))
    }

    /// Whether the cache may answer stale while revalidating on its own account
    /// (`stale-while-revalidate`): only when the client set no freshness limit.
    pub(crate) fn allow_background_revalidation(&self) -> bool {
        !self.no_cache && self.max_age.is_none() && self.min_fresh.is_none()
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;

    use super::*;

    fn asks(pairs: &[(&str, &'static str)]) -> ClientDirectives {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(name.parse().unwrap(), HeaderValue::from_static(value));
        }
        ClientDirectives::of(&headers)
    }

    #[test]
    fn each_directive_limits_what_may_answer() {
        let none = asks(&[]);
        assert!(none.accept_fresh(1_000_000, 0) && none.allow_background_revalidation());
        assert!(!none.accept_stale(0, 1));
        assert!(!asks(&[("cache-control", "no-cache")]).accept_fresh(0, 60_000));
        let max_age = asks(&[("cache-control", "max-age=10")]);
        assert!(max_age.accept_fresh(9_999, 1) && !max_age.accept_fresh(10_000, 1));
        assert!(!asks(&[("cache-control", "max-age=0")]).accept_fresh(0, 60_000));
        assert!(!max_age.allow_background_revalidation());
        let min_fresh = asks(&[("cache-control", "min-fresh=30")]);
        assert!(min_fresh.accept_fresh(0, 30_000) && !min_fresh.accept_fresh(0, 29_999));
        let stale = asks(&[("cache-control", "max-stale=5")]);
        assert!(stale.accept_stale(100_000, 5_000) && !stale.accept_stale(100_000, 5_001));
        assert!(asks(&[("cache-control", "max-stale")]).accept_stale(0, u64::MAX / 2));
        let both = asks(&[("cache-control", "no-store, only-if-cached")]);
        assert!(both.no_store && both.only_if_cached);
    }

    #[test]
    fn pragma_counts_only_without_cache_control_and_junk_is_ignored() {
        assert!(!asks(&[("pragma", "no-cache")]).accept_fresh(0, 1));
        assert!(asks(&[("pragma", "no-cache"), ("cache-control", "max-stale")]).accept_fresh(0, 1));
        let junk = asks(&[("cache-control", "max-age=abc, ,,, =, min-fresh=-1, x=\"")]);
        assert_eq!(junk, ClientDirectives::default());
    }
}
