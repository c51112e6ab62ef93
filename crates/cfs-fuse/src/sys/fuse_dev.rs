//! The `/dev/fuse` ioctls (`include/uapi/linux/fuse.h`): cloning a
//! connection's fd, and passthrough's backing files.
//!
//! **Invariant**: each ioctl is given the argument type the kernel defines
//! for its number, by value or by pointer as the kernel reads it, and the
//! pointer outlives the call (it points into this function's frame).

use crate::abi::BackingMap;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::ioctl::{ioctl, opcode, Ioctl, IoctlOutput, Opcode, Setter};
use std::ffi::c_void;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

/// `FUSE_DEV_IOC_MAGIC`.
const MAGIC: u8 = 229;
/// `FUSE_DEV_IOC_CLONE`: `_IOR(229, 0, uint32_t)`.
const CLONE: Opcode = opcode::read::<u32>(MAGIC, 0);
/// `FUSE_DEV_IOC_BACKING_OPEN`: `_IOW(229, 1, struct fuse_backing_map)`.
const BACKING_OPEN: Opcode = opcode::write::<BackingMap>(MAGIC, 1);
/// `FUSE_DEV_IOC_BACKING_CLOSE`: `_IOW(229, 2, uint32_t)`.
const BACKING_CLOSE: Opcode = opcode::write::<u32>(MAGIC, 2);

/// A new `/dev/fuse` fd attached to the connection of `session`: requests
/// are spread over every fd of a connection, and each has its own queue of
/// requests being answered, so worker threads don't contend on one lock.
/// Opens `/dev/fuse` (a character device: no path race can give us
/// anything but a fresh, unattached FUSE device or an error).
pub fn clone_connection(session: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    let new = rustix::fs::open(
        "/dev/fuse",
        OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )?;
    let mut old = session.as_raw_fd() as u32;
    // SAFETY: FUSE_DEV_IOC_CLONE reads one u32 (the fd to attach to) through
    // the pointer (`get_user` in fuse_dev_ioctl_clone); `old` lives on this
    // frame for the whole call and is a u32.
    #[allow(unsafe_code)]
    unsafe {
        ioctl(&new, rustix::ioctl::Updater::<CLONE, u32>::new(&mut old))?;
    }
    Ok(new)
}

/// `FUSE_DEV_IOC_BACKING_OPEN`, whose answer is the ioctl's return value.
struct BackingOpen(BackingMap);

// SAFETY: the opcode is BACKING_OPEN, whose argument is a pointer to a
// `struct fuse_backing_map` (which `BackingMap` is, layout-tested in
// `abi`), only read by the kernel; the output is the return value.
#[allow(unsafe_code)]
unsafe impl Ioctl for BackingOpen {
    type Output = u32;
    const IS_MUTATING: bool = false;

    fn opcode(&self) -> Opcode {
        BACKING_OPEN
    }

    fn as_ptr(&mut self) -> *mut c_void {
        std::ptr::from_mut(&mut self.0).cast()
    }

    unsafe fn output_from_ptr(out: IoctlOutput, _: *mut c_void) -> rustix::io::Result<u32> {
        u32::try_from(out).map_err(|_| Errno::INVAL)
    }
}

/// A file the kernel reads directly for FUSE passthrough, registered on a
/// connection; unregistered when dropped.
#[derive(Debug)]
pub struct Backing {
    dev: Arc<OwnedFd>,
    id: u32,
}

impl Backing {
    /// Registers `file` on the connection `dev` (needs `CAP_SYS_ADMIN` in
    /// the initial user namespace, and FUSE_PASSTHROUGH negotiated).
    pub fn open(dev: Arc<OwnedFd>, file: &impl AsFd) -> std::io::Result<Backing> {
        let map = BackingMap {
            fd: file.as_fd().as_raw_fd().into(),
            ..Default::default()
        };
        // SAFETY: see `BackingOpen`: the argument is the struct the kernel
        // expects, on this frame for the call.
        #[allow(unsafe_code)]
        let id = unsafe { ioctl(&*dev, BackingOpen(map)) }?;
        Ok(Backing { dev, id })
    }

    /// The id to answer OPEN with.
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        // SAFETY: BACKING_CLOSE reads one u32 (the id) through the pointer
        // Setter passes, which points at its own field for the call.
        #[allow(unsafe_code)]
        let _ = unsafe { ioctl(&*self.dev, Setter::<BACKING_CLOSE, u32>::new(self.id)) };
    }
}
