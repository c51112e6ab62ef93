//! Paths inside a repository, opened relative to its directory fd.
//!
//! cfs opens only repositories of the caller or of root (`open.rs`), but
//! even those may hold a symlink at any name (`lock`, `images`,
//! `objects/ab`): copied in, restored, or written by a program fooled by
//! hostile input. So no repository path is ever handed
//! to a path-based call: each is opened with `openat2(repo_fd, rel,
//! RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (a symlink anywhere on the way,
//! an absolute path or a `..` leaving the repository fails with `ELOOP` or
//! `EXDEV`), and the `*at` calls that act on a final name (`symlinkat`,
//! `readlinkat`, `renameat`, `unlinkat`, `mkdirat`) get the fd of its
//! directory opened that way, since they never follow a final symlink but
//! would follow one on an intermediate component.
//! <https://man7.org/linux/man-pages/man2/openat2.2.html>

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;

/// How every repository path is resolved.
const RESOLVE: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS);

/// Opens `rel` below `root` (see the module doc); `O_NOFOLLOW | O_CLOEXEC`
/// are added. Retried on `EAGAIN`, which `openat2` returns when a concurrent
/// rename may have raced the walk.
pub(crate) fn open(
    root: impl AsFd,
    rel: &str,
    flags: OFlags,
    mode: Mode,
) -> rustix::io::Result<OwnedFd> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(root.as_fd(), rel, flags, mode, RESOLVE) {
            Err(Errno::AGAIN | Errno::INTR) if tries < 8 => tries += 1,
            r => return r,
        }
    }
}

/// Opens the directory `rel` below `root`.
pub(crate) fn open_dir(root: impl AsFd, rel: &str) -> rustix::io::Result<OwnedFd> {
    open(root, rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
}

/// Creates the directory `rel` below `root` with `mode`, and its missing
/// parents, one component at a time without following a symlink; returns it
/// open.
pub(crate) fn create_dirs(root: impl AsFd, rel: &str, mode: Mode) -> rustix::io::Result<OwnedFd> {
    let mut dir = open_dir(root, ".")?;
    for name in rel.split('/').filter(|c| !c.is_empty() && *c != ".") {
        match rustix::fs::mkdirat(&dir, name, mode) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e),
        }
        dir = open_dir(&dir, name)?;
    }
    Ok(dir)
}

/// The names in an open directory, without `.` and `..`, sorted.
pub(crate) fn names(dir: impl AsFd) -> rustix::io::Result<Vec<OsString>> {
    let mut out = Vec::new();
    // Dir::read_from reads from a duplicate's start, so the fd stays reusable.
    for entry in rustix::fs::Dir::read_from(dir.as_fd())? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push(OsString::from_vec(name.to_vec()));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(t: &tempfile::TempDir) -> OwnedFd {
        rustix::fs::open(t.path(), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap()
    }

    #[test]
    fn symlinks_and_escapes_are_refused_anywhere_on_the_path() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("real")).unwrap();
        std::fs::write(t.path().join("real/f"), b"x").unwrap();
        std::fs::write(outside.path().join("f"), b"secret").unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("link")).unwrap();
        std::os::unix::fs::symlink("real", t.path().join("inside-link")).unwrap();
        let r = root(&t);
        assert!(open(&r, "real/f", OFlags::RDONLY, Mode::empty()).is_ok());
        for rel in [
            "link/f",
            "inside-link/f",
            "inside-link",
            "../x",
            "/etc/passwd",
            "real/../../x",
        ] {
            let e = open(&r, rel, OFlags::RDONLY, Mode::empty()).unwrap_err();
            assert!(matches!(e, Errno::LOOP | Errno::XDEV), "{rel}: {e}");
        }
    }

    #[test]
    fn create_dirs_does_not_follow_a_planted_symlink() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let r = root(&t);
        create_dirs(&r, "a/b", Mode::from_raw_mode(0o700)).unwrap();
        assert!(t.path().join("a/b").is_dir());
        std::os::unix::fs::symlink(outside.path(), t.path().join("s")).unwrap();
        assert!(create_dirs(&r, "s/x", Mode::from_raw_mode(0o700)).is_err());
        assert!(!outside.path().join("x").exists());
        assert_eq!(names(&r).unwrap(), ["a", "s"]);
    }
}
