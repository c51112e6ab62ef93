//! The daemon's side of a mount: who the client is, as the kernel names it
//! ([`Peer`]), and the mount made for it ([`MountForPeer`]), in its mount
//! namespace, on the directory it passed, read with its credentials.
//!
//! ## The credentials overlayfs reads with
//! overlayfs checks every access twice: the caller against the overlay's
//! inode, then the *mounter* against the layer's real inode
//! (`ovl_override_creds`, with the credentials `ovl_fill_super` recorded at
//! `FSCONFIG_CMD_CREATE`): lookups in the layers, opening the object a
//! redirect names (`ovl_open_realfile`), reading directories, xattrs. A
//! mount created by root would read the client's object directory as root,
//! so a client could name a directory it can't read (an `O_PATH` fd needs
//! only search permission on the parent) and read root's files through the
//! overlay. So the overlay is created on a thread of its own that first
//! becomes the client: its uid, gid and groups, and of all capabilities
//! only `CAP_SYS_ADMIN` (which creating and attaching a mount needs, and
//! reading `trusted.overlay.*` xattrs from the erofs layer; it grants no
//! file access). What the client can't read, the mount can't read either,
//! whoever reads through it. docs/mount-service.md has the whole argument.
//!
//! ## Where the mount goes
//! The thread enters the client's mount namespace (`unshare(CLONE_FS)`,
//! then `setns` with the namespace fd the client's pidfd gave:
//! `setns(CLONE_NEWNS)` refuses a thread sharing its filesystem context),
//! and `move_mount` attaches the overlay on the very directory fd the client
//! sent: no path is looked up in a namespace the client controls. The
//! kernel itself refuses a mount point outside that namespace.
//!
//! ## A client in its own user namespace
//! The erofs layer is idmapped through the user namespace owning the
//! client's mount namespace (`MOUNT_ATTR_IDMAP`), so a file the image gives
//! to uid 0 shows as that namespace's root, and no file shows as an id the
//! namespace doesn't map. The image itself is unchanged (one cache entry per
//! image, for every client).

use super::protocol::ServiceVerity;
use crate::error::{MountError, UnmountError};
use crate::identity::MountId;
use crate::options::{self, ErofsBacking};
use crate::sys::{self, FsContext};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::io::Errno;
use rustix::mount::MountAttrFlags;
use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};

/// The process at the other end of a connection, as the kernel names it
/// when it connected: never what it says about itself.
#[derive(Debug)]
pub struct Peer {
    /// Its effective uid (`SO_PEERCRED`), in the initial user namespace:
    /// whose files it may touch, what the mount is made as.
    pub uid: u32,
    /// The user answerable for it ([`Peer::account_uid`]): what every
    /// per-user limit is charged to, and who may unmount its mounts.
    pub account_uid: u32,
    /// Its effective gid.
    pub gid: u32,
    /// Its supplementary groups (`SO_PEERGROUPS`).
    pub groups: Vec<u32>,
    /// Its pid (for logs; the pidfd is what is used).
    pub pid: i32,
    pidfd: OwnedFd,
    mnt_ns: OwnedFd,
    /// The id of its mount namespace.
    pub mnt_ns_id: u64,
    userns: OwnedFd,
    /// Its mount namespace belongs to a user namespace other than the
    /// initial one (`unshare -Urm`, a rootless container): root there can
    /// change mounts, so mounts there are idmapped and hold no devices.
    pub in_user_namespace: bool,
}

impl Peer {
    /// Identifies the peer of the connected socket `sock`: its credentials
    /// and a pidfd, as of `connect` (Linux 6.5+ for the pidfd), then its
    /// mount namespace and the user namespace owning that (Linux 6.11+).
    pub fn of_connection(sock: BorrowedFd<'_>) -> std::io::Result<Peer> {
        let cred = rustix::net::sockopt::socket_peercred(sock)?;
        let groups = sys::peer_groups(sock)?;
        let pidfd = sys::peer_pidfd(sock)?;
        let mnt_ns = sys::pidfd_mount_namespace(pidfd.as_fd())?;
        let mnt_ns_id = sys::mount_namespace_id(mnt_ns.as_fd())?;
        let userns = sys::namespace_owner(mnt_ns.as_fd())?;
        let ino = rustix::fs::fstat(&userns)?.st_ino;
        let uid = cred.uid.as_raw();
        Ok(Peer {
            uid,
            account_uid: account_uid(pidfd.as_fd(), uid)?,
            gid: cred.gid.as_raw(),
            groups,
            pid: cred.pid.as_raw_nonzero().get(),
            pidfd,
            mnt_ns,
            mnt_ns_id,
            userns,
            in_user_namespace: ino != crate::detect::PROC_USER_INIT_INO,
        })
    }

