//! Integration tests of the image reader.
//!
//! Images come from `mkfs.erofs` (erofs-utils), built at run time from source
//! trees made here, and are compared against those trees as std sees them.
//! Each test skips with a message when `mkfs.erofs` is not installed.
//! `mkfs.erofs` writes no composefs header; where a test needs [`Image::open`]
//! (strict) it writes one into the image's zeroed first 32 bytes.
//!
//! The hostile-image test mutates real images thousands of times and checks
//! that every read returns `Ok` or `Err`: errors are fine, panics and hangs are bugs.

use cfs_format::erofs::ComposefsHeader;
use cfs_format::reader::{DirEntryRef, Image, Nid, ReadError, TreeLimits};
use cfs_format::{FileType, NodeId, Tree};
use std::collections::BTreeMap;
use std::fs;
use std::ops::Deref;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};
use zerocopy::IntoBytes;

// ---------------------------------------------------------------------------
// Helpers: temp dirs, mkfs.erofs, source trees.

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "cfs-reader-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Builds an image of `src` with `mkfs.erofs ARGS`; `None` (and a message)
/// when mkfs.erofs is not installed.
fn mkfs(src: &Path, args: &[&str]) -> Option<Vec<u8>> {
    let out = src.with_extension(format!("img{}", args.join("").replace(['-', '='], "")));
    match Command::new("mkfs.erofs")
        .args(args)
        .arg("--quiet")
        .arg(&out)
        .arg(src)
        .output()
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("skipping: mkfs.erofs not found (apt-get install erofs-utils)");
            None
        }
        Err(e) => panic!("running mkfs.erofs: {e}"),
        Ok(o) => {
            assert!(
                o.status.success(),
                "mkfs.erofs {args:?} failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let bytes = fs::read(&out).unwrap();
            let _ = fs::remove_file(&out);
            Some(bytes)
        }
    }
}

/// Writes a composefs header (version 1, format `version`) into the zeroed
/// first bytes of a plain EROFS image.
fn with_composefs_header(mut img: Vec<u8>, version: u32) -> Vec<u8> {
    assert!(img[..32].iter().all(|&b| b == 0));
    let mut h = ComposefsHeader::default();
    h.magic.set(cfs_format::erofs::COMPOSEFS_MAGIC);
    h.version.set(cfs_format::erofs::COMPOSEFS_HEADER_VERSION);
    h.composefs_version.set(version);
    img[..32].copy_from_slice(h.as_bytes());
    img
}

/// Deterministic bytes.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + 3) % 251) as u8 ^ seed).collect()
}

fn setx(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setting {name} on {}: {e}", path.display()));
}

fn set_mtime(path: &Path, secs: u64, nanos: u32) {
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
        .unwrap();
}

fn mknod(path: &Path, kind: rustix::fs::FileType, major: u32, minor: u32) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        kind,
        rustix::fs::Mode::from_raw_mode(0o644),
        rustix::fs::makedev(major, minor),
    )
    .unwrap();
}

