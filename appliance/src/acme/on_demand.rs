//! On-demand certificates: the first handshake naming a host no site lists waits while a
//! certificate is obtained for it, when the name passes the allowlist and the ask URL and the
//! order budget has room. Any other handshake goes on at once with what the resolver has (the
//! default certificate, or a handshake failure).
//!
//! The orders themselves run on the serving thread ([`super::Acme::spawn`]); handshakes for the
//! same name wait for the same order.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::lock;
use crate::config::OnDemandConfig;
use crate::edge::router::HostPattern;

/// Longest a handshake waits for its certificate.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(60);
/// How long the ask URL has to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a refusal by the ask URL is remembered (scanners repeat their names).
const REFUSAL_MEMORY: Duration = Duration::from_secs(60);

/// A name to order a certificate for, and who to tell when the order is over.
pub(crate) struct Order {
    pub(crate) name: String,
    pub(crate) done: watch::Sender<bool>,
}

/// Which names may get a certificate on demand, and the orders under way.
pub(crate) struct OnDemand {
    allow: Vec<HostPattern>,
    ask: Option<Ask>,
    budget: Mutex<Budget>,
    /// Names not to try again before the instant: refused by the ask URL, or whose order failed.
    refused: Mutex<HashMap<String, Instant>>,
    /// Orders under way, by name.
    pending: Mutex<HashMap<String, watch::Receiver<bool>>>,
    orders: mpsc::UnboundedSender<Order>,
    /// The pause after a failed order.
    retry_after: Duration,
}

struct Ask {
    client: reqwest::Client,
    url: String,
}

/// At most `max` orders in any window of `per`.
struct Budget {
    max: usize,
    per: Duration,
    placed: VecDeque<Instant>,
}

impl Budget {
    fn take(&mut self, now: Instant) -> bool {
        while self
            .placed
            .front()
            .is_some_and(|at| now.duration_since(*at) >= self.per)
        {
            self.placed.pop_front();
        }
        let room = self.placed.len() < self.max;
        if room {
            self.placed.push_back(now);
        }
        room
    }
}

impl OnDemand {
    /// The policy of `config`; orders go out on the returned receiver. A failed order is not
    /// tried again for `retry_after`.
    pub(crate) fn new(
        config: &OnDemandConfig,
        retry_after: Duration,
    ) -> (Self, mpsc::UnboundedReceiver<Order>) {
        let (orders, receiver) = mpsc::unbounded_channel();
        let ask = config.ask.as_ref().map(|url| Ask {
            client: reqwest::Client::builder()
                .timeout(ASK_TIMEOUT)
                .build()
                .expect("the HTTP client's TLS roots load"),
            url: url.clone(),
        });
        let on_demand = Self {
            allow: config.allow.iter().map(|p| HostPattern::parse(p)).collect(),
            ask,
            budget: Mutex::new(Budget {
                max: config.max_orders as usize,
                per: config.per,
                placed: VecDeque::new(),
            }),
            refused: Mutex::default(),
            pending: Mutex::default(),
            orders,
            retry_after,
        };
        (on_demand, receiver)
    }

