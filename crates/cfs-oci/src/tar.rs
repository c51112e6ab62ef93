//! One layer tar into a layer [`Tree`], storing file contents as they stream past.
//!
//! **Why the `tar` crate.** It reads ustar, GNU (long names and links) and
//! PAX (`path`, `linkpath`, `size`, `uid`, `gid`; the PAX size overrides the
//! ustar one, so the two can't disagree on where the next header is) over any
//! `Read`, hands out the raw header fields and the PAX records, and never
//! touches the file system unless asked to unpack, which we never do. What a
//! hand-written reader would have added is a cap on extension headers (GNU
//! `L`/`K` and PAX `x` records are read into memory whole): `Guard` adds
//! it from outside, by limiting how many bytes the crate may read between
//! two entries.
//!
//! **Hostile input.** Nothing here writes a file outside the object store:
//! entries only become nodes of the in-memory tree, and contents become
//! objects named by their digest. The rules, each failure naming the entry:
//! - paths: leading `/`, `./` and empty components are dropped (as GNU tar
//!   does); a `..` component, a NUL, a name over 255 bytes, a path over
//!   [`Limits::max_path`] bytes or [`Limits::max_depth`] components is
//!   rejected;
//! - a path through a symlink or any non-directory *of this layer* is
//!   rejected (nothing is ever followed); parents never described get an
//!   implicit directory (marked [`MARKER_IMPLICIT`], so a merge keeps the lower
//!   layer's metadata);
//! - duplicates: the later entry wins, as when a tar is extracted (a
//!   directory over a directory only updates its metadata);
//! - hard links: the target path is normalised the same way; a target in
//!   this layer must be a non-directory; a target not in this layer becomes
//!   a marker ([`MARKER_HARDLINK`]) that the merge resolves against the
//!   layers below, or rejects;
//! - the budget ([`Limits`]): entries, nodes (implicit directories count),
//!   the tree's memory (charged to the layer and to its image), sizes,
//!   xattr bytes, extension headers and sparse holes; a stream ending
//!   inside an entry is an error;
//! - numbers (mode, uid, gid, size, mtime, device numbers; octal, base-256
//!   or PAX) are read strictly (`tar/numeric.rs`): garbage, a negative value
//!   where none is allowed, or one that does not fit is an error naming
//!   the field; a PAX mtime keeps its nanoseconds;
//! - xattrs come from PAX `SCHILY.xattr.NAME`; names under the reserved
//!   `trusted.cfs.oci.` are rejected;
//! - sparse files, in every format GNU tar writes (old GNU `S`, PAX 0.0,
//!   0.1 and 1.0), are imported as the file they describe ([`sparse`]);
//!   unknown entry types are rejected; PAX global headers are ignored.
//!
//! **Whiteouts** become overlay whiteouts in the layer tree: `.wh.NAME` a
//! char device 0/0 named `NAME`, `.wh..wh..opq` the xattr
//! `trusted.overlay.opaque=y` on its directory (other `.wh..wh.*` names are
//! aufs bookkeeping and skipped). A whiteout never hides an entry of its own
//! layer: a file and its whiteout in one layer leave the file, and a
//! directory and its whiteout leave an opaque directory.

mod content;
mod first_block;
mod numeric;
mod pax;
pub mod sparse;

use content::Content;
use pax::PaxRecords;

use crate::limits::{node_cost, Exceeded, ImageCharge, LayerCharge, Limits};
use crate::{OciError, MARKER_HARDLINK, MARKER_IMPLICIT};
use ::tar::EntryType;
use cfs_format::overlay;
use cfs_format::tree::{self, mode, DirEntry, MAX_SYMLINK_LEN};
use cfs_format::{FileType, Node, NodeId, Stat, Timespec, Tree, Xattr};
use cfs_repo::store::{Inserted, ObjectStore, StoreError};
use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

