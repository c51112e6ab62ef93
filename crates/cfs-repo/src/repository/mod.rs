//! The cfs repository: the store every import writes to and every mount reads
//! from. See `docs/repository.md` for the layout:
//!
//! ```text
//! REPO/cfs-repo-version      "1\n": the layout version, written last by init
//! REPO/lock                  flock(2): imports shared, gc exclusive
//! REPO/objects/XX/REST       objects named by fs-verity digest (an ObjectStore)
//! REPO/images/ID             symlink ../objects/XX/REST: an image, by image id
//! REPO/images/refs/NAME      symlink ../ID: a human name (tag) for an image
//! REPO/streams/, streams/refs/   reserved (composefs-rs splitstreams)
//! REPO/streams/NAME/         records of other crates (OCI: cfs-oci's `store`), see roots
//! REPO/pins/NSID-MNTID        a live mount of an image: a gc root while the mount exists
//! ```
//!
//! One file per verb: [`open`](Repository::open) and
//! [`init`](Repository::init), [`create_image`](Repository::create_image),
//! refs, [`fsck`](Repository::fsck), [`gc`](Repository::gc), locking,
//! and [`roots`](StreamRoots): what records under `streams/` keep alive.

mod beneath;
mod fsck;
mod gc;
mod image;
mod location;
mod lock;
mod open;
mod pins;
mod refs;
mod roots;

pub use fsck::{Corrupt, FsckReport, Missing, Problem};
pub use gc::GcReport;
pub use image::{compute_id, tree_of_directory, CreateOptions, CreateReport, ImageInfo};
pub use location::{default_path, UserNamespace, SYSTEM_REPOSITORY};
pub use lock::{describe_holders, Contention, LockHolder, LockMode, LockWait, RepoLock};
pub use pins::{PendingMount, Pin, PinState};
pub use refs::check_name;
pub use roots::{Marked, StreamRoots};

use crate::scan::ScanError;
use crate::store::{ObjectStore, StoreError};
use cfs_format::reader::ReadError;
use cfs_format::writer::WriteError;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// The layout version this code reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Name of the version file at the repository's top.
pub const VERSION_FILE: &str = "cfs-repo-version";

