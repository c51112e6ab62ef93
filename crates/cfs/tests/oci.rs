//! End-to-end tests of OCI import, driving the real `cfs` binary:
//! multi-layer images written here byte by byte (whiteouts, opaque
//! directories, hard links across layers, xattrs, devices), imported from an
//! OCI layout and through a real registry on loopback (Debian's
//! `docker-registry`, pushed with `skopeo`), mounted and compared with
//! `umoci unpack` of the same image; a hostile-tar corpus; a registry blob
//! with a wrong digest; gc keeping what tags use.
//!
//! Mounting needs root, erofs and overlayfs; the registry needs
//! `docker-registry` and `skopeo`; the reference unpack needs `umoci`. Each
//! test that lacks one says SKIPPED and why.

use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const CFS: &str = env!("CARGO_BIN_EXE_cfs");

mod repo_cli;
use repo_cli::{cfs, err, ok};

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn can_mount() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root".into());
    }
    for fs in ["erofs", "overlay"] {
        let _ = Command::new("modprobe").arg(fs).status();
        if !std::fs::read_to_string("/proc/filesystems")
            .unwrap_or_default()
            .contains(fs)
        {
            return Some(format!("no {fs} in the kernel"));
        }
    }
    None
}

// ---- writing tars by hand, so every header field is ours ----

/// A tar under construction: raw ustar headers, PAX records, data.
#[derive(Default)]
struct Tar(Vec<u8>);

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0w$o}\0", v, w = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

impl Tar {
    /// A raw entry; `size` is written to the header even if `data` differs.
    #[allow(clippy::too_many_arguments)]
    fn raw(
        &mut self,
        name: &[u8],
        kind: u8,
        size: u64,
        data: &[u8],
        link: &[u8],
        mode: u32,
        dev: (u64, u64),
    ) {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name);
        octal(&mut h[100..108], mode as u64);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], size);
        octal(&mut h[136..148], 1_700_000_000);
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        octal(&mut h[329..337], dev.0);
        octal(&mut h[337..345], dev.1);
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.0.extend_from_slice(&h);
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
    }
    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.raw(
            name.as_bytes(),
            b'0',
            data.len() as u64,
            data,
            b"",
            0o644,
            (0, 0),
        );
        self
    }
    fn dir(&mut self, name: &str) -> &mut Self {
        self.raw(name.as_bytes(), b'5', 0, b"", b"", 0o755, (0, 0));
        self
    }
    fn link(&mut self, kind: u8, name: &str, target: &str) -> &mut Self {
        self.raw(
            name.as_bytes(),
            kind,
            0,
            b"",
            target.as_bytes(),
            0o777,
            (0, 0),
        );
        self
    }
    fn dev(&mut self, kind: u8, name: &str, major: u64, minor: u64) -> &mut Self {
        self.raw(name.as_bytes(), kind, 0, b"", b"", 0o600, (major, minor));
        self
    }
    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (k, v) in records {
            let rest = k.len() + v.len() + 3;
            let mut len = rest + 1;
            while format!("{len}").len() + rest != len {
                len += 1;
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        self.raw(
            b"PaxHeader",
            b'x',
            body.len() as u64,
            &body.clone(),
            b"",
            0o644,
            (0, 0),
        );
        self
    }
    fn done(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.0);
        v.extend([0u8; 1024]);
        v
    }
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(b))
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn put_blob(dir: &Path, b: &[u8]) -> String {
    let d = sha256(b);
    let p = dir.join("blobs/sha256");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join(&d[7..]), b).unwrap();
    d
}

/// Writes an OCI layout at `dir` with one image tagged `tag` made of `layers`
/// (uncompressed tars; stored gzipped).
fn write_layout(dir: &Path, tag: &str, layers: &[Vec<u8>]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let arch = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    let mut descs = Vec::new();
    let mut diffs = Vec::new();
    for l in layers {
        diffs.push(format!("\"{}\"", sha256(l)));
        let gz = gzip(l);
        let d = put_blob(dir, &gz);
        descs.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":{}}}"#,
            gz.len()
        ));
    }
    let config = format!(
        r#"{{"architecture":"{arch}","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diffs.join(",")
    );
    let cd = put_blob(dir, config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[{}]}}"#,
        config.len(),
        descs.join(",")
    );
    let md = put_blob(dir, manifest.as_bytes());
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"{tag}"}}}}]}}"#,
            manifest.len()
        ),
    )
    .unwrap();
}

