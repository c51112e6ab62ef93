//! Why a mount failed: one enum for the mount operation, each variant naming
//! the file and what was wrong, so the CLI can print it as is.

use crate::detect::NoMode;
use crate::identity::IdentifyError;
use crate::sys::KernelError;
use crate::MountMode;
use cfs_format::Digest;
use std::io;
use std::path::PathBuf;

/// Why a composefs mount failed. Nothing is left mounted or attached when
/// one of these is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    /// The options can't describe a mount.
    #[error("invalid mount options: {0}")]
    Config(String),
    /// A file system operation failed.
    #[error("could not {op} {}", .path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The image file is not a composefs image the kernel could mount.
    #[error("{} is not a usable composefs image: {what}", .path.display())]
    BadImage {
        /// The image.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The image's fs-verity digest is not the one asked for (`digest=`).
    #[error("{} has fs-verity digest {found}, not the expected {expected} ({how})", .path.display())]
    DigestMismatch {
        /// The image.
        path: PathBuf,
        /// The digest asked for.
        expected: Digest,
        /// The image's digest.
        found: Digest,
        /// Who measured it: the kernel, or userspace where the kernel can't.
        how: &'static str,
    },
    /// An object directory is missing.
    #[error("object directory {} is missing or not a directory", .path.display())]
    MissingBasedir {
        /// The directory.
        path: PathBuf,
        /// The error from looking it up, if any.
        #[source]
        source: Option<io::Error>,
    },
    /// Objects the image names are in none of the object directories.
    #[error("{missing} of the {total} objects {} names are missing from {} (the first: {first}); \
             store them (`cfs image-objects` lists what an image needs), or mount with \
             --no-check-objects (opening their files then fails)",
            .path.display(), display_dirs(.basedirs))]
    MissingObjects {
        /// The image.
        path: PathBuf,
        /// How many are missing.
        missing: usize,
        /// How many it names.
        total: usize,
        /// The first missing one (`ab/cdef…`).
        first: String,
        /// Where they were looked for.
        basedirs: Vec<PathBuf>,
    },
    /// `verity=require`, and the object store can't provide it.
    #[error("verity=require: the object store {} lacks fs-verity ({why}); \
             mount with verity off (--verity=off or --verity=try) to skip content checks", .store.display())]
    NoVerity {
        /// The object directory probed.
        store: PathBuf,
        /// What the probe found.
        why: String,
    },
    /// The erofs mount of the image failed.
    #[error("could not mount {} as erofs (a corrupt image, or a feature this kernel lacks)", .path.display())]
    Erofs {
        /// The image.
        path: PathBuf,
        /// The failed step.
        #[source]
        source: KernelError,
    },
    /// The overlay mount failed.
    #[error("could not mount the overlay for {}", .path.display())]
    Overlay {
        /// The image.
        path: PathBuf,
        /// The failed step.
        #[source]
        source: KernelError,
    },
    /// The finished mount could not be attached at the mount point.
    #[error("could not attach the mount at {}", .path.display())]
    Attach {
        /// The mount point.
        path: PathBuf,
        /// The failed step.
        #[source]
        source: KernelError,
    },
    /// No mount mode fits this process (`--fuse=…` and its privileges).
    #[error("no way to mount here: {0}")]
    NoMode(#[from] NoMode),
    /// A layer directory (`--basedir`, `--upperdir`, `--workdir`) can't be
    /// used.
    #[error("{what} {}: {why}", .path.display())]
    BadLayer {
        /// Which layer (`object directory`, `upper directory`, ...).
        what: &'static str,
        /// Its path, as given.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The mount point can't take the mount.
    #[error("mount point {}: {why}", .path.display())]
    BadMountpoint {
        /// The mount point.
        path: PathBuf,
        /// What is wrong, and what to do.
        why: String,
    },
    /// The FUSE mount itself failed.
    #[error("could not {step} {}", .path.display())]
    Fuse {
        /// The step.
        step: &'static str,
        /// The mount point.
        path: PathBuf,
        /// The failed call.
        #[source]
        source: Box<KernelError>,
    },
    /// A rootless FUSE mount needs `fusermount3`.
    #[error("fusermount3 is not on PATH: a FUSE mount without privilege needs it (install fuse3: apt-get install fuse3)")]
    NoFusermount,
    /// `fusermount3` refused.
    #[error("fusermount3 could not mount {} ({status}): {stderr}", .path.display())]
    Fusermount {
        /// The mount point.
        path: PathBuf,
        /// Its exit status.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// The FUSE server could not start or failed.
    #[error("the FUSE server for {} failed: {message}", .path.display())]
    Server {
        /// The mount point.
        path: PathBuf,
        /// Its error.
        message: String,
    },
    /// The mount service could not be asked, or refused, or failed.
    #[error(transparent)]
    Service(#[from] crate::service::ServiceError),
    /// A mount mode that is declared but not built yet.
    #[error("the {0:?} mount mode is not implemented yet")]
    ModeNotImplemented(MountMode),
}

/// `A, B` for a list of directories.
fn display_dirs(dirs: &[PathBuf]) -> String {
    let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    shown.join(", ")
}

/// Why `unmount` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnmountError {
    /// Nothing is mounted there.
    #[error("{} is not a mount point", .0.display())]
    NotMounted(PathBuf),
    /// Something else is mounted there.
    #[error("{} is not a cfs mount (see cfs mounts); use umount for other filesystems", .0.display())]
    NotCfs(PathBuf),
    /// Files are open on the mount.
    #[error("{} is busy (files open on it); --lazy detaches it now and unmounts once they close", .0.display())]
    Busy(PathBuf),
    /// The mount point could not be opened and identified.
    #[error(transparent)]
    Identify(IdentifyError),
    /// Another mount than the one meant is there now.
    #[error("the mount at {} is not this server's any more; left alone", .0.display())]
    NotOurs(PathBuf),
    /// The mount service did not unmount it.
    #[error(transparent)]
    Service(crate::service::ServiceError),
    /// Any other failure.
    #[error("could not unmount {}", .path.display())]
    Io {
        /// The mount point.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}
