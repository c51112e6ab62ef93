//! Reading the files of a scanned tree exactly as the scan saw them.
//!
//! A directory being imported may belong to someone else, who can rename,
//! swap (`renameat2(RENAME_EXCHANGE)`) or replace any name in it with a
//! symlink at any moment. So a file is never reopened by its path: the scan
//! keeps the root directory open ([`SourceTree`]) and records, for each
//! regular file, its path relative to that root (as its directory in
//! [`Dirs`] and its name) and the inode it saw ([`Identity`]: device, inode
//! number, size, mtime). A later read opens the
//! file with `openat2(root, rel, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, so
//! no symlink, `..` or absolute path is followed anywhere on the way, and
//! then checks that the inode it got is the one recorded before reading a
//! byte. Anything else fails with [`SourceError`] naming the path.
//!
//! The scan itself reopens each directory it queued the same way
//! ([`SourceTree::open_dir`], checked by device and inode number only).
//!
//! Why the root fd and not the parent directory's fd: the store step runs on
//! the rayon pool over every file at once, and holding one fd per directory
//! of a large tree would exceed the fd limit; `openat2` from the root walks
//! the same components the old absolute-path `open` did, so it costs no
//! more (measured in `bench/`, see `bench/README.md`). What the path walk
//! may still meet is a directory swapped for another *directory*; the inode
//! check catches that, since the file found there is not the one scanned.
//!
//! Files are opened `O_NONBLOCK | O_NOCTTY` so that a name swapped for a
//! FIFO, or a file under a lease, fails instead of blocking the import
//! (`O_NONBLOCK` is cleared again once the file is known to be the regular
//! file scanned).

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, StatxFlags};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The inode a scan saw: what a later open must find again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Device major number.
    pub dev_major: u32,
    /// Device minor number.
    pub dev_minor: u32,
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds.
    pub mtime_sec: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
}

impl Identity {
    /// The identity a `statx` result describes.
    pub fn from_statx(st: &rustix::fs::Statx) -> Identity {
        Identity {
            dev_major: st.stx_dev_major,
            dev_minor: st.stx_dev_minor,
            ino: st.stx_ino,
            size: st.stx_size,
            mtime_sec: st.stx_mtime.tv_sec,
            mtime_nsec: st.stx_mtime.tv_nsec,
        }
    }

    /// The identity of an open file now.
    pub fn of(fd: impl AsFd) -> rustix::io::Result<Identity> {
        statx_fd(fd.as_fd()).map(|st| Identity::from_statx(&st))
    }

    /// Same inode (device and inode number).
    pub fn same_inode(&self, other: &Identity) -> bool {
        (self.dev_major, self.dev_minor, self.ino) == (other.dev_major, other.dev_minor, other.ino)
    }

    /// What differs from `now`, for an error message; `None` when nothing does.
    pub fn difference(&self, now: &Identity) -> Option<String> {
        if !self.same_inode(now) {
            return Some(format!(
                "it is another file now (inode {} on {}:{}, was {} on {}:{})",
                now.ino, now.dev_major, now.dev_minor, self.ino, self.dev_major, self.dev_minor
            ));
        }
        if self.size != now.size {
            return Some(format!("size was {}, is now {}", self.size, now.size));
        }
        if (self.mtime_sec, self.mtime_nsec) != (now.mtime_sec, now.mtime_nsec) {
            return Some("it was modified".into());
        }
        None
    }
}

fn statx_fd(fd: std::os::fd::BorrowedFd<'_>) -> rustix::io::Result<rustix::fs::Statx> {
    rustix::fs::statx(fd, c"", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS)
}

/// A directory in a [`Dirs`] table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirId(usize);

impl DirId {
    /// The scanned root.
    pub const ROOT: DirId = DirId(0);
}

/// The directories below a scanned root, each kept as its name and its
/// parent: a path is put together when it is needed, by following the
/// parents up to the root. Whole paths are never stored, so memory grows
/// with the names, not with their depth (a chain of long directory names,
/// each file's path stored whole, would cost memory quadratic in the depth).
#[derive(Debug, Clone)]
pub struct Dirs {
    /// Parent and name of each directory; the root (first) has an empty name.
    dirs: Vec<(DirId, Box<OsStr>)>,
}

