use super::*;

/// A tar written header by header, so that every field is the test's.
#[derive(Default)]
struct RawTar(Vec<u8>);

/// One header's fields; numbers are the raw field bytes.
struct H<'a> {
    name: &'a [u8],
    kind: u8,
    size: &'a [u8],
    mode: &'a [u8],
    uid: &'a [u8],
    mtime: &'a [u8],
    dev: (&'a [u8], &'a [u8]),
}

impl Default for H<'_> {
    fn default() -> Self {
        H {
            name: b"f",
            kind: b'0',
            size: b"",
            mode: b"0000644\0",
            uid: b"0000000\0",
            mtime: b"00000000000\0",
            dev: (b"", b""),
        }
    }
}

fn octal(v: u64, width: usize) -> Vec<u8> {
    format!("{v:0w$o}\0", w = width - 1).into_bytes()
}

impl RawTar {
    fn header(&mut self, h: &H<'_>, data: &[u8]) -> &mut Self {
        let mut b = [0u8; 512];
        let put = |b: &mut [u8; 512], at: usize, len: usize, v: &[u8]| {
            b[at..at + v.len().min(len)].copy_from_slice(&v[..v.len().min(len)]);
        };
        put(&mut b, 0, 100, h.name);
        put(&mut b, 100, 8, h.mode);
        put(&mut b, 108, 8, h.uid);
        put(&mut b, 116, 8, b"0000000\0");
        let size = if h.size.is_empty() {
            octal(data.len() as u64, 12)
        } else {
            h.size.to_vec()
        };
        put(&mut b, 124, 12, &size);
        put(&mut b, 136, 12, h.mtime);
        b[156] = h.kind;
        put(&mut b, 257, 8, b"ustar\x0000");
        put(&mut b, 329, 8, h.dev.0);
        put(&mut b, 337, 8, h.dev.1);
        b[148..156].copy_from_slice(b"        ");
        let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
        put(&mut b, 148, 8, format!("{sum:06o}\0 ").as_bytes());
        self.0.extend_from_slice(&b);
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
        self
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.header(
            &H {
                name: name.as_bytes(),
                ..H::default()
            },
            data,
        )
    }

    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let body = cfs_testkit::tar::pax_records(records);
        self.header(
            &H {
                name: b"PaxHeaders/x",
                kind: b'x',
                ..H::default()
            },
            &body,
        )
    }

    fn done(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.0);
        v.extend([0u8; 1024]);
        v
    }
}

/// Reads `tar` as a layer with `limits`.
fn read(tar: &[u8], limits: &Limits) -> Result<(Tree, LayerStats), OciError> {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::create(&dir.path().join("o")).unwrap();
    read_layer(&mut &tar[..], "t", &store, &ImageCharge::new(limits))
}

fn read_ok(tar: &[u8]) -> Tree {
    read(tar, &Limits::default())
        .unwrap_or_else(|e| panic!("{e}"))
        .0
}

