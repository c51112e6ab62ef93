//! Listing what an object directory holds and re-hashing objects.
//!
//! Every entry is classified: an object (`XX/` + 62 lowercase hex, a regular
//! file), a leftover temporary file (`.tmp-*`, from a killed writer using the
//! named fallback) or stray (anything else). Nothing is trusted by name: fsck
//! re-hashes each object and compares.

use super::{ObjectStore, StoreError};
use cfs_format::fsverity::digest_reader;
use cfs_format::Digest;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::ffi::CStr;
use std::os::fd::AsFd;
use std::path::PathBuf;

/// What an entry of the store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file named by a digest.
    Object(Digest),
    /// A temporary file left by an interrupted writer.
    Temporary,
    /// Anything else: a badly named file, a symlink, a directory that does not belong.
    Stray,
}

/// One entry of an object directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the store (`ab/cdef…`, `.tmp-1-2`, `junk`).
    pub path: PathBuf,
    /// What it is.
    pub kind: EntryKind,
    /// Size in bytes (0 for directories).
    pub size: u64,
}

fn is_lower_hex(s: &[u8]) -> bool {
    s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

fn names(dir: &impl AsFd, path: &std::path::Path) -> Result<Vec<std::ffi::CString>, StoreError> {
    let mut out = Vec::new();
    let d = rustix::fs::Dir::read_from(dir).map_err(StoreError::io("read directory", path))?;
    for e in d {
        let e = e.map_err(StoreError::io("read directory", path))?;
        let name = e.file_name();
        if name != c"." && name != c".." {
            out.push(name.to_owned());
        }
    }
    out.sort();
    Ok(out)
}

impl ObjectStore {
    /// Every entry of the store, sorted by path.
    pub fn list(&self) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        for top in names(&self.dir, self.path())? {
            let tb = top.to_bytes();
            let rel = PathBuf::from(top.to_string_lossy().into_owned());
            let st = self.stat_at(&top, &rel)?;
            let Some(st) = st else { continue };
            let ftype = FileType::from_raw_mode(st.st_mode);
            if tb.len() == 2 && is_lower_hex(tb) && ftype == FileType::Directory {
                let sub_path = self.path().join(&rel);
                let sub = rustix::fs::openat(
                    self.dir.as_fd(),
                    top.as_c_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(StoreError::io("open", &sub_path))?;
                for name in names(&sub, &sub_path)? {
                    let nb = name.to_bytes();
                    let rel = rel.join(name.to_string_lossy().as_ref());
                    let st = match rustix::fs::statat(
                        &sub,
                        name.as_c_str(),
                        AtFlags::SYMLINK_NOFOLLOW,
                    ) {
                        Ok(st) => st,
                        Err(Errno::NOENT) => continue, // removed meanwhile
                        Err(e) => return Err(StoreError::io("stat", &self.path().join(&rel))(e)),
                    };
                    let regular = FileType::from_raw_mode(st.st_mode) == FileType::RegularFile;
                    let digest = (nb.len() == 62 && is_lower_hex(nb) && regular)
                        .then(|| {
                            let mut hex = tb.to_vec();
                            hex.extend_from_slice(nb);
                            Digest::from_hex(&hex).ok()
                        })
                        .flatten();
                    out.push(Entry {
                        path: rel,
                        kind: digest.map_or(EntryKind::Stray, EntryKind::Object),
                        size: st.st_size as u64,
                    });
                }
            } else {
                let kind = if tb.starts_with(b".tmp-") && ftype == FileType::RegularFile {
                    EntryKind::Temporary
                } else {
                    EntryKind::Stray
                };
                out.push(Entry {
                    path: rel,
                    kind,
                    size: st.st_size as u64,
                });
            }
        }
        Ok(out)
    }

    fn stat_at(
        &self,
        name: &CStr,
        rel: &std::path::Path,
    ) -> Result<Option<rustix::fs::Stat>, StoreError> {
        match rustix::fs::statat(self.dir.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(StoreError::io("stat", &self.path().join(rel))(e)),
        }
    }

    /// Re-hashes the object named `digest`; returns the digest of what it holds.
    pub fn hash_object(&self, digest: &Digest) -> Result<Digest, StoreError> {
        let file = self.open_object(digest)?;
        digest_reader(file).map_err(StoreError::std_io("read", &self.object_path(digest)))
    }

    /// Removes an entry (object, temporary or stray file, or an empty
    /// directory) by its path relative to the store, as [`list`](Self::list)
    /// gives it: `XX/NAME` or a top-level `NAME`. The `XX/` directory is
    /// opened without following a symlink, so a name planted there since
    /// the listing can't make this unlink anything outside the store.
    pub fn remove_entry(&self, rel: &std::path::Path) -> Result<(), StoreError> {
        let full = self.path().join(rel);
        let name = rel
            .file_name()
            .ok_or_else(|| StoreError::io("remove", &full)(Errno::INVAL))?;
        let parent = rel.parent().filter(|p| !p.as_os_str().is_empty());
        let opened;
        let dir = match parent {
            None => self.dir.as_fd(),
            Some(p) => {
                opened = rustix::fs::openat(
                    self.dir.as_fd(),
                    p,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(StoreError::io("open", &self.path().join(p)))?;
                opened.as_fd()
            }
        };
        match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(Errno::ISDIR) => rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
                .map_err(StoreError::io("remove", &full)),
            Err(e) => Err(StoreError::io("remove", &full)(e)),
        }
    }
}
