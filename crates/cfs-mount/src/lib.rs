//! Mounting composefs images.
//!
//! Three modes are planned ([`MountMode`]); the kernel one is built: erofs
//! from the image file under overlayfs with the object directories as
//! data-only layers. [`options`] builds what the kernel is told (pure, unit
//! tested), [`syscalls`] is the thin layer that tells it, [`unmount`] undoes
//! any mode, and [`repo`] finds an image in a repository by name.

pub mod error;
mod kernel;
pub mod options;
pub mod repo;
pub mod syscalls;
pub mod unmount;

pub use error::{MountError, UnmountError};
pub use options::{ErofsBacking, MountConfig, Upper, Verity};
pub use unmount::unmount;

use std::path::Path;

/// How an image gets mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountMode {
    /// erofs + overlayfs in the kernel; needs CAP_SYS_ADMIN in the initial
    /// user namespace.
    Kernel,
    /// A FUSE server for the image's metadata under overlayfs with
    /// `userxattr`, in a user namespace (rootless). Not built yet.
    FuseOverlay,
    /// A standalone FUSE server for metadata and contents (rootless, no
    /// overlayfs). Not built yet.
    Fuse,
}

/// Mounts the image `cfg` describes at `target` in the given mode.
pub fn mount(cfg: &MountConfig, target: &Path, mode: MountMode) -> Result<(), MountError> {
    match mode {
        MountMode::Kernel => kernel::mount(cfg, target),
        m => Err(MountError::ModeNotImplemented(m)),
    }
}
