//! The fds a client sent, checked before anything is read or mounted, with
//! questions the file system is never asked (`statx` with
//! `AT_STATX_DONT_SYNC`, `statmount`), so that a client's own FUSE server
//! can't stall the service by not answering:
//!
//! - the **image**: a memfd sealed against writing, growing and shrinking
//!   (`cfs mount` copies the image into one), opened for reading, within
//!   the size limit. Reading it never waits on another file system (an
//!   image on the client's own FUSE server, even under an overlay, could
//!   stall a read forever: no deadline interrupts a `pread`), and the seals
//!   keep its bytes from changing while they are read;
//! - an **object directory**: a directory in the client's mount namespace,
//!   not on FUSE (overlayfs asks a layer's file system for `statfs` when it
//!   mounts; and a layer outside the caller's namespace it won't take);
//! - the **mount point**: a directory (an `O_PATH` fd of a symlink is a
//!   symlink, refused), owned by the client's uid, not a mount point
//!   already, in the client's mount namespace, on an ordinary file system
//!   ([`MOUNTPOINT_FILE_SYSTEMS`]: not FUSE, not `/proc`, `/sys` or any
//!   other pseudo file system). Like `fusermount3`, the service mounts only
//!   where the user could have made the directory; unlike it, it looks at
//!   the directory it was given, not a path;
//! - an **unmount's directory**: a directory in the client's mount
//!   namespace, not on FUSE (the name is looked up in it while other
//!   unmounts wait).

use cfs_mount::service::Peer;
use rustix::fd::BorrowedFd;
use rustix::fs::{AtFlags, OFlags, SealFlags, StatxFlags};
use rustix::io::Errno;

/// `FUSE_SUPER_MAGIC`.
const FUSE_SUPER_MAGIC: u64 = 0x6573_5546;

/// The file systems a mount point may be on (`statfs` magic, name): those
/// that hold users' own directories. Owning a directory is not enough
/// elsewhere: a user owns `/proc/PID` of each of its processes, and a
/// mount there is what a set-user-ID program that process executes reads
/// as `/proc/self` (`fusermount3 -u` trusts `/proc/self/mounts` to say which
/// mounts are the user's, and unmounted root's); a user owns the cgroup
/// directories delegated to it. `fusermount3` keeps such a list for the
/// same reason (Linux's `include/uapi/linux/magic.h` has the numbers).
pub(crate) const MOUNTPOINT_FILE_SYSTEMS: &[(u64, &str)] = &[
    (0xEF53, "ext2/3/4"),
    (0x5846_5342, "xfs"),
    (0x9123_683E, "btrfs"),
    (0xF2F5_2010, "f2fs"),
    (0xCA45_1A4E, "bcachefs"),
    (0x2FC1_2FC1, "zfs"),
    (0x0102_1994, "tmpfs"),
    (0x8584_58F6, "ramfs"),
    (0x794C_7630, "overlayfs"),
    (0xE0F5_E1E2, "erofs"),
    (0x7371_7368, "squashfs"),
    (0x6969, "nfs"),
    (0xFF53_4D42, "cifs"),
    (0xFE53_4D42, "smb2"),
    (0x00C3_6400, "ceph"),
    (0x0116_1970, "gfs2"),
    (0x3434, "nilfs2"),
    (0x3153_464A, "jfs"),
    (0x5265_4973, "reiserfs"),
    (0x2011_BAB0, "exfat"),
    (0x4D44, "vfat"),
    (0x7366_746E, "ntfs3"),
    (0x2405_1905, "ubifs"),
];

/// Names of file systems a mount point is refused on, for the message.
const PSEUDO_FILE_SYSTEMS: &[(u64, &str)] = &[
    (0x9FA0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x6367_7270, "cgroup2"),
    (0x0027_E0EB, "cgroup"),
    (0x1CD1, "devpts"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0xCAFE_4A11, "bpf"),
    (0x7363_6673, "securityfs"),
];

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

/// The seals the image's memfd must have: no write (nor writable mapping
/// left), no growing, no shrinking; memfd_create(2).
const IMAGE_SEALS: SealFlags = SealFlags::WRITE
    .union(SealFlags::GROW)
    .union(SealFlags::SHRINK);

/// Checks the image fd; returns its size.
pub(crate) fn image(fd: BorrowedFd<'_>, max_bytes: u64) -> Result<u64, Problem> {
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
    // EINVAL for anything but shmem or hugetlbfs; a tmpfs file not made by
    // memfd_create carries F_SEAL_SEAL from its creation, so it never has
    // these.
    match rustix::fs::fcntl_get_seals(fd) {
        Ok(seals) if seals.contains(IMAGE_SEALS) => {}
        Ok(_) | Err(Errno::INVAL) => {
            return refused(
                "the image is not a memfd sealed against writing, growing and shrinking \
                 (F_SEAL_WRITE, F_SEAL_GROW, F_SEAL_SHRINK): the service reads only images it \
                 can read without waiting on a file system, and that can't change meanwhile \
                 (cfs mount sends one)",
            )
        }
        Err(e) => return Err(failed(what)(e)),
    }
    if seen.size > max_bytes {
        return refused(format!(
            "the image is {} bytes, over the service's limit of {max_bytes}",
            seen.size
        ));
    }
    Ok(seen.size)
}

/// Checks an object directory fd.
pub(crate) fn object_dir(peer: &Peer, fd: BorrowedFd<'_>) -> Result<(), Problem> {
    directory_not_on_fuse(peer, fd, "the object directory")
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
        Some(magic) => mountpoint_file_system(magic),
        None => refused("the mount point is not in your mount namespace"),
    }
}

