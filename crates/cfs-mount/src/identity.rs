//! Finding a mount by what it is, not by where a path leads: the mount
//! point is opened once, without following symlinks, and the open fd names
//! the mount (its mount id); unmounting then acts on that mount.
//!
//! ## Why not `umount2(path)`
//! A path is resolved again by every call that takes it. Between checking
//! "the mount at /x/y is a cfs mount" and `umount2("/x/y")`, whoever owns
//! `/x` can swap `y`'s parent for a symlink to a directory holding some
//! other mount, and root unmounts that one instead (the `cfs unmount` race).
//!
//! ## How
//! 1. The parent directory is opened once, one component at a time with
//!    `openat2(RESOLVE_NO_SYMLINKS)` ([`open_mount_target`]): a symlink on
//!    the way is followed only when it is the caller's or root's (`/var/run`
//!    works), never one another user planted or swaps in. The mount point is then opened `O_PATH` beneath that
//!    directory fd (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`), which enters
//!    whatever is mounted there, without asking its filesystem anything (a
//!    dead FUSE server doesn't get in the way).
//! 2. `statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC)` gives the mount's
//!    ids (`STATX_MNT_ID`, as in mountinfo, and `STATX_MNT_ID_UNIQUE`, never
//!    reused, Linux 6.8+) and `STATX_ATTR_MOUNT_ROOT` (the fd is the root of
//!    its mount, so something is mounted there). The fd pins the mount, so
//!    its id can't be reused while we look it up in mountinfo.
//! 3. Unmounting:
//!    - **lazily** (`MNT_DETACH`): `umount2("/proc/self/fd/N")`. That magic
//!      link doesn't walk a name: the kernel jumps to the very mount and
//!      dentry the fd holds (`nd_jump_link`), so exactly the identified
//!      mount is detached, whatever happened to the path since. (The only
//!      names walked are `/proc/self/fd`, checked to be procfs.)
//!    - **not lazily**: the fd itself makes the mount busy (an `O_PATH` fd
//!      holds a mount reference, and `umount2` without `MNT_DETACH` refuses
//!      a mount anyone holds), so the fd is closed first, and the call is
//!      `umount2("/proc/self/fd/P/NAME", UMOUNT_NOFOLLOW)` with `P` the
//!      parent directory's fd: only `NAME` is looked up, in exactly the
//!      directory checked, and not followed if it became a symlink. `NAME`
//!      itself can't be renamed or replaced while something is mounted on it
//!      (EBUSY), so it names another mount only if ours was unmounted and a
//!      new one mounted there in between: by root, or by that directory's
//!      owner through `fusermount3`, which mounts only FUSE for that user.
//!      Afterwards the identified id must be gone from mountinfo.
//! 4. A user without the privilege to `umount2` (a plain user's standalone
//!    FUSE mount) has the setuid `fusermount3 -u` do it, given the resolved
//!    path right after the identity check; `fusermount3` resolves it again
//!    itself, but only ever unmounts that same user's own FUSE mounts.

use crate::mounts::{self, MountInfo};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{
    openat2, statx, AtFlags, Mode, OFlags, ResolveFlags, StatxAttributes, StatxFlags,
};
use rustix::io::Errno;
use rustix::mount::UnmountFlags;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// `STATX_MNT_ID_UNIQUE` (Linux 6.8): a 64-bit mount id never reused.
const STATX_MNT_ID_UNIQUE: u32 = 0x4000;
/// `PROC_SUPER_MAGIC`.
const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// A mount's identity across time: the unique id where the kernel has one,
/// else the (reusable) mountinfo id with the device of the mount's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountId {
    /// `STATX_MNT_ID_UNIQUE`.
    Unique(u64),
    /// `STATX_MNT_ID` and the root's `st_dev`, on kernels before 6.8.
    Reusable(u64, u64),
}

impl std::fmt::Display for MountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MountId::Unique(id) => write!(f, "u{id}"),
            MountId::Reusable(id, dev) => write!(f, "r{id}.{dev}"),
        }
    }
}

impl std::str::FromStr for MountId {
    type Err = String;
    fn from_str(s: &str) -> Result<MountId, String> {
        let bad = || format!("bad mount id {s:?}");
        if let Some(id) = s.strip_prefix('u') {
            return id.parse().map(MountId::Unique).map_err(|_| bad());
        }
        let (id, dev) = s
            .strip_prefix('r')
            .and_then(|r| r.split_once('.'))
            .ok_or_else(bad)?;
        Ok(MountId::Reusable(
            id.parse().map_err(|_| bad())?,
            dev.parse().map_err(|_| bad())?,
        ))
    }
}

