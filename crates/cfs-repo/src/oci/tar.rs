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
//!   does); a `..` component, a NUL, a name over 255 bytes or a path over
//!   [`Limits::max_path`] is rejected;
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
//! - sizes, entry counts, xattr bytes and extension headers are capped
//!   ([`Limits`]); a stream ending inside an entry is an error;
//! - xattrs come from PAX `SCHILY.xattr.NAME`; names under the reserved
//!   `trusted.cfs.oci.` are rejected;
//! - sparse files and unknown entry types are rejected; PAX global headers
//!   are ignored.
//!
//! **Whiteouts** become overlay whiteouts in the layer tree: `.wh.NAME` a
//! char device 0/0 named `NAME`, `.wh..wh..opq` the xattr
//! `trusted.overlay.opaque=y` on its directory (other `.wh..wh.*` names are
//! aufs bookkeeping and skipped). A whiteout never hides an entry of its own
//! layer: a file and its whiteout in one layer leave the file, and a
//! directory and its whiteout leave an opaque directory.

use super::{OciError, MARKER_HARDLINK, MARKER_IMPLICIT, MARKER_PREFIX};
use crate::scan::INLINE_CONTENT_MAX;
use crate::store::{Inserted, ObjectStore, StoreError};
use ::tar::EntryType;
use cfs_format::overlay;
use cfs_format::tree::{mode, set_xattr, MAX_SYMLINK_LEN, MAX_XATTR_NAME_LEN};
use cfs_format::{FileType, Node, NodeId, Stat, Timespec, Tree, Xattr};
use std::cell::Cell;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Caps on what one layer may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Entries in the tar.
    pub max_entries: u64,
    /// Size of one file.
    pub max_file_size: u64,
    /// Bytes of one path (after PAX/GNU long names).
    pub max_path: usize,
    /// Bytes of one entry's xattrs (names and values).
    pub max_xattr_bytes: usize,
    /// Bytes of extension headers (GNU long names, PAX records) before one entry.
    pub max_extension: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 1 << 22,
            max_file_size: 1 << 40,
            max_path: 4096,
            max_xattr_bytes: 1 << 20,
            max_extension: 1 << 20,
        }
    }
}

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

/// The decompressed stream of a layer: gzip and zstd are recognised by their
/// magic bytes (media types are not trusted: docker archives say nothing),
/// anything else is read as a plain tar.
pub fn decompress<'a, R: Read + 'a>(reader: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut buf = BufReader::with_capacity(256 * 1024, reader);
    let head = buf.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(buf)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let dec = ruzstd::decoding::StreamingDecoder::new(buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        Ok(Box::new(dec))
    } else {
        Ok(Box::new(buf))
    }
}

/// Limits how many bytes the tar crate may read until the budget is renewed
/// (at every entry), which bounds what it buffers for extension headers.
struct Guard<R> {
    inner: R,
    budget: Rc<Cell<u64>>,
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.budget.get();
        if left == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "extension headers (long names, PAX records) over the size limit",
            ));
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.budget.set(left - n as u64);
        Ok(n)
    }
}

/// Reads one layer tar (already decompressed) into a layer tree, storing
/// every regular file's content in `store`. `layer` names the layer in errors.
pub fn read_layer(
    input: &mut dyn Read,
    layer: &str,
    store: &ObjectStore,
    limits: &Limits,
) -> Result<(Tree, LayerStats), OciError> {
    let first = first_block(input, layer)?;
    let mut input = io::Cursor::new(first).chain(input);
    let input: &mut dyn Read = &mut input;
    let budget = Rc::new(Cell::new(limits.max_extension + 1024));
    let mut archive = ::tar::Archive::new(Guard {
        inner: input,
        budget: budget.clone(),
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
        shared: &shared,
        stats: LayerStats::default(),
    };
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
            last = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            reader.entry(&mut entry, &last, scope)?;
        }
        Ok(())
    })?;
    let pending = std::mem::take(&mut *shared.pending.lock().unwrap_or_else(|p| p.into_inner()));
    for (id, stored) in pending {
        let ins = stored?;
        reader.count_new(&ins);
        set_object(reader.tree.node_mut(id), ins.digest, None);
    }
    let tree = super::merge::finish(&reader.tree);
    Ok((tree, reader.stats))
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
    shared: &'a Shared<'a>,
    stats: LayerStats,
}

fn implicit_dir() -> Node {
    let mut n = Node::new(Stat {
        mode: mode::S_IFDIR | 0o755,
        ..Stat::default()
    });
    n.set_xattr(MARKER_IMPLICIT, b"");
    n
}

