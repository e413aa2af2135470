//! Active health checks: a GET to every server of a group on an interval, with rise/fall
//! thresholds so one slow answer does not flap a server.

use std::sync::{Arc, Weak};

use futures_util::future::join_all;
use tracing::{info, warn};

use super::UpstreamGroup;
use crate::config::HealthCheckConfig;

/// Largest check response body read (and discarded) so the connection can be reused.
const MAX_CHECK_BODY: usize = 64 * 1024;

/// Starts the checks of `group` on the current (actix) runtime, if it has any configured. The
/// task holds only a weak reference: it ends by itself once a reload replaces the group.
pub fn spawn_checks(group: &Arc<UpstreamGroup>) {
    if let Some(check) = group.config.health_check.clone() {
        actix_rt::spawn(run(Arc::downgrade(group), check));
    }
}

async fn run(group: Weak<UpstreamGroup>, check: HealthCheckConfig) {
    let client = awc::Client::builder()
        .connector(awc::Connector::new().timeout(check.timeout))
        .disable_redirects()
        .timeout(check.timeout)
        .finish();
    // Positive: passes in a row; negative: failures in a row.
    let mut streaks: Vec<i64> = Vec::new();
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(group) = group.upgrade() else { return };
        streaks.resize(group.peers.len(), 0);
        let probes = group.peers.iter().map(|peer| probe(&client, peer, &check));
        let results = join_all(probes).await;
        for ((peer, streak), result) in group.peers.iter().zip(&mut streaks).zip(results) {
            *streak = match (&result, *streak) {
                (Ok(()), s) if s > 0 => s + 1,
                (Ok(()), _) => 1,
                (Err(_), s) if s < 0 => s - 1,
                (Err(_), _) => -1,
            };
            if *streak >= i64::from(check.rise) && peer.health.set_up(true) {
                info!(upstream = %group.name, server = %peer.addr, "server passed its health checks: back in rotation");
            }
            if let Err(why) = result
                && -*streak >= i64::from(check.fall)
                && peer.health.set_up(false)
            {
                warn!(upstream = %group.name, server = %peer.addr, reason = %why, "server failed its health checks: out of rotation");
            }
        }
    }
}

async fn probe(
    client: &awc::Client,
    peer: &super::Peer,
    check: &HealthCheckConfig,
) -> Result<(), String> {
    let path = check
        .path
        .parse()
        .map_err(|_| format!("bad check path {:?}", check.path))?;
    let mut response = client
        .get(peer.uri(path))
        .insert_header(("host", peer.authority().as_str()))
        .send()
        .await
        .map_err(|err| err.to_string())?;
    let status = response.status();
    // Reading the body lets the connection be reused for the next check.
    let _ = response.body().limit(MAX_CHECK_BODY).await;
    if status.is_success() || status.is_redirection() {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}
