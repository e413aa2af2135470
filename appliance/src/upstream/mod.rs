//! Upstream groups: their servers, health, load balancing and connection pools.
//!
//! Owns everything about reaching the servers behind gatehouse; what to send them is the edge's
//! business (see [`crate::edge`]).

mod balance;
pub mod client;
mod health;
mod peer;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Weak};

pub use balance::PickContext;
pub use health::spawn_checks;
pub use peer::{InFlight, Peer, PeerHealth, PeerStatus, clock_ms};

use balance::Balancer;
use client::Pool;

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
    /// a reload neither forgets an ejection nor resurrects a failed server; without active checks
    /// nothing would ever bring a server back, so their verdict is cleared.
    pub fn build(name: &str, config: &UpstreamConfig, previous: Option<&UpstreamGroup>) -> Self {
        let peers: Vec<Peer> = config
            .servers
            .iter()
            .map(|server| {
                let health = previous
                    .and_then(|group| group.peers.iter().find(|p| p.addr == server.addr()))
                    .map(|p| Arc::clone(&p.health))
                    .unwrap_or_default();
                if config.health_check.is_none() {
                    health.set_up(true);
                }
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

    /// This worker thread's connection pool for the group. Pools are per thread (no locks on the
    /// request path) and die with the group when a reload replaces it.
    pub fn pool(self: &Arc<Self>) -> Rc<Pool> {
        thread_local! {
            static POOLS: RefCell<Vec<(Weak<UpstreamGroup>, Rc<Pool>)>> = const { RefCell::new(Vec::new()) };
        }
        POOLS.with_borrow_mut(|pools| {
            let me = Arc::as_ptr(self);
            if let Some((_, pool)) = pools
                .iter()
                .find(|(group, _)| group.as_ptr() == me && group.strong_count() > 0)
            {
                return Rc::clone(pool);
            }
            pools.retain(|(group, _)| group.strong_count() > 0);
            let pool = Rc::new(Pool::new(&self.config));
            pools.push((Arc::downgrade(self), Rc::clone(&pool)));
            pool
        })
    }
}

/// Builds the groups of `configs`. A group whose config did not change is the same group (its
/// pools and health checks carry on); a changed one is rebuilt, keeping its servers' health.
/// Returns the groups and the names of those that are new.
pub fn build_groups(
    configs: &BTreeMap<String, UpstreamConfig>,
    previous: &BTreeMap<String, Arc<UpstreamGroup>>,
) -> (
    BTreeMap<String, Arc<UpstreamGroup>>,
    Vec<Arc<UpstreamGroup>>,
) {
    let mut fresh = Vec::new();
    let groups = configs
        .iter()
        .map(|(name, config)| {
            let before = previous.get(name);
            let group = match before {
                Some(group) if group.config == *config => Arc::clone(group),
                _ => {
                    let group =
                        Arc::new(UpstreamGroup::build(name, config, before.map(Arc::as_ref)));
                    fresh.push(Arc::clone(&group));
                    group
                }
            };
            (name.clone(), group)
        })
        .collect();
    (groups, fresh)
}
