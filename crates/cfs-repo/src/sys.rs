//! The crate's only `unsafe`: the one system call rustix does not wrap,
//! `statmount(2)` (Linux 6.8; the mount namespace field of its request
//! since 6.11), used to tell whether a mount recorded by a pin still exists,
//! and which mount namespace and file system an open file is on
//! (<https://man7.org/linux/man-pages/man2/statmount.2.html>); and the
//! `FS_IOC_ENABLE_VERITY` ioctl the object store asks for fs-verity with
//! (<https://docs.kernel.org/filesystems/fsverity.html>).
//!
//! Mounts are named by their unique 64-bit id (`statx` `STATX_MNT_ID_UNIQUE`,
//! Linux 6.8), which the kernel never reuses while it runs, and by the id of
//! their mount namespace.

use rustix::fs::{AtFlags, StatxFlags};
use rustix::io::Errno;
use std::os::fd::AsFd;

/// `statmount`'s number: the same in every architecture's unified syscall
/// table that has it (x86_64, aarch64, riscv64, …).
const SYS_STATMOUNT: libc::c_long = 457;
/// `STATX_MNT_ID_UNIQUE`: `stx_mnt_id` is the 64-bit unique id.
const STATX_MNT_ID_UNIQUE: u32 = 0x4000;
/// `MNT_ID_REQ_SIZE_VER1`: the request with `mnt_ns_id`.
const MNT_ID_REQ_SIZE_VER1: u32 = 32;
/// `STATMOUNT_MNT_NS_ID`: the mount namespace's id.
const STATMOUNT_MNT_NS_ID: u64 = 0x40;
/// `STATMOUNT_SB_BASIC | STATMOUNT_MNT_BASIC | STATMOUNT_MNT_NS_ID`: the
/// superblock's magic and the mount's ids, no strings. Nothing here asks
/// the file system itself: a stalled FUSE server can't block it.
const STATMOUNT_MASK: u64 = 0x1 | 0x2 | STATMOUNT_MNT_NS_ID;

/// `struct mnt_id_req` (`include/uapi/linux/mount.h`), version 1.
#[repr(C)]
struct MntIdReq {
    size: u32,
    spare: u32,
    mnt_id: u64,
    param: u64,
    mnt_ns_id: u64,
}

/// The head of `struct statmount` up to `mnt_ns_id`, padded to its 512
/// bytes (Linux 6.18).
#[repr(C)]
struct Statmount {
    size: u32,
    mnt_opts: u32,
    mask: u64,
    sb_dev_major: u32,
    sb_dev_minor: u32,
    sb_magic: u64,
    sb_flags: u32,
    fs_type: u32,
    mnt_id: u64,
    mnt_parent_id: u64,
    mnt_id_old: u32,
    mnt_parent_id_old: u32,
    mnt_attr: u64,
    mnt_propagation: u64,
    mnt_peer_group: u64,
    mnt_master: u64,
    propagate_from: u64,
    mnt_root: u32,
    mnt_point: u32,
    mnt_ns_id: u64,
    rest: [u64; 49],
}

/// What `statmount` writes into: the struct and room for a larger future
/// one (the kernel answers `EOVERFLOW` to a buffer smaller than its own
/// struct, and writes strings only when asked: we ask for none).
#[repr(C)]
struct StatmountBuf {
    head: Statmount,
    room: [u64; 448],
}

/// A mount, as the kernel names it for as long as it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountId {
    /// The unique mount id.
    pub mnt_id: u64,
    /// The id of the mount namespace it is in.
    pub mnt_ns_id: u64,
}

/// The unique id (`STATX_MNT_ID_UNIQUE`) of the mount `fd` is on, asking
/// the file system nothing (`AT_STATX_DONT_SYNC`: no GETATTR to a FUSE
/// server that may not be serving yet). `ENOSYS` before Linux 6.8.
fn unique_mount_id(fd: impl AsFd) -> rustix::io::Result<u64> {
    let st = rustix::fs::statx(
        fd,
        c"",
        AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC,
        StatxFlags::from_bits_retain(STATX_MNT_ID_UNIQUE),
    )?;
    if st.stx_mask & STATX_MNT_ID_UNIQUE == 0 {
        return Err(Errno::NOSYS);
    }
    Ok(st.stx_mnt_id)
}

