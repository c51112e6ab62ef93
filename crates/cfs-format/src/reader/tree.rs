//! The whole image read back as a [`Tree`], exactly as C composefs's
//! `lcfs_load_node_from_image` builds it (so a dumpfile printed from it is what
//! `composefs-info dump` prints).
//!
//! What C does, and so what this does:
//! - the walk is depth first in entry order; the first time an inode is met it
//!   becomes a node, later entries naming it are hard links;
//! - `.` and `..` are skipped by name;
//! - a child whose inode is a character device with `rdev` 0 is skipped
//!   wherever it is: that is how the 256 overlay whiteout stubs `00`..`ff` in
//!   the root disappear (user whiteouts are stored escaped, as regular files,
//!   so never look like that). Such an inode with `nlink > 1` is an error;
//! - `trusted.overlay.redirect` on a regular file becomes the payload (a
//!   leading `/` stripped when the value is longer than one byte, cut at a NUL);
//!   `trusted.overlay.metacopy` of 36 bytes on a regular file becomes the digest;
//! - `trusted.overlay.overlay.whiteout` on a regular file turns it back into a
//!   character device 0/0 of size 0;
//! - `trusted.overlay.overlay.whiteouts`, `user.overlay.whiteout` and
//!   `user.overlay.whiteouts` are dropped (`user.overlay.opaque` is kept);
//! - other `trusted.overlay.overlay.X` are unescaped to `trusted.overlay.X`, and
//!   other `trusted.overlay.*` dropped;
//! - xattrs are applied inline ones first, a repeated name replacing the value;
//! - a regular file with flat data is inline content (at most 5000 bytes, as C
//!   allows); a non-empty regular file with any other layout must be chunk based;
//!   a symlink target is at most 4095 bytes, cut at a NUL.
//!
//! Deliberate differences, both only visible on odd images: C reads the
//! redirect after stripping the `/` with a length one byte too long, which can
//! pick up the byte after the value (this reads the value only); and C keeps
//! the inline content of an escaped whiteout it turns into a device (this
//! drops it, as a device has no content).
//!
//! Hostile images are bounded by [`TreeLimits`] (depth, entries, bytes) and
//! refused on a directory met twice (which includes every cycle), a directory
//! with two entries of one name, or a name that is not a valid file name.

use super::{corrupt, Image, ImageSource, Inode, Nid, ReadError};
use crate::erofs::DataLayout;
use crate::overlay::{self, Namespace};
use crate::tree::{DirEntry, FileType, Node, NodeId, Tree, Xattr, MAX_INLINE_CONTENT_LEN};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// Bounds on the work [`Image::to_tree_with`] does for a hostile image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TreeLimits {
    /// Deepest directory nesting (the root is depth 0). Default 2048: a path
    /// of `PATH_MAX` bytes can't go deeper.
    pub max_depth: usize,
    /// Most directory entries read in all. `None`: one per 12 bytes of image,
    /// which no image whose directories don't share blocks can exceed.
    pub max_entries: Option<u64>,
    /// Most bytes of names, xattrs, content and targets copied into the tree.
    /// `None`: 64 times the image size plus 64 MiB (shared xattrs and hard
    /// links legitimately make a tree bigger than its image, but not by much).
    pub max_bytes: Option<u64>,
}

impl Default for TreeLimits {
    fn default() -> Self {
        TreeLimits {
            max_depth: 2048,
            max_entries: None,
            max_bytes: None,
        }
    }
}

/// Remaining budgets of one walk.
struct Budget {
    entries: u64,
    bytes: u64,
}

impl Budget {
    fn entries(&mut self, n: u64) -> Result<(), ReadError> {
        self.entries = self
            .entries
            .checked_sub(n)
            .ok_or_else(|| ReadError::Limit {
                what: "too many directory entries".into(),
            })?;
        Ok(())
    }

    fn bytes(&mut self, n: usize) -> Result<(), ReadError> {
        self.bytes = self
            .bytes
            .checked_sub(n as u64)
            .ok_or_else(|| ReadError::Limit {
                what: "too many bytes of names, xattrs and content".into(),
            })?;
        Ok(())
    }
}

/// For each node with more than one name, the directory and the name the
/// writer placed it at.
type FirstNames = HashMap<NodeId, (NodeId, Vec<u8>)>;

/// A directory being filled: its node, its raw entries, and the next one to visit.
struct Frame<'a> {
    node: NodeId,
    nid: Nid,
    raw: Vec<(&'a [u8], Nid)>,
    next: usize,
    entries: Vec<DirEntry>,
}

impl<T: ImageSource> Image<T> {
    /// Reads the whole image back into a tree, as `composefs-info dump` sees it:
    /// overlay xattrs turned back into payload/digest, escaped names unescaped,
    /// whiteouts restored, the root's 00..ff whiteout stubs dropped.
    /// Uses the default [`TreeLimits`].
    pub fn to_tree(&self) -> Result<Tree, ReadError> {
        self.to_tree_with(TreeLimits::default())
    }

