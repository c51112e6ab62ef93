//! Reading a dumpfile into a [`Tree`], accepting what C `mkcomposefs
//! --from-file` accepts (`tree_from_dump` in `tools/mkcomposefs.c`) and
//! building the nodes C builds before it writes an image.
//!
//! Each line is `PATH SIZE MODE NLINK UID GID RDEV MTIME PAYLOAD CONTENT
//! DIGEST [XATTR...]`, fields split on single spaces (two spaces make an
//! empty field; missing trailing fields are empty). What C does with them,
//! and so what the tree holds:
//! - integers are read like `strtoull` (leading whitespace, a sign, and
//!   wrapping are accepted) and truncated to the width C stores: mode, nlink,
//!   uid and gid to 32 bits, mtime nanoseconds to 32 bits;
//! - path, payload, digest and xattr names are C strings: an escaped NUL ends
//!   them. Content and xattr values keep every byte;
//! - a symlink's size becomes its target's length; rdev is kept only for
//!   character and block devices; nlink is kept as written, also for the
//!   target of hard links (C restores it after linking) and for directories
//!   (the image writer recounts those);
//! - empty inline content is no content; a payload field that is present but
//!   empty is an empty payload (C stores `""`);
//! - a line whose mode starts with `@` is a hard link: only its path, mode and
//!   payload (the target's path) are read. Targets are resolved after the
//!   last line, so they may come later in the file; a link to a link is
//!   followed to the real inode.
//!
//! Checks that C only makes when writing the image (hard links to
//! directories, link loops, regular files too big for the chunk index) are
//! made here too, so every dumpfile C rejects fails to parse.

use std::collections::HashMap;

use super::escape::{escape, unescape, unescape_optional, Style, UnescapeError};
use super::{DumpfileError, ParseMode};
use crate::tree::{
    FileType, Node, NodeId, Stat, Timespec, Tree, Xattr, MAX_INLINE_CONTENT_LEN, MAX_NAME_LEN,
    MAX_SYMLINK_LEN, MAX_XATTR_NAME_LEN, MAX_XATTR_VALUE_LEN,
};
use crate::Digest;

/// Xattr space one inode may use from a dumpfile (`LCFS_INODE_EXTERNAL_XATTR_MAX`),
/// counted as C counts it: see `XattrSpace`.
pub const MAX_XATTR_SPACE: usize = u16::MAX as usize / 2;
/// Longest xattr part of a line. C caps it at 65535 bytes ("Too many xattrs"),
/// but the xattrs an inode may hold ([`MAX_XATTR_SPACE`] bytes) can take four
/// times their size once escaped (`\xNN`), so C's cap rejects dumps that its
/// own `composefs-info dump` prints. The cap here fits any dump of a valid
/// inode; the space limit still bounds what an inode holds. (Found by the
/// `dumpfile_roundtrip` fuzz target: `fuzz/regressions/`.)
pub const MAX_XATTR_FIELDS_LEN: usize = 4 * u16::MAX as usize + 4096;
/// Largest regular file without inline content: the chunk index holds at
/// most 1024 chunks (`LCFS_MAX_NONINLINE_CHUNKS`) of at most 2^43 bytes
/// (`EROFS_CHUNK_FORMAT_BLKBITS_MASK` + 12 block bits), so 2^53 bytes.
pub const MAX_EXTERNAL_FILE_SIZE: u64 = 1024 << 43;

/// The fixed fields of a line, in order.
const FIELDS: [&str; 11] = [
    "path", "size", "mode", "nlink", "uid", "gid", "rdev", "mtime", "payload", "content", "digest",
];
const PATH: usize = 0;
const SIZE: usize = 1;
const MODE: usize = 2;
const NLINK: usize = 3;
const UID: usize = 4;
const GID: usize = 5;
const RDEV: usize = 6;
const MTIME: usize = 7;
const PAYLOAD: usize = 8;
const CONTENT: usize = 9;
const DIGEST: usize = 10;

/// Parses a whole dumpfile. See [`super::parse`].
pub(super) fn parse(
    input: &[u8],
    mode: ParseMode,
    implicit_parent: Option<&Node>,
) -> Result<Tree, DumpfileError> {
    let mut parser = Parser {
        implicit_parent,
        ..Parser::default()
    };
    let mut rest = input;
    let mut line_no = 0;
    while !rest.is_empty() {
        line_no += 1;
        let line = match rest.iter().position(|&b| b == b'\n') {
            Some(end) => {
                let line = &rest[..end];
                rest = &rest[end + 1..];
                line
            }
            None if mode == ParseMode::Strict => {
                return Err(error(line_no, "missing trailing newline"));
            }
            None => std::mem::take(&mut rest),
        };
        parser
            .line(line, mode)
            .map_err(|message| error(line_no, message))?;
    }
    parser.finish(line_no.max(1))
}