/// What reading a layer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// Tar entries read.
    pub entries: u64,
    /// Non-empty regular files.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Objects that were new to the store.
    pub new_objects: u64,
    /// Bytes of those.
    pub new_bytes: u64,
}

/// Files up to this size are read into memory and stored on the rayon pool
/// while the tar stream moves on; larger ones stream straight into the store.
const PARALLEL_MAX: u64 = 4 << 20;
/// Bytes of such files in flight at once; past it, files are stored inline.
const IN_FLIGHT_MAX: u64 = 64 << 20;

/// Limits how many bytes the tar crate may read until the budget is renewed
/// (at every entry), which bounds what it buffers for extension headers
/// (PAX records, GNU long names and sparse maps): [`Limits::max_extension`].
struct Guard<R> {
    inner: R,
    budget: Rc<Cell<u64>>,
    max_extension: u64,
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.budget.get();
        if left == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "extension headers (PAX records, GNU long names, sparse maps) over the \
                     limit max_extension = {} bytes",
                    self.max_extension
                ),
            ));
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.budget.set(left - n as u64);
        Ok(n)
    }
}

/// How an entry's path is shown in errors: lossy UTF-8, at most 256 bytes
/// of it (a GNU long name can be much longer).
pub fn shown_path(raw: &[u8]) -> String {
    const SHOWN: usize = 256;
    if raw.len() <= SHOWN {
        return String::from_utf8_lossy(raw).into_owned();
    }
    format!(
        "{}… ({} bytes)",
        String::from_utf8_lossy(&raw[..SHOWN]),
        raw.len()
    )
}

/// Reads one layer tar (already decompressed) into a layer tree, storing
/// every regular file's content in `store`, then what follows the tar to
/// the end of `input` (at most [`Limits::max_trailer`] bytes). `layer` names the layer in
/// errors; its tree is charged to `image` (and held to the layer limits).
pub fn read_layer(
    input: &mut dyn Read,
    layer: &str,
    store: &ObjectStore,
    image: &ImageCharge,
) -> Result<(Tree, LayerStats), OciError> {
    let limits = image.limits();
    let first = first_block::read(input, layer)?;
    let mut input = io::Cursor::new(first).chain(input);
    let input: &mut dyn Read = &mut input;
    let budget = Rc::new(Cell::new(limits.max_extension + 1024));
    let mut archive = ::tar::Archive::new(Guard {
        inner: input,
        budget: budget.clone(),
        max_extension: limits.max_extension,
    });
    let shared = Shared {
        store,
        pending: Mutex::new(Vec::new()),
        in_flight: AtomicU64::new(0),
    };
    let mut reader = LayerReader {
        tree: Tree::new(implicit_dir()),
        layer,
        limits,
        charge: LayerCharge::new(image),
        shared: &shared,
        stats: LayerStats::default(),
        holes: 0,
    };
    reader.charge(NodeId::ROOT, 0, "/")?;
    let entries = archive.entries().map_err(|source| OciError::Stream {
        layer: layer.to_owned(),
        what: "could not read the tar".into(),
        source,
    })?;
    rayon::in_place_scope(|scope| -> Result<(), OciError> {
        let mut last = String::from("(start)");
        for entry in entries {
            let mut entry = entry.map_err(|source| OciError::Stream {
                layer: layer.to_owned(),
                what: format!("reading the entry after {last:?}"),
                source,
            })?;
            let size = entry.size();
            // This entry's data, its padding, and the next entry's headers.
            budget.set(
                size.saturating_add(1024)
                    .saturating_add(limits.max_extension),
            );
            last = shown_path(&entry.path_bytes());
            reader.entry(&mut entry, &last, scope)?;
        }
        Ok(())
    })?;
    read_trailer(archive.into_inner().inner, layer, limits)?;
    let pending = std::mem::take(&mut *shared.pending.lock().unwrap_or_else(|p| p.into_inner()));
    for (id, stored) in pending {
        let ins = stored?;
        reader.count_new(&ins);
        set_object(reader.tree.node_mut(id), ins.digest, None);
    }
    let stats = reader.stats;
    let tree = crate::merge::finish(reader.tree);
    Ok((tree, stats))
}

