//! The listening socket: the one systemd passes (`cfs-mount.socket`, socket
//! activation), else one bound at `--socket`. It is open to every local
//! user (mode 0666, its directory 0755): who may do what is decided per
//! request, from the peer's credentials.

use rustix::fd::{AsFd, OwnedFd};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use std::path::{Path, PathBuf};

/// Why there is no socket to listen on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// Socket activation passed something unusable.
    #[error("socket activation: {0}")]
    Activation(String),
    /// Binding the socket failed.
    #[error("could not {op} {}", .path.display())]
    Io {
        /// The step.
        op: &'static str,
        /// The socket or its directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Where the service listens.
#[derive(Debug)]
pub struct Listener {
    /// The listening socket.
    pub fd: OwnedFd,
    /// Where, for logs.
    pub what: String,
}

/// The socket-activated socket, or a new one at `path`.
pub fn listener(path: &Path) -> Result<Listener, ListenError> {
    if let Some(fds) = cfs_mount::sys::take_socket_activation().map_err(ListenError::Activation)? {
        let [(name, fd)]: [(String, OwnedFd); 1] = fds.try_into().map_err(|v: Vec<_>| {
            ListenError::Activation(format!("{} fds passed, one socket expected", v.len()))
        })?;
        let kind = rustix::net::sockopt::socket_type(&fd)
            .map_err(|e| ListenError::Activation(format!("fd 3 ({name}): {e}")))?;
        if kind != SocketType::SEQPACKET {
            return Err(ListenError::Activation(format!(
                "fd 3 ({name}) is not a SOCK_SEQPACKET socket (ListenSequentialPacket=)"
            )));
        }
        return Ok(Listener {
            fd,
            what: format!("the socket systemd passed ({name})"),
        });
    }
    bind(path).map(|fd| Listener {
        fd,
        what: path.display().to_string(),
    })
}

fn bind(path: &Path) -> Result<OwnedFd, ListenError> {
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |e: rustix::io::Errno| ListenError::Io {
            op,
            path,
            source: e.into(),
        }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|source| ListenError::Io {
                op: "create",
                path: dir.to_path_buf(),
                source,
            })?;
            rustix::fs::chmod(dir, rustix::fs::Mode::from_raw_mode(0o755))
                .map_err(io("chmod", dir))?;
        }
    }
    // A socket left by a service that is gone; anything else stays.
    if let Ok(m) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !m.file_type().is_socket() {
            return Err(ListenError::Io {
                op: "bind (something that is not a socket is there)",
                path: path.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            });
        }
        std::fs::remove_file(path).map_err(|source| ListenError::Io {
            op: "remove the old socket",
            path: path.to_path_buf(),
            source,
        })?;
    }
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(io("create a socket for", path))?;
    let addr = SocketAddrUnix::new(path).map_err(io("name a socket", path))?;
    rustix::net::bind(&fd, &addr).map_err(io("bind", path))?;
    rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(0o666)).map_err(io("chmod", path))?;
    rustix::net::listen(fd.as_fd(), 128).map_err(io("listen on", path))?;
    Ok(fd)
}
