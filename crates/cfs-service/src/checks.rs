//! The fds a client sent, checked before anything is read or mounted, with
//! questions the file system is never asked (`statx` with
//! `AT_STATX_DONT_SYNC`, `statmount`), so that a client's own FUSE server
//! can't stall the service by not answering:
//!
//! - the **image**: a regular file opened for reading, within the size
//!   limit, in the client's mount namespace (or a memfd, which is in none),
//!   and not on FUSE; then read whole, before a deadline;
//! - an **object directory**: a directory in the client's mount namespace,
//!   not on FUSE (overlayfs asks a layer's file system for `statfs` when it
//!   mounts; and a layer outside the caller's namespace it won't take);
//! - the **mount point**: a directory (an `O_PATH` fd of a symlink is a
//!   symlink, refused), owned by the client's uid, not a mount point
//!   already, in the client's mount namespace, not on FUSE. Like
//!   `fusermount3`, the service mounts only where the user could have made
//!   the directory; unlike it, it looks at the directory it was given, not
//!   a path.

use cfs_mount::service::Peer;
use rustix::fd::{AsFd, BorrowedFd};
use rustix::fs::{AtFlags, OFlags, StatxFlags};
use rustix::io::Errno;
use std::time::Instant;

/// `FUSE_SUPER_MAGIC`.
const FUSE_SUPER_MAGIC: u64 = 0x6573_5546;

/// What is wrong with a request: refused (the client's doing) or failed
/// (the service's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Not acceptable.
    Refused(String),
    /// Could not be done.
    Failed(String),
}

pub(crate) fn refused<T>(why: impl Into<String>) -> Result<T, Problem> {
    Err(Problem::Refused(why.into()))
}

fn failed(what: &str) -> impl FnOnce(Errno) -> Problem + '_ {
    move |e| Problem::Failed(format!("{what}: {}", std::io::Error::from(e)))
}

/// What `statx` says without asking the file system.
struct Seen {
    kind: u32,
    uid: u32,
    size: u64,
    mount_root: bool,
}

fn look(fd: BorrowedFd<'_>, what: &str) -> Result<Seen, Problem> {
    let s = rustix::fs::statx(
        fd,
        c"",
        AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC,
        StatxFlags::TYPE | StatxFlags::UID | StatxFlags::SIZE,
    )
    .map_err(failed(what))?;
    Ok(Seen {
        kind: u32::from(s.stx_mode) & 0o170000,
        uid: s.stx_uid,
        size: s.stx_size,
        mount_root: s
            .stx_attributes_mask
            .contains(rustix::fs::StatxAttributes::MOUNT_ROOT)
            && s.stx_attributes
                .contains(rustix::fs::StatxAttributes::MOUNT_ROOT),
    })
}

fn kind_name(kind: u32) -> &'static str {
    match kind {
        0o040000 => "a directory",
        0o100000 => "a regular file",
        0o120000 => "a symlink",
        0o020000 => "a character device",
        0o060000 => "a block device",
        0o010000 => "a FIFO",
        0o140000 => "a socket",
        _ => "an odd file",
    }
}

/// Where the file `fd` is: in the peer's mount namespace, on what.
fn location(peer: &Peer, fd: BorrowedFd<'_>, what: &str) -> Result<Option<u64>, Problem> {
    match cfs_repo::sys::mount_in(fd, peer.mnt_ns_id) {
        Ok(m) => Ok(Some(m.sb_magic)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(failed(what)(e)),
    }
}

fn not_fuse(magic: u64, what: &str) -> Result<(), Problem> {
    if magic == FUSE_SUPER_MAGIC {
        return refused(format!(
            "{what} is on a FUSE file system: the service reads and mounts nothing a FUSE \
             server answers for (it could stall the service)"
        ));
    }
    Ok(())
}

/// Checks the image fd; returns its size.
pub(crate) fn image(peer: &Peer, fd: BorrowedFd<'_>, max_bytes: u64) -> Result<u64, Problem> {
    let what = "the image";
    let flags = rustix::fs::fcntl_getfl(fd).map_err(failed(what))?;
    if flags.contains(OFlags::PATH) {
        return refused("the image was opened O_PATH: it can't be read through that fd");
    }
    if flags & OFlags::RWMODE == OFlags::WRONLY {
        return refused("the image was opened write-only: it can't be read through that fd");
    }
    let seen = look(fd, what)?;
    if seen.kind != 0o100000 {
        return refused(format!(
            "the image is {}, not a regular file",
            kind_name(seen.kind)
        ));
    }
    if seen.size > max_bytes {
        return refused(format!(
            "the image is {} bytes, over the service's limit of {max_bytes}",
            seen.size
        ));
    }
    match location(peer, fd, what)? {
        Some(magic) => not_fuse(magic, what)?,
        // A memfd lives on a kernel-internal mount, in no namespace, and
        // answers F_GET_SEALS; anything else outside the namespace is refused.
        None if rustix::fs::fcntl_get_seals(fd).is_ok() => {}
        None => return refused("the image is not a file in your mount namespace (nor a memfd)"),
    }
    Ok(seen.size)
}

/// Checks an object directory fd.
pub(crate) fn object_dir(peer: &Peer, fd: BorrowedFd<'_>) -> Result<(), Problem> {
    let what = "an object directory";
    let seen = look(fd, what)?;
    if seen.kind != 0o040000 {
        return refused(format!(
            "the object directory is {}, not a directory",
            kind_name(seen.kind)
        ));
    }
    match location(peer, fd, what)? {
        Some(magic) => not_fuse(magic, "the object directory"),
        None => refused("the object directory is not in your mount namespace"),
    }
}

/// Checks the mount point fd.
pub(crate) fn mountpoint(peer: &Peer, fd: BorrowedFd<'_>) -> Result<(), Problem> {
    let what = "the mount point";
    let seen = look(fd, what)?;
    if seen.kind != 0o040000 {
        return refused(format!(
            "the mount point is {}, not a directory",
            kind_name(seen.kind)
        ));
    }
    if seen.mount_root {
        return refused("the mount point already has a file system mounted on it");
    }
    if seen.uid != peer.uid {
        return refused(format!(
            "the mount point belongs to uid {}, not to you (uid {}): the service mounts only on \
             a directory you own",
            seen.uid, peer.uid
        ));
    }
    match location(peer, fd, what)? {
        Some(magic) => not_fuse(magic, "the mount point"),
        None => refused("the mount point is not in your mount namespace"),
    }
}

/// Reads the image (of `size` bytes) whole, giving up at `deadline`; the
/// file must still have that size after.
pub(crate) fn read_image(
    fd: BorrowedFd<'_>,
    size: u64,
    deadline: Instant,
) -> Result<Vec<u8>, Problem> {
    let mut bytes = vec![0u8; size as usize];
    let mut at = 0usize;
    while at < bytes.len() {
        if Instant::now() > deadline {
            return refused("reading the image took longer than the service's request timeout");
        }
        let end = (at + (1 << 20)).min(bytes.len());
        match rustix::io::pread(fd, &mut bytes[at..end], at as u64) {
            Ok(0) => return refused("the image shrank while the service read it"),
            Ok(n) => at += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(failed("reading the image")(e)),
        }
    }
    if look(fd.as_fd(), "the image")?.size != size {
        return refused("the image changed size while the service read it");
    }
    Ok(bytes)
}

/// A path for the mount point, for logs and the pin (informational: as
/// the kernel names the directory from the service's root).
pub(crate) fn describe(fd: BorrowedFd<'_>) -> String {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "?".into())
}
