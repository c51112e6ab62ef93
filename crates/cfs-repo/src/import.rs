//! Completing a content-less scan ([`ScanOptions::skip_content`]) by storing
//! every file's content in an object store, on the rayon pool, in scan order:
//! each file is read once, hashed while it is copied, and its node gets its digest and
//! payload (`ab/cdef…`). Files of at most [`INLINE_CONTENT_MAX`] bytes stay
//! in the image (inline content) and are not stored, as composefs does.
//!
//! Every file is opened through the scan's root fd and checked to be the
//! inode the scan saw ([`SourceTree::open`]); a file swapped or changed
//! since fails the import with [`ImportError::Source`] naming it.
//!
//! [`ScanOptions::skip_content`]: crate::scan::ScanOptions::skip_content

use crate::scan::{Scan, INLINE_CONTENT_MAX};
use crate::source::{Identity, ScannedFile, SourceError, SourceTree};
use crate::store::{ObjectStore, SourceFile, StoreError};
use cfs_format::Digest;
use rayon::prelude::*;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Why storing a scan's files failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// A source file was replaced or changed since the scan (or could not be opened).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The store could not take it.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Counters updated as files are stored, for a progress display polling them.
#[derive(Debug, Default)]
pub struct Progress {
    /// Files to store in all (set before the copy starts).
    pub total_files: AtomicU64,
    /// Bytes to store in all.
    pub total_bytes: AtomicU64,
    /// Files done.
    pub files: AtomicU64,
    /// Bytes read so far (whole files).
    pub bytes: AtomicU64,
    /// Objects that were not in the store before.
    pub new_objects: AtomicU64,
    /// Bytes of those new objects.
    pub new_bytes: AtomicU64,
}

