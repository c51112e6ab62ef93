//! Mounting composefs images, in four modes ([`MountMode`]):
//! - **kernel**: erofs from the image file under overlayfs with the object
//!   directories as data-only layers (`kernel`), for CAP_SYS_ADMIN in the
//!   initial user namespace;
//! - **service**: the same kernel mount, made for an unprivileged client by
//!   the root daemon `cfs mount-service` from its own validated copy of the
//!   image, in the client's mount namespace and with its credentials
//!   ([`service`]);
//! - **fuse+overlay**: the cfs FUSE server for metadata under an overlayfs
//!   with `userxattr` that reads contents from the object directories itself,
//!   for root in a user namespace (`fuse`);
//! - **standalone FUSE**: the server for metadata and contents, mounted with
//!   `fsopen("fuse")` when privileged, else the setuid `fusermount3`.
//!
//! This crate is the only code that mounts and unmounts, for every mode;
//! the FUSE server (`cfs-fuse`) only serves a connection it is handed.
//!
//! [`mount_with`] mounts in the mode a [`Decision`] names ([`decide`],
//! [`detect`]); [`mount`] is the kernel entry `mount.composefs` uses.
//! [`image`] opens, checks and measures the image once, before anything is
//! mounted; [`options`] builds what the kernel is told (pure, unit tested),
//! [`sys`] is the thin layer that tells it (and holds every `unsafe`),
//! [`server`] runs the FUSE server (detached or in the foreground) and
//! decides when it ends, `fusermount` is the one place `fusermount3` runs,
//! [`identity`] finds a mount by its id rather than by a path, [`service`]
//! is both ends of the mount service (client, protocol, the daemon's
//! mounting),
//! [`unmount()`] undoes any mode, and [`mounts`] lists what cfs has mounted.

pub mod detect;
pub mod error;
mod fuse;
mod fusermount;
pub mod identity;
pub mod image;
mod kernel;
pub mod mounts;
pub mod options;
pub mod server;
pub mod service;
pub mod sys;
pub mod unmount;

pub use detect::{Decision, FuseChoice, Privilege};
pub use error::{MountError, UnmountError};
pub use identity::MountId;
pub use options::{ErofsBacking, MountConfig, OpenedImage, ServeMode, Tuning, Upper, Verity};
pub use server::{Server, ServerCommand};
pub use unmount::unmount;

use image::CheckedImage;
use rustix::io::Errno;
use std::path::{Path, PathBuf};

/// How an image gets mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountMode {
    /// erofs + overlayfs in the kernel; needs CAP_SYS_ADMIN in the initial
    /// user namespace.
    Kernel,
    /// A FUSE server for the image's metadata under overlayfs with
    /// `userxattr`, contents read by overlayfs from the object directories:
    /// CAP_SYS_ADMIN in a user namespace (rootless), or root with `--fuse=yes`.
    FuseOverlay,
    /// A standalone FUSE server for metadata and contents (rootless, no
    /// overlayfs), mounted by `fusermount3` without privilege.
    Fuse,
    /// erofs + overlayfs in the kernel, made by the mount service (`cfs
    /// mount-service`) for an unprivileged client.
    Service,
}

impl MountMode {
    /// The name users see (`kernel`, `fuse+overlay`, `fuse`, `service`).
    pub fn as_str(self) -> &'static str {
        match self {
            MountMode::Kernel => "kernel",
            MountMode::FuseOverlay => "fuse+overlay",
            MountMode::Fuse => "fuse",
            MountMode::Service => "service",
        }
    }
}

impl std::fmt::Display for MountMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mount made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mounted {
    /// How.
    pub mode: MountMode,
    /// Where (canonicalised).
    pub mountpoint: PathBuf,
    /// The attached mount's identity, when it could be read.
    pub id: Option<MountId>,
}

/// Mounts the image `cfg` describes at `target` in `mode`, with the
/// privilege probed here; a FUSE mode's server runs detached (this
/// executable, [`ServerCommand::this_exe`]).
pub fn mount(cfg: &MountConfig, target: &Path, mode: MountMode) -> Result<Mounted, MountError> {
    let server = ServerCommand::this_exe().map_err(|source| MountError::Io {
        op: "find the executable to run the server from for",
        path: target.to_path_buf(),
        source,
    })?;
    let decision = Decision {
        mode,
        why: String::new(),
        privilege: Privilege::probe(),
        fallback: None,
    };
    mount_with(cfg, target, &decision, Server::Detached(server))
}

