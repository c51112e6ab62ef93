//! The in-memory filesystem tree that every source produces (dumpfile parser,
//! directory scan, image reader, tar import) and the image writer consumes.
//!
//! Nodes live in an arena and are named by [`NodeId`]; node 0 is the root.
//! A directory's entries are kept sorted by name bytes (C `strcmp` order),
//! which is the order composefs writes them in. A hard link is a second entry
//! naming an existing node, marked `hardlink: true`; the node's first,
//! primary entry decides where it falls in the image's inode order.

use crate::fsverity::Digest;

/// `S_IFMT` and the file type bits of `st_mode`.
pub mod mode {
    /// Mask of the file type bits.
    pub const S_IFMT: u32 = 0o170000;
    /// Socket.
    pub const S_IFSOCK: u32 = 0o140000;
    /// Symbolic link.
    pub const S_IFLNK: u32 = 0o120000;
    /// Regular file.
    pub const S_IFREG: u32 = 0o100000;
    /// Block device.
    pub const S_IFBLK: u32 = 0o060000;
    /// Directory.
    pub const S_IFDIR: u32 = 0o040000;
    /// Character device.
    pub const S_IFCHR: u32 = 0o020000;
    /// FIFO.
    pub const S_IFIFO: u32 = 0o010000;
}

/// The type of a node, decoded from the `S_IFMT` bits of its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    /// Regular file.
    Regular,
    /// Directory.
    Directory,
    /// Symbolic link.
    Symlink,
    /// Block device.
    BlockDevice,
    /// Character device (rdev 0/0 is an overlay whiteout).
    CharDevice,
    /// FIFO.
    Fifo,
    /// Socket.
    Socket,
}

impl FileType {
    /// Decodes the `S_IFMT` bits of a mode; `None` for an invalid type.
    pub const fn from_mode(m: u32) -> Option<Self> {
        Some(match m & mode::S_IFMT {
            mode::S_IFREG => FileType::Regular,
            mode::S_IFDIR => FileType::Directory,
            mode::S_IFLNK => FileType::Symlink,
            mode::S_IFBLK => FileType::BlockDevice,
            mode::S_IFCHR => FileType::CharDevice,
            mode::S_IFIFO => FileType::Fifo,
            mode::S_IFSOCK => FileType::Socket,
            _ => return None,
        })
    }

    /// The `S_IFMT` bits of this type.
    pub const fn mode_bits(self) -> u32 {
        match self {
            FileType::Regular => mode::S_IFREG,
            FileType::Directory => mode::S_IFDIR,
            FileType::Symlink => mode::S_IFLNK,
            FileType::BlockDevice => mode::S_IFBLK,
            FileType::CharDevice => mode::S_IFCHR,
            FileType::Fifo => mode::S_IFIFO,
            FileType::Socket => mode::S_IFSOCK,
        }
    }
}

/// Index of a node in a [`Tree`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u32);

impl NodeId {
    /// The root directory.
    pub const ROOT: NodeId = NodeId(0);

    /// The arena index.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// A point in time as seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timespec {
    /// Seconds.
    pub sec: i64,
    /// Nanoseconds, below 1e9.
    pub nsec: u32,
}

/// The stat fields composefs keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stat {
    /// File type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count (recomputed for directories by the writer).
    pub nlink: u32,
    /// Device number of a device node (Linux `dev_t` encoding).
    pub rdev: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time.
    pub mtime: Timespec,
}

impl Stat {
    /// The file type, `None` when the mode has no valid type.
    pub const fn file_type(&self) -> Option<FileType> {
        FileType::from_mode(self.mode)
    }
}

/// An extended attribute: full name (with its `user.`/`trusted.`/... prefix) and value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Xattr {
    /// Full name bytes, no NUL.
    pub name: Vec<u8>,
    /// Value bytes.
    pub value: Vec<u8>,
}

