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
pub const BUILTINS: &[Builtin] = &[Builtin {
    name: "rate-limit",
    kind: PluginKind::RateLimit,
    wasm: include_bytes!("../../../policies/dist/rate-limit.wasm"),
}];

/// The built-in called `name`.
pub fn find(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}
