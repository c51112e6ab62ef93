//! A plain composefs object directory (`mkcomposefs --digest-store=DIR`):
//! each external file's content stored once under its object path `ab/cdef…`,
//! which is what an overlayfs data-only lower layer (or `basedir=`) expects.
//!
//! Copies go to a temporary name inside the store and are renamed into place,
//! so a crash never leaves a truncated object under a valid name. An object
//! that already exists is trusted and left alone, as C does.

use crate::scan::Scan;
use rayon::prelude::*;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Why an object could not be stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file system operation failed.
    #[error("could not {op} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Copies every external file of a scan into the object directory `store`
/// (created if missing), in parallel. Returns how many objects were added.
pub fn fill_store(store: &Path, scan: &Scan) -> Result<usize, StoreError> {
    fs::create_dir_all(store).map_err(io_err("create", store))?;
    let counter = AtomicU64::new(0);
    // One copy per object, even when several files share the content.
    let mut seen = std::collections::HashSet::new();
    let jobs: Vec<(&str, &PathBuf)> = scan
        .external
        .iter()
        .filter_map(|(id, src)| {
            let rel = scan.tree.node(*id).payload.as_deref()?;
            let rel = std::str::from_utf8(rel).ok()?;
            seen.insert(rel).then_some((rel, src))
        })
        .collect();
    let added = jobs
        .par_iter()
        .map(|&(rel, src)| {
            let dest = store.join(rel);
            if fs::symlink_metadata(&dest).is_ok() {
                return Ok(false);
            }
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(io_err("create", parent))?;
            }
            let tmp = store.join(format!(
                ".tmp-{}-{}",
                std::process::id(),
                counter.fetch_add(1, Ordering::Relaxed)
            ));
            let result = (|| {
                fs::copy(src, &tmp).map_err(io_err("copy", src))?;
                fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))
                    .map_err(io_err("chmod", &tmp))?;
                fs::File::open(&tmp)
                    .and_then(|f| f.sync_all())
                    .map_err(io_err("sync", &tmp))?;
                fs::rename(&tmp, &dest).map_err(io_err("rename", &dest))
            })();
            if result.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            result.map(|()| true)
        })
        .collect::<Result<Vec<bool>, StoreError>>()?;
    Ok(added.into_iter().filter(|&a| a).count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{scan, ScanOptions};

    #[test]
    fn stores_external_files_by_digest_once() {
        let src = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        fs::write(src.path().join("big"), &data).unwrap();
        fs::write(src.path().join("big-copy"), &data).unwrap();
        fs::write(src.path().join("small"), b"tiny").unwrap();
        let s = scan(src.path(), &ScanOptions::default()).unwrap();
        let store = tempfile::tempdir().unwrap();
        assert_eq!(fill_store(store.path(), &s).unwrap(), 1);
        let d = cfs_format::fsverity::digest(&data);
        assert_eq!(fs::read(store.path().join(d.object_path())).unwrap(), data);
        // Nothing else: no inline file, no temporary left behind.
        let top: Vec<_> = fs::read_dir(store.path()).unwrap().collect();
        assert_eq!(top.len(), 1);
        assert_eq!(fill_store(store.path(), &s).unwrap(), 0);
    }
}
