//! Completing a content-less scan ([`ScanOptions::skip_content`]) by storing
//! every file's content in an object store, on the rayon pool, in scan order:
//! each file is read once, hashed while it is copied, and its node gets its digest and
//! payload (`ab/cdef…`). Files of at most [`INLINE_CONTENT_MAX`] bytes stay
//! in the image (inline content) and are not stored, as composefs does.
//!
//! [`ScanOptions::skip_content`]: crate::scan::ScanOptions::skip_content

use crate::scan::{Scan, INLINE_CONTENT_MAX};
use crate::store::{ObjectStore, SourceFile, StoreError};
use cfs_format::Digest;
use cfs_format::NodeId;
use rayon::prelude::*;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

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
) -> Result<ImportStats, StoreError> {
    let jobs: Vec<_> = std::mem::take(&mut scan.unread)
        .into_iter()
        .map(|(id, path)| {
            let size = scan.tree.node(id).stat.size;
            (id, path, size)
        })
        .collect();
    progress
        .total_files
        .store(jobs.len() as u64, Ordering::Relaxed);
    progress.total_bytes.store(
        jobs.iter().map(|(_, _, size)| size).sum(),
        Ordering::Relaxed,
    );
    // In scan order (the files of a directory together), each worker taking
    // the next file when it is free: objects are created, and their inodes
    // allocated, in about that order, so the objects of one directory sit
    // close together on disk. A program that later loads the files of a
    // directory (python's modules) then reads a few inode-table blocks, not
    // one per file: stored largest first, the 159 objects of a python
    // start-up were spread over 157 inode-table blocks of 13 block groups
    // (43 blocks of 3 groups in tree order), and its cold start ran slower
    // than composefs-rs's on the same image.
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let store_one = |(id, ref path, size): &(NodeId, PathBuf, u64)| {
        let size = *size;
        let stored = if size <= INLINE_CONTENT_MAX {
            let content = read_small(path, size)?;
            (cfs_format::fsverity::digest(&content), Some(content))
        } else {
            let ins = store.insert_file(SourceFile {
                path,
                size: Some(size),
            })?;
            if ins.new {
                progress.new_objects.fetch_add(1, Ordering::Relaxed);
                progress.new_bytes.fetch_add(ins.size, Ordering::Relaxed);
            }
            (ins.digest, None)
        };
        progress.files.fetch_add(1, Ordering::Relaxed);
        progress.bytes.fetch_add(size, Ordering::Relaxed);
        Ok::<_, StoreError>((*id, stored))
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
        .collect::<Result<Vec<_>, StoreError>>()?;
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

/// Reads a file that goes inline, checking it still has the size the scan saw.
fn read_small(path: &Path, size: u64) -> Result<Vec<u8>, StoreError> {
    let file = std::fs::File::open(path).map_err(StoreError::std_io("open", path))?;
    let mut content = Vec::with_capacity(size as usize);
    file.take(INLINE_CONTENT_MAX + 1)
        .read_to_end(&mut content)
        .map_err(StoreError::std_io("read", path))?;
    if content.len() as u64 != size {
        return Err(StoreError::SourceChanged {
            path: path.to_path_buf(),
            what: format!("size was {size}, read {}", content.len()),
        });
    }
    Ok(content)
}
