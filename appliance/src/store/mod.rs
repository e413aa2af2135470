//! The state store: a narrow key-value interface over named trees, so subsystems never see sled
//! (and a shared Redis tier can sit behind the same calls later).
//!
//! Everything stored here must be rebuildable: sled has known corruption reports after abrupt
//! stops, so losing the store may cost warm caches and history, never correctness.

mod log;
mod sled_store;

use std::path::{Path, PathBuf};

pub use log::BoundedLog;
pub use sled_store::SledStore;

/// A tree of the store: one namespace per subsystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    /// Facts about this installation (instance id).
    Meta,
    /// Compiled policy plugins, keyed by the wasm's hash and the engine's (rebuildable).
    Artifacts,
    /// Policy plugins' private key-value stores, each under its plugin's name.
    PluginKv,
    /// The response cache's persistent tier, by cache key (rebuildable: a lost entry is a miss).
    HttpCache,
    /// Alert firings and resolutions, by time (a bounded history).
    Alerts,
    /// Metric time series: the series names, and one frame of values per tier and step.
    Trends,
    /// Scheduled load test runs, by time (a bounded history).
    LoadTests,
    /// ACME accounts and the certificates obtained, with their private keys (not rebuildable
    /// without asking the CA again, which limits how often it issues).
    Certificates,
}

impl Tree {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Meta => "meta",
            Self::Artifacts => "artifacts",
            Self::PluginKv => "plugin-kv",
            Self::HttpCache => "http-cache",
            Self::Alerts => "alerts",
            Self::Trends => "trends",
            Self::LoadTests => "load-tests",
            Self::Certificates => "certificates",
        }
    }
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// The operations subsystems may use.
pub trait Store: Send + Sync {
    /// The value under `key`, if any.
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores `value` under `key`, replacing what was there.
    fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Removes `key`; removing a missing key is not an error.
    fn delete(&self, tree: Tree, key: &[u8]) -> Result<(), StoreError>;
    /// Every key starting with `prefix`, with its value, in key order.
    fn scan_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<Entry>, StoreError>;
    /// Calls `visit` with every key from `start` on and its value, in key order, one at a time
    /// (a tree may be larger than memory), until it returns false.
    fn visit_from(
        &self,
        tree: Tree,
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError>;
    /// [`Store::visit_from`] the first key.
    fn visit(
        &self,
        tree: Tree,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        self.visit_from(tree, &[], visit)
    }
    /// Makes every write so far durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// A write-read round trip and the size on disk, for `/healthz` and `/readyz`.
    fn probe(&self) -> Result<StoreReport, StoreError>;
}

/// What the store reports about itself when healthy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoreReport {
    /// Engine name.
    pub engine: &'static str,
    /// The data directory.
    pub dir: PathBuf,
    /// Bytes used on disk.
    pub size_on_disk: u64,
}

/// Why the store cannot be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory cannot be created or written.
    #[error("state dir {}: not writable: {source}", dir.display())]
    Unwritable {
        /// The directory.
        dir: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Another process holds the lock.
    #[error("state dir {} is in use by another gatehouse{}; stop it or set state.dir to another directory", dir.display(), holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default())]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// The pid written by the holder, if readable.
        holder: Option<u32>,
    },
    /// The embedded database failed.
    #[error("state store: {0}")]
    Engine(#[from] sled::Error),
}

/// Checks, without creating or locking anything, that `dir` could be used as the state dir:
/// for `gatehouse check`, which must work while a gatehouse is running on the same dir.
pub fn check_dir(dir: &Path) -> Result<(), StoreError> {
    let unwritable = |source| StoreError::Unwritable {
        dir: dir.to_owned(),
        source,
    };
    // The nearest existing ancestor is where a directory would be created.
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("."));
    let meta = std::fs::metadata(existing).map_err(unwritable)?;
    if !meta.is_dir() {
        return Err(unwritable(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            format!("{} is not a directory", existing.display()),
        )));
    }
    let probe = existing.join(format!(".gatehouse-check-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(unwritable)?;
    std::fs::remove_file(&probe).map_err(unwritable)
}