/// Why a repository operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
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
    /// The path is not a cfs repository.
    #[error("{}: not a cfs repository ({reason})", .path.display())]
    NotARepository {
        /// The path.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// The repository's top directory belongs to another user than the
    /// caller or root: its owner could change anything in it (plant objects
    /// that imports would take as theirs, swap images, read what is put in).
    #[error(
        "{}: the repository belongs to uid {owner}, neither you (uid {you}) nor root; its owner \
         can change any object or image in it, and read what goes in, so cfs uses only \
         repositories of the caller or of root: run cfs as uid {owner}, or use a repository of \
         your own",
        .path.display()
    )]
    OtherOwner {
        /// The repository.
        path: PathBuf,
        /// Its top directory's owner.
        owner: u32,
        /// The caller's effective uid.
        you: u32,
    },
    /// An image larger than cfs reads back ([`crate::input::MAX_IMAGE_BYTES`]):
    /// stored, it could be neither mounted, dumped nor walked by gc.
    #[error(
        "{what}: the image would be {size} bytes, over the limit of {} bytes that cfs reads",
        crate::input::MAX_IMAGE_BYTES
    )]
    ImageTooLarge {
        /// The image, as the caller names it.
        what: String,
        /// Its size.
        size: u64,
    },
    /// The repository lock was not free within the time allowed.
    #[error("{}: still locked after {waited:?}{holders}", .path.display())]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// How long cfs waited.
        waited: std::time::Duration,
        /// Who holds it, as far as `/proc/locks` tells (` (held by …)` or empty).
        holders: String,
    },
    /// A repository of a layout version this code does not know.
    #[error("{}: repository format version {found}, this cfs knows {FORMAT_VERSION}", .path.display())]
    UnsupportedVersion {
        /// The repository.
        path: PathBuf,
        /// What its version file says.
        found: String,
    },
    /// An image name that is not allowed.
    #[error("invalid image name {0:?}: use letters, digits and . _ - + @ : (not first . or -, not 64 hex digits)")]
    InvalidName(String),
    /// No image of that name or id.
    #[error("no image named {name:?} in the repository {}", .repo.display())]
    UnknownImage {
        /// The name or id asked for.
        name: String,
        /// The repository searched.
        repo: PathBuf,
    },
    /// A stored image that does not parse.
    #[error("image {id}: {source}")]
    CorruptImage {
        /// The image id.
        id: String,
        /// Why.
        #[source]
        source: ReadError,
    },
    /// Bytes offered as an image that are not a valid composefs image.
    #[error("{what} is not a valid composefs image: {source}")]
    NotAnImage {
        /// What was offered (a file name, stdin).
        what: String,
        /// Why.
        #[source]
        source: ReadError,
    },
    /// Reading the source directory failed.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// Storing an object failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Storing a scanned directory's files failed (a file changed, or the store).
    #[error(transparent)]
    Import(#[from] crate::import::ImportError),
    /// The tree can't be written as an image.
    #[error("cannot write image: {0}")]
    Write(#[from] WriteError),
    /// Records under `streams/` that can't be read, or that no reader was
    /// given for (gc stops rather than guess).
    #[error("{name}: {message}")]
    Streams {
        /// The records' directory (`streams/NAME`).
        name: String,
        /// What is wrong.
        message: String,
    },
}

impl RepoError {
    pub(crate) fn io<'a>(
        op: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(rustix::io::Errno) -> RepoError + 'a {
        move |e| RepoError::Io {
            op,
            path: path.to_path_buf(),
            source: e.into(),
        }
    }

    pub(crate) fn std_io<'a>(
        op: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(io::Error) -> RepoError + 'a {
        move |source| RepoError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// An open repository.
#[derive(Debug)]
pub struct Repository {
    path: PathBuf,
    /// The top directory: every path inside is opened relative to it ([`beneath`]).
    dir: OwnedFd,
    objects: ObjectStore,
    made_private_from: Option<u32>,
    lock_wait: LockWait,
}

impl Repository {
    /// The repository's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its object store (`objects/`).
    pub fn objects(&self) -> &ObjectStore {
        &self.objects
    }

    /// True when `path` holds a repository (its version file exists, a
    /// regular file, not a symlink).
    pub fn is_repository(path: &Path) -> bool {
        std::fs::symlink_metadata(path.join(VERSION_FILE)).is_ok_and(|m| m.is_file())
    }

    /// Opens the directory `rel` inside the repository (never through a symlink).
    pub(crate) fn open_dir(&self, rel: &str) -> Result<OwnedFd, RepoError> {
        beneath::open_dir(&self.dir, rel).map_err(RepoError::io("open", &self.path.join(rel)))
    }

    /// Removes the file `rel` (`DIR/NAME`) inside the repository: `NAME` is
    /// unlinked in `DIR` opened without following a symlink. Missing is fine.
    pub fn remove_file(&self, rel: &Path) -> Result<(), RepoError> {
        let full = self.path.join(rel);
        let (Some(parent), Some(name)) = (rel.parent().and_then(Path::to_str), rel.file_name())
        else {
            return Err(RepoError::io("remove", &full)(rustix::io::Errno::INVAL));
        };
        let dir = self.open_dir(if parent.is_empty() { "." } else { parent })?;
        match rustix::fs::unlinkat(&dir, name, rustix::fs::AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(RepoError::io("remove", &full)(e)),
        }
    }

    /// Creates the directory `rel` and its missing parents inside the repository.
    pub fn create_dirs(&self, rel: &str) -> Result<(), RepoError> {
        beneath::create_dirs(&self.dir, rel, rustix::fs::Mode::from_raw_mode(0o755))
            .map(drop)
            .map_err(RepoError::io("create", &self.path.join(rel)))
    }

    /// The target of the symlink `rel` (`DIR/NAME`) inside the repository,
    /// read (never followed); `None` when it or its directory is missing.
    pub fn read_link(&self, rel: &Path) -> Result<Option<Vec<u8>>, RepoError> {
        let full = self.path.join(rel);
        let (Some(parent), Some(name)) = (rel.parent().and_then(Path::to_str), rel.file_name())
        else {
            return Err(RepoError::io("read", &full)(rustix::io::Errno::INVAL));
        };
        let dir = match beneath::open_dir(&self.dir, if parent.is_empty() { "." } else { parent }) {
            Ok(d) => d,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => return Err(RepoError::io("open", &self.path.join(parent))(e)),
        };
        match rustix::fs::readlinkat(&dir, name, Vec::new()) {
            Ok(t) => Ok(Some(t.into_bytes())),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(RepoError::io("read", &full)(e)),
        }
    }

    /// Points the symlink `dir/name` at `target`, replacing it atomically
    /// (a temporary name, then rename), and syncs `dir`.
    pub fn replace_link(&self, dir: &str, name: &str, target: &str) -> Result<(), RepoError> {
        let fd = self.open_dir(dir)?;
        let dir_path = self.path.join(dir);
        let tmp = format!(".tmp-{}-{name}", std::process::id());
        let _ = rustix::fs::unlinkat(&fd, tmp.as_str(), rustix::fs::AtFlags::empty());
        rustix::fs::symlinkat(target, &fd, tmp.as_str())
            .map_err(RepoError::io("create", &dir_path.join(&tmp)))?;
        if let Err(e) = rustix::fs::renameat(&fd, tmp.as_str(), &fd, name) {
            // No temporary name left behind for gc to find.
            let _ = rustix::fs::unlinkat(&fd, tmp.as_str(), rustix::fs::AtFlags::empty());
            return Err(RepoError::io("rename", &dir_path.join(name))(e));
        }
        rustix::fs::fsync(&fd).map_err(RepoError::io("sync", &dir_path))
    }

    /// Syncs the repository directory `rel`.
    pub fn sync_dir(&self, rel: &str) -> Result<(), RepoError> {
        rustix::fs::fsync(self.open_dir(rel)?).map_err(RepoError::io("sync", &self.path.join(rel)))
    }

    /// The names in the repository directory `rel`, sorted.
    pub fn names_in(&self, rel: &str) -> Result<Vec<std::ffi::OsString>, RepoError> {
        let dir = self.open_dir(rel)?;
        beneath::names(&dir).map_err(RepoError::io("read", &self.path.join(rel)))
    }

    /// The object directory to use for `path`: `path/objects` when `path` is
    /// a repository, else `path` itself (a plain object directory, as C
    /// `mkcomposefs --digest-store` and `composefs-info --basedir` use).
    pub fn object_dir_of(path: &Path) -> PathBuf {
        if Self::is_repository(path) {
            objects_dir(path)
        } else {
            path.to_path_buf()
        }
    }
}

/// Object count and size, for `cfs info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepoStats {
    /// Objects in the store.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Images (`images/ID`).
    pub images: u64,
    /// Whether objects here have fs-verity, as one of them shows
    /// (`Unknown` when there is none).
    pub verity: crate::store::VeritySupport,
}

impl Repository {
    /// Counts objects and images, and tells fs-verity support from an
    /// object (writing nothing, so it works on a read-only repository).
    pub fn stats(&self) -> Result<RepoStats, RepoError> {
        let mut objects = 0;
        let mut bytes = 0;
        let mut sample = None;
        for e in self.objects.list()? {
            if let crate::store::EntryKind::Object(d) = e.kind {
                objects += 1;
                bytes += e.size;
                sample.get_or_insert(d);
            }
        }
        Ok(RepoStats {
            objects,
            bytes,
            images: self.image_ids()?.len() as u64,
            verity: self.objects.observed_verity(sample.as_ref()),
        })
    }
}

/// The object directory of the repository at `repo` (`REPO/objects`), for
/// callers that hand it on without opening the repository (a default
/// `--basedir`).
pub fn objects_dir(repo: &Path) -> PathBuf {
    repo.join("objects")
}

#[cfg(test)]
mod tests;
