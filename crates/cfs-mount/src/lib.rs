//! Mounting composefs images, in three modes ([`MountMode`]):
//! - **kernel**: erofs from the image file under overlayfs with the object
//!   directories as data-only layers (`kernel`), for CAP_SYS_ADMIN in the
//!   initial user namespace;
//! - **fuse+overlay**: the cfs FUSE server for metadata under an overlayfs
//!   with `userxattr` that reads contents from the object directories itself,
//!   for root in a user namespace (`fuse`);
//! - **standalone FUSE**: the server for metadata and contents, mounted with
//!   `fusermount3`, for anyone.
//!
//! [`mount_as`] picks the mode ([`detect`]) and mounts; [`mount`] mounts in a
//! given one. [`options`] builds what the kernel is told (pure, unit tested),
//! [`syscalls`] is the thin layer that tells it, [`server`] runs the FUSE
//! server (detached or in the foreground), [`unmount()`] undoes any mode,
//! [`mounts`] lists what cfs has mounted, and `repo` finds an image in a
//! repository by name.

pub mod detect;
pub mod error;
mod fuse;
mod kernel;
pub mod mounts;
pub mod options;
pub mod server;
pub mod syscalls;
pub mod unmount;

pub use detect::{Decision, FuseChoice};
pub use error::{MountError, UnmountError};
pub use options::{ErofsBacking, MountConfig, Upper, Verity};
pub use server::{Server, ServerCommand};
pub use unmount::unmount;

use std::path::Path;

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
}

impl std::fmt::Display for MountMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(server::mode_name(*self))
    }
}

/// Mounts the image `cfg` describes at `target` in the given mode; a FUSE
/// mode's server runs detached (this executable, [`ServerCommand::this_exe`]).
pub fn mount(cfg: &MountConfig, target: &Path, mode: MountMode) -> Result<(), MountError> {
    let server = ServerCommand::this_exe().map_err(|source| MountError::Io {
        op: "find the executable to run the server from for",
        path: target.to_path_buf(),
        source,
    })?;
    mount_with(cfg, target, mode, &Server::Detached(server))
}

/// Mounts in the given mode, the FUSE server run as `server` says.
pub fn mount_with(
    cfg: &MountConfig,
    target: &Path,
    mode: MountMode,
    server: &Server,
) -> Result<(), MountError> {
    check_mountpoint(target)?;
    // The server and mountinfo know the mount point by its absolute path.
    let target = &std::fs::canonicalize(target).map_err(|source| MountError::Io {
        op: "resolve the mount point",
        path: target.to_path_buf(),
        source,
    })?;
    match mode {
        MountMode::Kernel => kernel::mount(cfg, target),
        m => {
            let cfg = kernel::prepare(cfg)?;
            fuse::mount(&cfg, target, m, server)
        }
    }
}

/// Picks the mode for `choice` (see [`detect`]) and mounts in it. Returns
/// the decision once the mount answers (or, with [`Server::Foreground`] and
/// a FUSE mode, once it has gone away).
pub fn mount_as(
    cfg: &MountConfig,
    target: &Path,
    choice: FuseChoice,
    server: &Server,
) -> Result<Decision, MountError> {
    let decision = decide(cfg, choice)?;
    mount_with(cfg, target, decision.mode, server)?;
    Ok(decision)
}

/// The mode [`mount_as`] would use, and why, without mounting.
pub fn decide(cfg: &MountConfig, choice: FuseChoice) -> Result<Decision, MountError> {
    let facts = detect::Facts::probe(choice, cfg.upper.is_some());
    detect::decide(choice, &facts).map_err(MountError::NoMode)
}

/// The mount point must be an existing directory with nothing mounted on it.
fn check_mountpoint(target: &Path) -> Result<(), MountError> {
    let bad = |why: &str| MountError::BadMountpoint {
        path: target.to_path_buf(),
        why: why.to_string(),
    };
    match std::fs::metadata(target) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(bad("does not exist (create it with mkdir)"))
        }
        Err(e) => {
            return Err(MountError::Io {
                op: "look up the mount point",
                path: target.to_path_buf(),
                source: e,
            })
        }
        Ok(m) if !m.is_dir() => return Err(bad("is not a directory (mount on a directory)")),
        Ok(_) => {}
    }
    if mounts::is_mountpoint(target) {
        return Err(bad(
            "already has a filesystem mounted on it (cfs unmount it first, or pick another directory)",
        ));
    }
    Ok(())
}
