//! The mount service's wire protocol, version [`VERSION`]: one JSON object
//! per `SOCK_SEQPACKET` message, file descriptors beside it (`SCM_RIGHTS`).
//!
//! Why this shape: a sequenced-packet socket keeps message boundaries, so
//! there is no framing to get wrong, and a message arrives whole or not at
//! all; JSON is readable in a log and by `socat`; the fds are the point
//! (the service acts on the files the client opened, never on paths it
//! names). Each connection carries one request and its one response; the
//! client's identity is what the kernel says about the connection
//! (`SO_PEERCRED`, `SO_PEERPIDFD`, `SO_PEERGROUPS`), never a field.
//!
//! Every message has `"version": 1` and, for a request, `"op"`:
//!
//! | op | fds, in order | fields | answer |
//! | --- | --- | --- | --- |
//! | `hello` | none | | `hello` (the `uid` and `pid` the service sees) |
//! | `mount` | image (a readable regular file), mount point (a directory, `O_PATH` is enough), then `objects` object directories | `objects` (1 to [`MAX_OBJECT_DIRS`]), `image_id` (optional: the expected image id, 64 hex), `verity` (`off` or `require`) | `mounted` (`image_id`, `mount_id` `uNNN`, `cached`) |
//! | `unmount` | the mount point's parent directory (`O_PATH`) | `name` (the mount point's name in it, as bytes), `mount_id` (`uNNN`: the mount the client found there), `lazy` | `unmounted` |
//!
//! Any request may instead be answered `refused` (the request is not
//! acceptable: hostile image, wrong fd, not yours, over a limit) or
//! `failed` (acceptable, but the service could not do it), each with an
//! `error` sentence naming what and why. Messages are at most
//! [`MAX_MESSAGE`] bytes with at most [`MAX_FDS`] fds; a longer message, or
//! one whose fds did not all fit, is refused, never read in part.

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;

/// The protocol version this code speaks.
pub const VERSION: u32 = 1;
/// Where the service listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/cfs/mount.sock";
/// The environment variable clients read the socket path from first.
pub const SOCKET_ENV: &str = "CFS_MOUNT_SERVICE";
/// Longest message, either way.
pub const MAX_MESSAGE: usize = 16 << 10;
/// Most fds with one message.
pub const MAX_FDS: usize = 8;
/// Most object directories in one mount request.
pub const MAX_OBJECT_DIRS: usize = 4;

/// A request (the `op` field and its own fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Is the service there, and who does it take the caller for.
    Hello,
    /// Mount the image (fd 0) on the mount point (fd 1) over the object
    /// directories (fds 2…).
    Mount {
        /// How many object directories follow the image and the mount point.
        objects: u32,
        /// The image id the client expects (64 hex), if it knows one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image_id: Option<String>,
        /// Content checking by overlayfs.
        verity: ServiceVerity,
    },
    /// Unmount the service mount `mount_id` on `name` in the directory fd 0.
    /// (Not the mount's root as an fd: an fd of the client's would keep the
    /// mount busy while the service unmounts it.)
    Unmount {
        /// The mount point's name in its parent directory, as bytes.
        name: Vec<u8>,
        /// The mount the client found there (`uNNN`); it must still be there.
        mount_id: String,
        /// Detach now even if busy.
        lazy: bool,
    },
}

/// The overlay's `verity=` as a client asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceVerity {
    /// No content checks.
    Off,
    /// Every external file's object must have the fs-verity digest its
    /// metacopy xattr names.
    Require,
}

/// The service's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    /// The answer to `hello` (its `version` says which protocol the service
    /// speaks).
    Hello {
        /// The caller's uid, as the kernel told the service.
        uid: u32,
        /// The caller's pid, as the kernel told the service.
        pid: i32,
    },
    /// The image is mounted.
    Mounted {
        /// The image id (fs-verity digest of the image's bytes).
        image_id: String,
        /// The new mount's unique id, `uNNN` (as `cfs_mount::MountId` prints it).
        mount_id: String,
        /// Whether the validated image was already in the service's cache.
        cached: bool,
    },
    /// The mount is gone.
    Unmounted,
    /// The request is not acceptable; nothing was done.
    Refused {
        /// What and why.
        error: String,
    },
    /// The request was acceptable but could not be carried out.
    Failed {
        /// What and why.
        error: String,
    },
}

