//! The client side: `cfs mount` in mode `service` opens the image (and
//! copies it into a sealed memfd, [`sealed_copy`]), the object directories
//! and the mount point itself, and sends the fds; `cfs unmount` of a
//! service mount sends the mount's parent and its name. The service sees
//! only fds this process opened with its own permissions: it can't be
//! talked into opening a path.

use super::protocol::{self, ProtocolError, Request, Response, ServiceVerity};
use crate::error::{MountError, UnmountError};
use crate::identity::{MountId, OpenMountPoint};
use crate::options::{self, MountConfig, OverlayVerity};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long `hello` may take (the probe `--fuse=auto` makes).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a mount or unmount may take: validating a large image is
/// seconds of work.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Why the service could not be asked, or said no.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// Nothing answers at the socket.
    #[error("no mount service at {}: {source}", .path.display())]
    Unavailable {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The conversation broke off.
    #[error("the mount service at {} {what}: {source}", .path.display())]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: ProtocolError,
    },
    /// The service refused the request.
    #[error("the mount service refused: {0}")]
    Refused(String),
    /// The service accepted the request and failed.
    #[error("the mount service failed: {0}")]
    Failed(String),
    /// An answer that does not fit the question.
    #[error("the mount service answered {0}")]
    Unexpected(String),
}

/// A connection to the service: one request, one answer.
#[derive(Debug)]
pub struct Client {
    sock: OwnedFd,
    path: PathBuf,
}

