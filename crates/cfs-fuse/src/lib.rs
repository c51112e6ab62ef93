//! A read-only FUSE server over a composefs image, read in place.
//!
//! Serving starts once the superblock is checked ([`Image::open`]): there is
//! no tree walk, no inode numbering pass, no copy of the image beyond the
//! one mapping or a pread block cache (see [`source`]). FUSE inode numbers are EROFS nids
//! ([`attr`]); every request reads the inode it names, bounds-checked, from
//! the shared image bytes, on several worker threads each with its own
//! cloned `/dev/fuse` fd.
//!
//! Two modes ([`ServeMode`]): **standalone** serves contents too (inline
//! from the image, external files from the object store, verified against
//! their fs-verity digest, handed to the kernel with FUSE passthrough when
//! privileged) and shows the tree as the kernel overlay mount would;
//! **overlay-lower** serves metadata only, renamed for an overlayfs mounted
//! with `userxattr` that reads contents from the object store itself.
//!
//! Modules: [`server`] (the fuser `Filesystem`), [`mode`] (presentation
//! rules), [`objects`] (safe object opens and verification), [`attr`]
//! (inode → attributes), [`errors`] (errno mapping), [`source`] (image
//! bytes), [`locate`] (finding an image and objects in a repository).

pub mod attr;
pub mod errors;
pub mod locate;
pub mod mode;
pub mod objects;
pub mod server;
pub mod source;

pub use mode::ServeMode;
pub use objects::VerityPolicy;

use cfs_format::reader::{Image, ReadError};
use fuser::{Config, MountOption, Session, SessionACL};
use objects::ObjectStore;
use source::{ImageBytes, Immutable};
use std::path::{Path, PathBuf};

/// What to serve, where, and how.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeOptions {
    /// The image file.
    pub image: PathBuf,
    /// Why the image file can't change (so it may be mapped), if known.
    pub immutable: Option<Immutable>,
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// Standalone or overlay-lower.
    pub mode: ServeMode,
    /// The object directory (`ab/cdef…`), needed in standalone mode for
    /// images with external files.
    pub objects: Option<PathBuf>,
    /// When to check object contents against the image's digests.
    pub verity: VerityPolicy,
    /// Worker threads.
    pub threads: usize,
    /// Hand opened objects to the kernel (FUSE passthrough) when privileged;
    /// when false the server reads them (`pread`) even then.
    pub passthrough: bool,
}

impl ServeOptions {
    /// Options with defaults: not known immutable, standalone, no objects,
    /// verity `Auto`, 4 threads, passthrough where privileged.
    pub fn new(image: impl Into<PathBuf>, mountpoint: impl Into<PathBuf>) -> Self {
        ServeOptions {
            image: image.into(),
            immutable: None,
            mountpoint: mountpoint.into(),
            mode: ServeMode::Standalone,
            objects: None,
            verity: VerityPolicy::Auto,
            threads: 4,
            passthrough: true,
        }
    }
}