/// The mount `fd` (or the file it refers to) is on: its unique id and its
/// namespace. `ENOSYS`/`EINVAL` on kernels before 6.11.
pub fn mount_of(fd: impl AsFd) -> rustix::io::Result<MountId> {
    mount_by_unique_id(unique_mount_id(fd)?)
}

/// The mount whose unique id (`STATX_MNT_ID_UNIQUE`) is `mnt_id`, in this
/// process's mount namespace: its [`MountId`]. `ENOENT` when there is no
/// such mount there; `ENOSYS`/`EINVAL` on kernels before 6.11.
pub fn mount_by_unique_id(mnt_id: u64) -> rustix::io::Result<MountId> {
    let sm = statmount(mnt_id, 0)?;

    if sm.mask & STATMOUNT_MNT_NS_ID == 0 || sm.mnt_ns_id == 0 {
        return Err(Errno::NOSYS);
    }
    Ok(MountId {
        mnt_id,
        mnt_ns_id: sm.mnt_ns_id,
    })
}

/// The mount on top of `path` now (the path is looked up `O_PATH`, so
/// nothing is opened on the mount itself).
pub fn mount_at(path: &std::path::Path) -> rustix::io::Result<MountId> {
    let fd = rustix::fs::open(
        path,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    mount_of(&fd)
}

/// A mount seen from a given mount namespace ([`mount_in`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountFacts {
    /// The mount's ids.
    pub id: MountId,
    /// Its file system's magic number (`statfs(2)`'s `f_type`), as the
    /// superblock records it.
    pub sb_magic: u64,
}

/// The mount the open file `fd` is on, looked up in the mount namespace
/// `mnt_ns_id`: `ENOENT` when it is not in that namespace (another
/// namespace, a detached mount, a kernel-internal one such as a memfd's).
/// Asks the file system nothing (`AT_STATX_DONT_SYNC`, `statmount`).
pub fn mount_in(fd: impl AsFd, mnt_ns_id: u64) -> rustix::io::Result<MountFacts> {
    let mnt_id = unique_mount_id(fd)?;
    let sm = statmount(mnt_id, mnt_ns_id)?;
    Ok(MountFacts {
        id: MountId {
            mnt_id,
            mnt_ns_id: sm.mnt_ns_id,
        },
        sb_magic: sm.sb_magic,
    })
}

/// Whether the mount `id` still exists: `Ok(false)` when the kernel says
/// there is no such mount or namespace (`ENOENT`); an error when it can't
/// tell (`EPERM` for a namespace this process may not look into, `ENOSYS`
/// or `EINVAL` on an older kernel).
pub fn mount_exists(id: MountId) -> rustix::io::Result<bool> {
    match statmount(id.mnt_id, id.mnt_ns_id) {
        Ok(sm) => Ok(sm.mnt_id == id.mnt_id),
        Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `statmount(mnt_id, mnt_ns_id)` for the mount's basic ids, namespace and
/// superblock magic;
/// `mnt_ns_id` 0 means this process's namespace.
fn statmount(mnt_id: u64, mnt_ns_id: u64) -> rustix::io::Result<Statmount> {
    let req = MntIdReq {
        size: MNT_ID_REQ_SIZE_VER1,
        spare: 0,
        mnt_id,
        param: STATMOUNT_MASK,
        mnt_ns_id,
    };
    let mut buf = Box::new(std::mem::MaybeUninit::<StatmountBuf>::zeroed());
    // SAFETY: `req` is a valid, initialised `struct mnt_id_req` of the size
    // its `size` field states, which the kernel only reads; `buf` points to
    // `size_of::<StatmountBuf>()` writable bytes that live across the call,
    // and the kernel writes at most `bufsize` bytes into it. The flags
    // argument must be 0.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::syscall(
            SYS_STATMOUNT,
            &req as *const MntIdReq,
            buf.as_mut_ptr(),
            std::mem::size_of::<StatmountBuf>(),
            0u32,
        )
    };
    if r < 0 {
        return Err(Errno::from_raw_os_error(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ));
    }
    // SAFETY: the buffer was zeroed before the call and every field of
    // `StatmountBuf` is a plain integer, for which all bit patterns (zero or
    // what the kernel wrote) are valid.
    #[allow(unsafe_code)]
    Ok(unsafe { buf.assume_init() }.head)
}

