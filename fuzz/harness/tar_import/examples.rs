//! Hand-written inputs that try to escape the repository, one way each.
//! `tar_import_seeds --examples DIR` writes them (as `NAME.bin`); their
//! encodings are kept in `fuzz/regressions/tar_import/` and in the seed
//! corpus.

use super::input::{Comp, Entry, Input, Op, PathSpec, Pax, F_LIE, F_LONG_SHIFT};

fn path(p: &[u8]) -> PathSpec {
    PathSpec::from_bytes(p)
}

fn entry(typeflag: u8, p: &[u8]) -> Entry {
    Entry {
        typeflag,
        path: path(p),
        mode: if typeflag == b'5' { 0o755 } else { 0o644 },
        ..Entry::default()
    }
}

fn file(p: &[u8], content: &[u8]) -> Op {
    Op::Entry(Entry {
        content: content.to_vec(),
        ..entry(b'0', p)
    })
}

fn link(typeflag: u8, p: &[u8], target: &[u8]) -> Op {
    Op::Entry(Entry {
        link: path(target),
        ..entry(typeflag, p)
    })
}

fn dir(p: &[u8]) -> Op {
    Op::Entry(entry(b'5', p))
}

/// A PAX record naming one of [`super::input::NAMED_KEYS`] by its index.
fn named(index: u8, value: &[u8]) -> Pax {
    Pax {
        kind: 7,
        key: vec![index],
        value: value.to_vec(),
    }
}

/// More than 64 bytes: stored as an object, not inline.
const STORED: &[u8] = &[b'x'; 100];

/// The examples, by name.
pub fn all() -> Vec<(&'static str, Input)> {
    let ops = |ops: Vec<Op>| Input { ops };
    vec![
        (
            "dotdot-write",
            ops(vec![file(b"../outside/sentinel", b"overwritten\n")]),
        ),
        (
            "dotdot-inside-path",
            ops(vec![dir(b"a"), file(b"a/../../outside/new", STORED)]),
        ),
        (
            "absolute-paths",
            ops(vec![
                file(b"/outside/sentinel", STORED),
                file(b"/dev/shm/new", b"x"),
                link(b'2', b"/etc/abs", b"/dev/shm"),
            ]),
        ),
        (
            "symlink-then-write-through-it",
            ops(vec![
                link(b'2', b"evil", b"../outside"),
                file(b"evil/sentinel", b"overwritten\n"),
            ]),
        ),
        (
            "symlink-in-lower-layer-then-write-through-it",
            ops(vec![
                link(b'2', b"evil", b"../../outside"),
                Op::Layer,
                file(b"evil/sentinel", STORED),
            ]),
        ),
        (
            "hardlink-to-outside",
            ops(vec![link(b'1', b"h", b"../outside/sentinel")]),
        ),
        (
            "hardlink-to-absolute-path",
            ops(vec![
                file(b"etc/passwd", STORED),
                Op::Layer,
                link(b'1', b"h", b"/etc/passwd"),
            ]),
        ),
        (
            "hardlink-to-nothing",
            ops(vec![link(b'1', b"g", b"/etc/shadow")]),
        ),
        (
            "whiteouts-and-opaque-directories",
            ops(vec![
                dir(b"a"),
                file(b"a/f", STORED),
                dir(b"b"),
                file(b"b/f", b"small"),
                Op::Layer,
                file(b".wh.a", b""),
                file(b"b/.wh..wh..opq", b""),
                file(b"b/g", b"new"),
                file(b"c/.wh.x", b""),
            ]),
        ),
        (
            "whiteout-of-dotdot",
            ops(vec![dir(b"a"), file(b"a/.wh...", b"")]),
        ),
        (
            "reserved-marker-xattr",
            ops(vec![Op::Entry(Entry {
                pax: vec![Pax::xattr(b"trusted.cfs.oci.hardlink", b"/etc/passwd")],
                content: STORED.to_vec(),
                ..entry(b'0', b"f")
            })]),
        ),
        (
            "forged-overlay-redirect",
            ops(vec![Op::Entry(Entry {
                pax: vec![
                    Pax::xattr(b"trusted.overlay.redirect", b"/../../outside/sentinel"),
                    Pax::xattr(b"trusted.overlay.metacopy", b""),
                ],
                content: STORED.to_vec(),
                ..entry(b'0', b"f")
            })]),
        ),
        (
            "pax-path-override",
            ops(vec![Op::Entry(Entry {
                pax: vec![Pax {
                    kind: 1,
                    key: Vec::new(),
                    value: b"../outside/sentinel".to_vec(),
                }],
                content: b"overwritten\n".to_vec(),
                ..entry(b'0', b"harmless")
            })]),
        ),
        (
            "gnu-longname-with-dotdot",
            ops(vec![Op::Entry(Entry {
                path: PathSpec {
                    flags: 0,
                    comps: vec![
                        Comp::Long(b'd', 120),
                        Comp::DotDot,
                        Comp::DotDot,
                        Comp::Word(9),
                        Comp::Word(10),
                    ],
                },
                flags: 1 << F_LONG_SHIFT,
                content: STORED.to_vec(),
                ..entry(b'0', b"")
            })]),
        ),
        (
            "size-field-lies",
            ops(vec![
                Op::Entry(Entry {
                    flags: F_LIE,
                    lie: 700,
                    content: STORED.to_vec(),
                    ..entry(b'0', b"f")
                }),
                file(b"g", STORED),
            ]),
        ),
        (
            "sparse-name-with-dotdot",
            ops(vec![Op::Entry(Entry {
                pax: vec![
                    named(2, b"12"),
                    named(7, b"0,12"),
                    named(8, b"../outside/sentinel"),
                ],
                content: b"overwritten\n".to_vec(),
                ..entry(b'0', b"GNUSparseFile.0/sentinel")
            })]),
        ),
        (
            "sparse-1.0-with-holes",
            ops(vec![Op::Entry(Entry {
                pax: vec![
                    named(0, b"1"),
                    named(1, b"0"),
                    named(3, b"70000"),
                    named(8, b"dir/sparse"),
                ],
                content: {
                    let mut data = b"2\n0\n100\n69900\n100\n".to_vec();
                    data.resize(512, 0);
                    data.extend_from_slice(STORED);
                    data.extend_from_slice(STORED);
                    data
                },
                ..entry(b'0', b"dir/GNUSparseFile.0/sparse")
            })]),
        ),
        (
            "large-file-streamed",
            ops(vec![Op::Entry(Entry {
                big: true,
                content: b"0123456789abcdef".to_vec(),
                ..entry(b'0', b"big")
            })]),
        ),
        (
            "large-file-cut-short",
            ops(vec![Op::Entry(Entry {
                big: true,
                flags: F_LIE,
                lie: 30000,
                content: b"0123456789abcdef".to_vec(),
                ..entry(b'0', b"big")
            })]),
        ),
    ]
}
