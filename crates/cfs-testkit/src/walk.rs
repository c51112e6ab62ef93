//! What a directory tree holds, as the tests compare it: a source tree, a
//! mount of its image in any mode, an image's own tree. One walker for all,
//! so that two walks differ only where the trees do.

use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read as _;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a walk records of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `st_mode`: type and permissions.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count.
    pub nlink: u64,
    /// Device number of character and block devices, else 0.
    pub rdev: u64,
    /// Size of non-directories (directory sizes are layout, not content).
    pub size: Option<u64>,
    /// Modification time: seconds and nanoseconds.
    pub mtime: (i64, i64),
    /// A symlink's target.
    pub symlink: Option<OsString>,
    /// Every xattr, by name.
    pub xattrs: BTreeMap<OsString, Vec<u8>>,
    /// A regular file's content: its sha256 in hex, or the error reading it
    /// (`None` when the walk was asked not to read contents).
    pub content: Option<Result<String, String>>,
    /// For a hard link: the first path (in walk order) of the same inode.
    pub link_of: Option<PathBuf>,
}

/// Whether a walk reads file contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contents {
    /// Metadata only.
    Skip,
    /// The sha256 of every regular file.
    Hash,
}

/// A walk that records what failed instead of stopping: per path, the entry
/// or the error that kept it from being read.
pub type Recorded = BTreeMap<PathBuf, Result<Entry, String>>;

/// lstat-walks `root`, keyed by path relative to it (`""` is the root), in
/// sorted order; panics on the first error (use [`walk_recording`] where
/// errors are expected).
pub fn walk(root: &Path) -> BTreeMap<PathBuf, Entry> {
    walk_recording(root, Contents::Hash)
        .into_iter()
        .map(|(p, e)| {
            let e = e.unwrap_or_else(|e| panic!("{}: {e}", root.join(&p).display()));
            if let Some(Err(e)) = &e.content {
                panic!("read {}: {e}", root.join(&p).display());
            }
            (p, e)
        })
        .collect()
}

/// Walks `root` like [`walk`], recording errors instead of failing: a path
/// that can't be read maps to its error, a directory that can't be listed
/// has no children in the walk.
pub fn walk_recording(root: &Path, contents: Contents) -> Recorded {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), PathBuf> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        let entry = entry(&path, contents).map(|(m, mut e)| {
            if m.is_dir() {
                match list(&path) {
                    Ok(names) => stack.extend(names.into_iter().rev().map(|n| rel.join(n))),
                    Err(err) => e.content = Some(Err(err)),
                }
            } else if m.nlink() > 1 {
                let first = inodes.entry((m.dev(), m.ino())).or_insert(rel.clone());
                e.link_of = (*first != rel).then(|| first.clone());
            }
            e
        });
        out.insert(rel, entry);
    }
    out
}

/// A directory's names, sorted.
fn list(path: &Path) -> Result<Vec<OsString>, String> {
    let mut names = std::fs::read_dir(path)
        .and_then(|d| {
            d.map(|e| e.map(|e| e.file_name()))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| format!("readdir: {e}"))?;
    names.sort();
    Ok(names)
}

/// One path's entry (without `link_of`) and its metadata.
fn entry(path: &Path, contents: Contents) -> Result<(std::fs::Metadata, Entry), String> {
    let m = std::fs::symlink_metadata(path).map_err(|e| format!("lstat: {e}"))?;
    let ft = m.file_type();
    let symlink = if ft.is_symlink() {
        Some(
            std::fs::read_link(path)
                .map_err(|e| format!("readlink: {e}"))?
                .into_os_string(),
        )
    } else {
        None
    };
    let e = Entry {
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        nlink: m.nlink(),
        rdev: if ft.is_char_device() || ft.is_block_device() {
            m.rdev()
        } else {
            0
        },
        size: (!ft.is_dir()).then(|| m.size()),
        mtime: (m.mtime(), m.mtime_nsec()),
        symlink,
        xattrs: xattrs_of(path)?,
        content: (contents == Contents::Hash && ft.is_file()).then(|| sha256_file(path)),
        link_of: None,
    };
    Ok((m, e))
}

/// All xattrs of a path, not following symlinks, or the first error.
pub fn xattrs_of(path: &Path) -> Result<BTreeMap<OsString, Vec<u8>>, String> {
    xattrs_listed(path)?
        .into_iter()
        .map(|(name, value)| Ok((OsString::from_vec(name), value?)))
        .collect()
}

/// Each listed xattr name with its value, or the error reading it.
pub type Listed = BTreeMap<Vec<u8>, Result<Vec<u8>, String>>;

/// Every xattr name a path lists (not following symlinks), each with its
/// value or the error reading it: the kernel lists some names it then
/// refuses to read (`user.*` on a symlink or device, a malformed POSIX ACL).
/// Buffers are the kernel's maximum (64 KiB).
pub fn xattrs_listed(path: &Path) -> Result<Listed, String> {
    let mut out = BTreeMap::new();
    let mut list = vec![0u8; 1 << 16];
    let n = rustix::fs::llistxattr(path, &mut list[..]).map_err(|e| format!("listxattr: {e}"))?;
    for name in list[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut v = vec![0u8; 1 << 16];
        let value = rustix::fs::lgetxattr(path, name, &mut v[..])
            .map(|n| {
                v.truncate(n);
                v
            })
            .map_err(|e| format!("getxattr {}: {e}", String::from_utf8_lossy(name)));
        out.insert(name.to_vec(), value);
    }
    Ok(out)
}

/// sha256 of a file's content in hex, or the error reading it (its errno
/// name, so that two walks failing alike compare equal).
pub fn sha256_file(path: &Path) -> Result<String, String> {
    let mut f = std::fs::File::open(path).map_err(|e| errno_of(&e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) => return Err(errno_of(&e)),
        }
    }
    Ok(crate::conformance::hex(&h.finalize()))
}