impl Default for Dirs {
    fn default() -> Dirs {
        Dirs {
            dirs: vec![(DirId::ROOT, OsStr::new("").into())],
        }
    }
}

impl Dirs {
    /// Adds the directory `name` in `parent`.
    pub fn add(&mut self, parent: DirId, name: &OsStr) -> DirId {
        self.dirs.push((parent, name.into()));
        DirId(self.dirs.len() - 1)
    }

    /// The path of `dir` relative to the root (empty for the root).
    pub fn path(&self, dir: DirId) -> PathBuf {
        let mut names = Vec::new();
        let mut at = dir;
        while at != DirId::ROOT {
            let (parent, name) = &self.dirs[at.0];
            names.push(&**name);
            at = *parent;
        }
        names.iter().rev().collect()
    }
}

/// A regular file found by a scan: where it is below the root, and which
/// inode it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedFile {
    /// The tree node it became.
    pub node: cfs_format::NodeId,
    /// The directory it is in, in its [`SourceTree`]'s [`Dirs`].
    pub dir: DirId,
    /// Its name in that directory.
    pub name: Box<OsStr>,
    /// The inode the scan saw.
    pub seen: Identity,
}

/// Why a scanned file could not be opened again as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The file, or a directory on its path, was replaced since the scan.
    #[error("{}: changed since it was scanned ({what})", .path.display())]
    Changed {
        /// The file.
        path: PathBuf,
        /// What changed.
        what: String,
    },
    /// Opening or checking the file failed.
    #[error("could not {op} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The root of a scanned tree, kept open: every later read of its files goes
/// through this directory fd (see the module doc).
#[derive(Debug, Clone)]
pub struct SourceTree {
    path: PathBuf,
    dir: Arc<OwnedFd>,
    dirs: Arc<Dirs>,
}

impl SourceTree {
    /// A tree rooted at the open directory `dir`, found at `path`, with no
    /// directories below the root known yet.
    pub fn new(path: &Path, dir: OwnedFd) -> SourceTree {
        SourceTree {
            path: path.to_path_buf(),
            dir: Arc::new(dir),
            dirs: Arc::new(Dirs::default()),
        }
    }

    /// The same tree, its files' directories in `dirs`.
    pub fn with_dirs(self, dirs: Dirs) -> SourceTree {
        SourceTree {
            dirs: Arc::new(dirs),
            ..self
        }
    }

    /// The root's path, as given to the scan.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The root directory.
    pub fn dir(&self) -> &OwnedFd {
        &self.dir
    }

    /// The full path of a file below the root, for messages.
    pub fn display_path(&self, rel: &Path) -> PathBuf {
        self.path.join(rel)
    }

    /// The path of a scanned file relative to the root.
    pub fn rel(&self, file: &ScannedFile) -> PathBuf {
        self.dirs.path(file.dir).join(&*file.name)
    }

    /// The full path of a scanned file, for messages.
    pub fn file_path(&self, file: &ScannedFile) -> PathBuf {
        self.display_path(&self.rel(file))
    }

    /// Opens a scanned file for reading, beneath the root without following
    /// any symlink, and checks that it is the inode the scan saw, unchanged.
    /// Nothing has been read from the file when this returns.
    pub fn open(&self, file: &ScannedFile) -> Result<std::fs::File, SourceError> {
        let rel = self.rel(file);
        let path = || self.display_path(&rel);
        let fd =
            open_beneath(&self.dir, &rel, OFlags::empty()).map_err(|e| open_error(e, path()))?;
        let st = statx_fd(fd.as_fd()).map_err(|e| SourceError::Io {
            op: "stat",
            path: path(),
            source: e.into(),
        })?;
        if FileType::from_raw_mode(u32::from(st.stx_mode)) != FileType::RegularFile {
            return Err(SourceError::Changed {
                path: path(),
                what: "it is no longer a regular file".into(),
            });
        }
        if let Some(what) = file.seen.difference(&Identity::from_statx(&st)) {
            return Err(SourceError::Changed { path: path(), what });
        }
        // Reads block as usual again (a network or FUSE file system may
        // otherwise answer EAGAIN).
        rustix::fs::fcntl_setfl(&fd, OFlags::RDONLY).map_err(|e| SourceError::Io {
            op: "set flags of",
            path: path(),
            source: e.into(),
        })?;
        Ok(std::fs::File::from(fd))
    }

