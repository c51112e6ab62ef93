//! Layers applied bottom to top with OCI whiteout semantics, into the tree
//! of the final image.
//!
//! Each layer tree (from [`crate::tar`]) carries overlay-style whiteouts: a
//! char device 0/0 removes that name from the layers below, a directory with
//! `trusted.overlay.opaque=y` hides everything the layers below had in it. A
//! directory over a directory merges (the upper one's metadata wins unless it
//! is implicit); anything else replaces what was there, as `umoci unpack` and
//! overlayfs do. Hard links whose target was in a lower layer are resolved
//! here, by path, in the tree merged so far. The result has no whiteouts, no
//! opaque markers and no internal markers: it is the unpacked root file
//! system, which becomes one composefs image.

use crate::{OciError, MARKER_HARDLINK, MARKER_IMPLICIT, MARKER_PREFIX};
use cfs_format::overlay;
use cfs_format::tree::mode;
use cfs_format::{FileType, Node, NodeId, Stat, Tree};
use std::collections::HashMap;

/// One layer to apply: its name for errors (the blob digest) and its tree.
#[derive(Debug, Clone, Copy)]
pub struct LayerRef<'a> {
    /// Name for errors.
    pub digest: &'a str,
    /// The layer tree.
    pub tree: &'a Tree,
}

/// Applies `layers` (bottom first) onto an empty root.
pub fn merge(layers: &[LayerRef<'_>]) -> Result<Tree, OciError> {
    let mut m = Merge::new();
    for layer in layers {
        m.apply(*layer)?;
    }
    Ok(m.finish())
}

/// A merge in progress, layer by layer (bottom first), so that a caller
/// can drop each layer tree once it is applied.
#[derive(Debug)]
pub struct Merge {
    out: Tree,
    applied: usize,
}

impl Default for Merge {
    fn default() -> Self {
        Merge::new()
    }
}

impl Merge {
    /// An empty root.
    pub fn new() -> Merge {
        Merge {
            out: Tree::new(Node::new(Stat {
                mode: mode::S_IFDIR | 0o755,
                nlink: 2,
                ..Stat::default()
            })),
            applied: 0,
        }
    }

    /// Applies the next layer up.
    pub fn apply(&mut self, layer: LayerRef<'_>) -> Result<(), OciError> {
        let mut m = Merger {
            out: &mut self.out,
            layer: layer.tree,
            index: self.applied,
            digest: layer.digest,
            map: HashMap::new(),
        };
        let root = layer.tree.node(NodeId::ROOT);
        if root.xattr(MARKER_IMPLICIT).is_none() {
            copy_meta(m.out.node_mut(NodeId::ROOT), root);
        }
        m.apply(NodeId::ROOT, NodeId::ROOT, &mut Vec::new())?;
        self.applied += 1;
        Ok(())
    }

    /// The merged tree.
    pub fn finish(self) -> Tree {
        finish(self.out)
    }
}

struct Merger<'a> {
    out: &'a mut Tree,
    layer: &'a Tree,
    index: usize,
    digest: &'a str,
    /// Layer node → merged node, for hard links within the layer.
    map: HashMap<NodeId, NodeId>,
}

/// A node's stat and xattrs without markers, opaque flags or entries.
fn clean(src: &Node) -> Node {
    let mut n = Node {
        stat: src.stat,
        xattrs: src.xattrs.clone(),
        payload: src.payload.clone(),
        content: src.content.clone(),
        digest: src.digest,
        entries: Vec::new(),
    };
    strip(&mut n);
    n
}

fn strip(n: &mut Node) {
    n.xattrs
        .retain(|x| !x.name.starts_with(MARKER_PREFIX) && x.name != overlay::OPAQUE);
}

fn copy_meta(dst: &mut Node, src: &Node) {
    dst.stat = src.stat;
    dst.xattrs = src.xattrs.clone();
    strip(dst);
}