/// A message with its version (`{"version": 1, …}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Envelope<T> {
    version: u32,
    #[serde(flatten)]
    body: T,
}

/// Only the version, read first so that a newer peer gets a clear answer.
#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

/// Why a message could not be sent or received.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The socket failed (or timed out: `EAGAIN`).
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The other end closed the connection without a message.
    #[error("the connection was closed without a message")]
    Closed,
    /// The message was longer than [`MAX_MESSAGE`].
    #[error("message over {MAX_MESSAGE} bytes")]
    TooLong,
    /// More fds came than [`MAX_FDS`], or control data was cut.
    #[error("more than {MAX_FDS} file descriptors with one message")]
    TooManyFds,
    /// Not a message of this protocol.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A message of another protocol version.
    #[error("protocol version {0}, this side speaks {VERSION}")]
    Version(u32),
}

/// Sends `body` (with the version) and `fds` as one message.
pub fn send<T: Serialize>(
    sock: impl AsFd,
    body: &T,
    fds: &[BorrowedFd<'_>],
) -> Result<(), ProtocolError> {
    if fds.len() > MAX_FDS {
        return Err(ProtocolError::TooManyFds);
    }
    let text = serde_json::to_vec(&Envelope {
        version: VERSION,
        body,
    })
    .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    if text.len() > MAX_MESSAGE {
        return Err(ProtocolError::TooLong);
    }
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(ProtocolError::TooManyFds);
    }
    // MSG_NOSIGNAL: a client gone away is an error here, not a SIGPIPE.
    let sent = retry_interrupted(|| {
        sendmsg(
            &sock,
            &[IoSlice::new(&text)],
            &mut control,
            SendFlags::NOSIGNAL,
        )
    })?;
    if sent != text.len() {
        return Err(ProtocolError::Io(std::io::Error::other(
            "message cut short",
        )));
    }
    Ok(())
}

/// Receives one message: its body and the fds that came with it (closed on
/// any error, including a message that is not `T`).
pub fn recv<T: DeserializeOwned>(sock: impl AsFd) -> Result<(T, Vec<OwnedFd>), ProtocolError> {
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = retry_interrupted(|| {
        recvmsg(
            &sock,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
    })?;
    let mut fds = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = msg {
            fds.extend(rights);
        }
    }
    if got.flags.contains(ReturnFlags::CTRUNC) || fds.len() > MAX_FDS {
        return Err(ProtocolError::TooManyFds);
    }
    if got.flags.contains(ReturnFlags::TRUNC) || got.bytes > MAX_MESSAGE {
        return Err(ProtocolError::TooLong);
    }
    if got.bytes == 0 {
        return Err(ProtocolError::Closed);
    }
    Ok((decode(&buf[..got.bytes])?, fds))
}

/// Runs one socket call again when a signal cut it short. A socket with a
/// timeout (`SO_RCVTIMEO`, `SO_SNDTIMEO`) fails with `EINTR` even under
/// `SA_RESTART`, and glibc signals every thread of a process when one of
/// them changes its ids; nothing was sent or received in that case.
fn retry_interrupted<T>(
    mut call: impl FnMut() -> rustix::io::Result<T>,
) -> Result<T, std::io::Error> {
    loop {
        match call() {
            Err(rustix::io::Errno::INTR) => continue,
            other => return other.map_err(std::io::Error::from),
        }
    }
}

/// Parses one message's bytes: the version first, then the body.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtocolError> {
    let malformed = |e: serde_json::Error| ProtocolError::Malformed(e.to_string());
    let v: VersionOnly = serde_json::from_slice(bytes).map_err(malformed)?;
    if v.version != VERSION {
        return Err(ProtocolError::Version(v.version));
    }
    let e: Envelope<T> = serde_json::from_slice(bytes).map_err(malformed)?;
    Ok(e.body)
}

