//! Never cache logged-in visitors; key everyone else on a normalised query.
//!
//! A request that carries one of the session cookies (or an `Authorization` header) is personal:
//! it bypasses the cache both ways. Anonymous `GET`s and `HEAD`s are looked up under host, path
//! and the query with tracking parameters (`utm_*`, `fbclid`, `gclid`, ...) and empty values
//! dropped and the rest sorted, so `?b=2&utm_source=x&a=1` and `?a=1&b=2` share one entry.
//! Responses are kept `ttl` seconds unless they set a cookie or say `no-store` or `private`;
//! each is tagged with its first path segment (`/products/7` → `products`) for purges.
//!
//! ```toml
//! [plugins.pages]
//! kind = "cache-rules"
//! source = "examples/plugins/dist/logged-in-bypass.wasm"
//! config = { session_cookies = ["sessionid", "remember_me"], ttl = 120 }
//! ```

use std::sync::OnceLock;

use gatehouse_sdk::cache::{
    CachePolicy, KeyPart, Request, RequestRule, Response, ResponseRule, Store,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// Cookies that mean someone is logged in.
    session_cookies: Vec<String>,
    /// Query parameters that never change the page; a name ending in `*` is a prefix.
    ignored_params: Vec<String>,
    /// Seconds a response stays fresh.
    ttl: u64,
    /// Seconds a stale copy may answer while the upstream is down.
    stale_if_error: u64,
}

impl Default for Config {
    fn default() -> Self {
        let names = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        Self {
            session_cookies: names(&["session", "sessionid", "_session_id", "remember_token"]),
            ignored_params: names(&["utm_*", "fbclid", "gclid", "msclkid", "mc_cid", "mc_eid"]),
            ttl: 300,
            stale_if_error: 3600,
        }
    }
}

impl Config {
    fn ignores(&self, param: &str) -> bool {
        self.ignored_params
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => param.starts_with(prefix),
                None => param == pattern,
            })
    }

    /// The query as it matters for the page: ignored parameters and empty values (`a=`)
    /// dropped, the rest sorted by name (stably, so a repeated name keeps its values' order).
    fn normalised_query(&self, query: &str) -> String {
        let mut params: Vec<(&str, &str)> = query
            .split('&')
            .map(|pair| (pair.split_once('=').map_or(pair, |(name, _)| name), pair))
            .filter(|&(name, pair)| !name.is_empty() && !pair.ends_with('=') && !self.ignores(name))
            .collect();
        params.sort_by_key(|&(name, _)| name);
        let pairs: Vec<&str> = params.iter().map(|&(_, pair)| pair).collect();
        pairs.join("&")
    }
}

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(gatehouse_sdk::host::config_json)
}

struct LoggedInBypass;

impl LoggedInBypass {
    fn on_request_with(config: &Config, request: &Request) -> RequestRule {
        let logged_in = config
            .session_cookies
            .iter()
            .any(|name| request.cookie(name).is_some())
            || request.header("authorization").is_some();
        if logged_in || !matches!(request.method.as_str(), "GET" | "HEAD") {
            return RequestRule::Bypass;
        }
        let query = config.normalised_query(&request.query);
        RequestRule::Lookup(vec![KeyPart::Host, KeyPart::Path, KeyPart::Literal(query)])
    }

    fn on_response_with(config: &Config, request: &Request, response: &Response) -> ResponseRule {
        let cache_control = response
            .header("cache-control")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let personal = response.header("set-cookie").is_some()
            || cache_control.contains("no-store")
            || cache_control.contains("private");
        if personal || !matches!(response.status, 200 | 301 | 404) {
            return ResponseRule::NoStore;
        }
        let section = request
            .path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        ResponseRule::Store(Store {
            ttl_ms: config.ttl * 1000,
            stale_while_revalidate_ms: 0,
            stale_if_error_ms: config.stale_if_error * 1000,
            vary: Vec::new(),
            tags: vec![if section.is_empty() {
                "home".into()
            } else {
                section.to_string()
            }],
        })
    }
}