fn error(line: usize, message: impl Into<String>) -> DumpfileError {
    DumpfileError {
        line,
        message: message.into(),
    }
}

/// A hard link line, resolved once the whole file is read.
struct PendingLink {
    line: usize,
    dir: NodeId,
    name: Vec<u8>,
    /// The target path; `None` for `-`.
    target: Option<Vec<u8>>,
}

/// What a path names while parsing: a node, or a hard link still pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    Node(NodeId),
    Link(usize),
}

/// Where a new line goes.
enum Place {
    Root,
    Child { dir: NodeId, name: Vec<u8> },
}

#[derive(Default)]
struct Parser<'p> {
    tree: Option<Tree>,
    /// What a missing parent directory is created as; `None`: it is an error.
    implicit_parent: Option<&'p Node>,
    links: Vec<PendingLink>,
    /// Pending links by (directory, name). Their directory entries point at
    /// the root until resolved; `Found::Link` keeps lookups from following them.
    link_at: HashMap<(NodeId, Vec<u8>), usize>,
    line_no: usize,
}

impl Parser<'_> {
    /// One line: a hard link (resolved in [`Parser::finish`]) or a node put
    /// in the tree.
    fn line(&mut self, line: &[u8], mode: ParseMode) -> Result<(), String> {
        self.line_no += 1;
        if let Some(pos) = line.iter().position(|&b| b == 0) {
            return Err(format!("embedded NUL byte at column {}", pos + 1));
        }
        let mut xattrs = line;
        let fields: [&[u8]; 11] = std::array::from_fn(|_| split_off(&mut xattrs, b' '));

        let path = c_string(unescape(fields[PATH]).map_err(|e| bad_escape(PATH, &e))?);
        if path.is_empty() {
            return Err("path: empty".into());
        }
        let (is_link, mode_field) = match fields[MODE].strip_prefix(b"@") {
            Some(m) => (true, m),
            None => (false, fields[MODE]),
        };
        // C stores the mode in 32 bits.
        let st_mode = int_field(MODE, mode_field, 8)? as u32;
        let file_type = FileType::from_mode(st_mode)
            .ok_or_else(|| format!("mode: {st_mode:o} has no valid file type"))?;
        if self.implicit_parent.is_some() {
            self.make_parents(&path);
        }
        let place = self.place(&path, file_type)?;
        if is_link {
            return self.hard_link(place, file_type, fields[PAYLOAD]);
        }
        let mut node = build_node(read_fields(&fields, st_mode)?, file_type, mode)?;
        add_xattrs(&mut node, xattrs)?;
        // The image writer's check (`lcfs_node_validate`): the chunk index of
        // a file without inline content has at most 1024 entries.
        let size = node.stat.size;
        if file_type == FileType::Regular && node.content.is_none() && size > MAX_EXTERNAL_FILE_SIZE
        {
            return Err(format!(
                "size: {size} is larger than the largest file composefs can describe ({MAX_EXTERNAL_FILE_SIZE})"
            ));
        }
        self.add(place, node)
    }

    /// A hard link line: only its mode and payload (the target path) count.
    /// Its entry points at the root until [`Parser::finish`] resolves it.
    fn hard_link(
        &mut self,
        place: Place,
        file_type: FileType,
        payload: &[u8],
    ) -> Result<(), String> {
        if file_type == FileType::Directory {
            return Err("mode: a directory can't be a hard link".into());
        }
        let target = unescape_optional(payload)
            .map_err(|e| bad_escape(PAYLOAD, &e))?
            .map(c_string);
        let Place::Child { dir, name } = place else {
            return Err("path: the root can't be a hard link".into());
        };
        let tree = self.tree.as_mut().ok_or("path: no root directory")?;
        tree.link(dir, &name, NodeId::ROOT, true)
            .map_err(|e| format!("path: {e}"))?;
        self.link_at.insert((dir, name.clone()), self.links.len());
        self.links.push(PendingLink {
            line: self.line_no,
            dir,
            name,
            target,
        });
        Ok(())
    }

    /// Puts a line's node where [`Parser::place`] said it goes.
    fn add(&mut self, place: Place, node: Node) -> Result<(), String> {
        match place {
            Place::Root => self.tree = Some(Tree::new(node)),
            Place::Child { dir, name } => {
                let tree = self.tree.as_mut().ok_or("path: no root directory")?;
                let id = tree.add_node(node);
                tree.link(dir, &name, id, false)
                    .map_err(|e| format!("path: {e}"))?;
            }
        }
        Ok(())
    }

    /// Creates the missing parent directories of `path` as copies of
    /// [`Parser::implicit_parent`] (without its entries). Stops at the first component that can't
    /// be one (a hard link, a non-directory, an invalid name), leaving the
    /// error to [`Parser::place`].
    fn make_parents(&mut self, path: &[u8]) {
        let (Some(tree), Some(parent)) = (self.tree.as_mut(), self.implicit_parent) else {
            return;
        };
        let mut comps = path.split(|&b| b == b'/').filter(|c| !c.is_empty());
        let Some(mut comp) = comps.next() else {
            return;
        };
        let mut cur = NodeId::ROOT;
        // Every component but the last is a parent.
        for next in comps {
            if tree.node(cur).file_type() != Some(FileType::Directory) {
                return;
            }
            cur = match tree.node(cur).entry(comp) {
                Some(e) if !e.hardlink => e.node,
                Some(_) => return,
                None => {
                    let mut dir = parent.clone();
                    dir.entries.clear();
                    let id = tree.add_node(dir);
                    if tree.link(cur, comp, id, false).is_err() {
                        return;
                    }
                    id
                }
            };
            comp = next;
        }
    }

    /// Finds where `path` goes, as C's `tree_add_node` and `lookup_parent_path` do.
    fn place(&self, path: &[u8], file_type: FileType) -> Result<Place, String> {
        let shown = || String::from_utf8_lossy(&escape(path, Style::PATH)).into_owned();
        if path == b"/" {
            if file_type != FileType::Directory {
                return Err("path: the root must be a directory".into());
            }
            if self.tree.is_some() {
                return Err("path: a second root".into());
            }
            return Ok(Place::Root);
        }
        let Some(tree) = &self.tree else {
            return Err(format!(
                "path: {} comes before the root directory \"/\"",
                shown()
            ));
        };
        // Leading and repeated slashes are skipped; a trailing one leaves an
        // empty name, which is rejected below.
        let mut cur = Found::Node(NodeId::ROOT);
        let mut rest = path;
        let name = loop {
            while let Some(r) = rest.strip_prefix(b"/") {
                rest = r;
            }
            match rest.iter().position(|&b| b == b'/') {
                None => break rest,
                Some(end) => {
                    cur = self
                        .child(tree, cur, &rest[..end])
                        .ok_or_else(|| format!("path: parent directory of {} missing", shown()))?;
                    rest = &rest[end..];
                }
            }
        };
        let dir = match cur {
            Found::Node(id) if tree.node(id).file_type() == Some(FileType::Directory) => id,
            _ => return Err(format!("path: parent of {} is not a directory", shown())),
        };
        if name == b"." || name == b".." {
            return Err(format!("path: invalid . or .. in {}", shown()));
        }
        if name.is_empty() {
            return Err(format!("path: empty file name in {}", shown()));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(format!(
                "path: file name of {} bytes, longer than {MAX_NAME_LEN}",
                name.len()
            ));
        }
        if tree.node(dir).entry(name).is_some() {
            return Err(format!("path: {} already exists", shown()));
        }
        Ok(Place::Child {
            dir,
            name: name.to_vec(),
        })
    }

    /// The entry `name` of `of`; hard links have no entries.
    fn child(&self, tree: &Tree, of: Found, name: &[u8]) -> Option<Found> {
        let Found::Node(id) = of else { return None };
        let entry = tree.node(id).entry(name)?;
        if entry.hardlink {
            let link = self.link_at.get(&(id, name.to_vec()))?;
            Some(Found::Link(*link))
        } else {
            Some(Found::Node(entry.node))
        }
    }

    /// What a hard link target path names, as C's `lookup_path` finds it.
    fn lookup(&self, tree: &Tree, path: &[u8]) -> Option<Found> {
        path.split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .try_fold(Found::Node(NodeId::ROOT), |cur, name| {
                self.child(tree, cur, name)
            })
    }

    /// Resolves the hard links and returns the tree.
    fn finish(mut self, last_line: usize) -> Result<Tree, DumpfileError> {
        let Some(mut tree) = self.tree.take() else {
            return Err(error(last_line, "no root directory (a line for \"/\")"));
        };
        let links = &self.links;
        // C resolves the last link first; do the same so the same error wins.
        let mut direct = vec![Found::Node(NodeId::ROOT); links.len()];
        for (i, link) in links.iter().enumerate().rev() {
            let Some(target) = &link.target else {
                return Err(error(link.line, "payload: a hard link needs a target path"));
            };
            let shown = || String::from_utf8_lossy(&escape(target, Style::PATH)).into_owned();
            let found = self.lookup(&tree, target).ok_or_else(|| {
                error(
                    link.line,
                    format!("payload: hard link target {} does not exist", shown()),
                )
            })?;
            if found == Found::Link(i) {
                return Err(error(
                    link.line,
                    format!("payload: hard link {} to itself", shown()),
                ));
            }
            direct[i] = found;
        }
        let mut resolved = Vec::with_capacity(links.len());
        for (i, link) in links.iter().enumerate() {
            let mut cur = direct[i];
            let mut steps = 0;
            let id = loop {
                match cur {
                    Found::Node(id) => break id,
                    Found::Link(j) => {
                        steps += 1;
                        if steps > links.len() {
                            return Err(error(link.line, "payload: hard link loop"));
                        }
                        cur = direct[j];
                    }
                }
            };
            if tree.node(id).file_type() == Some(FileType::Directory) {
                return Err(error(link.line, "payload: hard link to a directory"));
            }
            resolved.push(id);
        }
        for (link, id) in links.iter().zip(resolved) {
            let entries = &mut tree.node_mut(link.dir).entries;
            if let Ok(pos) = entries.binary_search_by(|e| e.name.as_slice().cmp(&link.name)) {
                entries[pos].node = id;
            }
        }
        Ok(tree)
    }
}

