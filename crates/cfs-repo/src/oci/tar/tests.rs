use super::*;

#[test]
fn paths_normalise_or_fail() {
    let ok: &[(&[u8], &[&[u8]])] = &[
        (b"a/b", &[b"a", b"b"]),
        (b"./a//b/", &[b"a", b"b"]),
        (b"/etc/passwd", &[b"etc", b"passwd"]),
        (b"./", &[]),
    ];
    for (raw, want) in ok {
        assert_eq!(normalize(raw, 4096).unwrap(), *want, "{raw:?}");
    }
    for bad in [&b"../x"[..], b"a/../../x", b"a/..", b"a\0b"] {
        assert!(normalize(bad, 4096).is_err(), "{bad:?}");
    }
    assert!(normalize(&[b'a'; 300], 4096).is_err());
    assert!(normalize(b"a/b/c", 4).is_err());
}

#[test]
fn pax_times() {
    let t = |s: &str| parse_pax_time(s.as_bytes());
    assert_eq!(t("12"), Some(Timespec { sec: 12, nsec: 0 }));
    assert_eq!(
        t("12.5"),
        Some(Timespec {
            sec: 12,
            nsec: 500_000_000
        })
    );
    assert_eq!(
        t("-1.25"),
        Some(Timespec {
            sec: -2,
            nsec: 750_000_000
        })
    );
    assert_eq!(t("x"), None);
    assert_eq!(t("1.x"), None);
}

#[test]
fn entry_count_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::create(&dir.path().join("o")).unwrap();
    let mut b = ::tar::Builder::new(Vec::new());
    for i in 0..5 {
        let mut h = ::tar::Header::new_ustar();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, format!("f{i}"), &[][..]).unwrap();
    }
    let data = b.into_inner().unwrap();
    let limits = Limits {
        max_entries: 3,
        ..Limits::default()
    };
    let e = read_layer(&mut &data[..], "t", &store, &limits).unwrap_err();
    assert!(e.to_string().contains("more than 3 entries"), "{e}");
    let (tree, stats) = read_layer(&mut &data[..], "t", &store, &Limits::default()).unwrap();
    assert_eq!(stats.entries, 5);
    assert_eq!(tree.node(NodeId::ROOT).entries.len(), 5);
}

/// GNU tar's first check: an empty or short stream, or a first block that is
/// no header, is not a tar archive; an archive of zero blocks is an empty one.
#[test]
fn only_tar_archives_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::create(&dir.path().join("o")).unwrap();
    let read = |data: &[u8]| read_layer(&mut &data[..], "in", &store, &Limits::default());
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
        assert!(e.starts_with("in: ") && e.contains(why), "{e}");
    }
    let (tree, stats) = read(&[0u8; 1024]).unwrap();
    assert_eq!((tree.len(), stats.entries), (1, 0));
    let mut b = ::tar::Builder::new(Vec::new());
    let mut h = ::tar::Header::new_gnu();
    h.set_size(2);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "f", &b"hi"[..]).unwrap();
    let (_, stats) = read(&b.into_inner().unwrap()).unwrap();
    assert_eq!(stats.entries, 1);
    assert!(header_checksum_holds(&{
        let mut v = ::tar::Header::new_ustar();
        v.set_cksum();
        v.as_bytes().to_vec()
    }));
}