/// A source tree with every file type, xattrs in all namespaces, hard links,
/// a directory needing several blocks, and (with `big`) files over 5000 bytes.
fn build_source(root: &Path, big: bool) {
    let w = |rel: &str, data: &[u8]| fs::write(root.join(rel), data).unwrap();
    fs::create_dir_all(root.join("sub/deeper")).unwrap();
    fs::create_dir_all(root.join("many")).unwrap();
    fs::create_dir_all(root.join("wh")).unwrap();
    w("hello", b"hello world\n");
    w("empty", b"");
    w("medium", &pattern(3000, 1));
    w("sub/deeper/leaf", b"leaf\n");
    if big {
        w("big", &pattern(10_000, 2));
        w("exact", &pattern(8192, 3));
        w("sub/huge", &pattern(70_000, 4));
    }
    for i in 0..300 {
        let name = format!("many/entry-with-a-fairly-long-name-{i:04}");
        w(&name, &[b'x'; 3][..i % 4]);
    }
    symlink("hello", root.join("link")).unwrap();
    symlink("../hello", root.join("sub/up")).unwrap();
    symlink("x/".repeat(150), root.join("longlink")).unwrap();
    mknod(
        &root.join("null"),
        rustix::fs::FileType::CharacterDevice,
        1,
        3,
    );
    mknod(&root.join("loop0"), rustix::fs::FileType::BlockDevice, 7, 0);
    mknod(&root.join("fifo"), rustix::fs::FileType::Fifo, 0, 0);
    drop(std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap());
    // A real whiteout (char device 0/0): readdir shows it, to_tree drops it as C does.
    mknod(
        &root.join("wh/gone"),
        rustix::fs::FileType::CharacterDevice,
        0,
        0,
    );
    w("wh/kept", b"kept");
    fs::hard_link(root.join("hello"), root.join("hello-link")).unwrap();
    fs::hard_link(root.join("hello"), root.join("sub/hello2")).unwrap();

    setx(&root.join("hello"), "user.foo", b"bar");
    setx(&root.join("hello"), "user.shared", b"same value");
    setx(&root.join("medium"), "user.shared", b"same value");
    setx(&root.join("medium"), "security.sec", b"label");
    setx(&root.join("sub"), "trusted.t", b"1");
    setx(&root.join("sub"), "user.shared", b"same value");
    setx(&root.join("sub/deeper/leaf"), "user.big", &pattern(1000, 5));
    setx(&root.join("link"), "trusted.on-a-symlink", b"yes");
    fs::set_permissions(root.join("medium"), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::lchown(root.join("medium"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::lchown(root.join("link"), Some(42), Some(43)).unwrap();
    set_mtime(&root.join("medium"), 1_600_000_000, 500_000_000);
    set_mtime(&root.join("empty"), 1_000_000_000, 0);
}

/// The xattrs of a path, sorted by name.
fn source_xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut names = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(path, &mut names[..]).unwrap();
    let mut out: Vec<_> = names[..n]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|name| {
            let mut value = vec![0u8; 65536];
            let len = rustix::fs::lgetxattr(path, name, &mut value[..]).unwrap();
            value.truncate(len);
            (name.to_vec(), value)
        })
        .collect();
    out.sort();
    out
}

fn source_names(dir: &Path) -> Vec<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let mut names: Vec<Vec<u8>> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    names.sort();
    names
}

fn image_xattrs<T: Deref<Target = [u8]>>(img: &Image<T>, nid: Nid) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<_> = img
        .xattrs(nid)
        .unwrap()
        .map(|x| {
            let x = x.unwrap();
            (x.name(), x.value().to_vec())
        })
        .collect();
    out.sort();
    out
}

// ---------------------------------------------------------------------------
// Comparing an image with its source through the reader's API.

#[derive(Default)]
struct Seen {
    shared_xattrs: usize,
    extended_inodes: usize,
    compact_inodes: usize,
    layouts: BTreeMap<String, usize>,
    blocks_over_one: usize,
}

fn check_inode<T: Deref<Target = [u8]>>(img: &Image<T>, nid: Nid, path: &Path, seen: &mut Seen) {
    let md = fs::symlink_metadata(path).unwrap();
    let ino = img.inode(nid).unwrap();
    let what = path.display();
    assert_eq!(ino.nid(), nid);
    assert_eq!(ino.mode(), md.mode(), "{what}: mode");
    assert_eq!(ino.uid(), md.uid(), "{what}: uid");
    assert_eq!(ino.gid(), md.gid(), "{what}: gid");
    assert_eq!(u64::from(ino.nlink()), md.nlink(), "{what}: nlink");
    *seen
        .layouts
        .entry(format!("{:?}", ino.layout()))
        .or_default() += 1;
    if ino.is_extended() {
        seen.extended_inodes += 1;
        assert_eq!(ino.mtime().sec, md.mtime(), "{what}: mtime");
        assert_eq!(
            i64::from(ino.mtime().nsec),
            md.mtime_nsec(),
            "{what}: mtime"
        );
    } else {
        seen.compact_inodes += 1;
        assert_eq!(ino.mtime(), img.build_time(), "{what}: compact mtime");
    }
    let ft = ino.file_type().unwrap();
    if matches!(ft, FileType::CharDevice | FileType::BlockDevice) {
        assert_eq!(ino.rdev(), md.rdev(), "{what}: rdev");
    } else {
        assert_eq!(ino.rdev(), 0);
    }
    if ft != FileType::Directory {
        assert_eq!(ino.size(), md.len(), "{what}: size");
    }
    assert_eq!(ino.stat().mode, md.mode());

    let xattrs = image_xattrs(img, nid);
    assert_eq!(xattrs, source_xattrs(path), "{what}: xattrs");
    for x in img.xattrs(nid).unwrap() {
        seen.shared_xattrs += usize::from(x.unwrap().is_shared());
    }
    for (name, value) in &xattrs {
        assert_eq!(
            img.get_xattr(nid, name).unwrap(),
            Some(&value[..]),
            "{what}"
        );
    }
    for absent in [
        &b"user.absent"[..],
        b"trusted.",
        b"security.selinux",
        b"",
        b"x",
    ] {
        assert_eq!(img.get_xattr(nid, absent).unwrap(), None);
    }

    match ft {
        FileType::Regular => {
            let content = fs::read(path).unwrap();
            let mut buf = vec![0xAA; content.len() + 10];
            let n = img.read_into(nid, 0, &mut buf).unwrap();
            assert_eq!(&buf[..n], &content[..], "{what}: content");
            // Pieces from assorted offsets agree and make progress.
            for off in [0, 1, 100, 4095, 4096, 4097, 5000, 8191, 8192, 12000] {
                let piece = img.read(nid, off, 5000).unwrap();
                let off = off as usize;
                if off < content.len() {
                    assert!(!piece.is_empty(), "{what}: empty read at {off}");
                    assert_eq!(piece, &content[off..off + piece.len()], "{what} at {off}");
                    if piece.len() < 5000.min(content.len() - off) {
                        seen.blocks_over_one += 1;
                    }
                } else {
                    assert!(piece.is_empty());
                }
            }
            assert!(img.read(nid, u64::MAX, 10).unwrap().is_empty());
            assert!(matches!(
                img.symlink_target(nid),
                Err(ReadError::NotASymlink { .. })
            ));
        }
        FileType::Symlink => {
            use std::os::unix::ffi::OsStrExt;
            let target = fs::read_link(path).unwrap();
            assert_eq!(
                img.symlink_target(nid).unwrap(),
                target.as_os_str().as_bytes()
            );
        }
        _ => {}
    }
    assert_eq!(img.redirect(nid).unwrap(), None);
    assert_eq!(img.digest(nid).unwrap(), None);
}