/// The fixed fields of a line that is not a hard link, read but not yet
/// checked against its file type.
struct Fields {
    /// Every stat field as written (`rdev` too).
    stat: Stat,
    payload: Option<Vec<u8>>,
    content: Option<Vec<u8>>,
    digest: Option<Digest>,
}

/// Reads the fixed fields after the path and mode.
fn read_fields(fields: &[&[u8]; 11], st_mode: u32) -> Result<Fields, String> {
    let size = int_field(SIZE, fields[SIZE], 10)?;
    let nlink = int_field(NLINK, fields[NLINK], 10)? as u32;
    let uid = int_field(UID, fields[UID], 10)? as u32;
    let gid = int_field(GID, fields[GID], 10)? as u32;
    let rdev = int_field(RDEV, fields[RDEV], 10)?;
    let mtime = mtime_field(fields[MTIME])?;
    let payload = unescape_optional(fields[PAYLOAD])
        .map_err(|e| bad_escape(PAYLOAD, &e))?
        .map(c_string);
    let content = unescape_optional(fields[CONTENT]).map_err(|e| bad_escape(CONTENT, &e))?;
    if let Some(content) = &content {
        if content.len() as u64 != size {
            return Err(format!(
                "content: {} bytes, but size is {size}",
                content.len()
            ));
        }
    }
    // C ignores what `digest_to_raw` says and keeps whatever it filled
    // in; here a digest is 64 hex digits, and an empty field (a line
    // with its last fields missing) is no digest.
    let digest = unescape_optional(fields[DIGEST])
        .map_err(|e| bad_escape(DIGEST, &e))?
        .map(c_string)
        .filter(|d| !d.is_empty())
        .map(|d| Digest::from_hex(&d))
        .transpose()
        .map_err(|e| format!("digest: {e}"))?;
    let stat = Stat {
        mode: st_mode,
        uid,
        gid,
        nlink,
        rdev,
        size,
        mtime,
    };
    Ok(Fields {
        stat,
        payload,
        content,
        digest,
    })
}