/// Reads what follows the tar's end-of-archive block to the end of the
/// stream (a pull hashes it for the `diff_id`; a broken or trailing
/// compressed frame there is an error), up to [`Limits::max_trailer`] bytes:
/// zeros without end are an empty archive that would be read forever.
fn read_trailer(rest: &mut dyn Read, layer: &str, limits: &Limits) -> Result<(), OciError> {
    let max = limits.max_trailer;
    let read = io::copy(
        &mut Read::take(rest, max.saturating_add(1)),
        &mut io::sink(),
    )
    .map_err(|source| OciError::Stream {
        layer: layer.to_owned(),
        what: "reading to the end, after the tar".into(),
        source,
    })?;
    if read > max {
        return Err(OciError::Invalid {
            what: layer.to_owned(),
            reason: format!(
                "more than {max} bytes after the end of the tar archive (over the limit \
                 max_trailer = {max}; a tar's padding to its record size is far less)"
            ),
        });
    }
    Ok(())
}

/// What the stores running on the pool share with the reading thread.
struct Shared<'a> {
    store: &'a ObjectStore,
    pending: Mutex<Vec<(NodeId, Result<Inserted, StoreError>)>>,
    in_flight: AtomicU64,
}

struct LayerReader<'a> {
    tree: Tree,
    layer: &'a str,
    limits: &'a Limits,
    /// What the tree costs, charged to the layer and its image.
    charge: LayerCharge<'a>,
    shared: &'a Shared<'a>,
    stats: LayerStats,
    /// Zeros added by sparse files' holes so far.
    holes: u64,
}

/// A directory the tar never described, made as the parent of an entry.
pub(crate) fn implicit_dir() -> Node {
    Node {
        // One xattr, allocated to fit: there can be many of these.
        xattrs: vec![Xattr {
            name: MARKER_IMPLICIT.to_vec(),
            value: Vec::new(),
        }],
        ..Node::new(Stat {
            mode: mode::S_IFDIR | 0o755,
            ..Stat::default()
        })
    }
}

/// True for a directory exactly as [`implicit_dir`] makes it (nothing the
/// tar said about it) that holds something: the layer record leaves those
/// out, as they come back from the paths below them, so a chain of them
/// costs no line of its own. An empty one keeps its line: nothing below it
/// would bring it back (an entry that adds nothing, such as the aufs
/// `.wh..wh.plnk`, still makes its parents, as when a tar is extracted).
pub(crate) fn implied_by_paths_below(node: &Node) -> bool {
    !node.entries.is_empty()
        && node.xattrs.len() == 1
        && node.xattr(MARKER_IMPLICIT) == Some(b"")
        && node.stat == implicit_dir().stat
        && node.payload.is_none()
        && node.content.is_none()
        && node.digest.is_none()
}

fn set_object(node: &mut Node, digest: cfs_format::Digest, content: Option<Vec<u8>>) {
    node.payload = Some(digest.object_path().into_bytes());
    node.digest = Some(digest);
    node.content = content;
}

/// Splits a tar path into its components: `/`, `.` and empty ones dropped,
/// `..` and NUL rejected, held to [`Limits::max_path`] and [`Limits::max_depth`].
pub fn normalize<'p>(raw: &'p [u8], limits: &Limits) -> Result<Vec<&'p [u8]>, String> {
    if raw.len() > limits.max_path {
        return Err(format!(
            "path of {} bytes, over the limit max_path = {}",
            raw.len(),
            limits.max_path
        ));
    }
    if raw.contains(&0) {
        return Err("NUL byte in path".into());
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path has a `..` component".into()),
            c if c.len() > cfs_format::tree::MAX_NAME_LEN => {
                return Err("a path component is longer than 255 bytes".into())
            }
            c => out.push(c),
        }
    }
    if out.len() > limits.max_depth {
        return Err(format!(
            "path of {} components, over the limit max_depth = {}",
            out.len(),
            limits.max_depth
        ));
    }
    Ok(out)
}

