//! `to_tree`: reading back the source, C's overlay xattr rules, and trees
//! that are not trees (cycles, directories named twice, limits).

use super::common::*;
use cfs_format::reader::{Image, Nid, ReadError, TreeLimits};
use cfs_format::{FileType, NodeId, Tree};
use cfs_testkit::{need, require};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn check_tree_node(tree: &Tree, id: NodeId, path: &Path) {
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
                let md = fs::symlink_metadata(path.join(OsStr::from_bytes(n))).unwrap();
                !cfs_format::overlay::is_whiteout(md.mode(), md.rdev())
            });
            assert_eq!(names, expect, "{what}: entries");
            for e in &node.entries {
                check_tree_node(tree, e.node, &path.join(OsStr::from_bytes(&e.name)));
            }
        }
        FileType::CharDevice | FileType::BlockDevice => assert_eq!(node.stat.rdev, md.rdev()),
        _ => {}
    }
}

#[test]
fn to_tree_reads_back_the_source() {
    require!(need::tools(&["mkfs.erofs"]));
    let tmp = TempDir::new("tree");
    let src = tmp.0.join("src");
    build_source(&src, false);
    for args in [&[][..], &["-x1"], &["-Eforce-inode-extended"]] {
        let bytes = mkfs(&src, args);
        let bytes = with_composefs_header(bytes, 0);
        let by_blocks = Image::open(Blocks(bytes.clone())).unwrap().to_tree();
        let img = Image::open(bytes).unwrap();
        let tree = img.to_tree().unwrap();
        check_tree_node(&tree, tree.root(), &src);
        assert_eq!(by_blocks, Ok(tree.clone()), "to_tree over a block source");

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
    {
        let bytes = mkfs(&tmp.0.join("big"), &[]);
        let img = Image::open_erofs(bytes).unwrap();
        let err = img.to_tree().unwrap_err();
        assert!(err.to_string().contains("inline file content"), "{err}");
    }
}

#[test]
fn to_tree_applies_overlay_xattrs_as_c_does() {
    require!(need::tools(&["mkfs.erofs"]));
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
    let bytes = mkfs(&src, &["--chunksize=4096"]);
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

/// Image offset of the dirent for `name` in directory `dir`.
fn dirent_offset(img: &Image<Vec<u8>>, dir: Nid, name: &[u8]) -> usize {
    let e = img.lookup(dir, name).unwrap().unwrap();
    let piece = img.read(dir, e.offset, 12).unwrap();
    piece.as_ptr() as usize - img.bytes().as_ptr() as usize
}

#[test]
fn directory_graphs_that_are_not_trees_are_errors() {
    require!(need::tools(&["mkfs.erofs"]));
    let bytes = small_image();
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