    /// The peer's pidfd.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// The peer for logs and messages: `uid A pid P`, or `uid A (as uid U)
    /// pid P` when it runs as another uid of A's user namespaces.
    pub fn describe(&self) -> String {
        if self.uid == self.account_uid {
            format!("uid {} pid {}", self.uid, self.pid)
        } else {
            format!(
                "uid {} (as uid {}) pid {}",
                self.account_uid, self.uid, self.pid
            )
        }
    }
}

/// The deepest nesting of user namespaces (`MAX_USER_NS_LEVEL` 32) and one.
const MAX_USER_NAMESPACE_DEPTH: usize = 33;

/// The user answerable for the process `pidfd` (whose uid is `uid`): for a
/// process in the initial user namespace its uid; for one in a namespace
/// of its own, the uid that created the outermost namespace above it (the
/// child of the initial one), `NS_GET_OWNER_UID`. A user with subordinate
/// ids (`/etc/subuid`, `unshare --map-auto`) runs processes as many uids,
/// but all of them in namespaces it created: charged by uid, each would be
/// a user of its own, with limits of its own. Root's containers are
/// root's.
fn account_uid(pidfd: BorrowedFd<'_>, uid: u32) -> std::io::Result<u32> {
    let is_initial = |ns: &OwnedFd| -> std::io::Result<bool> {
        Ok(rustix::fs::fstat(ns)?.st_ino == crate::detect::PROC_USER_INIT_INO)
    };
    let mut ns = sys::pidfd_user_namespace(pidfd)?;
    if is_initial(&ns)? {
        return Ok(uid);
    }
    for _ in 0..MAX_USER_NAMESPACE_DEPTH {
        let parent = sys::user_namespace_parent(ns.as_fd())?;
        if is_initial(&parent)? {
            return Ok(sys::user_namespace_owner_uid(ns.as_fd())?);
        }
        ns = parent;
    }
    Err(std::io::Error::other(
        "its user namespaces nest deeper than the kernel allows",
    ))
}

/// A mount the service makes for a peer, from fds the service checked.
#[derive(Debug)]
pub struct MountForPeer<'a> {
    /// The service's own copy of the validated image.
    pub image: &'a File,
    /// Its path, for messages.
    pub image_path: &'a Path,
    /// Whether the image says it holds POSIX ACLs.
    pub has_acl: bool,
    /// The client's object directories (data-only layers).
    pub objects: &'a [BorrowedFd<'a>],
    /// The directory to mount on, in the peer's mount namespace.
    pub mountpoint: BorrowedFd<'a>,
    /// overlayfs' `verity=`.
    pub verity: ServiceVerity,
}

