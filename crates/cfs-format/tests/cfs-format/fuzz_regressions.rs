//! Replays every input kept under `fuzz/regressions/TARGET/` through the same
//! invariant its fuzz target checks (see `fuzz/fuzz_targets/`), so a fixed
//! crash stays fixed.

use cfs_format::dumpfile::{parse, print, ParseMode};
use cfs_format::reader::Image;
use cfs_format::writer::{write_image, WriteOptions};
use cfs_testkit::fuzz_regressions as inputs;

#[test]
fn erofs_walk_inputs_never_panic() {
    for (path, bytes) in inputs("erofs_walk") {
        let result = std::panic::catch_unwind(|| {
            for img in [Image::open(&bytes[..]), Image::open_erofs(&bytes[..])]
                .into_iter()
                .flatten()
            {
                if let Ok(tree) = img.to_tree() {
                    let mut out = Vec::new();
                    let _ = print(&tree, &mut out);
                }
                let root = img.root_nid();
                let _ = img.inode(root);
                let _ = img.readdir(root, 0).map(|r| r.count());
                let _ = img.xattrs(root).map(|x| x.count());
            }
        });
        assert!(result.is_ok(), "{} panicked", path.display());
    }
}

fn cycle(text: &[u8]) -> Option<Vec<u8>> {
    let tree = parse(text, ParseMode::Lenient).ok()?;
    let image = write_image(&tree, &WriteOptions::default()).ok()?;
    let back = Image::open(&image[..])
        .and_then(|i| i.to_tree())
        .expect("reads back");
    let mut out = Vec::new();
    print(&back, &mut out).expect("print");
    Some(out)
}

#[test]
fn dumpfile_roundtrip_inputs_are_stable() {
    for (path, bytes) in inputs("dumpfile_roundtrip") {
        if let Some(first) = cycle(&bytes) {
            let second = cycle(&first).expect("a printed dump parses and writes again");
            assert_eq!(first, second, "{}: round trip changed", path.display());
        }
    }
}
