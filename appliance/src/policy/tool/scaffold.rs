//! `gatehouse policy new KIND NAME`: a plugin crate that builds, tests and loads as it is. The
//! SDK and the WIT contract are written into it from copies embedded in this binary, so the
//! crate needs nothing but crates.io and a Rust toolchain with the wasm32-wasip2 target.

use std::path::{Path, PathBuf};

use super::ToolError;
use crate::policy::PluginKind;

/// The SDK's sources and the contract, as this gatehouse was built with them.
const SDK_FILES: &[(&str, &str)] = &[
    ("src/lib.rs", include_str!("../../../../sdk/src/lib.rs")),
    ("src/host.rs", include_str!("../../../../sdk/src/host.rs")),
    (
        "src/testing.rs",
        include_str!("../../../../sdk/src/testing.rs"),
    ),
    (
        "src/rate_limit.rs",
        include_str!("../../../../sdk/src/rate_limit.rs"),
    ),
    ("src/cache.rs", include_str!("../../../../sdk/src/cache.rs")),
    (
        "src/recommend.rs",
        include_str!("../../../../sdk/src/recommend.rs"),
    ),
    (
        "wit/policy.wit",
        include_str!("../../../../policies/wit/policy.wit"),
    ),
];

const SDK_MANIFEST: &str = r#"[package]
name = "gatehouse-sdk"
description = "Write gatehouse policy plugins in Rust (written here by `gatehouse policy new`)"
version = "0.1.0"
edition = "2024"
publish = false

[features]
rate-limit = []
cache-rules = []
recommendations = []

[dependencies]
serde = "1.0.229"
serde_json = "1.0.154"
wit-bindgen = "0.63.0"
"#;

/// Writes a new plugin crate `name` of `kind` under `parent`; returns its directory.
pub fn new_plugin(kind: PluginKind, name: &str, parent: &Path) -> Result<PathBuf, ToolError> {
    let valid = !name.is_empty()
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid {
        return Err(ToolError::Usage(format!(
            "{name:?}: use lowercase letters, digits, - and _, starting with a letter"
        )));
    }
    let dir = parent.join(name);
    if dir.exists() {
        return Err(ToolError::Usage(format!(
            "{} already exists",
            dir.display()
        )));
    }
    let write = |path: &str, text: &str| -> Result<(), ToolError> {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("files are in a directory"))
            .and_then(|()| std::fs::write(&path, text))
            .map_err(|err| ToolError::Io(path.display().to_string(), err))
    };
    write("Cargo.toml", &manifest(kind, name))?;
    write("src/lib.rs", &source(kind).replace("{name}", name))?;
    write(
        "fixtures/example.json",
        &fixture(kind).replace("{name}", name),
    )?;
    write(".gitignore", "/target\n")?;
    write("gatehouse-sdk/Cargo.toml", SDK_MANIFEST)?;
    for (path, text) in SDK_FILES {
        write(&format!("gatehouse-sdk/{path}"), text)?;
    }
    Ok(dir)
}

fn manifest(kind: PluginKind, name: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
gatehouse-sdk = {{ path = "gatehouse-sdk", features = ["{kind}"] }}

[profile.release]
lto = true
codegen-units = 1
strip = true

[workspace]
"#
    )
}

fn source(kind: PluginKind) -> &'static str {
    match kind {
        PluginKind::RateLimit => RATE_LIMIT,
        PluginKind::CacheRules => CACHE_RULES,
        PluginKind::Recommendations => RECOMMENDATIONS,
    }
}

fn fixture(kind: PluginKind) -> &'static str {
    match kind {
        PluginKind::RateLimit => {
            r#"{
  "calls": [
    { "request": { "path": "/api/orders", "client_ip": "203.0.113.7" },
      "expect": { "Limit": { "key": "ip:203.0.113.7" } } },
    { "request": { "path": "/api/orders", "headers": { "x-api-key": "team-a" } },
      "expect": { "Limit": { "key": "key:team-a", "quota": { "limit": 100 } } } }
  ]
}
"#
        }
        PluginKind::CacheRules => {
            r#"{
  "calls": [
    { "request": { "path": "/products", "query": "page=2&sort=price" },
      "response": { "status": 200, "headers": { "cache-control": "max-age=60" } },
      "expect": { "on_response": { "Store": { "ttl_ms": 60000 } } } },
    { "request": { "path": "/cart", "cookies": { "session": "abc" } },
      "expect": "Bypass" }
  ]
}
"#
        }
        PluginKind::Recommendations => {
            r#"{
  "calls": [
    { "snapshot": { "traffic": [], "pools": [], "slow_queries": [], "cpu_percent": 85.0, "memory_percent": 40.0 },
      "expect": [{ "id": "{name}:cpu", "severity": "Warning" }] },
    { "snapshot": { "traffic": [], "pools": [], "slow_queries": [], "cpu_percent": 20.0, "memory_percent": 40.0 },
      "expect": [] }
  ]
}
"#
        }
    }
}

