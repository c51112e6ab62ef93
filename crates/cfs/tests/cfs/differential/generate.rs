//! The differential test's tree generator: a seeded [`Gen`] creates the
//! entries on disk as it draws them, then sets owners, modes, xattrs and
//! mtimes in one pass at the end.

use cfs_testkit::walk::mknod;
use cfs_testkit::Rng;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Owners and ACL ids other than root: all within the 65536 subordinate ids
/// the fuse+overlay leg maps, past 16 bits too (extended inodes).
const IDS: &[u32] = &[1, 2, 100, 1000, 1001, 4242, 65533, 65534, 65535, 65536];

/// Longest relative path the generator makes: walks go by path, and the
/// longest mount point prefix must still fit in `PATH_MAX` (4096).
const PATH_BUDGET: usize = 3000;

/// Bytes of xattr names and values per inode (the three files with many or
/// big xattrs aside): within what ext4 keeps in its one 4 KiB block, so a
/// generated tree also copies to a disk.
const XATTR_BUDGET: usize = 3000;

/// What the generator makes of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Dir,
    File,
    Symlink,
    Fifo,
    CharDev,
    BlockDev,
    Socket,
    /// A character device 0/0: an overlay whiteout, stored escaped.
    Whiteout,
}

struct GenDir {
    rel: PathBuf,
    names: HashSet<Vec<u8>>,
}

/// The tree generator: creates entries as it goes and records every inode
/// (by its first path) for the metadata pass at the end.
pub struct Gen {
    rng: Rng,
    root: PathBuf,
    /// A short path where sockets are bound (`sun_path` holds 108 bytes) before
    /// being renamed into place.
    scratch: PathBuf,
    dirs: Vec<GenDir>,
    inodes: Vec<(PathBuf, Kind)>,
    /// `(name, value)` pairs put on many inodes: EROFS stores them once,
    /// in the shared xattr area.
    shared: Vec<(Vec<u8>, Vec<u8>)>,
    /// Every mtime is this or later (before 1970 too): the writer's build time
    /// is the smallest mtime, and inodes with exactly it (and small ids and
    /// size) are compact.
    base_time: i64,
    /// Extra names made for inodes, by kind.
    links: BTreeMap<Kind, usize>,
}

/// Names that trip up parsers and shells: dumpfile's `-` for "none", escapes
/// that must stay literal, leading dashes, whitespace, overlay's `00`..`ff`.
const TRICKY_NAMES: &[&[u8]] = &[
    b"-",
    b"--",
    b"-rf",
    b"--help",
    b" ",
    b"  ",
    b"...",
    b".hidden",
    b"@",
    b"\\",
    b"\\x41",
    b"%41",
    b"=",
    b"a=b",
    b"\n",
    b"\t",
    b"-\n-",
    b"#",
    b"~",
    b"*",
    b"?",
    b"[a]",
    b"00",
    b"ff",
    b"ab",
    b"7f",
    b"\x7f",
    b"\x1b[31m",
];
const UNICODE: &[&str] = &[
    "é",
    "日本語",
    "😀",
    "Ω",
    "ß",
    "a\u{301}",
    "\u{202e}rtl",
    "\u{feff}",
    "\u{200b}",
    "ﬁ",
    "İ",
];
const ODD_BYTES: &[u8] = b" \n\t\\=%-#*?'\":;,!@$&()[]{}<>|~^`+";

impl Gen {
    pub fn new(seed: u64, root: &Path, scratch: &Path) -> Gen {
        let mut rng = Rng::seeded(seed);
        let base_time = *rng.pick(&[-2_000_000_000, 0, 1, 1_000_000_000, 1_700_000_000]);
        let mut shared = Vec::new();
        for i in 0..8 {
            let len = *rng.pick(&[0, 1, 7, 40, 200]);
            shared.push((format!("user.shared{i}").into_bytes(), rng.bytes(len)));
        }
        std::fs::create_dir(root).unwrap();
        Gen {
            rng,
            root: root.to_owned(),
            scratch: scratch.to_owned(),
            dirs: vec![GenDir {
                rel: PathBuf::new(),
                names: HashSet::new(),
            }],
            inodes: vec![(PathBuf::new(), Kind::Dir)],
            shared,
            base_time,
            links: BTreeMap::new(),
        }
    }