/// One message's bytes, as [`send`] writes them.
pub fn encode<T: Serialize>(body: &T) -> Vec<u8> {
    serde_json::to_vec(&Envelope {
        version: VERSION,
        body,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap()
    }

    /// A stopped and continued process sees `EINTR` from a socket wait
    /// with a timeout (signal(7)); a receive waits on through it.
    #[test]
    fn a_stop_and_continue_does_not_cut_a_timed_receive() {
        let (ours, theirs) = pair();
        rustix::net::sockopt::set_socket_timeout(
            &theirs,
            rustix::net::sockopt::Timeout::Recv,
            Some(std::time::Duration::from_secs(30)),
        )
        .unwrap();
        let waiter = std::thread::spawn(move || recv::<Request>(&theirs).map(|(r, _)| r));
        std::thread::sleep(std::time::Duration::from_millis(200));
        let me = std::process::id();
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("kill -STOP {me}; sleep 0.2; kill -CONT {me}"))
            .status()
            .unwrap();
        assert!(status.success());
        send(&ours, &Request::Hello, &[]).unwrap();
        let got = waiter.join().unwrap();
        assert!(matches!(got, Ok(Request::Hello)), "{got:?}");
    }

    #[test]
    fn messages_look_as_documented_and_round_trip() {
        let table: &[(Request, &str)] = &[
            (Request::Hello, r#"{"version":1,"op":"hello"}"#),
            (
                Request::Mount {
                    objects: 1,
                    image_id: None,
                    verity: ServiceVerity::Off,
                },
                r#"{"version":1,"op":"mount","objects":1,"verity":"off"}"#,
            ),
            (
                Request::Unmount {
                    name: b"m".to_vec(),
                    mount_id: "u42".into(),
                    lazy: false,
                },
                r#"{"version":1,"op":"unmount","name":[109],"mount_id":"u42","lazy":false}"#,
            ),
        ];
        for (req, text) in table {
            assert_eq!(String::from_utf8(encode(req)).unwrap(), *text);
            assert_eq!(decode::<Request>(text.as_bytes()).unwrap(), *req);
        }
        let r = Response::Refused { error: "no".into() };
        assert_eq!(
            String::from_utf8(encode(&r)).unwrap(),
            r#"{"version":1,"result":"refused","error":"no"}"#
        );
    }

    #[test]
    fn bad_messages_are_errors_naming_the_problem() {
        for (bytes, want) in [
            (&b"not json"[..], "malformed"),
            (br#"{"op":"hello"}"#, "malformed"),
            (br#"{"version":2,"op":"hello"}"#, "version 2"),
            (br#"{"version":1,"op":"format-disk"}"#, "malformed"),
            (
                br#"{"version":1,"op":"mount","objects":"many"}"#,
                "malformed",
            ),
        ] {
            let e = decode::<Request>(bytes).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn fds_travel_with_the_message_and_limits_hold() {
        let (a, b) = pair();
        let f = tempfile::tempfile().unwrap();
        send(&a, &Request::Hello, &[f.as_fd(), f.as_fd()]).unwrap();
        let (req, fds): (Request, _) = recv(&b).unwrap();
        assert_eq!((req, fds.len()), (Request::Hello, 2));
        // Too many fds: refused whole, the fds that came closed with it.
        let many: Vec<BorrowedFd<'_>> = (0..MAX_FDS + 1).map(|_| f.as_fd()).collect();
        assert!(matches!(
            send(&a, &Request::Hello, &many),
            Err(ProtocolError::TooManyFds)
        ));
        // A message over the limit sent raw is refused whole.
        let big = vec![b' '; MAX_MESSAGE + 10];
        rustix::io::write(&a, &big).unwrap();
        assert!(matches!(recv::<Request>(&b), Err(ProtocolError::TooLong)));
        drop(a);
        assert!(matches!(recv::<Request>(&b), Err(ProtocolError::Closed)));
    }
}