fn join(comps: &[&[u8]]) -> String {
    shown_path(&comps.join(&b'/'))
}

impl<'a> LayerReader<'a> {
    fn err(&self, path: &str, reason: impl Into<String>) -> OciError {
        OciError::Entry {
            layer: self.layer.to_owned(),
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    /// A limit of the budget this entry goes over.
    fn over(&self, path: &str, e: Exceeded) -> OciError {
        let what = match e.limit {
            "max_layer_nodes" => {
                "nodes in this layer (its entries and the directories their paths imply)"
            }
            "max_layer_bytes" => "memory of this layer's tree",
            "max_image_nodes" => "nodes in the image's layers",
            "max_image_bytes" => "memory of the image's layer trees",
            other => other,
        };
        self.err(path, format!("{what} {e}"))
    }

    /// Charges node `id` (named by a `name_len`-byte name) to the budget.
    fn charge(&mut self, id: NodeId, name_len: usize, shown: &str) -> Result<(), OciError> {
        let cost = node_cost(self.tree.node(id), name_len);
        self.charge.node(cost).map_err(|e| self.over(shown, e))
    }

    /// Adds `node` to the tree as `name` in `dir`, charging it.
    fn add(
        &mut self,
        dir: NodeId,
        name: &[u8],
        node: Node,
        shown: &str,
    ) -> Result<NodeId, OciError> {
        let id = self.tree.add_node(node);
        self.charge(id, name.len(), shown)?;
        // A directory's first entry gets room for one only: most implicit
        // directories never get a second.
        let entries = &mut self.tree.node_mut(dir).entries;
        if entries.capacity() == 0 {
            entries.reserve_exact(1);
        }
        self.tree
            .link(dir, name, id, false)
            .map_err(|e| self.err(shown, e.to_string()))?;
        Ok(id)
    }

    fn count_new(&mut self, ins: &Inserted) {
        if ins.new {
            self.stats.new_objects += 1;
            self.stats.new_bytes += ins.size;
        }
    }

    /// The directory at `comps`, creating implicit directories on the way;
    /// a non-directory on the way is an error.
    fn dir_at(&mut self, comps: &[&[u8]], shown: &str) -> Result<NodeId, OciError> {
        let mut cur = NodeId::ROOT;
        for (i, c) in comps.iter().enumerate() {
            match self.tree.node(cur).entry(c).map(|e| e.node) {
                Some(n) if self.tree.node(n).file_type() == Some(FileType::Directory) => cur = n,
                Some(_) => {
                    return Err(self.err(
                        shown,
                        format!(
                            "{:?} is not a directory in this layer; nothing is created through it",
                            join(&comps[..=i])
                        ),
                    ))
                }
                None => cur = self.add(cur, c, implicit_dir(), shown)?,
            }
        }
        Ok(cur)
    }

    /// Reads one tar entry into the layer tree: the steps below, in order.
    fn entry<R: Read>(
        &mut self,
        entry: &mut ::tar::Entry<'_, R>,
        shown: &str,
        scope: &rayon::Scope<'a>,
    ) -> Result<(), OciError> {
        self.stats.entries += 1;
        if self.stats.entries > self.limits.max_entries {
            return Err(self.err(
                shown,
                format!(
                    "more than {} entries in one layer (the limit max_entries)",
                    self.limits.max_entries
                ),
            ));
        }
        let et = entry.header().entry_type();
        if et.is_pax_global_extensions() {
            return Ok(());
        }
        let mut pax = self.pax_records(entry, shown)?;
        let ftype = self.file_type(et, shown)?;
        let content = self.content_kind(entry, et, &mut pax, shown)?;
        let raw_path = match &content {
            Content::Sparse(s) => s
                .name
                .clone()
                .unwrap_or_else(|| entry.path_bytes().into_owned()),
            _ => entry.path_bytes().into_owned(),
        };
        // A PAX sparse file is named by its real name from here on.
        let real_name = shown_path(&raw_path);
        let shown = if matches!(content, Content::Sparse(_)) {
            real_name.as_str()
        } else {
            shown
        };
        let comps = normalize(&raw_path, self.limits).map_err(|r| self.err(shown, r))?;
        let mut stat = self.header_stat(entry.header(), &pax, shown)?;
        stat.mode |= ftype.mode_bits();

        let Some((name, parent_comps)) = comps.split_last() else {
            // The root itself ("./" or "/").
            if ftype != FileType::Directory || et == EntryType::Link {
                return Err(self.err(shown, "the root must be a directory"));
            }
            let root = self.tree.node_mut(NodeId::ROOT);
            root.stat = stat;
            apply_dir_xattrs(root, pax.xattrs);
            let cost = node_cost(self.tree.node(NodeId::ROOT), 0);
            return self.charge.bytes(cost).map_err(|e| self.over(shown, e));
        };
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            return self.whiteout(parent_comps, hidden, stat.mtime, shown);
        }
        let at = Place {
            dir: self.dir_at(parent_comps, shown)?,
            name,
        };
        if et == EntryType::Link {
            return self.hard_link(entry, at, stat, shown);
        }
        let mut node = Node::new(stat);
        node.xattrs = pax.xattrs;
        if ftype == FileType::Directory {
            self.directory(at, node, shown)
        } else {
            self.file(entry, at, node, content, shown, scope)
        }
    }

    /// The permission bits, owner and mtime of the entry, from its header
    /// or PAX records (which win), read strictly; the file type bits are
    /// added by the caller. A blank header field reads as 0, as Go's
    /// archive/tar and GNU tar do.
    fn header_stat(
        &self,
        h: &::tar::Header,
        pax: &PaxRecords,
        shown: &str,
    ) -> Result<Stat, OciError> {
        let old = h.as_old();
        let field = |name: &str, raw: &[u8], max: u64| {
            numeric::header_unsigned(raw, max)
                .map_err(|e| self.err(shown, format!("header field {name}: {e}")))
        };
        let perm = field("mode", &old.mode, u32::MAX.into())?.unwrap_or(0) as u32 & 0o7777;
        let uid = match pax.uid {
            Some(u) => u,
            None => field("uid", &old.uid, u32::MAX.into())?.unwrap_or(0) as u32,
        };
        let gid = match pax.gid {
            Some(g) => g,
            None => field("gid", &old.gid, u32::MAX.into())?.unwrap_or(0) as u32,
        };
        let mtime = match pax.mtime {
            Some(t) => t,
            None => Timespec {
                sec: numeric::header_field(&old.mtime)
                    .map_err(|e| self.err(shown, format!("header field mtime: {e}")))?
                    .unwrap_or(0),
                nsec: 0,
            },
        };
        Ok(Stat {
            mode: perm,
            uid,
            gid,
            nlink: 1,
            rdev: 0,
            size: 0,
            mtime,
        })
    }

    /// The file type an entry type makes; a hard link is a regular file
    /// until [`Self::hard_link`] resolves it, an old GNU sparse file a
    /// regular file. Other types are refused.
    fn file_type(&self, et: EntryType, shown: &str) -> Result<FileType, OciError> {
        Ok(match et {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => FileType::Regular,
            EntryType::Directory => FileType::Directory,
            EntryType::Symlink => FileType::Symlink,
            EntryType::Link => FileType::Regular,
            EntryType::Char => FileType::CharDevice,
            EntryType::Block => FileType::BlockDevice,
            EntryType::Fifo => FileType::Fifo,
            other => {
                return Err(self.err(
                    shown,
                    format!("unsupported entry type {:?}", other.as_byte() as char),
                ))
            }
        })
    }

    /// `.wh.NAME` in `parent_comps`: an overlay whiteout for `hidden`, or
    /// for `.wh..wh..opq` the opaque marker on the directory.
    fn whiteout(
        &mut self,
        parent_comps: &[&[u8]],
        hidden: &[u8],
        mtime: Timespec,
        shown: &str,
    ) -> Result<(), OciError> {
        let dir = self.dir_at(parent_comps, shown)?;
        if hidden == b".wh..opq" {
            self.tree.node_mut(dir).set_xattr(overlay::OPAQUE, b"y");
            return Ok(());
        }
        if hidden.starts_with(b".wh.") {
            return Ok(()); // aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs)
        }
        Tree::check_name(hidden).map_err(|e| self.err(shown, format!("bad whiteout: {e}")))?;
        match self.tree.node(dir).entry(hidden).map(|e| e.node) {
            // A whiteout never hides its own layer's entry; a directory
            // here becomes opaque (the lower one is gone, this one stays).
            Some(n) => {
                if self.tree.node(n).file_type() == Some(FileType::Directory) {
                    self.tree.node_mut(n).set_xattr(overlay::OPAQUE, b"y");
                }
            }
            None => {
                let w = Node::new(Stat {
                    mode: mode::S_IFCHR,
                    mtime,
                    nlink: 1,
                    ..Stat::default()
                });
                self.add(dir, hidden, w, shown)?;
            }
        }
        Ok(())
    }

    /// A hard link: to its target if this layer has it (not a directory or
    /// a whiteout), else to a marker node the merge resolves below.
    fn hard_link<R: Read>(
        &mut self,
        entry: &::tar::Entry<'_, R>,
        at: Place<'_>,
        stat: Stat,
        shown: &str,
    ) -> Result<(), OciError> {
        let target_raw = entry
            .link_name_bytes()
            .map(|c| c.into_owned())
            .unwrap_or_default();
        let tcomps = normalize(&target_raw, self.limits)
            .map_err(|r| self.err(shown, format!("hard link target: {r}")))?;
        if tcomps.is_empty() {
            return Err(self.err(shown, "hard link to the root"));
        }
        let tpath = tcomps.join(&b'/');
        let target = match self.tree.lookup_path(&tpath) {
            Some(t) => {
                let tn = self.tree.node(t);
                if tn.file_type() == Some(FileType::Directory) {
                    return Err(self.err(shown, "hard link to a directory"));
                }
                if overlay::is_whiteout(tn.stat.mode, tn.stat.rdev) {
                    return Err(self.err(shown, "hard link to a whiteout"));
                }
                t
            }
            None => {
                // Not in this layer: the merge resolves it below.
                let mut n = Node::new(stat);
                n.set_xattr(MARKER_HARDLINK, &tpath);
                let id = self.tree.add_node(n);
                self.charge(id, 0, shown)?;
                id
            }
        };
        if self.tree.node(at.dir).entry(at.name).map(|e| e.node) == Some(target) {
            return Ok(());
        }
        // The name costs an entry and its bytes.
        let entry_cost = (std::mem::size_of::<DirEntry>() + at.name.len()) as u64;
        self.charge
            .bytes(entry_cost)
            .map_err(|e| self.over(shown, e))?;
        self.tree.unlink(at.dir, at.name);
        self.tree
            .link(at.dir, at.name, target, true)
            .map_err(|e| self.err(shown, e.to_string()))
    }

    /// A directory over one of this layer updates its metadata; over
    /// anything else it replaces it (and is opaque if that was a whiteout).
    fn directory(&mut self, at: Place<'_>, mut node: Node, shown: &str) -> Result<(), OciError> {
        let existing = self.tree.node(at.dir).entry(at.name).map(|e| e.node);
        match existing {
            Some(n) if self.tree.node(n).file_type() == Some(FileType::Directory) => {
                let cost = node_cost(&node, 0);
                self.charge.bytes(cost).map_err(|e| self.over(shown, e))?;
                let dir = self.tree.node_mut(n);
                dir.stat = node.stat;
                apply_dir_xattrs(dir, node.xattrs);
            }
            _ => {
                let was_whiteout = existing.is_some_and(|n| {
                    let stat = &self.tree.node(n).stat;
                    overlay::is_whiteout(stat.mode, stat.rdev)
                });
                self.tree.unlink(at.dir, at.name);
                if was_whiteout {
                    node.set_xattr(overlay::OPAQUE, b"y");
                }
                self.add(at.dir, at.name, node, shown)?;
            }
        }
        Ok(())
    }

    /// Any other entry replaces what this layer had at its name: a symlink
    /// with its target, a device with its number, a regular file with its
    /// content stored (a small one on the pool, after it is linked).
    fn file<R: Read>(
        &mut self,
        entry: &mut ::tar::Entry<'_, R>,
        at: Place<'_>,
        mut node: Node,
        content: Content,
        shown: &str,
        scope: &rayon::Scope<'a>,
    ) -> Result<(), OciError> {
        let mut job = None;
        match node.file_type() {
            Some(FileType::Symlink) => {
                let target = entry
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                if target.is_empty() || target.len() > MAX_SYMLINK_LEN || target.contains(&0) {
                    return Err(self.err(
                        shown,
                        format!("symlink target empty, over {MAX_SYMLINK_LEN} bytes or with NUL"),
                    ));
                }
                node.stat.size = target.len() as u64;
                node.payload = Some(target);
            }
            Some(FileType::CharDevice | FileType::BlockDevice) => {
                node.stat.rdev = self.device_number(entry.header(), shown)?;
            }
            Some(FileType::Regular) => job = self.regular(entry, content, &mut node, shown)?,
            _ => {}
        }
        self.tree.unlink(at.dir, at.name);
        let id = self.add(at.dir, at.name, node, shown)?;
        if let Some(data) = job {
            self.store_on_pool(id, data, shown, scope);
        }
        Ok(())
    }

    /// The device number in a device entry's header, read strictly.
    fn device_number(&self, h: &::tar::Header, shown: &str) -> Result<u64, OciError> {
        let Some(ustar) = h
            .as_ustar()
            .map(|u| (u.dev_major, u.dev_minor))
            .or_else(|| h.as_gnu().map(|g| (g.dev_major, g.dev_minor)))
        else {
            return Ok(0);
        };
        // An image holds 12 bits of major and 20 of minor (cfs-format's
        // rule): a larger number would name another device there.
        let field = |name: &str, raw: &[u8], max: u64| {
            numeric::header_unsigned(raw, max)
                .map(|v| v.unwrap_or(0))
                .map_err(|e| self.err(shown, format!("header field {name}: {e}")))
        };
        let major = field("devmajor", &ustar.0, tree::MAX_DEVICE_MAJOR)?;
        let minor = field("devminor", &ustar.1, tree::MAX_DEVICE_MINOR)?;
        Ok(tree::makedev(major, minor).unwrap_or_default())
    }
}

/// Where an entry goes: its directory in the layer tree and its name there.
struct Place<'n> {
    dir: NodeId,
    name: &'n [u8],
}

/// Sets a directory's xattrs from its tar entry, keeping the opaque marker a
/// `.wh..wh..opq` may have set and dropping the implicit marker.
fn apply_dir_xattrs(node: &mut Node, xattrs: Vec<Xattr>) {
    let opaque = node.xattr(overlay::OPAQUE).map(<[u8]>::to_vec);
    node.xattrs = xattrs;
    if let Some(v) = opaque {
        node.set_xattr(overlay::OPAQUE, &v);
    }
}

#[cfg(test)]
mod tests;
