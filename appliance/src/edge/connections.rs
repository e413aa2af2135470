//! Connection caps: one for the whole edge and one per client address, so a single client (or a
//! slowloris holding sockets half open) cannot take every connection. A connection over a cap
//! is not dropped silently: its requests get `503` with `Retry-After` and `Connection: close`.
//!
//! Connections are counted when accepted (actix's `on_connect`) and uncounted when closed (the
//! slot lives in the connection's extensions). Addresses of trusted proxies have no per-address
//! cap: many clients share them.

use std::any::Any;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::HttpResponse;
use actix_web::http::header::{HeaderValue, RETRY_AFTER};

use super::error::EdgeError;

/// Open connections, in all and by client address.
#[derive(Default)]
pub struct Connections {
    total: AtomicUsize,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// The caps, from `[edge]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caps {
    pub(crate) total: usize,
    pub(crate) per_ip: usize,
}

/// One open connection's place in the count.
pub(crate) struct ConnectionSlot {
    connections: Arc<Connections>,
    ip: Option<IpAddr>,
    /// The connection was accepted over a cap: its requests are refused.
    pub(crate) over: bool,
}

impl Connections {
    /// Counts a connection from `ip`; over `caps` (the per-address one unless `exempt`), the
    /// slot says so.
    pub(crate) fn open(
        self: &Arc<Self>,
        ip: Option<IpAddr>,
        caps: Caps,
        exempt: bool,
    ) -> ConnectionSlot {
        let total = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        let from_ip = ip.map_or(0, |ip| {
            let mut by_ip = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
            let count = by_ip.entry(ip).or_insert(0);
            *count += 1;
            *count
        });
        ConnectionSlot {
            connections: Arc::clone(self),
            ip,
            over: total > caps.total || (!exempt && from_ip > caps.per_ip),
        }
    }

    /// Connections open now.
    pub fn open_now(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.connections.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.ip {
            let mut by_ip = self
                .connections
                .by_ip
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(count) = by_ip.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    by_ip.remove(&ip);
                }
            }
        }
    }
}

type Tls = actix_tls::accept::rustls_0_23::TlsStream<tokio::net::TcpStream>;

/// In a TLS connection's extensions: its requests came over TLS.
pub(crate) struct OverTls;

/// [`OverTls`] for an accepted TLS connection.
pub(crate) fn mark_tls(connection: &dyn Any, extensions: &mut actix_web::dev::Extensions) {
    if connection.is::<Tls>() {
        extensions.insert(OverTls);
    }
}

/// Whether the request came over TLS.
pub(crate) fn over_tls(req: &actix_web::HttpRequest) -> bool {
    req.conn_data::<OverTls>().is_some()
}

/// The peer address of an accepted connection, plain or TLS.
pub(crate) fn peer_ip(connection: &dyn Any) -> Option<IpAddr> {
    let tcp = match connection.downcast_ref::<tokio::net::TcpStream>() {
        Some(tcp) => tcp,
        None => connection.downcast_ref::<Tls>()?.get_ref().0,
    };
    tcp.peer_addr().ok().map(|addr| addr.ip().to_canonical())
}

/// The answer on a connection over a cap.
pub(crate) fn busy() -> HttpResponse {
    let mut response = HttpResponse::ServiceUnavailable()
        .force_close()
        .content_type("text/plain; charset=utf-8")
        .body("503 Service Unavailable: too many connections; retry shortly\n");
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    EdgeError::TooManyConnections.mark(&mut response);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_in_all_and_per_address_and_closing_frees_a_place() {
        let connections = Arc::new(Connections::default());
        let caps = Caps {
            total: 3,
            per_ip: 2,
        };
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let first = connections.open(Some(a), caps, false);
        let second = connections.open(Some(a), caps, false);
        assert!(!first.over && !second.over);
        let third = connections.open(Some(a), caps, false);
        assert!(third.over, "a third from one address");
        drop(third);
        let proxied = connections.open(Some(a), caps, true);
        assert!(!proxied.over, "a trusted proxy has no per-address cap");
        let other = connections.open(Some(b), caps, false);
        assert!(other.over, "the fourth in all");
        drop((first, other));
        assert!(!connections.open(Some(b), caps, false).over);
        assert_eq!(
            connections.open_now(),
            2,
            "the second and the proxied are still open"
        );
        drop((second, proxied));
        assert_eq!(connections.open_now(), 0);
    }
}