    /// Whether `name` passes the allowlist (the ask URL is not asked).
    pub(crate) fn listed(&self, name: &str) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|pattern| pattern.matches(name))
    }

    /// Waits while a certificate for `name` (lower case) is obtained, when it may be; returns
    /// at once when it may not. The first handshake for a name decides (asks, spends from the
    /// budget) for every handshake that comes meanwhile.
    pub(crate) async fn wait_for(&self, name: &str) {
        let (mut waiting, deciding) = {
            let mut pending = lock(&self.pending);
            match pending.get(name) {
                Some(waiting) => (waiting.clone(), None),
                None => {
                    let (done, waiting) = watch::channel(false);
                    pending.insert(name.to_string(), waiting.clone());
                    let deciding = Deciding {
                        on_demand: self,
                        name,
                        done: Some(done),
                    };
                    (waiting, Some(deciding))
                }
            }
        };
        if let Some(mut deciding) = deciding
            && self.may_order(name).await
        {
            if lock(&self.budget).take(Instant::now()) {
                deciding.order();
            } else {
                warn!(%name, "on-demand certificate orders are at their limit (edge.tls.on_demand.max_orders); not ordering one");
            }
        }
        // Without an order, the sender is gone and this returns at once.
        let _ = tokio::time::timeout(HANDSHAKE_WAIT, waiting.wait_for(|done| *done)).await;
    }

    /// The order for `name` is over; `obtained` says how it went.
    pub(crate) fn finished(&self, name: &str, obtained: bool) {
        if !obtained {
            let until = Instant::now() + self.retry_after;
            lock(&self.refused).insert(name.to_string(), until);
        }
        lock(&self.pending).remove(name);
    }

    async fn may_order(&self, name: &str) -> bool {
        let now = Instant::now();
        {
            let mut refused = lock(&self.refused);
            refused.retain(|_, until| *until > now);
            if refused.contains_key(name) {
                return false;
            }
        }
        if !self.listed(name) {
            return false;
        }
        let Some(ask) = &self.ask else {
            return true;
        };
        let url = reqwest::Url::parse_with_params(&ask.url, [("domain", name)])
            .expect("config validation checked the URL");
        match ask.client.get(url).send().await {
            Ok(answer) if answer.status().is_success() => true,
            Ok(answer) => {
                info!(%name, status = %answer.status(), "the ask URL refused a certificate on demand");
                let until = now + REFUSAL_MEMORY;
                lock(&self.refused).insert(name.to_string(), until);
                false
            }
            Err(err) => {
                warn!(%name, url = %ask.url, error = %err, "the ask URL did not answer; no certificate on demand");
                false
            }
        }
    }
}

/// The first handshake's decision for a name. Unless it places the order, dropping it (also
/// when the handshake goes away mid-decision) lets the name be tried again and releases the
/// handshakes waiting on it.
struct Deciding<'a> {
    on_demand: &'a OnDemand,
    name: &'a str,
    done: Option<watch::Sender<bool>>,
}

impl Deciding<'_> {
    /// Hands the order to the ACME task, which ends it with [`OnDemand::finished`].
    fn order(&mut self) {
        if let Some(done) = self.done.take() {
            let order = Order {
                name: self.name.to_string(),
                done,
            };
            if self.on_demand.orders.send(order).is_err() {
                lock(&self.on_demand.pending).remove(self.name);
            }
        }
    }
}

impl Drop for Deciding<'_> {
    fn drop(&mut self) {
        if self.done.is_some() {
            lock(&self.on_demand.pending).remove(self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_admits_max_orders_per_window() {
        let mut budget = Budget {
            max: 2,
            per: Duration::from_secs(60),
            placed: VecDeque::new(),
        };
        let start = Instant::now();
        assert!(budget.take(start));
        assert!(budget.take(start + Duration::from_secs(1)));
        assert!(!budget.take(start + Duration::from_secs(2)));
        // The first order leaves the window: one more fits, not two.
        assert!(budget.take(start + Duration::from_secs(60)));
        assert!(!budget.take(start + Duration::from_secs(60)));
    }

    #[test]
    fn the_allowlist_takes_names_and_domains() {
        let config = OnDemandConfig {
            allow: vec!["shop.example.net".into(), "*.example.com".into()],
            ask: None,
            max_orders: 1,
            per: Duration::from_secs(1),
        };
        let (on_demand, _orders) = OnDemand::new(&config, Duration::from_secs(1));
        assert!(on_demand.listed("shop.example.net"));
        assert!(on_demand.listed("a.example.com"));
        assert!(on_demand.listed("a.b.example.com"));
        assert!(!on_demand.listed("example.com"));
        assert!(!on_demand.listed("other.example.net"));
    }
}
