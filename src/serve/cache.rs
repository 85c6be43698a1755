//! A shared in-memory cache of served files (iPXE binaries for TFTP, kernels and initramfs
//! for HTTP): one copy per file version for all clients, revalidated against the file's inode,
//! mtime and size on every use, so replacing a file on disk takes effect at once.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

/// Files held in memory, shared by every transfer or download of the same file version.
pub struct FileCache {
    /// Larger files are not cached (callers stream them from disk).
    max_file: u64,
    /// Total bytes held; a file that would exceed it is served but not kept.
    max_total: u64,
    /// Keyed by canonical path; an entry is used only while the file's identity (inode,
    /// mtime, size) is unchanged, and is replaced when it changes.
    entries: Mutex<HashMap<PathBuf, CachedFile>>,
}

struct CachedFile {
    identity: FileIdentity,
    bytes: Arc<[u8]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    inode: u64,
    modified: Option<SystemTime>,
    len: u64,
}

impl FileIdentity {
    fn of(metadata: &std::fs::Metadata) -> FileIdentity {
        FileIdentity {
            inode: metadata.ino(),
            modified: metadata.modified().ok(),
            len: metadata.len(),
        }
    }
}

impl FileCache {
    pub fn new(max_file: u64, max_total: u64) -> FileCache {
        FileCache {
            max_file,
            max_total,
            entries: Mutex::default(),
        }
    }

    /// The file's bytes from the cache, loading them if needed; `None` when the file is too
    /// large to cache or cannot be read whole (the caller reads from disk instead).
    pub fn get_or_load(
        &self,
        path: &Path,
        metadata: &std::fs::Metadata,
        file: &File,
    ) -> Option<Arc<[u8]>> {
        let identity = FileIdentity::of(metadata);
        if identity.len > self.max_file {
            return None;
        }
        if let Some(cached) = self.lock().get(path)
            && cached.identity == identity
        {
            return Some(Arc::clone(&cached.bytes));
        }
        // Read without the lock held; two concurrent first requests may both read, which is
        // cheaper than making every other request wait.
        let len = usize::try_from(identity.len).ok()?;
        let mut bytes = vec![0; len];
        file.read_exact_at(&mut bytes, 0).ok()?;
        let bytes: Arc<[u8]> = bytes.into();
        let mut entries = self.lock();
        let others: u64 = entries
            .iter()
            .filter(|(cached_path, _)| cached_path.as_path() != path)
            .map(|(_, cached)| cached.identity.len)
            .sum();
        if others + identity.len <= self.max_total {
            entries.insert(
                path.to_owned(),
                CachedFile {
                    identity,
                    bytes: Arc::clone(&bytes),
                },
            );
        }
        Some(bytes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, CachedFile>> {
        // Entries are inserted whole, so a panic elsewhere cannot leave one half-written.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_shares_one_copy_until_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"first").unwrap();
        let cache = FileCache::new(1 << 20, 1 << 20);
        let load = |cache: &FileCache| {
            let file = File::open(&path).unwrap();
            let metadata = file.metadata().unwrap();
            cache
                .get_or_load(&path, &metadata, &file)
                .expect("small file is cached")
        };
        let a = load(&cache);
        let b = load(&cache);
        assert!(Arc::ptr_eq(&a, &b), "second transfer shares the first copy");
        std::fs::write(&path, b"second version").unwrap();
        let c = load(&cache);
        assert_eq!(&*c, b"second version");
        assert_eq!(cache.lock().len(), 1, "the stale version was replaced");
    }
}
