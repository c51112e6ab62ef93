//! Repository locking with `flock(2)` on `REPO/lock`
//! (<https://man7.org/linux/man-pages/man2/flock.2.html>).
//!
//! Imports (and fsck) hold it shared, gc exclusive: gc never runs while an
//! import has written objects that no image names yet. Mounting holds it
//! shared only between resolving the image and recording its pin
//! (`pins.rs`). The lock is released when the guard is dropped or the
//! process dies, so a killed import leaves no stale lock behind.
//!
//! The lock file lives inside the repository, whose top directory only its
//! owner can enter, so no other user can open it to hold it; it is opened
//! beneath the repository fd, `O_NOFOLLOW | O_NONBLOCK`, and must be a
//! regular file (a planted symlink or FIFO is an error, never followed or
//! waited on). When the lock is busy, [`LockWait::on_wait`] is told who
//! holds it (from `/proc/locks`) before waiting, and [`LockWait::timeout`]
//! bounds the wait.

use super::{beneath, RepoError, Repository};
use rustix::fs::{FlockOperation, Mode, OFlags};
use rustix::io::Errno;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// How to hold the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Many holders at once: imports, fsck, mounting.
    Shared,
    /// One holder, nobody else: gc.
    Exclusive,
}

impl std::fmt::Display for LockMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LockMode::Shared => "shared",
            LockMode::Exclusive => "exclusive",
        })
    }
}

/// What to do when the lock is held by someone else.
#[derive(Debug, Clone, Copy, Default)]
pub struct LockWait {
    /// Give up after this long ([`RepoError::LockTimeout`]); `None` waits
    /// as long as it takes.
    pub timeout: Option<Duration>,
    /// Called once, before waiting, with who holds the lock.
    pub on_wait: Option<fn(&Contention<'_>)>,
}

/// A busy lock, as [`LockWait::on_wait`] is told about it.
#[derive(Debug)]
pub struct Contention<'a> {
    /// The lock file.
    pub path: &'a Path,
    /// The mode this process wants.
    pub wanted: LockMode,
    /// Its holders, as far as `/proc/locks` shows them (empty if unknown).
    pub holders: &'a [LockHolder],
    /// The timeout that applies.
    pub timeout: Option<Duration>,
}

/// A process holding the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// Its pid (in this process's pid namespace).
    pub pid: u32,
    /// How it holds the lock.
    pub mode: LockMode,
    /// Its command line, when readable.
    pub command: Option<String>,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} ({}", self.pid, self.mode)?;
        if let Some(c) = &self.command {
            write!(f, ", {c}")?;
        }
        f.write_str(")")
    }
}

/// `held by pid 12 (shared, cfs gc), pid 13 (…)`, or `held by an unknown process`.
pub fn describe_holders(holders: &[LockHolder]) -> String {
    if holders.is_empty() {
        return "held by a process this one can't see".into();
    }
    let list: Vec<String> = holders.iter().map(|h| h.to_string()).collect();
    format!("held by {}", list.join(", "))
}

/// A held repository lock; released on drop. Holds nothing for a reader of
/// a read-only repository that has no lock file (see [`Repository::lock`]).
#[derive(Debug)]
pub struct RepoLock {
    _fd: Option<OwnedFd>,
}

impl Repository {
    /// Sets what to do when the lock is busy (default: wait silently, forever).
    pub fn set_lock_wait(&mut self, wait: LockWait) {
        self.lock_wait = wait;
    }

