//! Load balancing: which server of a group gets the next request.
//!
//! Every strategy skips servers that are unavailable (failed checks, ejected) or already tried
//! for this request, and uses only atomics, so workers never contend on a lock.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::http::header::{HeaderMap, HeaderName};
use xxhash_rust::xxh3::xxh3_64;

use super::peer::Peer;
use crate::config::{Balance, UpstreamConfig};

/// Points each unit of weight puts on the hash ring: enough to spread keys evenly over a few
/// servers, and to move only about 1/N of the keys when a server joins or leaves.
const RING_POINTS_PER_WEIGHT: u32 = 100;

/// The strategy of a group, with its precomputed state.
pub(crate) enum Balancer {
    /// Smooth weighted round-robin, precomputed as a schedule walked by one counter.
    RoundRobin {
        schedule: Vec<u16>,
        next: AtomicUsize,
    },
    /// Fewest requests in flight relative to weight; ties rotate.
    LeastConn { next: AtomicUsize },
    /// Consistent hash of a key onto a ring of server points.
    Hash { ring: Vec<(u64, u16)>, key: HashKey },
}

/// What the hash strategy hashes.
pub(crate) enum HashKey {
    ClientIp,
    /// A request header; requests without it fall back to the client IP.
    Header(HeaderName),
}

/// What a strategy may look at in a request.
pub struct PickContext<'a> {
    /// The client's address.
    pub client_ip: Option<IpAddr>,
    /// The request headers.
    pub headers: &'a HeaderMap,
}

impl Balancer {
    pub(crate) fn new(config: &UpstreamConfig, peers: &[Peer]) -> Self {
        match config.balance {
            Balance::RoundRobin => {
                let weights: Vec<u32> = peers.iter().map(|p| p.weight).collect();
                Self::RoundRobin {
                    schedule: smooth_schedule(&weights),
                    next: AtomicUsize::new(0),
                }
            }
            Balance::LeastConn => Self::LeastConn {
                next: AtomicUsize::new(0),
            },
            Balance::Hash => {
                let key = match config.hash_key.strip_prefix("header:") {
                    Some(name) => HashKey::Header(
                        HeaderName::from_bytes(name.as_bytes()).expect("validated header name"),
                    ),
                    None => HashKey::ClientIp,
                };
                Self::Hash {
                    ring: ring(peers),
                    key,
                }
            }
        }
    }

    /// The index of the server for this request, skipping `tried` and unavailable ones.
    pub(crate) fn pick(
        &self,
        peers: &[Peer],
        request: &PickContext<'_>,
        tried: &[usize],
        now_ms: u64,
    ) -> Option<usize> {
        let eligible =
            |index: usize| !tried.contains(&index) && peers[index].health.is_available(now_ms);
        match self {
            Self::RoundRobin { schedule, next } => {
                let start = next.fetch_add(1, Ordering::Relaxed);
                (0..schedule.len())
                    .map(|step| usize::from(schedule[(start + step) % schedule.len()]))
                    .find(|&index| eligible(index))
            }
            Self::LeastConn { next } => {
                let start = next.fetch_add(1, Ordering::Relaxed);
                let mut best: Option<(usize, usize, u32)> = None;
                for step in 0..peers.len() {
                    let index = (start + step) % peers.len();
                    if !eligible(index) {
                        continue;
                    }
                    let (load, weight) = (peers[index].health.in_flight(), peers[index].weight);
                    // load/weight < best_load/best_weight, without division.
                    let better = best.is_none_or(|(_, best_load, best_weight)| {
                        load as u64 * u64::from(best_weight) < best_load as u64 * u64::from(weight)
                    });
                    if better {
                        best = Some((index, load, weight));
                    }
                }
                best.map(|(index, _, _)| index)
            }
            Self::Hash { ring, key } => {
                let hash = key.hash(request);
                let start = ring.partition_point(|(point, _)| *point < hash);
                (0..ring.len())
                    .map(|step| usize::from(ring[(start + step) % ring.len()].1))
                    .find(|&index| eligible(index))
            }
        }
    }
}

impl HashKey {
    fn hash(&self, request: &PickContext<'_>) -> u64 {
        if let Self::Header(name) = self
            && let Some(value) = request.headers.get(name)
        {
            return xxh3_64(value.as_bytes());
        }
        match request.client_ip {
            Some(IpAddr::V4(ip)) => xxh3_64(&ip.octets()),
            Some(IpAddr::V6(ip)) => xxh3_64(&ip.octets()),
            None => 0,
        }
    }
}

/// nginx's smooth weighted round-robin, unrolled into one period: weights 5,1,1 give
/// a a b a c a a rather than a a a a a b c.
fn smooth_schedule(weights: &[u32]) -> Vec<u16> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, &w) in current.iter_mut().zip(weights) {
            *c += i64::from(w);
        }
        let best = (0..current.len())
            .max_by_key(|&i| (current[i], -(i as i64)))
            .unwrap_or(0);
        current[best] -= total;
        schedule.push(best as u16);
    }
    schedule
}