fn read_err(tar: &[u8]) -> String {
    match read(tar, &Limits::default()) {
        Ok(_) => panic!("read a bad tar"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn paths_normalise_or_fail() {
    let limits = Limits::default();
    let ok: &[(&[u8], &[&[u8]])] = &[
        (b"a/b", &[b"a", b"b"]),
        (b"./a//b/", &[b"a", b"b"]),
        (b"/etc/passwd", &[b"etc", b"passwd"]),
        (b"./", &[]),
    ];
    for (raw, want) in ok {
        assert_eq!(normalize(raw, &limits).unwrap(), *want, "{raw:?}");
    }
    for bad in [&b"../x"[..], b"a/../../x", b"a/..", b"a\0b"] {
        assert!(normalize(bad, &limits).is_err(), "{bad:?}");
    }
    assert!(normalize(&[b'a'; 300], &limits).is_err());
    let small = Limits {
        max_path: 4,
        max_depth: 2,
        ..Limits::default()
    };
    let e = normalize(b"a/b/c", &small).unwrap_err();
    assert!(e.contains("max_path = 4"), "{e}");
    let e = normalize(
        b"a/b/c",
        &Limits {
            max_path: 4096,
            ..small
        },
    )
    .unwrap_err();
    assert!(
        e.contains("3 components, over the limit max_depth = 2"),
        "{e}"
    );
}

#[test]
fn entry_count_is_capped() {
    let mut t = RawTar::default();
    for i in 0..5 {
        t.file(&format!("f{i}"), b"");
    }
    let data = t.done();
    let limits = Limits {
        max_entries: 3,
        ..Limits::default()
    };
    let e = read(&data, &limits).unwrap_err().to_string();
    assert!(
        e.contains("more than 3 entries") && e.contains("max_entries"),
        "{e}"
    );
    let (tree, stats) = read(&data, &Limits::default()).unwrap();
    assert_eq!(stats.entries, 5);
    assert_eq!(tree.node(NodeId::ROOT).entries.len(), 5);
}

/// Implicit directories count as nodes; a layer's and an image's nodes and
/// bytes are capped, each error naming its limit and the entry.
/// GNU tar's first check: an empty or short stream, or a first block that is
/// no header, is not a tar archive; an archive of zero blocks is an empty one.
/// `cfs import-tar /dev/zero` ran forever: zeros are an empty archive,
/// then read "to the end".
#[test]
fn what_follows_the_tar_is_bounded() {
    let limits = Limits {
        max_trailer: 10 * 1024,
        ..Limits::default()
    };
    let tar = RawTar::default().file("f", b"hi").done();
    let then =
        |tail: Vec<u8>| -> Box<dyn Read> { Box::new(io::Cursor::new([&tar[..], &tail].concat())) };
    let endless = |head: &[u8]| -> Box<dyn Read> {
        Box::new(io::Cursor::new(head.to_vec()).chain(io::repeat(0)))
    };
    // (input, refused)
    let table: Vec<(Box<dyn Read>, bool)> = vec![
        // Padded to the default 10 KiB record: accepted.
        (Box::new(io::repeat(0).take(10 * 1024)), false),
        (then(vec![0; 10 * 1024 - 1024]), false),
        // Anything but zeros after the end is read too (as a pull hashes it).
        (then(vec![0xaa; 100]), false),
        // Without end, or longer than the limit: refused.
        (endless(&[]), true),
        (endless(&tar), true),
        (then(vec![0; 12 * 1024]), true),
    ];
    for (i, (mut input, refused)) in table.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::create(&dir.path().join("o")).unwrap();
        let r = read_layer(&mut *input, "t", &store, &ImageCharge::new(&limits));
        assert_eq!(r.is_err(), refused, "case {i}: {:?}", r.err());
        if let Err(e) = r {
            let e = e.to_string();
            assert!(e.contains("over the limit max_trailer = 10240"), "{e}");
        }
    }
}

#[test]
fn only_tar_archives_are_read() {
    let read = |data: &[u8]| read(data, &Limits::default());
    for (data, why) in [
        (&b""[..], "not a tar archive: it is empty"),
        (
            &[0u8; 100][..],
            "100 bytes, less than one 512-byte tar block",
        ),
        (
            &[0x41u8; 2048][..],
            "no tar header (the checksum does not match)",
        ),
    ] {
        let e = read(data).unwrap_err().to_string();
        assert!(e.starts_with("t: ") && e.contains(why), "{e}");
    }
    let (tree, stats) = read(&[0u8; 1024]).unwrap();
    assert_eq!((tree.len(), stats.entries), (1, 0));
    let (_, stats) = read(&RawTar::default().file("f", b"hi").done()).unwrap();
    assert_eq!(stats.entries, 1);
    assert!(first_block::header_checksum_holds(&{
        let mut v = ::tar::Header::new_ustar();
        v.set_cksum();
        v.as_bytes().to_vec()
    }));
}

#[test]
fn nodes_and_memory_are_capped() {
    // One entry whose path implies 9 directories: 11 nodes with the root.
    let deep = RawTar::default()
        .file("a/b/c/d/e/f/g/h/i/file", b"x")
        .done();
    // (limits, the limit named, or None when it fits)
    let base = Limits::default();
    let table = [
        (
            Limits {
                max_layer_nodes: 11,
                ..base
            },
            None,
        ),
        (
            Limits {
                max_layer_nodes: 10,
                ..base
            },
            Some("max_layer_nodes = 10"),
        ),
        (
            Limits {
                max_image_nodes: 10,
                ..base
            },
            Some("max_image_nodes = 10"),
        ),
        (
            Limits {
                max_layer_bytes: 11 * crate::limits::NODE_COST,
                ..base
            },
            Some("max_layer_bytes"),
        ),
        (
            Limits {
                max_image_bytes: 5 * crate::limits::NODE_COST,
                ..base
            },
            Some("max_image_bytes"),
        ),
        (
            Limits {
                max_depth: 9,
                ..base
            },
            Some("max_depth = 9"),
        ),
    ];
    for (limits, want) in table {
        let got = read(&deep, &limits);
        match (want, got) {
            (None, Ok((tree, _))) => assert_eq!(tree.len(), 11),
            (Some(want), Err(e)) => {
                let e = e.to_string();
                assert!(e.contains(want), "{limits:?}: {e}");
                assert!(e.contains("a/b/c/d/e/f/g/h/i/file"), "{e}");
            }
            (want, got) => panic!("{limits:?}: want {want:?}, got {:?}", got.map(|_| ())),
        }
    }
}

#[test]
fn bad_numbers_are_refused_naming_the_field() {
    // (header, PAX records, part of the error)
    type Case<'a> = (H<'a>, &'a [(&'a str, &'a [u8])], &'a str);
    let cases: &[Case] = &[
        (
            H {
                size: b"12abc\0\0\0\0\0\0\0",
                ..H::default()
            },
            &[],
            "size",
        ),
        (
            H {
                uid: b"-1\0\0\0\0\0\0",
                ..H::default()
            },
            &[],
            "header field uid: \"-1\" is not an octal",
        ),
        (
            H {
                uid: &[0xff; 8],
                ..H::default()
            },
            &[],
            "header field uid: negative value -1",
        ),
        (
            H {
                uid: &[0x80, 0, 0, 1, 0, 0, 0, 0],
                ..H::default()
            },
            &[],
            "header field uid: 4294967296 is over",
        ),
        (
            H {
                mode: b"0008\0\0\0\0",
                ..H::default()
            },
            &[],
            "header field mode",
        ),
        (
            H {
                mtime: b"1e300\0\0\0\0\0\0\0",
                ..H::default()
            },
            &[],
            "header field mtime",
        ),
        (
            H {
                mtime: &[0x80, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0],
                ..H::default()
            },
            &[],
            "header field mtime: base-256 number overflows",
        ),
        (
            H {
                kind: b'3',
                dev: (b"12x\0", b"0\0"),
                ..H::default()
            },
            &[],
            "header field devmajor",
        ),
        (
            H {
                kind: b'4',
                dev: (b"0\0", &[0xff; 8]),
                ..H::default()
            },
            &[],
            "header field devminor: negative",
        ),
        // An image holds 12 bits of major, 20 of minor: a larger number,
        // cut, would name another device there (or a whiteout: 0/0).
        (
            H {
                kind: b'3',
                dev: (b"10000\0", b"0\0"),
                ..H::default()
            },
            &[],
            "header field devmajor: 4096 is over 4095",
        ),
        (
            H {
                kind: b'3',
                dev: (b"1\0", b"4000000\0"),
                ..H::default()
            },
            &[],
            "header field devminor: 1048576 is over 1048575",
        ),
        (
            H::default(),
            &[("size", b"12abc")],
            "PAX record size: \"12abc\" is not a decimal",
        ),
        (
            H::default(),
            &[("uid", b"-1")],
            "PAX record uid: \"-1\" is not a decimal",
        ),
        (
            H::default(),
            &[("gid", b"4294967296")],
            "PAX record gid: 4294967296 is over",
        ),
        (H::default(), &[("mtime", b"1e300")], "PAX record mtime"),
        (H::default(), &[("atime", b"x")], "PAX record atime"),
        (
            H::default(),
            &[("uid", b"1"), ("uid", b"2")],
            "PAX record uid given twice",
        ),
        (
            H::default(),
            &[("path", b"a"), ("path", b"b")],
            "PAX record path given twice",
        ),
    ];
    for (h, pax, want) in cases {
        let mut t = RawTar::default();
        if !pax.is_empty() {
            t.pax(pax);
        }
        let e = read_err(&t.header(h, b"").done());
        assert!(e.contains(want), "want {want:?}: {e}");
        // (A size the `tar` crate can't read fails there, naming the entry too.)
        assert!(
            e.contains("entry \"") || e.contains("size for f"),
            "names the entry: {e}"
        );
    }
}

#[test]
fn good_numbers_in_every_form() {
    let mut t = RawTar::default();
    t.pax(&[("mtime", b"1700000000.123456789"), ("uid", b"4000000000")])
        .file("pax", b"")
        .header(
            &H {
                name: b"b256",
                uid: &[0x80, 0, 0, 0, 0, 0, 0x30, 0x39],
                mtime: &[0xff; 12],
                ..H::default()
            },
            b"",
        )
        .header(
            &H {
                name: b"blank",
                uid: b"\0\0\0\0\0\0\0\0",
                mtime: b"            ",
                ..H::default()
            },
            b"",
        )
        .header(
            &H {
                name: b"dev",
                kind: b'3',
                dev: (b"0000001\0", b"0000003\0"),
                ..H::default()
            },
            b"",
        );
    let tree = read_ok(&t.done());
    let stat = |p: &[u8]| tree.node(tree.lookup_path(p).unwrap()).stat;
    assert_eq!(
        stat(b"pax").mtime,
        Timespec {
            sec: 1_700_000_000,
            nsec: 123_456_789
        }
    );
    assert_eq!(stat(b"pax").uid, 4_000_000_000);
    assert_eq!(stat(b"b256").uid, 12345);
    assert_eq!(stat(b"b256").mtime.sec, -1);
    assert_eq!((stat(b"blank").uid, stat(b"blank").mtime.sec), (0, 0));
    assert_eq!(Some(stat(b"dev").rdev), cfs_format::tree::makedev(1, 3));
}

/// The content of regular file `path` in a layer tree read from `store`.
fn content_of(tree: &Tree, store: &ObjectStore, path: &[u8]) -> Vec<u8> {
    let n = tree.node(tree.lookup_path(path).expect("the file is there"));
    if let Some(c) = &n.content {
        return c.clone();
    }
    match &n.digest {
        Some(d) => store.read_object(d, u64::MAX).unwrap(),
        None => Vec::new(),
    }
}

/// PAX sparse files of each version, written here from one map, read as
/// the file they describe; the records of a wrong map are refused.
#[test]
fn pax_sparse_files_are_expanded() {
    let data = b"0123456789abcdef";
    // The file: 4 bytes at 0, 12 bytes at 1000, size 2000.
    let mut want = vec![0u8; 2000];
    want[..4].copy_from_slice(&data[..4]);
    want[1000..1012].copy_from_slice(&data[4..]);
    let v00: &[(&str, &[u8])] = &[
        ("GNU.sparse.size", b"2000"),
        ("GNU.sparse.numblocks", b"3"),
        ("GNU.sparse.offset", b"0"),
        ("GNU.sparse.numbytes", b"4"),
        ("GNU.sparse.offset", b"1000"),
        ("GNU.sparse.numbytes", b"12"),
        ("GNU.sparse.offset", b"2000"),
        ("GNU.sparse.numbytes", b"0"),
    ];
    let v01: &[(&str, &[u8])] = &[
        ("GNU.sparse.size", b"2000"),
        ("GNU.sparse.numblocks", b"2"),
        ("GNU.sparse.name", b"dir/sparse"),
        ("GNU.sparse.map", b"0,4,1000,12"),
    ];
    let v10: &[(&str, &[u8])] = &[
        ("GNU.sparse.major", b"1"),
        ("GNU.sparse.minor", b"0"),
        ("GNU.sparse.name", b"dir/sparse"),
        ("GNU.sparse.realsize", b"2000"),
    ];
    let mut v10_data = b"2\n0\n4\n1000\n12\n".to_vec();
    v10_data.resize(512, 0);
    v10_data.extend_from_slice(data);
    for (records, name, stored) in [
        (v00, "dir/sparse", &data[..]),
        (v01, "dir/GNUSparseFile.0/sparse", &data[..]),
        (v10, "dir/GNUSparseFile.0/sparse", &v10_data[..]),
    ] {
        let tar = RawTar::default().pax(records).file(name, stored).done();
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::create(&dir.path().join("o")).unwrap();
        let (tree, _) = read_layer(
            &mut &tar[..],
            "t",
            &store,
            &ImageCharge::new(&Limits::default()),
        )
        .unwrap_or_else(|e| panic!("{records:?}: {e}"));
        assert_eq!(
            content_of(&tree, &store, b"dir/sparse"),
            want,
            "{records:?}"
        );
        assert!(tree.lookup_path(b"dir/GNUSparseFile.0").is_none());
        let n = tree.node(tree.lookup_path(b"dir/sparse").unwrap());
        assert_eq!(n.stat.size, 2000);
    }
    // (records, data, part of the error)
    type Case<'a> = (&'a [(&'a str, &'a [u8])], &'a [u8], &'a str);
    let bad: &[Case] = &[
        (
            &[
                ("GNU.sparse.size", b"2000"),
                ("GNU.sparse.map", b"0,4,1000"),
            ],
            data,
            "an offset without a length",
        ),
        (
            &[
                ("GNU.sparse.size", b"2000"),
                ("GNU.sparse.map", b"0,4,2,12"),
            ],
            data,
            "overlaps",
        ),
        (
            &[
                ("GNU.sparse.size", b"100"),
                ("GNU.sparse.map", b"0,4,1000,12"),
            ],
            data,
            "past the real size",
        ),
        (
            &[("GNU.sparse.size", b"2000"), ("GNU.sparse.map", b"0,4")],
            data,
            "segments hold 4 bytes, the entry stores 16",
        ),
        (
            &[("GNU.sparse.size", b"2000"), ("GNU.sparse.map", b"0,x")],
            data,
            "GNU.sparse.map",
        ),
        (
            &[("GNU.sparse.map", b"0,16")],
            data,
            "without GNU.sparse.size",
        ),
        (
            &[
                ("GNU.sparse.size", b"16"),
                ("GNU.sparse.numblocks", b"2"),
                ("GNU.sparse.map", b"0,16"),
            ],
            data,
            "numblocks is 2",
        ),
        (
            &[("GNU.sparse.size", b"16"), ("GNU.sparse.numbytes", b"16")],
            data,
            "GNU.sparse.offset was due",
        ),
        (
            &[("GNU.sparse.major", b"2"), ("GNU.sparse.minor", b"0")],
            data,
            "unsupported sparse format 2.0",
        ),
        (
            &[("GNU.sparse.major", b"1"), ("GNU.sparse.minor", b"0")],
            data,
            "without GNU.sparse.realsize",
        ),
        (
            &[
                ("GNU.sparse.major", b"1"),
                ("GNU.sparse.minor", b"0"),
                ("GNU.sparse.realsize", b"16"),
            ],
            b"1\n0\n",
            "sparse map",
        ),
        (
            &[("GNU.sparse.bogus", b"1")],
            data,
            "unknown PAX record GNU.sparse.bogus",
        ),
        (
            &[
                ("GNU.sparse.size", b"1099511627777"),
                ("GNU.sparse.map", b"0,16"),
            ],
            data,
            "max_file_size",
        ),
    ];
    for (records, stored, want) in bad {
        let e = read_err(&RawTar::default().pax(records).file("s", stored).done());
        assert!(e.contains(want), "{records:?}: want {want:?}: {e}");
    }
    // Holes are held to their own limit.
    let tar = RawTar::default().pax(v01).file("s", data).done();
    let limits = Limits {
        max_sparse_holes: 1000,
        ..Limits::default()
    };
    let e = read(&tar, &limits).unwrap_err().to_string();
    assert!(e.contains("max_sparse_holes = 1000"), "{e}");
}