/// Three layers exercising whiteouts, opaque directories, hard links within
/// and across layers, xattrs, devices, long names and overwrites.
fn sample_layers() -> Vec<Vec<u8>> {
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let long = format!("deep/{}", "n".repeat(150));
    let l1 = Tar::default()
        .dir("etc/")
        .file("etc/hostname", b"base\n")
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        .dir("usr/")
        .dir("usr/bin/")
        .file("usr/bin/tool", &big)
        .link(b'1', "usr/bin/tool-link", "usr/bin/tool")
        .link(b'2', "usr/bin/sh", "tool")
        .dir("opq/")
        .file("opq/old1", b"old")
        .file("opq/old2", b"old")
        .dir("gone/")
        .file("gone/a", b"a")
        .file("removed", b"bye")
        .dev(b'3', "null", 1, 3)
        .dev(b'4', "blk", 8, 1)
        .dev(b'6', "fifo", 0, 0)
        .pax(&[
            ("SCHILY.xattr.user.color", b"blue"),
            ("path", long.as_bytes()),
        ])
        .file("ignored-name", b"long named")
        .done();
    let l2 = Tar::default()
        .file(".wh.removed", b"")
        .file(".wh.gone", b"")
        .dir("opq/")
        .file("opq/.wh..wh..opq", b"")
        .file("opq/new", b"new")
        .file("etc/hostname", b"layer two\n")
        .link(b'1', "etc/tool-hardlink", "usr/bin/tool")
        .done();
    let l3 = Tar::default()
        .dir("gone/")
        .file("gone/b", b"back")
        .file("/abs-normalised", b"abs")
        .done();
    vec![l1, l2, l3]
}

// ---- comparing trees ----

#[derive(Debug, PartialEq, Eq)]
struct Seen {
    mode: u32,
    uid: u32,
    gid: u32,
    rdev: u64,
    size: u64,
    content: Option<String>,
    link: Option<PathBuf>,
    xattrs: BTreeMap<String, Vec<u8>>,
    /// First path (in sorted order) of this file's inode, for hard links.
    group: Option<PathBuf>,
}

fn user_xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut list = vec![0u8; 1 << 16];
    let Ok(n) = rustix::fs::llistxattr(p, &mut list[..]) else {
        return out;
    };
    for name in list[..n]
        .split(|&b| b == 0)
        .filter(|n| n.starts_with(b"user."))
    {
        let name = OsStr::from_bytes(name);
        let mut v = vec![0u8; 1 << 16];
        let n = rustix::fs::lgetxattr(p, name, &mut v[..]).unwrap();
        v.truncate(n);
        out.insert(name.to_string_lossy().into_owned(), v);
    }
    out
}

fn walk(root: &Path) -> BTreeMap<PathBuf, Seen> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), PathBuf> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    let mut all = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
            }
            all.push((p, m));
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    for (p, m) in all {
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        let ft = m.file_type();
        let group = (!ft.is_dir() && m.nlink() > 1).then(|| {
            inodes
                .entry((m.dev(), m.ino()))
                .or_insert(rel.clone())
                .clone()
        });
        out.insert(
            rel,
            Seen {
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                rdev: m.rdev(),
                size: if ft.is_file() || ft.is_symlink() {
                    m.size()
                } else {
                    0
                },
                content: ft.is_file().then(|| sha256(&std::fs::read(&p).unwrap())),
                link: ft.is_symlink().then(|| std::fs::read_link(&p).unwrap()),
                xattrs: user_xattrs(&p),
                group,
            },
        );
    }
    out
}

fn assert_same_tree(reference: &Path, mounted: &Path) {
    let a = walk(reference);
    let b = walk(mounted);
    let ka: Vec<_> = a.keys().collect();
    let kb: Vec<_> = b.keys().collect();
    assert_eq!(ka, kb, "different paths");
    for (p, x) in &a {
        assert_eq!(Some(x), b.get(p), "{} differs", p.display());
    }
}

struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new(CFS).arg("unmount").arg(&self.0).status();
    }
}