/// The ids of the mount `fd` is on, and whether `fd` is its root.
struct Ids {
    id: MountId,
    /// The mountinfo id (`STATX_MNT_ID`).
    legacy: u64,
    mount_root: bool,
    symlink: bool,
}

/// Reads the ids of the mount `fd` is on, without asking its filesystem to
/// refresh anything (`AT_STATX_DONT_SYNC`: a dead FUSE server can't block
/// or fail it). The first `statx` asks for nothing the filesystem has to
/// answer (mask 0): a FUSE mount refuses every other `statx` to anyone but
/// its owner (root included, without `allow_other`), but the VFS still
/// fills in the mount id, the device and `STATX_ATTR_MOUNT_ROOT`. The unique
/// id and the file type are asked for after, where allowed.
fn ids(fd: BorrowedFd<'_>) -> rustix::io::Result<Ids> {
    let flags = AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC;
    let s = statx(fd, "", flags, StatxFlags::empty())?;
    let mount_root = s.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
        && s.stx_attributes.contains(StatxAttributes::MOUNT_ROOT);
    let legacy = s.stx_mnt_id;
    let unique = statx(
        fd,
        "",
        flags,
        StatxFlags::from_bits_retain(STATX_MNT_ID_UNIQUE),
    )
    .ok()
    .filter(|u| u.stx_mask & STATX_MNT_ID_UNIQUE != 0)
    .map(|u| u.stx_mnt_id);
    let symlink = !mount_root
        && statx(fd, "", flags, StatxFlags::TYPE)
            .is_ok_and(|t| u32::from(t.stx_mode) & 0o170000 == 0o120000);
    let dev = rustix::fs::makedev(s.stx_dev_major, s.stx_dev_minor);
    Ok(Ids {
        id: unique.map_or(MountId::Reusable(legacy, dev), MountId::Unique),
        legacy,
        mount_root,
        symlink,
    })
}

/// The identity of the mount `fd` (a mount fd from `fsmount`, or any fd on
/// the mount) is on.
pub fn mount_id(fd: BorrowedFd<'_>) -> rustix::io::Result<MountId> {
    ids(fd).map(|i| i.id)
}

/// The identity of the mount `fd` is the root of: `EINVAL` when `fd` is
/// not the root of a mount (a directory inside one, a file).
pub fn mount_root_id(fd: BorrowedFd<'_>) -> rustix::io::Result<MountId> {
    let ids = ids(fd)?;
    if !ids.mount_root {
        return Err(Errno::INVAL);
    }
    Ok(ids.id)
}