fn check_dir<T: Deref<Target = [u8]>>(
    img: &Image<T>,
    nid: Nid,
    parent: Nid,
    path: &Path,
    seen: &mut Seen,
) {
    check_inode(img, nid, path, seen);
    let entries: Vec<DirEntryRef<'_>> = img
        .readdir(nid, 0)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        entries.windows(2).all(|w| w[0].name < w[1].name),
        "{}: entries sorted",
        path.display()
    );
    let dot = entries.iter().find(|e| e.name == b".").unwrap();
    let dotdot = entries.iter().find(|e| e.name == b"..").unwrap();
    assert!(dot.is_dot_or_dotdot() && dotdot.is_dot_or_dotdot());
    assert_eq!(dot.nid, nid);
    assert_eq!(dotdot.nid, parent);
    let names: Vec<Vec<u8>> = entries
        .iter()
        .filter(|e| !e.is_dot_or_dotdot())
        .map(|e| e.name.to_vec())
        .collect();
    assert_eq!(names, source_names(path), "{}: names", path.display());

    // Resuming from any entry's position or cookie gives the rest.
    for (k, e) in entries.iter().enumerate() {
        let from_here = img.readdir(nid, e.offset).unwrap().next().unwrap().unwrap();
        assert_eq!(&from_here, e);
        let after = img.readdir(nid, e.next_offset).unwrap().next();
        assert_eq!(after.map(Result::unwrap).as_ref(), entries.get(k + 1));
        if k % 37 == 0 {
            let rest: Vec<_> = img
                .readdir(nid, e.next_offset)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(rest, entries[k + 1..]);
        }
    }
    // An offset between two entries starts at the next one.
    if entries.len() > 1 {
        let mid = img.readdir(nid, entries[0].offset + 5).unwrap().next();
        assert_eq!(mid.unwrap().unwrap(), entries[1]);
    }
    assert!(img.readdir(nid, u64::MAX).unwrap().next().is_none());

    // Every name is found by lookup, and near-misses are not.
    for e in &entries {
        assert_eq!(img.lookup(nid, e.name).unwrap().as_ref(), Some(e));
        let mut longer = e.name.to_vec();
        longer.push(b'~');
        assert_eq!(img.lookup(nid, &longer).unwrap(), None);
        let shorter = &e.name[..e.name.len() - 1];
        if !entries.iter().any(|o| o.name == shorter) {
            assert_eq!(img.lookup(nid, shorter).unwrap(), None);
        }
    }
    for absent in [&b""[..], b"\x01", b"-", b"zzzz", &[b'a'; 300]] {
        assert_eq!(img.lookup(nid, absent).unwrap(), None);
    }

    for e in entries.iter().filter(|e| !e.is_dot_or_dotdot()) {
        let child = path.join(std::ffi::OsStr::from_bytes_compat(e.name));
        if img.inode(e.nid).unwrap().is_dir() {
            assert_eq!(e.file_type(), Some(FileType::Directory));
            check_dir(img, e.nid, nid, &child, seen);
        } else {
            check_inode(img, e.nid, &child, seen);
            assert!(matches!(
                img.readdir(e.nid, 0),
                Err(ReadError::NotADirectory { .. })
            ));
        }
    }
}