/// Mounts in the mode `decision` names, with the privilege it probed, the
/// FUSE server run as `server` says. With [`Server::Foreground`] and a FUSE
/// mode, returns once the mount has gone away.
///
/// Everything is opened and checked before anything is mounted: the mount
/// point, the object directories, and the image (measured with `digest=`;
/// see [`image`]), which is what the kernel or the server then reads.
pub fn mount_with(
    cfg: &MountConfig,
    target: &Path,
    decision: &Decision,
    server: Server,
) -> Result<Mounted, MountError> {
    let mode = decision.mode;
    // Opened once: the mount goes on this fd, wherever the path leads later.
    let target = open_mountpoint(target)?;
    let cfg = prepare(cfg, mode)?;
    kernel::check_basedirs(&cfg)?;
    if mode == MountMode::Service {
        // The service reads, checks and mounts its own copy of the image.
        let id = service::client::mount(&cfg, &target.path)?;
        return Ok(Mounted {
            mode,
            mountpoint: target.path,
            id: Some(id),
        });
    }
    let image = match &cfg.opened_image {
        Some(opened) => {
            let file = opened.file().try_clone().map_err(|source| MountError::Io {
                op: "duplicate the image's fd",
                path: cfg.image.clone(),
                source,
            })?;
            CheckedImage::from_file(file, &cfg.image, cfg.expected_digest)?
        }
        None => CheckedImage::open(&cfg.image, cfg.expected_digest)?,
    };
    if cfg.check_objects && !cfg.basedirs.is_empty() {
        image.check_objects(&cfg.basedirs)?;
    }
    let id = match mode {
        MountMode::Kernel => {
            let overlay = kernel::mount(&cfg, &image, &target)?;
            identity::mount_id(rustix::fd::AsFd::as_fd(&overlay)).ok()
        }
        m => fuse::mount(&cfg, image, &target, m, server, decision.privilege)?,
    };
    Ok(Mounted {
        mode,
        mountpoint: target.path,
        id,
    })
}

/// The mode [`mount_with`] should use for `choice`, and why, without mounting.
pub fn decide(cfg: &MountConfig, choice: FuseChoice) -> Result<Decision, MountError> {
    let facts = detect::Facts::probe(choice, cfg.upper.is_some());
    detect::decide(choice, &facts).map_err(MountError::NoMode)
}

/// The options checked for `mode`, with absolute paths: overlayfs keeps the
/// layer strings for mountinfo, and the server names its mount point.
fn prepare(cfg: &MountConfig, mode: MountMode) -> Result<MountConfig, MountError> {
    // Standalone FUSE may serve an image without objects (its external
    // files then answer EIO); the overlays need an object directory.
    if !(mode == MountMode::Fuse && cfg.basedirs.is_empty()) {
        cfg.validate().map_err(MountError::Config)?;
    }
    if cfg.idmap.is_some() && mode != MountMode::Kernel {
        return Err(MountError::Config(format!(
            "idmap needs the kernel mount (an idmapped erofs layer); the {mode} mode can't"
        )));
    }
    let abs = |p: &Path| {
        std::path::absolute(p).map_err(|source| MountError::Io {
            op: "make absolute",
            path: p.to_path_buf(),
            source,
        })
    };
    let mut out = cfg.clone();
    out.image = abs(&cfg.image)?;
    for d in &mut out.basedirs {
        *d = abs(d)?;
    }
    if let Some(up) = &mut out.upper {
        up.upperdir = abs(&up.upperdir)?;
        up.workdir = abs(&up.workdir)?;
    }
    Ok(out)
}