/// The identity of the mount on top of `name` in the directory `dir`
/// (`name` not followed, nothing resolved beyond it): `EINVAL` when nothing
/// is mounted there, `ELOOP` for a symlink.
pub fn mount_id_at(dir: BorrowedFd<'_>, name: &std::ffi::OsStr) -> rustix::io::Result<MountId> {
    let fd = openat2(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?;
    let ids = ids(fd.as_fd())?;
    if ids.symlink {
        return Err(Errno::LOOP);
    }
    if !ids.mount_root {
        return Err(Errno::INVAL);
    }
    Ok(ids.id)
}

/// Why a mount point could not be identified.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentifyError {
    /// Nothing is mounted there.
    #[error("{} is not a mount point", .0.display())]
    NotMounted(PathBuf),
    /// A component of the path is a symlink (or became one after the parent
    /// was resolved).
    #[error("{}: a symlink is on the path (give the mount point's real path)", .0.display())]
    Symlink(PathBuf),
    /// The path can't be opened.
    #[error("could not open {}", .path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// A mount point, opened: the mount on it is pinned and identified.
#[derive(Debug)]
pub struct OpenMountPoint {
    parent: OwnedFd,
    name: OsString,
    root: OwnedFd,
    path: PathBuf,
    id: MountId,
    legacy: u64,
}

impl OpenMountPoint {
    /// Opens the mount point `target` as the module doc says: its parent
    /// resolved once, then nothing followed.
    pub fn open(target: &Path) -> Result<OpenMountPoint, IdentifyError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |e: Errno| match e {
                Errno::LOOP | Errno::XDEV => IdentifyError::Symlink(path),
                e => IdentifyError::Io {
                    path,
                    source: e.into(),
                },
            }
        };
        let abs = std::path::absolute(target).map_err(|source| IdentifyError::Io {
            path: target.to_path_buf(),
            source,
        })?;
        let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
            return Err(IdentifyError::NotMounted(abs));
        };
        // Symlinks on the way are followed only if the caller's or root's.
        let MountTarget {
            fd: dir_fd,
            path: parent,
        } = open_mount_target(parent)?;
        let path = parent.join(name);
        let no_links = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        let root = openat2(
            &dir_fd,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            no_links | ResolveFlags::BENEATH,
        )
        .map_err(io(&path))?;
        let ids = ids(root.as_fd()).map_err(io(&path))?;
        if ids.symlink {
            return Err(IdentifyError::Symlink(path));
        }
        if !ids.mount_root {
            return Err(IdentifyError::NotMounted(path));
        }
        Ok(OpenMountPoint {
            parent: dir_fd,
            name: name.to_owned(),
            root,
            path,
            id: ids.id,
            legacy: ids.legacy,
        })
    }

    /// The mount's identity.
    pub fn id(&self) -> MountId {
        self.id
    }

    /// The resolved path (the parent resolved, the last name as given).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open mount root, the open parent directory and the name in it.
    pub fn into_parts(self) -> (OwnedFd, OwnedFd, OsString) {
        (self.root, self.parent, self.name)
    }

    /// The mount's row in `/proc/self/mountinfo`, found by id (the open fd
    /// keeps the id from being reused meanwhile).
    pub fn info(&self) -> std::io::Result<Option<MountInfo>> {
        Ok(mounts::all()?.into_iter().find(|m| m.id == self.legacy))
    }

    /// Unmounts exactly this mount (see the module doc), lazily or not.
    pub fn unmount(self, lazy: bool) -> rustix::io::Result<()> {
        check_proc_fd()?;
        if lazy {
            let path = crate::sys::fd_path(self.root.as_fd());
            return rustix::mount::unmount(path, UnmountFlags::DETACH);
        }
        let OpenMountPoint {
            parent,
            name,
            root,
            legacy,
            ..
        } = self;
        drop(root);
        let mut path = crate::sys::fd_path(parent.as_fd());
        path.push("/");
        path.push(&name);
        rustix::mount::unmount(path, UnmountFlags::NOFOLLOW)?;
        if mounts::all().is_ok_and(|all| all.iter().any(|m| m.id == legacy)) {
            // Ours is still there: what went was mounted over it meanwhile.
            return Err(Errno::BUSY);
        }
        Ok(())
    }
}

/// At most this many symlinks are followed in one path (`MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// A directory to mount on, opened (`O_PATH`) by [`open_mount_target`].
#[derive(Debug)]
pub struct MountTarget {
    /// The directory: a mount is attached to it by this fd, never by path.
    pub fd: OwnedFd,
    /// Its path with every symlink resolved (for mountinfo and the server).
    pub path: PathBuf,
}

/// Opens the directory `target` to mount on, one component at a time, each
/// with `RESOLVE_NO_SYMLINKS` beneath the last: a symlink on the way is
/// followed only when it belongs to this process's user or to root, so
/// that whoever owns a directory on the path can't send the mount elsewhere
/// by swapping a name for a symlink (before or after it is looked at: the
/// fd is what gets mounted on). In a user namespace, the overflow uid
/// that root shows as there is trusted too. The open asks the file system
/// nothing beyond the lookups.
pub fn open_mount_target(target: &Path) -> Result<MountTarget, IdentifyError> {
    use std::path::Component;
    let abs = std::path::absolute(target).map_err(|source| IdentifyError::Io {
        path: target.to_path_buf(),
        source,
    })?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: Errno| IdentifyError::Io {
            path,
            source: e.into(),
        }
    };
    let open = |dir: BorrowedFd<'_>, name: &std::ffi::OsStr| {
        openat2(
            dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
    };
    let root = || {
        openat2(
            rustix::fs::CWD,
            "/",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::empty(),
        )
        .map_err(io(Path::new("/")))
    };
    let trusted = trusted_owners();
    // The directories resolved so far, from "/"; the names still to walk.
    let mut stack: Vec<(OwnedFd, PathBuf)> = vec![(root()?, PathBuf::from("/"))];
    let mut pending: std::collections::VecDeque<OsString> = abs
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
        .map(|c| c.as_os_str().to_owned())
        .collect();
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == "." {
            continue;
        }
        if name == ".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let (dir, dir_path) = stack.last().expect("the stack holds / at least");
        let path = dir_path.join(&name);
        let fd = open(dir.as_fd(), &name).map_err(io(&path))?;
        let st = statx(
            &fd,
            "",
            AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC,
            StatxFlags::TYPE | StatxFlags::UID,
        )
        .map_err(io(&path))?;
        if u32::from(st.stx_mode) & 0o170000 == 0o120000 {
            links += 1;
            if !trusted.contains(&st.stx_uid) || links > MAX_SYMLINKS {
                return Err(IdentifyError::Symlink(path));
            }
            let to = rustix::fs::readlinkat(&fd, "", Vec::new()).map_err(io(&path))?;
            let to = PathBuf::from(OsString::from_vec(to.into_bytes()));
            if to.is_absolute() {
                stack.truncate(1);
            }
            for c in to.components().rev() {
                if !matches!(c, Component::RootDir | Component::Prefix(_)) {
                    pending.push_front(c.as_os_str().to_owned());
                }
            }
            continue;
        }
        stack.push((fd, path));
    }
    let (fd, path) = stack.pop().expect("the stack holds / at least");
    Ok(MountTarget { fd, path })
}

