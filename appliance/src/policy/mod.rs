//! Policy plugins: sandboxed WebAssembly components that decide rate limits, cache rules and
//! recommendations. The contract is `policies/wit/policy.wit` (`gatehouse:policy@0.1.0`).
//!
//! A plugin decides; gatehouse does the mechanics (counting, storing, answering). Plugins run on
//! the request path, so: one engine, components compiled once (and cached in the state store),
//! a warm instance per worker thread, an epoch deadline and a memory cap on every call. A plugin
//! that traps or hangs is cut off and counted, and its fallback answers; the process never
//! crashes or hangs because of one.
//!
//! This module owns loading and calling plugins; what a decision means for a request is the
//! edge's business (`edge::ratelimit`, and the cache).

mod bindings;
pub mod builtin;
mod engine;
mod host;
mod plugin;
mod registry;
mod settings;
mod stdio;
pub mod tool;

pub use engine::{CONTRACT_VERSION, Inspection, LoadError, MAX_MEMORY, PluginSpec, PolicyEngine};
pub use plugin::{
    CallError, Fallback, Plugin, PluginKind, PluginStats, PluginVersion, Request, cache_types,
    rate_limit_types, recommend_types,
};
pub use registry::{Plugins, Prepared, source_stamps};
pub use settings::{Grant, Limits};