impl MountForPeer<'_> {
    /// Mounts: erofs of the image (detached; idmapped for a peer in a user
    /// namespace), then on a thread that enters the peer's mount namespace
    /// and becomes the peer, the overlay (read-only, `nosuid`, `nodev`),
    /// attached on the mount point.
    pub fn mount(&self, peer: &Peer) -> Result<PeerMount, MountError> {
        let erofs = crate::kernel::mount_erofs(
            self.image,
            self.image_path,
            ErofsBacking::Auto,
            self.has_acl,
        )?;
        if peer.in_user_namespace {
            sys::set_idmap(erofs.as_fd(), peer.userns.as_fd()).map_err(|source| {
                MountError::Erofs {
                    path: self.image_path.to_path_buf(),
                    source,
                }
            })?;
        }
        let root = on_thread(|| self.overlay(peer, erofs.as_fd()))?;
        let id = crate::identity::mount_id(root.as_fd()).map_err(|e| MountError::Io {
            op: "read the id of the mount made for",
            path: self.image_path.to_path_buf(),
            source: e.into(),
        })?;
        Ok(PeerMount { id, root })
    }

    /// The thread's work: configure as root, enter, become the peer, create.
    fn overlay(&self, peer: &Peer, erofs: BorrowedFd<'_>) -> Result<OwnedFd, MountError> {
        let path = self.image_path.to_path_buf();
        let overlay_err = |source| MountError::Overlay {
            path: path.clone(),
            source,
        };
        let verity = match self.verity {
            ServiceVerity::Off => options::OverlayVerity::Off,
            ServiceVerity::Require => options::OverlayVerity::Require,
        };
        let ctx = FsContext::open("overlay").map_err(overlay_err)?;
        for p in options::service_overlay_params(verity) {
            ctx.set(&p).map_err(overlay_err)?;
        }
        // Layers by fd, configured before entering the peer's namespace:
        // where the kernel lacks FSCONFIG_SET_FD for them, the fallback path
        // /proc/thread-self/fd/N is resolved in the service's own /proc.
        crate::set_layer(&ctx, "lowerdir+", erofs).map_err(overlay_err)?;
        for dir in self.objects {
            crate::set_layer(&ctx, "datadir+", *dir).map_err(overlay_err)?;
        }
        let step = |op: &'static str| {
            let path = path.clone();
            move |e: Errno| MountError::Io {
                op,
                path,
                source: e.into(),
            }
        };
        sys::enter_mount_namespace(peer.mnt_ns.as_fd())
            .map_err(step("enter the client's mount namespace to mount"))?;
        sys::become_user_with_sys_admin(peer.uid, peer.gid, &peer.groups)
            .map_err(step("take the client's credentials to mount"))?;
        let attrs = MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV;
        let overlay = ctx.create_and_mount(attrs).map_err(overlay_err)?;
        sys::attach_to_fd(overlay.as_fd(), self.mountpoint).map_err(|source| {
            MountError::Attach {
                path: PathBuf::from("the client's mount point"),
                source,
            }
        })?;
        Ok(overlay)
    }
}

/// A mount made for a peer, held open by its root.
#[derive(Debug)]
pub struct PeerMount {
    /// Its unique id.
    pub id: MountId,
    root: OwnedFd,
}

