//! GCRA (the generic cell rate algorithm): a steady rate with a burst allowance, for any number
//! of keys, with one timestamp of state per key (the "theoretical arrival time", TAT).
//!
//! Keys live in sharded maps shared by every worker. A key whose bucket has refilled is the
//! same as an absent one, so a full shard first drops those; when that is not enough it drops
//! the half nearest to refilled, which bounds memory at the cost of forgiving some clients a
//! little early.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Duration;

/// Shards: enough that workers rarely contend on one lock.
const SHARDS: usize = 64;

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

/// A quota in nanoseconds, as GCRA counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// Time one unit takes to come back.
    pub interval: u128,
    /// How far ahead of now the TAT may run: the burst.
    pub depth: u128,
    /// Time this request adds to the TAT.
    pub cost: u128,
}

impl Quota {
    /// The quota in nanoseconds; `None` when it allows nothing.
    pub fn cell(&self) -> Option<Cell> {
        let limit = u128::from(self.limit);
        if limit == 0 {
            return None;
        }
        let interval = (self.window.as_nanos() / limit).max(1);
        Some(Cell {
            interval,
            depth: interval * u128::from(self.burst.max(1)),
            cost: interval * u128::from(self.cost),
        })
    }

    /// The verdict for a quota that allows nothing.
    pub fn nothing_allowed(&self) -> Verdict {
        Verdict {
            allowed: false,
            remaining: 0,
            reset: self.window,
            retry_after: self.window,
        }
    }
}

impl Cell {
    /// The verdict when the TAT ends up `reset` ahead of now (after the request when allowed,
    /// as it stays when refused), with `retry` to wait when refused.
    pub fn verdict(&self, allowed: bool, reset: u128, retry: u128) -> Verdict {
        let left = self.depth.saturating_sub(reset) / self.interval;
        Verdict {
            allowed,
            remaining: left.min(u128::from(u32::MAX)) as u32,
            reset: nanos(reset),
            retry_after: nanos(retry),
        }
    }

    /// Spends at `now` against `tat` (when the key has one): the verdict, and the TAT to keep
    /// when the request was allowed.
    pub fn spend(&self, tat: Option<u128>, now: u128) -> (Verdict, Option<u128>) {
        let tat = tat.map_or(now, |t| t.max(now));
        let next = tat + self.cost;
        if next - now > self.depth {
            let refused = self.verdict(false, tat - now, next - self.depth - now);
            return (refused, None);
        }
        (self.verdict(true, next - now, 0), Some(next))
    }
}

fn nanos(value: u128) -> Duration {
    Duration::from_nanos(value.min(u128::from(u64::MAX)) as u64)
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

/// Rate state for every key, in this process.
pub struct Gcra {
    shards: Box<[Mutex<HashMap<u64, u64>>]>,
    /// Keys per shard at most.
    per_shard: usize,
    /// Keys come from clients: a random hash seed keeps them from steering collisions.
    hasher: std::collections::hash_map::RandomState,
}

impl Gcra {
    /// State for at most `max_keys` keys (at least one per shard).
    pub fn new(max_keys: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Spends `quota.cost` units of `key` (within `scope`, the policy) at `now_ns`.
    pub fn spend(&self, scope: &str, key: &str, quota: Quota, now_ns: u64) -> Verdict {
        self.decide(scope, key, quota, now_ns, true)
    }

    /// What spending would answer, spending nothing.
    pub fn peek(&self, scope: &str, key: &str, quota: Quota, now_ns: u64) -> Verdict {
        self.decide(scope, key, quota, now_ns, false)
    }

    fn decide(&self, scope: &str, key: &str, quota: Quota, now_ns: u64, keep: bool) -> Verdict {
        let Some(cell) = quota.cell() else {
            return quota.nothing_allowed();
        };
        let now = u128::from(now_ns);
        let hash = self.hasher.hash_one((scope, key));
        let shard = &self.shards[(hash as usize) % SHARDS];
        let mut entries = shard.lock().unwrap_or_else(|p| p.into_inner());
        let (verdict, next) = cell.spend(entries.get(&hash).map(|&t| u128::from(t)), now);
        if let Some(next) = next.filter(|_| keep) {
            if entries.len() >= self.per_shard && !entries.contains_key(&hash) {
                make_room(&mut entries, now, self.per_shard);
            }
            entries.insert(hash, next.min(u128::from(u64::MAX)) as u64);
        }
        verdict
    }
}

/// Drops the keys whose buckets have refilled by `now`; when fewer than `room` are left, the
/// half nearest to refilling too.
fn make_room(entries: &mut HashMap<u64, u64>, now: u128, room: usize) {
    entries.retain(|_, tat| u128::from(*tat) > now);
    if entries.len() < room {
        return;
    }
    let mut tats: Vec<u64> = entries.values().copied().collect();
    let middle = (tats.len() - 1) / 2;
    let (_, &mut median, _) = tats.select_nth_unstable(middle);
    entries.retain(|_, tat| *tat > median);
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
        let gcra = Gcra::new(1 << 18);
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
        let gcra = Gcra::new(1 << 18);
        let q = quota(60, 60, 1);
        assert!(gcra.spend("p", "k", q, 0).allowed);
        assert!(!gcra.spend("p", "k", q, SECOND / 2).allowed);
        assert!(gcra.spend("p", "k", q, SECOND).allowed);
        assert!(!gcra.spend("p", "k", q, SECOND + SECOND / 2).allowed);
    }

    #[test]
    fn keys_and_scopes_are_independent() {
        let gcra = Gcra::new(1 << 18);
        let q = quota(1, 60, 1);
        assert!(gcra.spend("p", "a", q, 0).allowed);
        assert!(gcra.spend("p", "b", q, 0).allowed);
        assert!(gcra.spend("other", "a", q, 0).allowed);
        assert!(!gcra.spend("p", "a", q, 0).allowed);
    }

    #[test]
    fn odd_quotas_from_plugins_are_safe() {
        let gcra = Gcra::new(1 << 18);
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
    fn peeking_spends_nothing() {
        let gcra = Gcra::new(64);
        let q = quota(1, 60, 1);
        assert!(gcra.peek("p", "k", q, 0).allowed);
        assert!(gcra.spend("p", "k", q, 0).allowed);
        let peeked = gcra.peek("p", "k", q, 0);
        assert!(!peeked.allowed);
        assert_eq!(peeked.retry_after, Duration::from_secs(60));
    }

    #[test]
    fn memory_stays_bounded_when_every_key_is_active() {
        let gcra = Gcra::new(SHARDS * 16);
        let q = quota(1, 3600, 1);
        for i in 0..20_000 {
            assert!(gcra.spend("p", &i.to_string(), q, SECOND).allowed);
        }
        let total: usize = gcra.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(total <= SHARDS * 16, "{total} entries kept");
    }

    #[test]
    fn full_shards_forget_refilled_keys_first_then_those_nearest_to_refilled() {
        let mut entries = HashMap::from([(1, 5), (2, 50), (3, 500)]);
        make_room(&mut entries, 10, 3);
        assert_eq!(entries, HashMap::from([(2, 50), (3, 500)]));
        let mut entries = HashMap::from([(1, 50), (2, 60), (3, 70), (4, 80)]);
        make_room(&mut entries, 10, 4);
        assert_eq!(entries, HashMap::from([(3, 70), (4, 80)]));
    }
}
