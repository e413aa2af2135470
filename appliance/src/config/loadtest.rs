//! `[load_test]`: the built-in load test on a schedule, against configured URLs only.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::durations;

/// Scheduled load tests (`gatehouse bench` runs one by hand).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadTestConfig {
    /// Run them. Default `false`.
    pub enabled: bool,
    /// Time between runs; the first comes one interval after start. Default `"1h"`.
    #[serde(with = "durations")]
    pub interval: Duration,
    /// The URLs loaded, one after another; nothing else is. Default: none.
    pub urls: Vec<String>,
    /// Concurrent clients, one level after another. Default `[5, 20, 50]` (the reference
    /// deployment's light, medium and heavy loads).
    pub levels: Vec<usize>,
    /// How long each level lasts. Default `"10s"`.
    #[serde(with = "durations")]
    pub duration: Duration,
    /// Time one request may take before it counts as failed. Default `"10s"`.
    #[serde(with = "durations")]
    pub timeout: Duration,
    /// Runs kept (`GET /api/v1/load-tests`). Default `48`.
    pub history: usize,
}

impl Default for LoadTestConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            interval: Duration::from_secs(3600),
            urls: Vec::new(),
            levels: vec![5, 20, 50],
            duration: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
            history: 48,
        }
    }
}
