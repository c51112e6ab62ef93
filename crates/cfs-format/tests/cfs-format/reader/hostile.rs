//! Hostile images: thousands of deterministic mutations of real images, each
//! opened and walked through every read; errors are fine, panics and hangs are bugs.

use super::common::*;
use cfs_format::reader::{Image, ImageSource, ReadError};
use cfs_testkit::{conformance, need, require, Rng};
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::time::{Duration, Instant};

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
        } else if let Ok(data) = img.read(nid, 0, 1) {
            // Chunk-based files of composefs read as holes (a static zero block): skip those.
            let at = (data.as_ptr() as usize).wrapping_sub(base);
            if !data.is_empty() && at < img.bytes().len() {
                hot.push(at);
            }
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
                *x = if random { rng.next_u64() as u8 } else { 0 };
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
            b[pos] = rng.next_u64() as u8;
            format!("random byte at {pos}")
        }
    };
    (b, what)
}

/// Feeds what a read returned, bytes or error, to `h`.
fn note<B: AsRef<[u8]>>(h: &mut impl Hasher, r: Result<B, ReadError>) {
    match r {
        Ok(b) => b.as_ref().hash(h),
        Err(e) => e.to_string().hash(h),
    }
}

/// Reads everything reachable through the API, bounded; errors are fine.
/// Returns whether `to_tree` succeeded, and a hash of everything read.
fn walk_all<T: ImageSource>(img: &Image<T>) -> (bool, u64) {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    // What `cfs dump` does: the tree, printed.
    let tree_ok = match img.to_tree() {
        Ok(tree) => {
            let mut out = Vec::new();
            let ok = cfs_format::dumpfile::print(&tree, &mut out).is_ok();
            out.hash(&mut h);
            ok
        }
        Err(e) => {
            note(&mut h, Err::<&[u8], _>(e));
            false
        }
    };
    let mut stack = vec![img.root_nid()];
    let mut seen = std::collections::HashSet::new();
    let mut budget = 20_000usize;
    let mut buf = vec![0u8; 16384];
    let mut rest = vec![0u8; 100_000];
    while let Some(nid) = stack.pop() {
        if !seen.insert(nid) || budget == 0 {
            continue;
        }
        budget -= 1;
        let Ok(ino) = img.inode(nid) else { continue };
        note(&mut h, img.read_into(nid, 0, &mut buf).map(|n| &buf[..n]));
        // A piece may end early at a source's block boundary: take the rest.
        note(
            &mut h,
            img.read_into(nid, 4096, &mut rest).map(|n| &rest[..n]),
        );
        note(&mut h, img.symlink_target(nid));
        note(&mut h, img.redirect(nid).map(|r| r.unwrap_or(b"-")));
        note(&mut h, img.digest(nid).map(|d| format!("{d:?}")));
        note(
            &mut h,
            img.get_xattr(nid, b"user.foo").map(|r| r.unwrap_or(b"-")),
        );
        if let Ok(x) = img.xattrs(nid) {
            for x in x.take(1000) {
                let Ok(x) = x else {
                    note(&mut h, x.map(|_| b""));
                    break;
                };
                note(&mut h, Ok(x.name()));
                note(
                    &mut h,
                    img.get_xattr(nid, &x.name()).map(|r| r.unwrap_or(b"-")),
                );
            }
        }
        if let Ok(rd) = img.readdir(nid, 0) {
            for e in rd.take(2000) {
                let Ok(e) = e else { break };
                note(&mut h, Ok(e.name));
                budget = budget.saturating_sub(1);
                let _ = img.lookup(nid, e.name);
                let _ = img.readdir(nid, e.next_offset).map(|mut r| r.next());
                if !e.is_dot_or_dotdot() {
                    stack.push(e.nid);
                }
            }
        }
        format!("{:?}", ino.stat()).hash(&mut h);
    }
    (tree_ok, h.finish())
}

/// Images our writer builds from the conformance dumps (C composefs's test
/// data): whiteout stubs, shared xattrs, long symlinks, chunk-based big files.
fn conformance_images() -> Vec<Vec<u8>> {
    let mut images = Vec::new();
    for name in [
        "special_v1.dump",
        "dump-example",
        "honggfuzz-long-symlink.dump",
        "bigfile-xattr.dump",
        "honggfuzz-bigfile-with-acl.dump",
        "longlink.dump",
    ] {
        let text = conformance::asset(name);
        let tree = cfs_format::dumpfile::parse(&text, Default::default()).expect("parse");
        images.push(cfs_format::writer::write_image(&tree, &Default::default()).expect("write"));
    }
    images
}

#[test]
fn hostile_mutations_of_conformance_images_never_panic_or_hang() {
    run_mutations(conformance_images(), 1000);
}

#[test]
fn hostile_mutations_never_panic_or_hang() {
    require!(need::tools(&["mkfs.erofs"]));
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
        let bytes = mkfs(src, args);
        images.push(with_composefs_header(bytes, 1));
    }
    run_mutations(images, 1500);
}

/// Mutates each image `rounds` times; every mutation must open-and-walk or be
/// refused, quickly. Every eighth is also read through [`Blocks`], which must
/// read exactly the same.
fn run_mutations(images: Vec<Vec<u8>>, rounds: usize) {
    let mut rng = Rng::seeded(0x9E37_79B9_7F4A_7C15);
    let start = Instant::now();
    // Refused at open, walked with to_tree failing, walked with to_tree succeeding.
    let mut outcomes = [0usize; 3];
    for (i, clean) in images.iter().enumerate() {
        let img = Image::open(&clean[..]).unwrap();
        if let Err(e) = img.to_tree() {
            panic!("image {i}: clean image does not read back: {e}");
        }
        let hot = hot_offsets(&img);
        for round in 0..rounds {
            let (bytes, what) = mutate(&mut rng, clean, &hot);
            let t = Instant::now();
            let result = std::panic::catch_unwind(|| match Image::open(&bytes[..]) {
                Ok(img) => {
                    let (tree_ok, read) = walk_all(&img);
                    if round % 8 == 0 {
                        let by_blocks = Image::open(Blocks(bytes.clone())).map(|i| walk_all(&i));
                        assert_eq!(
                            by_blocks.ok(),
                            Some((tree_ok, read)),
                            "block source differs"
                        );
                    }
                    1 + usize::from(tree_ok)
                }
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