/// Sets `name` to `value` in a list of xattrs: the value of an xattr of that
/// name is replaced where it stands, a new name goes last.
pub fn set_xattr(xattrs: &mut Vec<Xattr>, name: &[u8], value: &[u8]) {
    match xattrs.iter_mut().find(|x| x.name == name) {
        Some(x) => x.value = value.to_vec(),
        None => xattrs.push(Xattr {
            name: name.to_vec(),
            value: value.to_vec(),
        }),
    }
}

/// One name in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The name: no `/`, no NUL, not empty, not `.` or `..`.
    pub name: Vec<u8>,
    /// The node it names.
    pub node: NodeId,
    /// True for a hard link: another entry is the node's primary name.
    pub hardlink: bool,
}

/// A file, directory or other inode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    /// Stat fields.
    pub stat: Stat,
    /// Extended attributes, in the order they were given.
    pub xattrs: Vec<Xattr>,
    /// Symlink target, or for a regular file the path of its backing object
    /// relative to the object store (`ab/cdef...`), which becomes the overlay redirect.
    pub payload: Option<Vec<u8>>,
    /// Inline content of a small regular file (stored in the image itself).
    pub content: Option<Vec<u8>>,
    /// fs-verity digest of the file's content (regular files with external content).
    pub digest: Option<Digest>,
    /// Directory entries sorted by name bytes; empty for non-directories.
    pub entries: Vec<DirEntry>,
}

impl Node {
    /// A node with the given stat and nothing else.
    pub fn new(stat: Stat) -> Self {
        Node {
            stat,
            ..Node::default()
        }
    }

    /// The file type, `None` when the mode has no valid type.
    pub const fn file_type(&self) -> Option<FileType> {
        self.stat.file_type()
    }

    /// The value of the xattr with this full name.
    pub fn xattr(&self, name: &[u8]) -> Option<&[u8]> {
        self.xattrs
            .iter()
            .find(|x| x.name == name)
            .map(|x| x.value.as_slice())
    }

    /// Sets an xattr, replacing any existing value of that name.
    pub fn set_xattr(&mut self, name: &[u8], value: &[u8]) {
        set_xattr(&mut self.xattrs, name, value);
    }

    /// Looks up an entry by name (binary search; entries are sorted).
    pub fn entry(&self, name: &[u8]) -> Option<&DirEntry> {
        self.entries
            .binary_search_by(|e| e.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }
}

/// Errors from building a tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// Entries can only be added to directories.
    #[error("not a directory")]
    NotADirectory,
    /// The name already exists in that directory.
    #[error("duplicate name {}", String::from_utf8_lossy(.0))]
    Duplicate(Vec<u8>),
    /// The name is empty, `.`, `..`, too long, or holds `/` or NUL.
    #[error("invalid name {:?}", String::from_utf8_lossy(.0))]
    InvalidName(Vec<u8>),
}

/// Longest file name composefs accepts (`LCFS_MAX_NAME_LENGTH`).
pub const MAX_NAME_LEN: usize = 255;

/// Largest inline content of a regular file (`LCFS_INLINE_CONTENT_MAX`):
/// what the dumpfile parser and the writer accept, and the reader reads back.
pub const MAX_INLINE_CONTENT_LEN: usize = 5000;

/// Longest xattr name, prefix included (`XATTR_NAME_MAX`).
pub const MAX_XATTR_NAME_LEN: usize = 255;

/// Longest xattr value (an EROFS xattr entry stores its length in 16 bits).
pub const MAX_XATTR_VALUE_LEN: usize = u16::MAX as usize;

/// Longest symlink target: `PATH_MAX - 1` (4095) bytes. C composefs refuses a
/// target of `PATH_MAX` bytes or more, and the kernel can't follow one. The
/// dumpfile parser holds every payload to it (a backing file's path too), as
/// C does; the writer, the image reader and the tar import hold targets to it.
pub const MAX_SYMLINK_LEN: usize = 4095;

/// The largest device major an image can hold: EROFS keeps a device number
/// in 32 bits, the kernel's `new_encode_dev` (12 bits of major, 20 of
/// minor).
pub const MAX_DEVICE_MAJOR: u64 = 0xfff;