impl Client {
    /// Connects to the service at `path`; every send and receive gives up
    /// after `timeout`.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Client, ServiceError> {
        let unavailable = |e: rustix::io::Errno| ServiceError::Unavailable {
            path: path.to_path_buf(),
            source: e.into(),
        };
        let sock = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(unavailable)?;
        for t in [
            rustix::net::sockopt::Timeout::Recv,
            rustix::net::sockopt::Timeout::Send,
        ] {
            rustix::net::sockopt::set_socket_timeout(&sock, t, Some(timeout))
                .map_err(unavailable)?;
        }
        let addr = SocketAddrUnix::new(path).map_err(unavailable)?;
        rustix::net::connect(&sock, &addr).map_err(unavailable)?;
        Ok(Client {
            sock,
            path: path.to_path_buf(),
        })
    }

    /// Sends `req` with `fds` and returns the answer; `refused` and
    /// `failed` answers are errors.
    pub fn call(&self, req: &Request, fds: &[BorrowedFd<'_>]) -> Result<Response, ServiceError> {
        match self.send(req, fds) {
            Ok(()) => self.answer(),
            // The service may have answered (refused) and closed before
            // the request went out: that answer says more than EPIPE.
            Err(unsent) => match self.answer() {
                Ok(r) => Ok(r),
                Err(e @ (ServiceError::Refused(_) | ServiceError::Failed(_))) => Err(e),
                Err(_) => Err(unsent),
            },
        }
    }

    /// Sends `req` with `fds` (the other half of [`Client::call`]).
    pub fn send(&self, req: &Request, fds: &[BorrowedFd<'_>]) -> Result<(), ServiceError> {
        protocol::send(&self.sock, req, fds).map_err(|source| ServiceError::Protocol {
            path: self.path.clone(),
            what: "could not be sent the request",
            source,
        })
    }

    /// Waits for the answer to what was sent; `refused` and `failed`
    /// answers are errors.
    pub fn answer(&self) -> Result<Response, ServiceError> {
        let (resp, _fds): (Response, _) =
            protocol::recv(&self.sock).map_err(|source| ServiceError::Protocol {
                path: self.path.clone(),
                what: "gave no answer",
                source,
            })?;
        match resp {
            Response::Refused { error } => Err(ServiceError::Refused(error)),
            Response::Failed { error } => Err(ServiceError::Failed(error)),
            r => Ok(r),
        }
    }
}

/// Whether the service at [`super::socket_path`] answers `hello` in this
/// protocol version: `Err` says why not, for `--explain`.
pub fn probe() -> Result<(), String> {
    let path = super::socket_path();
    let client = Client::connect(&path, PROBE_TIMEOUT).map_err(|e| e.to_string())?;
    match client.call(&Request::Hello, &[]) {
        Ok(Response::Hello { .. }) => Ok(()),
        Ok(r) => Err(ServiceError::Unexpected(format!("{r:?}")).to_string()),
        Err(e) => Err(e.to_string()),
    }
}

fn open(path: &Path, flags: OFlags, op: &'static str) -> Result<OwnedFd, MountError> {
    rustix::fs::open(path, flags | OFlags::CLOEXEC, Mode::empty()).map_err(|e| MountError::Io {
        op,
        path: path.to_path_buf(),
        source: e.into(),
    })
}

/// Asks the service to mount `cfg` (checked, absolute paths) at `target`:
/// the image is opened for reading (never blocking on a FIFO), the object
/// directories and the mount point `O_PATH` (the mount point's last
/// component not followed). Returns the new mount's id.
pub(crate) fn mount(cfg: &MountConfig, target: &Path) -> Result<MountId, MountError> {
    let image: OwnedFd = match &cfg.opened_image {
        Some(opened) => opened
            .file()
            .try_clone()
            .map_err(|source| MountError::Io {
                op: "duplicate the image's fd",
                path: cfg.image.clone(),
                source,
            })?
            .into(),
        None => open(
            &cfg.image,
            OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK,
            "open image",
        )?,
    };
    let mountpoint = open(
        target,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW,
        "open the mount point",
    )?;
    let objects = cfg
        .basedirs
        .iter()
        .map(|d| open(d, OFlags::PATH | OFlags::DIRECTORY, "open object directory"))
        .collect::<Result<Vec<_>, _>>()?;
    let image_file = std::fs::File::from(image);
    let (store_verity, why) = crate::kernel::probe_store_verity(&cfg.basedirs[0], &image_file)?;
    let verity = match options::overlay_verity(cfg.verity, store_verity) {
        Ok(OverlayVerity::Off) => ServiceVerity::Off,
        Ok(OverlayVerity::Require) => ServiceVerity::Require,
        Err(_) => {
            return Err(MountError::NoVerity {
                store: cfg.basedirs[0].clone(),
                why,
            })
        }
    };
    let sealed = sealed_copy(image_file.as_fd(), &cfg.image)?;
    let req = Request::Mount {
        objects: objects.len() as u32,
        image_id: cfg.expected_digest.map(|d| d.to_hex()),
        verity,
    };
    let mut fds = vec![sealed.as_fd(), mountpoint.as_fd()];
    fds.extend(objects.iter().map(|o| o.as_fd()));
    let path = super::socket_path();
    let answer = Client::connect(&path, REQUEST_TIMEOUT).and_then(|c| c.call(&req, &fds));
    match answer {
        Ok(Response::Mounted { mount_id, .. }) => mount_id
            .parse()
            .map_err(|e: String| ServiceError::Unexpected(e).into()),
        Ok(r) => Err(ServiceError::Unexpected(format!("{r:?}")).into()),
        Err(e) => Err(e.into()),
    }
}

/// A copy of the image `file` (at `path`, for messages) in a memfd sealed
/// against writing, growing, shrinking and further seals: what the service
/// takes, since reading it can't wait on a file system (the image could be
/// on this user's own FUSE server) and its bytes can't change while the
/// service reads them. The copy reads at offsets, leaving `file`'s own
/// offset alone. An image that already is such a memfd (`--digest`'s
/// checked copy) is sent as it is.
pub fn sealed_copy(file: BorrowedFd<'_>, path: &Path) -> Result<OwnedFd, MountError> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let io = |op: &'static str| {
        move |e: rustix::io::Errno| MountError::Io {
            op,
            path: path.to_path_buf(),
            source: e.into(),
        }
    };
    let frozen = SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK;
    if rustix::fs::fcntl_get_seals(file).is_ok_and(|s| s.contains(frozen)) {
        return rustix::io::fcntl_dupfd_cloexec(file, 0).map_err(io("duplicate the image's fd"));
    }
    let memfd =
        rustix::fs::memfd_create("cfs-image", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
            .map_err(io("make a memfd for the image"))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = match rustix::io::pread(file, &mut buf, at) {
            Ok(0) => break,
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(io("read the image")(e)),
        };
        let mut done = 0;
        while done < n {
            match rustix::io::pwrite(&memfd, &buf[done..n], at + done as u64) {
                Ok(w) => done += w,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(io("copy the image into a memfd")(e)),
            }
        }
        at += n as u64;
    }
    rustix::fs::fcntl_add_seals(
        &memfd,
        SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
    )
    .map_err(io("seal the memfd of the image"))?;
    Ok(memfd)
}

/// Asks the service to unmount the service mount `mp` (which this process
/// may not unmount itself): sends its parent directory, its name there and
/// the id of the mount found on it, having closed the mount's root first
/// (it would keep the mount busy).
pub(crate) fn unmount(mp: OpenMountPoint, lazy: bool) -> Result<(), UnmountError> {
    use std::os::unix::ffi::OsStrExt;
    let id = mp.id();
    let (root, parent, name) = mp.into_parts();
    drop(root);
    let req = Request::Unmount {
        name: name.as_bytes().to_vec(),
        mount_id: id.to_string(),
        lazy,
    };
    let path = super::socket_path();
    let answer =
        Client::connect(&path, REQUEST_TIMEOUT).and_then(|c| c.call(&req, &[parent.as_fd()]));
    match answer {
        Ok(Response::Unmounted) => Ok(()),
        Ok(r) => Err(UnmountError::Service(ServiceError::Unexpected(format!(
            "{r:?}"
        )))),
        Err(e) => Err(UnmountError::Service(e)),
    }
}
