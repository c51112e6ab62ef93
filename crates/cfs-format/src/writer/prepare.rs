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
use crate::tree::{
    device_fits_image, mode, set_xattr, FileType, Node, NodeId, Stat, Timespec, Tree, Xattr,
    MAX_DEVICE_MAJOR, MAX_DEVICE_MINOR, MAX_INLINE_CONTENT_LEN, MAX_SYMLINK_LEN,
    MAX_XATTR_NAME_LEN, MAX_XATTR_VALUE_LEN,
};
use std::borrow::Cow;
use std::collections::VecDeque;

/// Largest number of chunk index entries an external file may need: they must
/// fit in one block (`LCFS_MAX_NONINLINE_CHUNKS`).
pub(super) const MAX_NONINLINE_CHUNKS: u64 = 1024;

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
    /// Reachable nodes in depth-first pre-order, with their parent. Paths
    /// are not kept (they would cost the square of the depth): errors
    /// rebuild the one they name with [`Walk::path`].
    order: Vec<NodeId>,
    /// Parent of each node by index ([`UNSET`] if unreachable); the root is its own.
    parent: Vec<u32>,
}

/// No node: an unset slot of a table indexed by node.
const UNSET: u32 = u32::MAX;

impl Walk {
    /// The parent of a reachable node (the root's is the root).
    fn parent_of(&self, id: NodeId) -> Option<NodeId> {
        self.parent
            .get(id.index())
            .filter(|&&p| p != UNSET)
            .map(|&p| NodeId(p))
    }

    /// The path of a reachable node, climbing its parents (for errors only).
    fn path(&self, tree: &Tree, mut id: NodeId) -> String {
        let mut names: Vec<&[u8]> = Vec::new();
        while let Some(parent) = self.parent_of(id).filter(|&p| p != id) {
            let entries = &tree.node(parent).entries;
            match entries.iter().find(|e| e.node == id && !e.hardlink) {
                Some(e) => names.push(&e.name),
                None => break,
            }
            id = parent;
        }
        join_path(names.iter().rev().copied())
    }

    /// The path of the entry `name` of the reachable directory `dir`.
    fn child_path(&self, tree: &Tree, dir: NodeId, name: &[u8]) -> String {
        let base = self.path(tree, dir);
        format!(
            "{}/{}",
            base.trim_end_matches('/'),
            String::from_utf8_lossy(name)
        )
    }
}

/// `/a/b` from the names `a`, `b`; `/` from none.
fn join_path<'a>(names: impl Iterator<Item = &'a [u8]>) -> String {
    let mut out = String::new();
    for n in names {
        out.push('/');
        out.push_str(&String::from_utf8_lossy(n));
    }
    if out.is_empty() {
        out.push('/');
    }
    out
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
        parent: vec![UNSET; tree.len()],
    };
    let root = tree.root();
    if tree.node(root).file_type() != Some(FileType::Directory) {
        return Err(invalid("/", "the root must be a directory"));
    }
    w.parent[root.index()] = root.0;
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        w.order.push(id);
        let node = tree.node(id);
        if node.file_type() != Some(FileType::Directory) && !node.entries.is_empty() {
            return Err(invalid(
                &w.path(tree, id),
                "only directories can have entries",
            ));
        }
        // Push in reverse so children are visited in name order.
        for e in node.entries.iter().rev() {
            if e.node.index() >= tree.len() {
                return Err(invalid(
                    &w.child_path(tree, id, &e.name),
                    "entry names a node that does not exist",
                ));
            }
            if e.hardlink {
                continue;
            }
            if w.parent_of(e.node).is_some() {
                return Err(invalid(
                    &w.child_path(tree, id, &e.name),
                    "node has two primary names (a directory loop or an unmarked hard link)",
                ));
            }
            w.parent[e.node.index()] = id.0;
            stack.push(e.node);
        }
    }
    check_hard_links(tree, &w)?;
    Ok(w)
}