    /// A random name, new in directory `dir`, of at most `max` bytes.
    fn name(&mut self, dir: usize, max: usize) -> Vec<u8> {
        let max = max.min(255);
        assert!(max >= 4, "no room for a name");
        loop {
            let r = &mut self.rng;
            let mut n: Vec<u8> = match r.below(10) {
                0..=3 => (0..r.range(1, 12))
                    .map(|_| *r.pick(b"abcdefghijklmnopqrstuvwxyz0123456789_."))
                    .collect(),
                4 => (0..r.range(1, 16))
                    .map(|_| {
                        if r.percent(50) {
                            *r.pick(ODD_BYTES)
                        } else {
                            *r.pick(b"abcxyz")
                        }
                    })
                    .collect(),
                // Not UTF-8.
                5 => (0..r.range(1, 16))
                    .map(|_| r.range(0x80, 0xff) as u8)
                    .collect(),
                6 => (0..r.range(1, 4))
                    .flat_map(|_| r.pick(UNICODE).as_bytes().to_vec())
                    .collect(),
                // Long, up to NAME_MAX, any byte but NUL and '/'.
                7 => (0..r.range(200, 255))
                    .map(|_| r.range(1, 255) as u8)
                    .collect(),
                8 => r.pick(TRICKY_NAMES).to_vec(),
                _ => (0..r.range(1, 30)).map(|_| r.range(1, 255) as u8).collect(),
            };
            n.retain(|&b| b != b'/' && b != 0);
            n.truncate(max);
            if n.is_empty() || n == b"." || n == b".." || self.dirs[dir].names.contains(&n) {
                continue;
            }
            self.dirs[dir].names.insert(n.clone());
            return n;
        }
    }

    /// Room left for a name in directory `dir`.
    fn room(&self, dir: usize) -> usize {
        PATH_BUDGET.saturating_sub(self.dirs[dir].rel.as_os_str().len() + 1)
    }

    /// A directory with room for another name.
    fn some_dir(&mut self) -> usize {
        loop {
            let d = self.rng.below(self.dirs.len());
            if self.room(d) > 64 {
                return d;
            }
        }
    }

    fn new_path(&mut self, dir: usize, max: usize) -> PathBuf {
        let max = max.min(self.room(dir));
        let name = self.name(dir, max);
        self.dirs[dir].rel.join(OsStr::from_bytes(&name))
    }

