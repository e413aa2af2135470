//! Write gatehouse policy plugins in Rust.
//!
//! A plugin implements one trait and registers it with one macro:
//!
//! | kind | feature | trait | macro |
//! |------|---------|-------|-------|
//! | rate limit | `rate-limit` | [`rate_limit::RateLimitPolicy`] | [`rate_limit_policy!`] |
//! | cache rules | `cache-rules` | [`cache::CachePolicy`] | [`cache_policy!`] |
//! | recommendations | `recommendations` | [`recommend::RecommendPolicy`] | [`recommend_policy!`] |
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the `.wasm` is a component for the
//! `gatehouse:policy@0.1.0` contract (`policies/wit/policy.wit`). On any other target the host
//! calls go to [`testing::MockHost`], so the same crate is unit-tested with plain `cargo test`.

pub mod host;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

/// `header` and `cookie` on a world's `Request` (each world's bindings make their own type).
#[cfg(any(feature = "cache-rules", feature = "rate-limit"))]
macro_rules! request_accessors {
    () => {
        impl Request {
            /// The first value of request header `name` (any case).
            pub fn header(&self, name: &str) -> Option<String> {
                crate::host::request_header(name)
            }

            /// The value of cookie `name`.
            pub fn cookie(&self, name: &str) -> Option<String> {
                crate::host::request_cookie(name)
            }
        }
    };
}

#[cfg(feature = "cache-rules")]
pub mod cache;
#[cfg(feature = "rate-limit")]
pub mod rate_limit;
#[cfg(feature = "recommendations")]
pub mod recommend;

#[cfg(all(
    target_arch = "wasm32",
    feature = "cache-rules",
    not(feature = "rate-limit")
))]
use cache::bindings::gatehouse::policy as wit;
/// The bindings the host functions call on wasm32: any enabled world provides the shared imports.
#[cfg(all(target_arch = "wasm32", feature = "rate-limit"))]
use rate_limit::bindings::gatehouse::policy as wit;
#[cfg(all(
    target_arch = "wasm32",
    feature = "recommendations",
    not(any(feature = "rate-limit", feature = "cache-rules"))
))]
use recommend::bindings::gatehouse::policy as wit;