    /// [`Image::to_tree`] with explicit limits.
    pub fn to_tree_with(&self, limits: TreeLimits) -> Result<Tree, ReadError> {
        let len = self.size();
        let mut budget = Budget {
            entries: limits.max_entries.unwrap_or(len / 12),
            bytes: limits
                .max_bytes
                .unwrap_or_else(|| len.saturating_mul(64).saturating_add(64 << 20)),
        };
        let root_nid = self.root_nid();
        let root = self.inode(root_nid)?;
        if !root.is_dir() {
            return Err(corrupt(Some(root_nid), "root inode is not a directory"));
        }
        let mut tree = Tree::new(self.load_node(&root, &mut budget)?);
        let mut dirs: HashSet<Nid> = HashSet::from([root_nid]);
        let mut others: HashMap<Nid, NodeId> = HashMap::new();
        let mut stack = vec![self.frame(tree.root(), &root, &mut budget)?];

        while let Some(frame) = stack.last_mut() {
            let Some(&(name, nid)) = frame.raw.get(frame.next) else {
                if let Some(done) = stack.pop() {
                    let entries = sorted_entries(done.nid, done.entries)?;
                    tree.node_mut(done.node).entries = entries;
                }
                continue;
            };
            frame.next += 1;
            if name == b"." || name == b".." {
                continue;
            }
            let parent = frame.nid;
            Tree::check_name(name).map_err(|_| {
                corrupt(
                    Some(parent),
                    format!("directory entry name {:?}", String::from_utf8_lossy(name)),
                )
            })?;
            let inode = self.inode(nid)?;
            if overlay::is_whiteout(inode.mode(), inode.rdev()) {
                // An overlay whiteout stub: C skips these wherever they are.
                if inode.nlink() > 1 {
                    return Err(corrupt(
                        Some(nid),
                        format!("whiteout with i_nlink {}", inode.nlink()),
                    ));
                }
                continue;
            }
            budget.bytes(name.len())?;
            if let Some(&node) = others.get(&nid) {
                frame.entries.push(DirEntry {
                    name: name.to_vec(),
                    node,
                    hardlink: true,
                });
                continue;
            }
            if dirs.contains(&nid) {
                return Err(corrupt(
                    Some(nid),
                    format!(
                        "directory is referenced twice (again from directory {parent} as {:?})",
                        String::from_utf8_lossy(name)
                    ),
                ));
            }
            if tree.len() >= u32::MAX as usize {
                return Err(ReadError::Limit {
                    what: "too many inodes for a tree".into(),
                });
            }
            let node = tree.add_node(self.load_node(&inode, &mut budget)?);
            frame.entries.push(DirEntry {
                name: name.to_vec(),
                node,
                hardlink: false,
            });
            if inode.is_dir() {
                if stack.len() > limits.max_depth {
                    return Err(ReadError::Limit {
                        what: format!("directories nested deeper than {}", limits.max_depth),
                    });
                }
                dirs.insert(nid);
                let frame = self.frame(node, &inode, &mut budget)?;
                stack.push(frame);
            } else {
                others.insert(nid, node);
            }
        }
        Ok(tree)
    }

    /// [`Image::to_tree_with`], with each hard-linked inode's first name
    /// (the entry not marked `hardlink`) the one the writer placed it at,
    /// so that writing the tree again gives these very bytes when a writer
    /// made them. `to_tree` takes the first name met depth-first, as C's
    /// `composefs-info dump` does; the writer places an inode breadth-first
    /// at its first name, and that name is whatever its source said (a
    /// directory scan's breadth-first one, a dumpfile's first line). Inodes
    /// are written in breadth-first order at increasing nids, so the name at
    /// which the breadth-first walk reaches the inode's place in nid order is
    /// the one. Where no name fits (not a writer's image), the tree is left
    /// as `to_tree_with` read it.
    pub fn to_tree_as_written(&self, limits: TreeLimits) -> Result<Tree, ReadError> {
        let mut tree = self.to_tree_with(limits)?;
        if let Some(primaries) = self.placed_names(&tree)? {
            for dir in 0..tree.len() {
                let dir = NodeId(dir as u32);
                for i in 0..tree.node(dir).entries.len() {
                    let e = &tree.node(dir).entries[i];
                    if let Some(&(pdir, ref pname)) = primaries.get(&e.node) {
                        let hardlink = !(pdir == dir && *pname == e.name);
                        tree.node_mut(dir).entries[i].hardlink = hardlink;
                    }
                }
            }
        }
        Ok(tree)
    }

