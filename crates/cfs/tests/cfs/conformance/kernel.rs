//! Kernel cross-check: images we build are mounted as plain EROFS by the
//! running kernel, walked with lstat/readlink/listxattr, and compared with the
//! tree the image's own reader (and so `composefs-info dump`) gives.
//!
//! Skipped, with a message, unless running as root with EROFS available.
//!
//! What a raw EROFS mount cannot show as the dump does, and how it is mapped:
//! - format-1 roots hold 256 extra entries `00`..`ff` (overlay whiteout stubs,
//!   hidden by composefs tools and overlayfs): ignored when absent from the tree;
//! - whiteouts (char 0/0 in the tree) are stored escaped as empty regular files
//!   with `*.overlay.overlay.whiteout` markers: seen as stored, checked as such;
//! - overlay xattrs appear raw: `trusted.overlay.metacopy`/`redirect` are checked
//!   against the digest/payload and dropped, composefs' own whiteout/opaque
//!   markers dropped, and escaped `trusted.overlay.overlay.X` read as
//!   `trusted.overlay.X` (as the reader does);
//! - a few listed xattrs can't be read back through the VFS (`user.*` on
//!   symlinks and devices, a malformed POSIX ACL): compared by name only;
//! - external file contents live in an object store, not in the image: only
//!   the size is checked (including the ~9e15-byte files, never read); inline
//!   contents are read and compared.

use super::{run, stderr};
use cfs_format::overlay;
use cfs_format::reader::Image;
use cfs_format::{FileType, Node, NodeId, Tree};
use cfs_testkit::conformance::{asset_path, first_diff, rows};
use cfs_testkit::mounts::ErofsMount;
use cfs_testkit::walk::xattrs_listed;
use cfs_testkit::{need, os, require};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The xattrs the kernel lists, with their values; `None` for a listed name the
/// kernel refuses to read: `user.*` on a symlink or device (ENODATA, by the
/// VFS's xattr rules) and a malformed POSIX ACL (EINVAL). Those are compared by
/// name only.
fn kernel_xattrs(path: &Path) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
    xattrs_listed(path)
        .unwrap()
        .into_iter()
        .map(|(name, value)| (name, value.ok()))
        .collect()
}

/// Composefs' own markers, dropped as the image reader drops them (the escaped
/// opaque marker and `user.overlay.opaque` are kept, as C's dump keeps them).
const MARKERS: &[&[u8]] = &[
    overlay::OPAQUE,
    overlay::ESCAPED_WHITEOUT,
    overlay::ESCAPED_WHITEOUTS,
    overlay::USERXATTR_WHITEOUT,
    overlay::USERXATTR_WHITEOUTS,
];

/// Compares one mounted path with its tree node; appends differences.
fn compare_node(path: &Path, node: &Node, diffs: &mut Vec<String>) {
    let shown = path.display();
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => return diffs.push(format!("{shown}: lstat: {e}")),
    };
    let whiteout = overlay::is_whiteout(node.stat.mode, node.stat.rdev);
    let mut check = |what: &str, found: u64, want: u64| {
        if found != want {
            diffs.push(format!("{shown}: {what} {found}, dump says {want}"));
        }
    };
    let want_mode = if whiteout {
        (node.stat.mode & 0o7777) | 0o100000
    } else {
        node.stat.mode
    };
    check("mode", meta.mode().into(), want_mode.into());
    check("uid", meta.uid().into(), node.stat.uid.into());
    check("gid", meta.gid().into(), node.stat.gid.into());
    check("nlink", meta.nlink(), node.stat.nlink.into());
    check("mtime", meta.mtime() as u64, node.stat.mtime.sec as u64);
    check(
        "mtime_nsec",
        meta.mtime_nsec() as u64,
        node.stat.mtime.nsec.into(),
    );
    if !whiteout {
        check("rdev", meta.rdev(), node.stat.rdev);
    }
    if node.file_type() != Some(FileType::Directory) {
        check("size", meta.size(), node.stat.size);
    }
    match node.file_type() {
        Some(FileType::Symlink) => {
            let target = std::fs::read_link(path).map(|t| t.into_os_string().into_vec());
            if target.as_ref().ok() != node.payload.as_ref() {
                diffs.push(format!("{shown}: symlink target {target:?}"));
            }
        }
        Some(FileType::Regular) => {
            if let Some(content) = &node.content {
                if std::fs::read(path).ok().as_ref() != Some(content) {
                    diffs.push(format!("{shown}: inline content differs"));
                }
            }
        }
        _ => {}
    }

    let mut raw = kernel_xattrs(path);
    if let Some(Some(redirect)) = raw.remove(overlay::REDIRECT) {
        let want = node.payload.as_ref().map(|p| [&b"/"[..], p].concat());
        if Some(&redirect) != want.as_ref() {
            diffs.push(format!(
                "{shown}: redirect {:?}",
                String::from_utf8_lossy(&redirect)
            ));
        }
    }
    if let Some(Some(metacopy)) = raw.remove(overlay::METACOPY) {
        if overlay::metacopy_digest(&metacopy) != node.digest {
            diffs.push(format!("{shown}: metacopy digest differs"));
        }
    }
    let want: BTreeMap<Vec<u8>, Vec<u8>> = node
        .xattrs
        .iter()
        .map(|x| (x.name.clone(), x.value.clone()))
        .collect();
    let mut found: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for (name, value) in raw {
        if MARKERS.contains(&name.as_slice()) {
            continue;
        }
        let name = overlay::unescape(overlay::Namespace::Trusted, &name)
            .map_or(name.clone(), |n| n.into_owned());
        // Unreadable values compare by name only (see `xattrs_of`).
        let value = value
            .or_else(|| want.get(&name).cloned())
            .unwrap_or_default();
        found.insert(name, value);
    }
    if found != want {
        let names = |m: &BTreeMap<Vec<u8>, Vec<u8>>| {
            m.keys()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect::<Vec<_>>()
        };
        diffs.push(format!(
            "{shown}: xattrs {:?}, dump says {:?}",
            names(&found),
            names(&want)
        ));
    }
}

