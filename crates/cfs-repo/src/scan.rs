//! Directory scanning: a live tree into a [`cfs_format::Tree`], as C
//! `mkcomposefs DIR IMAGE` (composefs 1.0.x, `lcfs_build` +
//! `lcfs_node_set_from_content`) reads it.
//!
//! What is kept per inode: the full `st_mode`, uid, gid, `st_rdev`, size,
//! mtime (seconds and nanoseconds, or 0 with [`ScanOptions::use_epoch`]),
//! symlink targets as payload, and the xattrs ([`XattrMode`]).
//!
//! Regular files: an empty file stays empty (no digest, no payload). Any other
//! file gets its fs-verity digest and, like C's "by digest" mode, the payload
//! `ab/cdef…` (the digest's object path); files of at most
//! [`INLINE_CONTENT_MAX`] bytes also get their content inline, which the image
//! writer prefers over the payload (C does exactly this too). Digests are
//! computed in parallel on the rayon pool, streaming each file through
//! [`FsVerityHasher`]; no file is ever read whole into memory.
//!
//! Hard links: C `mkcomposefs` 1.0.x does not detect them (each name becomes
//! its own inode with `nlink` 1, see composefs issue #444), and bit-identical
//! output is the default here. [`ScanOptions::hardlinks`] turns detection on
//! (as the proposed `mkcomposefs --hardlinks` does): non-directories sharing
//! `(dev, ino)` become one node; the first name in breadth-first, sorted
//! order is the primary one and later names are `hardlink: true` entries.
//!
//! The walk is breadth-first over sorted names so that everything order-dependent
//! (which name of a hard link is primary) is deterministic.
//!
//! Nothing is ever opened by a path from outside the tree: everything goes
//! through the root directory fd kept in [`Scan::source`]. A directory's
//! entries are stat-ed (and opened `O_PATH | O_NOFOLLOW` for their xattrs)
//! relative to that directory's fd. A subdirectory is queued as its path
//! below the root and the inode `statx` saw, and opened when its turn comes
//! with `openat2(root, rel, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, then
//! checked to be that inode (device and inode number): so the walk holds
//! one directory fd at a time, however broad or deep the tree, and a
//! directory swapped or replaced by a symlink in the meantime fails the
//! scan. Every regular file is recorded as a [`ScannedFile`] (its
//! directory and name, inode, size, mtime) that is read later the same way
//! (see [`crate::source`]). No path is stored whole: each directory is
//! kept in [`crate::source::Dirs`] as its name and parent, and a path put
//! together when it is opened, so memory grows with the names, not with
//! their depth. No entry's path below the root may exceed [`PATH_MAX`]: a
//! longer one could not be opened, and is refused as it is found
//! ([`ScanError::PathTooLong`]).

use crate::source::{DirId, Dirs, Identity, ScannedFile, SourceError, SourceTree};
use cfs_format::fsverity::FsVerityHasher;
use cfs_format::tree::TreeError;
use cfs_format::{FileType, Node, NodeId, Stat, Timespec, Tree, Xattr};
use rayon::prelude::*;
use rustix::fs::{AtFlags, Mode, OFlags, StatxFlags};
use std::collections::{HashMap, VecDeque};
use std::ffi::{CStr, OsStr};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Regular files up to this size (and not empty) are stored inline in the image
/// (`LCFS_RECOMMENDED_INLINE_CONTENT_MAX`).
pub const INLINE_CONTENT_MAX: u64 = 64;

/// Which extended attributes to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XattrMode {
    /// Every xattr the kernel lists (C default).
    #[default]
    All,
    /// Only `user.*` xattrs (`--user-xattrs`).
    UserOnly,
    /// None at all (`--skip-xattrs`).
    None,
}

/// How to read the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScanOptions {
    /// Store every mtime as 0 (`--use-epoch`).
    pub use_epoch: bool,
    /// Which xattrs to read.
    pub xattrs: XattrMode,
    /// Leave out block and character devices (`--skip-devices`).
    pub skip_devices: bool,
    /// Detect hard links (not done by C `mkcomposefs` 1.0.x; see the module doc).
    pub hardlinks: bool,
    /// Read no file content: regular files are left without digest, payload
    /// and inline content and listed in [`Scan::unread`] instead, for a caller
    /// that hashes them while copying them into a store (one read per file).
    pub skip_content: bool,
}

/// The longest path the kernel resolves in one call, counting the
/// terminating NUL (`PATH_MAX` in `linux/limits.h`): no entry's path below
/// the scanned root may be longer than `PATH_MAX - 1` bytes, since its content
/// is read by that path (see [`crate::source`]).
pub const PATH_MAX: usize = 4096;

