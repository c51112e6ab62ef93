//! A content-addressed object directory: each object is a plain, read-only
//! (0644) regular file at `XX/REST`, where `XXREST` is the 64-hex fs-verity
//! digest of its content. This is the layout an overlayfs data-only lower
//! layer (`lowerdir=IMAGE::OBJECTS`), C `mkcomposefs --digest-store` and
//! `composefs-info --basedir` expect, and what a FUSE server can open with
//! `openat2(RESOLVE_BENEATH)`.
//!
//! A repository's `objects/` is one of these; so is a plain `--digest-store`
//! directory. Writing (`insert`) hashes while copying, publishes a fully
//! written and synced file under its name in one `linkat`, and never rewrites
//! an existing object. Listing and verifying (`verify`) walk the `XX/`
//! directories and re-hash.
//!
//! The store may belong to another user (root writing into a user's
//! repository), so nothing inside it is reached by a path that could cross
//! a planted symlink: an `XX/` directory is opened `O_NOFOLLOW` from the
//! store's fd (and kept open), objects are opened with `openat2`
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, and links, stats and unlinks
//! act on a final name in an `XX/` fd.

mod insert;
mod verify;
mod verity;

pub use insert::{Inserted, SourceFile};
pub use verify::{Entry, EntryKind};
pub use verity::VeritySupport;

use cfs_format::Digest;
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::OnceLock;

/// Why an object store operation failed.
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
    /// A source file changed (size or modification time) while it was read.
    #[error("{}: file changed while it was read ({what})", .path.display())]
    SourceChanged {
        /// The source file.
        path: PathBuf,
        /// What changed.
        what: String,
    },
    /// A new object could not be written (its file system full, an I/O
    /// error): nothing was stored under its name, and no temporary file is
    /// left behind.
    #[error("could not store {what} in {} ({op}): {source}", .store.display())]
    Store {
        /// What was being stored: the source file, tar entry or image.
        what: String,
        /// The object directory.
        store: PathBuf,
        /// The step that failed.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The store path exists but is not a directory.
    #[error("{}: not a directory", .0.display())]
    NotADirectory(PathBuf),
}

impl StoreError {
    pub(crate) fn io<'a>(
        op: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(rustix::io::Errno) -> StoreError + 'a {
        move |e| StoreError::Io {
            op,
            path: path.to_path_buf(),
            source: e.into(),
        }
    }

    /// An error of the step `op` while storing `what` in `store`.
    pub(crate) fn store<'a>(
        op: &'static str,
        what: &'a str,
        store: &'a Path,
    ) -> impl FnOnce(rustix::io::Errno) -> StoreError + 'a {
        move |e| StoreError::Store {
            what: what.to_owned(),
            store: store.to_path_buf(),
            op,
            source: e.into(),
        }
    }

    pub(crate) fn std_io<'a>(
        op: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(io::Error) -> StoreError + 'a {
        move |source| StoreError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// An open object directory.
#[derive(Debug)]
pub struct ObjectStore {
    path: PathBuf,
    dir: OwnedFd,
    /// [`VeritySupport`] as learnt from the first insert (0 = not yet known).
    verity: AtomicU8,
    /// `XX/` directories that gained a name since the last [`sync`](Self::sync).
    dirty: [AtomicBool; 256],
    /// The store directory itself gained an `XX/` directory.
    dirty_top: AtomicBool,
    /// The `XX/` directories opened so far (`O_NOFOLLOW`), by first digest byte.
    subdirs: [OnceLock<OwnedFd>; 256],
}