    fn abs(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    fn mkdir(&mut self, parent: usize, max_name: usize) -> usize {
        let rel = self.new_path(parent, max_name);
        std::fs::create_dir(self.abs(&rel)).unwrap();
        self.inodes.push((rel.clone(), Kind::Dir));
        self.dirs.push(GenDir {
            rel,
            names: HashSet::new(),
        });
        self.dirs.len() - 1
    }

    fn file(&mut self, dir: usize, data: &[u8]) -> usize {
        let rel = self.new_path(dir, 255);
        std::fs::write(self.abs(&rel), data).unwrap();
        self.inodes.push((rel, Kind::File));
        self.inodes.len() - 1
    }

    fn symlink(&mut self, dir: usize, target: &[u8]) -> usize {
        let rel = self.new_path(dir, 255);
        std::os::unix::fs::symlink(OsStr::from_bytes(target), self.abs(&rel)).unwrap();
        self.inodes.push((rel, Kind::Symlink));
        self.inodes.len() - 1
    }

    fn special(&mut self, dir: usize, kind: Kind) -> usize {
        use rustix::fs::{makedev, FileType as T};
        let rel = self.new_path(dir, 255);
        let path = self.abs(&rel);
        let r = &mut self.rng;
        match kind {
            Kind::Fifo => mknod(&path, T::Fifo, 0o644, 0),
            Kind::CharDev => {
                // Majors and minors past 8 bits use the "new" dev_t encoding;
                // 0/1 is no whiteout (only 0/0 is).
                let any = makedev(r.range(1, 4095) as u32, r.range(0, (1 << 20) - 1) as u32);
                let dev = *r.pick(&[makedev(1, 3), makedev(0, 1), any]);
                mknod(&path, T::CharacterDevice, 0o600, dev)
            }
            Kind::BlockDev => {
                let any = makedev(r.range(1, 4095) as u32, r.range(0, 255) as u32);
                let dev = *r.pick(&[makedev(7, 0), makedev(259, 65536), any]);
                mknod(&path, T::BlockDevice, 0o600, dev)
            }
            Kind::Whiteout => mknod(&path, T::CharacterDevice, 0o600, 0),
            Kind::Socket => {
                let tmp = self.scratch.join("s");
                drop(std::os::unix::net::UnixListener::bind(&tmp).unwrap());
                std::fs::rename(&tmp, &path).unwrap();
            }
            _ => unreachable!("not a special file: {kind:?}"),
        }
        self.inodes.push((rel, kind));
        self.inodes.len() - 1
    }

    /// Another name for inode `i`, in directory `dir`.
    fn hardlink(&mut self, i: usize, dir: usize) {
        let rel = self.new_path(dir, 255);
        std::fs::hard_link(self.abs(&self.inodes[i].0), self.abs(&rel)).unwrap();
        *self.links.entry(self.inodes[i].1).or_default() += 1;
    }

    /// A random non-directory entry in `dir`.
    fn random_entry(&mut self, dir: usize) {
        match self.rng.below(20) {
            0..=9 => {
                let size = match self.rng.below(4) {
                    0 => 0,
                    1 => self.rng.range(1, 64),
                    2 => self.rng.range(65, 5000),
                    _ => self.rng.range(5000, 70_000),
                };
                let data = self.rng.bytes(size);
                self.file(dir, &data);
            }
            10..=12 => {
                let target = self.symlink_target();
                self.symlink(dir, &target);
            }
            n @ 13..=16 => {
                let kind = [Kind::Fifo, Kind::CharDev, Kind::BlockDev, Kind::Socket][n - 13];
                self.special(dir, kind);
            }
            _ => {
                // Another name for an existing non-directory.
                let candidates: Vec<usize> = (0..self.inodes.len())
                    .filter(|&i| !matches!(self.inodes[i].1, Kind::Dir | Kind::Whiteout))
                    .collect();
                if candidates.is_empty() {
                    self.file(dir, b"");
                } else {
                    let i = *self.rng.pick(&candidates);
                    self.hardlink(i, dir);
                }
            }
        }
    }

    fn symlink_target(&mut self) -> Vec<u8> {
        let r = &mut self.rng;
        match r.below(6) {
            0 => b"../somewhere/else".to_vec(),
            1 => b"/absolute/dangling".to_vec(),
            2 => b".".to_vec(),
            // Around half a block (where the writer stops inlining tails),
            // a block, and the longest target Linux allows (PATH_MAX - 1).
            3 => {
                let n = *r.pick(&[2047, 2048, 2049, 4000, 4095]);
                (0..n).map(|_| r.range(1, 255) as u8).collect()
            }
            _ => (0..r.range(1, 100))
                .map(|_| r.range(1, 255) as u8)
                .collect(),
        }
    }

    /// The whole tree: fixed features every round, then `size` random entries.
    pub fn generate(&mut self, size: usize) {
        // A deep chain of short names, with a file here and there.
        let mut d = 0;
        for level in 0..self.rng.range(32, 48) {
            d = self.mkdir(d, 12);
            if level % 7 == 3 {
                self.random_entry(d);
            }
        }
        self.random_entry(d);

        // A wide directory: many entries, names of every length, so that
        // directory blocks split at many places.
        let wide = self.mkdir(0, 16);
        for _ in 0..size {
            match self.rng.below(10) {
                0..=5 => {
                    let n = self.rng.range(0, 64);
                    let data = self.rng.bytes(n);
                    self.file(wide, &data);
                }
                6 => {
                    let t = self.symlink_target();
                    self.symlink(wide, &t);
                }
                _ => self.random_entry(wide),
            }
        }

        // Sizes around the inline limit (64), blocks and chunk counts, in
        // random directories; two files with the same content (one object).
        const SIZES: &[usize] = &[
            0, 1, 2, 63, 64, 65, 4095, 4096, 4097, 8191, 8192, 8193, 65535, 65536, 65537,
        ];
        for &size in SIZES {
            let dir = self.some_dir();
            let data = self.rng.bytes(size);
            self.file(dir, &data);
        }
        let same = self.rng.bytes(10_000);
        for _ in 0..2 {
            let dir = self.some_dir();
            self.file(dir, &same);
        }
        // One bigger, sparse file: around 4 MiB the chunk size doubles.
        let big = *self.rng.pick(&[
            (1 << 20) + 1,
            3_000_017,
            (4 << 20) - 1,
            4 << 20,
            (4 << 20) + 1,
        ]);
        let dir = self.some_dir();
        let i = self.file(dir, b"");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(self.abs(&self.inodes[i].0))
            .unwrap();
        f.set_len(big as u64).unwrap();
        for _ in 0..8 {
            use std::os::unix::fs::FileExt;
            let off = self.rng.below(big - 4096);
            f.write_all_at(&self.rng.bytes(4096), off as u64).unwrap();
        }

        // Every file type at least once; whiteouts in the root and elsewhere,
        // one sometimes hard-linked into other directories.
        for kind in [Kind::Fifo, Kind::CharDev, Kind::BlockDev, Kind::Socket] {
            let dir = self.some_dir();
            self.special(dir, kind);
        }
        self.special(0, Kind::Whiteout);
        let dir = self.some_dir();
        let whiteout = self.special(dir, Kind::Whiteout);
        if self.rng.percent(50) {
            for _ in 0..self.rng.range(1, 2) {
                let dir = self.some_dir();
                self.hardlink(whiteout, dir);
            }
        }
        let long: Vec<u8> = (0..4095).map(|_| self.rng.range(1, 255) as u8).collect();
        self.symlink(0, &long);
        // Overlay's whiteout stub names in the root, taken by real entries.
        for name in [&b"ab"[..], b"7f"] {
            if self.dirs[0].names.insert(name.to_vec()) {
                std::fs::write(self.root.join(OsStr::from_bytes(name)), name).unwrap();
                self.inodes
                    .push((PathBuf::from(OsStr::from_bytes(name)), Kind::File));
            }
        }

        // Hard link groups across directories, of every non-directory type.
        for kind in [
            Kind::File,
            Kind::File,
            Kind::Symlink,
            Kind::Fifo,
            Kind::CharDev,
        ] {
            let dir = self.some_dir();
            let i = match kind {
                Kind::File => {
                    let n = *self.rng.pick(&[0, 10, 64, 65, 5000, 100_000]);
                    let data = self.rng.bytes(n);
                    self.file(dir, &data)
                }
                Kind::Symlink => {
                    let t = self.symlink_target();
                    self.symlink(dir, &t)
                }
                k => self.special(dir, k),
            };
            for _ in 0..self.rng.range(1, 4) {
                let dir = self.some_dir();
                self.hardlink(i, dir);
            }
        }

        // Random entries anywhere, some in new directories.
        for _ in 0..size {
            let dir = self.some_dir();
            if self.rng.percent(15) {
                self.mkdir(dir, 255);
            } else {
                self.random_entry(dir);
            }
        }
    }

    /// A random set of xattrs for an inode of `kind`, within [`XATTR_BUDGET`].
    fn xattrs(&mut self, kind: Kind) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let r = &mut self.rng;
        // Linux allows user.* on regular files and directories only.
        if matches!(kind, Kind::File | Kind::Dir) {
            for (n, v) in &self.shared {
                if r.percent(20) {
                    out.push((n.clone(), v.clone()));
                }
            }
            for _ in 0..r.below(3) {
                let mut name = b"user.".to_vec();
                let len = r.range(1, 40);
                name.extend((0..len).map(|_| {
                    if r.percent(80) {
                        *r.pick(b"abcdefghij_.-")
                    } else {
                        r.range(1, 255) as u8
                    }
                }));
                let len = match r.below(10) {
                    0 => 0,
                    1..=6 => r.range(1, 64),
                    7 | 8 => r.range(65, 400),
                    _ => r.range(1000, 2000),
                };
                out.push((name, r.bytes(len)));
            }
            if r.percent(5) {
                // The user's own overlay-looking xattr (stored as is).
                out.push((b"user.overlay.cfs-diff".to_vec(), r.bytes(5)));
            }
        }
        // trusted.* and security.* work on every type (as root).
        if r.percent(10) {
            out.push((b"trusted.cfs-diff".to_vec(), r.bytes_in(0, 30)));
        }
        if r.percent(5) {
            out.push((b"security.cfs-diff".to_vec(), r.bytes_in(1, 30)));
        }
        if r.percent(5) {
            // The user's own trusted.overlay.* are stored escaped.
            let name = *r.pick(&[
                &b"trusted.overlay.custom"[..],
                b"trusted.overlay.redirect",
                b"trusted.overlay.metacopy",
            ]);
            out.push((name.to_vec(), r.bytes_in(0, 20)));
        }
        if kind == Kind::Dir && r.percent(5) {
            out.push((b"trusted.overlay.opaque".to_vec(), b"y".to_vec()));
        }
        // POSIX ACLs (the image is then flagged as having them, and the FUSE
        // server asks the kernel for FUSE_POSIX_ACL).
        if matches!(kind, Kind::File | Kind::Dir) && r.percent(5) {
            out.push((b"system.posix_acl_access".to_vec(), acl(r)));
        }
        if kind == Kind::Dir && r.percent(5) {
            out.push((b"system.posix_acl_default".to_vec(), acl(r)));
        }
        let mut total = 0;
        out.retain(|(n, v)| {
            total += n.len() + v.len() + 20;
            total <= XATTR_BUDGET
        });
        out
    }

