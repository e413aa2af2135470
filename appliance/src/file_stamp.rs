//! Noticing that a file changed, by polling its metadata. Polling catches what inotify misses:
//! a symlink flipped to a new target (certbot's `live/`, Kubernetes secret volumes) and files
//! replaced by rename, and it needs no watcher thread. Writing one whole ([`write_atomically`])
//! is here too.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

/// What changes when a file is rewritten or replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStamp {
    /// The stamp of the file at `path` (following symlinks); `None` when it cannot be read.
    pub fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode: meta.ino(),
        })
    }
}

/// Replaces the file at `path` with `bytes` by writing a sibling and renaming it over, so a
/// reader (or a crash) sees the old file or the new one, never half of one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically_with_mode(path, bytes, 0o666)
}

/// As [`write_atomically`], the new file made with `mode` (less the umask), so that a private
/// key is never readable by others, not even for a moment.
pub(crate) fn write_atomically_with_mode(
    path: &Path,
    bytes: &[u8],
    mode: u32,
) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut sibling = path.as_os_str().to_owned();
    sibling.push(".new");
    let sibling = std::path::PathBuf::from(sibling);
    // A leftover from a crash keeps its own mode when opened: start afresh.
    let _ = std::fs::remove_file(&sibling);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&sibling)
        .and_then(|mut file| {
            std::io::Write::write_all(&mut file, bytes)?;
            file.sync_all()
        });
    match written.and_then(|()| std::fs::rename(&sibling, path)) {
        Ok(()) => Ok(()),
        Err(err) => {
            let _ = std::fs::remove_file(&sibling);
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewriting_or_replacing_a_file_changes_its_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin.wasm");
        assert_eq!(FileStamp::of(&path), None);
        std::fs::write(&path, b"one").unwrap();
        let first = FileStamp::of(&path).unwrap();
        assert_eq!(FileStamp::of(&path), Some(first));
        std::fs::write(&path, b"three").unwrap();
        let rewritten = FileStamp::of(&path).unwrap();
        assert_ne!(rewritten, first, "length changed");
        let replacement = dir.path().join("next.wasm");
        std::fs::write(&replacement, b"three").unwrap();
        std::fs::rename(&replacement, &path).unwrap();
        assert_ne!(FileStamp::of(&path).unwrap(), rewritten, "inode changed");
    }
}