/// The node a line describes: rdev kept for devices only, a symlink's target
/// from its payload, another file's payload and inline content as given.
fn build_node(fields: Fields, file_type: FileType, mode: ParseMode) -> Result<Node, String> {
    let Fields {
        stat,
        payload,
        content,
        digest,
    } = fields;
    let mut node = Node::new(Stat { rdev: 0, ..stat });
    match file_type {
        FileType::CharDevice | FileType::BlockDevice => node.stat.rdev = stat.rdev,
        _ if mode == ParseMode::Strict && stat.rdev != 0 => {
            return Err(format!(
                "rdev: {} on a file that is not a device",
                stat.rdev
            ));
        }
        _ => {}
    }
    if file_type == FileType::Symlink {
        set_symlink(&mut node, payload, content.as_deref(), mode)?;
    } else {
        if let Some(p) = &payload {
            if p.len() > MAX_SYMLINK_LEN {
                return Err(format!(
                    "payload: {} bytes, longer than {MAX_SYMLINK_LEN}",
                    p.len()
                ));
            }
        }
        node.payload = payload;
        if let Some(content) = content {
            if content.len() > MAX_INLINE_CONTENT_LEN {
                return Err(format!(
                    "content: {} bytes, more than the {MAX_INLINE_CONTENT_LEN} that can be inline",
                    content.len()
                ));
            }
            if !content.is_empty() {
                node.content = Some(content);
            }
        }
    }
    node.digest = digest;
    Ok(node)
}

