//! Gatehouse: one binary in front of a web app and its PostgreSQL.
//!
//! | module | owns |
//! |--------|------|
//! | [`config`] | the typed config, layering, validation, error locations |
//! | [`app`] | assembling subsystems from a config; lifecycle (start, reload, drain) |
//! | [`edge`] | public listeners, TLS, the request phases, proxying |
//! | [`upstream`] | upstream groups: servers, health checks, ejection, balancing, pools |
//! | [`pool`] | the PostgreSQL pooler: wire protocol, auth, server pools, prepared statements |
//! | [`store`] | the embedded state store behind a narrow trait |
//! | `redis` | the link to Redis that the shared cache tier and shared rate limits use |
//! | [`monitor`] | health reports, metrics, trends, alerts, recommendations |
//! | `operations` | requests to the serving thread (reload, plugin upload) and the config in force |
//! | [`telemetry`] | process and access logs |
//!
//! `main.rs` only parses the CLI and calls [`App`]; tests start the same [`App`] on port 0.

pub mod acme;
mod admin;
pub mod app;
pub mod config;
pub mod edge;
mod file_stamp;
pub mod loadtest;
pub mod monitor;
mod operations;
pub mod policy;
pub mod pool;
pub mod probe;
mod redis;
pub mod store;
mod systemd;
pub mod telemetry;
pub mod upstream;

pub use admin::{RotateError, RotateFailure, rotate_token};
pub use app::{App, AppError, RunningApp};