fn set_object(node: &mut Node, digest: cfs_format::Digest, content: Option<Vec<u8>>) {
    node.payload = Some(digest.object_path().into_bytes());
    node.digest = Some(digest);
    node.content = content;
}

/// Linux `makedev`.
fn makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xffff_f000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0xff)
}

/// Splits a tar path into its components: `/`, `.` and empty ones dropped,
/// `..` and NUL rejected.
pub fn normalize(raw: &[u8], max_path: usize) -> Result<Vec<&[u8]>, String> {
    if raw.len() > max_path {
        return Err(format!("path longer than {max_path} bytes"));
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
    Ok(out)
}

fn join(comps: &[&[u8]]) -> String {
    String::from_utf8_lossy(&comps.join(&b'/')).into_owned()
}

impl<'a> LayerReader<'a> {
    fn err(&self, path: &str, reason: impl Into<String>) -> OciError {
        OciError::Entry {
            layer: self.layer.to_owned(),
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    /// A numeric header field (`what`) that does not parse.
    fn bad_field(&self, path: &str, what: &str, e: io::Error) -> OciError {
        self.err(path, format!("bad {what} field: {e}"))
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
                None => {
                    let n = self.tree.add_node(implicit_dir());
                    self.tree
                        .link(cur, c, n, false)
                        .map_err(|e| self.err(shown, e.to_string()))?;
                    cur = n;
                }
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
                format!("more than {} entries in one layer", self.limits.max_entries),
            ));
        }
        let et = entry.header().entry_type();
        if et.is_pax_global_extensions() {
            return Ok(());
        }
        let pax = self.pax_records(entry, shown)?;
        let raw_path = entry.path_bytes().into_owned();
        let comps = normalize(&raw_path, self.limits.max_path).map_err(|r| self.err(shown, r))?;
        let mut stat = self.header_stat(entry.header(), pax.mtime, shown)?;
        let ftype = self.file_type(et, shown)?;
        stat.mode |= ftype.mode_bits();

        let Some((name, parent_comps)) = comps.split_last() else {
            // The root itself ("./" or "/").
            if ftype != FileType::Directory || et == EntryType::Link {
                return Err(self.err(shown, "the root must be a directory"));
            }
            let root = self.tree.node_mut(NodeId::ROOT);
            root.stat = stat;
            apply_dir_xattrs(root, pax.xattrs);
            return Ok(());
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
            self.file(entry, at, node, shown, scope)
        }
    }

    /// What the entry's PAX records add: xattrs (`SCHILY.xattr.NAME`, within
    /// the limits, none reserved) and a precise mtime.
    fn pax_records<R: Read>(
        &self,
        entry: &mut ::tar::Entry<'_, R>,
        shown: &str,
    ) -> Result<PaxRecords, OciError> {
        let mut pax = PaxRecords::default();
        let mut xattr_bytes = 0usize;
        let Some(records) = entry
            .pax_extensions()
            .map_err(|e| self.err(shown, format!("bad PAX records: {e}")))?
        else {
            return Ok(pax);
        };
        for ext in records {
            let ext = ext.map_err(|e| self.err(shown, format!("bad PAX record: {e}")))?;
            let key = ext.key_bytes();
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                if name.is_empty() || name.len() > MAX_XATTR_NAME_LEN || name.contains(&0) {
                    return Err(self.err(shown, "invalid xattr name"));
                }
                if name.starts_with(MARKER_PREFIX) {
                    return Err(self.err(
                        shown,
                        format!("xattr {} is reserved", String::from_utf8_lossy(name)),
                    ));
                }
                xattr_bytes += name.len() + ext.value_bytes().len();
                if xattr_bytes > self.limits.max_xattr_bytes {
                    return Err(self.err(
                        shown,
                        format!("xattrs over {} bytes", self.limits.max_xattr_bytes),
                    ));
                }
                set_xattr(&mut pax.xattrs, name, ext.value_bytes());
            } else if key == b"mtime" {
                pax.mtime = parse_pax_time(ext.value_bytes());
            }
        }
        Ok(pax)
    }

    /// The permission bits, owner and mtime in the entry's header (a PAX
    /// mtime wins); the file type bits are added by the caller.
    fn header_stat(
        &self,
        h: &::tar::Header,
        pax_mtime: Option<Timespec>,
        shown: &str,
    ) -> Result<Stat, OciError> {
        let perm = h.mode().map_err(|e| self.bad_field(shown, "mode", e))? & 0o7777;
        // An empty numeric field reads as 0, as Go's archive/tar and GNU tar do.
        let blank = |f: &[u8]| f.iter().all(|&b| b == 0 || b == b' ');
        let old = h.as_old();
        let uid = if blank(&old.uid) {
            0
        } else {
            h.uid().map_err(|e| self.bad_field(shown, "uid", e))?
        };
        let gid = if blank(&old.gid) {
            0
        } else {
            h.gid().map_err(|e| self.bad_field(shown, "gid", e))?
        };
        let (uid, gid) = match (u32::try_from(uid), u32::try_from(gid)) {
            (Ok(u), Ok(g)) => (u, g),
            _ => return Err(self.err(shown, "uid or gid above 2^32-1")),
        };
        let mtime = match pax_mtime {
            Some(t) => t,
            None => Timespec {
                sec: if blank(&old.mtime) {
                    0
                } else {
                    let sec = h.mtime().map_err(|e| self.bad_field(shown, "mtime", e))?;
                    i64::try_from(sec).unwrap_or(i64::MAX)
                },
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
    /// until [`Self::hard_link`] resolves it. Sparse files and other types
    /// are refused.
    fn file_type(&self, et: EntryType, shown: &str) -> Result<FileType, OciError> {
        Ok(match et {
            EntryType::Regular | EntryType::Continuous => FileType::Regular,
            EntryType::Directory => FileType::Directory,
            EntryType::Symlink => FileType::Symlink,
            EntryType::Link => FileType::Regular,
            EntryType::Char => FileType::CharDevice,
            EntryType::Block => FileType::BlockDevice,
            EntryType::Fifo => FileType::Fifo,
            EntryType::GNUSparse => return Err(self.err(shown, "sparse files are not supported")),
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
                let w = self.tree.add_node(Node::new(Stat {
                    mode: mode::S_IFCHR,
                    mtime,
                    nlink: 1,
                    ..Stat::default()
                }));
                self.tree
                    .link(dir, hidden, w, false)
                    .map_err(|e| self.err(shown, e.to_string()))?;
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
        let tcomps = normalize(&target_raw, self.limits.max_path)
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
                self.tree.add_node(n)
            }
        };
        if self.tree.node(at.dir).entry(at.name).map(|e| e.node) == Some(target) {
            return Ok(());
        }
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
                let n = self.tree.add_node(node);
                self.tree
                    .link(at.dir, at.name, n, false)
                    .map_err(|e| self.err(shown, e.to_string()))?;
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
            Some(FileType::Regular) => job = self.content(entry, &mut node, shown)?,
            _ => {}
        }
        self.tree.unlink(at.dir, at.name);
        let id = self.tree.add_node(node);
        self.tree
            .link(at.dir, at.name, id, false)
            .map_err(|e| self.err(shown, e.to_string()))?;
        if let Some(data) = job {
            self.store_on_pool(id, data, shown, scope);
        }
        Ok(())
    }

    /// The device number in a device entry's header.
    fn device_number(&self, h: &::tar::Header, shown: &str) -> Result<u64, OciError> {
        let major = h
            .device_major()
            .map_err(|e| self.bad_field(shown, "device major", e))?
            .unwrap_or(0);
        let minor = h
            .device_minor()
            .map_err(|e| self.bad_field(shown, "device minor", e))?
            .unwrap_or(0);
        Ok(makedev(major.into(), minor.into()))
    }

    /// A regular file's content, within the size limit: a small file is
    /// kept inline, a mid-sized one is read into memory and returned to be
    /// stored on the pool (while the in-flight budget allows), a large one
    /// streams into the store here.
    fn content<R: Read>(
        &mut self,
        entry: &mut ::tar::Entry<'_, R>,
        node: &mut Node,
        shown: &str,
    ) -> Result<Option<Vec<u8>>, OciError> {
        let size = entry.size();
        if size > self.limits.max_file_size {
            return Err(self.err(
                shown,
                format!(
                    "size {size} over the limit of {}",
                    self.limits.max_file_size
                ),
            ));
        }
        node.stat.size = size;
        if size == 0 {
            return Ok(None);
        }
        self.stats.files += 1;
        self.stats.bytes += size;
        let read_err = |e: io::Error| OciError::Stream {
            layer: self.layer.to_owned(),
            what: format!("reading the content of {shown:?}"),
            source: e,
        };
        if size <= INLINE_CONTENT_MAX {
            let mut data = vec![0u8; size as usize];
            entry.read_exact(&mut data).map_err(read_err)?;
            set_object(node, cfs_format::fsverity::digest(&data), Some(data));
        } else if size <= PARALLEL_MAX
            && self.shared.in_flight.load(Ordering::Relaxed) + size <= IN_FLIGHT_MAX
        {
            let mut data = vec![0u8; size as usize];
            entry.read_exact(&mut data).map_err(read_err)?;
            return Ok(Some(data));
        } else {
            let ins = self
                .shared
                .store
                .insert_reader(entry, size, Path::new(shown))
                .map_err(|e| match e {
                    StoreError::SourceChanged { what, .. } => self.err(shown, what),
                    e => OciError::Store(e),
                })?;
            self.count_new(&ins);
            set_object(node, ins.digest, None);
        }
        Ok(None)
    }

    /// Stores `data`, the content of node `id`, on the rayon pool; the
    /// result is applied to the node when the layer is read.
    fn store_on_pool(&self, id: NodeId, data: Vec<u8>, shown: &str, scope: &rayon::Scope<'a>) {
        let size = data.len() as u64;
        let shared = self.shared;
        let shown = shown.to_owned();
        shared.in_flight.fetch_add(size, Ordering::Relaxed);
        scope.spawn(move |_| {
            let r = shared.store.insert_bytes_as(&data, &shown);
            shared.in_flight.fetch_sub(size, Ordering::Relaxed);
            shared
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((id, r));
        });
    }
}

/// What an entry's PAX records add to its header.
#[derive(Default)]
struct PaxRecords {
    /// `SCHILY.xattr.NAME` records, a repeated name replacing the value.
    xattrs: Vec<Xattr>,
    /// The `mtime` record, if it parses.
    mtime: Option<Timespec>,
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

/// A PAX time, `SECONDS[.FRACTION]` (seconds may be negative).
fn parse_pax_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?;
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec: i64 = sec.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nsec: u32 = digits.parse().ok()?;
    Some(if sec < 0 && nsec > 0 {
        Timespec {
            sec: sec - 1,
            nsec: 1_000_000_000 - nsec,
        }
    } else {
        Timespec { sec, nsec }
    })
}

/// Reads the first 512-byte block and checks that the stream is a tar
/// archive, as GNU tar does before reading on: an empty stream or one
/// shorter than a block is refused, and so is a first block that is
/// neither all zeros (an empty archive) nor a header whose checksum holds.
/// Without this, an empty file would import as an empty image and a random
/// one fail deep in the tar reader, quoting its bytes.
fn first_block(input: &mut dyn Read, layer: &str) -> Result<Vec<u8>, OciError> {
    let mut block = Vec::with_capacity(512);
    input
        .take(512)
        .read_to_end(&mut block)
        .map_err(|source| OciError::Stream {
            layer: layer.to_owned(),
            what: "could not read the tar".into(),
            source,
        })?;
    let not_tar = |reason: String| OciError::Invalid {
        what: layer.to_owned(),
        reason: format!("not a tar archive: {reason}"),
    };
    match block.len() {
        0 => return Err(not_tar("it is empty".into())),
        n if n < 512 => {
            return Err(not_tar(format!(
                "{n} bytes, less than one 512-byte tar block"
            )))
        }
        _ => {}
    }
    if block.iter().all(|&b| b == 0) || header_checksum_holds(&block) {
        Ok(block)
    } else {
        Err(not_tar(
            "its first 512 bytes are no tar header (the checksum does not match)".into(),
        ))
    }
}

/// The ustar/GNU header checksum: the sum of the header's bytes with the
/// checksum field (bytes 148..156) counted as spaces equals the octal
/// number in that field (unsigned sums; some old tars used signed ones).
fn header_checksum_holds(header: &[u8]) -> bool {
    let field = &header[148..156];
    let text: String = field
        .iter()
        .map(|&b| b as char)
        .take_while(|c| *c != '\0')
        .collect();
    let Ok(stored) = u32::from_str_radix(text.trim(), 8) else {
        return false;
    };
    let sum = |signed: bool| -> i64 {
        header
            .iter()
            .enumerate()
            .map(|(i, &b)| match (i, signed) {
                (148..=155, _) => i64::from(b' '),
                (_, true) => i64::from(b as i8),
                (_, false) => i64::from(b),
            })
            .sum()
    };
    i64::from(stored) == sum(false) || i64::from(stored) == sum(true)
}

#[cfg(test)]
mod tests;