fn ring(peers: &[Peer]) -> Vec<(u64, u16)> {
    let mut ring: Vec<(u64, u16)> = peers
        .iter()
        .enumerate()
        .flat_map(|(index, peer)| {
            (0..peer.weight * RING_POINTS_PER_WEIGHT).map(move |point| {
                (
                    xxh3_64(format!("{}#{point}", peer.addr).as_bytes()),
                    index as u16,
                )
            })
        })
        .collect();
    ring.sort_unstable();
    ring
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::peer::{PeerHealth, clock_ms};
    use std::collections::HashMap;
    use std::sync::Arc;

    fn peers(weights: &[u32]) -> Vec<Peer> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                Peer::new(
                    &format!("10.0.0.{i}:80"),
                    w,
                    Arc::new(PeerHealth::default()),
                )
            })
            .collect()
    }

    fn config(balance: Balance, hash_key: &str) -> UpstreamConfig {
        UpstreamConfig {
            balance,
            hash_key: hash_key.into(),
            ..UpstreamConfig::default()
        }
    }

    fn counts(
        balancer: &Balancer,
        peers: &[Peer],
        n: usize,
        ip: impl Fn(usize) -> IpAddr,
    ) -> HashMap<usize, usize> {
        let headers = HeaderMap::new();
        let mut counts = HashMap::new();
        for i in 0..n {
            let ctx = PickContext {
                client_ip: Some(ip(i)),
                headers: &headers,
            };
            *counts
                .entry(balancer.pick(peers, &ctx, &[], clock_ms()).unwrap())
                .or_default() += 1;
        }
        counts
    }

    #[test]
    fn smooth_schedule_interleaves() {
        assert_eq!(smooth_schedule(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_schedule(&[1, 1]), [0, 1]);
    }

    #[test]
    fn weighted_round_robin_follows_weights() {
        let peers = peers(&[3, 1]);
        let balancer = Balancer::new(&config(Balance::RoundRobin, "client_ip"), &peers);
        let counts = counts(&balancer, &peers, 400, |_| IpAddr::from([127, 0, 0, 1]));
        assert_eq!((counts[&0], counts[&1]), (300, 100));
    }

    #[test]
    fn skips_tried_and_unavailable_servers() {
        let peers = peers(&[1, 1, 1]);
        peers[1].health.set_up(false);
        let balancer = Balancer::new(&config(Balance::RoundRobin, "client_ip"), &peers);
        let headers = HeaderMap::new();
        let ctx = PickContext {
            client_ip: None,
            headers: &headers,
        };
        for _ in 0..10 {
            let pick = balancer.pick(&peers, &ctx, &[0], clock_ms());
            assert_eq!(pick, Some(2));
        }
        assert_eq!(balancer.pick(&peers, &ctx, &[0, 2], clock_ms()), None);
    }

    #[test]
    fn least_conn_prefers_the_idle_server() {
        let peers = peers(&[1, 1]);
        let _busy = peers[0].health.start_request();
        let balancer = Balancer::new(&config(Balance::LeastConn, "client_ip"), &peers);
        let counts = counts(&balancer, &peers, 10, |_| IpAddr::from([127, 0, 0, 1]));
        assert_eq!(counts.get(&1), Some(&10));
    }

    #[test]
    fn hash_is_sticky_and_spreads() {
        let peers = peers(&[1, 1, 1]);
        let balancer = Balancer::new(&config(Balance::Hash, "client_ip"), &peers);
        let ip = |i: usize| IpAddr::from([10, 1, (i / 250) as u8, (i % 250) as u8]);
        let first = counts(&balancer, &peers, 3000, ip);
        for &n in first.values() {
            assert!((700..1300).contains(&n), "uneven spread {first:?}");
        }
        assert_eq!(
            first,
            counts(&balancer, &peers, 3000, ip),
            "same clients, same servers"
        );
    }

    #[test]
    fn hash_on_header_moves_only_the_failed_servers_keys() {
        let peers = peers(&[1, 1, 1]);
        let balancer = Balancer::new(&config(Balance::Hash, "header:x-user"), &peers);
        let pick = |user: usize| {
            let mut headers = HeaderMap::new();
            headers.insert(
                HeaderName::from_static("x-user"),
                user.to_string().parse().unwrap(),
            );
            let ctx = PickContext {
                client_ip: None,
                headers: &headers,
            };
            balancer.pick(&peers, &ctx, &[], clock_ms()).unwrap()
        };
        let before: Vec<usize> = (0..300).map(pick).collect();
        peers[2].health.set_up(false);
        let after: Vec<usize> = (0..300).map(pick).collect();
        for (b, a) in before.iter().zip(&after) {
            if *b != 2 {
                assert_eq!(a, b, "keys of healthy servers stay put");
            } else {
                assert_ne!(*a, 2);
            }
        }
    }
}