/// Why a directory could not be scanned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// A system call failed.
    #[error("could not {op} {}: {source}", .path.display())]
    Io {
        /// What was being done ("stat", "open", "read xattrs of", ...).
        op: &'static str,
        /// The file it was done to.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The source is not a directory.
    #[error("{}: not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// A file's size changed while its content was read.
    #[error("{}: size changed while reading (stat said {expected}, read {found})", .path.display())]
    SizeChanged {
        /// The file.
        path: PathBuf,
        /// Size from stat.
        expected: u64,
        /// Bytes read.
        found: u64,
    },
    /// A file or directory changed while it was scanned or read (replaced,
    /// swapped for a symlink, modified).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// An entry's path below the scanned root is too long to be opened
    /// through the root (longer than [`PATH_MAX`] `- 1` bytes).
    #[error(
        "{}: its path below the scanned root is {len} bytes, longer than the limit of {} (PATH_MAX)",
        shortened(.path),
        PATH_MAX - 1
    )]
    PathTooLong {
        /// The entry (full path; shortened in the message).
        path: PathBuf,
        /// The length of its path below the root, in bytes.
        len: usize,
    },
    /// A name the tree refuses (should not happen with names from the kernel).
    #[error("{}: {source}", .path.display())]
    Tree {
        /// The entry.
        path: PathBuf,
        /// Why.
        #[source]
        source: TreeError,
    },
}

/// A long path for a message: its first and last 80 bytes around the
/// number of bytes left out.
fn shortened(path: &Path) -> String {
    const KEEP: usize = 80;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() <= 2 * KEEP + 32 {
        return path.display().to_string();
    }
    format!(
        "{}[... {} bytes ...]{}",
        String::from_utf8_lossy(&bytes[..KEEP]),
        bytes.len() - 2 * KEEP,
        String::from_utf8_lossy(&bytes[bytes.len() - KEEP..])
    )
}

impl ScanError {
    fn io<'a>(
        op: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(rustix::io::Errno) -> ScanError + 'a {
        move |e| ScanError::Io {
            op,
            path: path.to_path_buf(),
            source: e.into(),
        }
    }
}

/// A scanned tree and where the content of each of its regular files lives.
#[derive(Debug, Clone)]
pub struct Scan {
    /// The tree, ready for the image writer.
    pub tree: Tree,
    /// The scanned root, kept open: every file is read through it.
    pub source: SourceTree,
    /// Regular files whose content is external (not inline, not empty):
    /// what a digest store must hold. Empty with [`ScanOptions::skip_content`].
    pub external: Vec<ScannedFile>,
    /// With [`ScanOptions::skip_content`]: every non-empty regular file
    /// whose content is still to be read (the node's `stat.size` is the size
    /// seen by the scan). Empty otherwise.
    pub unread: Vec<ScannedFile>,
}

