//! End-to-end kernel mounts: `cfs mount`, `cfs unmount` and `mount.composefs`
//! on images `cfs mkfs --digest-store` builds from a generated tree holding
//! every file type, xattrs (user, security, `trusted.overlay.*` that the image
//! stores escaped), hard links, a whiteout and a large sparse file.
//!
//! The mounted tree is walked (lstat, readlink, xattrs, sha256 of contents)
//! and compared with the source tree and with the image's own dump (`cfs
//! dump`, contents from the objects it names). The few things a composefs mount shows
//! differently from its source by design are mapped, each with its reason, in
//! [`expected_from_source`].
//!
//! Needs root, erofs and overlayfs; skipped with a message otherwise. Every
//! mount is undone by a guard, and each test checks that no mount or loop
//! device naming its files is left behind.

use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Why these tests can't run here, if they can't.
fn unavailable() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root".into());
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    for needed in ["erofs", "overlay"] {
        if !fs.contains(needed) {
            let _ = Command::new("modprobe").arg(needed).status();
            let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
            if !fs.contains(needed) {
                return Some(format!("the kernel has no {needed}"));
            }
        }
    }
    None
}

macro_rules! require_kernel_mounts {
    () => {
        if let Some(why) = unavailable() {
            eprintln!("SKIPPED: kernel mount tests need root, erofs and overlayfs ({why})");
            return;
        }
    };
}

fn cfs(args: &[&OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cfs"))
        .args(args)
        .output()
        .expect("run cfs")
}

fn os<S: AsRef<OsStr> + ?Sized>(s: &S) -> &OsStr {
    s.as_ref()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "failed: {}", stderr(&o));
    o
}

/// A mount point with something mounted on it, unmounted on drop.
#[derive(Debug)]
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        if !cfs(&[os("unmount"), self.0.as_os_str()]).status.success() {
            let _ = cfs(&[os("unmount"), os("--lazy"), self.0.as_os_str()]);
        }
    }
}

/// Runs a `cfs mount`; on success returns the guard.
fn mount(args: &[&OsStr], mnt: &Path) -> Result<Mounted, String> {
    let mut all = vec![os("mount")];
    all.extend_from_slice(args);
    let o = cfs(&all);
    if o.status.success() {
        Ok(Mounted(mnt.to_path_buf()))
    } else {
        Err(stderr(&o))
    }
}

/// Fails if a mount or a loop device still refers to anything under `dir`.
fn assert_nothing_left(dir: &Path) {
    let dir = dir.to_string_lossy();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let left: Vec<&str> = mounts.lines().filter(|l| l.contains(&*dir)).collect();
    assert!(left.is_empty(), "mounts left behind: {left:#?}");
    if let Ok(o) = Command::new("losetup").arg("-a").output() {
        let loops = String::from_utf8_lossy(&o.stdout);
        let left: Vec<&str> = loops.lines().filter(|l| l.contains(&*dir)).collect();
        assert!(left.is_empty(), "loop devices left behind: {left:#?}");
    }
}

fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// All xattrs of a path, not following symlinks. Buffers are the kernel's
/// maximum (64 KiB) since rustix reports 0 for a size query with an empty slice.
fn xattrs_of(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut list = vec![0u8; 1 << 16];
    let n = rustix::fs::llistxattr(path, &mut list[..]).unwrap();
    for name in list[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = OsStr::from_bytes(name);
        let mut v = vec![0u8; 1 << 16];
        let n = rustix::fs::lgetxattr(path, name, &mut v[..]).unwrap();
        v.truncate(n);
        out.insert(name.to_string_lossy().into_owned(), v);
    }
    out
}

/// What the walk records of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
    rdev: u64,
    /// Size of non-directories (directory sizes are layout, not content).
    size: Option<u64>,
    mtime: (i64, i64),
    symlink: Option<OsString>,
    xattrs: BTreeMap<String, Vec<u8>>,
    sha256: Option<String>,
    /// For a hard link: the first path (in walk order) of the same inode.
    link_of: Option<PathBuf>,
}

