//! Modes 2 and 3: the cfs FUSE server, under overlayfs (fuse+overlay) or on
//! its own (standalone).
//!
//! The mounting process makes the FUSE mount and keeps the `/dev/fuse` fd
//! only long enough to hand it to the server ([`crate::server`]):
//! - with `CAP_SYS_ADMIN` (root, or root of a user namespace) it opens
//!   `/dev/fuse` and mounts it with the new mount API, `fsopen("fuse")` with
//!   `fd=N,rootmode=40000,user_id=…,group_id=…`; the mount stays **detached**;
//! - without, the setuid `fusermount3` mounts it at the mount point and
//!   passes the fd back over a socket (`_FUSE_COMMFD`, `SCM_RIGHTS`).
//!
//! Everything the server reads (the image, the objects directory) was
//! opened before, and is handed to it with the connection. Then the server
//! starts, answers FUSE_INIT, and says `ready`. For
//! fuse+overlay an overlay is built with `userxattr`, the detached FUSE mount
//! as its lower layer (`lowerdir+=/proc/self/fd/N`, as the kernel mode does
//! with erofs) and the object directories as data-only lower layers, and only
//! the overlay is attached: unmounting it releases the FUSE mount, whose
//! server then sees the session end and exits. Standalone, the detached FUSE
//! mount is attached at the mount point (or was already, by `fusermount3`).
//!
//! overlayfs refuses `metacopy=on` with `userxattr`, and `verity=` needs it:
//! fuse+overlay reads object contents unchecked, so `--verity=require` is
//! refused there. The standalone server checks digests itself.

use crate::detect::Privilege;
use crate::error::MountError;
use crate::fusermount;
use crate::identity::{self, MountId, MountTarget, OpenMountPoint};
use crate::image::CheckedImage;
use crate::options::{MountConfig, Param, ServeMode, Verity, OVERLAY_SOURCE};
use crate::server::{self, Server, ServerArgs};
use crate::sys::{self, FsContext, KernelError};
use crate::MountMode;
use cfs_fuse::{ServeFds, ServeOptions};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use rustix::mount::MountAttrFlags;
use std::path::Path;

/// Mounts `image` with the options of `cfg` at `target` in `mode`
/// (`FuseOverlay` or `Fuse`), the server run as `how` says. Everything the
/// server reads is open before the mount appears. Returns the attached
/// mount's identity.
pub(crate) fn mount(
    cfg: &MountConfig,
    image: CheckedImage,
    mount_point: &MountTarget,
    mode: MountMode,
    how: Server,
    privilege: Privilege,
) -> Result<Option<MountId>, MountError> {
    let target = mount_point.path.as_path();
    let args = server_args(cfg, target, mode, privilege)?;
    let objects = match (args.serve.mode, cfg.basedirs.first()) {
        (ServeMode::Standalone, Some(dir)) => Some(crate::open_layer_dir(dir, "object directory")?),
        _ => None,
    };
    let args = ServerArgs {
        objects: objects.is_some(),
        ..args
    };
    let fuse_err = |step: &'static str| {
        move |source: KernelError| MountError::Fuse {
            step,
            path: target.to_path_buf(),
            source: Box::new(source),
        }
    };
    // The FUSE mount: detached (an fd) when we may mount, else attached by fusermount3.
    let (dev, detached) = if privilege.cap_sys_admin {
        let dev = rustix::fs::open("/dev/fuse", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| MountError::Io {
                op: "open",
                path: "/dev/fuse".into(),
                source: e.into(),
            })?;
        let checks = match mode {
            MountMode::FuseOverlay => CallerChecks::ByOverlay,
            _ => CallerChecks::ByKernel,
        };
        let mnt = fuse_fsmount(dev.as_fd(), checks).map_err(fuse_err("mount FUSE (fsopen) for"))?;
        (dev, Some(mnt))
    } else {
        if mode == MountMode::FuseOverlay {
            return Err(MountError::Config(
                "fuse+overlay needs CAP_SYS_ADMIN (run in a user namespace: unshare -Urm)".into(),
            ));
        }
        (fusermount::mount(target)?, None)
    };
    let fds = ServeFds {
        dev,
        image: image.file,
        objects,
    };
    let mut running = match server::start(&args, fds, how) {
        Ok(r) => r,
        Err(e) => {
            if detached.is_none() {
                // fusermount3 attached it: only it may take it down again.
                let _ = fusermount::unmount(target, true);
            }
            return Err(e);
        }
    };
    let attached = match (mode, &detached) {
        (MountMode::FuseOverlay, Some(fuse_mnt)) => overlay(cfg, fuse_mnt.as_fd(), mount_point),
        (_, Some(fuse_mnt)) => sys::attach_to_fd(fuse_mnt.as_fd(), mount_point.fd.as_fd())
            .map(|()| identity::mount_id(fuse_mnt.as_fd()).ok())
            .map_err(|source| MountError::Attach {
                path: target.to_path_buf(),
                source,
            }),
        (_, None) => Ok(OpenMountPoint::open(target).ok().map(|m| m.id())),
    };
    drop(detached);
    let id = match attached {
        Ok(id) => id,
        Err(e) => {
            if mode == MountMode::Fuse && !privilege.cap_sys_admin {
                let _ = fusermount::unmount(target, true);
            }
            // The FUSE mount is gone with its last fd: the server's session ends.
            running.abandon();
            return Err(e);
        }
    };
    running.attached(id);
    // The mount answers: the root is there, served.
    std::fs::metadata(target).map_err(|source| MountError::Io {
        op: "stat the new mount",
        path: target.to_path_buf(),
        source,
    })?;
    running.finish()?;
    Ok(id)
}