trait FromBytesCompat {
    fn from_bytes_compat(b: &[u8]) -> &Self;
}

impl FromBytesCompat for std::ffi::OsStr {
    fn from_bytes_compat(b: &[u8]) -> &Self {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(b)
    }
}

#[test]
fn mkfs_erofs_images_read_back_as_their_source() {
    let tmp = TempDir::new("api");
    let src = tmp.0.join("src");
    build_source(&src, true);
    let variants: &[&[&str]] = &[
        &[],
        &["-x1"],
        &["-T", "1234567890"],
        &["-Enoinline_data"],
        &["-Eforce-inode-extended"],
        &["-Eforce-inode-compact", "-T", "5"],
        &["--chunksize=4096"],
        &["--chunksize=8192", "-Eforce-chunk-indexes"],
    ];
    let mut total = Seen::default();
    for args in variants {
        let Some(bytes) = mkfs(&src, args) else {
            return;
        };
        assert!(
            Image::open(&bytes[..]).is_err(),
            "open must refuse a plain EROFS image"
        );
        let img = Image::open_erofs(&bytes[..]).unwrap();
        assert_eq!(img.composefs_version(), None);
        let mut seen = Seen::default();
        check_dir(&img, img.root_nid(), img.root_nid(), &src, &mut seen);
        // The same checks through the strict path, with a composefs header.
        let cfs = with_composefs_header(bytes.clone(), 1);
        let img = Image::open(cfs).unwrap();
        assert_eq!(img.composefs_version(), Some(1));
        check_dir(
            &img,
            img.root_nid(),
            img.root_nid(),
            &src,
            &mut Seen::default(),
        );
        eprintln!(
            "mkfs.erofs {args:?}: {} bytes, {} compact + {} extended inodes, layouts {:?}, {} shared xattr reads, {} split reads",
            bytes.len(),
            seen.compact_inodes,
            seen.extended_inodes,
            seen.layouts,
            seen.shared_xattrs,
            seen.blocks_over_one
        );
        total.shared_xattrs += seen.shared_xattrs;
        total.extended_inodes += seen.extended_inodes;
        total.compact_inodes += seen.compact_inodes;
        for (k, v) in seen.layouts {
            *total.layouts.entry(k).or_default() += v;
        }
    }
    // The variants between them exercise every path.
    assert!(total.shared_xattrs > 0, "no shared xattrs seen");
    assert!(total.extended_inodes > 0 && total.compact_inodes > 0);
    assert_eq!(total.layouts.len(), 3, "layouts seen: {:?}", total.layouts);
}

// ---------------------------------------------------------------------------
// to_tree.

fn check_tree_node(tree: &Tree, id: NodeId, path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let node = tree.node(id);
    let md = fs::symlink_metadata(path).unwrap();
    let what = path.display();
    assert_eq!(node.stat.mode, md.mode(), "{what}");
    assert_eq!(
        (node.stat.uid, node.stat.gid),
        (md.uid(), md.gid()),
        "{what}"
    );
    assert_eq!(u64::from(node.stat.nlink), md.nlink(), "{what}");
    let mut xattrs: Vec<_> = node
        .xattrs
        .iter()
        .map(|x| (x.name.clone(), x.value.clone()))
        .collect();
    xattrs.sort();
    assert_eq!(xattrs, source_xattrs(path), "{what}: xattrs");
    match node.file_type().unwrap() {
        FileType::Regular => {
            let content = fs::read(path).unwrap();
            assert_eq!(node.stat.size, content.len() as u64);
            let expect = (!content.is_empty()).then_some(content);
            assert_eq!(node.content, expect, "{what}: content");
            assert_eq!((&node.payload, &node.digest), (&None, &None));
        }
        FileType::Symlink => {
            let target = fs::read_link(path).unwrap();
            assert_eq!(
                node.payload.as_deref(),
                Some(target.as_os_str().as_bytes()),
                "{what}"
            );
        }
        FileType::Directory => {
            let names: Vec<Vec<u8>> = node.entries.iter().map(|e| e.name.clone()).collect();
            let mut expect = source_names(path);
            // C drops char devices 0/0 (the root's whiteout stubs) wherever they are.
            expect.retain(|n| {
                let md = fs::symlink_metadata(path.join(std::ffi::OsStr::from_bytes(n))).unwrap();
                !(md.file_type().is_char_device_compat() && md.rdev() == 0)
            });
            assert_eq!(names, expect, "{what}: entries");
            for e in &node.entries {
                check_tree_node(
                    tree,
                    e.node,
                    &path.join(std::ffi::OsStr::from_bytes(&e.name)),
                );
            }
        }
        FileType::CharDevice | FileType::BlockDevice => assert_eq!(node.stat.rdev, md.rdev()),
        _ => {}
    }
}