/// Every hard link must name a node in the tree, and never a directory.
fn check_hard_links(tree: &Tree, w: &Walk) -> Result<(), WriteError> {
    for &id in &w.order {
        for e in &tree.node(id).entries {
            if !e.hardlink {
                continue;
            }
            let p = || w.child_path(tree, id, &e.name);
            if w.parent_of(e.node).is_none() {
                return Err(invalid(&p(), "hard link to a node outside the tree"));
            }
            if tree.node(e.node).file_type() == Some(FileType::Directory) {
                return Err(invalid(&p(), "hard link to a directory"));
            }
        }
    }
    Ok(())
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

/// Prepares `tree` for writing as a format `min_version`..=`max_version` image.
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
    let w = walk(tree)?;
    let version = format_version(tree, &w, min_version, max_version.max(min_version));
    let mut work = Works(Vec::with_capacity(tree.len() + 256));
    work.0.resize_with(tree.len(), || None);
    for &id in &w.order {
        let work_of = work_node(tree, id).map_err(|reason| invalid(&w.path(tree, id), reason))?;
        work.0[id.index()] = Some(work_of);
    }
    escape_whiteouts(&mut work, &w, version);
    add_root_stubs(tree, &mut work);
    let bfs = breadth_first(&work, tree.root());
    let (inodes, build_time, has_acl) = inodes(tree, &w, work, &bfs);
    Ok(Prepared {
        version,
        inodes,
        build_time,
        has_acl,
    })
}

/// A reachable node (or a root whiteout stub) on its way to becoming an [`Inode`].
struct Work<'t> {
    stat: Stat,
    xattrs: Vec<Xattr>,
    symlink: Option<Vec<u8>>,
    content: Option<Vec<u8>>,
    /// (name, node, hardlink); names borrowed from the tree.
    entries: Vec<(&'t [u8], NodeId, bool)>,
}

/// The [`Work`] of each node, by node index; root whiteout stubs after the
/// tree's own nodes. (A table, not a map: it is built for every node.)
struct Works<'t>(Vec<Option<Work<'t>>>);

impl<'t> Works<'t> {
    fn get(&self, id: NodeId) -> &Work<'t> {
        self.0[id.index()].as_ref().expect("a reachable node")
    }

    fn get_mut(&mut self, id: NodeId) -> &mut Work<'t> {
        self.0[id.index()].as_mut().expect("a reachable node")
    }

    fn take(&mut self, id: NodeId) -> Work<'t> {
        self.0[id.index()].take().expect("each node once")
    }
}

/// The names `00` to `ff` of the root's whiteout stubs.
const STUB_NAMES: [[u8; 2]; 256] = {
    let hex = b"0123456789abcdef";
    let mut names = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        names[i] = [hex[i >> 4], hex[i & 15]];
        i += 1;
    }
    names
};

/// Step 1: the format version is `min`, raised to 1 when a whiteout is
/// present and `max` allows it.
fn format_version(tree: &Tree, w: &Walk, min: u32, max: u32) -> u32 {
    let has_whiteout = w.order.iter().any(|&id| {
        let stat = &tree.node(id).stat;
        overlay::is_whiteout(stat.mode, stat.rdev)
    });
    if min < 1 && max >= 1 && has_whiteout {
        1
    } else {
        min
    }
}

/// Step 2 for one node: its xattrs checked and escaped, then what its type
/// adds (a symlink's target; a regular file's inline content, or its
/// `metacopy` and `redirect`).
fn work_node(tree: &Tree, id: NodeId) -> Result<Work<'_>, String> {
    let n = tree.node(id);
    let Some(ft) = n.file_type() else {
        return Err(format!("invalid file mode {:o}", n.stat.mode));
    };
    let mut work = Work {
        stat: n.stat,
        xattrs: own_xattrs(n)?,
        symlink: None,
        content: None,
        entries: n
            .entries
            .iter()
            .map(|e| (e.name.as_slice(), e.node, e.hardlink))
            .collect(),
    };
    match ft {
        FileType::Symlink => {
            let target = n.payload.clone().unwrap_or_default();
            if target.is_empty() {
                return Err("symlink with an empty target".into());
            }
            if target.len() > MAX_SYMLINK_LEN {
                return Err(format!(
                    "symlink target longer than {MAX_SYMLINK_LEN} bytes"
                ));
            }
            work.stat.size = target.len() as u64;
            work.symlink = Some(target);
        }
        FileType::Regular => regular_file(n, &mut work)?,
        FileType::CharDevice | FileType::BlockDevice if !device_fits_image(n.stat.rdev) => {
            return Err(format!(
                "device number {:#x} does not fit an image (major at most {MAX_DEVICE_MAJOR}, minor at most {MAX_DEVICE_MINOR})",
                n.stat.rdev
            ));
        }
        _ => {}
    }
    Ok(work)
}

