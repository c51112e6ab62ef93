//! Repository locking with `flock(2)` on `REPO/lock`
//! (<https://man7.org/linux/man-pages/man2/flock.2.html>).
//!
//! Imports (and fsck) hold it shared, gc exclusive: gc never runs while an
//! import has written objects that no image names yet. Reading an image or an
//! object (mounting) takes no lock and never waits. The lock is released when
//! the guard is dropped or the process dies, so a killed import leaves no
//! stale lock behind.

use super::{RepoError, Repository};
use rustix::fs::{FlockOperation, Mode, OFlags};
use std::os::fd::OwnedFd;

/// How to hold the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Many holders at once: imports, fsck.
    Shared,
    /// One holder, nobody else: gc.
    Exclusive,
}

/// A held repository lock; released on drop.
#[derive(Debug)]
pub struct RepoLock {
    _fd: OwnedFd,
}

impl Repository {
    /// Takes the repository lock, waiting for it.
    pub fn lock(&self, mode: LockMode) -> Result<RepoLock, RepoError> {
        let path = self.path.join("lock");
        let fd = rustix::fs::openat(
            &self.dir,
            "lock",
            OFlags::RDONLY | OFlags::CREATE | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(RepoError::io("open", &path))?;
        let op = match mode {
            LockMode::Shared => FlockOperation::LockShared,
            LockMode::Exclusive => FlockOperation::LockExclusive,
        };
        loop {
            match rustix::fs::flock(&fd, op) {
                Ok(()) => return Ok(RepoLock { _fd: fd }),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(RepoError::io("lock", &path)(e)),
            }
        }
    }
}