/// Sets the overlay parameters `params` on `ctx`, each layer directory
/// given by path (`datadir+`, `upperdir`, `workdir`) opened first, as a
/// mount point is ([`identity::open_mount_target`]: no symlink of another
/// user followed), and given by fd ([`set_layer`]), so the kernel, which
/// resolves paths as the mounter, uses the directory that was opened,
/// whatever another user swaps on the path meanwhile. `err` names a failed
/// `fsconfig`.
pub(crate) fn set_overlay_params(
    ctx: &sys::FsContext,
    params: Vec<options::Param>,
    err: impl Fn(sys::KernelError) -> MountError,
) -> Result<(), MountError> {
    for p in params {
        let what = match &p {
            options::Param::Str("datadir+", _) => "object directory",
            options::Param::Str("upperdir", _) => "upper directory",
            options::Param::Str("workdir", _) => "work directory",
            _ => {
                ctx.set(&p).map_err(&err)?;
                continue;
            }
        };
        let options::Param::Str(key, value) = p else {
            unreachable!("matched as a string parameter above")
        };
        let found = open_layer_dir(Path::new(&value), what)?;
        // FSCONFIG_SET_FD takes no O_PATH fd: the directory itself, opened
        // through the one found; one the mounter may search but not read
        // is named by its O_PATH fd instead.
        let flags = rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::DIRECTORY
            | rustix::fs::OFlags::CLOEXEC;
        match rustix::fs::openat(&found, ".", flags, rustix::fs::Mode::empty()) {
            Ok(dir) => set_layer(ctx, key, rustix::fd::AsFd::as_fd(&dir)),
            Err(_) => ctx.set(&options::Param::Str(
                key,
                sys::fd_path(rustix::fd::AsFd::as_fd(&found)),
            )),
        }
        .map_err(&err)?;
    }
    Ok(())
}

/// Opens the layer directory `path` (`what`, for messages) as a mount
/// point is ([`identity::open_mount_target`]: no symlink of another user
/// followed): an `O_PATH` fd, which needs no read permission.
pub(crate) fn open_layer_dir(
    path: &Path,
    what: &'static str,
) -> Result<rustix::fd::OwnedFd, MountError> {
    let bad = |why: String| MountError::BadLayer {
        what,
        path: path.to_path_buf(),
        why,
    };
    let opened = identity::open_mount_target(path).map_err(|e| match e {
        identity::IdentifyError::Symlink(link) => bad(format!(
            "{} is a symlink of another user: it is not followed (give the real path)",
            link.display()
        )),
        e => bad(match std::error::Error::source(&e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        }),
    })?;
    Ok(opened.fd)
}

/// `key` = the directory `fd`: by fd (`FSCONFIG_SET_FD`, Linux 6.13+, so
/// mountinfo shows its real path), else as `/proc/thread-self/fd/N`.
pub(crate) fn set_layer(
    ctx: &sys::FsContext,
    key: &'static str,
    fd: rustix::fd::BorrowedFd<'_>,
) -> Result<(), sys::KernelError> {
    match ctx.set_fd(key, fd) {
        Err(e) if e.errno == Errno::INVAL => {
            use std::os::fd::AsRawFd;
            let path = format!("/proc/thread-self/fd/{}", fd.as_raw_fd());
            ctx.set(&options::Param::Str(key, path.into()))
        }
        r => r,
    }
}

/// The mount point, opened ([`identity::open_mount_target`]): it must be
/// an existing directory with nothing mounted on it, reached through no
/// symlink another user owns.
fn open_mountpoint(target: &Path) -> Result<identity::MountTarget, MountError> {
    let bad = |why: &str| MountError::BadMountpoint {
        path: target.to_path_buf(),
        why: why.to_string(),
    };
    let opened = identity::open_mount_target(target).map_err(|e| match e {
        identity::IdentifyError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            bad("does not exist (create it with mkdir)")
        }
        identity::IdentifyError::Symlink(link) => bad(&format!(
            "{} is a symlink of another user: it is not followed (give the real path)",
            link.display()
        )),
        identity::IdentifyError::Io { path, source } => MountError::Io {
            op: "look up the mount point",
            path,
            source,
        },
        identity::IdentifyError::NotMounted(path) => MountError::Io {
            op: "look up the mount point",
            path,
            source: Errno::INVAL.into(),
        },
    })?;
    let is_dir = rustix::fs::statx(
        &opened.fd,
        "",
        rustix::fs::AtFlags::EMPTY_PATH | rustix::fs::AtFlags::STATX_DONT_SYNC,
        rustix::fs::StatxFlags::TYPE,
    )
    .is_ok_and(|s| u32::from(s.stx_mode) & 0o170000 == 0o040000);
    if !is_dir {
        return Err(bad("is not a directory (mount on a directory)"));
    }
    if identity::mount_root_id(rustix::fd::AsFd::as_fd(&opened.fd)).is_ok() {
        return Err(bad(
            "already has a filesystem mounted on it (cfs unmount it first, or pick another directory)",
        ));
    }
    Ok(opened)
}
