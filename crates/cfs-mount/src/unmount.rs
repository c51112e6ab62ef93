//! `cfs unmount MNT`, for every mode, by identity ([`crate::identity`]): the
//! mount point is opened without following symlinks, the mount found on it
//! is looked up by its id in `/proc/self/mountinfo`, and only a cfs mount
//! is unmounted, through the fd:
//! - **kernel** and **fuse+overlay**: one `umount2(2)` of the overlay. Its
//!   lower layer (erofs, or the FUSE mount) is a detached mount only the
//!   overlay holds, so it goes with it (and a loop device, being autoclear,
//!   with the erofs mount); the FUSE server then sees its session end.
//! - **standalone FUSE**: `umount2(2)`, or where that is refused for lack of
//!   privilege (EPERM), the setuid `fusermount3 -u`, as libfuse does.
//! - **service**: `umount2(2)` for whoever may (root; root of the user
//!   namespace owning the mount's namespace); a plain user asks the mount
//!   service, which unmounts only a mount it made for that user.
//!
//! None of this talks to the server, so a dead one doesn't get in the way.

use crate::error::UnmountError;
use crate::identity::{IdentifyError, MountId, OpenMountPoint};
use crate::MountMode;
use rustix::io::Errno;
use std::path::Path;

/// Unmounts the composefs mount at `target`, whatever its mode. With `lazy`,
/// a busy mount is detached at once and goes away when its last open file
/// closes.
pub fn unmount(target: &Path, lazy: bool) -> Result<(), UnmountError> {
    let mp = open(target)?;
    let info = mp
        .info()
        .map_err(|source| UnmountError::Io {
            path: mp.path().to_path_buf(),
            source,
        })?
        .ok_or_else(|| UnmountError::NotMounted(mp.path().to_path_buf()))?;
    let Some(mode) = info.cfs_mode() else {
        return Err(UnmountError::NotCfs(mp.path().to_path_buf()));
    };
    if mode == MountMode::Service && !crate::Privilege::probe().cap_sys_admin {
        return crate::service::client::unmount(mp, lazy);
    }
    unmount_open(mp, mode, lazy)
}

/// Unmounts (lazily) the mount at `target` if it is the mount `id`: how a
/// server told to stop removes its own mount and never another one.
pub fn unmount_own(target: &Path, id: MountId) -> Result<(), UnmountError> {
    let mp = open(target)?;
    if mp.id() != id {
        return Err(UnmountError::NotOurs(mp.path().to_path_buf()));
    }
    let mode = mp
        .info()
        .ok()
        .flatten()
        .and_then(|i| i.cfs_mode())
        .unwrap_or(MountMode::Fuse);
    unmount_open(mp, mode, true)
}

fn open(target: &Path) -> Result<OpenMountPoint, UnmountError> {
    OpenMountPoint::open(target).map_err(|e| match e {
        IdentifyError::NotMounted(p) => UnmountError::NotMounted(p),
        e => UnmountError::Identify(e),
    })
}

fn unmount_open(mp: OpenMountPoint, mode: MountMode, lazy: bool) -> Result<(), UnmountError> {
    let path = mp.path().to_path_buf();
    match mp.unmount(lazy) {
        Ok(()) => Ok(()),
        // Not ours to unmount: a plain user's FUSE mount, which fusermount3
        // unmounts after checking it is that user's.
        Err(Errno::PERM) if mode == MountMode::Fuse => crate::fusermount::unmount(&path, lazy)
            .map_err(|source| UnmountError::Io { path, source }),
        Err(Errno::INVAL) => Err(UnmountError::NotMounted(path)),
        Err(Errno::BUSY) => Err(UnmountError::Busy(path)),
        Err(e) => Err(UnmountError::Io {
            path,
            source: e.into(),
        }),
    }
}