/// Extension headers past the limit are refused, naming it.
#[test]
fn extension_headers_are_capped() {
    let long = vec![b'a'; 5000];
    let tar = RawTar::default()
        .pax(&[("SCHILY.xattr.user.big", &long)])
        .file("f", b"")
        .done();
    let limits = Limits {
        max_extension: 4096,
        ..Limits::default()
    };
    let e = read(&tar, &limits).unwrap_err().to_string();
    assert!(e.contains("max_extension = 4096"), "{e}");
    assert!(read(&tar, &Limits::default()).is_ok());
}

/// The layer record leaves bare implicit directories out; reading it back
/// gives the same tree. An empty one (the parents of an aufs `.wh..wh.plnk`,
/// which adds nothing itself) keeps its line: a record without it read back
/// as a tree without its chain, and pulling again made another image (a
/// `tar_import` fuzz crash).
#[test]
fn records_leave_implicit_directories_out() {
    let tar = RawTar::default()
        .file("a/b/c/d/f", b"x")
        .file("a/b/.wh..wh..opq", b"")
        .file("z/.wh.gone", b"")
        .file("p/q/r/.wh..wh.plnk", b"")
        .done();
    let tree = read_ok(&tar);
    let mut record = Vec::new();
    cfs_format::dumpfile::print_omitting(&tree, &mut record, &implied_by_paths_below).unwrap();
    let record = String::from_utf8(record).unwrap();
    let paths: Vec<&str> = record
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    // The opaque directory and the empty one keep their lines; the others
    // are implied.
    assert_eq!(
        paths,
        ["/", "/a/b", "/a/b/c/d/f", "/p/q/r", "/z/gone"],
        "{record}"
    );
    let back = cfs_format::dumpfile::parse_with_parents(
        record.as_bytes(),
        cfs_format::dumpfile::ParseMode::Strict,
        &implicit_dir(),
    )
    .unwrap();
    assert_eq!(back, tree);
}