/// `struct fsverity_enable_arg` (`include/uapi/linux/fsverity.h`).
#[repr(C)]
struct FsverityEnableArg {
    version: u32,
    hash_algorithm: u32,
    block_size: u32,
    salt_size: u32,
    salt_ptr: u64,
    sig_size: u32,
    reserved1: u32,
    sig_ptr: u64,
    reserved2: [u64; 11],
}

/// `FS_IOC_ENABLE_VERITY = _IOW('f', 133, struct fsverity_enable_arg)`.
const FS_IOC_ENABLE_VERITY: rustix::ioctl::Opcode =
    rustix::ioctl::opcode::write::<FsverityEnableArg>(b'f', 133);

/// Enables fs-verity (sha256, 4096-byte blocks, no salt: the digest objects
/// are named by) on a file opened read-only with no writable fd left.
#[allow(unsafe_code)]
pub(crate) fn enable_verity(fd: std::os::fd::BorrowedFd<'_>) -> rustix::io::Result<()> {
    let arg = FsverityEnableArg {
        version: 1,
        hash_algorithm: 1, // FS_VERITY_HASH_ALG_SHA256
        block_size: 4096,
        salt_size: 0,
        salt_ptr: 0,
        sig_size: 0,
        reserved1: 0,
        sig_ptr: 0,
        reserved2: [0; 11],
    };
    // SAFETY: FS_IOC_ENABLE_VERITY reads exactly one `fsverity_enable_arg`
    // (128 bytes, the size encoded in the opcode) from the pointer and writes
    // nothing; `arg` is that struct with `repr(C)` layout, fully initialised,
    // and lives across the call. salt_ptr and sig_ptr are null with sizes 0.
    unsafe {
        let ioctl = rustix::ioctl::Setter::<FS_IOC_ENABLE_VERITY, FsverityEnableArg>::new(arg);
        rustix::ioctl::ioctl(fd, ioctl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_kernel() {
        assert_eq!(
            std::mem::size_of::<MntIdReq>(),
            MNT_ID_REQ_SIZE_VER1 as usize
        );
        assert_eq!(std::mem::size_of::<Statmount>(), 512);
        assert_eq!(std::mem::offset_of!(Statmount, mnt_id), 40);
        assert_eq!(std::mem::offset_of!(Statmount, mnt_ns_id), 112);
        assert_eq!(std::mem::size_of::<FsverityEnableArg>(), 128);
        assert_eq!(std::mem::offset_of!(FsverityEnableArg, salt_ptr), 16);
        assert_eq!(std::mem::offset_of!(FsverityEnableArg, sig_ptr), 32);
        assert_eq!(FS_IOC_ENABLE_VERITY, 0x4080_6685);
    }

    #[test]
    fn the_root_mount_exists_and_a_made_up_one_does_not() {
        let root = std::fs::File::open("/").unwrap();
        let id = match mount_of(&root) {
            Ok(id) => id,
            Err(e) => {
                println!("skipped: this kernel has no statmount with namespaces ({e})");
                return;
            }
        };
        assert_eq!(mount_exists(id), Ok(true));
        let gone = MountId {
            mnt_id: u64::MAX - 1,
            ..id
        };
        assert_eq!(mount_exists(gone), Ok(false));
        let no_ns = MountId {
            mnt_ns_id: u64::MAX - 1,
            ..id
        };
        assert_eq!(mount_exists(no_ns), Ok(false));
        // The same mount through `mount_in`, with its file system's magic.
        let facts = mount_in(&root, id.mnt_ns_id).unwrap();
        assert_eq!(facts.id, id);
        let statfs = rustix::fs::fstatfs(&root).unwrap();
        assert_eq!(facts.sb_magic, statfs.f_type as u64);
        assert_eq!(mount_in(&root, no_ns.mnt_ns_id), Err(Errno::NOENT));
        // A memfd lives on a kernel-internal mount, in no namespace.
        let memfd = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        assert_eq!(mount_in(&memfd, id.mnt_ns_id), Err(Errno::NOENT));
    }
}
