//! End-to-end tests of OCI import, driving the real `cfs` binary:
//! multi-layer images written here byte by byte (whiteouts, opaque
//! directories, hard links across layers, xattrs, devices), imported from an
//! OCI layout and through a real registry on loopback (Debian's
//! `docker-registry`, pushed with `skopeo`), mounted and compared with
//! `umoci unpack` of the same image; a hostile-tar corpus; tar bombs under a
//! memory cap (`bombs`); input without end, FIFOs and compressed zeros
//! (`endless`); sparse files from GNU tar (`sparse`); a registry
//! blob with a wrong digest; gc keeping what tags use.
//!
//! Mounting needs root, erofs and overlayfs; the registry needs
//! `docker-registry` and `skopeo`; the reference unpack needs `umoci`. Each
//! test that lacks one says SKIPPED and why.

mod bombs;
mod compare;
mod endless;
mod names;
mod registry;
mod sparse;
mod tars;

use crate::support::in_repo;
use cfs_testkit::walk::walk;
use cfs_testkit::{err, ok};
use compare::compare_with_umoci;
use std::path::Path;
use std::process::Command;
use tars::{gzip, sample_layers, sha256, write_layout, Tar};

#[test]
fn layout_import_matches_umoci_unpack() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    write_layout(&layout, "v1", &sample_layers());
    let repo = t.path().join("repo");
    let src = format!("oci:{}:v1", layout.display());
    let id = ok(in_repo(&repo, &[&"oci", &"pull", &src, &"sample"]));
    let images = ok(in_repo(&repo, &[&"oci", &"images"]));
    assert!(images.starts_with("sample\tsha256:"), "{images}");
    assert!(images.contains(id.trim()), "{images}");
    // The image id is reproducible and compute-id agrees.
    assert_eq!(ok(in_repo(&repo, &[&"oci", &"compute-id", &"sample"])), id);
    assert_eq!(ok(in_repo(&repo, &[&"oci", &"compute-id", &src])), id);
    // A second pull reuses every layer.
    let o = in_repo(&repo, &[&"oci", &"pull", &src, &"again"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("(0 fetched, 3 already present)"));
    assert_eq!(ok(o), id);
    // Whiteouts applied, opaque directory cleared, hard link across layers kept.
    let dump = ok(in_repo(
        &repo,
        &[&"dump", &repo.join("images/refs/oci:sample")],
    ));
    for gone in ["/removed ", "/gone/a ", "/opq/old1 "] {
        assert!(!dump.contains(gone), "{gone} still there:\n{dump}");
    }
    for kept in [
        "/gone/b ",
        "/opq/new ",
        "/abs-normalised ",
        "/etc/tool-hardlink ",
    ] {
        assert!(dump.contains(kept), "{kept} missing:\n{dump}");
    }
    assert!(!dump.contains(".wh."), "{dump}");
    assert!(!dump.contains("trusted.cfs.oci"), "{dump}");
    compare_with_umoci(
        &repo,
        "sample",
        &format!("{}:v1", layout.display()),
        t.path(),
    );
    // gc keeps everything the tags use; after rm, the objects go.
    let before = ok(in_repo(&repo, &[&"gc"]));
    ok(in_repo(&repo, &[&"fsck"]));
    assert!(ok(in_repo(&repo, &[&"oci", &"inspect", &"sample"])).contains("diff_id"));
    ok(in_repo(&repo, &[&"oci", &"rm", &"sample"]));
    ok(in_repo(&repo, &[&"gc"]));
    ok(in_repo(&repo, &[&"oci", &"rm", &"again"]));
    let after = ok(in_repo(&repo, &[&"gc"]));
    ok(in_repo(&repo, &[&"fsck"]));
    let objects = walk(&repo.join("objects"))
        .values()
        .filter(|s| s.content.is_some())
        .count();
    assert_eq!(objects, 0, "gc left objects: {before}\n{after}");
}

