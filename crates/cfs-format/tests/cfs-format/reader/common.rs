//! Helpers: temp dirs, mkfs.erofs, source trees and their xattrs.

use cfs_format::erofs::ComposefsHeader;
use cfs_format::reader::{Image, ImageSource, Nid};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
use zerocopy::IntoBytes;

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
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

/// Builds an image of `src` with `mkfs.erofs ARGS` (tests needing it
/// first `require!` the tool).
pub fn mkfs(src: &Path, args: &[&str]) -> Vec<u8> {
    let out = src.with_extension(format!("img{}", args.join("").replace(['-', '='], "")));
    match Command::new("mkfs.erofs")
        .args(args)
        .arg("--quiet")
        .arg(&out)
        .arg(src)
        .output()
    {
        Err(e) => panic!("running mkfs.erofs (apt-get install erofs-utils): {e}"),
        Ok(o) => {
            assert!(
                o.status.success(),
                "mkfs.erofs {args:?} failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let bytes = fs::read(&out).unwrap();
            let _ = fs::remove_file(&out);
            bytes
        }
    }
}

/// Writes a composefs header (version 1, format `version`) into the zeroed
/// first bytes of a plain EROFS image.
pub fn with_composefs_header(mut img: Vec<u8>, version: u32) -> Vec<u8> {
    assert!(img[..32].iter().all(|&b| b == 0));
    let mut h = ComposefsHeader::default();
    h.magic.set(cfs_format::erofs::COMPOSEFS_MAGIC);
    h.version.set(cfs_format::erofs::COMPOSEFS_HEADER_VERSION);
    h.composefs_version.set(version);
    img[..32].copy_from_slice(h.as_bytes());
    img
}

/// Deterministic bytes.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + 3) % 251) as u8 ^ seed).collect()
}

pub fn setx(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setting {name} on {}: {e}", path.display()));
}

pub fn set_mtime(path: &Path, secs: u64, nanos: u32) {
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
        .unwrap();
}

pub fn mknod(path: &Path, kind: rustix::fs::FileType, major: u32, minor: u32) {
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
pub fn build_source(root: &Path, big: bool) {
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
pub fn source_xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
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

pub fn source_names(dir: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<Vec<u8>> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    names.sort();
    names
}

pub fn image_xattrs<T: ImageSource>(img: &Image<T>, nid: Nid) -> Vec<(Vec<u8>, Vec<u8>)> {
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

/// An image source shaped like the FUSE server's block cache: it serves
/// only through [`ImageSource::bytes_at`] (it is no `Deref<Target = [u8]>`, so
/// nothing can reach [`Image::bytes`]) and its `prefix_at` stops at every
/// 4 KiB block boundary. The reader over it must see exactly what it sees
/// over the plain bytes.
pub struct Blocks(pub Vec<u8>);

impl ImageSource for Blocks {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn bytes_at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        self.0.get(start..start.checked_add(len)?)
    }

    fn prefix_at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let to_block_end = 4096 - (offset % 4096) as usize;
        self.bytes_at(offset, len.min(to_block_end))
    }
}

/// A small image (no file over 5000 bytes) with a composefs header.
pub fn small_image() -> Vec<u8> {
    let tmp = TempDir::new("small");
    let src = tmp.0.join("src");
    build_source(&src, false);
    with_composefs_header(mkfs(&src, &[]), 1)
}