impl ObjectStore {
    /// Opens an existing object directory.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let dir = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            rustix::io::Errno::NOTDIR => StoreError::NotADirectory(path.to_path_buf()),
            e => StoreError::io("open", path)(e),
        })?;
        Ok(Self::from_dir(path, dir))
    }

    /// The object directory open as `dir` (found at `path`, for messages).
    pub fn from_dir(path: &Path, dir: OwnedFd) -> Self {
        ObjectStore {
            path: path.to_path_buf(),
            dir,
            verity: AtomicU8::new(0),
            dirty: std::array::from_fn(|_| AtomicBool::new(false)),
            dirty_top: AtomicBool::new(false),
            subdirs: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// The `XX/` directory of objects whose digest starts with `first`, if
    /// it exists; never through a symlink (one at `XX` is an error).
    pub(crate) fn subdir(&self, first: u8) -> rustix::io::Result<Option<&OwnedFd>> {
        if let Some(fd) = self.subdirs[usize::from(first)].get() {
            return Ok(Some(fd));
        }
        match self.open_subdir(first) {
            Ok(fd) => Ok(Some(self.subdirs[usize::from(first)].get_or_init(|| fd))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The `XX/` directory for `first`, created if missing; also says
    /// whether this call created it.
    fn subdir_or_create(&self, first: u8) -> rustix::io::Result<(&OwnedFd, bool)> {
        if let Some(fd) = self.subdir(first)? {
            return Ok((fd, false));
        }
        let name = format!("{first:02x}");
        let created =
            match rustix::fs::mkdirat(&self.dir, name.as_str(), Mode::from_raw_mode(0o755)) {
                Ok(()) => true,
                Err(Errno::EXIST) => false,
                Err(e) => return Err(e),
            };
        let fd = self.open_subdir(first)?;
        Ok((self.subdirs[usize::from(first)].get_or_init(|| fd), created))
    }

    fn open_subdir(&self, first: u8) -> rustix::io::Result<OwnedFd> {
        rustix::fs::openat(
            &self.dir,
            format!("{first:02x}").as_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
    }

    /// Opens an object directory, creating it (and its parents) if missing.
    pub fn create(path: &Path) -> Result<Self, StoreError> {
        match std::fs::create_dir_all(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(StoreError::NotADirectory(path.to_path_buf()))
            }
            Err(e) => return Err(StoreError::std_io("create", path)(e)),
        }
        Self::open(path)
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory, for `*at` calls.
    pub fn dir(&self) -> &OwnedFd {
        &self.dir
    }

    /// Where the object with this digest lives (whether or not it exists).
    pub fn object_path(&self, digest: &Digest) -> PathBuf {
        self.path.join(digest.object_path())
    }

    /// True when an object with this digest is present (any file at its name).
    pub fn contains(&self, digest: &Digest) -> bool {
        let rel = digest.object_path();
        match self.subdir(digest.0[0]) {
            Ok(Some(sub)) => rustix::fs::statat(sub, &rel[3..], AtFlags::SYMLINK_NOFOLLOW).is_ok(),
            _ => false,
        }
    }

    /// Opens an object for reading, beneath the store and through no symlink.
    pub fn open_object(&self, digest: &Digest) -> Result<std::fs::File, StoreError> {
        let rel = digest.object_path();
        rustix::fs::openat2(
            self.dir.as_fd(),
            rel.as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
        )
        .map(std::fs::File::from)
        .map_err(StoreError::io("open", &self.object_path(digest)))
    }

    /// Reads a whole object (an image, a document) of at most `max_bytes`:
    /// a larger one is refused by its size, before it is read.
    pub fn read_object(&self, digest: &Digest, max_bytes: u64) -> Result<Vec<u8>, StoreError> {
        let mut file = self.open_object(digest)?;
        crate::input::read_file_capped(&mut file, max_bytes)
            .map_err(StoreError::std_io("read", &self.object_path(digest)))
    }

    /// Makes every object name created since the last call durable: fsyncs
    /// the `XX/` directories that gained names (and the store directory if it
    /// gained `XX/` directories). Object contents are synced before they get
    /// a name; call this before anything else (an image) names them. Cheaper
    /// than `syncfs`, which would flush everything else on the file system too.
    pub fn sync(&self) -> Result<(), StoreError> {
        for (i, flag) in self.dirty.iter().enumerate() {
            if flag.swap(false, Ordering::Relaxed) {
                let rel = self.path.join(format!("{i:02x}"));
                let sub = self
                    .subdir(i as u8)
                    .map_err(StoreError::io("open", &rel))?
                    .ok_or_else(|| StoreError::io("open", &rel)(Errno::NOENT))?;
                rustix::fs::fsync(sub).map_err(StoreError::io("sync", &rel))?;
            }
        }
        if self.dirty_top.swap(false, Ordering::Relaxed) {
            rustix::fs::fsync(&self.dir).map_err(StoreError::io("sync", &self.path))?;
        }
        Ok(())
    }

    fn mark_dirty(&self, digest: &Digest, new_dir: bool) {
        self.dirty[usize::from(digest.0[0])].store(true, Ordering::Relaxed);
        if new_dir {
            self.dirty_top.store(true, Ordering::Relaxed);
        }
    }

    /// Whether this store's file system can enable fs-verity on objects, as
    /// learnt from inserting (or from [`probe_verity`](Self::probe_verity)).
    pub fn verity_support(&self) -> VeritySupport {
        VeritySupport::from_u8(self.verity.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests;
