//! A bounded log in one tree of the store: JSON records under time-ordered keys, the oldest
//! dropped beyond a bound. Alert history and load test runs are kept this way.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Store, StoreError, Tree};

/// Records in `tree`, at most `bound` of them.
pub struct BoundedLog {
    store: Arc<dyn Store>,
    tree: Tree,
    bound: usize,
    /// Orders records appended in the same microsecond.
    sequence: AtomicU32,
}

impl BoundedLog {
    /// The log in `tree` of `store`, keeping `bound` records.
    pub fn new(store: Arc<dyn Store>, tree: Tree, bound: usize) -> Self {
        Self {
            store,
            tree,
            bound,
            sequence: AtomicU32::new(0),
        }
    }

    /// Appends `record`, then drops the oldest beyond the bound.
    pub fn append(&self, record: &impl Serialize) -> Result<(), StoreError> {
        let micros = chrono::Utc::now().timestamp_micros().max(0) as u64;
        let mut key = micros.to_be_bytes().to_vec();
        key.extend_from_slice(&self.sequence.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        let value = serde_json::to_vec(record).expect("log records serialize");
        self.store.put(self.tree, &key, &value)?;
        let mut keys = Vec::new();
        self.store.visit(self.tree, &mut |key, _| {
            keys.push(key.to_vec());
            true
        })?;
        for key in keys.iter().take(keys.len().saturating_sub(self.bound)) {
            self.store.delete(self.tree, key)?;
        }
        Ok(())
    }

    /// The latest `count` records, newest first (records that no longer parse are skipped).
    pub fn latest<T: DeserializeOwned>(&self, count: usize) -> Vec<T> {
        let mut records = Vec::new();
        let _ = self.store.visit(self.tree, &mut |_, value| {
            if let Ok(record) = serde_json::from_slice(value) {
                records.push(record);
            }
            true
        });
        records.reverse();
        records.truncate(count);
        records
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::SledStore;

    #[test]
    fn keeps_the_newest_records_up_to_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SledStore::open(dir.path(), 1 << 20, Duration::from_millis(100)).unwrap());
        let log = BoundedLog::new(store, Tree::Alerts, 3);
        for n in 0..5 {
            log.append(&n).unwrap();
        }
        assert_eq!(log.latest::<u32>(10), [4, 3, 2]);
        assert_eq!(log.latest::<u32>(1), [4]);
    }
}