fn errno_of(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => rustix::io::Errno::from_raw_os_error(n).to_string(),
        None => e.to_string(),
    }
}

/// sha256 of bytes, in hex (as [`Entry::content`] holds it).
pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::conformance::sha256_hex(bytes)
}

/// [`walk`] on another thread, failing the test after `limit`.
pub fn walk_bounded(root: &Path, limit: Duration) -> BTreeMap<PathBuf, Entry> {
    let root = root.to_owned();
    crate::mounts::bounded(limit, "a walk", move || walk(&root))
}

/// [`walk_recording`] on another thread, failing the test after `limit`.
pub fn walk_recording_bounded(root: &Path, contents: Contents, limit: Duration) -> Recorded {
    let root = root.to_owned();
    crate::mounts::bounded(limit, "a walk", move || walk_recording(&root, contents))
}

/// The differences between two walks, one readable line each, `want`
/// being the reference.
pub fn diff<T: PartialEq + std::fmt::Debug>(
    want: &BTreeMap<PathBuf, T>,
    got: &BTreeMap<PathBuf, T>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (p, w) in want {
        match got.get(p) {
            None => out.push(format!("{}: missing", p.display())),
            Some(g) if g != w => out.push(format!("{}:\n  want {w:?}\n  got  {g:?}", p.display())),
            Some(_) => {}
        }
    }
    for p in got.keys().filter(|p| !want.contains_key(*p)) {
        out.push(format!("{}: not expected", p.display()));
    }
    out
}

/// Fails with the first differences between two walks.
pub fn assert_same<T: PartialEq + std::fmt::Debug>(
    what: &str,
    want: &BTreeMap<PathBuf, T>,
    got: &BTreeMap<PathBuf, T>,
) {
    let d = diff(want, got);
    assert!(
        d.is_empty(),
        "{what}: {} differences, the first:\n{}",
        d.len(),
        d.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// Sets an xattr on a path (not following symlinks).
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", path.display()));
}

/// Makes a special file (`kind`: fifo, device, socket node).
pub fn mknod(path: &Path, kind: rustix::fs::FileType, mode: u32, dev: u64) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        kind,
        rustix::fs::Mode::from_raw_mode(mode),
        dev,
    )
    .unwrap_or_else(|e| panic!("mknod {}: {e}", path.display()));
}

/// The object names (`ab/cdef…`) in an object directory.
pub fn objects_in(dir: &Path) -> std::collections::BTreeSet<PathBuf> {
    let mut out = std::collections::BTreeSet::new();
    for fan in std::fs::read_dir(dir).unwrap() {
        let fan = fan.unwrap();
        if fan.file_type().unwrap().is_dir() {
            for object in std::fs::read_dir(fan.path()).unwrap() {
                out.insert(Path::new(&fan.file_name()).join(object.unwrap().file_name()));
            }
        }
    }
    out
}