/// Mounts `cfs oci mount NAME` and compares with `umoci unpack` of `image`;
/// returns the unpacked rootfs (None when skipped).
fn compare_with_umoci(repo: &Path, name: &str, image: &str, work: &Path) -> Option<PathBuf> {
    if let Some(why) = can_mount() {
        eprintln!("SKIPPED: comparing the mounted tree needs kernel mounts ({why})");
        return None;
    }
    if !have("umoci") {
        eprintln!("SKIPPED: comparing the mounted tree needs umoci");
        return None;
    }
    let bundle = work.join(format!("bundle-{name}"));
    let o = Command::new("umoci")
        .args(["unpack", "--image", image])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mnt = work.join(format!("mnt-{name}"));
    std::fs::create_dir_all(&mnt).unwrap();
    ok(cfs(repo, &[&"oci", &"mount", &name, &mnt]));
    let _guard = Unmount(mnt.clone());
    assert_same_tree(&bundle.join("rootfs"), &mnt);
    Some(bundle.join("rootfs"))
}

/// Lists a tree as `find` and `sha256sum` see it (paths, types, modes, sizes
/// and link targets of non-directories, content hashes): owners are left out,
/// since a user namespace maps them.
const LISTING: &str = r#"cd "$1"
find . -type d -printf '%p %y %m\n' | LC_ALL=C sort
find . ! -type d -printf '%p %y %m %s %l\n' | LC_ALL=C sort
find . -type f -exec sha256sum {} + | LC_ALL=C sort"#;

/// The test user (created as `.ci/run` does) for rootless mounts.
const USER: &str = "cfs-test";

/// As the plain test user inside `unshare -Urm`, as a rootless container
/// engine runs: `cfs oci mount NAME` (auto picks fuse+overlay there) gives the
/// same tree as `rootfs`, contents included.
fn compare_rootless(repo: &Path, name: &str, rootfs: &Path, work: &Path) {
    for tool in ["setpriv", "unshare", "fusermount3", "timeout"] {
        if !have(tool) {
            eprintln!("SKIPPED: the rootless mount needs {tool}");
            return;
        }
    }
    // The reference listing first: making the work dir readable below changes modes in it.
    let want = Command::new("sh")
        .args(["-c", LISTING, "sh"])
        .arg(rootfs)
        .output()
        .unwrap();
    assert!(want.status.success());
    let _ = Command::new("chmod").args(["0666", "/dev/fuse"]).status();
    if !Command::new("id")
        .arg(USER)
        .output()
        .unwrap()
        .status
        .success()
    {
        let _ = Command::new("useradd").args(["-m", USER]).status();
    }
    let o = Command::new("chmod")
        .arg("-R")
        .arg("a+rX")
        .arg(work)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "chmod: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let home = work.join("rootless-home");
    std::fs::create_dir_all(&home).unwrap();
    let o = Command::new("chown").arg(USER).arg(&home).output().unwrap();
    assert!(o.status.success());
    let script = format!(
        "mkdir -p \"$HOME_DIR/m\"\n\
         \"$CFS\" --repo \"$REPO\" oci mount --explain '{name}' \"$HOME_DIR/m\" >&2\n\
         sh -c '{}' sh \"$HOME_DIR/m\"\n\
         \"$CFS\" unmount \"$HOME_DIR/m\"",
        LISTING.replace('\'', "'\\''")
    );
    let got = Command::new("timeout")
        .args([
            "-k",
            "5",
            "120",
            "setpriv",
            "--reuid",
            USER,
            "--regid",
            USER,
            "--init-groups",
        ])
        .args(["unshare", "-Urm", "sh", "-eu", "-c", &script])
        .env("CFS", CFS)
        .env("REPO", repo)
        .env("HOME_DIR", &home)
        .current_dir(&home)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&got.stderr);
    assert!(got.status.success(), "rootless oci mount failed: {err}");
    assert!(
        err.contains("fuse+overlay") || err.contains("FuseOverlay"),
        "mode: {err}"
    );
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        String::from_utf8_lossy(&want.stdout),
        "the rootless mount differs from the reference unpack"
    );
}

