//! End-to-end tests: the real App started in-process on port 0 (or the real binary), in front of
//! real upstream servers.

// The harness is one binary: `pub` in support/ means "for the test modules", never an API.
#![allow(unreachable_pub)]

mod support;

mod acme;
mod admin_auth;
mod alerts;
mod balancing;
mod browser_cache;
mod cache;
mod cache_ops;
mod cache_shared;
mod cache_stale;
mod client_ip;
mod compression;
mod config;
mod connections;
mod example_plugins;
mod lifecycle;
mod load_test;
mod malformed;
mod metrics;
mod policies;
mod policy_tool;
mod pool;
mod pool_admin;
mod proxy;
mod rate_limit_shared;
mod recommendations;
mod reference_api;
mod security_headers;
mod static_files;
mod timeouts;
mod tls;
mod traces;
mod trends;
mod web_ui;