    /// For each node with more than one name: the directory and name at
    /// which the writer placed it (see [`Image::to_tree_as_written`]);
    /// `None` when the image's inode order fits no breadth-first placement.
    fn placed_names(&self, tree: &Tree) -> Result<Option<FirstNames>, ReadError> {
        // Every inode some entry reaches, in nid order: its breadth-first index.
        let mut nids: Vec<Nid> = vec![self.root_nid()];
        let mut seen: HashSet<Nid> = HashSet::from([self.root_nid()]);
        let mut dirs = vec![self.root_nid()];
        let mut multi = false;
        while let Some(dir) = dirs.pop() {
            for entry in self.readdir(dir, 0)? {
                let entry = entry?;
                if entry.is_dot_or_dotdot() {
                    continue;
                }
                if !seen.insert(entry.nid) {
                    multi = true;
                    continue;
                }
                nids.push(entry.nid);
                if self.inode(entry.nid)?.is_dir() {
                    dirs.push(entry.nid);
                }
            }
        }
        if !multi {
            return Ok(Some(HashMap::new()));
        }
        nids.sort();
        let index: HashMap<Nid, usize> = nids.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let mut placed: HashSet<Nid> = HashSet::from([self.root_nid()]);
        let mut next = 1;
        let mut out = HashMap::new();
        let mut queue = std::collections::VecDeque::from([(self.root_nid(), Some(tree.root()))]);
        while let Some((dir, node)) = queue.pop_front() {
            for entry in self.readdir(dir, 0)? {
                let entry = entry?;
                if entry.is_dot_or_dotdot() || placed.contains(&entry.nid) {
                    continue;
                }
                match index[&entry.nid].cmp(&next) {
                    // Placed further on, under another name.
                    std::cmp::Ordering::Greater => continue,
                    std::cmp::Ordering::Less => return Ok(None),
                    std::cmp::Ordering::Equal => {}
                }
                placed.insert(entry.nid);
                next += 1;
                let child = node
                    .and_then(|n| tree.node(n).entry(entry.name))
                    .map(|e| e.node);
                if let (Some(dir_node), Some(child)) = (node, child) {
                    out.insert(child, (dir_node, entry.name.to_vec()));
                }
                if self.inode(entry.nid)?.is_dir() {
                    queue.push_back((entry.nid, child));
                }
            }
        }
        if next != nids.len() {
            return Ok(None);
        }
        // Only nodes with more than one name need a say.
        let mut names: HashMap<NodeId, usize> = HashMap::new();
        for (_, n) in tree.nodes() {
            for e in &n.entries {
                *names.entry(e.node).or_default() += 1;
            }
        }
        out.retain(|node, _| names.get(node).copied().unwrap_or(0) > 1);
        Ok(Some(out))
    }

    /// The raw entries of a directory about to be visited.
    fn frame(
        &self,
        node: NodeId,
        dir: &Inode,
        budget: &mut Budget,
    ) -> Result<Frame<'_>, ReadError> {
        let mut raw = Vec::new();
        for entry in self.readdir_inode(dir, 0)? {
            let entry = entry?;
            budget.entries(1)?;
            raw.push((entry.name, entry.nid));
        }
        Ok(Frame {
            node,
            nid: dir.nid(),
            raw,
            next: 0,
            entries: Vec::new(),
        })
    }

    /// A node with stat, xattrs, content or payload, but no entries yet.
    fn load_node(&self, inode: &Inode, budget: &mut Budget) -> Result<Node, ReadError> {
        let nid = Some(inode.nid());
        let file_type = inode.file_type().ok_or_else(|| {
            corrupt(
                nid,
                format!("inode i_mode {:#o} has no valid file type", inode.mode()),
            )
        })?;
        let mut node = Node::new(inode.stat());
        match file_type {
            FileType::Symlink => {
                let target = self.symlink_inode(inode)?;
                let target = target.split(|&b| b == 0).next().unwrap_or_default();
                budget.bytes(target.len())?;
                node.payload = Some(target.to_vec());
            }
            FileType::Regular if inode.size() != 0 => match inode.layout() {
                DataLayout::FlatPlain | DataLayout::FlatInline => {
                    let size = inode.size();
                    if size > (MAX_INLINE_CONTENT_LEN as u64).min(self.size()) {
                        return Err(corrupt(
                            nid,
                            format!("inline file content of {size} bytes is over {MAX_INLINE_CONTENT_LEN}"),
                        ));
                    }
                    budget.bytes(size as usize)?;
                    let mut content = vec![0; size as usize];
                    if self.read_into(inode.nid(), 0, &mut content)? != content.len() {
                        return Err(corrupt(nid, "inline file content is cut short"));
                    }
                    node.content = Some(content);
                }
                DataLayout::ChunkBased => {}
            },
            _ => {}
        }

        let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
        for x in self.xattrs_inode(inode)? {
            let x = x?;
            budget.bytes(x.name_len() + x.value().len())?;
            let name = x.name();
            let is_reg = node.file_type() == Some(FileType::Regular);
            let name = match name.as_slice() {
                n if n == overlay::REDIRECT => {
                    if is_reg {
                        let mut v = x.value();
                        if v.len() > 1 && v[0] == b'/' {
                            v = &v[1..];
                        }
                        let v = v.split(|&b| b == 0).next().unwrap_or_default();
                        node.payload = Some(v.to_vec());
                    }
                    continue;
                }
                n if n == overlay::METACOPY => {
                    if is_reg {
                        if let Some(d) = overlay::metacopy_digest(x.value()) {
                            node.digest = Some(d);
                        }
                    }
                    continue;
                }
                n if n == overlay::ESCAPED_WHITEOUT && is_reg => {
                    node.stat.mode =
                        (node.stat.mode & !crate::tree::mode::S_IFMT) | crate::tree::mode::S_IFCHR;
                    node.stat.rdev = 0;
                    node.stat.size = 0;
                    node.content = None;
                    continue;
                }
                n if n == overlay::ESCAPED_WHITEOUTS
                    || n == overlay::USERXATTR_WHITEOUT
                    || n == overlay::USERXATTR_WHITEOUTS =>
                {
                    continue;
                }
                _ => name,
            };
            let name = match overlay::unescape(Namespace::Trusted, &name) {
                None => continue,
                Some(Cow::Owned(shown)) => shown,
                Some(Cow::Borrowed(_)) => name,
            };
            match seen.get(&name) {
                Some(&i) => node.xattrs[i].value = x.value().to_vec(),
                None => {
                    seen.insert(name.clone(), node.xattrs.len());
                    node.xattrs.push(Xattr {
                        name,
                        value: x.value().to_vec(),
                    });
                }
            }
        }
        Ok(node)
    }
}