    /// Opens the directory `rel` below the root again (the scan does, to
    /// read a directory it queued), beneath the root without following any
    /// symlink, and checks that it is the inode `seen` (device and inode
    /// number: a directory's size and mtime change as entries come and go).
    pub fn open_dir(&self, rel: &Path, seen: &Identity) -> Result<OwnedFd, SourceError> {
        let path = || self.display_path(rel);
        let fd = if rel.as_os_str().is_empty() {
            rustix::io::fcntl_dupfd_cloexec(&*self.dir, 0)
        } else {
            open_beneath(&self.dir, rel, OFlags::DIRECTORY)
        }
        .map_err(|e| open_error(e, path()))?;
        let now = Identity::of(&fd).map_err(|e| SourceError::Io {
            op: "stat",
            path: path(),
            source: e.into(),
        })?;
        if !seen.same_inode(&now) {
            return Err(SourceError::Changed {
                path: path(),
                what: seen.difference(&now).unwrap_or_default(),
            });
        }
        Ok(fd)
    }
}

/// The error for an `open_beneath` of `path` that failed with `e`.
fn open_error(e: Errno, path: PathBuf) -> SourceError {
    let what = match e {
        Errno::LOOP | Errno::XDEV => "a symlink is now on its path",
        Errno::NOTDIR => "a directory on its path is no longer a directory",
        Errno::NOENT => "it is gone",
        e => {
            return SourceError::Io {
                op: "open",
                path,
                source: e.into(),
            }
        }
    };
    SourceError::Changed {
        path,
        what: what.into(),
    }
}

