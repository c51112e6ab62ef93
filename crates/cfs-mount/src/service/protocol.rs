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
use rustix::io::Errno;
use rustix::net::sockopt::{set_socket_timeout, socket_timeout, Timeout};
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

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
    let sent = retry_interrupted(sock.as_fd(), Timeout::Send, || {
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
    let got = retry_interrupted(sock.as_fd(), Timeout::Recv, || {
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

/// Runs one socket call again when a signal cut it short, within the
/// socket's own timeout (`SO_RCVTIMEO` or `SO_SNDTIMEO`, `which`).
///
/// A wait with such a timeout fails with `EINTR` even under `SA_RESTART`
/// and even with no handler, when the process was stopped and continued
/// (signal(7)); nothing was sent or received then. Each retry waits only
/// what is left of the first call's timeout, so signals can't stretch it,
/// and ends as a timeout would (`EAGAIN`).
fn retry_interrupted<T>(
    sock: BorrowedFd<'_>,
    which: Timeout,
    mut call: impl FnMut() -> rustix::io::Result<T>,
) -> Result<T, std::io::Error> {
    let timeout = socket_timeout(sock, which).ok().flatten();
    let start = Instant::now();
    let mut shortened = false;
    let result = loop {
        match call() {
            Err(Errno::INTR) => {
                let Some(timeout) = timeout else { continue };
                let left = timeout.saturating_sub(start.elapsed());
                // The kernel takes a zero timeout as none at all.
                if left < Duration::from_millis(1) {
                    break Err(Errno::AGAIN);
                }
                if let Err(e) = set_socket_timeout(sock, which, Some(left)) {
                    break Err(e);
                }
                shortened = true;
            }
            other => break other,
        }
    };
    if shortened {
        // The next message waits as long as the socket says again.
        let _ = set_socket_timeout(sock, which, timeout);
    }
    result.map_err(std::io::Error::from)
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

    /// Stops and continues this process (SIGSTOP, SIGCONT) every 100 ms
    /// for `seconds`, from a child.
    fn stop_and_continue_me(seconds: u32) -> std::process::Child {
        let me = std::process::id();
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "end=$(($(date +%s) + {seconds})); \
                 while [ $(date +%s) -lt $end ]; do \
                 kill -STOP {me}; sleep 0.05; kill -CONT {me}; sleep 0.05; done"
            ))
            .spawn()
            .unwrap()
    }

    fn with_receive_timeout(sock: &OwnedFd, seconds: u64) {
        set_socket_timeout(sock, Timeout::Recv, Some(Duration::from_secs(seconds))).unwrap();
    }

    /// A stopped and continued process sees `EINTR` from a socket wait
    /// with a timeout (signal(7)): a receive waits on through it, and a
    /// message sent after is received.
    #[test]
    fn a_stop_and_continue_does_not_cut_a_timed_receive() {
        let (ours, theirs) = pair();
        with_receive_timeout(&theirs, 30);
        let waiter = std::thread::spawn(move || recv::<Request>(&theirs).map(|(r, _)| r));
        std::thread::sleep(Duration::from_millis(200));
        assert!(stop_and_continue_me(1).wait().unwrap().success());
        send(&ours, &Request::Hello, &[]).unwrap();
        let got = waiter.join().unwrap();
        assert!(matches!(got, Ok(Request::Hello)), "{got:?}");
    }

    /// Stops and continues can't stretch a receive's timeout: it times
    /// out (`EAGAIN`) while they go on, and the socket keeps its timeout.
    #[test]
    fn stops_and_continues_do_not_stretch_a_timeout() {
        let (_ours, theirs) = pair();
        with_receive_timeout(&theirs, 1);
        let mut signals = stop_and_continue_me(8);
        let got = recv::<Request>(&theirs).map(|(r, _)| r);
        let signals_still_going = signals.try_wait().unwrap().is_none();
        let _ = signals.kill();
        let _ = signals.wait();
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::CONT);
        assert!(
            matches!(&got, Err(ProtocolError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock),
            "{got:?}"
        );
        assert!(signals_still_going, "the receive outlasted 8 s of signals");
        assert_eq!(
            socket_timeout(&theirs, Timeout::Recv).unwrap(),
            Some(Duration::from_secs(1))
        );
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
