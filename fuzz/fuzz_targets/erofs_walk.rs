//! Invariant: any bytes, opened as a composefs image and walked through every
//! reader call the FUSE server and `cfs dump` use, give `Ok` or `Err` — never a
//! panic, a hang, or unbounded memory. Errors are fine; panics are bugs.
#![no_main]

use cfs_format::reader::Image;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for img in [Image::open(data), Image::open_erofs(data)].into_iter().flatten() {
        if let Ok(tree) = img.to_tree() {
            let mut out = Vec::new();
            let _ = cfs_format::dumpfile::print(&tree, &mut out);
        }
        walk(&img);
    }
});

/// What the FUSE server does per request, over everything reachable (bounded).
fn walk(img: &Image<&[u8]>) {
    let mut stack = vec![img.root_nid()];
    let mut seen = std::collections::HashSet::new();
    let mut budget = 4096usize;
    let mut buf = [0u8; 8192];
    while let Some(nid) = stack.pop() {
        if !seen.insert(nid) || budget == 0 {
            continue;
        }
        budget -= 1;
        let Ok(ino) = img.inode(nid) else { continue };
        let _ = ino.stat();
        let _ = img.read_into(nid, 0, &mut buf);
        let _ = img.symlink_target(nid);
        let _ = img.redirect(nid);
        let _ = img.digest(nid);
        let _ = img.get_xattr(nid, b"trusted.overlay.metacopy");
        if let Ok(xattrs) = img.xattrs(nid) {
            for x in xattrs.take(256).flatten() {
                let _ = img.get_xattr(nid, &x.name());
            }
        }
        if let Ok(entries) = img.readdir(nid, 0) {
            for e in entries.take(1024) {
                let Ok(e) = e else { break };
                budget = budget.saturating_sub(1);
                let _ = img.lookup(nid, e.name);
                let _ = img.readdir(nid, e.next_offset).map(|mut r| r.next());
                if !e.is_dot_or_dotdot() {
                    stack.push(e.nid);
                }
            }
        }
    }
}
