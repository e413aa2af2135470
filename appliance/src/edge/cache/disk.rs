//! The persistent tier: entries in the state store, so they survive a restart and outnumber
//! what memory holds.
//!
//! The request path never touches the disk itself. An index in memory (keys, sizes, hosts and
//! tags) answers "is it there" and bounds the tier by bytes; reads run on the blocking pool,
//! only after a memory miss; writes and deletes go to one writer thread in order. An entry the
//! index drops (evicted, expired or purged) is deleted from the store by that thread.

use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use moka::notification::RemovalCause;
use tracing::{info, warn};

use super::entry::{Entry, Kept, UntilUseless, now_ms};
use super::persist;
use crate::store::{Store, Tree};

/// What the index knows of a stored entry.
pub(crate) struct Indexed {
    bytes: u32,
    keep_until_ms: u64,
    pub(crate) host: Box<str>,
    pub(crate) tags: Box<[String]>,
}

impl Kept for Indexed {
    fn keep_until_ms(&self) -> u64 {
        self.keep_until_ms
    }
}

impl Indexed {
    fn of(entry: &Entry) -> Self {
        Self {
            bytes: u32::try_from(entry.stored_size()).unwrap_or(u32::MAX),
            keep_until_ms: entry.keep_until_ms(),
            host: entry.host.as_str().into(),
            tags: entry.fresh.tags.clone().into(),
        }
    }
}

/// The tier's index over the state store.
pub(crate) struct DiskTier {
    store: Arc<dyn Store>,
    index: moka::sync::Cache<Arc<str>, Arc<Indexed>>,
    writes: mpsc::Sender<Write>,
    writer: Option<JoinHandle<()>>,
}

enum Write {
    Put(Arc<str>, Arc<Entry>),
    Delete(Arc<str>),
    /// Answers once every earlier write has reached the store.
    Barrier(mpsc::Sender<()>),
    Stop,
}

/// The outcome of a read.
pub(crate) enum Read {
    Found(Arc<Entry>),
    Absent,
    /// Dropped from the tier (and logged); the caller fetches it again.
    Corrupt,
}

impl DiskTier {
    /// The tier in `store`, bounded to `bound` bytes. The index is rebuilt from the store in the
    /// background: until then, entries not yet indexed are misses.
    pub(crate) fn open(store: Arc<dyn Store>, bound: u64) -> Self {
        let (writes, inbox) = mpsc::channel();
        let deletes = writes.clone();
        let index = moka::sync::Cache::builder()
            .max_capacity(bound)
            .weigher(|key: &Arc<str>, indexed: &Arc<Indexed>| {
                u32::try_from(key.len())
                    .unwrap_or(u32::MAX)
                    .saturating_add(indexed.bytes)
            })
            .expire_after(UntilUseless)
            .eviction_listener(move |key, _, cause| {
                // A replaced entry's new value is already queued for writing.
                if cause != RemovalCause::Replaced {
                    let _ = deletes.send(Write::Delete(Arc::clone(&key)));
                }
            })
            .build();
        let writer = {
            let (store, index) = (Arc::clone(&store), index.clone());
            std::thread::Builder::new()
                .name("gatehouse-cache-disk".into())
                .spawn(move || {
                    rebuild(store.as_ref(), &index);
                    write_in_order(store.as_ref(), &inbox);
                })
                .expect("spawning the cache writer thread")
        };
        Self {
            store,
            index,
            writes,
            writer: Some(writer),
        }
    }

    /// Queues `entry` for storing under `key`.
    pub(crate) fn put(&self, key: Arc<str>, entry: Arc<Entry>) {
        self.index
            .insert(Arc::clone(&key), Arc::new(Indexed::of(&entry)));
        let _ = self.writes.send(Write::Put(key, entry));
    }

    /// Reads `key` from the store on the blocking pool (only call this after a memory miss).
    pub(crate) async fn get(&self, key: &Arc<str>) -> Read {
        if !self.index.contains_key(key) {
            return Read::Absent;
        }
        let (store, wanted) = (Arc::clone(&self.store), Arc::clone(key));
        let value = actix_web::web::block(move || store.get(Tree::HttpCache, wanted.as_bytes()));
        match value.await {
            Ok(Ok(Some(value))) => match persist::decode(&Bytes::from(value)) {
                Ok(entry) => Read::Found(Arc::new(entry)),
                Err(corrupt) => {
                    warn!(key = %key, error = %corrupt, "dropping a corrupt cache entry");
                    self.index.invalidate(key);
                    Read::Corrupt
                }
            },
            // Indexed but not written yet, or just deleted.
            Ok(Ok(None)) => Read::Absent,
            Ok(Err(err)) => {
                warn!(key = %key, error = %err, "cache read failed; fetching again");
                Read::Absent
            }
            Err(_) => Read::Absent,
        }
    }

    /// Every indexed key with what the index knows of it.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (Arc<Arc<str>>, Arc<Indexed>)> + '_ {
        self.index.iter()
    }

    /// Drops `key` from the tier.
    pub(crate) fn remove(&self, key: &Arc<str>) {
        self.index.invalidate(key);
    }

    /// Entries and the bytes they weigh.
    pub(crate) fn usage(&self) -> (u64, u64) {
        self.index.run_pending_tasks();
        (self.index.entry_count(), self.index.weighted_size())
    }

    /// Waits (up to `within`) until every queued write has reached the store.
    pub(crate) fn flush(&self, within: Duration) {
        self.index.run_pending_tasks();
        let (done, wait) = mpsc::channel();
        if self.writes.send(Write::Barrier(done)).is_ok() && wait.recv_timeout(within).is_err() {
            warn!("cache writes still queued at the flush deadline");
        }
    }
}

impl Drop for DiskTier {
    fn drop(&mut self) {
        let _ = self.writes.send(Write::Stop);
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Indexes what the store holds, deleting what is corrupt or no longer useful.
fn rebuild(store: &dyn Store, index: &moka::sync::Cache<Arc<str>, Arc<Indexed>>) {
    let now = now_ms();
    let (mut kept, mut dropped) = (0_u64, Vec::new());
    let visited = store.visit(Tree::HttpCache, &mut |key, value| {
        let entry = std::str::from_utf8(key)
            .ok()
            .zip(persist::decode(&Bytes::copy_from_slice(value)).ok());
        match entry {
            Some((key, entry)) if entry.keep_until_ms() > now => {
                index
                    .entry(Arc::from(key))
                    .or_insert_with(|| Arc::new(Indexed::of(&entry)));
                kept += 1;
            }
            _ => dropped.push(key.to_vec()),
        }
        true
    });
    if let Err(err) = visited {
        warn!(error = %err, "cannot read the persistent cache; it starts empty");
    }
    for key in &dropped {
        let _ = store.delete(Tree::HttpCache, key);
    }
    if kept + dropped.len() as u64 > 0 {
        info!(
            entries = kept,
            dropped = dropped.len(),
            "persistent cache indexed"
        );
    }
}

fn write_in_order(store: &dyn Store, inbox: &mpsc::Receiver<Write>) {
    for write in inbox {
        let done = match write {
            Write::Put(key, entry) => {
                store.put(Tree::HttpCache, key.as_bytes(), &persist::encode(&entry))
            }
            Write::Delete(key) => store.delete(Tree::HttpCache, key.as_bytes()),
            Write::Barrier(done) => {
                let _ = done.send(());
                Ok(())
            }
            Write::Stop => return,
        };
        if let Err(err) = done {
            warn!(error = %err, "cache write failed; the entry is refetched when next asked for");
        }
    }
}