    /// Takes the repository lock, waiting for it as [`LockWait`] says. A
    /// repository this process can't write that has no lock file is
    /// "locked" without one: it can only be read here.
    pub fn lock(&self, mode: LockMode) -> Result<RepoLock, RepoError> {
        let path = self.path.join("lock");
        let flags = OFlags::RDONLY | OFlags::NONBLOCK;
        let created = beneath::open(
            &self.dir,
            "lock",
            flags | OFlags::CREATE,
            Mode::from_raw_mode(0o600),
        );
        let fd = match created {
            Ok(fd) => fd,
            // A repository this process can't write (a read-only file
            // system, a directory it may not write) and that has no lock
            // file yet: nobody can have locked it through this path, and
            // nothing here can change it (a gc fails at its first unlink).
            Err(Errno::ROFS | Errno::ACCESS) => {
                match beneath::open(&self.dir, "lock", flags, Mode::empty()) {
                    Ok(fd) => fd,
                    Err(Errno::NOENT) => return Ok(RepoLock { _fd: None }),
                    Err(e) => return Err(RepoError::io("open", &path)(e)),
                }
            }
            Err(e) => return Err(RepoError::io("open", &path)(e)),
        };
        let st = rustix::fs::fstat(&fd).map_err(RepoError::io("stat", &path))?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(RepoError::NotARepository {
                path,
                reason: "the lock is not a regular file".into(),
            });
        }
        let op = match mode {
            LockMode::Shared => FlockOperation::NonBlockingLockShared,
            LockMode::Exclusive => FlockOperation::NonBlockingLockExclusive,
        };
        let start = Instant::now();
        let mut told = false;
        let mut pause = Duration::from_millis(5);
        loop {
            match rustix::fs::flock(&fd, op) {
                Ok(()) => return Ok(RepoLock { _fd: Some(fd) }),
                Err(Errno::INTR) => continue,
                Err(Errno::WOULDBLOCK) => {}
                Err(e) => return Err(RepoError::io("lock", &path)(e)),
            }
            let waited = start.elapsed();
            if self.lock_wait.timeout.is_some_and(|t| waited >= t) {
                let holders = holders_of(&st);
                return Err(RepoError::LockTimeout {
                    path,
                    waited,
                    holders: format!(" ({})", describe_holders(&holders)),
                });
            }
            if !told {
                told = true;
                if let Some(notify) = self.lock_wait.on_wait {
                    let holders = holders_of(&st);
                    notify(&Contention {
                        path: &path,
                        wanted: mode,
                        holders: &holders,
                        timeout: self.lock_wait.timeout,
                    });
                }
            }
            let left = self
                .lock_wait
                .timeout
                .map_or(pause, |t| t.saturating_sub(waited).min(pause));
            std::thread::sleep(left);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }
}

/// The processes holding a `flock` on the file `st` describes, from `/proc/locks`.
fn holders_of(st: &rustix::fs::Stat) -> Vec<LockHolder> {
    let dev = (
        rustix::fs::major(st.st_dev),
        rustix::fs::minor(st.st_dev),
        st.st_ino,
    );
    let text = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    let mut holders = parse_proc_locks(&text, dev);
    for h in &mut holders {
        h.command = command_of(h.pid);
    }
    holders
}

/// The `FLOCK` holders (not waiters) of the inode `(major, minor, ino)` in
/// `/proc/locks` text: `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`.
fn parse_proc_locks(text: &str, (major, minor, ino): (u32, u32, u64)) -> Vec<LockHolder> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Waiters have "->" after the id.
        let [_, kind, _, access, pid, file, ..] = f[..] else {
            continue;
        };
        if kind != "FLOCK" {
            continue;
        }
        let mut parts = file.split(':');
        let (Some(maj), Some(min), Some(i), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let same = u32::from_str_radix(maj, 16) == Ok(major)
            && u32::from_str_radix(min, 16) == Ok(minor)
            && i.parse::<u64>() == Ok(ino);
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if same && pid != 0 {
            let mode = if access == "WRITE" {
                LockMode::Exclusive
            } else {
                LockMode::Shared
            };
            out.push(LockHolder {
                pid,
                mode,
                command: None,
            });
        }
    }
    out
}

/// A process's command line, shortened, if this process may read it.
fn command_of(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let words: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    let mut line = words.join(" ");
    if line.chars().count() > 80 {
        line = line.chars().take(77).collect::<String>() + "...";
    }
    (!line.is_empty()).then_some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_locks_lines() {
        let text = "\
1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF
1: -> FLOCK  ADVISORY  WRITE 99 08:01:5678 0 EOF
2: FLOCK  ADVISORY  READ 77 08:01:5678 0 EOF
3: POSIX  ADVISORY  WRITE 55 08:01:5678 0 EOF
4: FLOCK  ADVISORY  READ 66 08:01:5679 0 EOF
5: FLOCK  ADVISORY  READ 67 fd:1f:5678 0 EOF
";
        let h = parse_proc_locks(text, (8, 1, 5678));
        let got: Vec<(u32, LockMode)> = h.iter().map(|h| (h.pid, h.mode)).collect();
        assert_eq!(got, [(1234, LockMode::Exclusive), (77, LockMode::Shared)]);
        let h = parse_proc_locks(text, (0xfd, 0x1f, 5678));
        assert_eq!(h.len(), 1);
        assert_eq!(parse_proc_locks("garbage\n\n1:", (8, 1, 5678)), []);
    }

    #[test]
    fn describes_holders() {
        let h = LockHolder {
            pid: 12,
            mode: LockMode::Shared,
            command: Some("cfs create-image d x".into()),
        };
        assert_eq!(
            describe_holders(&[h]),
            "held by pid 12 (shared, cfs create-image d x)"
        );
        assert!(describe_holders(&[]).contains("can't see"));
    }
}