/// fsck follows each tag down to the objects its layer records name, and
/// names what is broken.
#[test]
fn fsck_checks_oci_records() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    let layers = sample_layers();
    write_layout(&layout, "v1", &layers);
    let repo = t.path().join("repo");
    ok(in_repo(
        &repo,
        &[
            &"oci",
            &"pull",
            &format!("oci:{}:v1", layout.display()),
            &"sample",
        ],
    ));
    ok(in_repo(&repo, &[&"fsck"]));
    let fsck_problems = || {
        let o = in_repo(&repo, &[&"fsck"]);
        assert!(!o.status.success(), "fsck passed a broken repository");
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let layer_link = repo
        .join("streams/oci/layers/sha256")
        .join(&sha256(&gzip(&layers[1]))[7..]);
    assert!(layer_link.is_symlink(), "{}", layer_link.display());
    let target = std::fs::read_link(&layer_link).unwrap();

    // A layer record gone: the tag can't be rebuilt.
    std::fs::remove_file(&layer_link).unwrap();
    let out = fsck_problems();
    assert!(out.contains("streams/oci/refs/sample"), "{out}");
    assert!(out.contains("no record"), "{out}");
    // A layer link that names no object.
    std::os::unix::fs::symlink("../../../../etc/passwd", &layer_link).unwrap();
    let out = fsck_problems();
    assert!(out.contains("not a link to an object"), "{out}");
    std::fs::remove_file(&layer_link).unwrap();
    std::os::unix::fs::symlink(&target, &layer_link).unwrap();
    ok(in_repo(&repo, &[&"fsck"]));

    // The merged image's name gone.
    let image = repo.join("images/refs/oci:sample");
    let image_target = std::fs::read_link(&image).unwrap();
    std::fs::remove_file(&image).unwrap();
    let out = fsck_problems();
    assert!(out.contains("its image oci:sample"), "{out}");
    std::os::unix::fs::symlink(&image_target, &image).unwrap();

    // A stray entry among the blobs.
    let stray = repo.join("streams/oci/blobs/sha256/not-a-digest");
    std::fs::write(&stray, b"x").unwrap();
    let out = fsck_problems();
    assert!(out.contains("not a sha256 digest name"), "{out}");
    std::fs::remove_file(&stray).unwrap();
    ok(in_repo(&repo, &[&"fsck"]));
}