/// What the server is told: what to show, how to check contents, and
/// (from the one privilege probe) whether it may use FUSE passthrough.
fn server_args(
    cfg: &MountConfig,
    target: &Path,
    mode: MountMode,
    privilege: Privilege,
) -> Result<ServerArgs, MountError> {
    let (serve_mode, verity) = match mode {
        MountMode::FuseOverlay => {
            if cfg.verity == Verity::Require {
                return Err(MountError::Config(
                    "verity=require: overlayfs can't check contents with userxattr (no metacopy); \
                     use --fuse=no as root, or --verity=try"
                        .into(),
                ));
            }
            (ServeMode::OverlayLower, Verity::Off)
        }
        _ => {
            if cfg.upper.is_some() || !cfg.read_only {
                return Err(MountError::Config(
                    "a standalone FUSE mount is read-only: --upperdir needs an overlay \
                     (run in a user namespace, unshare -Urm, for fuse+overlay)"
                        .into(),
                ));
            }
            if cfg.basedirs.len() > 1 {
                return Err(MountError::Config(
                    "a standalone FUSE mount reads one object directory".into(),
                ));
            }
            (cfg.serve_mode, cfg.verity)
        }
    };
    Ok(ServerArgs {
        serve: ServeOptions {
            mode: serve_mode,
            verity,
            tuning: cfg.tuning.clone(),
            may_passthrough: privilege.initial_admin() && serve_mode == ServeMode::Standalone,
        },
        mountpoint: target.to_path_buf(),
        objects: false,
    })
}

/// Who checks a caller's permissions on a FUSE mount's files (the server
/// never does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallerChecks {
    /// The kernel, against each file's mode and owner (`default_permissions`):
    /// a FUSE mount that callers reach.
    ByKernel,
    /// overlayfs, against its own copy of each file's mode and owner, with
    /// the caller's credentials: the overlay's lower layer, which only
    /// overlayfs reaches (the mount stays detached, its fd closed once the
    /// overlay holds it), with the mounter's credentials. With
    /// `default_permissions` the kernel would check those too, and the
    /// mounter may not read a file it must look up: in a user namespace
    /// that maps only its own uid, a `0700` directory of another owner
    /// (`/usr/share/polkit-1/rules.d`) can't have its `user.overlay.*`
    /// xattrs read (reading a `user.` xattr needs read permission), so its
    /// lookup, and a caller's `stat`, failed with EACCES where the kernel
    /// mode shows it. Without the option FUSE checks only the exec bits of
    /// regular files and leaves the rest to the server, which has nothing to
    /// keep from overlayfs: the image is the mounter's to read. An image
    /// with ACLs still gets `default_permissions`: the kernel turns it on
    /// with `FUSE_POSIX_ACL`, which overlayfs needs to see the ACLs.
    ByOverlay,
}

