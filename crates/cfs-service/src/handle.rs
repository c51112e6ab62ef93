//! One connection: identify the peer (from the kernel), take its request
//! within the limits, answer it, log it with the peer's uid and pid.
//! Nothing a client sends can take the service down: every failure is an
//! answer (or, for a client gone, a log line), never a panic or a wait
//! without end.

use crate::checks::{self, refused, Problem};
use crate::limits::MountRefusal;
use crate::validate::{self, ImageFacts};
use crate::State;
use cfs_format::Digest;
use cfs_mount::service::protocol::{self, ProtocolError, Request, Response, MAX_OBJECT_DIRS};
use cfs_mount::service::{MountForPeer, Peer, ServiceVerity};
use cfs_repo::repository::PinState;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// How long the service waits to hand an answer to a slow client.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the connection `conn` to its end.
pub(crate) fn connection(state: &State, conn: OwnedFd) {
    let limits = &state.limits;
    for (t, d) in [
        (rustix::net::sockopt::Timeout::Recv, limits.timeout()),
        (rustix::net::sockopt::Timeout::Send, SEND_TIMEOUT),
    ] {
        let _ = rustix::net::sockopt::set_socket_timeout(&conn, t, Some(d));
    }
    let peer = match Peer::of_connection(conn.as_fd()) {
        Ok(p) => p,
        Err(e) => {
            crate::log(&format!("a client could not be identified: {e}"));
            answer(
                &conn,
                &Response::Failed {
                    error: format!("the service could not identify you: {e}"),
                },
            );
            return;
        }
    };
    let Some(slot) = state
        .gate
        .request(peer.account_uid, limits.max_requests_per_user)
    else {
        let why = format!(
            "uid {} has {} requests in progress, the most the service takes at once",
            peer.account_uid, limits.max_requests_per_user
        );
        log(&peer, &format!("refused: {why}"));
        refuse_unread(&conn, why);
        return;
    };
    let started = Instant::now();
    let (request, fds): (Request, Vec<OwnedFd>) = match protocol::recv(&conn) {
        Ok(r) => r,
        Err(ProtocolError::Closed) => {
            log(&peer, "closed the connection without a request");
            return;
        }
        Err(e) => {
            let why = match e {
                ProtocolError::Io(ref io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                    format!("no request within {} s", limits.request_timeout)
                }
                e => format!("bad request: {e}"),
            };
            log(&peer, &format!("refused: {why}"));
            answer(&conn, &Response::Refused { error: why });
            return;
        }
    };
    let deadline = started + limits.timeout();
    let (what, result) = match request {
        Request::Hello => (
            "hello".to_string(),
            Ok(Response::Hello {
                uid: peer.uid,
                pid: peer.pid,
            }),
        ),
        Request::Mount {
            objects,
            image_id,
            verity,
        } => (
            "mount".to_string(),
            mount(state, &peer, objects, image_id, verity, fds, deadline),
        ),
        Request::Unmount {
            name,
            mount_id,
            lazy,
        } => (
            format!("unmount {mount_id}{}", if lazy { " --lazy" } else { "" }),
            unmount(state, &peer, &name, &mount_id, lazy, fds),
        ),
    };
    let response = match result {
        Ok(r) => {
            log(&peer, &format!("{what}: {}", describe(&r)));
            r
        }
        Err(Problem::Refused(error)) => {
            log(&peer, &format!("{what}: refused: {error}"));
            Response::Refused { error }
        }
        Err(Problem::Failed(error)) => {
            log(&peer, &format!("{what}: failed: {error}"));
            Response::Failed { error }
        }
    };
    // Done before the client hears so: its next request is not its last.
    drop(slot);
    answer(&conn, &response);
}

fn describe(r: &Response) -> String {
    match r {
        Response::Mounted {
            image_id,
            mount_id,
            cached,
        } => format!(
            "mounted image {image_id} as mount {mount_id}{}",
            if *cached { " (cached)" } else { "" }
        ),
        Response::Unmounted => "unmounted".into(),
        Response::Hello { .. } => "answered".into(),
        r => format!("{r:?}"),
    }
}

fn log(peer: &Peer, what: &str) {
    crate::log(&format!("{}: {what}", peer.describe()));
}

/// Refuses a request without reading it (see [`answer_unread`]).
pub(crate) fn refuse_unread(conn: &OwnedFd, error: String) {
    answer_unread(conn, &Response::Refused { error });
}

