//! The setuid `fusermount3` (from fuse3), how a user without
//! `CAP_SYS_ADMIN` mounts and unmounts FUSE: the one place cfs runs it.
//!
//! Mounting speaks libfuse's `_FUSE_COMMFD` protocol: `fusermount3` mounts
//! at the mount point and sends the `/dev/fuse` fd back over a socket
//! (`SCM_RIGHTS`). Unmounting is `fusermount3 -u`, which checks that the
//! mount is the calling user's own FUSE mount before it unmounts it.

use crate::detect::find_in_path;
use crate::error::MountError;
use rustix::fd::OwnedFd;
use std::path::Path;

/// The options `fusermount3` is given: read-only, checked by the kernel.
const FUSERMOUNT_OPTS: &str = "fsname=cfs,subtype=cfs,ro,noatime,default_permissions";

/// Mounts FUSE at `target` with the setuid `fusermount3`, which sends the
/// `/dev/fuse` fd back over a socket (libfuse's `_FUSE_COMMFD` protocol).
pub(crate) fn mount(target: &Path) -> Result<OwnedFd, MountError> {
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
pub(crate) fn unmount(target: &Path, lazy: bool) -> std::io::Result<()> {
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
