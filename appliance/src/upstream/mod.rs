//! Upstream groups: their servers, health, load balancing and connection pools.
//!
//! Owns everything about reaching the servers behind gatehouse; what to send them is the edge's
//! business (see [`crate::edge`]).

mod balance;
mod connect;
mod health;
mod peer;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

pub use balance::PickContext;
pub use health::spawn_checks;
pub use peer::{InFlight, Peer, PeerHealth, PeerStatus, clock_ms};

use balance::Balancer;

use crate::config::UpstreamConfig;

/// A named group of interchangeable servers.
pub struct UpstreamGroup {
    /// Name from the config.
    pub name: String,
    /// Its settings (timeouts, retries, ejection).
    pub config: UpstreamConfig,
    /// The servers.
    pub peers: Vec<Peer>,
    balancer: Balancer,
}

/// A snapshot of a group for `/healthz`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupStatus {
    /// Servers that can take traffic.
    pub available: usize,
    /// Each server.
    pub servers: Vec<PeerStatus>,
}

impl UpstreamGroup {
    /// Builds a group. Servers that were in `previous` (same address) keep their health state, so
    /// a reload neither forgets an ejection nor resurrects a failed server.
    pub fn build(name: &str, config: &UpstreamConfig, previous: Option<&UpstreamGroup>) -> Self {
        let peers: Vec<Peer> = config
            .servers
            .iter()
            .map(|server| {
                let health = previous
                    .and_then(|group| group.peers.iter().find(|p| p.addr == server.addr()))
                    .map(|p| Arc::clone(&p.health))
                    .unwrap_or_default();
                Peer::new(server.addr(), server.weight(), health)
            })
            .collect();
        let balancer = Balancer::new(config, &peers);
        Self {
            name: name.to_string(),
            config: config.clone(),
            peers,
            balancer,
        }
    }

    /// Picks a server for a request, skipping the ones in `tried`.
    pub fn select(&self, request: &PickContext<'_>, tried: &[usize]) -> Option<usize> {
        self.balancer.pick(&self.peers, request, tried, clock_ms())
    }

    /// Whether any server can take traffic now.
    pub fn any_available(&self) -> bool {
        let now = clock_ms();
        self.peers.iter().any(|p| p.health.is_available(now))
    }

    /// Health of every server.
    pub fn status(&self) -> GroupStatus {
        let servers: Vec<PeerStatus> = self
            .peers
            .iter()
            .map(|p| p.health.status(&p.addr))
            .collect();
        GroupStatus {
            available: servers.iter().filter(|s| s.available).count(),
            servers,
        }
    }

    /// This worker thread's HTTP client for the group: its own keep-alive pool, limits and
    /// timeouts. awc clients are not `Send`, so each worker keeps one per live group.
    pub fn client(self: &Arc<Self>) -> awc::Client {
        thread_local! {
            static CLIENTS: RefCell<Vec<(Weak<UpstreamGroup>, awc::Client)>> =
                const { RefCell::new(Vec::new()) };
        }
        CLIENTS.with_borrow_mut(|clients| {
            let me = Arc::as_ptr(self);
            if let Some((_, client)) = clients
                .iter()
                .find(|(group, _)| group.as_ptr() == me && group.strong_count() > 0)
            {
                return client.clone();
            }
            // Groups replaced by a reload drop their pools here.
            clients.retain(|(group, _)| group.strong_count() > 0);
            let client = build_client(&self.config);
            clients.push((Arc::downgrade(self), client.clone()));
            client
        })
    }
}

fn build_client(config: &UpstreamConfig) -> awc::Client {
    let connector = awc::Connector::new()
        .connector(connect::NoDelayConnector::new())
        .timeout(config.connect_timeout)
        .limit(config.max_connections)
        .conn_keep_alive(config.keepalive)
        .max_http_version(awc::http::Version::HTTP_11);
    awc::Client::builder()
        .connector(connector)
        .disable_redirects()
        .no_default_headers()
        .timeout(config.response_header_timeout)
        .finish()
}

/// Builds every group of `configs`, carrying health over from `previous` groups of the same name.
pub fn build_groups(
    configs: &BTreeMap<String, UpstreamConfig>,
    previous: &BTreeMap<String, Arc<UpstreamGroup>>,
) -> BTreeMap<String, Arc<UpstreamGroup>> {
    configs
        .iter()
        .map(|(name, config)| {
            let group = UpstreamGroup::build(name, config, previous.get(name).map(Arc::as_ref));
            (name.clone(), Arc::new(group))
        })
        .collect()
}