impl Merger<'_> {
    fn err(&self, path: &[u8], reason: impl Into<String>) -> OciError {
        OciError::Merge {
            layer: self.index,
            digest: self.digest.to_owned(),
            path: String::from_utf8_lossy(path).into_owned(),
            reason: reason.into(),
        }
    }

    fn apply(
        &mut self,
        out_dir: NodeId,
        layer_dir: NodeId,
        path: &mut Vec<u8>,
    ) -> Result<(), OciError> {
        let layer = self.layer;
        let ldir = layer.node(layer_dir);
        if ldir.xattr(overlay::OPAQUE) == Some(b"y") {
            self.out.node_mut(out_dir).entries.clear();
        }
        for e in &ldir.entries {
            let len = path.len();
            path.push(b'/');
            path.extend_from_slice(&e.name);
            let ln = layer.node(e.node);
            let existing = self.out.node(out_dir).entry(&e.name).map(|x| x.node);
            if overlay::is_whiteout(ln.stat.mode, ln.stat.rdev) {
                self.out.unlink(out_dir, &e.name);
            } else if ln.file_type() == Some(FileType::Directory) {
                let target = match existing {
                    Some(d) if self.out.node(d).file_type() == Some(FileType::Directory) => {
                        if ln.xattr(MARKER_IMPLICIT).is_none() {
                            copy_meta(self.out.node_mut(d), ln);
                        }
                        d
                    }
                    _ => {
                        self.out.unlink(out_dir, &e.name);
                        let d = self.out.add_node(clean(ln));
                        self.out
                            .link(out_dir, &e.name, d, false)
                            .map_err(|err| self.err(path, err.to_string()))?;
                        d
                    }
                };
                self.apply(target, e.node, path)?;
            } else {
                self.out.unlink(out_dir, &e.name);
                let id = match self.map.get(&e.node) {
                    Some(&id) => id,
                    None => {
                        let id = match ln.xattr(MARKER_HARDLINK) {
                            Some(t) => self.resolve_link(t, path)?,
                            None => self.out.add_node(clean(ln)),
                        };
                        self.map.insert(e.node, id);
                        id
                    }
                };
                self.out
                    .link(out_dir, &e.name, id, false)
                    .map_err(|err| self.err(path, err.to_string()))?;
            }
            path.truncate(len);
        }
        Ok(())
    }

    /// The node a hard link to a lower layer's file names.
    fn resolve_link(&self, target: &[u8], path: &[u8]) -> Result<NodeId, OciError> {
        let shown = String::from_utf8_lossy(target);
        match self.out.lookup_path(target) {
            Some(t) if self.out.node(t).file_type() != Some(FileType::Directory) => Ok(t),
            Some(_) => Err(self.err(path, format!("hard link to the directory {shown:?}"))),
            None => Err(self.err(
                path,
                format!("hard link to {shown:?}, which neither this layer nor any below has"),
            )),
        }
    }
}

/// The part of `src` reachable from the root, its nodes moved into a
/// compact tree in the order the dumpfile prints it: each node's first
/// entry in a depth-first, name-ordered walk is its primary one, the others
/// are hard links, and every non-directory's `nlink` is its number of
/// entries. (Nodes are moved, not copied: this runs on whole layer trees.)
pub(crate) fn finish(mut src: Tree) -> Tree {
    const NONE: u32 = u32::MAX;
    let mut root = std::mem::take(src.node_mut(NodeId::ROOT));
    let root_entries = std::mem::take(&mut root.entries);
    let mut out = Tree::new(root);
    // Source node → its node in `out`.
    let mut map: Vec<u32> = vec![NONE; src.len()];
    map[NodeId::ROOT.index()] = NodeId::ROOT.0;
    let mut stack = vec![(root_entries.into_iter(), NodeId::ROOT)];
    while let Some((entries, odir)) = stack.last_mut() {
        let odir = *odir;
        let Some(e) = entries.next() else {
            stack.pop();
            continue;
        };
        let Some(&seen) = map.get(e.node.index()) else {
            continue;
        };
        if seen != NONE {
            let o = NodeId(seen);
            // A second name for a directory can't be kept (and can't
            // happen in the trees built here); others are hard links.
            if out.node(o).file_type() != Some(FileType::Directory) {
                // Names were valid and unique in `src`: linking can't fail.
                let _ = out.link(odir, &e.name, o, true);
            }
            continue;
        }
        let mut n = std::mem::take(src.node_mut(e.node));
        let sub = std::mem::take(&mut n.entries);
        let is_dir = n.file_type() == Some(FileType::Directory);
        let o = out.add_node(n);
        map[e.node.index()] = o.0;
        let _ = out.link(odir, &e.name, o, false);
        if is_dir {
            stack.push((sub.into_iter(), o));
        }
    }
    drop(src);
    let mut names = vec![0u32; out.len()];
    for (_, n) in out.nodes() {
        for e in &n.entries {
            names[e.node.index()] += 1;
        }
    }
    for (i, count) in names.into_iter().enumerate() {
        let n = out.node_mut(NodeId(i as u32));
        if n.file_type() != Some(FileType::Directory) {
            n.stat.nlink = count.max(1);
        }
    }
    out
}

#[cfg(test)]
mod tests;
