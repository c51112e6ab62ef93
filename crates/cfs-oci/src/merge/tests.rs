use super::*;
use cfs_format::Timespec;

fn node(m: u32) -> Node {
    Node::new(Stat {
        mode: m,
        nlink: 1,
        mtime: Timespec::default(),
        ..Stat::default()
    })
}

fn names(t: &Tree, path: &[u8]) -> Vec<String> {
    let d = t.lookup_path(path).unwrap();
    t.node(d)
        .entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.name).into_owned())
        .collect()
}

#[test]
fn whiteouts_opaque_and_links_across_layers() {
    let mut low = Tree::new(node(mode::S_IFDIR | 0o755));
    let d = low.add_node(node(mode::S_IFDIR | 0o755));
    low.link(NodeId::ROOT, b"d", d, false).unwrap();
    for n in [&b"a"[..], b"b"] {
        let f = low.add_node(node(mode::S_IFREG | 0o644));
        low.link(d, n, f, false).unwrap();
    }
    let f = low.add_node(node(mode::S_IFREG | 0o644));
    low.link(NodeId::ROOT, b"f", f, false).unwrap();

    let mut up = Tree::new(node(mode::S_IFDIR | 0o755));
    up.node_mut(NodeId::ROOT).set_xattr(MARKER_IMPLICIT, b"");
    let d = up.add_node(node(mode::S_IFDIR | 0o700));
    up.node_mut(d).set_xattr(overlay::OPAQUE, b"y");
    up.link(NodeId::ROOT, b"d", d, false).unwrap();
    let c = up.add_node(node(mode::S_IFREG | 0o644));
    up.link(d, b"c", c, false).unwrap();
    let w = up.add_node(node(mode::S_IFCHR));
    up.link(NodeId::ROOT, b"f", w, false).unwrap();
    let mut l = node(mode::S_IFREG);
    l.set_xattr(MARKER_HARDLINK, b"d/c");
    let l = up.add_node(l);
    up.link(NodeId::ROOT, b"link", l, true).unwrap();

    let out = merge(&[
        LayerRef {
            digest: "low",
            tree: &low,
        },
        LayerRef {
            digest: "up",
            tree: &up,
        },
    ])
    .unwrap();
    assert_eq!(names(&out, b""), ["d", "link"]);
    assert_eq!(names(&out, b"d"), ["c"]);
    let d = out.lookup_path(b"d").unwrap();
    assert_eq!(out.node(d).stat.mode, mode::S_IFDIR | 0o700);
    assert!(out.node(d).xattrs.is_empty());
    let c = out.lookup_path(b"d/c").unwrap();
    assert_eq!(out.lookup_path(b"link"), Some(c));
    assert_eq!(out.node(c).stat.nlink, 2);

    // A link to something no layer has is an error naming it.
    let mut bad = Tree::new(node(mode::S_IFDIR | 0o755));
    let mut l = node(mode::S_IFREG);
    l.set_xattr(MARKER_HARDLINK, b"nope");
    let l = bad.add_node(l);
    bad.link(NodeId::ROOT, b"x", l, true).unwrap();
    let e = merge(&[LayerRef {
        digest: "bad",
        tree: &bad,
    }])
    .unwrap_err();
    assert!(e.to_string().contains("\"nope\""), "{e}");
}