#[test]
fn layout_import_matches_umoci_unpack() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    write_layout(&layout, "v1", &sample_layers());
    let repo = t.path().join("repo");
    let src = format!("oci:{}:v1", layout.display());
    let id = ok(cfs(&repo, &[&"oci", &"pull", &src, &"sample"]));
    let images = ok(cfs(&repo, &[&"oci", &"images"]));
    assert!(images.starts_with("sample\tsha256:"), "{images}");
    assert!(images.contains(id.trim()), "{images}");
    // The image id is reproducible and compute-id agrees.
    assert_eq!(ok(cfs(&repo, &[&"oci", &"compute-id", &"sample"])), id);
    assert_eq!(ok(cfs(&repo, &[&"oci", &"compute-id", &src])), id);
    // A second pull reuses every layer.
    let o = cfs(&repo, &[&"oci", &"pull", &src, &"again"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("(0 fetched, 3 already present)"));
    assert_eq!(ok(o), id);
    // Whiteouts applied, opaque directory cleared, hard link across layers kept.
    let dump = ok(cfs(&repo, &[&"dump", &repo.join("images/refs/oci:sample")]));
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
    let before = ok(cfs(&repo, &[&"gc"]));
    ok(cfs(&repo, &[&"fsck"]));
    assert!(ok(cfs(&repo, &[&"oci", &"inspect", &"sample"])).contains("diff_id"));
    ok(cfs(&repo, &[&"oci", &"rm", &"sample"]));
    ok(cfs(&repo, &[&"gc"]));
    ok(cfs(&repo, &[&"oci", &"rm", &"again"]));
    let after = ok(cfs(&repo, &[&"gc"]));
    ok(cfs(&repo, &[&"fsck"]));
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
    ok(cfs(
        &repo,
        &[
            &"oci",
            &"pull",
            &format!("oci:{}:v1", layout.display()),
            &"sample",
        ],
    ));
    ok(cfs(&repo, &[&"fsck"]));
    let fsck_problems = || {
        let o = cfs(&repo, &[&"fsck"]);
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
    ok(cfs(&repo, &[&"fsck"]));

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
    ok(cfs(&repo, &[&"fsck"]));
}

/// Each hostile tar: rejected with an error naming the entry, or normalised;
/// nothing is written outside the repository either way.
#[test]
fn hostile_tars() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    ok(cfs(&repo, &[&"init"]));
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
                t.raw(
                    b"././@LongLink",
                    b'L',
                    name.len() as u64,
                    &name,
                    b"",
                    0o644,
                    (0, 0),
                );
                t.file("x", b"x");
                t.done()
            },
            "over the size limit",
        ),
        (
            "sparse",
            Tar::default().link(b'S', "s", "").done(),
            "sparse",
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
        let e = err(cfs(&repo, &[&"import-tar", &f, name]));
        assert!(e.contains(expect), "{name}: {e}");
        assert!(!e.contains("panicked"), "{name}: {e}");
        assert!(
            ok(cfs(&repo, &[&"images"])).is_empty(),
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
    ok(cfs(&repo, &[&"import-tar", &f, &"normal"]));
    let dump = ok(cfs(&repo, &[&"dump", &repo.join("images/refs/normal")]));
    assert!(dump.contains("/etc/abs 3 "), "{dump}");
    assert!(dump.contains("/dup 6 "), "{dump}");
    assert!(dump.contains("../../../etc/passwd"), "{dump}");
    // gzip and zstd.
    let gz = t.path().join("normal.tar.gz");
    std::fs::write(&gz, gzip(&normal)).unwrap();
    ok(cfs(&repo, &[&"import-tar", &gz, &"normal-gz"]));
    if have("zstd") {
        let zs = t.path().join("normal.tar.zst");
        let o = Command::new("zstd")
            .arg("-q")
            .arg(&f)
            .arg("-o")
            .arg(&zs)
            .status()
            .unwrap();
        assert!(o.success());
        ok(cfs(&repo, &[&"import-tar", &zs, &"normal-zst"]));
    }
    let images = ok(cfs(&repo, &[&"images"]));
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
    ok(cfs(&repo, &[&"fsck"]));
}

// ---- a real registry on loopback ----

struct Registry {
    child: std::process::Child,
    port: u16,
    storage: PathBuf,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry(work: &Path) -> Option<Registry> {
    let bin = ["docker-registry", "/usr/bin/docker-registry"]
        .into_iter()
        .find(|b| have(b))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let storage = work.join("registry");
    std::fs::create_dir_all(&storage).unwrap();
    let config = work.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let reg = Registry {
        child,
        port,
        storage,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(reg);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    None
}

fn skopeo_push(layout: &Path, tag: &str, dest: &str) {
    let o = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(dest)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn registry_pull_mount_and_wrong_digest() {
    if !have("skopeo") {
        eprintln!("SKIPPED: registry test needs skopeo");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let Some(reg) = start_registry(t.path()) else {
        eprintln!("SKIPPED: registry test needs docker-registry (Debian package docker-registry)");
        return;
    };
    let layout = t.path().join("layout");
    write_layout(&layout, "v1", &sample_layers());
    let src = format!("docker://127.0.0.1:{}/test/sample:v1", reg.port);
    skopeo_push(&layout, "v1", &src);
    let repo = t.path().join("repo");
    let id = ok(cfs(&repo, &[&"oci", &"pull", &"--tls-verify=false", &src]));
    assert!(ok(cfs(&repo, &[&"oci", &"images"])).starts_with("sample:v1\t"));
    // The same image as from the layout.
    let repo2 = t.path().join("repo2");
    let id2 = ok(cfs(
        &repo2,
        &[&"oci", &"pull", &format!("oci:{}:v1", layout.display())],
    ));
    assert_eq!(id, id2);
    if let Some(rootfs) = compare_with_umoci(
        &repo,
        "sample:v1",
        &format!("{}:v1", layout.display()),
        t.path(),
    ) {
        compare_rootless(&repo, "sample:v1", &rootfs, t.path());
    }
    // Pulled again: every layer is already there.
    let o = cfs(
        &repo,
        &[&"oci", &"pull", &"--tls-verify=false", &src, &"again"],
    );
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(ok(o), id);
    assert!(e.contains("(0 fetched, 3 already present)"), "{e}");

    // Corrupt one layer in the registry's storage: the pull fails naming it.
    let manifest: String = std::fs::read_to_string(layout.join("index.json")).unwrap();
    let md = manifest
        .split("\"digest\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let m = std::fs::read_to_string(layout.join("blobs/sha256").join(&md[7..])).unwrap();
    let layer = m
        .split("\"digest\":\"")
        .nth(3)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let hex = &layer[7..];
    let data = reg
        .storage
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    let fresh = t.path().join("fresh");
    let e = err(cfs(
        &fresh,
        &[&"oci", &"pull", &"--tls-verify=false", &src, &"bad"],
    ));
    assert!(e.contains(hex), "error does not name the blob {layer}: {e}");
    assert!(ok(cfs(&fresh, &[&"oci", &"images"])).is_empty());
    assert!(ok(cfs(&fresh, &[&"images"])).is_empty());
}

/// A debootstrapped Debian minbase root (cached by `.ci/run` as
/// `/var/cache/cfs-test/minbase.tar`), as a one-layer image made with
/// `umoci raw add-layer`: pulled, mounted and compared with `umoci unpack`.
#[test]
fn debian_minbase_matches_umoci_unpack() {
    let tar = Path::new("/var/cache/cfs-test/minbase.tar");
    if !tar.exists() {
        eprintln!(
            "SKIPPED: no cached Debian minbase root at {} (.ci/run builds it with debootstrap)",
            tar.display()
        );
        return;
    }
    if !have("umoci") {
        eprintln!("SKIPPED: needs umoci");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    let img = format!("{}:minbase", layout.display());
    for args in [
        vec!["init", "--layout", layout.to_str().unwrap()],
        vec!["new", "--image", &img],
        vec!["raw", "add-layer", "--image", &img, tar.to_str().unwrap()],
    ] {
        let o = Command::new("umoci").args(&args).output().unwrap();
        assert!(
            o.status.success(),
            "umoci {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let repo = t.path().join("repo");
    ok(cfs(
        &repo,
        &[&"oci", &"pull", &format!("oci:{img}"), &"minbase"],
    ));
    compare_with_umoci(&repo, "minbase", &img, t.path());
    ok(cfs(&repo, &[&"fsck"]));
}
