//! `[trends]`: every metric kept as time series in the state store, coarser as it ages.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::durations;

/// Time series of every metric.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrendsConfig {
    /// Record them. Default `true`.
    pub enabled: bool,
    /// Resolutions, finest first: a point every `step`, kept for `keep`. Default 1 s for 1 hour,
    /// 1 minute for 7 days, 1 hour for 90 days.
    pub tiers: Vec<TrendTier>,
    /// Series recorded at most (a series is one metric with one set of labels); more are not
    /// recorded, so that disk use stays bounded. Default `5000`.
    pub max_series: usize,
}

impl Default for TrendsConfig {
    fn default() -> Self {
        let tier = |step, keep| TrendTier {
            step: Duration::from_secs(step),
            keep: Duration::from_secs(keep),
        };
        Self {
            enabled: true,
            tiers: vec![
                tier(1, 3600),
                tier(60, 7 * 24 * 3600),
                tier(3600, 90 * 24 * 3600),
            ],
            max_series: 5000,
        }
    }
}

/// One resolution of the trends.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrendTier {
    /// Time between points (whole seconds).
    #[serde(with = "durations")]
    pub step: Duration,
    /// How long points are kept.
    #[serde(with = "durations")]
    pub keep: Duration,
}