/// Walks the mount and the tree together; returns the differences.
fn compare_tree(mnt: &Path, tree: &Tree) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut stack: Vec<(PathBuf, NodeId)> = vec![(mnt.to_path_buf(), tree.root())];
    while let Some((dir, id)) = stack.pop() {
        let node = tree.node(id);
        compare_node(&dir, node, &mut diffs);
        if node.file_type() != Some(FileType::Directory) {
            continue;
        }
        let mut names: Vec<Vec<u8>> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd.map(|e| e.unwrap().file_name().into_vec()).collect(),
            Err(e) => {
                diffs.push(format!("{}: readdir: {e}", dir.display()));
                continue;
            }
        };
        names.sort();
        let is_root = id == tree.root();
        for name in &names {
            let child = dir.join(OsStr::from_bytes(name));
            match node.entry(name) {
                Some(e) if tree.node(e.node).file_type() == Some(FileType::Directory) => {
                    stack.push((child, e.node))
                }
                Some(e) => compare_node(&child, tree.node(e.node), &mut diffs),
                None if is_root
                    && name.len() == 2
                    && name.iter().all(|c| c.is_ascii_hexdigit()) => {} // whiteout stub
                None => diffs.push(format!("{}: not in the dump", child.display())),
            }
        }
        for e in &node.entries {
            if !names.contains(&e.name) {
                diffs.push(format!(
                    "{}/{}: missing from the mount",
                    dir.display(),
                    String::from_utf8_lossy(&e.name)
                ));
            }
        }
    }
    diffs
}

fn image_tree(image: &Path) -> Result<Tree, String> {
    let bytes = std::fs::read(image).map_err(|e| e.to_string())?;
    Image::open(bytes)
        .and_then(|i| i.to_tree())
        .map_err(|e| format!("{}: {e}", image.display()))
}

/// Every conformance image, mounted by the kernel, agrees with its dump.
#[test]
fn kernel_mount_matches_dump() {
    require!(need::root(), need::filesystems(&["erofs"]));
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for row in rows() {
        let name = &row.asset;
        let input = asset_path(name, tmp.path());
        let image = tmp.path().join(format!("{name}.img"));
        let mut args: Vec<&OsStr> = row.version_args.iter().map(os).collect();
        args.extend([os("--from-file"), input.as_os_str(), image.as_os_str()]);
        let o = run("mkcomposefs", &args, &[]);
        if !o.status.success() {
            failures.push(format!("{name}: mkcomposefs failed: {}", stderr(&o)));
            continue;
        }
        let tree = match image_tree(&image) {
            Ok(t) => t,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        let mount = match ErofsMount::new(&image) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let diffs = compare_tree(mount.path(), &tree);
        if !diffs.is_empty() {
            let shown: Vec<_> = diffs.iter().take(10).cloned().collect();
            failures.push(format!(
                "{name}: {} differences, first:\n  {}",
                diffs.len(),
                shown.join("\n  ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A directory built with `mkcomposefs DIR IMG` and mounted back shows that
/// directory, and the image dumps as the directory's own scan does.
#[test]
fn kernel_mount_of_directory_image() {
    require!(need::root(), need::filesystems(&["erofs"]));
    let src = tempfile::tempdir().unwrap();
    let r = src.path();
    std::fs::create_dir_all(r.join("etc/deep/er")).unwrap();
    std::fs::write(r.join("etc/small"), b"inline me\n").unwrap();
    std::fs::write(r.join("etc/deep/er/big"), vec![7u8; 100_000]).unwrap();
    std::fs::write(r.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("etc/small", r.join("link")).unwrap();
    let _ = rustix::fs::setxattr(
        r.join("etc/small"),
        "user.note",
        b"hello",
        rustix::fs::XattrFlags::empty(),
    );
    let _ = rustix::fs::setxattr(
        r.join("etc"),
        "trusted.overlay.redirect",
        b"user-data",
        rustix::fs::XattrFlags::empty(),
    );

    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("dir.img");
    let o = run("mkcomposefs", &[r.as_os_str(), image.as_os_str()], &[]);
    assert!(o.status.success(), "mkcomposefs DIR: {}", stderr(&o));
    let tree = image_tree(&image).unwrap();

    // The image's dump is the directory's scan, with inline files carrying
    // their content only (the writer drops payload and digest there) and
    // directory sizes left out (the source file system's, not EROFS's).
    let scanned = cfs_repo::scan::scan(r, &Default::default()).unwrap().tree;
    let normalize = |mut t: Tree| {
        let ids: Vec<NodeId> = t.nodes().map(|(id, _)| id).collect();
        for id in ids {
            let n = t.node_mut(id);
            if n.content.is_some() {
                n.payload = None;
                n.digest = None;
            }
            if n.file_type() == Some(FileType::Directory) {
                n.stat.size = 0;
            }
        }
        t
    };
    let (scanned, image_view) = (normalize(scanned), normalize(tree.clone()));
    let print = |t: &Tree| {
        let mut v = Vec::new();
        cfs_format::dumpfile::print(t, &mut v).unwrap();
        v
    };
    let (want, got) = (print(&scanned), print(&image_view));
    assert!(want == got, "dump differs:\n{}", first_diff(&want, &got));

    let mount = ErofsMount::new(&image).unwrap();
    let diffs = compare_tree(mount.path(), &tree);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    let o = run("cfs", &[os("dump"), image.as_os_str()], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
}
