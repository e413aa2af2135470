//! Tiered quotas by API-key prefix.
//!
//! A key's prefix names its plan: `ent_...` keys get the enterprise quota, `pro_...` the pro one,
//! and so on; the first tier whose prefix matches wins, so an empty prefix last catches the rest.
//! Each key is counted on its own, under its tier's name (which clients see in
//! `RateLimit-Policy`). Requests without a key are counted per address under the `anonymous`
//! quota, or refused with 401 when `require_key` is set. A key no tier matches is refused with
//! 403.
//! `cost` makes some methods count for more than one request.
//!
//! ```toml
//! [plugins.tiers]
//! kind = "rate-limit"
//! source = "examples/plugins/dist/tiered-quotas.wasm"
//! config = { header = "x-api-key", cost = { POST = 5 }, tiers = [
//!   { name = "enterprise", prefix = "ent_", limit = 10000, window = 60 },
//!   { name = "pro", prefix = "pro_", limit = 1000, window = 60, burst = 100 },
//! ], anonymous = { limit = 60, window = 60 } }
//! ```

use std::collections::BTreeMap;
use std::sync::OnceLock;

use gatehouse_sdk::rate_limit::{Decision, Deny, Header, Limit, Quota, RateLimitPolicy, Request};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// The request header that carries the API key.
    header: String,
    /// Checked in order; the first whose prefix the key starts with applies.
    tiers: Vec<Tier>,
    /// The quota of requests without a key, per client address.
    anonymous: Allowance,
    /// Refuse requests without a key (401) instead of counting them as anonymous.
    require_key: bool,
    /// Units a request of this method costs; others cost 1.
    cost: BTreeMap<String, u32>,
}

impl Default for Config {
    fn default() -> Self {
        let tier = |name: &str, prefix: &str, limit| Tier {
            name: name.into(),
            prefix: prefix.into(),
            limit,
            window: 60,
            burst: None,
        };
        Self {
            header: "x-api-key".into(),
            tiers: vec![
                tier("enterprise", "ent_", 10_000),
                tier("pro", "pro_", 1_000),
                tier("free", "", 100),
            ],
            anonymous: Allowance {
                limit: 20,
                window: 60,
                burst: None,
            },
            require_key: false,
            cost: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tier {
    name: String,
    prefix: String,
    limit: u32,
    /// Seconds.
    window: u32,
    burst: Option<u32>,
}

impl Tier {
    fn allowance(&self) -> Allowance {
        Allowance {
            limit: self.limit,
            window: self.window,
            burst: self.burst,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Allowance {
    limit: u32,
    /// Seconds.
    window: u32,
    /// Units that may be spent at once; defaults to `limit`.
    burst: Option<u32>,
}

impl Allowance {
    fn quota(&self, cost: u32) -> Quota {
        Quota {
            limit: self.limit,
            window_ms: self.window.saturating_mul(1000),
            burst: self.burst.unwrap_or(self.limit).max(1),
            cost,
        }
    }
}

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(gatehouse_sdk::host::config_json)
}

struct TieredQuotas;

impl TieredQuotas {
    fn decide_with(config: &Config, request: &Request) -> Decision {
        let cost = config.cost.get(&request.method).copied().unwrap_or(1);
        let Some(api_key) = request.header(&config.header) else {
            if config.require_key {
                let hint = format!("send your API key in the {} header", config.header);
                return refuse(401, &hint);
            }
            return Decision::Limit(Limit {
                key: format!("ip:{}", request.client_ip),
                quota: config.anonymous.quota(cost),
                policy: "anonymous".into(),
            });
        };
        match config
            .tiers
            .iter()
            .find(|tier| api_key.starts_with(&tier.prefix))
        {
            Some(tier) => Decision::Limit(Limit {
                key: format!("key:{api_key}"),
                quota: tier.allowance().quota(cost),
                policy: tier.name.clone(),
            }),
            None => refuse(403, "this API key belongs to no plan"),
        }
    }
}

fn refuse(status: u16, message: &str) -> Decision {
    Decision::Deny(Deny {
        status,
        headers: vec![Header {
            name: "content-type".into(),
            value: "text/plain".into(),
        }],
        body: format!("{message}\n"),
    })
}

impl RateLimitPolicy for TieredQuotas {
    fn decide(request: &Request) -> Decision {
        Self::decide_with(config(), request)
    }
}

gatehouse_sdk::rate_limit_policy!(TieredQuotas);

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_sdk::host::parse_config;
    use gatehouse_sdk::testing::MockHost;

    fn decide(config: &str, method: &str, api_key: Option<&str>) -> Decision {
        let config: Config = parse_config(config);
        let request = Request {
            method: method.into(),
            path: "/api/orders".into(),
            query: String::new(),
            host: "api.test".into(),
            route: "api".into(),
            client_ip: "203.0.113.7".into(),
        };
        let mut host = match api_key {
            Some(key) => MockHost::new().header("X-Api-Key", key),
            None => MockHost::new(),
        };
        host.run(|| TieredQuotas::decide_with(&config, &request))
    }

    fn limit(decision: Decision) -> Limit {
        match decision {
            Decision::Limit(limit) => limit,
            other => panic!("expected a limit, got {other:?}"),
        }
    }

    #[test]
    fn the_key_prefix_picks_the_tier_and_each_key_counts_alone() {
        let enterprise = limit(decide("", "GET", Some("ent_acme")));
        assert_eq!(
            (enterprise.policy.as_str(), enterprise.key.as_str()),
            ("enterprise", "key:ent_acme")
        );
        assert_eq!(enterprise.quota.limit, 10_000);
        let pro = limit(decide("", "GET", Some("pro_bob")));
        assert_eq!((pro.policy.as_str(), pro.quota.limit), ("pro", 1_000));
        let free = limit(decide("", "GET", Some("k_123")));
        assert_eq!((free.policy.as_str(), free.quota.limit), ("free", 100));
    }

    #[test]
    fn anonymous_requests_count_per_address_or_are_refused() {
        let anonymous = limit(decide("", "GET", None));
        assert_eq!(
            (anonymous.key.as_str(), anonymous.quota.limit),
            ("ip:203.0.113.7", 20)
        );
        let Decision::Deny(refused) = decide(r#"{"require_key": true}"#, "GET", None) else {
            panic!("expected a refusal")
        };
        assert_eq!(refused.status, 401);
        assert!(refused.body.contains("x-api-key"));
    }

    #[test]
    fn a_key_of_no_plan_is_refused() {
        let config = r#"{"tiers": [{"name": "pro", "prefix": "pro_", "limit": 10, "window": 1}]}"#;
        assert!(matches!(
            decide(config, "GET", Some("pro_x")),
            Decision::Limit(_)
        ));
        let Decision::Deny(refused) = decide(config, "GET", Some("other")) else {
            panic!("expected a refusal")
        };
        assert_eq!(refused.status, 403);
    }

    #[test]
    fn costly_methods_spend_more_and_burst_defaults_to_the_limit() {
        let config = r#"{"cost": {"POST": 5}, "tiers": [{"name": "t", "prefix": "", "limit": 50, "window": 10}]}"#;
        let post = limit(decide(config, "POST", Some("k")));
        assert_eq!(
            (post.quota.cost, post.quota.burst, post.quota.window_ms),
            (5, 50, 10_000)
        );
        assert_eq!(limit(decide(config, "GET", Some("k"))).quota.cost, 1);
    }

    #[test]
    #[should_panic(expected = "invalid plugin config")]
    fn a_misspelt_field_is_refused() {
        parse_config::<Config>(r#"{"teirs": []}"#);
    }
}
