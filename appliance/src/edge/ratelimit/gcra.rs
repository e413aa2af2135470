//! GCRA (the generic cell rate algorithm): a steady rate with a burst allowance, for any number
//! of keys, with one timestamp of state per key (the "theoretical arrival time").
//!
//! Keys live in sharded maps shared by every worker; a key whose bucket has refilled is the
//! same as an absent one, so full shards drop those entries instead of growing.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Duration;

/// Shards: enough that workers rarely contend on one lock.
const SHARDS: usize = 64;
/// Entries per shard before refilled ones are swept out.
const SWEEP_AT: usize = 4096;

/// The quota of one decision (as a rate-limit policy gives it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Units allowed per window.
    pub limit: u32,
    /// The window.
    pub window: Duration,
    /// Units that may be spent at once.
    pub burst: u32,
    /// Units this request costs.
    pub cost: u32,
}

/// The result of spending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the units were spent.
    pub allowed: bool,
    /// Units left after this request.
    pub remaining: u32,
    /// Time until the bucket is full again.
    pub reset: Duration,
    /// When refused: time until this request would be allowed.
    pub retry_after: Duration,
}

/// Rate state for every key.
pub struct Gcra {
    shards: Box<[Mutex<HashMap<u64, u64>>]>,
    /// Keys come from clients: a random hash seed keeps them from steering collisions.
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Gcra {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

impl Gcra {
    /// Spends `quota.cost` units of `key` (within `scope`, the policy) at `now_ns`.
    pub fn spend(&self, scope: &str, key: &str, quota: Quota, now_ns: u64) -> Verdict {
        let limit = u128::from(quota.limit);
        if limit == 0 {
            // Nothing allowed: refuse without touching state.
            return Verdict {
                allowed: false,
                remaining: 0,
                reset: quota.window,
                retry_after: quota.window,
            };
        }
        // Nanoseconds per unit, and the bucket's depth in nanoseconds.
        let interval = (quota.window.as_nanos() / limit).max(1);
        let depth = interval * u128::from(quota.burst.max(1));
        let cost = interval * u128::from(quota.cost);
        let now = u128::from(now_ns);

        let hash = self.hasher.hash_one((scope, key));
        let shard = &self.shards[(hash as usize) % SHARDS];
        let mut entries = shard.lock().unwrap_or_else(|p| p.into_inner());
        let tat = entries.get(&hash).map_or(now, |&t| u128::from(t).max(now));
        let next = tat + cost;
        let ns = |v: u128| Duration::from_nanos(v.min(u128::from(u64::MAX)) as u64);
        if next - now > depth {
            let left = depth.saturating_sub(tat - now) / interval;
            return Verdict {
                allowed: false,
                remaining: left.min(u128::from(u32::MAX)) as u32,
                reset: ns(tat - now),
                retry_after: ns(next - depth - now),
            };
        }
        if entries.len() >= SWEEP_AT {
            entries.retain(|_, t| u128::from(*t) > now);
        }
        entries.insert(hash, next.min(u128::from(u64::MAX)) as u64);
        let left = (depth - (next - now)) / interval;
        Verdict {
            allowed: true,
            remaining: left.min(u128::from(u32::MAX)) as u32,
            reset: ns(next - now),
            retry_after: Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn quota(limit: u32, window_s: u64, burst: u32) -> Quota {
        Quota {
            limit,
            window: Duration::from_secs(window_s),
            burst,
            cost: 1,
        }
    }

    #[test]
    fn allows_the_burst_then_refuses() {
        let gcra = Gcra::default();
        let q = quota(10, 10, 3);
        let verdicts: Vec<Verdict> = (0..4)
            .map(|_| gcra.spend("p", "k", q, 100 * SECOND))
            .collect();
        assert_eq!(
            verdicts.iter().map(|v| v.allowed).collect::<Vec<_>>(),
            [true, true, true, false]
        );
        assert_eq!(
            verdicts.iter().map(|v| v.remaining).collect::<Vec<_>>(),
            [2, 1, 0, 0]
        );
        // One unit comes back every second (10 per 10 s).
        assert_eq!(verdicts[3].retry_after, Duration::from_secs(1));
        assert_eq!(verdicts[2].reset, Duration::from_secs(3));
    }

    #[test]
    fn refills_at_the_steady_rate() {
        let gcra = Gcra::default();
        let q = quota(60, 60, 1);
        assert!(gcra.spend("p", "k", q, 0).allowed);
        assert!(!gcra.spend("p", "k", q, SECOND / 2).allowed);
        assert!(gcra.spend("p", "k", q, SECOND).allowed);
        assert!(!gcra.spend("p", "k", q, SECOND + SECOND / 2).allowed);
    }

    #[test]
    fn keys_and_scopes_are_independent() {
        let gcra = Gcra::default();
        let q = quota(1, 60, 1);
        assert!(gcra.spend("p", "a", q, 0).allowed);
        assert!(gcra.spend("p", "b", q, 0).allowed);
        assert!(gcra.spend("other", "a", q, 0).allowed);
        assert!(!gcra.spend("p", "a", q, 0).allowed);
    }

    #[test]
    fn odd_quotas_from_plugins_are_safe() {
        let gcra = Gcra::default();
        assert!(
            !gcra.spend("p", "k", quota(0, 60, 5), 0).allowed,
            "a zero limit allows nothing"
        );
        let huge = Quota {
            limit: u32::MAX,
            window: Duration::from_secs(u64::MAX / 4),
            burst: u32::MAX,
            cost: u32::MAX,
        };
        assert!(gcra.spend("p", "k", huge, u64::MAX).allowed);
        let free = Quota {
            cost: 0,
            ..quota(1, 60, 1)
        };
        for _ in 0..5 {
            assert!(
                gcra.spend("p", "free", free, 0).allowed,
                "a zero cost spends nothing"
            );
        }
    }

    #[test]
    fn full_shards_forget_refilled_keys() {
        let gcra = Gcra::default();
        let q = quota(1000, 1, 1);
        for i in 0..(SHARDS * SWEEP_AT * 2) {
            gcra.spend("p", &i.to_string(), q, i as u64 * SECOND);
        }
        let total: usize = gcra.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(total <= SHARDS * SWEEP_AT, "{total} entries kept");
    }
}