impl Progress {
    /// A snapshot of the counters.
    pub fn stats(&self) -> ImportStats {
        let bytes = self.bytes.load(Ordering::Relaxed);
        let new_bytes = self.new_bytes.load(Ordering::Relaxed);
        ImportStats {
            files: self.files.load(Ordering::Relaxed),
            bytes,
            new_objects: self.new_objects.load(Ordering::Relaxed),
            new_bytes,
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportStats {
    /// Regular, non-empty files read.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Objects added to the store.
    pub new_objects: u64,
    /// Bytes added to the store.
    pub new_bytes: u64,
}

impl ImportStats {
    /// Bytes not written thanks to dedup (content already stored, or inline).
    pub fn saved_bytes(&self) -> u64 {
        self.bytes.saturating_sub(self.new_bytes)
    }
}

/// Stores the content of every file in `scan.unread` in `store` and completes
/// the tree's nodes; `scan.unread` is emptied. Stops at the first error,
/// which names the file.
pub fn store_contents(
    scan: &mut Scan,
    store: &ObjectStore,
    progress: &Progress,
) -> Result<ImportStats, ImportError> {
    let jobs = std::mem::take(&mut scan.unread);
    progress
        .total_files
        .store(jobs.len() as u64, Ordering::Relaxed);
    progress
        .total_bytes
        .store(jobs.iter().map(|f| f.seen.size).sum(), Ordering::Relaxed);
    // In scan order (the files of a directory together), each worker taking
    // the next file when it is free: objects are created, and their inodes
    // allocated, in about that order, so the objects of one directory sit
    // close together on disk. A program that later loads the files of a
    // directory (python's modules) then reads a few inode-table blocks, not
    // one per file: stored largest first, the 159 objects of a python
    // start-up were spread over 157 inode-table blocks of 13 block groups
    // (43 blocks of 3 groups in tree order), and its cold start ran slower
    // than composefs-rs's on the same image.
    let source = &scan.source;
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let store_one = |job: &ScannedFile| {
        let size = job.seen.size;
        let stored = if size <= INLINE_CONTENT_MAX {
            let content = read_small(source, job)?;
            (cfs_format::fsverity::digest(&content), Some(content))
        } else {
            let file = source.open(job)?;
            let ins = store.insert_file(SourceFile {
                file: &file,
                path: &source.file_path(job),
                seen: job.seen,
            })?;
            if ins.new {
                progress.new_objects.fetch_add(1, Ordering::Relaxed);
                progress.new_bytes.fetch_add(ins.size, Ordering::Relaxed);
            }
            (ins.digest, None)
        };
        progress.files.fetch_add(1, Ordering::Relaxed);
        progress.bytes.fetch_add(size, Ordering::Relaxed);
        Ok::<_, ImportError>((job.node, stored))
    };
    let per_worker = (0..rayon::current_num_threads())
        .into_par_iter()
        .with_max_len(1)
        .map(|_| {
            let mut done = Vec::new();
            while !failed.load(Ordering::Relaxed) {
                let Some(job) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    break;
                };
                match store_one(job) {
                    Ok(r) => done.push(r),
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
            Ok(done)
        })
        .collect::<Result<Vec<_>, ImportError>>()?;
    let results = per_worker.into_iter().flatten();
    for (id, (digest, content)) in results {
        set_content(scan, id, digest, content);
    }
    Ok(progress.stats())
}

fn set_content(scan: &mut Scan, id: cfs_format::NodeId, digest: Digest, content: Option<Vec<u8>>) {
    let node = scan.tree.node_mut(id);
    node.payload = Some(digest.object_path().into_bytes());
    node.digest = Some(digest);
    node.content = content;
}

/// Reads a file that goes inline, checking it is still what the scan saw.
fn read_small(source: &SourceTree, job: &ScannedFile) -> Result<Vec<u8>, ImportError> {
    let file = source.open(job)?;
    let path = || source.file_path(job);
    let mut content = Vec::with_capacity(job.seen.size as usize);
    (&file)
        .take(INLINE_CONTENT_MAX + 1)
        .read_to_end(&mut content)
        .map_err(|e| StoreError::std_io("read", &path())(e))?;
    let after = Identity::of(&file).map_err(|e| StoreError::io("stat", &path())(e))?;
    let changed = if content.len() as u64 != job.seen.size {
        Some(format!(
            "size was {}, read {}",
            job.seen.size,
            content.len()
        ))
    } else {
        job.seen.difference(&after)
    };
    if let Some(what) = changed {
        return Err(StoreError::SourceChanged { path: path(), what }.into());
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{scan, ScanOptions};

    const SECRET: &[u8] = b"root-only secret bytes, longer than sixty-four bytes so not inline!";

    /// A tree `d/big` (external) and `d/small` (inline), scanned without
    /// content, and beside it a `secret` directory with the same names.
    fn scanned() -> (tempfile::TempDir, Scan) {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        for dir in ["tree/d", "secret"] {
            std::fs::create_dir_all(t.join(dir)).unwrap();
        }
        std::fs::write(t.join("tree/d/big"), vec![7u8; 5000]).unwrap();
        std::fs::write(t.join("tree/d/small"), b"mine").unwrap();
        std::fs::write(t.join("secret/big"), SECRET.repeat(100)).unwrap();
        std::fs::write(t.join("secret/small"), &SECRET[..4]).unwrap();
        let options = ScanOptions {
            skip_content: true,
            ..ScanOptions::default()
        };
        let s = scan(&t.join("tree"), &options).unwrap();
        (tmp, s)
    }

    fn store_in(tmp: &tempfile::TempDir) -> ObjectStore {
        ObjectStore::create(&tmp.path().join("objects")).unwrap()
    }

    fn assert_no_secret(store: &ObjectStore) {
        for e in store.list().unwrap() {
            let bytes = std::fs::read(store.path().join(&e.path)).unwrap();
            assert!(
                !bytes.starts_with(&SECRET[..4]),
                "{} holds secret bytes",
                e.path.display()
            );
        }
    }

    #[test]
    fn stores_the_scanned_files() {
        let (tmp, mut s) = scanned();
        let store = store_in(&tmp);
        let stats = store_contents(&mut s, &store, &Progress::default()).unwrap();
        assert_eq!((stats.files, stats.new_objects), (2, 1));
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_fails_naming_the_file() {
        let (tmp, mut s) = scanned();
        let t = tmp.path();
        std::fs::rename(t.join("tree/d"), t.join("d-was")).unwrap();
        std::os::unix::fs::symlink(t.join("secret"), t.join("tree/d")).unwrap();
        let store = store_in(&tmp);
        let e = store_contents(&mut s, &store, &Progress::default()).unwrap_err();
        assert!(
            matches!(e, ImportError::Source(SourceError::Changed { .. })),
            "{e}"
        );
        assert!(e.to_string().contains("tree/d/"), "{e}");
        assert!(
            e.to_string().contains("a symlink is now on its path"),
            "{e}"
        );
        assert_no_secret(&store);
    }

    #[test]
    fn a_directory_swapped_for_another_directory_fails_naming_the_file() {
        let (tmp, mut s) = scanned();
        let t = tmp.path();
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            t.join("tree/d"),
            rustix::fs::CWD,
            t.join("secret"),
            rustix::fs::RenameFlags::EXCHANGE,
        )
        .unwrap();
        let store = store_in(&tmp);
        let e = store_contents(&mut s, &store, &Progress::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("changed since it was scanned (it is another file"),
            "{e}"
        );
        assert_no_secret(&store);
    }

    #[test]
    fn a_final_name_swapped_for_a_symlink_fails() {
        for name in ["big", "small"] {
            let (tmp, mut s) = scanned();
            let t = tmp.path();
            let p = t.join("tree/d").join(name);
            std::fs::remove_file(&p).unwrap();
            std::os::unix::fs::symlink(t.join("secret").join(name), &p).unwrap();
            let store = store_in(&tmp);
            let e = store_contents(&mut s, &store, &Progress::default()).unwrap_err();
            assert!(e.to_string().contains(&format!("tree/d/{name}")), "{e}");
            assert_no_secret(&store);
        }
    }
}
