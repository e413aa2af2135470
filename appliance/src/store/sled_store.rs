//! The embedded default: sled in the state dir, guarded by a lock file that names its holder.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Entry, Store, StoreError, StoreReport, Tree};

/// sled behind [`Store`]. The lock file stays locked for the store's lifetime.
pub struct SledStore {
    db: sled::Db,
    dir: PathBuf,
    _lock: File,
}

const LOCK_FILE: &str = "gatehouse.lock";
const PROBE_PREFIX: &[u8] = b"probe-";

impl SledStore {
    /// Opens (creating when missing) the store in `dir` with a page cache of `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: u64, flush_every: Duration) -> Result<Self, StoreError> {
        let unwritable = |source| StoreError::Unwritable {
            dir: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(unwritable)?;
        let lock = lock(dir)?;
        let data = dir.join("sled");
        private_dir(&data).map_err(unwritable)?;
        let db = sled::Config::new()
            .path(data)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(flush_every.as_millis().max(1) as u64))
            .open()?;
        Ok(Self {
            db,
            dir: dir.to_owned(),
            _lock: lock,
        })
    }

    fn tree(&self, tree: Tree) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(tree.name())?)
    }
}

/// Makes `dir` (created when missing) readable by gatehouse's user only: it holds private keys
/// (ACME certificates, the admin token's digest, plugins' stores).
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Takes the exclusive lock on `dir` and writes our pid into it, so a second gatehouse can say
/// who holds it. The lock is released by the OS when the process ends, even on kill -9.
fn lock(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| StoreError::Unwritable {
            dir: dir.to_owned(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let holder = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse().ok());
            return Err(StoreError::Locked {
                dir: dir.to_owned(),
                holder,
            });
        }
        Err(TryLockError::Error(source)) => {
            return Err(StoreError::Unwritable {
                dir: dir.to_owned(),
                source,
            });
        }
    }
    let write_pid = |file: &mut File| -> std::io::Result<()> {
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        file.flush()
    };
    write_pid(&mut file).map_err(|source| StoreError::Unwritable {
        dir: dir.to_owned(),
        source,
    })?;
    Ok(file)
}

impl Store for SledStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree(tree)?.get(key)?.map(|v| v.to_vec()))
    }

    fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.tree(tree)?.insert(key, value)?;
        Ok(())
    }

    fn delete(&self, tree: Tree, key: &[u8]) -> Result<(), StoreError> {
        self.tree(tree)?.remove(key)?;
        Ok(())
    }

    fn scan_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        self.tree(tree)?
            .scan_prefix(prefix)
            .map(|entry| {
                entry
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(StoreError::from)
            })
            .collect()
    }

    fn visit_from(
        &self,
        tree: Tree,
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        for entry in self.tree(tree)?.range(start..) {
            let (key, value) = entry?;
            if !visit(&key, &value) {
                break;
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn probe(&self) -> Result<StoreReport, StoreError> {
        // A key of its own per probe: health checks run concurrently.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let key = [
            PROBE_PREFIX,
            &NEXT.fetch_add(1, Ordering::Relaxed).to_be_bytes(),
        ]
        .concat();
        let meta = self.tree(Tree::Meta)?;
        meta.insert(&key, b"ok")?;
        let read = meta.remove(&key)?;
        if read.as_deref() != Some(&b"ok"[..]) {
            return Err(StoreError::Engine(sled::Error::ReportableBug(
                "probe read back a different value".into(),
            )));
        }
        Ok(StoreReport {
            engine: "sled",
            dir: self.dir.clone(),
            size_on_disk: self.db.size_on_disk()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Result<SledStore, StoreError> {
        SledStore::open(dir, 1 << 20, Duration::from_millis(100))
    }

    #[test]
    fn round_trips_and_survives_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let store = open(tmp.path()).unwrap();
            store.put(Tree::Meta, b"k", b"v").unwrap();
            store.flush().unwrap();
            assert!(store.probe().unwrap().size_on_disk > 0);
        }
        let store = open(tmp.path()).unwrap();
        assert_eq!(
            store.get(Tree::Meta, b"k").unwrap().as_deref(),
            Some(&b"v"[..])
        );
        store.put(Tree::Meta, b"k2", b"w").unwrap();
        store.put(Tree::Meta, b"j", b"x").unwrap();
        let scanned = store.scan_prefix(Tree::Meta, b"k").unwrap();
        assert_eq!(
            scanned,
            vec![
                (b"k".to_vec(), b"v".to_vec()),
                (b"k2".to_vec(), b"w".to_vec())
            ]
        );
        store.delete(Tree::Meta, b"k").unwrap();
        assert_eq!(store.get(Tree::Meta, b"k").unwrap(), None);
        let mut visited = Vec::new();
        store
            .visit(Tree::Meta, &mut |key, _| {
                visited.push(key.to_vec());
                visited.len() < 2
            })
            .unwrap();
        assert_eq!(
            visited,
            [b"j".to_vec(), b"k2".to_vec()],
            "in order, until told to stop"
        );
    }

    #[test]
    fn second_open_names_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let _first = open(tmp.path()).unwrap();
        let err = open(tmp.path()).err().expect("second open must fail");
        let text = err.to_string();
        assert!(
            matches!(err, StoreError::Locked { holder: Some(pid), .. } if pid == std::process::id()),
            "{text}"
        );
        assert!(text.contains("in use by another gatehouse"), "{text}");
    }

    #[test]
    fn unwritable_dir_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let dir = file.join("data");
        let err = open(&dir).err().expect("open under a file must fail");
        assert!(matches!(err, StoreError::Unwritable { .. }), "{err}");
        assert!(err.to_string().contains("not writable"), "{err}");
        assert!(super::super::check_dir(&dir).is_err());
        assert!(super::super::check_dir(&tmp.path().join("new/sub")).is_ok());
    }
}
