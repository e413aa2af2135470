//! The default cache rules.
//!
//! - Only GET and HEAD are looked up; a request with `Cache-Control: no-store`, or with
//!   `Authorization` (unless `store_with_authorization`), bypasses the cache.
//! - The key is host + path + the query with its parameters sorted, plus any headers or cookies
//!   named in `key_headers` / `key_cookies`.
//! - A response is stored only with a cacheable status, no `Set-Cookie` (unless
//!   `store_with_set_cookie`), no `Cache-Control: no-store` or `private`, and no `Vary: *`.
//! - Its freshness comes from `s-maxage`, then `max-age`, then `Expires` − `Date`; without any,
//!   from `ttl_by_content_type` (longest matching prefix); without a match it is not stored.
//!   `stale-while-revalidate` and `stale-if-error` directives (or the config's defaults) give the
//!   stale windows; `Vary` gives the varying request headers; `Cache-Tag` / `Surrogate-Key` give
//!   the purge tags.
//!
//! Config (all optional; TTLs in seconds), e.g.
//! ```toml
//! config = { ttl_by_content_type = { "text/html" = 300, "text/css" = 31536000 },
//!            stale_if_error = 3600, key_cookies = ["lang"] }
//! ```

use std::collections::BTreeMap;
use std::sync::OnceLock;

use gatehouse_sdk::cache::{
    CachePolicy, KeyPart, QueryPart, Request, RequestRule, Response, ResponseRule, Store,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    store_with_set_cookie: bool,
    store_with_authorization: bool,
    /// Seconds of freshness by content-type prefix, for responses that give none.
    ttl_by_content_type: BTreeMap<String, u64>,
    /// Stale windows, in seconds, when the response's Cache-Control gives none.
    stale_while_revalidate: u64,
    stale_if_error: u64,
    key_headers: Vec<String>,
    key_cookies: Vec<String>,
}

impl Default for Config {
    /// The reference deployment's browser-caching rules: HTML 5 minutes, CSS, JavaScript and
    /// fonts a year, images six months.
    fn default() -> Self {
        let ttl = [
            ("text/html", 300),
            ("text/css", 31_536_000),
            ("application/javascript", 31_536_000),
            ("text/javascript", 31_536_000),
            ("font/", 31_536_000),
            ("image/", 15_552_000),
        ];
        Self {
            store_with_set_cookie: false,
            store_with_authorization: false,
            ttl_by_content_type: ttl.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            stale_while_revalidate: 0,
            stale_if_error: 0,
            key_headers: Vec::new(),
            key_cookies: Vec::new(),
        }
    }
}

/// Statuses a shared cache may store (RFC 9110 §15.1 heuristically cacheable ones).
const CACHEABLE: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(gatehouse_sdk::host::config_json)
}

struct DefaultCacheRules;

impl DefaultCacheRules {
    fn on_request_with(config: &Config, request: &Request) -> RequestRule {
        if request.method != "GET" && request.method != "HEAD" {
            return RequestRule::Bypass;
        }
        if directives(request.header("cache-control").as_deref())
            .any(|(name, _)| name == "no-store")
        {
            return RequestRule::Bypass;
        }
        if !config.store_with_authorization && request.header("authorization").is_some() {
            return RequestRule::Bypass;
        }
        let mut key = vec![
            KeyPart::Host,
            KeyPart::Path,
            KeyPart::Query(QueryPart::Normalised),
        ];
        key.extend(config.key_headers.iter().cloned().map(KeyPart::Header));
        key.extend(config.key_cookies.iter().cloned().map(KeyPart::Cookie));
        RequestRule::Lookup(key)
    }