/// Checks the directory fd of an unmount request: a directory in the
/// client's mount namespace, not on FUSE. The service looks the name up in
/// it while no other unmount may run, so a FUSE server (one mounted with
/// `allow_other`, which root may enter) that never answered that lookup
/// would hold every user's unmounts.
pub(crate) fn unmount_parent(peer: &Peer, fd: BorrowedFd<'_>) -> Result<(), Problem> {
    directory_not_on_fuse(peer, fd, "the mount point's parent directory")
}

/// `fd` (`what`, for messages) is a directory in the client's mount
/// namespace, not on FUSE.
fn directory_not_on_fuse(peer: &Peer, fd: BorrowedFd<'_>, what: &str) -> Result<(), Problem> {
    let seen = look(fd, what)?;
    if seen.kind != 0o040000 {
        return refused(format!(
            "{what} is {}, not a directory",
            kind_name(seen.kind)
        ));
    }
    match location(peer, fd, what)? {
        Some(magic) => not_fuse(magic, what),
        None => refused(format!("{what} is not in your mount namespace")),
    }
}

/// Whether a mount point may be on the file system of `magic`
/// ([`MOUNTPOINT_FILE_SYSTEMS`]).
fn mountpoint_file_system(magic: u64) -> Result<(), Problem> {
    not_fuse(magic, "the mount point")?;
    if MOUNTPOINT_FILE_SYSTEMS.iter().any(|&(m, _)| m == magic) {
        return Ok(());
    }
    let name = PSEUDO_FILE_SYSTEMS
        .iter()
        .find(|&&(m, _)| m == magic)
        .map_or(String::new(), |(_, n)| format!(" ({n})"));
    refused(format!(
        "the mount point is on a file system of type {magic:#x}{name}: the service mounts only \
         on ordinary file systems (ext4, xfs, btrfs, tmpfs, ...), never over /proc/PID, /sys \
         or another pseudo file system"
    ))
}

/// Reads the image (a sealed memfd of `size` bytes, [`image`]) whole. A
/// memfd's reads are page copies from memory (or swap) and its holes read
/// as zeros: nothing a client does makes them wait.
pub(crate) fn read_image(fd: BorrowedFd<'_>, size: u64) -> Result<Vec<u8>, Problem> {
    let mut bytes = vec![0u8; size as usize];
    let mut at = 0usize;
    while at < bytes.len() {
        let end = (at + (1 << 20)).min(bytes.len());
        match rustix::io::pread(fd, &mut bytes[at..end], at as u64) {
            // Sealed against shrinking: can't happen, refused all the same.
            Ok(0) => return refused("the image shrank while the service read it"),
            Ok(n) => at += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(failed("reading the image")(e)),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(magic: u64) -> String {
        match mountpoint_file_system(magic) {
            Err(Problem::Refused(why)) => why,
            other => panic!("{magic:#x}: not refused: {other:?}"),
        }
    }

    #[test]
    fn a_mount_point_on_proc_sysfs_or_cgroup_is_refused() {
        assert!(refusal(0x9FA0).contains("(proc)"), "{}", refusal(0x9FA0));
        assert!(refusal(0x6265_6572).contains("(sysfs)"));
        assert!(refusal(0x6367_7270).contains("(cgroup2)"));
        assert!(refusal(0x1234_5678).contains("type 0x12345678:"));
        assert!(refusal(FUSE_SUPER_MAGIC).contains("FUSE"));
    }

    fn memfd(bytes: &[u8], seals: rustix::fs::SealFlags) -> std::fs::File {
        use rustix::fs::MemfdFlags;
        use std::io::Write;
        let fd =
            rustix::fs::memfd_create("t", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
        let mut f = std::fs::File::from(fd);
        f.write_all(bytes).unwrap();
        rustix::fs::fcntl_add_seals(&f, seals).unwrap();
        f
    }

    #[test]
    fn the_image_must_be_a_sealed_memfd() {
        use rustix::fd::AsFd;
        let sealed = memfd(b"image", IMAGE_SEALS);
        assert_eq!(image(sealed.as_fd(), 5), Ok(5));
        assert!(
            matches!(image(sealed.as_fd(), 4), Err(Problem::Refused(w)) if w.contains("over the service's limit of 4"))
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("image"), b"image").unwrap();
        let plain = std::fs::File::open(dir.path().join("image")).unwrap();
        // A tmpfs file made by open(2), not memfd_create (which /dev/shm
        // is, where there is one): F_GET_SEALS answers it, F_SEAL_SEAL.
        let shm = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open("/dev/shm/cfs-service-checks-test")
            .ok();
        let _ = std::fs::remove_file("/dev/shm/cfs-service-checks-test");
        let mut refused_ones = vec![
            ("a regular file", plain),
            ("an unsealed memfd", memfd(b"image", SealFlags::empty())),
            (
                "a memfd that may still grow",
                memfd(b"image", SealFlags::WRITE | SealFlags::SHRINK),
            ),
            (
                "a memfd that may still be written",
                memfd(b"image", SealFlags::GROW | SealFlags::SHRINK),
            ),
        ];
        if let Some(shm) = shm {
            refused_ones.push(("a file on tmpfs", shm));
        }
        for (what, f) in refused_ones {
            match image(f.as_fd(), 1 << 20) {
                Err(Problem::Refused(why)) => {
                    assert!(why.contains("not a memfd sealed"), "{what}: {why}")
                }
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_mount_point_on_an_ordinary_file_system_is_taken() {
        for (magic, name) in MOUNTPOINT_FILE_SYSTEMS {
            assert_eq!(mountpoint_file_system(*magic), Ok(()), "{name}");
        }
    }
}