/// A symlink's target is its payload; its size becomes the target's length
/// (in strict mode the size field must already say so, and there must be
/// no content).
fn set_symlink(
    node: &mut Node,
    payload: Option<Vec<u8>>,
    content: Option<&[u8]>,
    mode: ParseMode,
) -> Result<(), String> {
    let target = match payload {
        Some(t) if !t.is_empty() => t,
        _ => return Err("payload: a symlink needs a target".into()),
    };
    if target.len() > MAX_SYMLINK_LEN {
        return Err(format!(
            "payload: symlink target of {} bytes, longer than {MAX_SYMLINK_LEN}",
            target.len()
        ));
    }
    if mode == ParseMode::Strict {
        let size = node.stat.size;
        if size != target.len() as u64 {
            return Err(format!(
                "size: {size}, but the symlink target is {} bytes",
                target.len()
            ));
        }
        if content.is_some_and(|c| !c.is_empty()) {
            return Err("content: a symlink can't have content".into());
        }
    }
    node.stat.size = target.len() as u64;
    node.payload = Some(target);
    Ok(())
}

/// The xattr fields after the fixed ones, within C's limits.
fn add_xattrs(node: &mut Node, mut rest: &[u8]) -> Result<(), String> {
    if rest.len() > MAX_XATTR_FIELDS_LEN {
        return Err(format!(
            "xattrs: {} bytes of xattrs on one line, more than {MAX_XATTR_FIELDS_LEN}",
            rest.len()
        ));
    }
    let mut space = XattrSpace::default();
    while !rest.is_empty() {
        let field = split_off(&mut rest, b' ');
        space.add(node, field)?;
    }
    Ok(())
}

/// Xattr space used by one inode, counted as C's `lcfs_node_set_xattr`
/// counts it: each xattr costs `2 * 4 - 1 + name + value` bytes (entry
/// header twice, less one, for worst-case alignment), the first one 12 more
/// for the xattr body header. Setting a name again removes the old value
/// first (moving the last xattr into its slot) and appends the new one.
#[derive(Default)]
struct XattrSpace {
    used: usize,
}

impl XattrSpace {
    const ENTRY_OVERHEAD: usize = 2 * 4 - 1;
    const HEADER: usize = 12;

    fn add(&mut self, node: &mut Node, field: &[u8]) -> Result<(), String> {
        let Some(eq) = field.iter().position(|&b| b == b'=') else {
            return Err(format!(
                "xattr: missing '=' in {}",
                String::from_utf8_lossy(field)
            ));
        };
        let name = c_string(unescape(&field[..eq]).map_err(|e| format!("xattr name: {e}"))?);
        let value = unescape(&field[eq + 1..]).map_err(|e| format!("xattr value: {e}"))?;
        if name.is_empty() {
            return Err("xattr name: empty".into());
        }
        if name.len() > MAX_XATTR_NAME_LEN {
            return Err(format!(
                "xattr name: {} bytes, longer than {MAX_XATTR_NAME_LEN}",
                name.len()
            ));
        }
        if value.len() > MAX_XATTR_VALUE_LEN {
            return Err(format!(
                "xattr value: {} bytes, longer than {MAX_XATTR_VALUE_LEN}",
                value.len()
            ));
        }
        if let Some(i) = node.xattrs.iter().position(|x| x.name == name) {
            let old = node.xattrs.swap_remove(i);
            self.used = if node.xattrs.is_empty() {
                0
            } else {
                self.used
                    .saturating_sub(Self::ENTRY_OVERHEAD + name.len() + old.value.len())
            };
        }
        let mut cost = Self::ENTRY_OVERHEAD + name.len() + value.len();
        if node.xattrs.is_empty() {
            cost += Self::HEADER;
        }
        if self.used + cost > MAX_XATTR_SPACE {
            return Err(format!(
                "xattrs: more than {MAX_XATTR_SPACE} bytes of xattrs on one file"
            ));
        }
        self.used += cost;
        node.xattrs.push(Xattr { name, value });
        Ok(())
    }
}