trait CharDev {
    fn is_char_device_compat(&self) -> bool;
}

impl CharDev for fs::FileType {
    fn is_char_device_compat(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_char_device()
    }
}

#[test]
fn to_tree_reads_back_the_source() {
    let tmp = TempDir::new("tree");
    let src = tmp.0.join("src");
    build_source(&src, false);
    for args in [&[][..], &["-x1"], &["-Eforce-inode-extended"]] {
        let Some(bytes) = mkfs(&src, args) else {
            return;
        };
        let img = Image::open(with_composefs_header(bytes, 0)).unwrap();
        let tree = img.to_tree().unwrap();
        check_tree_node(&tree, tree.root(), &src);

        // Hard links: the first name in depth-first order is the primary one.
        let root = tree.node(tree.root());
        let hello = root.entry(b"hello").unwrap();
        let link = root.entry(b"hello-link").unwrap();
        let sub = tree.node(root.entry(b"sub").unwrap().node);
        let link2 = sub.entry(b"hello2").unwrap();
        assert!(!hello.hardlink && link.hardlink && link2.hardlink);
        assert_eq!((hello.node, hello.node), (link.node, link2.node));
        // The whiteout is in the image but not in the tree.
        let wh = img.lookup(img.root_nid(), b"wh").unwrap().unwrap();
        assert!(img.lookup(wh.nid, b"gone").unwrap().is_some());
        assert!(tree.lookup_path(b"/wh/gone").is_none());
        assert!(tree.lookup_path(b"/wh/kept").is_some());
    }

    // Files over 5000 bytes stored in the image are refused, as C refuses them.
    build_source(&tmp.0.join("big"), true);
    if let Some(bytes) = mkfs(&tmp.0.join("big"), &[]) {
        let img = Image::open_erofs(bytes).unwrap();
        let err = img.to_tree().unwrap_err();
        assert!(err.to_string().contains("inline file content"), "{err}");
    }
}

