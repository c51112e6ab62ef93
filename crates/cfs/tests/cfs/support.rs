//! What the `cfs` tests share beyond `cfs-testkit`: trees made to cover
//! every file type, images built from them, what a composefs mount of a
//! tree or an image must show, and repository checks.

use crate::cfs;
use cfs_testkit::mounts::Mounted;
use cfs_testkit::walk::{mknod, set_xattr, sha256_file, Entry};
use cfs_testkit::{ok, os, Rng};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

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
        if cfs_format::overlay::is_whiteout(e.mode, e.rdev) {
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
            e.content = Some(Ok(format!("{:x}", Sha256::digest(b""))));
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
    let o = cfs().ok([
        os("mkfs"),
        os("--hardlinks"),
        os("--print-digest"),
        os("--digest-store"),
        objects.as_os_str(),
        src.as_os_str(),
        image.as_os_str(),
    ]);
    let digest = o.trim().to_string();
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
    let o = cfs().ok([os("dump"), image.as_os_str()]);
    let tree = cfs_format::dumpfile::parse(o.as_bytes(), Default::default()).unwrap();
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
        let content = (ft == FileType::Regular).then(|| match (&n.content, &n.payload) {
            (Some(c), _) => Ok(format!("{:x}", Sha256::digest(c))),
            (None, Some(p)) if st.size > 0 => sha256_file(&objects.join(OsStr::from_bytes(p))),
            _ => Ok(format!("{:x}", Sha256::digest(b""))),
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
                content,
                link_of,
            },
        );
    }
    expected_from_source(out)
}

/// A tree of `files` files in nested directories: sizes from 0 to `max`
/// bytes, every seventh file a duplicate, some hard links and symlinks.
pub fn generate(root: &Path, files: usize, max: usize, salt: u8) {
    let mut rng = Rng::seeded(0x9e37_79b9_7f4a_7c15 ^ u64::from(salt));
    for i in 0..files {
        let dir = root.join(format!("d{}/e{}", i % 17, i % 5));
        std::fs::create_dir_all(&dir).unwrap();
        let size = match i % 10 {
            0 => 0,
            1 | 2 => rng.below(65),
            3 => max,
            _ => rng.below(max),
        };
        let seed = if i % 7 == 0 {
            7
        } else {
            i as u64 * 31 + u64::from(salt)
        };
        let data: Vec<u8> = (0..size)
            .map(|j| ((j as u64).wrapping_mul(seed) >> 3) as u8)
            .collect();
        let p = dir.join(format!("f{i}"));
        std::fs::write(&p, data).unwrap();
        if i % 50 == 1 {
            std::fs::hard_link(&p, dir.join(format!("hl{i}"))).unwrap();
        }
        if i % 40 == 2 {
            std::os::unix::fs::symlink(format!("f{i}"), dir.join(format!("sl{i}"))).unwrap();
        }
    }
}

/// The image id `mkcomposefs --hardlinks` computes for a directory.
pub fn expected_id(dir: &Path) -> String {
    cfs()
        .ok([
            os("mkfs"),
            os("--hardlinks"),
            os("--print-digest-only"),
            dir.as_os_str(),
        ])
        .trim()
        .to_owned()
}

/// Every object's content hashes to its name (checked with `cfs digest`, not fsck).
pub fn objects_match_names(repo: &Path) {
    let mut files = Vec::new();
    for d in std::fs::read_dir(repo.join("objects")).unwrap() {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            files.push(f.unwrap().path());
        }
    }
    for chunk in files.chunks(500) {
        let out = ok(cfs().command(["digest"]).args(chunk).output().unwrap());
        for line in out.lines() {
            let (digest, path) = line.split_once("  ").unwrap();
            let p = Path::new(path);
            let name = format!(
                "{}{}",
                p.parent().unwrap().file_name().unwrap().to_str().unwrap(),
                p.file_name().unwrap().to_str().unwrap()
            );
            assert_eq!(digest, name, "{path}");
        }
    }
}

/// `cfs --repo REPO ARGS…`, arguments mixing strings and paths.
pub fn in_repo(repo: &Path, args: &[&dyn AsRef<OsStr>]) -> std::process::Output {
    cfs().repo(repo).run(args)
}

/// `cfs fsck --json`: whether it found the repository clean, and the report.
pub fn fsck_json(repo: &Path) -> (bool, String) {
    let o = cfs().repo(repo).run(["fsck", "--json"]);
    (o.status.success(), String::from_utf8(o.stdout).unwrap())
}

/// Runs `cfs mount ARGS…` (`mnt` being its mount point); on success the
/// guard that unmounts it, else the command's stderr.
pub fn mount(args: &[&OsStr], mnt: &Path) -> Result<Mounted, String> {
    Mounted::mount(&cfs(), args, mnt)
}
