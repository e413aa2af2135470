//! Active health checks: a GET to every server of a group on an interval, with rise/fall
//! thresholds so one slow answer does not flap a server.

use std::rc::Rc;
use std::sync::{Arc, Weak};

use actix_http::RequestHead;
use actix_web::http::Uri;
use actix_web::http::header::{HOST, HeaderValue};
use futures_util::StreamExt;
use futures_util::future::join_all;
use tracing::{info, warn};

use super::UpstreamGroup;
use super::client::{Answer, Outgoing, Pool};
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
    // Positive: passes in a row; negative: failures in a row.
    let mut streaks: Vec<i64> = Vec::new();
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(group) = group.upgrade() else { return };
        let pool = group.pool();
        streaks.resize(group.peers.len(), 0);
        let probes = (0..group.peers.len()).map(|index| probe(&pool, &group, index, &check));
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
    pool: &Rc<Pool>,
    group: &UpstreamGroup,
    index: usize,
    check: &HealthCheckConfig,
) -> Result<(), String> {
    let peer = &group.peers[index];
    let mut head = RequestHead::default();
    head.uri = check
        .path
        .parse::<Uri>()
        .map_err(|_| format!("bad check path {:?}", check.path))?;
    if let Ok(host) = HeaderValue::from_str(peer.authority().as_str()) {
        head.headers.insert(HOST, host);
    }
    let exchange = async {
        match pool.send(index, &peer.addr, head, Outgoing::empty()).await {
            Ok(Answer::Response(head, mut body)) => {
                // Reading the body lets the connection be reused for the next check.
                let mut read = 0;
                while let Some(Ok(chunk)) = body.next().await {
                    read += chunk.len();
                    if read > MAX_CHECK_BODY {
                        break;
                    }
                }
                let status = head.status;
                if status.is_success() || status.is_redirection() {
                    Ok(())
                } else {
                    Err(format!("status {status}"))
                }
            }
            Ok(Answer::Upgraded(..)) => Err("unexpected 101".to_string()),
            Err(err) => Err(err.to_string()),
        }
    };
    tokio::time::timeout(check.timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {:?}", check.timeout))?
}
