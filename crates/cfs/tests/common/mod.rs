//! Helpers shared by the end-to-end mount tests: running `cfs`, walking a
//! mounted tree, and what a composefs mount of a tree or an image must show;
//! a standalone FUSE server as a guard; running scripts as the test user,
//! in user namespaces; a small seeded PRNG.
#![allow(dead_code)]

pub mod fuse_mount;
#[allow(unused_imports)]
pub use fuse_mount::{bounded, umount, FuseMount};

use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub fn cfs(args: &[&OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cfs"))
        .args(args)
        .output()
        .expect("run cfs")
}

pub fn os<S: AsRef<OsStr> + ?Sized>(s: &S) -> &OsStr {
    s.as_ref()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn ok(o: Output) -> Output {
    assert!(o.status.success(), "failed: {}", stderr(&o));
    o
}

pub fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// All xattrs of a path, not following symlinks. Buffers are the kernel's
/// maximum (64 KiB) since rustix reports 0 for a size query with an empty slice.
pub fn xattrs_of(path: &Path) -> BTreeMap<OsString, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut list = vec![0u8; 1 << 16];
    let n = rustix::fs::llistxattr(path, &mut list[..])
        .unwrap_or_else(|e| panic!("listxattr {}: {e}", path.display()));
    for name in list[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = OsStr::from_bytes(name);
        let mut v = vec![0u8; 1 << 16];
        let n = rustix::fs::lgetxattr(path, name, &mut v[..])
            .unwrap_or_else(|e| panic!("getxattr {name:?} of {}: {e}", path.display()));
        v.truncate(n);
        out.insert(name.to_os_string(), v);
    }
    out
}

/// What the walk records of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    pub rdev: u64,
    /// Size of non-directories (directory sizes are layout, not content).
    pub size: Option<u64>,
    pub mtime: (i64, i64),
    pub symlink: Option<OsString>,
    pub xattrs: BTreeMap<OsString, Vec<u8>>,
    pub sha256: Option<String>,
    /// For a hard link: the first path (in walk order) of the same inode.
    pub link_of: Option<PathBuf>,
}

/// lstat-walks `root`, keyed by path relative to it (`""` is the root).
pub fn walk(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), PathBuf> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        let m = std::fs::symlink_metadata(&path).unwrap();
        let ft = m.file_type();
        if ft.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for n in names.into_iter().rev() {
                stack.push(rel.join(n));
            }
        }
        let link_of = if !ft.is_dir() && m.nlink() > 1 {
            let first = inodes.entry((m.dev(), m.ino())).or_insert(rel.clone());
            (*first != rel).then(|| first.clone())
        } else {
            None
        };
        out.insert(
            rel.clone(),
            Entry {
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                nlink: m.nlink(),
                rdev: if ft.is_char_device() || ft.is_block_device() {
                    m.rdev()
                } else {
                    0
                },
                size: (!ft.is_dir()).then(|| m.size()),
                mtime: (m.mtime(), m.mtime_nsec()),
                symlink: ft
                    .is_symlink()
                    .then(|| std::fs::read_link(&path).unwrap().into()),
                xattrs: xattrs_of(&path),
                sha256: ft.is_file().then(|| sha256_file(&path)),
                link_of,
            },
        );
    }
    out
}

const S_IFMT: u32 = 0o170000;
const S_IFCHR: u32 = 0o020000;
const S_IFREG: u32 = 0o100000;

/// The source walk turned into what a composefs mount of it must show.
///
/// - A whiteout (char 0/0) is stored escaped, so that the mounted image can
///   itself serve as an overlay lower layer holding whiteouts (overlayfs'
///   "xwhiteout" convention, in both the trusted and the `userxattr` form):
///   through the composefs overlay it reads as an empty regular file with
///   `{trusted,user}.overlay.whiteout`, and its directory carries
///   `{trusted,user}.overlay.opaque=x` and `{trusted,user}.overlay.whiteouts`.
///   A hard-linked whiteout marks only the directory of its first name in
///   breadth-first order (the scanner's primary name), as C mkcomposefs
///   marks only `lcfs_node_get_parent`: its other names read as escaped
///   whiteouts in unmarked directories.
pub fn expected_from_source(mut src: BTreeMap<PathBuf, Entry>) -> BTreeMap<PathBuf, Entry> {
    let mut whiteouts: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for (p, e) in &src {
        if e.mode & S_IFMT == S_IFCHR && e.rdev == 0 {
            let inode = e.link_of.clone().unwrap_or_else(|| p.clone());
            whiteouts.entry(inode).or_default().push(p.clone());
        }
    }
    for names in whiteouts.into_values() {
        for p in &names {
            let e = src.get_mut(p).unwrap();
            e.mode = S_IFREG | (e.mode & 0o7777);
            e.rdev = 0;
            e.size = Some(0);
            e.sha256 = Some(format!("{:x}", Sha256::digest(b"")));
            for ns in ["trusted", "user"] {
                e.xattrs
                    .insert(format!("{ns}.overlay.whiteout").into(), Vec::new());
            }
        }
        // Breadth-first order over sorted names: shallower first, then by path.
        let primary = names
            .iter()
            .min_by_key(|p| (p.components().count(), *p))
            .unwrap();
        let parent = src.get_mut(primary.parent().unwrap()).unwrap();
        for ns in ["trusted", "user"] {
            parent
                .xattrs
                .insert(format!("{ns}.overlay.opaque").into(), b"x".to_vec());
            parent
                .xattrs
                .insert(format!("{ns}.overlay.whiteouts").into(), Vec::new());
        }
    }
    src
}

pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", path.display()));
}

pub fn mknod(path: &Path, kind: rustix::fs::FileType, mode: u32, dev: u64) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        kind,
        rustix::fs::Mode::from_raw_mode(mode),
        dev,
    )
    .unwrap_or_else(|e| panic!("mknod {}: {e}", path.display()));
}

/// A tree with every file type, xattrs, hard links, a whiteout, a large sparse file.
pub fn make_tree(src: &Path) {
    use rustix::fs::FileType as T;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(src.join("dir/sub")).unwrap();
    fs::create_dir(src.join("empty")).unwrap();
    fs::create_dir(src.join("sticky")).unwrap();
    fs::set_permissions(src.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(src.join("empty-file"), b"").unwrap();
    fs::write(src.join("inline"), b"small enough to live in the image\n").unwrap();
    let big: Vec<u8> = (0..1_000_003u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(src.join("dir/external"), &big).unwrap();
    fs::write(src.join("dir/sub/same-content"), &big).unwrap();
    fs::write(
        src.join("setuid"),
        b"#!/bin/sh\necho this is more than sixty-four bytes of script text\n",
    )
    .unwrap();
    fs::set_permissions(src.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    // Large and sparse: 200 MiB with data at the start, middle and end.
    let f = fs::File::create(src.join("dir/sparse")).unwrap();
    f.set_len(200 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    for off in [0u64, 100 << 20, (200 << 20) - 5] {
        f.write_all_at(b"data!", off).unwrap();
    }
    drop(f);
    fs::hard_link(src.join("dir/external"), src.join("hardlink-external")).unwrap();
    fs::hard_link(src.join("inline"), src.join("dir/hardlink-inline")).unwrap();
    std::os::unix::fs::symlink("../inline", src.join("dir/rel-link")).unwrap();
    std::os::unix::fs::symlink("/absolute/target", src.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("x".repeat(1000), src.join("long-link")).unwrap();
    mknod(&src.join("fifo"), T::Fifo, 0o644, 0);
    drop(std::os::unix::net::UnixListener::bind(src.join("socket")).unwrap());
    mknod(
        &src.join("chardev"),
        T::CharacterDevice,
        0o600,
        rustix::fs::makedev(1, 3),
    );
    mknod(
        &src.join("blockdev"),
        T::BlockDevice,
        0o600,
        rustix::fs::makedev(7, 200),
    );
    mknod(&src.join("dir/sub/whiteout"), T::CharacterDevice, 0o000, 0);
    rustix::fs::chown(
        src.join("dir/sub"),
        Some(rustix::process::Uid::from_raw(1000)),
        Some(rustix::process::Gid::from_raw(100)),
    )
    .unwrap();
    set_xattr(&src.join("inline"), "user.comment", b"hello");
    set_xattr(&src.join("inline"), "user.binary", &[0, 1, 2, 255, b'\n']);
    set_xattr(&src.join("dir/external"), "security.cfs-test", b"label");
    set_xattr(
        &src.join("dir/external"),
        "trusted.overlay.custom",
        b"escaped in the image",
    );
    set_xattr(&src.join("dir"), "trusted.cfs-test", b"dir xattr");
    set_xattr(&src.join("empty"), "user.empty-value", b"");
}

/// Builds `src` into `dir/image.cfs` with objects in `dir/objects`.
pub fn build(dir: &Path, src: &Path) -> (PathBuf, PathBuf, String) {
    let image = dir.join("image.cfs");
    let objects = dir.join("objects");
    let o = ok(cfs(&[
        os("mkfs"),
        os("--hardlinks"),
        os("--print-digest"),
        os("--digest-store"),
        objects.as_os_str(),
        src.as_os_str(),
        image.as_os_str(),
    ]));
    let digest = String::from_utf8(o.stdout).unwrap().trim().to_string();
    (image, objects, digest)
}

/// A small tree, image and objects in a fresh temporary directory.
pub fn small_setup() -> (tempfile::TempDir, PathBuf, PathBuf, String) {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("inline"), b"hi\n").unwrap();
    std::fs::write(src.join("d/external"), "external content\n".repeat(100)).unwrap();
    let (image, objects, digest) = build(t.path(), &src);
    std::fs::create_dir(t.path().join("mnt")).unwrap();
    (t, image, objects, digest)
}

/// The image's dump (`cfs dump`) as a walk would record it: contents come
/// from the objects the dump names (or the inline data), hard links are
/// recorded against the first path in walk order. The same whiteout mapping
/// as for the source applies.
pub fn expected_from_dump(image: &Path, objects: &Path) -> BTreeMap<PathBuf, Entry> {
    let o = ok(cfs(&[os("dump"), image.as_os_str()]));
    let tree = cfs_format::dumpfile::parse(&o.stdout, Default::default()).unwrap();
    expected_from_tree(&tree, objects)
}

/// An image's tree (as the reader or a dump gives it) as a walk of its
/// mount would record it, as for [`expected_from_dump`].
pub fn expected_from_tree(tree: &cfs_format::Tree, objects: &Path) -> BTreeMap<PathBuf, Entry> {
    use cfs_format::{FileType, NodeId};
    let mut out = BTreeMap::new();
    let mut first_path: BTreeMap<NodeId, PathBuf> = BTreeMap::new();
    let mut stack = vec![(PathBuf::new(), tree.root())];
    while let Some((rel, id)) = stack.pop() {
        let n = tree.node(id);
        for e in n.entries.iter().rev() {
            stack.push((rel.join(OsStr::from_bytes(&e.name)), e.node));
        }
        let st = &n.stat;
        let ft = n.file_type().unwrap();
        let link_of = if ft != FileType::Directory && st.nlink > 1 {
            let first = first_path.entry(id).or_insert(rel.clone());
            (*first != rel).then(|| first.clone())
        } else {
            None
        };
        let sha256 = (ft == FileType::Regular).then(|| match (&n.content, &n.payload) {
            (Some(c), _) => format!("{:x}", Sha256::digest(c)),
            (None, Some(p)) if st.size > 0 => sha256_file(&objects.join(OsStr::from_bytes(p))),
            _ => format!("{:x}", Sha256::digest(b"")),
        });
        let device = matches!(ft, FileType::CharDevice | FileType::BlockDevice);
        out.insert(
            rel.clone(),
            Entry {
                mode: st.mode,
                uid: st.uid,
                gid: st.gid,
                nlink: u64::from(st.nlink),
                rdev: if device { st.rdev } else { 0 },
                size: (ft != FileType::Directory).then_some(st.size),
                mtime: (st.mtime.sec, i64::from(st.mtime.nsec)),
                symlink: n
                    .payload
                    .as_ref()
                    .filter(|_| ft == FileType::Symlink)
                    .map(|p| OsStr::from_bytes(p).to_os_string()),
                xattrs: n
                    .xattrs
                    .iter()
                    .map(|x| (OsStr::from_bytes(&x.name).to_os_string(), x.value.clone()))
                    .collect(),
                sha256,
                link_of,
            },
        );
    }
    expected_from_source(out)
}

/// Lists the differences between two walks, one line each.
pub fn diff<T: PartialEq + std::fmt::Debug>(
    want: &BTreeMap<PathBuf, T>,
    got: &BTreeMap<PathBuf, T>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (p, w) in want {
        match got.get(p) {
            None => out.push(format!("{}: missing from the mount", p.display())),
            Some(g) if g != w => out.push(format!("{}:\n  want {w:?}\n  got  {g:?}", p.display())),
            Some(_) => {}
        }
    }
    for p in got.keys().filter(|p| !want.contains_key(*p)) {
        out.push(format!("{}: only in the mount", p.display()));
    }
    out
}

/// A mount point with something mounted on it, unmounted on drop (`cfs
/// unmount`, lazily if that fails).
#[derive(Debug)]
pub struct Mounted(pub PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        if !cfs(&[os("unmount"), self.0.as_os_str()]).status.success() {
            let _ = cfs(&[os("unmount"), os("--lazy"), self.0.as_os_str()]);
        }
    }
}

/// Runs `cfs mount ARGS` (`mnt` being its mount point); on success returns
/// the guard.
pub fn mount(args: &[&OsStr], mnt: &Path) -> Result<Mounted, String> {
    let mut all = vec![os("mount")];
    all.extend_from_slice(args);
    let o = cfs(&all);
    if o.status.success() {
        Ok(Mounted(mnt.to_path_buf()))
    } else {
        Err(stderr(&o))
    }
}

/// xorshift64*: a tiny deterministic PRNG.
pub struct Rng(pub u64);

impl Rng {
    /// A generator for any seed (0 included): the state is the seed run
    /// through splitmix64, which never gives xorshift its one stuck state.
    pub fn seeded(seed: u64) -> Rng {
        let state = splitmix64(seed);
        Rng(if state == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            state
        })
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-enough in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// In `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }

    /// Random bytes, between `lo` and `hi` of them.
    pub fn bytes_in(&mut self, lo: usize, hi: usize) -> Vec<u8> {
        let n = self.range(lo, hi);
        self.bytes(n)
    }
}

/// One step of splitmix64: turns a seed (or a seed plus a counter) into a
/// well-mixed 64-bit value.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The plain user the rootless tests run as (`.ci/run` creates it).
pub const TEST_USER: &str = "cfs-test";

/// Whether `tool` is on `PATH`.
pub fn have_tool(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why tests that mount as root and as [`TEST_USER`] can't run here, if they
/// can't: not root, one of `tools` missing, or no erofs, overlay or fuse in
/// the kernel. Otherwise does the setup `.ci/run` does, so that a test runs
/// alone too: `/dev/fuse` usable by everyone (0666, as distributions ship
/// it) and the user created.
pub fn rootless_unavailable(tools: &[&str]) -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root (needed to set up the test user and /dev/fuse)".into());
    }
    if let Some(tool) = tools.iter().find(|t| !have_tool(t)) {
        return Some(format!("{tool} is not installed"));
    }
    for (fs, module) in [("erofs", "erofs"), ("overlay", "overlay"), ("fuse", "fuse")] {
        let have = || {
            std::fs::read_to_string("/proc/filesystems")
                .unwrap_or_default()
                .contains(fs)
        };
        if !have() {
            let _ = Command::new("modprobe").arg(module).status();
            if !have() {
                return Some(format!("the kernel has no {fs}"));
            }
        }
    }
    let _ = Command::new("chmod").args(["0666", "/dev/fuse"]).status();
    let exists = Command::new("id")
        .arg(TEST_USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !exists
        && !Command::new("useradd")
            .args(["-m", TEST_USER])
            .status()
            .is_ok_and(|s| s.success())
    {
        return Some(format!("could not create the user {TEST_USER}"));
    }
    None
}

/// Who runs a test script.
#[derive(Clone, Copy, Debug)]
pub enum As {
    /// This process's user (root).
    Root,
    /// [`TEST_USER`], through `setpriv`.
    User,
    /// [`TEST_USER`] as root of a new user and mount namespace (`unshare
    /// -Urm`), where only its own ids are mapped (to 0).
    UserNs,
    /// As `UserNs`, with the user's subordinate ids mapped too: `outer` from
    /// `/etc/subuid` (and the same for groups from `/etc/subgid`) appear as
    /// `1..=count` in the namespace, through `newuidmap`/`newgidmap`.
    UserNsAllIds { uids: (u32, u32), gids: (u32, u32) },
}

/// The first subordinate id range `(start, count)` of [`TEST_USER`] in
/// `/etc/subuid` or `/etc/subgid`.
pub fn subordinate_ids(file: &str) -> Option<(u32, u32)> {
    std::fs::read_to_string(file).ok()?.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == TEST_USER).then_some(())?;
        Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
    })
}

