//! `cfs unmount MNT`: one `umount2(2)`. A kernel composefs mount is a single
//! overlay whose erofs lower is a detached mount only the overlay holds, so
//! unmounting the overlay releases the erofs mount (and any loop device,
//! which is autoclear) with it: there is nothing else to clean up.

use crate::error::UnmountError;
use rustix::io::Errno;
use rustix::mount::UnmountFlags;
use std::path::Path;

/// Unmounts the composefs mount at `target`. With `lazy`, a busy mount is
/// detached at once and goes away when its last open file closes.
pub fn unmount(target: &Path, lazy: bool) -> Result<(), UnmountError> {
    let flags = if lazy {
        UnmountFlags::DETACH
    } else {
        UnmountFlags::empty()
    };
    rustix::mount::unmount(target, flags | UnmountFlags::NOFOLLOW).map_err(|e| match e {
        Errno::INVAL => UnmountError::NotMounted(target.to_path_buf()),
        Errno::BUSY => UnmountError::Busy(target.to_path_buf()),
        e => UnmountError::Io {
            path: target.to_path_buf(),
            source: e.into(),
        },
    })
}