impl PeerMount {
    /// Undoes the mount, lazily and exactly this one (through its own fd,
    /// `/proc/self/fd/N` from the service's `/proc`): when what should
    /// follow it (recording it) failed.
    pub fn undo(self, peer: &Peer) -> Result<(), UnmountError> {
        use std::os::fd::AsRawFd;
        let io = |e: Errno| UnmountError::Io {
            path: PathBuf::from("the client's mount point"),
            source: e.into(),
        };
        let proc_fd = rustix::fs::open(
            "/proc/self/fd",
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(io)?;
        let name = self.root.as_raw_fd().to_string();
        // In the peer's namespace (a mount is unmounted only from its own),
        // the magic link named relative to the service's /proc/self/fd.
        std::thread::scope(|s| {
            s.spawn(|| -> Result<(), UnmountError> {
                sys::enter_mount_namespace(peer.mnt_ns.as_fd()).map_err(io)?;
                rustix::process::fchdir(&proc_fd).map_err(io)?;
                rustix::mount::unmount(name.as_str(), rustix::mount::UnmountFlags::DETACH)
                    .map_err(io)
            })
            .join()
            .unwrap_or_else(|_| Err(io(Errno::IO)))
        })
    }
}

/// Runs `f` on a thread of its own, which ends with it: what `f` does to
/// its thread's credentials and namespaces goes with the thread.
fn on_thread<T: Send>(f: impl FnOnce() -> Result<T, MountError> + Send) -> Result<T, MountError> {
    std::thread::scope(|s| {
        s.spawn(f).join().unwrap_or_else(|_| {
            Err(MountError::Io {
                op: "mount on a worker thread for",
                path: PathBuf::from("the client"),
                source: std::io::Error::other("the thread panicked"),
            })
        })
    })
}

/// Unmounts, in the peer's mount namespace, the mount `expect` (the
/// service checked it is the peer's service mount) on `name` in the
/// directory `parent`, lazily or not: `name` is looked up in exactly that
/// directory and not followed, and must have that very mount on top; the
/// path is walked from the service's own `/proc` (`P/NAME`, `P` the fd's
/// magic link), never from the peer's namespace's root. Only for a peer
/// whose mount namespace it can't change itself (the caller serializes
/// unmounts, so nothing else changes mounts between the check and the
/// unmount but root).
pub fn unmount_for(
    peer: &Peer,
    parent: BorrowedFd<'_>,
    name: &OsStr,
    lazy: bool,
    expect: MountId,
) -> Result<(), UnmountError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let here = || PathBuf::from("the client's mount point");
    let io = |e: Errno| UnmountError::Io {
        path: here(),
        source: e.into(),
    };
    if name.is_empty() || name == "." || name == ".." || name.as_bytes().contains(&b'/') {
        return Err(UnmountError::NotMounted(here()));
    }
    let proc_fd = rustix::fs::open(
        "/proc/self/fd",
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(io)?;
    if rustix::fs::fstatfs(&proc_fd).map_err(io)?.f_type as i64 != 0x9fa0 {
        return Err(io(Errno::NOENT));
    }
    let mut target = format!("{}/", parent.as_raw_fd()).into_bytes();
    target.extend_from_slice(name.as_bytes());
    let target = std::ffi::OsString::from_vec(target);
    let flags = if lazy {
        rustix::mount::UnmountFlags::DETACH | rustix::mount::UnmountFlags::NOFOLLOW
    } else {
        rustix::mount::UnmountFlags::NOFOLLOW
    };
    std::thread::scope(|s| {
        s.spawn(|| -> Result<(), UnmountError> {
            sys::enter_mount_namespace(peer.mnt_ns.as_fd()).map_err(io)?;
            rustix::process::fchdir(&proc_fd).map_err(io)?;
            // Still that mount on top of `name`?
            match crate::identity::mount_id_at(parent, name) {
                Ok(now) if now == expect => {}
                Ok(_) => return Err(UnmountError::NotOurs(here())),
                Err(Errno::INVAL) => return Err(UnmountError::NotMounted(here())),
                Err(e) => return Err(io(e)),
            }
            rustix::mount::unmount(target.as_os_str(), flags).map_err(|e| match e {
                Errno::BUSY => UnmountError::Busy(here()),
                e => io(e),
            })
        })
        .join()
        .unwrap_or_else(|_| Err(io(Errno::IO)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::process::{pidfd_open, Pid, PidfdFlags};

    fn pidfd_of(pid: u32) -> OwnedFd {
        pidfd_open(Pid::from_raw(pid as i32).unwrap(), PidfdFlags::empty()).unwrap()
    }

    #[test]
    fn a_process_in_the_initial_user_namespace_is_charged_to_its_own_uid() {
        if !crate::Privilege::probe().initial_admin() {
            println!("skipped: needs root in the initial user namespace");
            return;
        }
        let me = pidfd_of(std::process::id());
        assert_eq!(account_uid(me.as_fd(), 4242).unwrap(), 4242);
    }

    #[test]
    fn a_process_in_nested_user_namespaces_is_charged_to_their_creator() {
        if !crate::Privilege::probe().initial_admin() {
            println!("skipped: needs root in the initial user namespace");
            return;
        }
        // uid 4321 makes a user namespace, and root there one more inside.
        let child = std::process::Command::new("setpriv")
            .args(["--reuid=4321", "--regid=4321", "--clear-groups"])
            .args(["unshare", "-Ur", "unshare", "-Ur", "sleep", "30"])
            .spawn();
        let Ok(mut child) = child else {
            println!("skipped: no setpriv or unshare");
            return;
        };
        let pidfd = pidfd_of(child.id());
        // In both namespaces once it runs `sleep`.
        let comm = format!("/proc/{}/comm", child.id());
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::fs::read_to_string(&comm).unwrap_or_default() != "sleep\n"
            && std::time::Instant::now() < until
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // 0: its uid as the kernel reports it (root of the inner namespace,
        // unmapped there, were it asked from the initial one).
        let got = account_uid(pidfd.as_fd(), 0);
        let depth = std::fs::read_link(format!("/proc/{}/ns/user", child.id()));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(got.unwrap(), 4321, "{depth:?}");
    }
}
