//! The built-in policies: the crates in `policies/`, compiled to wasm32-wasip2 by
//! `policies/build` into `policies/dist/` (committed; CI checks they are current) and embedded.
//! They run through the same engine, limits and checks as any plugin.

use super::PluginKind;

/// A built-in policy.
pub struct Builtin {
    /// Its name, as in `source = "builtin:NAME"`.
    pub name: &'static str,
    /// The world it implements.
    pub kind: PluginKind,
    /// The component.
    pub wasm: &'static [u8],
}

/// Every built-in policy.
pub const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "rate-limit",
        kind: PluginKind::RateLimit,
        wasm: include_bytes!("../../../policies/dist/rate-limit.wasm"),
    },
    Builtin {
        name: "cache-rules",
        kind: PluginKind::CacheRules,
        wasm: include_bytes!("../../../policies/dist/cache-rules.wasm"),
    },
    Builtin {
        name: "recommendations",
        kind: PluginKind::Recommendations,
        wasm: include_bytes!("../../../policies/dist/recommendations.wasm"),
    },
];

/// The built-in called `name`.
pub fn find(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::time::Duration;

    use actix_web::http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
    use actix_web::test::TestRequest;

    use super::*;
    use crate::policy::cache_types::{KeyPart, RequestRule, Response, ResponseRule};
    use crate::policy::recommend_types::Snapshot;
    use crate::policy::{Grant, Limits, PluginSpec, PluginVersion, PolicyEngine, Request};

    fn load(engine: &PolicyEngine, builtin: &Builtin, config: &str) -> Arc<PluginVersion> {
        let spec = PluginSpec {
            name: builtin.name.into(),
            kind: builtin.kind,
            config: config.into(),
            grants: BTreeSet::from([Grant::Config]),
            limits: Limits {
                deadline: Duration::from_millis(50),
                memory_bytes: 16 << 20,
                kv_bytes: 0,
            },
        };
        engine
            .load(spec, builtin.wasm)
            .unwrap_or_else(|e| panic!("{}: {e}", builtin.name))
    }

    fn request(method: &str) -> Request {
        Request {
            method: method.into(),
            path: "/page".into(),
            query: "b=2&a=1".into(),
            host: "shop.test".into(),
            route: "site".into(),
            client_ip: "203.0.113.7".into(),
        }
    }

    #[test]
    fn every_builtin_loads_in_the_real_engine() {
        let engine = PolicyEngine::new(None).unwrap();
        for builtin in BUILTINS {
            let version = load(&engine, builtin, "{}");
            assert_eq!(version.kind, builtin.kind);
        }
    }

    #[test]
    fn cache_rules_read_the_real_request_and_response_headers() {
        let engine = PolicyEngine::new(None).unwrap();
        let rules = load(&engine, find("cache-rules").unwrap(), "{}");
        let get = TestRequest::get().uri("/page").to_http_request();
        let RequestRule::Lookup(parts) = rules.on_request(&request("GET"), Some(&get)).unwrap()
        else {
            panic!("a GET is looked up")
        };
        assert!(matches!(parts[..2], [KeyPart::Host, KeyPart::Path]));
        let authorized = TestRequest::get()
            .insert_header(("authorization", "Bearer x"))
            .to_http_request();
        assert!(matches!(
            rules
                .on_request(&request("GET"), Some(&authorized))
                .unwrap(),
            RequestRule::Bypass
        ));
        let ok = Response { status: 200 };
        let none = HeaderMap::new();
        let rule = rules
            .on_response(&request("GET"), &ok, &none, Some(&get))
            .unwrap();
        assert!(
            matches!(rule, ResponseRule::NoStore),
            "no freshness, no content type: not stored"
        );
        let mut css = HeaderMap::new();
        css.insert(CONTENT_TYPE, HeaderValue::from_static("text/css"));
        let ResponseRule::Store(store) = rules
            .on_response(&request("GET"), &ok, &css, Some(&get))
            .unwrap()
        else {
            panic!("CSS is stored")
        };
        assert_eq!(
            store.ttl_ms, 31_536_000_000,
            "the response's own headers reached the plugin"
        );
    }

    #[test]
    fn recommendations_advise_on_a_hot_snapshot() {
        let engine = PolicyEngine::new(None).unwrap();
        let advisor = load(&engine, find("recommendations").unwrap(), "{}");
        let hot = Snapshot {
            traffic: vec![],
            pools: vec![],
            slow_queries: vec![],
            cpu_percent: 93.0,
            memory_percent: 50.0,
        };
        let advice = advisor.recommend(&hot).unwrap();
        assert_eq!(advice.len(), 1);
        assert_eq!(advice[0].id, "cpu-high");
    }
}