/// Whose symlinks [`open_mount_target`] follows: this process's user and
/// root. In a user namespace, root of the initial one shows as the overflow
/// uid (as does every user the namespace doesn't map), and is trusted
/// there too: a mount made there changes only that namespace's tree, never
/// what root of the initial namespace sees (`/var/run` must keep working).
fn trusted_owners() -> Vec<u32> {
    let mut uids = vec![rustix::process::geteuid().as_raw(), 0];
    if !crate::detect::in_initial_userns() {
        let overflow = std::fs::read_to_string("/proc/sys/kernel/overflowuid")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(65534);
        uids.push(overflow);
    }
    uids
}

/// `/proc/self/fd` is procfs, so `/proc/self/fd/N` is the fd's magic link.
fn check_proc_fd() -> rustix::io::Result<()> {
    let s = rustix::fs::statfs("/proc/self/fd")?;
    if s.f_type as i64 == PROC_SUPER_MAGIC {
        Ok(())
    } else {
        Err(Errno::NOENT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn ids_round_trip_as_text() {
        for id in [MountId::Unique(1 << 40), MountId::Reusable(42, 2049)] {
            assert_eq!(id.to_string().parse::<MountId>(), Ok(id));
        }
        for bad in ["", "u", "x1", "r1", "r1.", "u-1"] {
            assert!(bad.parse::<MountId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn mount_targets_follow_only_symlinks_of_this_user_or_root() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("a/b")).unwrap();
        std::os::unix::fs::symlink("a/b/../b", d.join("mine")).unwrap();
        let t = open_mount_target(&d.join("mine/.")).unwrap();
        assert_eq!(t.path, d.join("a/b"));
        let st = rustix::fs::fstat(&t.fd).unwrap();
        assert_eq!(st.st_ino, std::fs::metadata(d.join("a/b")).unwrap().ino());
        if rustix::process::geteuid().is_root() {
            // Another user's symlink, on the path or last.
            std::os::unix::fs::symlink(d.join("a"), d.join("theirs")).unwrap();
            rustix::fs::chownat(
                rustix::fs::CWD,
                d.join("theirs"),
                Some(rustix::fs::Uid::from_raw(65534)),
                None,
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .unwrap();
            for p in ["theirs", "theirs/b"] {
                let e = open_mount_target(&d.join(p)).unwrap_err();
                assert!(matches!(e, IdentifyError::Symlink(_)), "{p}: {e}");
            }
        }
        let e = open_mount_target(&d.join("missing")).unwrap_err();
        assert!(matches!(e, IdentifyError::Io { .. }), "{e}");
    }

    #[test]
    fn a_directory_that_is_not_a_mount_point_is_said_so() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("m")).unwrap();
        let e = OpenMountPoint::open(&dir.path().join("m")).unwrap_err();
        assert!(matches!(e, IdentifyError::NotMounted(_)), "{e}");
        std::os::unix::fs::symlink("m", dir.path().join("link")).unwrap();
        let e = OpenMountPoint::open(&dir.path().join("link")).unwrap_err();
        assert!(matches!(e, IdentifyError::Symlink(_)), "{e}");
        // "/" is the root of its mount.
        let root = OpenMountPoint::open(Path::new("/proc")).unwrap();
        assert_eq!(root.path(), Path::new("/proc"));
        assert_eq!(root.info().unwrap().unwrap().fstype, "proc");
    }
}
