//! What the cache has done since start, for the admin API (and the metrics registry later).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::CacheStatus;

/// Counters, bumped on the request path (relaxed atomics: totals, not a sequence).
#[derive(Default)]
pub(crate) struct CacheStats {
    hits: AtomicU64,
    stale: AtomicU64,
    revalidated: AtomicU64,
    misses: AtomicU64,
    bypasses: AtomicU64,
    corrupt_dropped: AtomicU64,
    bytes_served: AtomicU64,
    upstream_bytes_saved: AtomicU64,
}

/// Sizes by tier and the counters, as the admin API shows them.
#[derive(Debug, Clone, Serialize)]
pub struct CacheReport {
    /// The memory tier.
    pub memory: TierReport,
    /// The persistent tier, when configured.
    pub disk: Option<TierReport>,
    /// Whether the shared tier (Redis) is reachable; absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_connected: Option<bool>,
    /// Answered by a fresh entry.
    pub hits: u64,
    /// Answered by a stale entry (while revalidating, or because the upstream failed).
    pub stale: u64,
    /// Answered by a stale entry the upstream confirmed with a 304.
    pub revalidated: u64,
    /// Went to the upstream for a storable answer.
    pub misses: u64,
    /// Went to the upstream because the rules said not to look up.
    pub bypasses: u64,
    /// Persistent entries found damaged, dropped and fetched again.
    pub corrupt_dropped: u64,
    /// Body bytes sent from entries, as encoded for the client.
    pub bytes_served: u64,
    /// Body bytes the upstream did not have to send because an entry answered.
    pub upstream_bytes_saved: u64,
}

/// One entry, for the top keys.
#[derive(Debug, Clone, Serialize)]
pub struct KeyReport {
    /// Its cache key (what a purge by key names).
    pub key: String,
    /// The host it was stored for.
    pub host: String,
    /// Its body, identity.
    pub bytes: u64,
    /// Requests it answered while in memory.
    pub hits: u64,
    /// Seconds since it was stored.
    pub age_seconds: u64,
    /// Its purge tags.
    pub tags: Vec<String>,
}

/// One tier's size.
#[derive(Debug, Clone, Serialize)]
pub struct TierReport {
    /// Entries held.
    pub entries: u64,
    /// Bytes they weigh.
    pub bytes: u64,
    /// The most it may weigh.
    pub bound: u64,
}

impl CacheStats {
    pub(crate) fn count(&self, status: CacheStatus) {
        let counter = match status {
            CacheStatus::Hit => &self.hits,
            CacheStatus::Stale => &self.stale,
            CacheStatus::Revalidated => &self.revalidated,
            CacheStatus::Miss => &self.misses,
            CacheStatus::Bypass => &self.bypasses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// An entry answered with `sent` body bytes, standing for `stored` bytes of the upstream's.
    pub(crate) fn served(&self, sent: usize, stored: usize) {
        self.bytes_served.fetch_add(sent as u64, Ordering::Relaxed);
        self.upstream_bytes_saved
            .fetch_add(stored as u64, Ordering::Relaxed);
    }

    pub(crate) fn count_corrupt(&self) {
        self.corrupt_dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn report(
        &self,
        memory: TierReport,
        disk: Option<TierReport>,
        shared_connected: Option<bool>,
    ) -> CacheReport {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CacheReport {
            memory,
            disk,
            shared_connected,
            hits: read(&self.hits),
            stale: read(&self.stale),
            revalidated: read(&self.revalidated),
            misses: read(&self.misses),
            bypasses: read(&self.bypasses),
            corrupt_dropped: read(&self.corrupt_dropped),
            bytes_served: read(&self.bytes_served),
            upstream_bytes_saved: read(&self.upstream_bytes_saved),
        }
    }
}