/// Each hostile tar: rejected with an error naming the entry, or normalised;
/// nothing is written outside the repository either way.
#[test]
fn hostile_tars() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    ok(in_repo(&repo, &[&"init"]));
    let rejected: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            Tar::default().file("../evil", b"x").done(),
            "`..`",
        ),
        (
            "dotdot-inner",
            Tar::default().file("a/../../evil", b"x").done(),
            "`..`",
        ),
        (
            "through-symlink",
            Tar::default()
                .link(b'2', "link", "/etc")
                .file("link/passwd", b"owned")
                .done(),
            "\"link\" is not a directory",
        ),
        (
            "hardlink-missing",
            Tar::default().link(b'1', "hl", "nope").done(),
            "neither this layer nor any below",
        ),
        (
            "hardlink-outside",
            Tar::default().link(b'1', "hl", "../../etc/passwd").done(),
            "hard link target",
        ),
        (
            "hardlink-dir",
            Tar::default().dir("d/").link(b'1', "hl", "d").done(),
            "hard link to a directory",
        ),
        (
            "size-lies",
            {
                let mut t = Tar::default();
                t.raw(b"short", b'0', 1 << 30, b"only this", b"", 0o644, (0, 0));
                t.0.clone()
            },
            "short",
        ),
        (
            "absurd-size",
            {
                let mut t = Tar::default();
                t.pax(&[("size", b"99999999999999")]);
                t.raw(b"huge", b'0', 0, b"", b"", 0o644, (0, 0));
                t.done()
            },
            "huge",
        ),
        (
            "pax-ustar-disagree",
            {
                let mut t = Tar::default();
                t.pax(&[("size", b"3")]);
                t.raw(b"f", b'0', 600, &[b'A'; 600], b"", 0o644, (0, 0));
                t.file("next", b"n");
                t.done()
            },
            "entry after \"f\"",
        ),
        (
            "reserved-xattr",
            Tar::default()
                .pax(&[("SCHILY.xattr.trusted.cfs.oci.hardlink", b"etc/shadow")])
                .file("x", b"x")
                .done(),
            "reserved",
        ),
        (
            "huge-longname",
            {
                let mut t = Tar::default();
                let name = vec![b'a'; 2 << 20];
                t.long_name(&name).file("x", b"x");
                t.done()
            },
            "over the limit max_extension",
        ),
        (
            "sparse-not-gnu",
            Tar::default().link(b'S', "s", "").done(),
            "sparse",
        ),
        (
            "pax-size-garbage",
            Tar::default()
                .pax(&[("size", b"12abc")])
                .file("f", b"")
                .done(),
            "entry \"f\": PAX record size: \"12abc\" is not a decimal number",
        ),
        (
            "pax-uid-negative",
            Tar::default().pax(&[("uid", b"-1")]).file("f", b"").done(),
            "entry \"f\": PAX record uid: \"-1\" is not a decimal number",
        ),
        (
            "pax-mtime-float",
            Tar::default()
                .pax(&[("mtime", b"1e300")])
                .file("f", b"")
                .done(),
            "entry \"f\": PAX record mtime: \"1e300\" is not a time",
        ),
        (
            "base256-negative-uid",
            {
                let mut t = Tar::default();
                t.file("f", b"");
                // uid field (offset 108) as base-256 -1, checksum redone.
                t.0[108..116].copy_from_slice(&[0xff; 8]);
                tars::fix_checksum(&mut t.0[..512]);
                t.done()
            },
            "entry \"f\": header field uid: negative value -1",
        ),
        (
            "octal-garbage-devmajor",
            {
                let mut t = Tar::default();
                t.dev(b'3', "d", 1, 3);
                t.0[329..337].copy_from_slice(b"12x4567\0");
                tars::fix_checksum(&mut t.0[..512]);
                t.done()
            },
            "entry \"d\": header field devmajor: \"12x4567\" is not an octal number",
        ),
        (
            "root-file",
            Tar::default().file("./", b"").done(),
            "root must be a directory",
        ),
        (
            "truncated",
            Tar::default().file("f", &[1u8; 2000]).0[..1024].to_vec(),
            "\"f\"",
        ),
    ];
    for (name, tar, expect) in &rejected {
        let f = t.path().join(format!("{name}.tar"));
        std::fs::write(&f, tar).unwrap();
        let e = err(in_repo(&repo, &[&"import-tar", &f, name]));
        assert!(e.contains(expect), "{name}: {e}");
        assert!(!e.contains("panicked"), "{name}: {e}");
        assert!(
            ok(in_repo(&repo, &[&"images"])).is_empty(),
            "{name} named an image"
        );
    }
    // Normalised, as a careful unpacker does: absolute paths made relative,
    // duplicates (last wins), `./` prefixes.
    let normal = Tar::default()
        .file("/etc/abs", b"abs")
        .file("./dup", b"first")
        .file("dup", b"second")
        .dir("d/")
        .link(b'2', "d/up", "../../../etc/passwd")
        .done();
    let f = t.path().join("normal.tar");
    std::fs::write(&f, &normal).unwrap();
    ok(in_repo(&repo, &[&"import-tar", &f, &"normal"]));
    let dump = ok(in_repo(&repo, &[&"dump", &repo.join("images/refs/normal")]));
    assert!(dump.contains("/etc/abs 3 "), "{dump}");
    assert!(dump.contains("/dup 6 "), "{dump}");
    assert!(dump.contains("../../../etc/passwd"), "{dump}");
    // gzip and zstd.
    let gz = t.path().join("normal.tar.gz");
    std::fs::write(&gz, gzip(&normal)).unwrap();
    ok(in_repo(&repo, &[&"import-tar", &gz, &"normal-gz"]));
    if cfs_testkit::need::have_tool("zstd") {
        let zs = t.path().join("normal.tar.zst");
        let o = Command::new("zstd")
            .arg("-q")
            .arg(&f)
            .arg("-o")
            .arg(&zs)
            .status()
            .unwrap();
        assert!(o.success());
        ok(in_repo(&repo, &[&"import-tar", &zs, &"normal-zst"]));
    }
    let images = ok(in_repo(&repo, &[&"images"]));
    let ids: std::collections::BTreeSet<&str> = images
        .lines()
        .filter_map(|l| l.split('\t').nth(1))
        .collect();
    assert_eq!(ids.len(), 1, "compressions give different images: {images}");
    // Nothing appeared outside the repository: only our tars and the repo.
    for e in std::fs::read_dir(t.path()).unwrap() {
        let n = e.unwrap().file_name().into_string().unwrap();
        assert!(n == "repo" || n.contains(".tar"), "unexpected {n}");
    }
    for p in ["/evil", "/etc/abs", "/tmp/evil"] {
        assert!(
            !Path::new(p).exists() || p == "/tmp/evil",
            "{p} was written"
        );
    }
    ok(in_repo(&repo, &[&"fsck"]));
}
