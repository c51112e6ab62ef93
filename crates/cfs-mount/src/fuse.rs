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
//! Then the server starts, answers FUSE_INIT, and says `ready`. For
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

use crate::detect::{find_in_path, has_cap_sys_admin};
use crate::error::MountError;
use crate::options::{MountConfig, Param, Verity, OVERLAY_SOURCE};
use crate::server::{self, Server};
use crate::syscalls::{self, FsContext, KernelError};
use crate::MountMode;
use cfs_fuse::{ServeMode, ServeOptions, VerityPolicy};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use rustix::mount::MountAttrFlags;
use std::path::Path;

/// Mounts `cfg` at `target` in `mode` (`FuseOverlay` or `Fuse`).
pub(crate) fn mount(
    cfg: &MountConfig,
    target: &Path,
    mode: MountMode,
    how: &Server,
) -> Result<(), MountError> {
    let opts = serve_options(cfg, target, mode)?;
    let privileged = has_cap_sys_admin();
    let fuse_err = |step: &'static str| {
        move |source: KernelError| MountError::Fuse {
            step,
            path: target.to_path_buf(),
            source: Box::new(source),
        }
    };
    // The FUSE mount: detached (an fd) when we may mount, else attached by fusermount3.
    let (dev, detached) = if privileged {
        let dev = rustix::fs::open("/dev/fuse", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| MountError::Io {
                op: "open",
                path: "/dev/fuse".into(),
                source: e.into(),
            })?;
        let mnt = fuse_fsmount(dev.as_fd()).map_err(fuse_err("mount FUSE (fsopen) for"))?;
        (dev, Some(mnt))
    } else {
        if mode == MountMode::FuseOverlay {
            return Err(MountError::Config(
                "fuse+overlay needs CAP_SYS_ADMIN (run in a user namespace: unshare -Urm)".into(),
            ));
        }
        (fusermount3(target)?, None)
    };
    let running = match server::start(&opts, dev, how) {
        Ok(r) => r,
        Err(e) => {
            if detached.is_none() {
                let _ = fusermount3_unmount(target, true);
            }
            return Err(e);
        }
    };
    let attached = match (mode, &detached) {
        (MountMode::FuseOverlay, Some(fuse_mnt)) => overlay(cfg, fuse_mnt.as_fd(), target),
        (_, Some(fuse_mnt)) => {
            syscalls::attach(fuse_mnt.as_fd(), target).map_err(|source| MountError::Attach {
                path: target.to_path_buf(),
                source,
            })
        }
        (_, None) => Ok(()),
    };
    drop(detached);
    if let Err(e) = attached {
        if mode == MountMode::Fuse && !privileged {
            let _ = fusermount3_unmount(target, true);
        }
        // The FUSE mount is gone with its last fd: the server's session ends.
        running.abandon();
        return Err(e);
    }
    // The mount answers: the root is there, served.
    std::fs::metadata(target).map_err(|source| MountError::Io {
        op: "stat the new mount",
        path: target.to_path_buf(),
        source,
    })?;
    running.finish(mode, target)
}

/// What the server is told: the image, the mode, where contents come from.
fn serve_options(
    cfg: &MountConfig,
    target: &Path,
    mode: MountMode,
) -> Result<ServeOptions, MountError> {
    let mut o = ServeOptions::new(&cfg.image, target);
    match mode {
        MountMode::FuseOverlay => {
            if cfg.verity == Verity::Require {
                return Err(MountError::Config(
                    "verity=require: overlayfs can't check contents with userxattr (no metacopy); \
                     use --fuse=no as root, or --verity=try"
                        .into(),
                ));
            }
            o.mode = ServeMode::OverlayLower;
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
            o.mode = ServeMode::Standalone;
            o.objects = Some(cfg.basedirs[0].clone());
            o.verity = match cfg.verity {
                Verity::Off => VerityPolicy::None,
                Verity::Try => VerityPolicy::Auto,
                Verity::Require => VerityPolicy::Require,
            };
        }
    }
    o.threads = 4;
    Ok(o)
}