#[test]
fn to_tree_applies_overlay_xattrs_as_c_does() {
    let tmp = TempDir::new("overlay");
    let src = tmp.0.join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    let data = pattern(9000, 7);
    fs::write(src.join("ext"), &data).unwrap();
    let digest: Vec<u8> = (0..32).collect();
    let mut metacopy = vec![0, 36, 0, 1];
    metacopy.extend_from_slice(&digest);
    setx(&src.join("ext"), "trusted.overlay.redirect", b"/ab/cdef");
    setx(&src.join("ext"), "trusted.overlay.metacopy", &metacopy);
    setx(&src.join("ext"), "user.keep", b"1");
    fs::write(src.join("wo"), b"").unwrap();
    setx(&src.join("wo"), "trusted.overlay.overlay.whiteout", b"");
    setx(&src.join("wo"), "user.overlay.whiteout", b"");
    setx(&src.join("d"), "trusted.overlay.overlay.whiteouts", b"");
    setx(&src.join("d"), "user.overlay.whiteouts", b"");
    setx(&src.join("d"), "trusted.overlay.overlay.opaque", b"x");
    setx(&src.join("d"), "user.overlay.opaque", b"x");
    setx(&src.join("d"), "trusted.overlay.opaque", b"y");
    fs::write(src.join("esc"), b"").unwrap();
    setx(&src.join("esc"), "trusted.overlay.overlay.foo", b"bar");
    setx(&src.join("esc"), "trusted.overlay.other", b"1");
    // Root whiteout stubs, as composefs writes 00..ff.
    mknod(&src.join("00"), rustix::fs::FileType::CharacterDevice, 0, 0);
    mknod(&src.join("ff"), rustix::fs::FileType::CharacterDevice, 0, 0);
    mknod(
        &src.join("null"),
        rustix::fs::FileType::CharacterDevice,
        1,
        3,
    );

    // Chunk-based files hold no inline content, as composefs writes external files.
    let Some(bytes) = mkfs(&src, &["--chunksize=4096"]) else {
        return;
    };
    let img = Image::open(with_composefs_header(bytes, 1)).unwrap();
    let root = img.root_nid();
    let ext = img.lookup(root, b"ext").unwrap().unwrap().nid;
    assert_eq!(img.redirect(ext).unwrap(), Some(&b"/ab/cdef"[..]));
    assert_eq!(img.digest(ext).unwrap().unwrap().0.to_vec(), digest);
    let mut buf = vec![0; data.len()];
    assert_eq!(img.read_into(ext, 0, &mut buf).unwrap(), data.len());
    assert_eq!(buf, data);

    let tree = img.to_tree().unwrap();
    let names: Vec<&[u8]> = tree
        .node(tree.root())
        .entries
        .iter()
        .map(|e| e.name.as_slice())
        .collect();
    assert_eq!(names, [&b"d"[..], b"esc", b"ext", b"null", b"wo"]);
    let node = |p: &[u8]| tree.node(tree.lookup_path(p).unwrap());
    let xattrs = |p: &[u8]| {
        let mut v: Vec<(Vec<u8>, Vec<u8>)> = node(p)
            .xattrs
            .iter()
            .map(|x| (x.name.clone(), x.value.clone()))
            .collect();
        v.sort();
        v
    };
    let kv = |k: &str, v: &str| (k.as_bytes().to_vec(), v.as_bytes().to_vec());

    let e = node(b"/ext");
    assert_eq!(e.payload.as_deref(), Some(&b"ab/cdef"[..]));
    assert_eq!(e.digest.unwrap().0.to_vec(), digest);
    assert_eq!(e.content, None);
    assert_eq!(e.stat.size, 9000);
    assert_eq!(xattrs(b"/ext"), [kv("user.keep", "1")]);

    let wo = node(b"/wo");
    assert_eq!(wo.file_type(), Some(FileType::CharDevice));
    assert_eq!((wo.stat.rdev, wo.stat.size), (0, 0));
    assert!(wo.xattrs.is_empty());

    assert_eq!(
        xattrs(b"/d"),
        [
            kv("trusted.overlay.opaque", "x"),
            kv("user.overlay.opaque", "x")
        ]
    );
    assert_eq!(xattrs(b"/esc"), [kv("trusted.overlay.foo", "bar")]);
    assert_eq!(
        node(b"/null").stat.rdev,
        img.inode(img.lookup(root, b"null").unwrap().unwrap().nid)
            .unwrap()
            .rdev()
    );
}

// ---------------------------------------------------------------------------
// Corrupt images built on purpose.

/// Image offset of the dirent for `name` in directory `dir`.
fn dirent_offset(img: &Image<Vec<u8>>, dir: Nid, name: &[u8]) -> usize {
    let e = img.lookup(dir, name).unwrap().unwrap();
    let piece = img.read(dir, e.offset, 12).unwrap();
    piece.as_ptr() as usize - img.bytes().as_ptr() as usize
}

fn small_image() -> Option<Vec<u8>> {
    let tmp = TempDir::new("small");
    let src = tmp.0.join("src");
    build_source(&src, false);
    mkfs(&src, &[]).map(|b| with_composefs_header(b, 1))
}

#[test]
fn directory_graphs_that_are_not_trees_are_errors() {
    let Some(bytes) = small_image() else {
        return;
    };
    let img = Image::open(bytes.clone()).unwrap();
    let root = img.root_nid();
    let sub = img.lookup(root, b"sub").unwrap().unwrap().nid;
    let deeper = img.lookup(sub, b"deeper").unwrap().unwrap().nid;

    // A cycle: sub/deeper names the root.
    let mut cyc = bytes.clone();
    let at = dirent_offset(&img, sub, b"deeper");
    cyc[at..at + 8].copy_from_slice(&root.0.to_le_bytes());
    let err = Image::open(cyc).unwrap().to_tree().unwrap_err();
    assert!(err.to_string().contains("referenced twice"), "{err}");

    // A directory named twice: "many" also names sub.
    let mut twice = bytes.clone();
    let at = dirent_offset(&img, root, b"many");
    twice[at..at + 8].copy_from_slice(&sub.0.to_le_bytes());
    let err = Image::open(twice).unwrap().to_tree().unwrap_err();
    assert!(err.to_string().contains("referenced twice"), "{err}");

    // A file entry naming a directory is a second reference too.
    let mut file_to_dir = bytes.clone();
    let at = dirent_offset(&img, root, b"hello");
    file_to_dir[at..at + 8].copy_from_slice(&deeper.0.to_le_bytes());
    assert!(Image::open(file_to_dir).unwrap().to_tree().is_err());

    // Depth and size limits.
    let mut limits = TreeLimits::default();
    limits.max_depth = 1;
    assert!(matches!(
        img.to_tree_with(limits),
        Err(ReadError::Limit { .. })
    ));
    limits.max_depth = 2;
    img.to_tree_with(limits).unwrap();
    let mut limits = TreeLimits::default();
    limits.max_entries = Some(100);
    assert!(matches!(
        img.to_tree_with(limits),
        Err(ReadError::Limit { .. })
    ));
    let mut limits = TreeLimits::default();
    limits.max_bytes = Some(1000);
    assert!(matches!(
        img.to_tree_with(limits),
        Err(ReadError::Limit { .. })
    ));
}