/// `openat2(dir, rel, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | extra,
/// RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, retried on `EAGAIN` (which
/// `openat2` returns when a concurrent rename may have raced the walk).
fn open_beneath(dir: &OwnedFd, rel: &Path, extra: OFlags) -> rustix::io::Result<OwnedFd> {
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(
            dir,
            rel,
            OFlags::RDONLY
                | OFlags::NOFOLLOW
                | OFlags::NONBLOCK
                | OFlags::NOCTTY
                | OFlags::CLOEXEC
                | extra,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
        ) {
            Err(Errno::AGAIN | Errno::INTR) if tries < 8 => tries += 1,
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn tree_with(name: &str, content: &[u8]) -> (tempfile::TempDir, SourceTree, ScannedFile) {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        let rel = PathBuf::from("d").join(name);
        std::fs::write(tmp.path().join(&rel), content).unwrap();
        let dir = rustix::fs::open(
            tmp.path(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        let seen = Identity::of(std::fs::File::open(tmp.path().join(&rel)).unwrap()).unwrap();
        let mut dirs = Dirs::default();
        let file = ScannedFile {
            node: cfs_format::NodeId::ROOT,
            dir: dirs.add(DirId::ROOT, OsStr::new("d")),
            name: OsStr::new(name).into(),
            seen,
        };
        let tree = SourceTree::new(tmp.path(), dir).with_dirs(dirs);
        assert_eq!(tree.rel(&file), rel);
        (tmp, tree, file)
    }

    #[test]
    fn paths_are_put_together_from_the_parents() {
        let mut dirs = Dirs::default();
        let a = dirs.add(DirId::ROOT, OsStr::new("a"));
        let b = dirs.add(a, OsStr::new("b"));
        let c = dirs.add(DirId::ROOT, OsStr::new("c"));
        let bd = dirs.add(b, OsStr::new("d"));
        assert_eq!(dirs.path(DirId::ROOT), PathBuf::new());
        assert_eq!(dirs.path(a), PathBuf::from("a"));
        assert_eq!(dirs.path(bd), PathBuf::from("a/b/d"));
        assert_eq!(dirs.path(c), PathBuf::from("c"));
    }

    #[test]
    fn opens_the_scanned_file() {
        let (_tmp, tree, file) = tree_with("f", b"hello");
        let mut s = String::new();
        tree.open(&file).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
    }

    #[test]
    fn a_swapped_file_is_refused_naming_it() {
        let (tmp, tree, file) = tree_with("f", b"hello");
        let p = tmp.path().join("d/f");
        // Kept alive, so the new file can't reuse its inode number.
        std::fs::rename(&p, tmp.path().join("old")).unwrap();
        std::fs::write(&p, b"other").unwrap();
        let e = tree.open(&file).unwrap_err();
        assert!(matches!(e, SourceError::Changed { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("d/f: changed since it was scanned (it is another file"),
            "{e}"
        );
    }

    #[test]
    fn symlinks_on_the_path_are_refused() {
        let (tmp, tree, file) = tree_with("f", b"hello");
        // The final name a symlink to the very same file: still refused.
        let p = tmp.path().join("d/f");
        std::fs::rename(&p, tmp.path().join("real")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("real"), &p).unwrap();
        let e = tree.open(&file).unwrap_err().to_string();
        assert!(e.contains("a symlink is now on its path"), "{e}");
        // An intermediate directory swapped for a symlink to a copy.
        std::fs::remove_file(&p).unwrap();
        std::fs::rename(tmp.path().join("real"), &p).unwrap();
        std::fs::rename(tmp.path().join("d"), tmp.path().join("d2")).unwrap();
        std::os::unix::fs::symlink("d2", tmp.path().join("d")).unwrap();
        let e = tree.open(&file).unwrap_err().to_string();
        assert!(e.contains("a symlink is now on its path"), "{e}");
    }

    #[test]
    fn a_queued_directory_is_reopened_only_as_the_inode_seen() {
        let (tmp, tree, _file) = tree_with("f", b"hello");
        let d = tmp.path().join("d");
        let seen = Identity::of(std::fs::File::open(&d).unwrap()).unwrap();
        // New entries change the size and mtime, not the inode: still fine.
        std::fs::write(d.join("g"), b"more").unwrap();
        tree.open_dir(Path::new("d"), &seen).unwrap();
        assert!(tree.open_dir(Path::new(""), &seen).is_err());
        // Swapped for another directory (the old one kept, so its inode
        // number can't be reused).
        std::fs::rename(&d, tmp.path().join("old")).unwrap();
        std::fs::create_dir(&d).unwrap();
        let e = tree
            .open_dir(Path::new("d"), &seen)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("d: changed since it was scanned (it is another file"),
            "{e}"
        );
        // Swapped for a symlink to the very same directory (`O_DIRECTORY |
        // O_NOFOLLOW` meets a symlink: ENOTDIR).
        std::fs::remove_dir(&d).unwrap();
        std::os::unix::fs::symlink("old", &d).unwrap();
        let e = tree
            .open_dir(Path::new("d"), &seen)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("d: changed since it was scanned (a directory on its path is no longer a directory)"),
            "{e}"
        );
    }

    #[test]
    fn a_modified_file_is_refused() {
        let (tmp, tree, file) = tree_with("f", b"hello");
        std::fs::write(tmp.path().join("d/f"), b"hello, longer").unwrap();
        let e = tree.open(&file).unwrap_err().to_string();
        assert!(e.contains("size was 5, is now 13"), "{e}");
    }

    #[test]
    fn a_fifo_in_its_place_fails_without_blocking() {
        let (tmp, tree, file) = tree_with("f", b"hello");
        let p = tmp.path().join("d/f");
        std::fs::remove_file(&p).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &p,
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let e = tree.open(&file).unwrap_err().to_string();
        assert!(e.contains("no longer a regular file"), "{e}");
    }
}