    fn on_response_with(config: &Config, request: &Request, response: &Response) -> ResponseRule {
        if !CACHEABLE.contains(&response.status) {
            return ResponseRule::NoStore;
        }
        if !config.store_with_set_cookie && response.header("set-cookie").is_some() {
            return ResponseRule::NoStore;
        }
        if !config.store_with_authorization && request.header("authorization").is_some() {
            return ResponseRule::NoStore;
        }
        let cache_control = response.header("cache-control");
        let mut max_age = None;
        let mut shared_max_age = None;
        let mut stale_while_revalidate = config.stale_while_revalidate;
        let mut stale_if_error = config.stale_if_error;
        for (name, value) in directives(cache_control.as_deref()) {
            let seconds = value.and_then(|v| v.parse::<u64>().ok());
            match name.as_str() {
                "no-store" | "private" => return ResponseRule::NoStore,
                // Stored, but to be revalidated before every use.
                "no-cache" => max_age = Some(0),
                "max-age" => max_age = max_age.or(seconds),
                "s-maxage" => shared_max_age = seconds,
                "stale-while-revalidate" => {
                    stale_while_revalidate = seconds.unwrap_or(stale_while_revalidate)
                }
                "stale-if-error" => stale_if_error = seconds.unwrap_or(stale_if_error),
                _ => {}
            }
        }
        let vary = response.header("vary").unwrap_or_default();
        if vary.split(',').any(|v| v.trim() == "*") {
            return ResponseRule::NoStore;
        }
        let ttl = shared_max_age
            .or(max_age)
            .or_else(|| expires_in(response))
            .or_else(|| by_content_type(config, response));
        let Some(ttl) = ttl else {
            return ResponseRule::NoStore;
        };
        let vary = vary
            .split(',')
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|v| !v.is_empty() && v != "accept-encoding")
            .collect();
        ResponseRule::Store(Store {
            ttl_ms: ttl.saturating_mul(1000),
            stale_while_revalidate_ms: stale_while_revalidate.saturating_mul(1000),
            stale_if_error_ms: stale_if_error.saturating_mul(1000),
            vary,
            tags: tags(response),
        })
    }
}

impl CachePolicy for DefaultCacheRules {
    fn on_request(request: &Request) -> RequestRule {
        Self::on_request_with(config(), request)
    }

    fn on_response(request: &Request, response: &Response) -> ResponseRule {
        Self::on_response_with(config(), request, response)
    }
}

gatehouse_sdk::cache_policy!(DefaultCacheRules);

/// `Cache-Control` directives as (lowercase name, value without quotes).
fn directives(header: Option<&str>) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    header
        .unwrap_or_default()
        .split(',')
        .filter(|d| !d.trim().is_empty())
        .map(|directive| {
            let (name, value) = match directive.split_once('=') {
                Some((name, value)) => (name, Some(value.trim().trim_matches('"').to_string())),
                None => (directive, None),
            };
            (name.trim().to_ascii_lowercase(), value)
        })
}

/// Seconds from `Date` to `Expires`; an unparsable or past `Expires` means already stale
/// (RFC 9111 §5.3). Without `Date` there is no wall clock to compare with (plugins have none), so
/// `Expires` gives nothing and the content-type rule decides.
fn expires_in(response: &Response) -> Option<u64> {
    let expires = response.header("expires")?;
    let date = httpdate::parse_http_date(&response.header("date")?).ok()?;
    let Ok(expires) = httpdate::parse_http_date(&expires) else {
        return Some(0);
    };
    Some(expires.duration_since(date).map_or(0, |d| d.as_secs()))
}

fn by_content_type(config: &Config, response: &Response) -> Option<u64> {
    let content_type = response.header("content-type")?.to_ascii_lowercase();
    config
        .ttl_by_content_type
        .iter()
        .filter(|(prefix, _)| content_type.starts_with(prefix.as_str()))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, ttl)| *ttl)
}

