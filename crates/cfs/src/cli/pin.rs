//! Recording a mount of a repository image as a gc root (`REPO/pins/`, see
//! `cfs_repo::repository::pins`), for every way the CLI mounts one: `cfs
//! mount NAME` in each mode, with the server detached or in the foreground,
//! and `cfs fuse-serve NAME`.
//!
//! A watcher thread is started before mounting: it waits for a new mount to
//! appear at the mount point (its unique mount id changes), then writes the
//! pin and releases the repository lock the [`PendingMount`] holds. A thread
//! rather than a step after mounting because a foreground FUSE mount returns
//! only once unmounted, and because the mount's root can't be looked at
//! before its server answers.

use cfs_repo::repository::PendingMount;
use cfs_repo::sys::MountId;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest wait for the mount to appear.
const APPEAR_TIMEOUT: Duration = Duration::from_secs(120);
/// How long to keep looking once the mount call has returned: a detached or
/// kernel mount is there by then; a foreground FUSE mount has come and gone
/// (and was pinned while it was there).
const GRACE: Duration = Duration::from_secs(5);

/// A watcher waiting to pin a mount.
pub struct Pinning {
    /// Milliseconds after `start` at which the watcher gives up.
    deadline_ms: Arc<AtomicU64>,
    start: Instant,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts watching `mountpoint` for the mount of `pending`'s image.
pub fn when_mounted(pending: PendingMount, mountpoint: &Path) -> Pinning {
    let start = Instant::now();
    let deadline_ms = Arc::new(AtomicU64::new(APPEAR_TIMEOUT.as_millis() as u64));
    let before = match cfs_repo::sys::mount_at(mountpoint) {
        Ok(m) => m,
        Err(e) => {
            // No mount ids on this kernel, or no mount point (the mount fails).
            warn(mountpoint, &std::io::Error::from(e));
            return Pinning {
                deadline_ms,
                start,
                thread: None,
            };
        }
    };
    let target = mountpoint.to_path_buf();
    let deadline = deadline_ms.clone();
    let thread = std::thread::spawn(move || watch(pending, &target, before, start, &deadline));
    Pinning {
        deadline_ms,
        start,
        thread: Some(thread),
    }
}

impl Pinning {
    /// Waits for the pin once the mount call has returned: `mounted` says
    /// whether it succeeded (if not, the watcher stops and nothing is pinned;
    /// if so, it gets [`GRACE`] more to see the mount).
    pub fn finish(self, mounted: bool) {
        let deadline = if mounted {
            (self.start.elapsed() + GRACE).as_millis() as u64
        } else {
            0
        };
        self.deadline_ms.fetch_min(deadline, Ordering::Relaxed);
        if let Some(t) = self.thread {
            let _ = t.join();
        }
    }
}

fn watch(
    pending: PendingMount,
    target: &Path,
    before: MountId,
    start: Instant,
    deadline_ms: &AtomicU64,
) {
    let mut pause = Duration::from_millis(2);
    while (start.elapsed().as_millis() as u64) < deadline_ms.load(Ordering::Relaxed) {
        if cfs_repo::sys::mount_at(target).is_ok_and(|now| now != before) {
            if let Err(e) = pending.pin(target) {
                warn(target, &e);
            }
            return;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    warn(target, &"no new mount appeared there in time");
}

/// Pins the mount `mounted` returned (its id, not whatever is at its
/// path now: a plain user owning the mount point's directory could have put
/// the mount's directory under another name, or its own mount at the path,
/// meanwhile), else the mount at its mount point.
pub fn mounted(pending: PendingMount, mounted: &cfs_mount::Mounted) {
    let target = mounted.mountpoint.as_path();
    let pinned = match mounted.id {
        Some(cfs_mount::MountId::Unique(id)) => cfs_repo::sys::mount_by_unique_id(id)
            .map_err(|e| std::io::Error::from(e).to_string())
            .and_then(|m| {
                pending
                    .pin_mount(m, &target.display().to_string(), None)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }),
        _ => pending.pin(target).map(drop).map_err(|e| e.to_string()),
    };
    if let Err(e) = pinned {
        warn(target, &e);
    }
}

fn warn(target: &Path, e: &dyn std::fmt::Display) {
    eprintln!(
        "cfs: warning: could not record the mount at {} in the repository ({e}): \
         `cfs gc` may remove its objects while it is mounted",
        target.display()
    );
}