    /// Owners, modes, xattrs, then mtimes (last: creating entries changes
    /// their directory's mtime; nothing after this pass changes any).
    pub fn set_metadata(&mut self) {
        use rustix::fs::{AtFlags, Timespec, Timestamps};
        const MODES: &[u32] = &[
            0o644, 0o755, 0o600, 0o700, 0o000, 0o777, 0o444, 0o4755, 0o2755, 0o6711, 0o1777,
            0o3777, 0o1000,
        ];
        let inodes = self.inodes.clone();
        // Two files sharing more xattrs than one inode may reference as
        // shared (128): the rest must be written inline. A third with values
        // up to the largest EROFS keeps (65535 bytes), 220 KiB in all, near
        // the most an inode's xattrs may take (256 KiB).
        let files: Vec<usize> = (0..inodes.len())
            .filter(|&i| inodes[i].1 == Kind::File)
            .take(3)
            .collect();
        for (i, (rel, kind)) in inodes.iter().enumerate() {
            let path = self.abs(rel);
            let r = &mut self.rng;
            let uid = if r.percent(50) { 0 } else { *r.pick(IDS) };
            let gid = if r.percent(50) { 0 } else { *r.pick(IDS) };
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).unwrap();
            if *kind != Kind::Symlink {
                let mode = if r.percent(20) {
                    r.below(0o10000) as u32
                } else {
                    *r.pick(MODES)
                };
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            let mut xattrs = self.xattrs(*kind);
            if files[..2].contains(&i) {
                xattrs = (0..130)
                    .map(|j| (format!("user.m{j:03}").into_bytes(), vec![j as u8]))
                    .collect();
            } else if files[2] == i {
                xattrs = vec![
                    (b"user.big0".to_vec(), self.rng.bytes(65535)),
                    (b"user.big1".to_vec(), self.rng.bytes(60000)),
                    (b"trusted.big".to_vec(), self.rng.bytes(60000)),
                    (b"security.big".to_vec(), self.rng.bytes(40000)),
                ];
            } else if i == 0 && self.rng.percent(50) {
                // The writer copies the root's label to the whiteout stubs.
                xattrs.push((
                    b"security.selinux".to_vec(),
                    b"system_u:object_r:root_t:s0\0".to_vec(),
                ));
            }
            for (name, value) in xattrs {
                rustix::fs::lsetxattr(&path, &name, &value, rustix::fs::XattrFlags::empty())
                    .unwrap_or_else(|e| {
                        panic!(
                            "setxattr {} ({} bytes) on {}: {e}",
                            String::from_utf8_lossy(&name),
                            value.len(),
                            path.display()
                        )
                    });
            }
        }
        for (rel, _) in &inodes {
            let r = &mut self.rng;
            let (sec, nsec) = match r.below(10) {
                0..=3 => (self.base_time, 0),
                4 => (self.base_time, r.below(1_000_000_000) as i64),
                5 => (
                    self.base_time + *r.pick(&[1, (1 << 31) - 1, 1 << 31, 1 << 32]),
                    *r.pick(&[0, 1, 999_999_999]),
                ),
                _ => (
                    self.base_time + r.below(1 << 33) as i64,
                    r.below(1_000_000_000) as i64,
                ),
            };
            let t = Timespec {
                tv_sec: sec,
                tv_nsec: nsec,
            };
            rustix::fs::utimensat(
                rustix::fs::CWD,
                self.abs(rel),
                &Timestamps {
                    last_access: t,
                    last_modification: t,
                },
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .unwrap();
        }
    }

    /// One line about what was generated.
    pub fn summary(&self) -> String {
        let mut counts: BTreeMap<Kind, usize> = BTreeMap::new();
        for (_, k) in &self.inodes {
            *counts.entry(*k).or_default() += 1;
        }
        format!(
            "{} inodes {counts:?}, hard links {:?}",
            self.inodes.len(),
            self.links
        )
    }
}

/// A POSIX ACL in its xattr form (`posix_acl_xattr.h`: version 2, then
/// `(tag, perm, id)` entries in tag and id order) with named users and
/// groups, so it is no mere copy of the mode the kernel would drop.
fn acl(r: &mut Rng) -> Vec<u8> {
    const UNDEFINED: u32 = u32::MAX;
    let mut out = 2u32.to_le_bytes().to_vec();
    let mut entry = |tag: u16, r: &mut Rng, id: u32| {
        out.extend(tag.to_le_bytes());
        out.extend((r.below(8) as u16).to_le_bytes());
        out.extend(id.to_le_bytes());
    };
    entry(0x01, r, UNDEFINED); // ACL_USER_OBJ
    let users: BTreeSet<u32> = (0..r.range(1, 3)).map(|_| *r.pick(IDS)).collect();
    for &u in &users {
        entry(0x02, r, u); // ACL_USER
    }
    entry(0x04, r, UNDEFINED); // ACL_GROUP_OBJ
    let groups: BTreeSet<u32> = (0..r.range(0, 2)).map(|_| *r.pick(IDS)).collect();
    for &g in &groups {
        entry(0x08, r, g); // ACL_GROUP
    }
    entry(0x10, r, UNDEFINED); // ACL_MASK
    entry(0x20, r, UNDEFINED); // ACL_OTHER
    out
}
