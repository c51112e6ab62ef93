//! The reader's API against mkfs.erofs images and their sources, and `open`'s checks.

use super::common::*;
use cfs_format::reader::{DirEntryRef, Image, ImageSource, Nid, ReadError};
use cfs_format::FileType;
use cfs_testkit::{need, require};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Default)]
struct Seen {
    shared_xattrs: usize,
    extended_inodes: usize,
    compact_inodes: usize,
    layouts: BTreeMap<String, usize>,
    blocks_over_one: usize,
}

fn check_inode<T: ImageSource>(img: &Image<T>, nid: Nid, path: &Path, seen: &mut Seen) {
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

fn check_dir<T: ImageSource>(img: &Image<T>, nid: Nid, parent: Nid, path: &Path, seen: &mut Seen) {
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
        let child = path.join(OsStr::from_bytes(e.name));
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

#[test]
fn mkfs_erofs_images_read_back_as_their_source() {
    require!(need::tools(&["mkfs.erofs"]));
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
        let bytes = mkfs(&src, args);
        assert!(
            Image::open(&bytes[..]).is_err(),
            "open must refuse a plain EROFS image"
        );
        let img = Image::open_erofs(&bytes[..]).unwrap();
        assert_eq!(img.composefs_version(), None);
        let mut seen = Seen::default();
        check_dir(&img, img.root_nid(), img.root_nid(), &src, &mut seen);
        // The same checks over a source that only serves ranges, in blocks.
        let img = Image::open_erofs(Blocks(bytes.clone())).unwrap();
        check_dir(
            &img,
            img.root_nid(),
            img.root_nid(),
            &src,
            &mut Seen::default(),
        );
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

#[test]
fn open_checks_headers_only() {
    require!(need::tools(&["mkfs.erofs"]));
    let bytes = small_image();
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