/// lstat-walks `root`, keyed by path relative to it (`""` is the root).
fn walk(root: &Path) -> BTreeMap<PathBuf, Entry> {
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
fn expected_from_source(mut src: BTreeMap<PathBuf, Entry>) -> BTreeMap<PathBuf, Entry> {
    let whiteouts: Vec<PathBuf> = src
        .iter()
        .filter(|(_, e)| e.mode & S_IFMT == S_IFCHR && e.rdev == 0)
        .map(|(p, _)| p.clone())
        .collect();
    for p in whiteouts {
        let e = src.get_mut(&p).unwrap();
        e.mode = S_IFREG | (e.mode & 0o7777);
        e.rdev = 0;
        e.size = Some(0);
        e.sha256 = Some(format!("{:x}", Sha256::digest(b"")));
        let parent = p.parent().unwrap().to_path_buf();
        for ns in ["trusted", "user"] {
            e.xattrs
                .insert(format!("{ns}.overlay.whiteout"), Vec::new());
        }
        let parent = src.get_mut(&parent).unwrap();
        for ns in ["trusted", "user"] {
            parent
                .xattrs
                .insert(format!("{ns}.overlay.opaque"), b"x".to_vec());
            parent
                .xattrs
                .insert(format!("{ns}.overlay.whiteouts"), Vec::new());
        }
    }
    src
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", path.display()));
}

fn mknod(path: &Path, kind: rustix::fs::FileType, mode: u32, dev: u64) {
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
fn make_tree(src: &Path) {
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
fn build(dir: &Path, src: &Path) -> (PathBuf, PathBuf, String) {
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
fn small_setup() -> (tempfile::TempDir, PathBuf, PathBuf, String) {
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
fn expected_from_dump(image: &Path, objects: &Path) -> BTreeMap<PathBuf, Entry> {
    use cfs_format::{FileType, NodeId};
    let o = ok(cfs(&[os("dump"), image.as_os_str()]));
    let tree = cfs_format::dumpfile::parse(&o.stdout, Default::default()).unwrap();
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
                    .map(|x| {
                        (
                            String::from_utf8_lossy(&x.name).into_owned(),
                            x.value.clone(),
                        )
                    })
                    .collect(),
                sha256,
                link_of,
            },
        );
    }
    expected_from_source(out)
}

/// Lists the differences between two walks, one line each.
fn diff(want: &BTreeMap<PathBuf, Entry>, got: &BTreeMap<PathBuf, Entry>) -> Vec<String> {
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

#[test]
fn mounted_tree_equals_source() {
    require_kernel_mounts!();
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src);
    let (image, objects, _) = build(t.path(), &src);
    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let want = expected_from_source(walk(&src));
    let from_dump = expected_from_dump(&image, &objects);
    for extra in [&[][..], &[os("--loop-device")][..]] {
        let mut args = vec![
            image.as_os_str(),
            mnt.as_os_str(),
            os("--basedir"),
            objects.as_os_str(),
        ];
        args.extend_from_slice(extra);
        let guard = mount(&args, &mnt).unwrap();
        let got = walk(&mnt);
        drop(guard);
        let d = diff(&want, &got);
        assert!(
            d.is_empty(),
            "mount {extra:?} differs from the source:\n{}",
            d.join("\n")
        );
        let d = diff(&from_dump, &got);
        assert!(
            d.is_empty(),
            "mount {extra:?} differs from the image's dump:\n{}",
            d.join("\n")
        );
    }
    assert_nothing_left(t.path());
}

/// Removes the temporary `/sbin/mount.composefs` link on the way out.
struct SbinHelper(PathBuf);

impl Drop for SbinHelper {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `mount -t composefs` through mount(8) itself, with cfs installed as
/// `/sbin/mount.composefs` for the duration of the test (skipped where another
/// helper is already installed there).
#[test]
fn mount_t_composefs_through_mount8() {
    require_kernel_mounts!();
    let sbin = PathBuf::from("/sbin/mount.composefs");
    if sbin.symlink_metadata().is_ok() {
        eprintln!("skipped: /sbin/mount.composefs already exists (not ours to replace)");
        return;
    }
    let (t, image, objects, digest) = small_setup();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_cfs"), &sbin).unwrap();
    let _installed = SbinHelper(sbin);
    let mnt = t.path().join("mnt");
    let o = Command::new("mount")
        .args(["-t", "composefs"])
        .arg(&image)
        .arg(&mnt)
        .arg("-o")
        .arg(format!("basedir={},digest={digest},ro", objects.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "mount -t composefs: {}", stderr(&o));
    let g = Mounted(mnt.clone());
    assert_eq!(std::fs::read(mnt.join("inline")).unwrap(), b"hi\n");
    assert_eq!(std::fs::read(mnt.join("d/external")).unwrap().len(), 1700);
    drop(g);
    assert_nothing_left(t.path());
}

#[test]
fn mount_by_name_in_a_repository() {
    require_kernel_mounts!();
    let (t, image, objects, digest) = small_setup();
    let repo = t.path().join("repo");
    std::fs::create_dir_all(repo.join("images/refs")).unwrap();
    std::fs::rename(&objects, repo.join("objects")).unwrap();
    std::fs::rename(&image, repo.join("images").join(&digest)).unwrap();
    std::os::unix::fs::symlink(format!("../{digest}"), repo.join("images/refs/base")).unwrap();
    let mnt = t.path().join("mnt");
    for name in ["base", digest.as_str()] {
        let g = mount(
            &[os(name), mnt.as_os_str(), os("--repo"), repo.as_os_str()],
            &mnt,
        )
        .unwrap();
        assert_eq!(std::fs::read(mnt.join("inline")).unwrap(), b"hi\n");
        assert_eq!(std::fs::read(mnt.join("d/external")).unwrap().len(), 1700);
        drop(g);
    }
    let e = mount(
        &[os("nope"), mnt.as_os_str(), os("--repo"), repo.as_os_str()],
        &mnt,
    )
    .unwrap_err();
    assert!(e.contains("no image \"nope\""), "{e}");
    assert_nothing_left(t.path());
}

#[test]
fn writable_mount_writes_only_the_upper_dir() {
    require_kernel_mounts!();
    let (t, image, objects, _) = small_setup();
    let (upper, work, mnt) = (
        t.path().join("upper"),
        t.path().join("work"),
        t.path().join("mnt"),
    );
    std::fs::create_dir(&upper).unwrap();
    std::fs::create_dir(&work).unwrap();
    let image_sha = sha256_file(&image);
    let objects_before = walk(&objects);
    let base = [
        image.as_os_str(),
        mnt.as_os_str(),
        os("--basedir"),
        objects.as_os_str(),
    ];
    let upper_args = [
        os("--upperdir"),
        upper.as_os_str(),
        os("--workdir"),
        work.as_os_str(),
    ];

    // Without --read-write, an upper dir still gives a read-only mount.
    let g = mount(&[&base[..], &upper_args[..]].concat(), &mnt).unwrap();
    assert!(std::fs::write(mnt.join("new"), b"x").is_err());
    drop(g);

    let g = mount(
        &[&base[..], &upper_args[..], &[os("--read-write")][..]].concat(),
        &mnt,
    )
    .unwrap();
    std::fs::write(mnt.join("new"), b"new file\n").unwrap();
    let mut ext = std::fs::read(mnt.join("d/external")).unwrap();
    ext.extend_from_slice(b"appended\n");
    std::fs::write(mnt.join("d/external"), &ext).unwrap();
    std::fs::remove_file(mnt.join("inline")).unwrap();
    drop(g);

    assert_eq!(std::fs::read(upper.join("new")).unwrap(), b"new file\n");
    assert_eq!(std::fs::read(upper.join("d/external")).unwrap(), ext);
    let wo = std::fs::symlink_metadata(upper.join("inline")).unwrap();
    assert!(
        wo.file_type().is_char_device() && wo.rdev() == 0,
        "a whiteout in upper"
    );
    assert_eq!(sha256_file(&image), image_sha, "the image changed");
    assert_eq!(walk(&objects), objects_before, "the object store changed");
    // fsck: every object still has the fs-verity digest its name says.
    for (rel, e) in walk(&objects) {
        if e.sha256.is_some() {
            let o = ok(cfs(&[os("digest"), objects.join(&rel).as_os_str()]));
            let hex = String::from_utf8(o.stdout).unwrap();
            let name = rel.to_string_lossy().replace('/', "");
            assert_eq!(hex.split_whitespace().next().unwrap(), name);
        }
    }
    // Remounted over the same upper dir, the changes are there.
    let g = mount(&[&base[..], &upper_args[..]].concat(), &mnt).unwrap();
    assert_eq!(std::fs::read(mnt.join("d/external")).unwrap(), ext);
    assert!(!mnt.join("inline").exists());
    drop(g);
    assert_nothing_left(t.path());
}

/// A repository image mounted by name with an upper dir: writes land in the
/// upper dir, and `cfs fsck` finds the repository clean afterwards.
#[test]
fn writable_mount_of_a_repository_image_keeps_fsck_clean() {
    require_kernel_mounts!();
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src);
    let repo = t.path().join("repo");
    let r = |args: &[&OsStr]| {
        let mut all = vec![os("--repo"), repo.as_os_str()];
        all.extend_from_slice(args);
        cfs(&all)
    };
    ok(r(&[os("create-image"), src.as_os_str(), os("tree")]));
    let (upper, work, mnt) = (
        t.path().join("up"),
        t.path().join("wk"),
        t.path().join("mnt"),
    );
    for d in [&upper, &work, &mnt] {
        std::fs::create_dir(d).unwrap();
    }
    let g = mount(
        &[
            os("tree"),
            mnt.as_os_str(),
            os("--repo"),
            repo.as_os_str(),
            os("--upperdir"),
            upper.as_os_str(),
            os("--workdir"),
            work.as_os_str(),
            os("--read-write"),
        ],
        &mnt,
    )
    .unwrap();
    std::fs::write(mnt.join("written"), b"upper only\n").unwrap();
    drop(g);
    assert_eq!(
        std::fs::read(upper.join("written")).unwrap(),
        b"upper only\n"
    );
    let o = r(&[os("fsck")]);
    assert!(
        o.status.success(),
        "fsck after a writable mount: {}",
        stderr(&o)
    );
    assert_nothing_left(t.path());
}

#[test]
fn verity_require_fails_clearly_without_fs_verity() {
    require_kernel_mounts!();
    let (t, image, objects, _) = small_setup();
    let mnt = t.path().join("mnt");
    let args = [
        image.as_os_str(),
        mnt.as_os_str(),
        os("--basedir"),
        objects.as_os_str(),
    ];
    match mount(&[&args[..], &[os("--verity=require")][..]].concat(), &mnt) {
        Err(e) => assert!(e.contains("lacks fs-verity"), "{e}"),
        Ok(_) => eprintln!("NOTE: this object store has fs-verity; verity=require mounted"),
    }
    // try degrades to off where fs-verity is missing; off always mounts.
    for v in ["--verity=try", "--verity=off"] {
        drop(mount(&[&args[..], &[os(v)][..]].concat(), &mnt).unwrap());
    }
    assert_nothing_left(t.path());
}

#[test]
fn bad_inputs_fail_clearly_and_leave_nothing() {
    require_kernel_mounts!();
    let (t, image, objects, digest) = small_setup();
    let mnt = t.path().join("mnt");
    let data = std::fs::read(&image).unwrap();
    let write = |name: &str, f: &dyn Fn(&mut Vec<u8>)| {
        let mut d = data.clone();
        f(&mut d);
        let p = t.path().join(name);
        std::fs::write(&p, d).unwrap();
        p
    };
    let bad_magic = write("bad-magic.cfs", &|d| d[1024..1028].copy_from_slice(b"XXXX"));
    let truncated = write("truncated.cfs", &|d| d.truncate(d.len() - 4096));
    let garbage = write("garbage.cfs", &|d| {
        for (i, b) in d[1152..].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(151).wrapping_add(7);
        }
    });
    let wrong = "ab".repeat(32);
    let (none, no_image) = (t.path().join("none"), t.path().join("no-image"));
    let cases: Vec<(Vec<&OsStr>, &str)> = vec![
        (
            vec![bad_magic.as_os_str(), os("--basedir"), objects.as_os_str()],
            "EROFS superblock magic",
        ),
        (
            vec![truncated.as_os_str(), os("--basedir"), objects.as_os_str()],
            "truncated",
        ),
        (
            vec![garbage.as_os_str(), os("--basedir"), objects.as_os_str()],
            "could not mount",
        ),
        (
            vec![image.as_os_str(), os("--basedir"), none.as_os_str()],
            "object directory",
        ),
        (
            vec![
                image.as_os_str(),
                os("--basedir"),
                objects.as_os_str(),
                os("--digest"),
                os(&wrong),
            ],
            "not the expected",
        ),
        (
            vec![
                image.as_os_str(),
                os("--basedir"),
                objects.as_os_str(),
                os("--loop-device"),
                os("--digest"),
                os(&wrong),
            ],
            "not the expected",
        ),
        (
            vec![
                garbage.as_os_str(),
                os("--basedir"),
                objects.as_os_str(),
                os("--loop-device"),
            ],
            "could not mount",
        ),
        (
            vec![no_image.as_os_str(), os("--basedir"), objects.as_os_str()],
            "could not open image",
        ),
    ];
    for (mut args, want) in cases {
        args.insert(1, mnt.as_os_str());
        match mount(&args, &mnt) {
            Ok(_) => panic!("{args:?} mounted"),
            Err(e) => assert!(e.contains(want), "{args:?}: want {want:?} in {e}"),
        }
        assert_nothing_left(t.path());
    }
    // The right digest mounts.
    let args = [
        image.as_os_str(),
        mnt.as_os_str(),
        os("--basedir"),
        objects.as_os_str(),
        os("--digest"),
        os(&digest),
    ];
    drop(mount(&args, &mnt).unwrap());
    // A mount point that doesn't exist: nothing of the half-built mount stays.
    let e = mount(
        &[
            image.as_os_str(),
            t.path().join("no-mnt").as_os_str(),
            os("--basedir"),
            objects.as_os_str(),
        ],
        &mnt,
    )
    .unwrap_err();
    assert!(e.contains("could not attach"), "{e}");
    let e = String::from_utf8_lossy(&cfs(&[os("unmount"), mnt.as_os_str()]).stderr).into_owned();
    assert!(e.contains("not a mount point"), "{e}");
    assert_nothing_left(t.path());
}

#[test]
fn mount_composefs_helper() {
    require_kernel_mounts!();
    let (t, image, objects, digest) = small_setup();
    let mnt = t.path().join("mnt");
    let helper = t.path().join("mount.composefs");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_cfs"), &helper).unwrap();
    // As mount(8) runs it: `mount.composefs SOURCE DIR [-sfnv] -o OPTS -t TYPE`.
    let run = |opts: String| {
        Command::new(&helper)
            .arg(&image)
            .arg(&mnt)
            .args(["-n", "-o", &opts, "-t", "composefs"])
            .output()
            .unwrap()
    };
    let base = format!("basedir={}", objects.display());
    let o = run(format!("{base},digest={digest},noverity,ro"));
    assert!(o.status.success(), "{}", stderr(&o));
    let g = Mounted(mnt.clone());
    assert_eq!(std::fs::read(mnt.join("d/external")).unwrap().len(), 1700);
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.contains(&*mnt.to_string_lossy()))
        .unwrap();
    assert!(line.contains(" - overlay composefs ro,"), "{line}");
    drop(g);

    let (upper, work) = (t.path().join("u"), t.path().join("w"));
    std::fs::create_dir(&upper).unwrap();
    std::fs::create_dir(&work).unwrap();
    let o = run(format!(
        "{base},upperdir={},workdir={},rw",
        upper.display(),
        work.display()
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let g = Mounted(mnt.clone());
    std::fs::write(mnt.join("written"), b"w").unwrap();
    drop(g);
    assert!(upper.join("written").exists());

    for (opts, want) in [
        (
            format!("{base},digest={}", "00".repeat(32)),
            "Failed to mount composefs",
        ),
        (format!("{base},verity"), "lacks fs-verity"),
        (format!("{base},frob"), "Unsupported option frob"),
        ("ro".to_string(), "no object directory"),
        (format!("{base},upperdir=/x"), "Both workdir and upperdir"),
    ] {
        let o = run(opts.clone());
        assert!(!o.status.success(), "{opts} mounted");
        let e = stderr(&o);
        assert!(
            e.starts_with("mount.composefs: ") && e.contains(want),
            "{opts}: {e}"
        );
    }
    assert_nothing_left(t.path());
}