/// `fsopen("fuse")` over the open `/dev/fuse`: a detached, read-only mount
/// owned by this user (ids as seen in this user namespace).
///
/// Read-only twice: the superblock (`ro`) as well as the mount. A FUSE
/// superblock that isn't read-only drops a directory's cached attributes
/// after every uncached READDIR (`fuse_invalidate_atime`), so the first stat
/// of each directory after a cold walk costs a GETATTR round trip (15,154 of
/// them on `/usr`: the first warm walk under fuse+overlay ran 2–3× the later
/// ones); fusermount3 mounts with `MS_RDONLY`, which already does this.
fn fuse_fsmount(
    dev: rustix::fd::BorrowedFd<'_>,
    checks: CallerChecks,
) -> Result<OwnedFd, KernelError> {
    use std::os::fd::AsRawFd;
    let ctx = FsContext::open("fuse")?;
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    let mut params = vec![
        Param::Str("source", "cfs".into()),
        Param::Flag("ro"),
        Param::Str("subtype", "cfs".into()),
        Param::Str("fd", dev.as_raw_fd().to_string().into()),
        Param::Str("rootmode", "40000".into()),
        Param::Str("user_id", uid.to_string().into()),
        Param::Str("group_id", gid.to_string().into()),
        Param::Flag("allow_other"),
    ];
    if checks == CallerChecks::ByKernel {
        params.push(Param::Flag("default_permissions"));
    }
    for p in &params {
        ctx.set(p)?;
    }
    ctx.create_and_mount(MountAttrFlags::MOUNT_ATTR_RDONLY | MountAttrFlags::MOUNT_ATTR_NOATIME)
}

/// The overlay over the FUSE mount `fuse` (metadata) and the object
/// directories (contents), attached at `target`.
fn overlay(
    cfg: &MountConfig,
    fuse: rustix::fd::BorrowedFd<'_>,
    target: &MountTarget,
) -> Result<Option<MountId>, MountError> {
    let err = |source| MountError::Overlay {
        path: cfg.image.clone(),
        source,
    };
    let ctx = FsContext::open("overlay").map_err(err)?;
    crate::set_overlay_params(&ctx, overlay_params(&sys::fd_path(fuse), cfg), err)?;
    let attrs = if cfg.read_only {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    } else {
        MountAttrFlags::empty()
    };
    let mnt = ctx.create_and_mount(attrs).map_err(err)?;
    sys::attach_to_fd(mnt.as_fd(), target.fd.as_fd()).map_err(|source| MountError::Attach {
        path: target.path.clone(),
        source,
    })?;
    Ok(identity::mount_id(mnt.as_fd()).ok())
}

/// The fuse+overlay overlay's parameters: `userxattr` (the FUSE lower serves
/// `user.overlay.*`), no `metacopy`/`redirect_dir`/`verity` (refused with
/// `userxattr`; data-only lower layers work without them).
pub fn overlay_params(lower: &std::ffi::OsStr, cfg: &MountConfig) -> Vec<Param> {
    let mut p = vec![
        Param::Str("source", OVERLAY_SOURCE.into()),
        Param::Flag("userxattr"),
        Param::Str("lowerdir+", lower.to_owned()),
    ];
    for dir in &cfg.basedirs {
        p.push(Param::Str("datadir+", dir.clone().into_os_string()));
    }
    if let Some(up) = &cfg.upper {
        p.push(Param::Str("upperdir", up.upperdir.clone().into_os_string()));
        p.push(Param::Str("workdir", up.workdir.clone().into_os_string()));
    }
    p
}