/// Answers a request without reading it: what the client already sent is
/// taken off the socket first (never waited for), since closing a unix
/// socket with unread data resets the connection, and the client would see
/// that instead of the answer.
fn answer_unread(conn: &OwnedFd, r: &Response) {
    let mut buf = vec![0u8; protocol::MAX_MESSAGE + 1];
    let _ = rustix::net::recv(conn, &mut buf, rustix::net::RecvFlags::DONTWAIT);
    answer(conn, r);
}

fn answer(conn: &OwnedFd, r: &Response) {
    if let Err(e) = protocol::send(conn, r, &[]) {
        crate::log(&format!("could not answer a client ({e})"));
    }
}

/// A mount request (see the protocol's table for the fds).
fn mount(
    state: &State,
    peer: &Peer,
    objects: u32,
    image_id: Option<String>,
    verity: ServiceVerity,
    fds: Vec<OwnedFd>,
    deadline: Instant,
) -> Result<Response, Problem> {
    let n = objects as usize;
    if n == 0 || n > MAX_OBJECT_DIRS {
        return refused(format!(
            "a mount takes 1 to {MAX_OBJECT_DIRS} object directories, not {n}"
        ));
    }
    if fds.len() != 2 + n {
        return refused(format!(
            "a mount request carries the image, the mount point and {n} object directories \
             ({} fds), but {} came",
            2 + n,
            fds.len()
        ));
    }
    let expected = image_id
        .map(|hex| {
            Digest::from_hex(hex.as_bytes())
                .map_err(|_| Problem::Refused(format!("image_id {hex:?} is not 64 hex digits")))
        })
        .transpose()?;
    let (image, mountpoint, dirs) = (&fds[0], &fds[1], &fds[2..]);
    let size = checks::image(image.as_fd(), state.limits.max_image_bytes)?;
    checks::mountpoint(peer, mountpoint.as_fd())?;
    for d in dirs {
        checks::object_dir(peer, d.as_fd())?;
    }
    let uid = peer.account_uid;
    let max = state.limits.max_mounts_per_user;
    // Counted from here until the pin is written (or the mount given up):
    // parallel requests can't all pass the check.
    let _mount_slot = state
        .gate
        .mount(uid, max, || state.cache.live_mounts_of(uid))
        .map_err(|e| match e {
            MountRefusal::Full { live, making } => Problem::Refused(format!(
                "uid {uid} has {live} service mounts{}, the most the service makes for one user",
                if making > 0 {
                    format!(" and {making} being made")
                } else {
                    String::new()
                }
            )),
            MountRefusal::Count(e) => Problem::Failed(format!("the service's cache: {e}")),
        })?;
    // The image is read only with a validation slot held: the memory all
    // requests hold is at most --max-validations times the largest image.
    let Some(validation) = state
        .gate
        .validation(state.limits.max_validations, deadline)
    else {
        return Err(Problem::Failed(format!(
            "the service was busy validating other images until the request's deadline ({} s): \
             try again",
            state.limits.request_timeout
        )));
    };
    let bytes = checks::read_image(image.as_fd(), size)?;
    let id = cfs_format::fsverity::digest(&bytes);
    if let Some(want) = expected {
        if want != id {
            return refused(format!("the image's id is {id}, not the {want} asked for"));
        }
    }
    let facts = image_facts(state, &id, &bytes)?;
    if peer.in_user_namespace && facts.devices > 0 {
        return refused(format!(
            "the image holds {} device nodes, and you are in a user namespace of your own, whose \
             root could remount without nodev: the service mounts no devices there (mount it \
             with --fuse=yes)",
            facts.devices
        ));
    }
    let cache_err =
        |e: cfs_repo::repository::RepoError| Problem::Failed(format!("the service's cache: {e}"));
    let (pending, cached) = state.cache.begin(&id, &bytes).map_err(cache_err)?;
    drop(bytes);
    drop(validation);
    let objects: Vec<BorrowedFd<'_>> = dirs.iter().map(|d| d.as_fd()).collect();
    let made = MountForPeer {
        image: pending.opened_image(),
        image_path: pending.image_file(),
        has_acl: facts.has_acl,
        objects: &objects,
        mountpoint: mountpoint.as_fd(),
        verity,
    }
    .mount(peer)
    .map_err(|e| Problem::Failed(error_chain(&e)))?;
    let cfs_mount::MountId::Unique(mnt_id) = made.id else {
        let _ = made.undo(peer);
        return Err(Problem::Failed(
            "this kernel has no unique mount ids (Linux 6.8+): the service can't record mounts"
                .into(),
        ));
    };
    let record = cfs_repo::sys::MountId {
        mnt_id,
        mnt_ns_id: peer.mnt_ns_id,
    };
    let id_text = made.id.to_string();
    if let Err(e) = pending.pin_mount(
        record,
        &checks::describe(mountpoint.as_fd()),
        Some(peer.account_uid),
    ) {
        let undone = made.undo(peer);
        return Err(Problem::Failed(format!(
            "could not record the mount ({e}), so it was undone{}",
            undone
                .err()
                .map(|e| format!(" (not cleanly: {e})"))
                .unwrap_or_default()
        )));
    }
    Ok(Response::Mounted {
        image_id: id.to_hex(),
        mount_id: id_text,
        cached,
    })
}

