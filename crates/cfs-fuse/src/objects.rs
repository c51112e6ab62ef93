//! Opening the object a file's `trusted.overlay.redirect` names, safely, and
//! checking its fs-verity digest before its first byte is served.
//!
//! An image is untrusted input, so its redirect is too. Two independent
//! guards keep a redirect inside the object store:
//! 1. a redirect must be `/` and an object path, `xx/` + 62 lowercase hex
//!    digits, maybe with a short suffix as ostree names its objects
//!    (`.file`; [`Digest::from_object_path_with_suffix`]): one fixed-depth
//!    path of plain names, no `..`, no empty component;
//! 2. the open is an `openat2` under the objects directory with
//!    `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV |
//!    RESOLVE_NO_MAGICLINKS` and `O_NOFOLLOW`, and only a regular file is kept:
//!    a symlink or mount planted in the store is refused by the kernel.
//!
//! Verification is done in userspace (the digest of the whole object, at
//! about 1.4 GB/s), because fs-verity may be missing from the kernel or the
//! filesystem. A result is cached per object inode and change time: the next
//! open of an unchanged object costs one `fstat`. Data read after the check
//! is not re-checked (with passthrough the kernel reads it directly); a store
//! with fs-verity enabled closes that window, which is future work.

use cfs_format::fsverity::{digest_reader, Digest};
use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

/// How strictly file contents are checked against the digests in the image:
/// one type for every mode and command (C `mount.composefs`: `noverity`,
/// `tryverity`, `verity`; `cfs fuse-serve`'s older `none` and `auto` are
/// accepted as aliases).
///
/// What each mode makes of it: the kernel mode asks overlayfs for
/// `verity=require` when the object store has fs-verity (`Try`), or refuses
/// to mount without it (`Require`); the standalone FUSE server checks each
/// object's digest in userspace as it opens it, where the image has one
/// (`Try`) or always (`Require`: a file without a digest can't be read);
/// fuse+overlay can't check contents at all (overlayfs refuses `metacopy`
/// with `userxattr`), so it refuses `Require`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Verity {
    /// Check nothing (C `noverity`).
    #[cfg_attr(feature = "clap", value(alias = "none"))]
    Off,
    /// Check where a check is possible (C `tryverity`).
    #[default]
    #[cfg_attr(feature = "clap", value(alias = "auto"))]
    Try,
    /// Check everything, or refuse (C `verity`).
    Require,
}

impl Verity {
    /// The name on the command line (`off`, `try`, `require`).
    pub fn as_str(self) -> &'static str {
        match self {
            Verity::Off => "off",
            Verity::Try => "try",
            Verity::Require => "require",
        }
    }
}

/// Why an object could not be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// The redirect is not an object path (`/xx/hex…`).
    #[error("redirect {0:?} is not an object path /xx/<62 hex>")]
    BadRedirect(String),
    /// Opening or reading the object failed.
    #[error("could not {op} object {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The object path, relative to the store.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The object is not a regular file.
    #[error("object {0} is not a regular file")]
    NotRegular(String),
    /// The object's content does not match the image's digest.
    #[error("object {path}: fs-verity digest {found}, the image says {expected}")]
    DigestMismatch {
        /// The object path.
        path: String,
        /// The digest in the image.
        expected: Digest,
        /// The digest of the content.
        found: Digest,
    },
    /// The file carries a metacopy digest but no redirect: its content is
    /// nowhere (the kernel overlay refuses such a file with EIO too).
    #[error("file has a metacopy digest but no redirect to an object")]
    NoRedirect,
    /// Verification is required and the image has no digest for this file.
    #[error("object {0}: the image has no fs-verity digest and verity is required")]
    NoDigest(String),
}

/// Identity of one version of an object file: a change to it (rewrite, or
/// replacement by another file) changes one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileVersion {
    dev: u64,
    ino: u64,
    size: u64,
    ctime: (i64, i64),
}

/// The object store: a directory opened once, and the verification cache.
#[derive(Debug)]
pub struct ObjectStore {
    dir: OwnedFd,
    policy: Verity,
    /// Objects already verified, per file version: the digest they have.
    /// Locked only on an object's open, never on reads.
    verified: Mutex<HashMap<FileVersion, Digest>>,
}