/// Splits off the bytes before the next `sep` (or all of them), as C's `split_at`.
fn split_off<'a>(rest: &mut &'a [u8], sep: u8) -> &'a [u8] {
    match rest.iter().position(|&b| b == sep) {
        Some(end) => {
            let part = &rest[..end];
            *rest = &rest[end + 1..];
            part
        }
        None => std::mem::take(rest),
    }
}

/// Cuts a value at its first NUL, as C reads it through `strlen`.
fn c_string(mut v: Vec<u8>) -> Vec<u8> {
    if let Some(end) = v.iter().position(|&b| b == 0) {
        v.truncate(end);
    }
    v
}

fn bad_escape(field: usize, e: &UnescapeError) -> String {
    format!("{}: {e}", FIELDS[field])
}

fn int_field(field: usize, value: &[u8], radix: u32) -> Result<u64, String> {
    strtoull(value, radix).ok_or_else(|| {
        format!(
            "{}: invalid integer {:?}",
            FIELDS[field],
            String::from_utf8_lossy(value)
        )
    })
}

/// `SEC.NSEC`; both parts required. Seconds are stored as C's `time_t`
/// (the 64-bit value reinterpreted), nanoseconds in 32 bits.
fn mtime_field(value: &[u8]) -> Result<Timespec, String> {
    let mut rest = value;
    let sec = split_off(&mut rest, b'.');
    let sec = int_field(MTIME, sec, 10)?;
    let nsec = int_field(MTIME, rest, 10)?;
    Ok(Timespec {
        sec: sec as i64,
        nsec: nsec as u32,
    })
}

/// C `strtoull` requiring the whole string to be used: leading whitespace and
/// one sign are allowed, a negative value wraps, an overflow gives `u64::MAX`.
fn strtoull(s: &[u8], radix: u32) -> Option<u64> {
    let s = s.trim_ascii_start();
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, s),
    };
    if digits.is_empty() {
        return None;
    }
    let mut value = Some(0u64);
    for &c in digits {
        let digit = char::from(c).to_digit(radix)?;
        value = value
            .and_then(|v| v.checked_mul(u64::from(radix)))
            .and_then(|v| v.checked_add(u64::from(digit)));
    }
    Some(match value {
        None => u64::MAX,
        Some(v) if negative => v.wrapping_neg(),
        Some(v) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strtoull_table() {
        let cases: &[(&[u8], u32, Option<u64>)] = &[
            (b"0", 10, Some(0)),
            (b"42", 10, Some(42)),
            (b"+42", 10, Some(42)),
            (b"-1", 10, Some(u64::MAX)),
            (b"\t7", 10, Some(7)),
            (b"99999999999999999999999", 10, Some(u64::MAX)),
            (b"18446744073709551615", 10, Some(u64::MAX)),
            (b"18446744073709551616", 10, Some(u64::MAX)),
            (b"100644", 8, Some(0o100644)),
            (b"0100644", 8, Some(0o100644)),
            (b"", 10, None),
            (b" ", 10, None),
            (b"+", 10, None),
            (b"-", 10, None),
            (b"8", 8, None),
            (b"0x10", 10, None),
            (b"1a", 10, None),
            (b"1 ", 10, None),
        ];
        for (s, radix, want) in cases {
            assert_eq!(
                strtoull(s, *radix),
                *want,
                "strtoull({:?}, {radix})",
                String::from_utf8_lossy(s)
            );
        }
    }

    #[test]
    fn split_like_c() {
        let mut rest: &[u8] = b"a  b";
        assert_eq!(split_off(&mut rest, b' '), b"a");
        assert_eq!(split_off(&mut rest, b' '), b"");
        assert_eq!(split_off(&mut rest, b' '), b"b");
        assert_eq!(split_off(&mut rest, b' '), b"");
        assert!(rest.is_empty());
    }
}
