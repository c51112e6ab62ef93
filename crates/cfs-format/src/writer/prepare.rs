//! First pass of the writer: turn a [`Tree`] into the flat, breadth-first list
//! of inodes C `mkcomposefs` writes, with the overlayfs xattrs added.
//!
//! Mirrors, in order, what C does before laying out the image:
//! 1. the format version is raised to 1 when a whiteout (char device 0/0) is
//!    present and the range allows it;
//! 2. each node's own `trusted.overlay.*` xattrs are escaped as
//!    `trusted.overlay.overlay.*`; external regular files get `metacopy`
//!    (with the digest) and `redirect`; whiteouts become empty regular files
//!    marked with escaped whiteout xattrs, their directory marked too;
//! 3. the root is marked opaque and gets the 256 whiteout stubs `00`..`ff`
//!    (so that the object store's fan-out directories never show through);
//! 4. nodes are numbered breadth-first, children in name order, hard links
//!    skipped; directory link counts become 2 + subdirectories; xattrs sort by
//!    name; the smallest mtime becomes the build time.

use super::WriteError;
use crate::overlay::{self, Namespace};
use crate::tree::{mode, FileType, NodeId, Stat, Timespec, Tree, Xattr, MAX_SYMLINK_LEN};
use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};

/// Largest number of chunk index entries an external file may need: they must
/// fit in one block (`LCFS_MAX_NONINLINE_CHUNKS`).
pub(super) const MAX_NONINLINE_CHUNKS: u64 = 1024;
/// Largest inline file content (`LCFS_INLINE_CONTENT_MAX`).
pub(super) const INLINE_CONTENT_MAX: usize = 5000;

/// A directory entry as written: name and the target's index in breadth-first order.
pub(super) type Entry = (Vec<u8>, usize);

/// One inode as it will be written.
#[derive(Debug, Clone)]
pub(super) struct Inode {
    pub stat: Stat,
    pub file_type: FileType,
    /// Sorted by name, unique.
    pub xattrs: Vec<Xattr>,
    /// Symlink target.
    pub symlink: Option<Vec<u8>>,
    /// Inline content of a regular file.
    pub content: Option<Vec<u8>>,
    /// Directory entries including `.` and `..`, sorted by name: (name, inode index).
    pub entries: Vec<Entry>,
}

/// The prepared image: inodes in breadth-first order (index 0 is the root).
#[derive(Debug)]
pub(super) struct Prepared {
    pub version: u32,
    pub inodes: Vec<Inode>,
    pub build_time: Timespec,
    pub has_acl: bool,
}

struct Walk {
    /// Reachable nodes in depth-first pre-order, with their parent and path.
    order: Vec<NodeId>,
    parent: HashMap<NodeId, NodeId>,
    path: HashMap<NodeId, String>,
}

fn invalid(path: &str, reason: impl Into<String>) -> WriteError {
    WriteError::Invalid {
        path: path.to_string(),
        reason: reason.into(),
    }
}

/// Finds the nodes reachable through primary entries; checks that each is named once.
fn walk(tree: &Tree) -> Result<Walk, WriteError> {
    let mut w = Walk {
        order: Vec::new(),
        parent: HashMap::new(),
        path: HashMap::new(),
    };
    let root = tree.root();
    if tree.node(root).file_type() != Some(FileType::Directory) {
        return Err(invalid("/", "the root must be a directory"));
    }
    w.parent.insert(root, root);
    w.path.insert(root, "/".to_string());
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        w.order.push(id);
        let node = tree.node(id);
        let base = w.path[&id].clone();
        if node.file_type() != Some(FileType::Directory) && !node.entries.is_empty() {
            return Err(invalid(&base, "only directories can have entries"));
        }
        // Push in reverse so children are visited in name order.
        for e in node.entries.iter().rev() {
            let child_path = if base == "/" {
                format!("/{}", String::from_utf8_lossy(&e.name))
            } else {
                format!("{base}/{}", String::from_utf8_lossy(&e.name))
            };
            if e.node.index() >= tree.len() {
                return Err(invalid(
                    &child_path,
                    "entry names a node that does not exist",
                ));
            }
            if e.hardlink {
                continue;
            }
            if w.parent.contains_key(&e.node) {
                return Err(invalid(
                    &child_path,
                    "node has two primary names (a directory loop or an unmarked hard link)",
                ));
            }
            w.parent.insert(e.node, id);
            w.path.insert(e.node, child_path);
            stack.push(e.node);
        }
    }
    // Every hard link must name a node in the tree, and never a directory.
    for &id in &w.order {
        for e in &tree.node(id).entries {
            if !e.hardlink {
                continue;
            }
            let p = || {
                format!(
                    "{}/{}",
                    w.path[&id].trim_end_matches('/'),
                    String::from_utf8_lossy(&e.name)
                )
            };
            if !w.parent.contains_key(&e.node) {
                return Err(invalid(&p(), "hard link to a node outside the tree"));
            }
            if tree.node(e.node).file_type() == Some(FileType::Directory) {
                return Err(invalid(&p(), "hard link to a directory"));
            }
        }
    }
    Ok(w)
}