/// Runs `script` under `sh -eu` in `dir` as `who`, with `env` set and a
/// time limit (`timeout`, so a hung server fails the test instead of
/// hanging it).
pub fn run_script(
    who: As,
    dir: &Path,
    env: &[(&str, &OsStr)],
    limit: Duration,
    script: &str,
) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5"]).arg(limit.as_secs().to_string());
    if !matches!(who, As::Root) {
        cmd.args([
            "setpriv",
            "--reuid",
            TEST_USER,
            "--regid",
            TEST_USER,
            "--init-groups",
        ]);
    }
    match who {
        As::Root | As::User => {}
        As::UserNs => {
            cmd.args(["unshare", "-Urm"]);
        }
        As::UserNsAllIds { uids, gids } => {
            cmd.args(["unshare", "-Urm"])
                .arg(format!("--map-users={},1,{}", uids.0, uids.1))
                .arg(format!("--map-groups={},1,{}", gids.0, gids.1));
        }
    }
    cmd.args(["sh", "-eu", "-c", script])
        .env("CFS", env!("CARGO_BIN_EXE_cfs"))
        .envs(env.iter().copied())
        .env_remove("CFS_REPO")
        .current_dir(dir)
        .stdin(Stdio::null());
    let out = cmd.output().expect("run a test script");
    assert_ne!(
        out.status.code(),
        Some(124),
        "{who:?} script timed out:\n{script}\nstderr: {}",
        stderr(&out)
    );
    out
}
