//! The monitoring task: reads the metrics every `monitoring.sample_interval` and judges the
//! alert rules on that reading, and makes recommendations every `monitoring.recommend_interval`;
//! the work runs on blocking threads so the serving threads never wait for it.

use std::sync::Arc;

use tokio::time::{MissedTickBehavior, interval};
use tracing::warn;

use super::advisor::Advisor;
use super::alerts::Alerts;
use super::readings::Readings;
use crate::config::MonitoringConfig;

/// Runs until the process stops.
pub async fn run(
    readings: Arc<Readings>,
    advisor: Arc<Advisor>,
    alerts: Arc<Alerts>,
    config: &MonitoringConfig,
) {
    let mut sampling = interval(config.sample_interval);
    sampling.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut advising = interval(config.recommend_interval);
    advising.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Both fire at once: the start was read already and there is nothing to judge yet.
    sampling.tick().await;
    advising.tick().await;
    loop {
        let work = tokio::select! {
            _ = sampling.tick() => {
                let (readings, judge) = (Arc::clone(&readings), Arc::clone(&alerts));
                actix_web::web::block(move || judge.evaluate(&readings.sample()))
                    .await
                    .map(|events| alerts.notify(events))
            }
            _ = advising.tick() => {
                let advisor = Arc::clone(&advisor);
                actix_web::web::block(move || drop(advisor.refresh())).await
            }
        };
        if let Err(err) = work {
            warn!(error = %err, "monitoring task failed");
        }
    }
}