/// Chunk size bits for an external file of this size (C `erofs_compute_chunk_bitsize`).
pub(super) fn chunk_bits(size: u64) -> u32 {
    let bits = if size <= 1 {
        0
    } else {
        64 - (size - 1).leading_zeros()
    };
    let bits = bits.max(crate::erofs::BLOCK_BITS);
    bits.min(u32::from(crate::erofs::CHUNK_FORMAT_BLKBITS_MASK) + crate::erofs::BLOCK_BITS)
}

/// Number of chunk index entries for an external file of this size.
pub(super) fn chunk_count(size: u64) -> u64 {
    size.div_ceil(1u64 << chunk_bits(size))
}

fn set_xattr(xattrs: &mut Vec<Xattr>, name: &[u8], value: &[u8]) {
    match xattrs.iter_mut().find(|x| x.name == name) {
        Some(x) => x.value = value.to_vec(),
        None => xattrs.push(Xattr {
            name: name.to_vec(),
            value: value.to_vec(),
        }),
    }
}

pub(super) fn prepare(
    tree: &Tree,
    min_version: u32,
    max_version: u32,
) -> Result<Prepared, WriteError> {
    for v in [min_version, max_version] {
        if v > 1 {
            return Err(WriteError::UnsupportedVersion(v));
        }
    }
    let max_version = max_version.max(min_version);
    let w = walk(tree)?;

    let mut version = min_version;
    if version < 1
        && max_version >= 1
        && w.order.iter().any(|&id| {
            let stat = &tree.node(id).stat;
            overlay::is_whiteout(stat.mode, stat.rdev)
        })
    {
        version = 1;
    }

    // Working copies of the reachable nodes, keyed by their id.
    struct Work {
        stat: Stat,
        xattrs: Vec<Xattr>,
        symlink: Option<Vec<u8>>,
        content: Option<Vec<u8>>,
        /// (name, node, hardlink)
        entries: Vec<(Vec<u8>, NodeId, bool)>,
    }
    let mut work: HashMap<NodeId, Work> = HashMap::with_capacity(w.order.len() + 256);
    for &id in &w.order {
        let n = tree.node(id);
        let path = &w.path[&id];
        let Some(ft) = n.file_type() else {
            return Err(invalid(
                path,
                format!("invalid file mode {:o}", n.stat.mode),
            ));
        };
        // Later duplicates of a name replace earlier ones, as C's set_xattr does.
        let mut xattrs: Vec<Xattr> = Vec::with_capacity(n.xattrs.len() + 2);
        for x in &n.xattrs {
            check_xattr(path, x)?;
            set_xattr(&mut xattrs, &x.name, &x.value);
        }
        // Escape the user's own overlay xattrs.
        for x in &mut xattrs {
            if let Cow::Owned(escaped) = overlay::escape(Namespace::Trusted, &x.name) {
                x.name = escaped;
            }
        }
        let mut stat = n.stat;
        let mut symlink = None;
        let mut content = None;
        match ft {
            FileType::Symlink => {
                let target = n.payload.clone().unwrap_or_default();
                if target.is_empty() {
                    return Err(invalid(path, "symlink with an empty target"));
                }
                if target.len() > MAX_SYMLINK_LEN {
                    return Err(invalid(
                        path,
                        format!("symlink target longer than {MAX_SYMLINK_LEN} bytes"),
                    ));
                }
                stat.size = target.len() as u64;
                symlink = Some(target);
            }
            FileType::Regular => match &n.content {
                Some(c) if !c.is_empty() => {
                    if c.len() > INLINE_CONTENT_MAX {
                        return Err(invalid(
                            path,
                            format!("inline content over {INLINE_CONTENT_MAX} bytes"),
                        ));
                    }
                    stat.size = c.len() as u64;
                    content = Some(c.clone());
                }
                _ if stat.size > 0 => {
                    if chunk_count(stat.size) > MAX_NONINLINE_CHUNKS {
                        return Err(invalid(path, format!("file size {} is too big", stat.size)));
                    }
                    let metacopy: Vec<u8> = match &n.digest {
                        Some(d) => overlay::metacopy_value(d).to_vec(),
                        None => Vec::new(),
                    };
                    set_xattr(&mut xattrs, overlay::METACOPY, &metacopy);
                    if let Some(p) = n.payload.as_ref().filter(|p| !p.is_empty()) {
                        let mut redirect = b"/".to_vec();
                        redirect.extend_from_slice(p);
                        set_xattr(&mut xattrs, overlay::REDIRECT, &redirect);
                    }
                }
                _ => {}
            },
            _ => {}
        }
        let entries = n
            .entries
            .iter()
            .map(|e| (e.name.clone(), e.node, e.hardlink))
            .collect();
        work.insert(
            id,
            Work {
                stat,
                xattrs,
                symlink,
                content,
                entries,
            },
        );
    }

    // Whiteouts become escaped whiteouts: empty regular files, parent marked.
    for &id in &w.order {
        let stat = &work[&id].stat;
        if !overlay::is_whiteout(stat.mode, stat.rdev) {
            continue;
        }
        let node = work.get_mut(&id).expect("reachable");
        node.stat.size = 0;
        node.stat.mode = mode::S_IFREG | (node.stat.mode & !mode::S_IFMT);
        set_xattr(&mut node.xattrs, overlay::ESCAPED_WHITEOUT, b"");
        set_xattr(&mut node.xattrs, overlay::USERXATTR_WHITEOUT, b"");
        let parent = work.get_mut(&w.parent[&id]).expect("reachable");
        set_xattr(&mut parent.xattrs, overlay::ESCAPED_WHITEOUTS, b"");
        set_xattr(&mut parent.xattrs, overlay::USERXATTR_WHITEOUTS, b"");
        if version >= 1 {
            set_xattr(&mut parent.xattrs, overlay::ESCAPED_OPAQUE, b"x");
            set_xattr(&mut parent.xattrs, overlay::USERXATTR_OPAQUE, b"x");
        }
    }

    // The root: opaque, and whiteout stubs 00..ff where no such name exists.
    let root = tree.root();
    let mut next_id = tree.len() as u32;
    {
        let r = work.get_mut(&root).expect("root");
        set_xattr(&mut r.xattrs, overlay::OPAQUE, b"y");
    }
    let (root_stat, selinux) = {
        let r = &work[&root];
        (
            r.stat,
            r.xattrs
                .iter()
                .find(|x| x.name == b"security.selinux")
                .map(|x| x.value.clone()),
        )
    };
    let mut stubs = Vec::new();
    for i in 0..=255u8 {
        let name = format!("{i:02x}").into_bytes();
        if work[&root].entries.iter().any(|(n, _, _)| *n == name) {
            continue;
        }
        let id = NodeId(next_id);
        next_id += 1;
        let mut xattrs = Vec::new();
        if let Some(v) = &selinux {
            xattrs.push(Xattr {
                name: b"security.selinux".to_vec(),
                value: v.clone(),
            });
        }
        work.insert(
            id,
            Work {
                stat: Stat {
                    mode: mode::S_IFCHR | 0o644,
                    uid: root_stat.uid,
                    gid: root_stat.gid,
                    nlink: 1,
                    rdev: 0,
                    size: 0,
                    mtime: root_stat.mtime,
                },
                xattrs,
                symlink: None,
                content: None,
                entries: Vec::new(),
            },
        );
        stubs.push((name, id, false));
    }
    {
        let r = work.get_mut(&root).expect("root");
        r.entries.extend(stubs);
        r.entries.sort_by(|a, b| a.0.cmp(&b.0));
    }

    // Breadth-first numbering.
    let mut index: HashMap<NodeId, usize> = HashMap::with_capacity(work.len());
    let mut bfs = Vec::with_capacity(work.len());
    let mut queue = VecDeque::from([root]);
    while let Some(id) = queue.pop_front() {
        index.insert(id, bfs.len());
        bfs.push(id);
        for (_, child, hardlink) in &work[&id].entries {
            if !hardlink {
                queue.push_back(*child);
            }
        }
    }

    let mut build_time = work[&root].stat.mtime;
    let mut has_acl = false;
    let mut inodes = Vec::with_capacity(bfs.len());
    for &id in &bfs {
        let wk = work.remove(&id).expect("each node once");
        let file_type = wk.stat.file_type().expect("checked above");
        let mut stat = wk.stat;
        let mut xattrs = wk.xattrs;
        xattrs.sort_by(|a, b| a.name.cmp(&b.name));
        build_time = build_time.min(stat.mtime);
        has_acl |= xattrs
            .iter()
            .any(|x| x.name == b"system.posix_acl_access" || x.name == b"system.posix_acl_default");
        let mut entries = Vec::new();
        if file_type == FileType::Directory {
            let mut subdirs = 0u32;
            for (name, child, hardlink) in &wk.entries {
                // Hard links are never directories (checked in walk).
                if !hardlink && tree_type(tree, *child) == Some(FileType::Directory) {
                    subdirs += 1;
                }
                entries.push((name.clone(), index[child]));
            }
            stat.nlink = 2 + subdirs;
            let me = index[&id];
            let parent = index[&w.parent[&id]];
            for (name, target) in [(&b"."[..], me), (&b".."[..], parent)] {
                let pos = entries
                    .binary_search_by(|(n, _)| n.as_slice().cmp(name))
                    .unwrap_or_else(|p| p);
                entries.insert(pos, (name.to_vec(), target));
            }
        }
        inodes.push(Inode {
            stat,
            file_type,
            xattrs,
            symlink: wk.symlink,
            content: wk.content,
            entries,
        });
    }
    Ok(Prepared {
        version,
        inodes,
        build_time,
        has_acl,
    })
}

