//! What a plugin is given besides its code: its name, its config string, its grants, its limits,
//! and its private key-value store.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::store::{Store, StoreError, Tree};

/// A grantable host interface.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Grant {
    /// `gatehouse:policy/log`.
    Log,
    /// `gatehouse:policy/clock`.
    Now,
    /// `gatehouse:policy/kv`.
    Kv,
    /// `gatehouse:policy/plugin-config`.
    Config,
}

impl Grant {
    /// The interface (without package and version) the grant opens.
    pub fn interface(self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Now => "clock",
            Self::Kv => "kv",
            Self::Config => "plugin-config",
        }
    }

    /// The grant's name in config.
    pub fn name(self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Now => "now",
            Self::Kv => "kv",
            Self::Config => "config",
        }
    }

    pub(crate) const ALL: [Grant; 4] = [Grant::Log, Grant::Now, Grant::Kv, Grant::Config];
}

/// Resource limits of every call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Wall-clock time one call may take.
    pub deadline: Duration,
    /// Linear memory the plugin may grow to.
    pub memory_bytes: usize,
    /// Bytes of keys and values the plugin's `kv` may hold.
    pub kv_bytes: usize,
}

/// Everything about a plugin but its code.
pub struct Settings {
    /// The plugin's name in config.
    pub name: String,
    /// What `plugin-config.get` returns (the config table as JSON).
    pub config: String,
    /// The interfaces the plugin may import.
    pub grants: BTreeSet<Grant>,
    /// Its limits.
    pub limits: Limits,
    /// Its key-value store, when gatehouse has a state store.
    pub(crate) kv: Option<PluginKv>,
}

/// A plugin's slice of the state store, with the bytes it uses counted against its quota.
pub(crate) struct PluginKv {
    pub(crate) store: Arc<dyn Store>,
    prefix: Vec<u8>,
    quota: usize,
    used: AtomicUsize,
}

/// Why a `kv` write was refused.
pub(crate) enum KvError {
    Quota,
    Store(String),
}

impl PluginKv {
    /// The plugin `name`'s store, with what it already holds counted.
    pub(crate) fn open(
        store: Arc<dyn Store>,
        name: &str,
        quota: usize,
    ) -> Result<Self, StoreError> {
        let prefix = [name.as_bytes(), b"\0"].concat();
        let used = store
            .scan_prefix(Tree::PluginKv, &prefix)?
            .iter()
            .map(|(key, value)| key.len() - prefix.len() + value.len())
            .sum();
        Ok(Self {
            store,
            prefix,
            quota,
            used: AtomicUsize::new(used),
        })
    }

    pub(crate) fn key(&self, key: &str) -> Vec<u8> {
        [self.prefix.as_slice(), key.as_bytes()].concat()
    }

    pub(crate) fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        let full = self.key(key);
        let old = self
            .store
            .get(Tree::PluginKv, &full)
            .map_err(|e| KvError::Store(e.to_string()))?;
        let old_size = old.map_or(0, |v| key.len() + v.len());
        let new_size = key.len() + value.len();
        let used = self.used.load(Ordering::Relaxed);
        if used - old_size.min(used) + new_size > self.quota {
            return Err(KvError::Quota);
        }
        self.store
            .put(Tree::PluginKv, &full, value)
            .map_err(|e| KvError::Store(e.to_string()))?;
        self.used.fetch_add(new_size, Ordering::Relaxed);
        self.used.fetch_sub(old_size, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn delete(&self, key: &str) {
        let full = self.key(key);
        if let Ok(Some(old)) = self.store.get(Tree::PluginKv, &full)
            && self.store.delete(Tree::PluginKv, &full).is_ok()
        {
            self.used
                .fetch_sub(key.len() + old.len(), Ordering::Relaxed);
        }
    }
}
