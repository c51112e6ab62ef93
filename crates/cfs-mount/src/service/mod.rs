//! The mount service's mount side: how an unprivileged `cfs mount` gets a
//! kernel (erofs + overlayfs) mount from the root daemon `cfs
//! mount-service` (the daemon itself, with its policy, image validation and
//! cache, is the `cfs-service` crate; docs/mount-service.md has the design
//! and the threat model).
//!
//! - [`protocol`]: the versioned messages, JSON over `SOCK_SEQPACKET` with
//!   fds beside them; shared by both ends.
//! - [`client`]: what `cfs mount` and `cfs unmount` send: the open image,
//!   object directories and mount point, or the mount to remove.
//! - [`peer`]: what the daemon does with them: the client identified by
//!   the kernel, the overlay created with the client's credentials in the
//!   client's mount namespace and attached on the directory it passed.
//!
//! The socket is [`socket_path`]: `$CFS_MOUNT_SERVICE`, else
//! [`protocol::DEFAULT_SOCKET`].

pub mod client;
pub mod peer;
pub mod protocol;

pub use client::{probe, ServiceError};
pub use peer::{unmount_for, MountForPeer, Peer, PeerMount};
pub use protocol::{Request, Response, ServiceVerity};

use std::path::PathBuf;

/// The socket clients use: `$CFS_MOUNT_SERVICE` when set and not empty,
/// else `/run/cfs/mount.sock`.
pub fn socket_path() -> PathBuf {
    std::env::var_os(protocol::SOCKET_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(protocol::DEFAULT_SOCKET))
}