#[test]
fn open_checks_headers_only() {
    let Some(bytes) = small_image() else {
        return;
    };
    Image::open(bytes.clone()).unwrap();
    let patched = |at: usize, v: &[u8]| {
        let mut b = bytes.clone();
        b[at..at + v.len()].copy_from_slice(v);
        b
    };
    let open = |b: Vec<u8>| Image::open(b).map(|_| ()).unwrap_err().to_string();
    assert!(open(patched(0, &[0; 4])).contains("composefs header magic"));
    assert!(open(patched(4, &2u32.to_le_bytes())).contains("header version"));
    assert!(open(patched(1024, &[0; 4])).contains("superblock magic"));
    assert!(open(patched(1024 + 12, &[13])).contains("blkszbits"));
    assert!(open(patched(1024 + 40, &u32::MAX.to_le_bytes())).contains("meta_blkaddr"));
    assert!(open(patched(1024 + 44, &u32::MAX.to_le_bytes())).contains("xattr_blkaddr"));
    assert!(open(patched(1024 + 14, &u16::MAX.to_le_bytes())).contains("outside the image"));
    for len in [0, 31, 1024, 1100, 1151] {
        assert!(Image::open(&bytes[..len]).is_err());
    }
    // Opening looks at the superblock and root inode only: the rest may be garbage.
    let img = Image::open(&bytes[..]).unwrap();
    let root = img.inode(img.root_nid()).unwrap();
    let end = (root.inline_offset() + 64) as usize;
    let mut cut = bytes[..end].to_vec();
    cut.resize(end, 0);
    let img = Image::open(&cut[..]).unwrap();
    assert!(img.to_tree().is_err());
}

// ---------------------------------------------------------------------------
// Hostile images: mutations of real ones.

/// xorshift64*: a tiny deterministic PRNG.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Offsets worth mutating: the superblock, every inode, xattr body, inline
/// data and directory block of the clean image.
fn hot_offsets<T: Deref<Target = [u8]>>(img: &Image<T>) -> Vec<usize> {
    let base = img.bytes().as_ptr() as usize;
    let mut hot = vec![
        0,
        1024,
        1024 + 8,
        1024 + 12,
        1024 + 14,
        1024 + 40,
        1024 + 44,
    ];
    let mut stack = vec![img.root_nid()];
    let mut seen = std::collections::HashSet::new();
    while let Some(nid) = stack.pop() {
        if !seen.insert(nid) {
            continue;
        }
        let ino = img.inode(nid).unwrap();
        hot.extend(
            [ino.offset(), ino.xattr_body_offset(), ino.inline_offset()].map(|o| o as usize),
        );
        if ino.is_dir() {
            let mut block = 0;
            while block < ino.size() {
                hot.push(img.read(nid, block, 1).unwrap().as_ptr() as usize - base);
                block += 4096;
            }
            for e in img.readdir(nid, 0).unwrap() {
                let e = e.unwrap();
                if !e.is_dot_or_dotdot() {
                    stack.push(e.nid);
                }
            }
        } else if ino.size() > 0 {
            hot.push(img.read(nid, 0, 1).unwrap().as_ptr() as usize - base);
        }
    }
    hot
}

