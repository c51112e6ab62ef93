//! How a server's life ends. It serves until its connection ends, which
//! is when the mount has gone away, whoever removed it (`cfs unmount`,
//! `umount`, `fusermount3 -u`, the end of its mount namespace). It never
//! unmounts anything on its way out: a server that was held up (SIGSTOP, a
//! slow exit) while its mount was removed and another mounted at the same
//! path must not touch the new one.
//!
//! Two things end it earlier:
//! - **SIGTERM, SIGINT or SIGHUP** ([`watch_signals`]): the server unmounts
//!   its own mount, lazily (open files keep being served until they close),
//!   found by identity: the mount at its mount point must have the id
//!   `cfs mount` told it after attaching ([`crate::identity`]); any other
//!   mount there is left alone and the server just exits. A second signal
//!   exits at once. If it dies anyway, the kernel fails requests with
//!   ENOTCONN and `cfs unmount` still removes the mount.
//! - **Nobody left to use the mount** ([`watch_namespace`]): a mount lives
//!   in a mount namespace, and a namespace lives while a process is in it.
//!   In `unshare -Urm sh -c 'cfs mount …'`, the server would be the last
//!   process of the namespace once the shell exits, keeping it, and so its
//!   own mount and itself, alive for ever. So a server whose mount namespace
//!   is not the initial one (which never ends) watches the other processes
//!   in it: it finds one, waits on its pidfd until it exits, looks for the
//!   next, and exits when none is left (which ends the namespace, and every
//!   mount in it, with it). Processes the server may not inspect count as
//!   outside (only root can put such a process in a user's namespace).

use crate::identity::MountId;
use nix::sys::signal::{SigSet, Signal};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

fn signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

/// Blocks the termination signals in this thread (and so in every thread
/// started from it afterwards), for [`watch_signals`] to wait for them.
pub fn block_signals() {
    let _ = signals().thread_block();
}

/// Waits for a termination signal in a thread (the signals must be blocked
/// in every thread), then unmounts the server's own mount, if it is still
/// at `mountpoint` and is `mine`; otherwise, or on a second signal, exits.
pub fn watch_signals(mountpoint: PathBuf, mine: Arc<OnceLock<MountId>>) {
    let _ = std::thread::Builder::new()
        .name("cfs-signals".into())
        .spawn(move || {
            let set = signals();
            if set.wait().is_err() {
                return;
            }
            let Some(&id) = mine.get() else {
                eprintln!("cfs server: stopping; its mount was never attached");
                std::process::exit(1);
            };
            match crate::unmount::unmount_own(&mountpoint, id) {
                // The session ends once the kernel lets go of the mount.
                Ok(()) => {}
                Err(e) => {
                    eprintln!("cfs server: stopping without unmounting: {e}");
                    std::process::exit(1);
                }
            }
            let _ = set.wait();
            std::process::exit(1);
        });
}

/// `MNT_NS_INIT_INO` (`include/uapi/linux/nsfs.h`, Linux 6.18): the inode of
/// the initial mount namespace's nsfs file.
const MNT_NS_INIT_INO: u64 = 0xEFFF_FFF8;

/// A namespace's identity: the device and inode of its nsfs file.
type NsId = (u64, u64);

fn mount_ns_of(pid: &str) -> Option<NsId> {
    std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// True when this process's mount namespace is known never to end: the
/// initial one. Linux 6.18 gives it a fixed inode; on older kernels it is
/// the one pid 1 is in, and when pid 1 can't be inspected the namespace is
/// taken as initial: a server left running is better than one that exits
/// while its mount is used.
fn in_lasting_namespace(ours: NsId) -> bool {
    if fixed_mnt_ns_inode() {
        return ours.1 == MNT_NS_INIT_INO;
    }
    mount_ns_of("1").is_none_or(|init| init == ours)
}

/// True on kernels (6.18 and later) whose initial mount namespace has the
/// fixed inode `MNT_NS_INIT_INO`.
fn fixed_mnt_ns_inode() -> bool {
    let uname = rustix::system::uname();
    let release = uname.release().to_string_lossy();
    let mut parts = release.split(['.', '-']).map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (6, 18),
        _ => false,
    }
}

/// Starts the watcher the module doc describes, unless the mount namespace
/// is one that never ends.
pub fn watch_namespace(mountpoint: PathBuf) {
    let Some(ours) = mount_ns_of("self") else {
        return;
    };
    if in_lasting_namespace(ours) {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("cfs-namespace".into())
        .spawn(move || loop {
            match another_member(ours) {
                Some(pidfd) => {
                    let mut fds = [rustix::event::PollFd::new(
                        &pidfd,
                        rustix::event::PollFlags::IN,
                    )];
                    while let Err(rustix::io::Errno::INTR) = rustix::event::poll(&mut fds, None) {}
                }
                None => {
                    eprintln!(
                        "cfs server: no process is left in the mount namespace of {}; exiting",
                        mountpoint.display()
                    );
                    std::process::exit(0);
                }
            }
        });
}

/// A pidfd of the oldest other process in the mount namespace `ours`, or
/// `None` when there is none this process can see.
fn another_member(ours: NsId) -> Option<rustix::fd::OwnedFd> {
    let me = std::process::id();
    let mut members: Vec<(u64, u32)> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && mount_ns_of(&pid.to_string()) == Some(ours))
        .filter_map(|pid| Some((start_time(pid)?, pid)))
        .collect();
    members.sort_unstable();
    members.into_iter().find_map(|(_, pid)| {
        let rpid = rustix::process::Pid::from_raw(pid as i32)?;
        let pidfd = rustix::process::pidfd_open(rpid, rustix::process::PidfdFlags::empty()).ok()?;
        // The pid may have been reused between the scan and pidfd_open: the
        // pidfd's process is the one checked if it is still alive after the
        // check (a live process keeps its pid).
        let still = mount_ns_of(&pid.to_string()) == Some(ours);
        let mut fds = [rustix::event::PollFd::new(
            &pidfd,
            rustix::event::PollFlags::IN,
        )];
        let alive = rustix::event::poll(&mut fds, Some(&rustix::event::Timespec::default()))
            .is_ok_and(|n| n == 0);
        (still && alive).then_some(pidfd)
    })
}

/// The start time of `pid` in clock ticks since boot (`/proc/PID/stat`
/// field 22), to prefer long-lived processes.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_runner_is_found_as_another_member() {
        assert!(start_time(std::process::id()).is_some());
        let ours = mount_ns_of("self").unwrap();
        // cargo, which started this test binary, is in the same namespace.
        assert!(another_member(ours).is_some());
        assert!(another_member((0, 0)).is_none());
    }
}