/// The largest device minor an image can hold (see [`MAX_DEVICE_MAJOR`]).
pub const MAX_DEVICE_MINOR: u64 = 0xf_ffff;

/// Linux `makedev(major, minor)` (glibc's 64-bit `dev_t`), or `None` when
/// the number does not fit an image ([`MAX_DEVICE_MAJOR`],
/// [`MAX_DEVICE_MINOR`]): cut to 32 bits it would name another device, or
/// read as an overlay whiteout (0/0).
pub const fn makedev(major: u64, minor: u64) -> Option<u64> {
    if major > MAX_DEVICE_MAJOR || minor > MAX_DEVICE_MINOR {
        return None;
    }
    Some(((major & 0xfff) << 8) | ((minor & 0xf_ff00) << 12) | (minor & 0xff))
}

/// Whether a device number `rdev` (a 64-bit `dev_t`) fits an image: its
/// major and minor are within [`MAX_DEVICE_MAJOR`] and [`MAX_DEVICE_MINOR`],
/// which is exactly when it fits in 32 bits.
pub const fn device_fits_image(rdev: u64) -> bool {
    rdev >> 32 == 0
}

/// A whole filesystem tree: an arena of nodes, node 0 the root directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    /// A tree holding only this root node.
    pub fn new(root: Node) -> Self {
        Tree { nodes: vec![root] }
    }

    /// The root's id.
    pub const fn root(&self) -> NodeId {
        NodeId::ROOT
    }

    /// Number of nodes (inodes) in the tree.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a tree has at least its root.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Adds a node, not yet named by any directory.
    pub fn add_node(&mut self, node: Node) -> NodeId {
        let id = NodeId(u32::try_from(self.nodes.len()).expect("fewer than 2^32 nodes"));
        self.nodes.push(node);
        id
    }

    /// The node with this id. Panics on an id from another tree.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    /// The node with this id, mutably. Panics on an id from another tree.
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id.index()]
    }

    /// All nodes with their ids, in arena order.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (NodeId(i as u32), n))
    }

    /// Checks a directory entry name.
    pub fn check_name(name: &[u8]) -> Result<(), TreeError> {
        if name.is_empty()
            || name == b"."
            || name == b".."
            || name.len() > MAX_NAME_LEN
            || name.iter().any(|&b| b == b'/' || b == 0)
        {
            return Err(TreeError::InvalidName(name.to_vec()));
        }
        Ok(())
    }

    /// Adds `name` → `node` to directory `dir`, keeping entries sorted.
    /// `hardlink` marks a second name for an already named node.
    pub fn link(
        &mut self,
        dir: NodeId,
        name: &[u8],
        node: NodeId,
        hardlink: bool,
    ) -> Result<(), TreeError> {
        Self::check_name(name)?;
        let d = &mut self.nodes[dir.index()];
        if d.file_type() != Some(FileType::Directory) {
            return Err(TreeError::NotADirectory);
        }
        // Entries usually arrive in order: try the end first.
        let pos = match d.entries.last() {
            Some(last) if last.name.as_slice() < name => d.entries.len(),
            None => 0,
            _ => match d.entries.binary_search_by(|e| e.name.as_slice().cmp(name)) {
                Ok(_) => return Err(TreeError::Duplicate(name.to_vec())),
                Err(pos) => pos,
            },
        };
        d.entries.insert(
            pos,
            DirEntry {
                name: name.to_vec(),
                node,
                hardlink,
            },
        );
        Ok(())
    }

    /// Removes the entry `name` from directory `dir`, if there is one, and
    /// returns the node it named. The node stays in the arena (unnamed, unless
    /// another entry names it).
    pub fn unlink(&mut self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        let entries = &mut self.nodes[dir.index()].entries;
        let i = entries
            .binary_search_by(|e| e.name.as_slice().cmp(name))
            .ok()?;
        Some(entries.remove(i).node)
    }

    /// Finds the node at a `/`-separated path from the root (no `.`/`..` handling).
    pub fn lookup_path(&self, path: &[u8]) -> Option<NodeId> {
        let mut cur = self.root();
        for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            cur = self.node(cur).entry(comp)?.node;
        }
        Some(cur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_fit_an_image_or_are_refused() {
        assert_eq!(makedev(1, 3), Some(0x103));
        assert_eq!(makedev(8, 0x12345), Some(0x1230_0845));
        assert_eq!(
            makedev(MAX_DEVICE_MAJOR, MAX_DEVICE_MINOR),
            Some(0xffff_ffff)
        );
        assert_eq!(makedev(MAX_DEVICE_MAJOR + 1, 0), None);
        assert_eq!(makedev(0, MAX_DEVICE_MINOR + 1), None);
        assert!(device_fits_image(0xffff_ffff));
        // glibc's makedev(0x54000000, 0): cut to 32 bits it is 0/0.
        assert!(!device_fits_image(0x5400_0000_u64 << 32));
    }

    fn dir() -> Node {
        Node::new(Stat {
            mode: mode::S_IFDIR | 0o755,
            ..Stat::default()
        })
    }

    /// The names in directory `dir`, in order.
    fn names(t: &Tree, dir: NodeId) -> Vec<&[u8]> {
        t.node(dir)
            .entries
            .iter()
            .map(|e| e.name.as_slice())
            .collect()
    }

    #[test]
    fn entries_stay_sorted_and_unique() {
        let mut t = Tree::new(dir());
        for name in [&b"b"[..], b"a", b"c", b"+", b"B"] {
            let n = t.add_node(dir());
            t.link(t.root(), name, n, false).unwrap();
        }
        assert_eq!(names(&t, t.root()), [&b"+"[..], b"B", b"a", b"b", b"c"]);
        let n = t.add_node(dir());
        assert_eq!(
            t.link(t.root(), b"a", n, false),
            Err(TreeError::Duplicate(b"a".to_vec()))
        );
        assert!(t.link(t.root(), b"..", n, false).is_err());
        assert!(t.link(t.root(), b"x/y", n, false).is_err());
        assert_eq!(t.lookup_path(b"/c"), Some(NodeId(3)));
    }

    /// Every reader and writer of symlinks holds them to [`MAX_SYMLINK_LEN`].
    #[test]
    fn symlink_targets_up_to_max_len() {
        use crate::dumpfile::{parse, ParseMode};
        use crate::writer::{write_image, WriteOptions};
        // (target length, accepted)
        let table = [
            (1, true),
            (MAX_SYMLINK_LEN - 1, true),
            (MAX_SYMLINK_LEN, true),
            (MAX_SYMLINK_LEN + 1, false),
            (2 * MAX_SYMLINK_LEN, false),
        ];
        for (len, ok) in table {
            let target = "t".repeat(len);
            let dump = format!(
                "/ 4096 40755 2 0 0 0 0.0 - - -\n/l {len} 120777 1 0 0 0 0.0 {target} - -\n"
            );
            let parsed = parse(dump.as_bytes(), ParseMode::Strict);
            assert_eq!(parsed.is_ok(), ok, "dumpfile, {len}: {parsed:?}");

            let mut tree = Tree::new(dir());
            let mut link = Node::new(Stat {
                mode: mode::S_IFLNK | 0o777,
                size: len as u64,
                nlink: 1,
                ..Stat::default()
            });
            link.payload = Some(target.into_bytes());
            let l = tree.add_node(link);
            tree.link(tree.root(), b"l", l, false).unwrap();
            let image = write_image(&tree, &WriteOptions::default());
            assert_eq!(image.is_ok(), ok, "writer, {len}: {:?}", image.err());
            if let Ok(image) = image {
                let img = crate::reader::Image::open(image).unwrap();
                let back = img.to_tree().unwrap();
                let node = back.node(back.node(back.root()).entry(b"l").unwrap().node);
                assert_eq!(node.payload.as_ref().map(Vec::len), Some(len), "reader");
            }
        }
    }

    /// The writer and the dumpfile parser hold inline content and xattrs to
    /// the same limits.
    #[test]
    fn inline_content_and_xattr_limits() {
        use crate::dumpfile::{parse, ParseMode};
        use crate::writer::{write_image, WriteOptions};
        let file = |content: usize, name: usize, value: usize| {
            let mut f = Node::new(Stat {
                mode: mode::S_IFREG | 0o644,
                size: content as u64,
                nlink: 1,
                ..Stat::default()
            });
            f.content = Some(vec![b'c'; content]);
            f.set_xattr(&vec![b'n'; name], &vec![b'v'; value]);
            let mut tree = Tree::new(dir());
            let id = tree.add_node(f);
            tree.link(tree.root(), b"f", id, false).unwrap();
            tree
        };
        // (inline content bytes, xattr name bytes, xattr value bytes, accepted)
        let table = [
            (MAX_INLINE_CONTENT_LEN, 10, 1, true),
            (MAX_INLINE_CONTENT_LEN + 1, 10, 1, false),
            (1, MAX_XATTR_NAME_LEN, 1, true),
            (1, MAX_XATTR_NAME_LEN + 1, 1, false),
            (1, 10, MAX_XATTR_VALUE_LEN, true),
            (1, 10, MAX_XATTR_VALUE_LEN + 1, false),
        ];
        for (content, name, value, ok) in table {
            let tree = file(content, name, value);
            let written = write_image(&tree, &WriteOptions::default());
            assert_eq!(written.is_ok(), ok, "writer: {content} {name} {value}");
            // The dumpfile's own xattr space limit is smaller than a value.
            if value < 100 {
                let dump = format!(
                    "/ 4096 40755 2 0 0 0 0.0 - - -\n/f {content} 100644 1 0 0 0 0.0 - {} - {}=v\n",
                    "c".repeat(content),
                    "n".repeat(name),
                );
                let parsed = parse(dump.as_bytes(), ParseMode::Strict);
                assert_eq!(parsed.is_ok(), ok, "dumpfile: {content} {name}: {parsed:?}");
            }
        }
    }

    #[test]
    fn set_xattr_replaces_in_place_or_appends() {
        let x = |n: &str, v: &str| Xattr {
            name: n.as_bytes().to_vec(),
            value: v.as_bytes().to_vec(),
        };
        // (set name=value, list after)
        let table = [
            (("a", "1"), vec![x("a", "1")]),
            (("b", "2"), vec![x("a", "1"), x("b", "2")]),
            (("a", "3"), vec![x("a", "3"), x("b", "2")]),
            (("c", ""), vec![x("a", "3"), x("b", "2"), x("c", "")]),
            (("b", "4"), vec![x("a", "3"), x("b", "4"), x("c", "")]),
        ];
        let mut list = Vec::new();
        for ((name, value), want) in table {
            set_xattr(&mut list, name.as_bytes(), value.as_bytes());
            assert_eq!(list, want, "after {name}={value}");
        }
    }

    #[test]
    fn unlink_removes_one_name_only() {
        let mut t = Tree::new(dir());
        let a = t.add_node(dir());
        let b = t.add_node(dir());
        t.link(t.root(), b"a", a, false).unwrap();
        t.link(t.root(), b"b", b, false).unwrap();
        t.link(t.root(), b"c", a, true).unwrap();
        // (name to remove, node it named, names left)
        type Case<'a> = (&'a [u8], Option<NodeId>, &'a [&'a [u8]]);
        let table: &[Case] = &[
            (b"missing", None, &[b"a", b"b", b"c"]),
            (b"a", Some(a), &[b"b", b"c"]),
            (b"a", None, &[b"b", b"c"]),
            (b"c", Some(a), &[b"b"]),
            (b"b", Some(b), &[]),
        ];
        for &(name, removed, left) in table {
            assert_eq!(t.unlink(t.root(), name), removed, "{name:?}");
            assert_eq!(names(&t, t.root()), left, "after unlinking {name:?}");
        }
        // Nodes stay in the arena; a file has no entries to remove.
        assert_eq!(t.len(), 3);
        assert_eq!(t.unlink(a, b"x"), None);
    }
}