impl CachePolicy for LoggedInBypass {
    fn on_request(request: &Request) -> RequestRule {
        Self::on_request_with(config(), request)
    }

    fn on_response(request: &Request, response: &Response) -> ResponseRule {
        Self::on_response_with(config(), request, response)
    }
}

gatehouse_sdk::cache_policy!(LoggedInBypass);

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_sdk::testing::MockHost;

    fn request(method: &str, path: &str, query: &str) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            host: "shop.test".into(),
            route: "site".into(),
            client_ip: "203.0.113.7".into(),
        }
    }

    fn key(host: &mut MockHost, query: &str) -> Option<String> {
        let config = Config::default();
        match host
            .run(|| LoggedInBypass::on_request_with(&config, &request("GET", "/products", query)))
        {
            RequestRule::Lookup(parts) => match parts.as_slice() {
                [KeyPart::Host, KeyPart::Path, KeyPart::Literal(query)] => Some(query.clone()),
                other => panic!("unexpected key {other:?}"),
            },
            RequestRule::Bypass => None,
        }
    }

    #[test]
    fn tracking_parameters_and_order_do_not_split_the_cache() {
        let mut host = MockHost::new();
        let plain = key(&mut host, "b=2&a=1").unwrap();
        assert_eq!(plain, "a=1&b=2");
        assert_eq!(
            key(&mut host, "utm_source=news&a=1&fbclid=x&b=2&empty=").unwrap(),
            plain
        );
        assert_eq!(
            key(&mut host, "print&a=1").unwrap(),
            "a=1&print",
            "flags count"
        );
        assert_eq!(key(&mut host, "").unwrap(), "");
        assert_eq!(
            key(&mut host, "tag=x&tag=a").unwrap(),
            "tag=x&tag=a",
            "repeats keep their order"
        );
    }

    #[test]
    fn logged_in_visitors_and_writes_bypass() {
        assert_eq!(
            key(&mut MockHost::new().cookie("sessionid", "abc"), "a=1"),
            None
        );
        assert_eq!(
            key(
                &mut MockHost::new().header("Authorization", "Bearer t"),
                "a=1"
            ),
            None
        );
        assert!(key(&mut MockHost::new().cookie("theme", "dark"), "a=1").is_some());
        let post = MockHost::new().run(|| {
            LoggedInBypass::on_request_with(&Config::default(), &request("POST", "/cart", ""))
        });
        assert!(matches!(post, RequestRule::Bypass));
    }

    fn on_response(host: &mut MockHost, path: &str, status: u16) -> ResponseRule {
        host.run(|| {
            LoggedInBypass::on_response_with(
                &Config::default(),
                &request("GET", path, ""),
                &Response { status },
            )
        })
    }

    #[test]
    fn responses_are_stored_with_their_section_tag_unless_personal() {
        let ResponseRule::Store(store) = on_response(&mut MockHost::new(), "/products/7", 200)
        else {
            panic!("expected a store")
        };
        assert_eq!(
            (store.ttl_ms, store.stale_if_error_ms),
            (300_000, 3_600_000)
        );
        assert_eq!(store.tags, ["products"]);
        let ResponseRule::Store(home) = on_response(&mut MockHost::new(), "/", 200) else {
            panic!()
        };
        assert_eq!(home.tags, ["home"]);

        let mut cookie = MockHost::new().response_header("Set-Cookie", "cart=1");
        assert!(matches!(
            on_response(&mut cookie, "/p", 200),
            ResponseRule::NoStore
        ));
        let mut private = MockHost::new().response_header("Cache-Control", "Private, max-age=60");
        assert!(matches!(
            on_response(&mut private, "/p", 200),
            ResponseRule::NoStore
        ));
        assert!(matches!(
            on_response(&mut MockHost::new(), "/p", 500),
            ResponseRule::NoStore
        ));
    }
}
