//! The monitoring task: reads the metrics every `monitoring.sample_interval` and judges the
//! alert rules on that reading, makes recommendations every `monitoring.recommend_interval`,
//! and records the trends every finest trend step. The work runs on blocking threads so the
//! serving threads never wait for it.

use std::future::pending;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::{Interval, MissedTickBehavior, interval};
use tracing::warn;

use super::Monitors;
use crate::config::MonitoringConfig;

/// Runs until the process stops.
pub async fn run(monitors: Monitors, config: &MonitoringConfig) {
    let mut sampling = ticker(config.sample_interval).await;
    let mut advising = ticker(config.recommend_interval).await;
    let mut recording = match &monitors.trends {
        Some(trends) => Some(ticker(trends.interval()).await),
        None => None,
    };
    loop {
        let Monitors {
            readings,
            advisor,
            alerts,
            trends,
            ..
        } = monitors.clone();
        let work = tokio::select! {
            _ = sampling.tick() => {
                let judge = Arc::clone(&alerts);
                actix_web::web::block(move || judge.evaluate(&readings.sample()))
                    .await
                    .map(|events| alerts.notify(events))
            }
            _ = advising.tick() => {
                actix_web::web::block(move || drop(advisor.refresh())).await
            }
            _ = async {
                match recording.as_mut() {
                    Some(recording) => recording.tick().await,
                    None => pending().await,
                }
            } => {
                actix_web::web::block(move || {
                    if let Some(trends) = trends {
                        trends.record(&readings.render(), SystemTime::now());
                    }
                })
                .await
            }
        };
        if let Err(err) = work {
            warn!(error = %err, "monitoring task failed");
        }
    }
}

/// An interval that skips missed ticks, past its first (immediate) tick: the start was read
/// already.
async fn ticker(period: std::time::Duration) -> Interval {
    let mut ticker = interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker.tick().await;
    ticker
}