impl ObjectStore {
    /// The store in the objects directory `dir` (`ab/cdef…` layout), opened
    /// by the caller (`O_PATH | O_DIRECTORY` is enough): every object is
    /// opened beneath it, never by a path from the root.
    pub fn new(dir: OwnedFd, policy: Verity) -> Self {
        ObjectStore {
            dir,
            policy,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// The verification policy.
    pub fn policy(&self) -> Verity {
        self.policy
    }

    /// Opens the object `redirect` names, read-only, after checking it is a
    /// regular file inside the store and (per the policy) that its content
    /// has the fs-verity digest `expected`.
    pub fn open_object(
        &self,
        redirect: &[u8],
        expected: Option<Digest>,
    ) -> Result<File, ObjectError> {
        let bad = || ObjectError::BadRedirect(String::from_utf8_lossy(redirect).into());
        let relative = redirect.strip_prefix(b"/").ok_or_else(bad)?;
        Digest::from_object_path_with_suffix(relative).ok_or_else(bad)?;
        // Checked above: ASCII only.
        let path = std::str::from_utf8(relative).map_err(|_| bad())?;
        let io = |op, source: rustix::io::Errno| ObjectError::Io {
            op,
            path: path.to_owned(),
            source: source.into(),
        };
        let fd = openat2(
            self.dir.as_fd(),
            path,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NOCTTY,
            Mode::empty(),
            ResolveFlags::BENEATH
                | ResolveFlags::NO_SYMLINKS
                | ResolveFlags::NO_XDEV
                | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| io("open", e))?;
        let file = File::from(fd);
        let meta = file.metadata().map_err(|e| ObjectError::Io {
            op: "stat",
            path: path.to_owned(),
            source: e,
        })?;
        if !meta.file_type().is_file() {
            return Err(ObjectError::NotRegular(path.to_owned()));
        }
        let expected = match (self.policy, expected) {
            (Verity::Off, _) => return Ok(file),
            (Verity::Try, None) => return Ok(file),
            (Verity::Require, None) => return Err(ObjectError::NoDigest(path.to_owned())),
            (_, Some(d)) => d,
        };
        let version = FileVersion {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        };
        let cached = self.lock().get(&version).copied();
        let found = match cached {
            Some(d) => d,
            None => {
                let d = digest_reader((&file).take(meta.size())).map_err(|e| ObjectError::Io {
                    op: "read",
                    path: path.to_owned(),
                    source: e,
                })?;
                self.lock().insert(version, d);
                d
            }
        };
        if found != expected {
            return Err(ObjectError::DigestMismatch {
                path: path.to_owned(),
                expected,
                found,
            });
        }
        Ok(file)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileVersion, Digest>> {
        // A panic while holding the lock can't leave the map inconsistent.
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const HEX62: &str = "9a256e79a69a2acb500de542f004320630257f9481c2ec3d41ca4635106a11";

    /// A redirect is `/` and an object path, maybe with ostree's suffix (the
    /// object path rule itself is tested with `Digest::from_object_path`).
    #[test]
    fn bad_redirects_are_refused() {
        let (dir, store) = store(Verity::Off);
        std::fs::create_dir_all(dir.path().join("b0")).unwrap();
        std::fs::write(dir.path().join(format!("b0/{HEX62}")), b"x").unwrap();
        std::fs::write(dir.path().join(format!("b0/{HEX62}.file")), b"y").unwrap();
        let read = |redirect: String| {
            let mut s = String::new();
            store
                .open_object(redirect.as_bytes(), None)
                .unwrap()
                .read_to_string(&mut s)
                .unwrap();
            s
        };
        assert_eq!(read(format!("/b0/{HEX62}")), "x");
        assert_eq!(read(format!("/b0/{HEX62}.file")), "y");
        for bad in [
            format!("b0/{HEX62}"),
            format!("//b0/{HEX62}"),
            format!("/b0/{HEX62}.File"),
            format!("/b0/{HEX62}/.file"),
            format!("/B0/{HEX62}"),
            "/../../etc/passwd".to_owned(),
        ] {
            let err = store.open_object(bad.as_bytes(), None).unwrap_err();
            assert!(matches!(err, ObjectError::BadRedirect(_)), "{bad:?}: {err}");
        }
    }

    fn open(dir: &Path, policy: Verity) -> ObjectStore {
        let fd = rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        ObjectStore::new(fd, policy)
    }

    fn store(policy: Verity) -> (tempfile::TempDir, ObjectStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), policy);
        (dir, store)
    }

    fn put(dir: &Path, data: &[u8]) -> (String, Digest) {
        let d = cfs_format::fsverity::digest(data);
        let p = d.object_path();
        std::fs::create_dir_all(dir.join(&p[..2])).unwrap();
        std::fs::write(dir.join(&p), data).unwrap();
        (format!("/{p}"), d)
    }

    #[test]
    fn verified_open_and_mismatch() {
        let (dir, store) = store(Verity::Try);
        let (redirect, digest) = put(dir.path(), b"hello world\n");
        assert!(store.open_object(redirect.as_bytes(), Some(digest)).is_ok());
        // Cached: same answer.
        assert!(store.open_object(redirect.as_bytes(), Some(digest)).is_ok());
        std::fs::write(dir.path().join(&redirect[1..]), b"hellO world\n").unwrap();
        let err = store
            .open_object(redirect.as_bytes(), Some(digest))
            .unwrap_err();
        assert!(matches!(err, ObjectError::DigestMismatch { .. }), "{err}");
        // No digest: fine under Auto, refused under Require.
        assert!(store.open_object(redirect.as_bytes(), None).is_ok());
        let strict = open(dir.path(), Verity::Require);
        assert!(matches!(
            strict.open_object(redirect.as_bytes(), None),
            Err(ObjectError::NoDigest(_))
        ));
    }

    #[test]
    fn planted_symlink_is_refused() {
        let (dir, store) = store(Verity::Off);
        let path = format!("ab/{HEX62}");
        std::fs::create_dir_all(dir.path().join("ab")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join(&path)).unwrap();
        let err = store
            .open_object(format!("/{path}").as_bytes(), None)
            .unwrap_err();
        assert!(matches!(err, ObjectError::Io { .. }), "{err}");
        // A symlinked prefix directory too.
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(outside.path().join("x")).unwrap();
        std::fs::write(outside.path().join(HEX62), b"secret").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("cd")).unwrap();
        let err = store
            .open_object(format!("/cd/{HEX62}").as_bytes(), None)
            .unwrap_err();
        assert!(matches!(err, ObjectError::Io { .. }), "{err}");
    }

    #[test]
    fn directory_object_is_refused() {
        let (dir, store) = store(Verity::Off);
        std::fs::create_dir_all(dir.path().join("ab").join(HEX62)).unwrap();
        let err = store
            .open_object(format!("/ab/{HEX62}").as_bytes(), None)
            .unwrap_err();
        assert!(matches!(err, ObjectError::NotRegular(_)), "{err}");
    }
}