impl Prepared {
    /// The path of inode `i`, for errors found after [`prepare`]: climbs from
    /// the directory naming it (found by a scan, so only call it on failure).
    pub(super) fn path_of(&self, mut i: usize) -> String {
        let mut names: Vec<&[u8]> = Vec::new();
        while i != 0 {
            let named = self.inodes.iter().enumerate().find_map(|(dir, ino)| {
                ino.entries
                    .iter()
                    .find(|(n, t)| *t == i && n != b"." && n != b"..")
                    .map(|(n, _)| (dir, n.as_slice()))
            });
            let Some((dir, name)) = named else { break };
            names.push(name);
            i = dir;
        }
        let names: Vec<_> = names
            .iter()
            .rev()
            .map(|n| String::from_utf8_lossy(n))
            .collect();
        format!("/{}", names.join("/"))
    }
}

/// The type of an original tree node; whiteout stubs (ids past the tree) are char devices.
fn tree_type(tree: &Tree, id: NodeId) -> Option<FileType> {
    if id.index() < tree.len() {
        tree.node(id).file_type()
    } else {
        Some(FileType::CharDevice)
    }
}

fn check_xattr(path: &str, x: &Xattr) -> Result<(), WriteError> {
    if x.name.is_empty() || x.name.len() > 255 || x.name.contains(&0) {
        return Err(invalid(
            path,
            format!("invalid xattr name {:?}", String::from_utf8_lossy(&x.name)),
        ));
    }
    if x.value.len() > usize::from(u16::MAX) {
        return Err(invalid(
            path,
            format!(
                "xattr {} value longer than 65535 bytes",
                String::from_utf8_lossy(&x.name)
            ),
        ));
    }
    Ok(())
}
