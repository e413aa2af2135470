//! Host bindings for `policies/wit/policy.wit`, generated once here. The three worlds share their
//! host interfaces: the rate-limit world's are generated and the others reuse them (`with`), so
//! each host interface has one Rust trait.

// Generated code.
#![allow(missing_docs, unreachable_pub, clippy::all)]

pub(crate) mod rate_limit {
    wasmtime::component::bindgen!({
        path: "../policies/wit",
        world: "rate-limit",
        additional_derives: [serde::Serialize, serde::Deserialize],
    });
}

pub(crate) mod cache_rules {
    wasmtime::component::bindgen!({
        path: "../policies/wit",
        world: "cache-rules",
        additional_derives: [serde::Serialize, serde::Deserialize],
        with: {
            "gatehouse:policy/types": super::rate_limit::gatehouse::policy::types,
            "gatehouse:policy/request-headers": super::rate_limit::gatehouse::policy::request_headers,
            "gatehouse:policy/log": super::rate_limit::gatehouse::policy::log,
            "gatehouse:policy/clock": super::rate_limit::gatehouse::policy::clock,
            "gatehouse:policy/kv": super::rate_limit::gatehouse::policy::kv,
            "gatehouse:policy/plugin-config": super::rate_limit::gatehouse::policy::plugin_config,
        },
    });
}

pub(crate) mod recommendations {
    wasmtime::component::bindgen!({
        path: "../policies/wit",
        world: "recommendations",
        additional_derives: [serde::Serialize, serde::Deserialize],
        with: {
            "gatehouse:policy/log": super::rate_limit::gatehouse::policy::log,
            "gatehouse:policy/clock": super::rate_limit::gatehouse::policy::clock,
            "gatehouse:policy/kv": super::rate_limit::gatehouse::policy::kv,
            "gatehouse:policy/plugin-config": super::rate_limit::gatehouse::policy::plugin_config,
        },
    });
}

pub(crate) use rate_limit::gatehouse::policy as shared;