/// Why serving could not start or ended with an error. Messages name the
/// step and path; the cause is the error's `source()`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeFailed {
    /// The image file could not be read.
    #[error("could not open image {path}")]
    OpenImage {
        /// The image.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The image's headers are bad.
    #[error("bad image {path}")]
    Image {
        /// The image.
        path: PathBuf,
        /// The error.
        source: ReadError,
    },
    /// The object directory could not be opened.
    #[error("could not open object directory {path}")]
    Objects {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Mounting, or the FUSE session, failed.
    #[error("could not {op} {path}")]
    Session {
        /// What was being done.
        op: &'static str,
        /// The mountpoint.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// True when this process has `CAP_SYS_ADMIN` in the initial user namespace,
/// which FUSE passthrough requires: `/proc/self/ns/user` is the initial user
/// namespace (its inode is `PROC_USER_INIT_INO`, see `cfs-mount`'s `detect`
/// for why not `uid_map`) and its effective capabilities hold bit 21. If this
/// guesses wrong the kernel refuses the backing file and reads fall back to
/// `pread`.
fn privileged() -> bool {
    use std::os::unix::fs::MetadataExt;
    const PROC_USER_INIT_INO: u64 = 0xEFFF_FFFD;
    let initial_ns =
        std::fs::metadata("/proc/self/ns/user").is_ok_and(|m| m.ino() == PROC_USER_INIT_INO);
    let cap_sys_admin = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .is_some_and(|caps| caps & (1 << 21) != 0)
    });
    initial_ns && cap_sys_admin
}

/// Opens the image (and the object store in standalone mode) and builds the
/// filesystem; shared by [`serve`] and [`serve_fd`].
fn filesystem(opts: &ServeOptions) -> Result<server::CfsFs, ServeFailed> {
    let bytes =
        ImageBytes::open(&opts.image, opts.immutable).map_err(|source| ServeFailed::OpenImage {
            path: opts.image.clone(),
            source,
        })?;
    let image = Image::open(bytes).map_err(|source| ServeFailed::Image {
        path: opts.image.clone(),
        source,
    })?;
    let objects = match (&opts.objects, opts.mode) {
        (Some(dir), ServeMode::Standalone) => Some(ObjectStore::open(dir, opts.verity).map_err(
            |source| ServeFailed::Objects {
                path: dir.clone(),
                source,
            },
        )?),
        _ => None,
    };
    let passthrough = opts.passthrough && privileged();
    Ok(server::CfsFs::new(image, opts.mode, objects, passthrough))
}

/// Mounts the image and serves it until it is unmounted. `ready` is called
/// once the mount is in place and the kernel handshake done.
pub fn serve(opts: &ServeOptions, ready: impl FnOnce()) -> Result<(), ServeFailed> {
    let fs = filesystem(opts)?;
    let root = rustix::process::geteuid().is_root();
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("cfs".into()),
        MountOption::Subtype("cfs".into()),
        MountOption::RO,
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
    ];
    if root {
        config.mount_options.push(MountOption::Dev);
        config.mount_options.push(MountOption::Suid);
    }
    config.acl = if root {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    let failed = |op| {
        let path = opts.mountpoint.clone();
        move |source| ServeFailed::Session { op, path, source }
    };
    let session = Session::new(fs, &opts.mountpoint, &config).map_err(failed("mount at"))?;
    ready();
    session.run().map_err(failed("serve"))
}

/// Serves in the calling thread as [`serve`] does, for callers holding
/// paths only: standalone with objects at `objects`.
pub fn serve_standalone(
    image: &Path,
    objects: &Path,
    mountpoint: &Path,
) -> Result<(), ServeFailed> {
    let mut o = ServeOptions::new(image, mountpoint);
    o.objects = Some(objects.to_owned());
    serve(&o, || {})
}

/// Serves the image on `dev`, a `/dev/fuse` fd already mounted by the caller
/// (`fsopen("fuse")` with `fd=N`, or `fusermount3`), until the mount goes
/// away. `opts.mountpoint` only names the mount in errors. `ready` is called
/// once the kernel handshake (FUSE_INIT) is answered, when the mount answers
/// requests.
pub fn serve_fd(
    opts: &ServeOptions,
    dev: std::os::fd::OwnedFd,
    ready: impl FnOnce(),
) -> Result<(), ServeFailed> {
    let fs = filesystem(opts)?;
    let mut config = Config::default();
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    let failed = |op| {
        let path = opts.mountpoint.clone();
        move |source| ServeFailed::Session { op, path, source }
    };
    // The kernel checks access (allow_other, default_permissions) itself; the
    // session lets every request it forwards through.
    let session =
        Session::from_fd(fs, dev, SessionACL::All, config).map_err(failed("handshake on"))?;
    ready();
    session.run().map_err(failed("serve"))
}