/// What the service knows of image `id`: from memory, when this run of the
/// service validated it and it is still cached; else validated now (the
/// caller holds a validation slot).
fn image_facts(state: &State, id: &Digest, bytes: &[u8]) -> Result<ImageFacts, Problem> {
    if let Some(f) = state.known(id) {
        if state.cache.has(id) {
            return Ok(f);
        }
    }
    let facts = validate::validate(bytes, &state.limits.image())
        .map_err(|r| Problem::Refused(format!("the image: {r}")))?;
    state.remember(facts);
    Ok(facts)
}

/// An unmount request: fd 0 the mount point's parent directory.
fn unmount(
    state: &State,
    peer: &Peer,
    name: &[u8],
    mount_id: &str,
    lazy: bool,
    fds: Vec<OwnedFd>,
) -> Result<Response, Problem> {
    use std::os::unix::ffi::OsStrExt;
    let Ok([parent]) = <[OwnedFd; 1]>::try_from(fds) else {
        return refused("an unmount request carries the mount point's parent directory, one fd");
    };
    let Ok(cfs_mount::MountId::Unique(id)) = mount_id.parse() else {
        return refused(format!("mount_id {mount_id:?} is not a mount id (uNNN)"));
    };
    if peer.in_user_namespace {
        return refused(
            "your mount namespace belongs to a user namespace of your own: unmount it yourself \
             (cfs unmount does, as root there)",
        );
    }
    let pins = state
        .cache
        .pins()
        .map_err(|e| Problem::Failed(format!("the service's cache: {e}")))?;
    // A live pin only: mount ids start again at each boot, and a pin whose
    // mount is gone may name a mount someone else made since.
    let Some(pin) = pins
        .iter()
        .find(|p| p.mount.mnt_id == id && p.state == PinState::Live)
    else {
        return refused("that is not a mount the service made");
    };
    if pin.owner != Some(peer.account_uid) {
        return refused("that mount was not made for you: the service unmounts only your own");
    }
    if pin.mount.mnt_ns_id != peer.mnt_ns_id {
        return refused("that mount is not in your mount namespace");
    }
    checks::unmount_parent(peer, parent.as_fd())?;
    // One unmount at a time: between the check that the name still has
    // this mount on top and the unmount, no other request changes mounts
    // (and the peer, in a namespace of the initial user namespace, can't).
    let _one = state.unmounting.lock().unwrap_or_else(|p| p.into_inner());
    let expect = cfs_mount::MountId::Unique(id);
    cfs_mount::service::unmount_for(
        peer,
        parent.as_fd(),
        std::ffi::OsStr::from_bytes(name),
        lazy,
        expect,
    )
    .map_err(|e| match e {
        cfs_mount::UnmountError::Busy(_) => {
            Problem::Refused("the mount is busy (files open on it); --lazy detaches it now".into())
        }
        cfs_mount::UnmountError::NotOurs(_) | cfs_mount::UnmountError::NotMounted(_) => {
            Problem::Refused(format!("that name does not have mount {mount_id} on it"))
        }
        e => Problem::Failed(error_chain(&e)),
    })?;
    if cfs_repo::sys::mount_exists(pin.mount) == Ok(true) {
        return Err(Problem::Failed(
            "the mount is still there after unmounting (something else was on top of it?)".into(),
        ));
    }
    state.collect_soon();
    Ok(Response::Unmounted)
}

/// An error and its causes, as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}
