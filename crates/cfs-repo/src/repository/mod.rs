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
//! REPO/streams/oci/          OCI tags, manifests, configs, layer records (crate::oci::store)
//! ```
//!
//! One file per verb: [`open`](Repository::open) and
//! [`init`](Repository::init), [`create_image`](Repository::create_image),
//! refs, [`fsck`](Repository::fsck), [`gc`](Repository::gc), locking.

mod fsck;
mod gc;
mod image;
mod lock;
mod open;
mod refs;

pub use fsck::{Corrupt, FsckReport, Missing, Problem};
pub use gc::GcReport;
pub use image::{CreateOptions, CreateReport, ImageInfo};
pub use lock::{LockMode, RepoLock};
pub use refs::check_name;

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
    #[error("no image named {0:?}")]
    UnknownImage(String),
    /// A stored image that does not parse.
    #[error("image {id}: {source}")]
    CorruptImage {
        /// The image id.
        id: String,
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
    /// The tree can't be written as an image.
    #[error("cannot write image: {0}")]
    Write(#[from] WriteError),
    /// OCI records that can't be read (gc stops rather than guess).
    #[error("OCI records: {0}")]
    Oci(Box<crate::oci::OciError>),
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
    dir: OwnedFd,
    objects: ObjectStore,
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

    /// True when `path` holds a repository (its version file exists).
    pub fn is_repository(path: &Path) -> bool {
        path.join(VERSION_FILE).is_file()
    }

    /// The object directory to use for `path`: `path/objects` when `path` is
    /// a repository, else `path` itself (a plain object directory, as C
    /// `mkcomposefs --digest-store` and `composefs-info --basedir` use).
    pub fn object_dir_of(path: &Path) -> PathBuf {
        if Self::is_repository(path) {
            path.join("objects")
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
    /// Whether fs-verity can be enabled on objects here.
    pub verity: crate::store::VeritySupport,
}

impl Repository {
    /// Counts objects and images and probes fs-verity support.
    pub fn stats(&self) -> Result<RepoStats, RepoError> {
        let mut objects = 0;
        let mut bytes = 0;
        for e in self.objects.list()? {
            if let crate::store::EntryKind::Object(_) = e.kind {
                objects += 1;
                bytes += e.size;
            }
        }
        Ok(RepoStats {
            objects,
            bytes,
            images: self.image_ids()?.len() as u64,
            verity: self.objects.probe_verity()?,
        })
    }
}

/// The default repository location: `/var/lib/cfs` for root, else
/// `$XDG_DATA_HOME/cfs` or `~/.local/share/cfs`. `None` when neither
/// `XDG_DATA_HOME` nor `HOME` is set for a non-root user.
pub fn default_path() -> Option<PathBuf> {
    if rustix::process::geteuid().is_root() {
        return Some(PathBuf::from("/var/lib/cfs"));
    }
    let env = |k| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("XDG_DATA_HOME")
        .filter(|p| p.is_absolute())
        .map(|p| p.join("cfs"))
        .or_else(|| env("HOME").map(|h| h.join(".local/share/cfs")))
}

#[cfg(test)]
mod tests;
