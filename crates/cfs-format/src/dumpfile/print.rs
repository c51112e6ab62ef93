//! Printing a [`Tree`] as `composefs-info dump` prints an image (`dump_node`
//! in C composefs's `tools/composefs-info.c`).
//!
//! Nodes are printed depth first, a directory before its entries, entries in
//! name order. Every field is always present: `-` stands for no payload, no
//! content or no digest. A hard link is printed with its target's stat fields
//! and xattrs, its mode prefixed with `@`, and the target's path as payload.
//! The target is the node's primary entry: the first one in that walk not
//! marked `hardlink` (or, in a tree where every entry of a node is marked,
//! the first one).

use std::collections::HashMap;
use std::io::{self, Write};

use super::escape::{escape_into, Style};
use crate::tree::{DirEntry, FileType, Node, NodeId, Tree};

/// Prints the whole tree. See [`super::print`].
pub(super) fn print(
    tree: &Tree,
    out: &mut dyn Write,
    omit: &dyn Fn(&Node) -> bool,
) -> io::Result<()> {
    // The primary path of each node printed as a hard link somewhere: kept
    // for those only, as all paths together cost the square of the depth.
    let mut names = vec![0u32; tree.len()];
    for (_, node) in tree.nodes() {
        for e in &node.entries {
            if let Some(n) = names.get_mut(e.node.index()) {
                *n = n.saturating_add(1);
            }
        }
    }
    let mut primary: HashMap<NodeId, Vec<u8>> = HashMap::new();
    walk(tree, |id, path, is_link| {
        if !is_link && names[id.index()] > 1 {
            primary.insert(id, path.to_vec());
        }
    });
    let mut line = Vec::with_capacity(256);
    let mut result = Ok(());
    walk(tree, |id, path, is_link| {
        if result.is_err() {
            return;
        }
        let node = tree.node(id);
        if !is_link
            && id != NodeId::ROOT
            && node.file_type() == Some(FileType::Directory)
            && omit(node)
        {
            return;
        }
        line.clear();
        let link_target = is_link.then(|| primary.get(&id).map_or(&b""[..], Vec::as_slice));
        format_line(&mut line, tree, id, path, link_target);
        result = out.write_all(&line);
    });
    result
}

/// Visits every entry depth first in name order, the root first with an
/// empty path, telling whether it is printed as a hard link. Each node is
/// entered through exactly one entry, so a malformed tree can't loop.
fn walk(tree: &Tree, mut visit: impl FnMut(NodeId, &[u8], bool)) {
    let mut has_primary = vec![false; tree.len()];
    for (_, node) in tree.nodes() {
        for e in &node.entries {
            if !e.hardlink {
                if let Some(p) = has_primary.get_mut(e.node.index()) {
                    *p = true;
                }
            }
        }
    }
    let mut entered = vec![false; tree.len()];
    entered[NodeId::ROOT.index()] = true;
    visit(NodeId::ROOT, b"", false);
    // Directories whose entries are still to visit, with their paths.
    let mut stack: Vec<(std::slice::Iter<'_, DirEntry>, Vec<u8>)> =
        vec![(tree.node(NodeId::ROOT).entries.iter(), Vec::new())];
    while let Some((entries, dir_path)) = stack.last_mut() {
        let Some(entry) = entries.next() else {
            stack.pop();
            continue;
        };
        let i = entry.node.index();
        if i >= tree.len() {
            continue;
        }
        let mut path = Vec::with_capacity(dir_path.len() + 1 + entry.name.len());
        path.extend_from_slice(dir_path);
        path.push(b'/');
        path.extend_from_slice(&entry.name);
        let enter = !entered[i] && (!entry.hardlink || !has_primary[i]);
        visit(entry.node, &path, !enter);
        if enter {
            entered[i] = true;
            stack.push((tree.node(entry.node).entries.iter(), path));
        }
    }
}

/// One dump line for `id` at `path` (empty for the root); `link_target` is
/// the primary path when this entry is a hard link.
fn format_line(
    line: &mut Vec<u8>,
    tree: &Tree,
    id: NodeId,
    path: &[u8],
    link_target: Option<&[u8]>,
) {
    let node = tree.node(id);
    let st = &node.stat;
    escape_into(line, if path.is_empty() { b"/" } else { path }, Style::PATH);
    // Writing to a Vec can't fail.
    let _ = write!(
        line,
        " {} {}{:o} {} {} {} {} {}.{} ",
        st.size,
        if link_target.is_some() { "@" } else { "" },
        st.mode,
        st.nlink,
        st.uid,
        st.gid,
        st.rdev,
        st.mtime.sec,
        st.mtime.nsec,
    );
    match link_target.or(node.payload.as_deref()) {
        Some(p) => escape_into(line, p, Style::OPTIONAL),
        None => line.push(b'-'),
    }
    line.push(b' ');
    match &node.content {
        // C prints `size` bytes of the content.
        Some(c) => {
            let len = usize::try_from(st.size).map_or(c.len(), |s| s.min(c.len()));
            escape_into(line, &c[..len], Style::OPTIONAL);
        }
        None => line.push(b'-'),
    }
    line.push(b' ');
    match &node.digest {
        Some(d) => line.extend_from_slice(d.to_hex().as_bytes()),
        None => line.push(b'-'),
    }
    for x in &node.xattrs {
        line.push(b' ');
        escape_into(line, &x.name, Style::XATTR);
        line.push(b'=');
        escape_into(line, &x.value, Style::XATTR);
    }
    line.push(b'\n');
}