fn mutate(rng: &mut Rng, clean: &[u8], hot: &[usize]) -> (Vec<u8>, String) {
    let mut b = clean.to_vec();
    let near = |rng: &mut Rng| {
        let h = hot[rng.below(hot.len())];
        (h + rng.below(80)).saturating_sub(8).min(clean.len() - 1)
    };
    let kind = rng.below(6);
    let what = match kind {
        0 => {
            let len = if rng.below(2) == 0 {
                near(rng)
            } else {
                rng.below(clean.len())
            };
            b.truncate(len);
            format!("truncate to {len}")
        }
        1 => {
            let mut at = Vec::new();
            for _ in 0..1 + rng.below(8) {
                let pos = near(rng);
                b[pos] ^= 1 << rng.below(8);
                at.push(pos);
            }
            format!("flip bits at {at:?}")
        }
        2 | 3 => {
            let pos = near(rng);
            let len = (1 + rng.below(64)).min(b.len() - pos);
            let random = kind == 3;
            for x in &mut b[pos..pos + len] {
                *x = if random { rng.next() as u8 } else { 0 };
            }
            format!(
                "{} {len} bytes at {pos}",
                if random { "randomize" } else { "zero" }
            )
        }
        4 => {
            let pos = near(rng).min(b.len().saturating_sub(8));
            let v: u64 = match rng.below(5) {
                0 => u64::MAX,
                1 => 0,
                2 => u64::from(u32::MAX),
                3 => rng.below(70_000) as u64,
                _ => 0xFFFF,
            };
            let width = [1, 2, 4, 8][rng.below(4)].min(b.len() - pos);
            b[pos..pos + width].copy_from_slice(&v.to_le_bytes()[..width]);
            format!("write {v:#x} as {width} bytes at {pos}")
        }
        _ => {
            let pos = rng.below(b.len());
            b[pos] = rng.next() as u8;
            format!("random byte at {pos}")
        }
    };
    (b, what)
}

/// Reads everything reachable through the API, bounded; errors are fine.
fn walk_all<T: Deref<Target = [u8]>>(img: &Image<T>) -> bool {
    let tree_ok = img.to_tree().is_ok();
    let mut stack = vec![img.root_nid()];
    let mut seen = std::collections::HashSet::new();
    let mut budget = 20_000usize;
    let mut buf = vec![0u8; 16384];
    while let Some(nid) = stack.pop() {
        if !seen.insert(nid) || budget == 0 {
            continue;
        }
        budget -= 1;
        let Ok(ino) = img.inode(nid) else { continue };
        let _ = img.read_into(nid, 0, &mut buf);
        let _ = img.read(nid, 4096, 100_000);
        let _ = img.symlink_target(nid);
        let _ = img.redirect(nid);
        let _ = img.digest(nid);
        let _ = img.get_xattr(nid, b"user.foo");
        if let Ok(x) = img.xattrs(nid) {
            for x in x.take(1000).flatten() {
                let _ = img.get_xattr(nid, &x.name());
            }
        }
        if let Ok(rd) = img.readdir(nid, 0) {
            for e in rd.take(2000) {
                let Ok(e) = e else { break };
                budget = budget.saturating_sub(1);
                let _ = img.lookup(nid, e.name);
                let _ = img.readdir(nid, e.next_offset).map(|mut r| r.next());
                if !e.is_dot_or_dotdot() {
                    stack.push(e.nid);
                }
            }
        }
        let _ = ino.stat();
    }
    tree_ok
}

#[test]
fn hostile_mutations_never_panic_or_hang() {
    let tmp = TempDir::new("hostile");
    let (small, big) = (tmp.0.join("small"), tmp.0.join("big"));
    build_source(&small, false);
    build_source(&big, true);
    let mut images = Vec::new();
    for (src, args) in [
        (&small, &[][..]),
        (&small, &["-x1", "-Eforce-inode-extended"]),
        (&small, &["-Enoinline_data"]),
        (&big, &["--chunksize=4096", "-Enoinline_data"]),
    ] {
        let Some(bytes) = mkfs(src, args) else {
            return;
        };
        images.push(with_composefs_header(bytes, 1));
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let start = Instant::now();
    // Refused at open, walked with to_tree failing, walked with to_tree succeeding.
    let mut outcomes = [0usize; 3];
    for (i, clean) in images.iter().enumerate() {
        let img = Image::open(&clean[..]).unwrap();
        if let Err(e) = img.to_tree() {
            panic!("image {i}: clean image does not read back: {e}");
        }
        let hot = hot_offsets(&img);
        for round in 0..1500 {
            let (bytes, what) = mutate(&mut rng, clean, &hot);
            let t = Instant::now();
            let result = std::panic::catch_unwind(|| match Image::open(&bytes[..]) {
                Ok(img) => 1 + usize::from(walk_all(&img)),
                Err(_) => 0,
            });
            let outcome =
                result.unwrap_or_else(|_| panic!("image {i} mutation {round} ({what}) panicked"));
            outcomes[outcome] += 1;
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "image {i} mutation {round} ({what}) took {:?}",
                t.elapsed()
            );
        }
    }
    eprintln!(
        "{} mutations: {} refused at open, {} walked with to_tree failing, {} with it succeeding, in {:?}",
        outcomes.iter().sum::<usize>(),
        outcomes[0],
        outcomes[1],
        outcomes[2],
        start.elapsed()
    );
}
