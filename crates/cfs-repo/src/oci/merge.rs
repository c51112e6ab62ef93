//! Layers applied bottom to top with OCI whiteout semantics, into the tree
//! of the final image.
//!
//! Each layer tree (from [`super::tar`]) carries overlay-style whiteouts: a
//! char device 0/0 removes that name from the layers below, a directory with
//! `trusted.overlay.opaque=y` hides everything the layers below had in it. A
//! directory over a directory merges (the upper one's metadata wins unless it
//! is implicit); anything else replaces what was there, as `umoci unpack` and
//! overlayfs do. Hard links whose target was in a lower layer are resolved
//! here, by path, in the tree merged so far. The result has no whiteouts, no
//! opaque markers and no internal markers: it is the unpacked root file
//! system, which becomes one composefs image.

use super::{OciError, MARKER_HARDLINK, MARKER_IMPLICIT, MARKER_PREFIX};
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
    let mut out = Tree::new(Node::new(Stat {
        mode: mode::S_IFDIR | 0o755,
        nlink: 2,
        ..Stat::default()
    }));
    for (i, layer) in layers.iter().enumerate() {
        let mut m = Merger {
            out: &mut out,
            layer: layer.tree,
            index: i,
            digest: layer.digest,
            map: HashMap::new(),
        };
        let root = layer.tree.node(NodeId::ROOT);
        if root.xattr(MARKER_IMPLICIT).is_none() {
            copy_meta(m.out.node_mut(NodeId::ROOT), root);
        }
        m.apply(NodeId::ROOT, NodeId::ROOT, &mut Vec::new())?;
    }
    Ok(finish(&out))
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
    let mut n = src.clone();
    n.entries.clear();
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

/// A compact copy of the part of `src` reachable from the root, in the
/// order the dumpfile prints it: each node's first entry in a depth-first,
/// name-ordered walk is its primary one, the others are hard links, and
/// every non-directory's `nlink` is its number of entries.
pub(crate) fn finish(src: &Tree) -> Tree {
    let mut root = src.node(NodeId::ROOT).clone();
    root.entries.clear();
    let mut out = Tree::new(root);
    let mut map: HashMap<NodeId, NodeId> = HashMap::new();
    let mut links: HashMap<NodeId, u32> = HashMap::new();
    let mut stack = vec![(NodeId::ROOT, NodeId::ROOT, 0usize)];
    while let Some((sdir, odir, next)) = stack.pop() {
        let Some(e) = src.node(sdir).entries.get(next) else {
            continue;
        };
        stack.push((sdir, odir, next + 1));
        if let Some(&o) = map.get(&e.node) {
            // Names were valid and unique in `src`: linking can't fail.
            let _ = out.link(odir, &e.name, o, true);
            *links.entry(o).or_insert(1) += 1;
            continue;
        }
        let mut n = src.node(e.node).clone();
        n.entries.clear();
        let is_dir = n.file_type() == Some(FileType::Directory);
        let o = out.add_node(n);
        let _ = out.link(odir, &e.name, o, false);
        if is_dir {
            stack.push((e.node, o, 0));
        } else {
            map.insert(e.node, o);
        }
    }
    let ids: Vec<NodeId> = out.nodes().map(|(id, _)| id).collect();
    for id in ids {
        let n = out.node_mut(id);
        if n.file_type() != Some(FileType::Directory) {
            n.stat.nlink = links.get(&id).copied().unwrap_or(1);
        }
    }
    out
}

#[cfg(test)]
mod tests;
