//! `cfs unmount MNT`, for every mode, read from `/proc/self/mountinfo`
//! ([`crate::mounts`]):
//! - **kernel** and **fuse+overlay**: one `umount2(2)` of the overlay. Its
//!   lower layer (erofs, or the FUSE mount) is a detached mount only the
//!   overlay holds, so it goes with it (and a loop device, being autoclear,
//!   with the erofs mount); the FUSE server then sees its session end.
//! - **standalone FUSE**: `umount2(2)`, or where that is refused for lack of
//!   privilege (EPERM), the setuid `fusermount3 -u`, as libfuse does.
//!
//! None of this talks to the server, so a dead one doesn't get in the way.

use crate::error::UnmountError;
use crate::MountMode;
use rustix::io::Errno;
use rustix::mount::UnmountFlags;
use std::path::Path;

/// Unmounts the composefs mount at `target`, whatever its mode. With `lazy`,
/// a busy mount is detached at once and goes away when its last open file
/// closes.
pub fn unmount(target: &Path, lazy: bool) -> Result<(), UnmountError> {
    let mode = match crate::mounts::at(target) {
        Some(Some(m)) => Some(m.mode),
        Some(None) => return Err(UnmountError::NotCfs(target.to_path_buf())),
        None => None,
    };
    let flags = if lazy {
        UnmountFlags::DETACH
    } else {
        UnmountFlags::empty()
    };
    match rustix::mount::unmount(target, flags | UnmountFlags::NOFOLLOW) {
        Ok(()) => Ok(()),
        Err(Errno::PERM) if mode == Some(MountMode::Fuse) => {
            crate::fuse::fusermount3_unmount(target, lazy).map_err(|source| UnmountError::Io {
                path: target.to_path_buf(),
                source,
            })
        }
        Err(Errno::INVAL) => Err(UnmountError::NotMounted(target.to_path_buf())),
        Err(Errno::BUSY) => Err(UnmountError::Busy(target.to_path_buf())),
        Err(e) => Err(UnmountError::Io {
            path: target.to_path_buf(),
            source: e.into(),
        }),
    }
}
