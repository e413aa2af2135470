//! One upstream server and what the proxy knows about its health.
//!
//! The health state is shared by every worker thread (atomics, no locks on the request path) and
//! survives config reloads for servers that stay in the same group.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix_web::http::uri::{Authority, PathAndQuery, Scheme, Uri};

use crate::config::EjectConfig;

/// An upstream server of a group.
pub struct Peer {
    /// `host:port`, as configured.
    pub addr: String,
    authority: Authority,
    /// Round-robin weight.
    pub weight: u32,
    /// Shared health state.
    pub health: Arc<PeerHealth>,
}

impl Peer {
    pub(crate) fn new(addr: &str, weight: u32, health: Arc<PeerHealth>) -> Self {
        let authority = addr.parse().expect("validated as host:port by config");
        Self {
            addr: addr.to_string(),
            authority,
            weight,
            health,
        }
    }

    /// The URI for `path_and_query` on this server (always origin-form to the server).
    pub fn uri(&self, path_and_query: PathAndQuery) -> Uri {
        Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .expect("scheme, authority and path are all valid")
    }

    /// The server's `host:port` authority.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }
}

/// Health of one server: active-check verdict, passive failures, ejection, requests in flight.
#[derive(Debug)]
pub struct PeerHealth {
    /// Verdict of the active checks (true until checks say otherwise, as nginx does).
    up: AtomicBool,
    /// Requests that failed in a row (connect errors, timeouts).
    failures: AtomicU32,
    /// Until when (ms on [`clock_ms`]) the server is ejected; 0 when not.
    ejected_until: AtomicU64,
    /// Requests being served, for least-connections.
    in_flight: AtomicUsize,
}

impl Default for PeerHealth {
    fn default() -> Self {
        Self {
            up: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }
}

/// A snapshot for `/healthz`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerStatus {
    /// `host:port`.
    pub addr: String,
    /// Can receive traffic now.
    pub available: bool,
    /// Active checks' verdict.
    pub checks_passing: bool,
    /// Seconds left of a passive ejection.
    pub ejected_for_seconds: Option<f64>,
    /// Failed requests in a row.
    pub consecutive_failures: u32,
    /// Requests in flight.
    pub in_flight: usize,
}

impl PeerHealth {
    /// Whether the server may be picked now.
    pub fn is_available(&self, now_ms: u64) -> bool {
        self.up.load(Ordering::Relaxed) && self.ejected_until.load(Ordering::Relaxed) <= now_ms
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request as started until the guard is dropped.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// A request got a response: the server is fine.
    pub fn record_success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// A request failed to connect or timed out. Returns true when this failure ejected the server.
    pub fn record_failure(&self, eject: &EjectConfig) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if eject.failures == 0 || failures < eject.failures {
            return false;
        }
        let now = clock_ms();
        let until = now + eject.cooldown.as_millis() as u64;
        let previous = self.ejected_until.swap(until, Ordering::Relaxed);
        previous <= now
    }

    /// Applies an active-check verdict; returns true when it changed.
    pub fn set_up(&self, up: bool) -> bool {
        let changed = self.up.swap(up, Ordering::Relaxed) != up;
        if changed && up {
            // A server that comes back through its checks gets a clean slate; a server whose
            // checks keep passing while its requests fail stays ejected.
            self.failures.store(0, Ordering::Relaxed);
            self.ejected_until.store(0, Ordering::Relaxed);
        }
        changed
    }

    /// Snapshot for reports.
    pub fn status(&self, addr: &str) -> PeerStatus {
        let now = clock_ms();
        let until = self.ejected_until.load(Ordering::Relaxed);
        PeerStatus {
            addr: addr.to_string(),
            available: self.is_available(now),
            checks_passing: self.up.load(Ordering::Relaxed),
            ejected_for_seconds: (until > now).then(|| (until - now) as f64 / 1000.0),
            consecutive_failures: self.failures.load(Ordering::Relaxed),
            in_flight: self.in_flight(),
        }
    }
}

/// A request in flight on a server; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight(Arc<PeerHealth>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Milliseconds on a process-wide monotonic clock (never 0, so 0 can mean "not ejected").
pub fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(|| Instant::now() - Duration::from_millis(1));
    start.elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejects_after_consecutive_failures_and_recovers_after_cooldown() {
        let health = PeerHealth::default();
        let eject = EjectConfig {
            failures: 2,
            cooldown: Duration::from_millis(50),
        };
        assert!(!health.record_failure(&eject));
        assert!(health.record_failure(&eject), "second failure ejects");
        assert!(!health.is_available(clock_ms()));
        assert!(health.is_available(clock_ms() + 51));
        health.record_success();
        assert_eq!(health.status("x").consecutive_failures, 0);
    }

    #[test]
    fn success_between_failures_resets_the_count() {
        let health = PeerHealth::default();
        let eject = EjectConfig {
            failures: 2,
            cooldown: Duration::from_secs(30),
        };
        health.record_failure(&eject);
        health.record_success();
        assert!(!health.record_failure(&eject));
        assert!(health.is_available(clock_ms()));
    }

    #[test]
    fn in_flight_guard_counts() {
        let health = Arc::new(PeerHealth::default());
        let a = health.start_request();
        let b = health.start_request();
        assert_eq!(health.in_flight(), 2);
        drop(a);
        drop(b);
        assert_eq!(health.in_flight(), 0);
    }
}