/// A directory's entries sorted by name, as a [`Tree`] keeps them; a name
/// present twice is an error.
fn sorted_entries(dir: Nid, mut entries: Vec<DirEntry>) -> Result<Vec<DirEntry>, ReadError> {
    if !entries.windows(2).all(|w| w[0].name < w[1].name) {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = entries.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(corrupt(
                Some(dir),
                format!(
                    "directory has two entries named {:?}",
                    String::from_utf8_lossy(&w[0].name)
                ),
            ));
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dumpfile::{parse, ParseMode};
    use crate::writer::{write_image, WriteOptions};

    /// Regression: a directory scan names a hard-linked file first by its
    /// breadth-first name (`/ext1`), the reader by its depth-first one
    /// (`/dir/hardlink`), and the writer places the inode at its first
    /// name: the image read back wrote different bytes (the mount service
    /// refused `cfs create-image`'s images).
    #[test]
    fn hard_links_read_back_as_written_whichever_name_came_first() {
        let obj = "9e/b4c35f4f0fe707ad5bf4f5f3615fe47f48f9f9528c831beb5ce84525f588e4";
        let dir_first = format!(
            "/ 4096 40755 3 0 0 0 0.0 - - -\n/dir 0 40755 2 0 0 0 0.0 - - -\n\
             /dir/hardlink 300007 100644 2 0 0 0 0.0 {obj} - -\n\
             /dir/zz 0 100644 1 0 0 0 0.0 - - -\n\
             /ext1 300007 @100644 2 0 0 0 0.0 /dir/hardlink - -\n/z 0 100644 1 0 0 0 0.0 - - -\n"
        );
        let top_first = format!(
            "/ 4096 40755 3 0 0 0 0.0 - - -\n/ext1 300007 100644 2 0 0 0 0.0 {obj} - -\n\
             /dir 0 40755 2 0 0 0 0.0 - - -\n/dir/hardlink 300007 @100644 2 0 0 0 0.0 /ext1 - -\n\
             /dir/zz 0 100644 1 0 0 0 0.0 - - -\n/z 0 100644 1 0 0 0 0.0 - - -\n"
        );
        let mut images = Vec::new();
        for dump in [dir_first, top_first] {
            let tree = parse(dump.as_bytes(), ParseMode::Lenient).unwrap();
            let image = write_image(&tree, &WriteOptions::default()).unwrap();
            let back = Image::open(&image[..])
                .unwrap()
                .to_tree_as_written(TreeLimits::default())
                .unwrap();
            let again = write_image(&back, &WriteOptions::default()).unwrap();
            assert_eq!(again, image);
            images.push(image);
        }
        assert_ne!(images[0], images[1], "the first name changes the image");
        // Plain `to_tree` keeps C's depth-first first name.
        let back = Image::open(&images[1][..]).unwrap().to_tree().unwrap();
        let dir = back.lookup_path(b"/dir").unwrap();
        assert!(!back.node(dir).entry(b"hardlink").unwrap().hardlink);
    }
}