/// A node's xattrs, checked, later duplicates of a name replacing earlier
/// ones (as C's `set_xattr` does), the user's own overlay xattrs escaped.
fn own_xattrs(n: &Node) -> Result<Vec<Xattr>, String> {
    let mut xattrs: Vec<Xattr> = Vec::with_capacity(n.xattrs.len() + 2);
    for x in &n.xattrs {
        check_xattr(x)?;
        set_xattr(&mut xattrs, &x.name, &x.value);
    }
    for x in &mut xattrs {
        if let Cow::Owned(escaped) = overlay::escape(Namespace::Trusted, &x.name) {
            x.name = escaped;
        }
    }
    Ok(xattrs)
}

/// A regular file: non-empty inline content stays in the image; otherwise a
/// non-empty file gets `metacopy` (with its digest, if known) and, with a
/// payload, the `redirect` to its object.
fn regular_file(n: &Node, work: &mut Work) -> Result<(), String> {
    match &n.content {
        Some(c) if !c.is_empty() => {
            if c.len() > MAX_INLINE_CONTENT_LEN {
                return Err(format!(
                    "inline content over {MAX_INLINE_CONTENT_LEN} bytes"
                ));
            }
            work.stat.size = c.len() as u64;
            work.content = Some(c.clone());
        }
        _ if work.stat.size > 0 => {
            let size = work.stat.size;
            if chunk_count(size) > MAX_NONINLINE_CHUNKS {
                return Err(format!("file size {size} is too big"));
            }
            let metacopy: Vec<u8> = match &n.digest {
                Some(d) => overlay::metacopy_value(d).to_vec(),
                None => Vec::new(),
            };
            set_xattr(&mut work.xattrs, overlay::METACOPY, &metacopy);
            if let Some(p) = n.payload.as_ref().filter(|p| !p.is_empty()) {
                let mut redirect = b"/".to_vec();
                redirect.extend_from_slice(p);
                set_xattr(&mut work.xattrs, overlay::REDIRECT, &redirect);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Step 2 for whiteouts: each becomes an escaped whiteout, an empty regular
/// file, and its directory is marked as holding whiteouts (and, in format 1,
/// as opaque).
fn escape_whiteouts(work: &mut Works<'_>, w: &Walk, version: u32) {
    for &id in &w.order {
        let stat = &work.get(id).stat;
        if !overlay::is_whiteout(stat.mode, stat.rdev) {
            continue;
        }
        let node = work.get_mut(id);
        node.stat.size = 0;
        node.stat.mode = mode::S_IFREG | (node.stat.mode & !mode::S_IFMT);
        set_xattr(&mut node.xattrs, overlay::ESCAPED_WHITEOUT, b"");
        set_xattr(&mut node.xattrs, overlay::USERXATTR_WHITEOUT, b"");
        let parent = work.get_mut(w.parent_of(id).expect("reachable"));
        set_xattr(&mut parent.xattrs, overlay::ESCAPED_WHITEOUTS, b"");
        set_xattr(&mut parent.xattrs, overlay::USERXATTR_WHITEOUTS, b"");
        if version >= 1 {
            set_xattr(&mut parent.xattrs, overlay::ESCAPED_OPAQUE, b"x");
            set_xattr(&mut parent.xattrs, overlay::USERXATTR_OPAQUE, b"x");
        }
    }
}

/// Step 3: the root is marked opaque and gets a whiteout stub (a char device
/// 0/0 with the root's owner, mtime and SELinux label) for each name `00` to
/// `ff` it does not have. Stubs get the ids after the tree's own.
fn add_root_stubs(tree: &Tree, work: &mut Works<'_>) {
    let root = tree.root();
    let r = work.get_mut(root);
    set_xattr(&mut r.xattrs, overlay::OPAQUE, b"y");
    let root_stat = r.stat;
    let selinux = r
        .xattrs
        .iter()
        .find(|x| x.name == b"security.selinux")
        .map(|x| x.value.clone());
    let mut stubs = Vec::new();
    for name in &STUB_NAMES {
        if work.get(root).entries.iter().any(|(n, _, _)| *n == name) {
            continue;
        }
        let id = NodeId(work.0.len() as u32);
        work.0
            .push(Some(whiteout_stub(&root_stat, selinux.as_deref())));
        stubs.push((&name[..], id, false));
    }
    let r = work.get_mut(root);
    r.entries.extend(stubs);
    r.entries.sort_by(|a, b| a.0.cmp(b.0));
}

/// A root whiteout stub: a char device 0/0 with the root's owner and mtime,
/// and its SELinux label if it has one.
fn whiteout_stub(root: &Stat, selinux: Option<&[u8]>) -> Work<'static> {
    Work {
        stat: Stat {
            mode: mode::S_IFCHR | 0o644,
            uid: root.uid,
            gid: root.gid,
            nlink: 1,
            rdev: 0,
            size: 0,
            mtime: root.mtime,
        },
        xattrs: selinux
            .map(|v| Xattr {
                name: b"security.selinux".to_vec(),
                value: v.to_vec(),
            })
            .into_iter()
            .collect(),
        symlink: None,
        content: None,
        entries: Vec::new(),
    }
}

/// Step 4: the nodes breadth-first from the root, children in name order,
/// hard links skipped; with each node's index in that order.
fn breadth_first(work: &Works<'_>, root: NodeId) -> BreadthFirst {
    let mut index = vec![UNSET; work.0.len()];
    let mut order = Vec::with_capacity(work.0.len());
    let mut queue = VecDeque::from([root]);
    while let Some(id) = queue.pop_front() {
        index[id.index()] = order.len() as u32;
        order.push(id);
        for (_, child, hardlink) in &work.get(id).entries {
            if !hardlink {
                queue.push_back(*child);
            }
        }
    }
    BreadthFirst { order, index }
}

/// The breadth-first numbering of the nodes to write.
struct BreadthFirst {
    order: Vec<NodeId>,
    /// Each node's place in `order`, by node index.
    index: Vec<u32>,
}

impl BreadthFirst {
    fn index_of(&self, id: NodeId) -> usize {
        self.index[id.index()] as usize
    }
}

/// Step 4, last: the inodes in breadth-first order, xattrs sorted by name,
/// directory entries with `.` and `..` and link counts of 2 + subdirectories;
/// with the build time (the smallest mtime) and whether any ACL is present.
fn inodes(
    tree: &Tree,
    w: &Walk,
    mut work: Works<'_>,
    bfs: &BreadthFirst,
) -> (Vec<Inode>, Timespec, bool) {
    let mut build_time = work.get(tree.root()).stat.mtime;
    let mut has_acl = false;
    let mut inodes = Vec::with_capacity(bfs.order.len());
    for &id in &bfs.order {
        let wk = work.take(id);
        let file_type = wk.stat.file_type().expect("checked above");
        let mut stat = wk.stat;
        let mut xattrs = wk.xattrs;
        xattrs.sort_by(|a, b| a.name.cmp(&b.name));
        build_time = build_time.min(stat.mtime);
        has_acl |= xattrs
            .iter()
            .any(|x| x.name == b"system.posix_acl_access" || x.name == b"system.posix_acl_default");
        let entries = if file_type == FileType::Directory {
            let parent = w.parent_of(id).expect("reachable");
            let (entries, subdirs) = dir_entries(tree, &wk.entries, bfs, id, parent);
            stat.nlink = 2 + subdirs;
            entries
        } else {
            Vec::new()
        };
        inodes.push(Inode {
            stat,
            file_type,
            xattrs,
            symlink: wk.symlink,
            content: wk.content,
            entries,
        });
    }
    (inodes, build_time, has_acl)
}

/// A directory's entries as written, `.` and `..` included, sorted by name;
/// and how many of them are subdirectories (not counting `.` and `..`).
fn dir_entries(
    tree: &Tree,
    named: &[(&[u8], NodeId, bool)],
    bfs: &BreadthFirst,
    dir: NodeId,
    parent: NodeId,
) -> (Vec<Entry>, u32) {
    let mut subdirs = 0u32;
    let mut entries = Vec::with_capacity(named.len() + 2);
    for (name, child, hardlink) in named {
        // Hard links are never directories (checked in walk).
        if !hardlink && tree_type(tree, *child) == Some(FileType::Directory) {
            subdirs += 1;
        }
        entries.push((name.to_vec(), bfs.index_of(*child)));
    }
    for (name, target) in [
        (&b"."[..], bfs.index_of(dir)),
        (&b".."[..], bfs.index_of(parent)),
    ] {
        let pos = entries
            .binary_search_by(|(n, _)| n.as_slice().cmp(name))
            .unwrap_or_else(|p| p);
        entries.insert(pos, (name.to_vec(), target));
    }
    (entries, subdirs)
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

fn check_xattr(x: &Xattr) -> Result<(), String> {
    if x.name.is_empty() || x.name.len() > MAX_XATTR_NAME_LEN || x.name.contains(&0) {
        return Err(format!(
            "invalid xattr name {:?}",
            String::from_utf8_lossy(&x.name)
        ));
    }
    if x.value.len() > MAX_XATTR_VALUE_LEN {
        return Err(format!(
            "xattr {} value longer than {MAX_XATTR_VALUE_LEN} bytes",
            String::from_utf8_lossy(&x.name)
        ));
    }
    Ok(())
}