const RATE_LIMIT: &str = r#"//! {name}: a rate-limit policy for gatehouse.
//!
//! `gatehouse policy build` builds it; `gatehouse policy test <wasm> --fixture fixtures/example.json`
//! runs it in the real host; `cargo test` runs the tests below against a mock host.

use gatehouse_sdk::rate_limit::{Decision, Limit, Quota, RateLimitPolicy, Request};

struct Policy;

impl RateLimitPolicy for Policy {
    fn decide(request: &Request) -> Decision {
        // Count per API key when the client sends one, otherwise per address.
        let key = match request.header("x-api-key") {
            Some(api_key) => format!("key:{api_key}"),
            None => format!("ip:{}", request.client_ip),
        };
        let quota = Quota { limit: 100, window_ms: 60_000, burst: 20, cost: 1 };
        Decision::Limit(Limit { key, quota, policy: "{name}".into() })
    }
}

gatehouse_sdk::rate_limit_policy!(Policy);

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_sdk::testing::MockHost;

    fn request() -> Request {
        Request {
            method: "GET".into(),
            path: "/api/orders".into(),
            query: String::new(),
            host: "example.com".into(),
            route: "api".into(),
            client_ip: "203.0.113.7".into(),
        }
    }

    #[test]
    fn counts_per_api_key_or_address() {
        let Decision::Limit(by_ip) = MockHost::new().run(|| Policy::decide(&request())) else { panic!() };
        assert_eq!(by_ip.key, "ip:203.0.113.7");
        let mut host = MockHost::new().header("X-Api-Key", "team-a");
        let Decision::Limit(by_key) = host.run(|| Policy::decide(&request())) else { panic!() };
        assert_eq!(by_key.key, "key:team-a");
    }
}
"#;

const CACHE_RULES: &str = r#"//! {name}: cache rules for gatehouse.
//!
//! `gatehouse policy build` builds it; `gatehouse policy test <wasm> --fixture fixtures/example.json`
//! runs it in the real host; `cargo test` runs the tests below against a mock host.

use gatehouse_sdk::cache::{CachePolicy, KeyPart, QueryPart, Request, RequestRule, Response, ResponseRule, Store};

struct Policy;

impl CachePolicy for Policy {
    fn on_request(request: &Request) -> RequestRule {
        // Logged-in pages are personal: never cached.
        if request.method != "GET" || request.cookie("session").is_some() {
            return RequestRule::Bypass;
        }
        RequestRule::Lookup(vec![KeyPart::Host, KeyPart::Path, KeyPart::Query(QueryPart::Normalised)])
    }

    fn on_response(_request: &Request, response: &Response) -> ResponseRule {
        if response.status != 200 || response.header("set-cookie").is_some() {
            return ResponseRule::NoStore;
        }
        ResponseRule::Store(Store {
            ttl_ms: 60_000,
            stale_while_revalidate_ms: 10_000,
            stale_if_error_ms: 600_000,
            vary: Vec::new(),
            tags: Vec::new(),
        })
    }
}

gatehouse_sdk::cache_policy!(Policy);

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_sdk::testing::MockHost;

    fn request() -> Request {
        Request {
            method: "GET".into(),
            path: "/products".into(),
            query: "page=2".into(),
            host: "example.com".into(),
            route: "site".into(),
            client_ip: "203.0.113.7".into(),
        }
    }

    #[test]
    fn logged_in_requests_bypass_the_cache() {
        let mut host = MockHost::new().cookie("session", "abc");
        assert!(matches!(host.run(|| Policy::on_request(&request())), RequestRule::Bypass));
        assert!(matches!(MockHost::new().run(|| Policy::on_request(&request())), RequestRule::Lookup(_)));
    }
}
"#;

const RECOMMENDATIONS: &str = r#"//! {name}: recommendations for gatehouse.
//!
//! `gatehouse policy build` builds it; `gatehouse policy test <wasm> --fixture fixtures/example.json`
//! runs it in the real host; `cargo test` runs the tests below against a mock host.

use gatehouse_sdk::recommend::{RecommendPolicy, Recommendation, Severity, Snapshot};

struct Policy;

impl RecommendPolicy for Policy {
    fn recommend(snapshot: &Snapshot) -> Vec<Recommendation> {
        if snapshot.cpu_percent <= 80.0 {
            return Vec::new();
        }
        vec![Recommendation {
            id: "{name}:cpu".into(),
            severity: Severity::Warning,
            title: format!("CPU at {:.0}%", snapshot.cpu_percent),
            detail: "Add a CPU, or another instance behind the load balancer.".into(),
            suggested_change: None,
        }]
    }
}

gatehouse_sdk::recommend_policy!(Policy);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advises_above_80_percent_cpu() {
        let snapshot = |cpu| Snapshot { traffic: vec![], pools: vec![], slow_queries: vec![], cpu_percent: cpu, memory_percent: 10.0 };
        assert!(Policy::recommend(&snapshot(50.0)).is_empty());
        assert_eq!(Policy::recommend(&snapshot(90.0)).len(), 1);
    }
}
"#;