/// `fsopen("fuse")` over the open `/dev/fuse`: a detached, read-only mount
/// owned by this user (ids as seen in this user namespace).
fn fuse_fsmount(dev: rustix::fd::BorrowedFd<'_>) -> Result<OwnedFd, KernelError> {
    use std::os::fd::AsRawFd;
    let ctx = FsContext::open("fuse")?;
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    for p in [
        Param::Str("source", "cfs".into()),
        Param::Str("subtype", "cfs".into()),
        Param::Str("fd", dev.as_raw_fd().to_string().into()),
        Param::Str("rootmode", "40000".into()),
        Param::Str("user_id", uid.to_string().into()),
        Param::Str("group_id", gid.to_string().into()),
        Param::Flag("default_permissions"),
        Param::Flag("allow_other"),
    ] {
        ctx.set(&p)?;
    }
    ctx.create_and_mount(MountAttrFlags::MOUNT_ATTR_RDONLY | MountAttrFlags::MOUNT_ATTR_NOATIME)
}

/// The overlay over the FUSE mount `fuse` (metadata) and the object
/// directories (contents), attached at `target`.
fn overlay(
    cfg: &MountConfig,
    fuse: rustix::fd::BorrowedFd<'_>,
    target: &Path,
) -> Result<(), MountError> {
    let err = |source| MountError::Overlay {
        path: cfg.image.clone(),
        source,
    };
    let ctx = FsContext::open("overlay").map_err(err)?;
    for p in overlay_params(&syscalls::fd_path(fuse), cfg) {
        ctx.set(&p).map_err(err)?;
    }
    let attrs = if cfg.read_only {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    } else {
        MountAttrFlags::empty()
    };
    let mnt = ctx.create_and_mount(attrs).map_err(err)?;
    syscalls::attach(mnt.as_fd(), target).map_err(|source| MountError::Attach {
        path: target.to_path_buf(),
        source,
    })
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

/// The options `fusermount3` is given: read-only, checked by the kernel.
const FUSERMOUNT_OPTS: &str = "fsname=cfs,subtype=cfs,ro,noatime,default_permissions";

/// Mounts FUSE at `target` with the setuid `fusermount3`, which sends the
/// `/dev/fuse` fd back over a socket (libfuse's `_FUSE_COMMFD` protocol).
fn fusermount3(target: &Path) -> Result<OwnedFd, MountError> {
    use rustix::net::{
        recvmsg, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SocketFlags,
        SocketType,
    };
    use std::os::fd::AsRawFd;
    let bin = find_in_path("fusermount3").ok_or(MountError::NoFusermount)?;
    let io = |op: &'static str| {
        move |e: std::io::Error| MountError::Io {
            op,
            path: target.to_path_buf(),
            source: e,
        }
    };
    // Our end is close-on-exec; fusermount3's end must survive exec.
    let (ours, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::empty(),
        None,
    )
    .map_err(|e| io("create a socket for fusermount3 for")(e.into()))?;
    rustix::io::fcntl_setfd(&ours, rustix::io::FdFlags::CLOEXEC)
        .map_err(|e| io("set up a socket for fusermount3 for")(e.into()))?;
    let child = std::process::Command::new(&bin)
        .arg("-o")
        .arg(FUSERMOUNT_OPTS)
        .arg("--")
        .arg(target)
        .env("_FUSE_COMMFD", theirs.as_raw_fd().to_string())
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(io("run fusermount3 for"))?;
    drop(theirs);
    let mut byte = [0u8; 1];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = recvmsg(
        &ours,
        &mut [std::io::IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    );
    let mut fd = None;
    if received.is_ok() {
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = msg {
                for f in fds {
                    fd.get_or_insert(f);
                }
            }
        }
    }
    let out = child
        .wait_with_output()
        .map_err(io("wait for fusermount3 for"))?;
    match fd {
        Some(fd) if out.status.success() => Ok(fd),
        _ => Err(MountError::Fusermount {
            path: target.to_path_buf(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }),
    }
}

/// `fusermount3 -u [-z] target`: how a user unmounts their FUSE mount.
pub(crate) fn fusermount3_unmount(target: &Path, lazy: bool) -> std::io::Result<()> {
    let bin = find_in_path("fusermount3").ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "fusermount3 is not on PATH: install fuse3",
        )
    })?;
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("-u");
    if lazy {
        cmd.arg("-z");
    }
    let out = cmd
        .arg("--")
        .arg(target)
        .stdin(std::process::Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "fusermount3 -u {}: {}",
            target.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