fn tags(response: &Response) -> Vec<String> {
    ["cache-tag", "surrogate-key"]
        .iter()
        .filter_map(|name| response.header(name))
        .flat_map(|value| {
            value
                .split([',', ' '])
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_sdk::host::parse_config;
    use gatehouse_sdk::testing::MockHost;

    fn get(method: &str) -> Request {
        Request {
            method: method.into(),
            path: "/page".into(),
            query: "b=2&a=1".into(),
            host: "shop.test".into(),
            route: "site".into(),
            client_ip: "203.0.113.7".into(),
        }
    }

    fn on_request(host: &mut MockHost, method: &str) -> RequestRule {
        let config = parse_config(&host.config);
        host.run(|| DefaultCacheRules::on_request_with(&config, &get(method)))
    }

    fn on_response(host: &mut MockHost, status: u16) -> ResponseRule {
        let config = parse_config(&host.config);
        host.run(|| DefaultCacheRules::on_response_with(&config, &get("GET"), &Response { status }))
    }

    fn stored(rule: ResponseRule) -> Store {
        match rule {
            ResponseRule::Store(store) => store,
            ResponseRule::NoStore => panic!("expected the response to be stored"),
        }
    }

    #[test]
    fn looks_up_gets_under_host_path_and_sorted_query() {
        let rule = on_request(&mut MockHost::new(), "GET");
        let RequestRule::Lookup(parts) = rule else {
            panic!("expected a lookup")
        };
        assert_eq!(parts.len(), 3);
        assert!(matches!(parts[2], KeyPart::Query(QueryPart::Normalised)));
        assert!(matches!(
            on_request(&mut MockHost::new(), "POST"),
            RequestRule::Bypass
        ));
    }

    #[test]
    fn bypasses_no_store_and_authorization_and_keys_on_configured_cookies() {
        let mut no_store = MockHost::new().header("Cache-Control", "no-store");
        assert!(matches!(
            on_request(&mut no_store, "GET"),
            RequestRule::Bypass
        ));
        let mut authorized = MockHost::new().header("Authorization", "Bearer x");
        assert!(matches!(
            on_request(&mut authorized, "GET"),
            RequestRule::Bypass
        ));
        let mut allowed = MockHost::new()
            .header("Authorization", "Bearer x")
            .config(r#"{"store_with_authorization": true, "key_cookies": ["lang"]}"#);
        let RequestRule::Lookup(parts) = on_request(&mut allowed, "GET") else {
            panic!("expected a lookup")
        };
        assert!(matches!(&parts[3], KeyPart::Cookie(c) if c == "lang"));
    }

    #[test]
    fn cache_control_gives_the_ttl_and_stale_windows() {
        let mut host = MockHost::new().response_header(
            "Cache-Control",
            "public, max-age=60, s-maxage=120, stale-while-revalidate=30, stale-if-error=600",
        );
        let store = stored(on_response(&mut host, 200));
        assert_eq!(
            (
                store.ttl_ms,
                store.stale_while_revalidate_ms,
                store.stale_if_error_ms
            ),
            (120_000, 30_000, 600_000)
        );
    }

    #[test]
    fn private_no_store_set_cookie_and_vary_star_are_never_stored() {
        for (name, value) in [
            ("cache-control", "private, max-age=60"),
            ("cache-control", "no-store"),
            ("set-cookie", "s=1"),
            ("vary", "*"),
        ] {
            let mut host = MockHost::new()
                .response_header(name, value)
                .response_header("content-type", "text/html");
            assert!(
                matches!(on_response(&mut host, 200), ResponseRule::NoStore),
                "{name}: {value}"
            );
        }
        let mut uncacheable = MockHost::new().response_header("cache-control", "max-age=60");
        assert!(matches!(
            on_response(&mut uncacheable, 500),
            ResponseRule::NoStore
        ));
    }

    #[test]
    fn expires_minus_date_gives_the_ttl() {
        let mut host = MockHost::new()
            .response_header("Date", "Sun, 22 Nov 2026 10:00:00 GMT")
            .response_header("Expires", "Sun, 22 Nov 2026 10:05:00 GMT");
        assert_eq!(stored(on_response(&mut host, 200)).ttl_ms, 300_000);
        let mut invalid = MockHost::new()
            .response_header("Date", "Sun, 22 Nov 2026 10:00:00 GMT")
            .response_header("Expires", "0");
        assert_eq!(
            stored(on_response(&mut invalid, 200)).ttl_ms,
            0,
            "an invalid Expires is already stale"
        );
    }

    #[test]
    fn content_types_get_their_ttl_when_the_response_gives_none() {
        let mut css = MockHost::new().response_header("content-type", "text/css; charset=utf-8");
        assert_eq!(stored(on_response(&mut css, 200)).ttl_ms, 31_536_000_000);
        let mut png = MockHost::new().response_header("content-type", "image/png");
        assert_eq!(stored(on_response(&mut png, 200)).ttl_ms, 15_552_000_000);
        let mut json = MockHost::new().response_header("content-type", "application/json");
        assert!(
            matches!(on_response(&mut json, 200), ResponseRule::NoStore),
            "no rule for JSON: not stored"
        );
    }

    #[test]
    fn vary_and_tags_are_passed_on() {
        let mut host = MockHost::new()
            .response_header("cache-control", "max-age=10")
            .response_header("vary", "Accept-Encoding, Accept-Language")
            .response_header("cache-tag", "product-7, catalog");
        let store = stored(on_response(&mut host, 200));
        assert_eq!(store.vary, ["accept-language"]);
        assert_eq!(store.tags, ["product-7", "catalog"]);
    }
}
