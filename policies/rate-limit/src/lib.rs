//! The default rate-limit policy.
//!
//! Requests are counted per API key when the request carries one (header `api_key_header`),
//! otherwise per client IP. Each route may have its own quota; others get `default`. gatehouse
//! answers 429 with `Retry-After`, `RateLimit` and `RateLimit-Policy` when a quota runs out.
//!
//! Config (from the plugin's `config` table in gatehouse.toml):
//! ```toml
//! config = { api_key_header = "x-api-key", default = { limit = 100, window = 60, burst = 20 },
//!            routes = { api = { limit = 1000, window = 60 } } }
//! ```
//! `window` is in seconds; `burst` defaults to `limit`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use gatehouse_sdk::rate_limit::{Decision, Limit, Quota, RateLimitPolicy, Request};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "Config::default_header")]
    api_key_header: String,
    #[serde(default)]
    default: QuotaConfig,
    #[serde(default)]
    routes: BTreeMap<String, QuotaConfig>,
}

impl Config {
    fn default_header() -> String {
        "x-api-key".into()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaConfig {
    limit: u32,
    /// Seconds.
    window: u32,
    burst: Option<u32>,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            limit: 600,
            window: 60,
            burst: None,
        }
    }
}

impl QuotaConfig {
    fn quota(&self) -> Quota {
        Quota {
            limit: self.limit,
            window_ms: self.window.saturating_mul(1000),
            burst: self.burst.unwrap_or(self.limit).max(1),
            cost: 1,
        }
    }
}

/// The config, parsed once per instance. A config that does not parse is a deployment error:
/// the plugin traps, so gatehouse refuses it at load (smoke test) with the message.
fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(gatehouse_sdk::host::config_json)
}

struct DefaultRateLimit;

impl DefaultRateLimit {
    fn decide_with(config: &Config, request: &Request) -> Decision {
        // Joined, not format!ted: the formatting machinery was a fifth of this call's own work.
        let key = match request.header(&config.api_key_header) {
            Some(api_key) => ["key:", &api_key].concat(),
            None => ["ip:", &request.client_ip].concat(),
        };
        let (policy, quota) = match config.routes.get(&request.route) {
            Some(quota) => (request.route.clone(), quota.quota()),
            None => ("default".to_string(), config.default.quota()),
        };
        Decision::Limit(Limit { key, quota, policy })
    }
}

impl RateLimitPolicy for DefaultRateLimit {
    fn decide(request: &Request) -> Decision {
        Self::decide_with(config(), request)
    }
}

gatehouse_sdk::rate_limit_policy!(DefaultRateLimit);

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_sdk::host::parse_config;
    use gatehouse_sdk::testing::MockHost;

    fn request(route: &str) -> Request {
        Request {
            method: "GET".into(),
            path: "/x".into(),
            query: String::new(),
            host: "a.test".into(),
            route: route.into(),
            client_ip: "203.0.113.7".into(),
        }
    }

    fn decide(host: &mut MockHost, route: &str) -> Decision {
        let config = parse_config(&host.config);
        host.run(|| DefaultRateLimit::decide_with(&config, &request(route)))
    }

    #[test]
    fn counts_per_client_ip_by_default() {
        let mut host = MockHost::new();
        let Decision::Limit(limit) = decide(&mut host, "site") else {
            panic!("expected a limit")
        };
        assert_eq!(limit.key, "ip:203.0.113.7");
        assert_eq!(limit.policy, "default");
        assert_eq!(
            (limit.quota.limit, limit.quota.window_ms, limit.quota.burst),
            (600, 60_000, 600)
        );
    }

    #[test]
    fn counts_per_api_key_when_sent() {
        let mut host = MockHost::new().header("X-Api-Key", "team-a");
        let Decision::Limit(limit) = decide(&mut host, "site") else {
            panic!("expected a limit")
        };
        assert_eq!(limit.key, "key:team-a");
    }

    #[test]
    fn routes_have_their_own_quota() {
        let config = r#"{"default": {"limit": 10, "window": 1}, "routes": {"api": {"limit": 1000, "window": 60, "burst": 50}}}"#;
        let mut host = MockHost::new().config(config);
        let Decision::Limit(api) = decide(&mut host, "api") else {
            panic!("expected a limit")
        };
        assert_eq!(
            (api.policy.as_str(), api.quota.limit, api.quota.burst),
            ("api", 1000, 50)
        );
        let Decision::Limit(other) = decide(&mut host, "site") else {
            panic!("expected a limit")
        };
        assert_eq!((other.quota.limit, other.quota.window_ms), (10, 1000));
    }

    #[test]
    #[should_panic(expected = "invalid plugin config")]
    fn a_bad_config_is_refused() {
        parse_config::<Config>(r#"{"defualt": {}}"#);
    }
}