/// Scans the directory at `root` into a tree.
pub fn scan(root: &Path, options: &ScanOptions) -> Result<Scan, ScanError> {
    let root_dir = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::NOTDIR => ScanError::NotADirectory(root.to_path_buf()),
        e => ScanError::io("open", root)(e),
    })?;
    let st = statx(root_dir.as_fd(), c"", AtFlags::EMPTY_PATH, root)?;
    let mut tree = Tree::new(node_from_stat(&st, options));
    if options.xattrs != XattrMode::None {
        tree.node_mut(NodeId::ROOT).xattrs = read_xattrs(&root_dir, options.xattrs, root)?;
    }

    let source = SourceTree::new(root, root_dir);

    let mut files: Vec<ScannedFile> = Vec::new();
    let mut dirs = Dirs::default();
    let mut links: HashMap<(u32, u32, u64), NodeId> = HashMap::new();
    // Directories still to read, by place in `dirs` and inode: each is
    // opened again by its path when its turn comes (one directory fd at a
    // time, however broad the tree), and must be the inode seen.
    let mut queue = VecDeque::from([(NodeId::ROOT, DirId::ROOT, Identity::from_statx(&st))]);
    while let Some((dir_id, dir, dir_seen)) = queue.pop_front() {
        let dir_rel = dirs.path(dir);
        let dir_fd = source.open_dir(&dir_rel, &dir_seen)?;
        let dir_path = source.display_path(&dir_rel);
        let mut names = read_names(&dir_fd, &dir_path)?;
        names.sort();
        for name in names {
            let name_os = OsStr::from_bytes(name.to_bytes());
            let path = dir_path.join(name_os);
            let len = dir_rel.join(name_os).as_os_str().len();
            if len >= PATH_MAX {
                return Err(ScanError::PathTooLong { path, len });
            }
            // With xattrs to read, the entry is opened O_PATH first and both
            // its stat and its xattrs come from that one inode.
            let path_fd = if options.xattrs == XattrMode::None {
                None
            } else {
                Some(
                    rustix::fs::openat(
                        dir_fd.as_fd(),
                        &name,
                        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(ScanError::io("open", &path))?,
                )
            };
            let st = match &path_fd {
                Some(fd) => statx(fd.as_fd(), c"", AtFlags::EMPTY_PATH, &path)?,
                None => statx(dir_fd.as_fd(), &name, AtFlags::SYMLINK_NOFOLLOW, &path)?,
            };
            let ftype = FileType::from_mode(u32::from(st.stx_mode));
            if options.skip_devices
                && matches!(ftype, Some(FileType::BlockDevice | FileType::CharDevice))
            {
                continue;
            }
            let is_dir = ftype == Some(FileType::Directory);
            let key = (st.stx_dev_major, st.stx_dev_minor, st.stx_ino);
            if options.hardlinks && !is_dir && st.stx_nlink > 1 {
                if let Some(&target) = links.get(&key) {
                    tree.link(dir_id, name.to_bytes(), target, true)
                        .map_err(|source| ScanError::Tree { path, source })?;
                    tree.node_mut(target).stat.nlink += 1;
                    continue;
                }
            }

            let mut node = node_from_stat(&st, options);
            if ftype == Some(FileType::Symlink) {
                let target = match &path_fd {
                    Some(fd) => rustix::fs::readlinkat(fd, c"", Vec::new()),
                    None => rustix::fs::readlinkat(dir_fd.as_fd(), &name, Vec::new()),
                }
                .map_err(ScanError::io("read link", &path))?;
                node.stat.size = target.as_bytes().len() as u64;
                node.payload = Some(target.into_bytes());
            }
            if let Some(fd) = &path_fd {
                node.xattrs = read_xattrs(fd, options.xattrs, &path)?;
            }
            let size = node.stat.size;
            let id = tree.add_node(node);
            tree.link(dir_id, name.to_bytes(), id, false)
                .map_err(|source| ScanError::Tree {
                    path: path.clone(),
                    source,
                })?;
            if options.hardlinks && !is_dir && st.stx_nlink > 1 {
                links.insert(key, id);
            }
            if is_dir {
                let sub = dirs.add(dir, name_os);
                queue.push_back((id, sub, Identity::from_statx(&st)));
            } else if ftype == Some(FileType::Regular) && size > 0 {
                files.push(ScannedFile {
                    node: id,
                    dir,
                    name: name_os.into(),
                    seen: Identity::from_statx(&st),
                });
            }
        }
    }

    set_dir_nlinks(&mut tree);
    let source = source.with_dirs(dirs);
    if options.skip_content {
        return Ok(Scan {
            tree,
            source,
            external: Vec::new(),
            unread: files,
        });
    }
    let contents = files
        .par_iter()
        .map(|f| read_content(&source, f).map(|c| (f.node, c)))
        .collect::<Result<Vec<_>, _>>()?;
    for (id, (digest, inline)) in contents {
        let node = tree.node_mut(id);
        node.payload = Some(digest.object_path().into_bytes());
        node.digest = Some(digest);
        node.content = inline;
    }
    let external = files
        .into_iter()
        .filter(|f| f.seen.size > INLINE_CONTENT_MAX)
        .collect();
    Ok(Scan {
        tree,
        source,
        external,
        unread: Vec::new(),
    })
}

/// The node for a stat result, before any content: C's `lcfs_load_node_from_file`.
fn node_from_stat(st: &rustix::fs::Statx, options: &ScanOptions) -> Node {
    let mtime = if options.use_epoch {
        Timespec::default()
    } else {
        Timespec {
            sec: st.stx_mtime.tv_sec,
            nsec: st.stx_mtime.tv_nsec,
        }
    };
    Node::new(Stat {
        mode: u32::from(st.stx_mode),
        uid: st.stx_uid,
        gid: st.stx_gid,
        // C starts every node at 1 and never copies st_nlink; directories
        // are fixed up below, hard links counted as they are found.
        nlink: 1,
        rdev: rustix::fs::makedev(st.stx_rdev_major, st.stx_rdev_minor),
        size: st.stx_size,
        mtime,
    })
}

/// Directory link counts: 2 plus the number of subdirectories, as the writer computes them.
fn set_dir_nlinks(tree: &mut Tree) {
    let counts: Vec<(NodeId, u32)> = tree
        .nodes()
        .filter(|(_, n)| n.file_type() == Some(FileType::Directory))
        .map(|(id, n)| {
            let subdirs = n
                .entries
                .iter()
                .filter(|e| tree.node(e.node).file_type() == Some(FileType::Directory))
                .count();
            (id, 2 + subdirs as u32)
        })
        .collect();
    for (id, nlink) in counts {
        tree.node_mut(id).stat.nlink = nlink;
    }
}

fn statx(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &CStr,
    flags: AtFlags,
    path: &Path,
) -> Result<rustix::fs::Statx, ScanError> {
    rustix::fs::statx(dir, name, flags, StatxFlags::BASIC_STATS)
        .map_err(ScanError::io("stat", path))
}

/// The names in a directory, without `.` and `..`.
fn read_names(dir: &OwnedFd, path: &Path) -> Result<Vec<std::ffi::CString>, ScanError> {
    let mut names = Vec::new();
    let entries = rustix::fs::Dir::read_from(dir).map_err(ScanError::io("read directory", path))?;
    for entry in entries {
        let entry = entry.map_err(ScanError::io("read directory", path))?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// Reads the xattrs of the file `fd` refers to (an `O_PATH` fd is fine), the
/// way C does: through `/proc/self/fd/N`, which reaches a symlink itself.
/// Sorted by name (the writer's canonical order).
fn read_xattrs(fd: &OwnedFd, which: XattrMode, path: &Path) -> Result<Vec<Xattr>, ScanError> {
    let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let list = fill_buffer(|buf| rustix::fs::listxattr(&proc, buf))
        .map_err(ScanError::io("list xattrs of", path))?;
    let mut xattrs = Vec::new();
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if which == XattrMode::UserOnly && !name.starts_with(b"user.") {
            continue;
        }
        let value = fill_buffer(|buf| rustix::fs::getxattr(&proc, name, buf))
            .map_err(ScanError::io("read xattrs of", path))?;
        xattrs.push(Xattr {
            name: name.to_vec(),
            value,
        });
    }
    xattrs.sort();
    Ok(xattrs)
}

/// Calls a size-returning syscall with a growing buffer until the result fits.
fn fill_buffer(
    mut call: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>,
) -> rustix::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match call(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) if buf.len() < (1 << 24) => {
                let len = buf.len() * 4;
                buf.resize(len, 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Streams a regular file through the fs-verity hasher; returns its digest and,
/// for a small file, its content.
fn read_content(
    source: &SourceTree,
    f: &ScannedFile,
) -> Result<(cfs_format::Digest, Option<Vec<u8>>), ScanError> {
    let file = source.open(f)?;
    let size = f.seen.size;
    let path = || source.file_path(f);
    let mut file = KeepSmall {
        file,
        kept: (size <= INLINE_CONTENT_MAX).then(Vec::new),
    };
    let mut hasher = FsVerityHasher::new();
    // At most one byte past the size scanned: a file its owner keeps
    // extending must fail, not be hashed for ever.
    let total = hasher
        .update_from((&mut file).take(size.saturating_add(1)))
        .map_err(|source| ScanError::Io {
            op: "read",
            path: path(),
            source,
        })?;
    if total > size {
        return Err(ScanError::Source(SourceError::Changed {
            path: path(),
            what: format!("it grew past the {size} bytes scanned"),
        }));
    }
    if total != size {
        return Err(ScanError::SizeChanged {
            path: path(),
            expected: size,
            found: total,
        });
    }
    let after = Identity::of(&file.file).map_err(ScanError::io("stat", &path()))?;
    if let Some(what) = f.seen.difference(&after) {
        return Err(ScanError::Source(SourceError::Changed {
            path: path(),
            what,
        }));
    }
    Ok((hasher.finish(), file.kept))
}

/// A file read through this keeps what it reads in `kept`, if that is
/// `Some`, while the total stays within [`INLINE_CONTENT_MAX`].
struct KeepSmall {
    file: std::fs::File,
    kept: Option<Vec<u8>>,
}

impl Read for KeepSmall {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if let Some(c) = self.kept.as_mut() {
            if c.len() as u64 + n as u64 <= INLINE_CONTENT_MAX {
                c.extend_from_slice(&buf[..n]);
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
