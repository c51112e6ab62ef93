//! Differential mount test over property-generated random trees (issue
//! "Hardening").
//!
//! Each round, a seeded generator materialises a tree ([`Gen`]: names with
//! odd bytes, a deep chain and a wide directory, every file type, hard links,
//! binary xattrs shared between inodes, sizes around block boundaries, varied
//! modes, owners and nanosecond mtimes), `cfs mkfs --hardlinks
//! --digest-store` builds it, and the image is mounted the three ways:
//! 1. kernel: `cfs mount --fuse=no`, as root;
//! 2. standalone FUSE: `cfs fuse-serve`, as root (a plain user's mount
//!    through `fusermount3` would hide other owners' files from its walk);
//! 3. fuse+overlay: `cfs mount` by the test user as root of a user
//!    namespace (`unshare -Urm`) with all its subordinate ids mapped, so
//!    every owner the generator uses shows as itself. The walk there is this
//!    test binary run again ([`walk_in_namespace`]).
//!
//! Checked: the image (read back) and all three walks equal the source walk
//! (with the mapping composefs makes by design, [`expected_from_source`];
//! for the fuse+overlay mount, also what a `userxattr` overlay in a user
//! namespace shows, [`userns_xattr`]); and `cfs mkfs` of each mount, with the
//! original's flags, rebuilds the original image byte for byte
//! (fuse+overlay: the image of the kernel mount's tree as that mount shows
//! it).
//!
//! Environment: `CFS_DIFF_SEED` (decimal or `0x` hex; default
//! [`DEFAULT_SEED`]), `CFS_DIFF_SIZE` (random entries per round, and the
//! width of the wide directory; default [`DEFAULT_SIZE`]), `CFS_DIFF_ROUNDS`
//! (default [`DEFAULT_ROUNDS`]; round `i` uses a seed derived from the seed
//! and `i`, round 0 the seed itself). A failing round prints the command that
//! reruns it alone. See docs/testing.md.
//!
//! Needs root, erofs, overlayfs, fuse, `setpriv`, `unshare` and `timeout`;
//! skipped with a message otherwise. The fuse+overlay leg also needs
//! `newuidmap` (package `uidmap`) and a subordinate id range for the test
//! user; without them only that leg is skipped, with a message.

mod generate;

use crate::cfs;
use crate::support::{build, expected_from_source, expected_from_tree, mount};
use cfs_testkit::conformance::hex;
use cfs_testkit::mounts::{umount, FuseMount};
use cfs_testkit::rng::{env_number, splitmix64};
use cfs_testkit::users::{subordinate_ids, As, Script, Tag, TEST_USER};
use cfs_testkit::walk::{assert_same, objects_in, walk, walk_bounded, Entry};
use cfs_testkit::{need, ok, os, report_skip, require, stderr};
use generate::Gen;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The seed CI runs with.
const DEFAULT_SEED: u64 = 0x00c0_ffee_d1ff;
/// Random entries per round (and the wide directory's width) CI runs with.
const DEFAULT_SIZE: usize = 400;
/// Rounds CI runs.
const DEFAULT_ROUNDS: usize = 3;
/// How long a walk of a mount may take before the test fails.
const WALK_LIMIT: Duration = Duration::from_secs(300);

/// The xattr name the fuse+overlay mount (overlayfs with `userxattr`, in a
/// user namespace) shows for one the kernel mount shows on an inode of
/// `mode`, `None` if hidden: `trusted.*` needs `CAP_SYS_ADMIN` in the
/// initial user namespace, and overlayfs' own namespace is `user.overlay.*`
/// there, so a user's own `trusted.overlay.X` (which the kernel mount shows
/// unescaped) shows as `user.overlay.X`; except on symlinks and special
/// files, where Linux reads no `user.*` (see `cfs-fuse/src/mode.rs`).
fn userns_xattr(name: &[u8], mode: u32) -> Option<Vec<u8>> {
    let shown = if let Some(rest) = name.strip_prefix(b"trusted.overlay.") {
        [&b"user.overlay."[..], rest].concat()
    } else if name.starts_with(b"trusted.") {
        return None;
    } else {
        name.to_vec()
    };
    let reg_or_dir = matches!(mode & 0o170000, 0o100000 | 0o040000);
    (reg_or_dir || !shown.starts_with(b"user.")).then_some(shown)
}

/// The kernel mount's walk as the fuse+overlay mount must show it.
fn as_seen_in_userns(walk: &BTreeMap<PathBuf, Entry>) -> BTreeMap<PathBuf, Entry> {
    let mut out = walk.clone();
    for e in out.values_mut() {
        let xattrs = std::mem::take(&mut e.xattrs);
        for (name, value) in xattrs {
            if let Some(n) = userns_xattr(name.as_bytes(), e.mode) {
                let previous = e.xattrs.insert(OsString::from_vec(n), value.clone());
                assert!(
                    previous.is_none_or(|p| p == value),
                    "the generator made an xattr the user namespace can't show"
                );
            }
        }
    }
    out
}

/// The kernel mount's tree as the fuse+overlay mount shows it, built as an
/// image: what `cfs mkfs` of that mount must give.
fn image_as_seen_in_userns(mnt: &Path, min_version: u32) -> Vec<u8> {
    let options = cfs_repo::scan::ScanOptions {
        hardlinks: true,
        ..Default::default()
    };
    let mut tree = cfs_repo::scan::scan(mnt, &options).unwrap().tree;
    let ids: Vec<_> = tree.nodes().map(|(id, _)| id).collect();
    for id in ids {
        let node = tree.node_mut(id);
        let xattrs = std::mem::take(&mut node.xattrs);
        for x in xattrs {
            if let Some(n) = userns_xattr(&x.name, node.stat.mode) {
                node.set_xattr(&n, &x.value);
            }
        }
        node.xattrs.sort();
    }
    let options = cfs_format::writer::WriteOptions {
        min_version,
        max_version: 1,
    };
    cfs_format::writer::write_image(&tree, &options).unwrap()
}

/// Walks of the fuse+overlay mount are written as one line per path: the
/// path in hex, a space, the entry's `Debug` form (equal entries, equal text).
fn encode_walk(walk: &BTreeMap<PathBuf, Entry>) -> String {
    walk.iter()
        .map(|(p, e)| format!("{} {e:?}\n", hex(p.as_os_str().as_bytes())))
        .collect()
}

fn decode_walk(text: &str) -> BTreeMap<PathBuf, String> {
    text.lines()
        .map(|l| {
            let (p, e) = l.split_once(' ').expect("a walk line");
            (PathBuf::from(OsString::from_vec(unhex(p))), e.to_owned())
        })
        .collect()
}

fn as_text(walk: &BTreeMap<PathBuf, Entry>) -> BTreeMap<PathBuf, String> {
    decode_walk(&encode_walk(walk))
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Not a test: the walker the fuse+overlay leg runs inside its user
/// namespace (`CFS_DIFF_WALK_ROOT` → `CFS_DIFF_WALK_OUT`).
#[test]
#[ignore = "a helper differential_mounts runs in a user namespace"]
fn walk_in_namespace() {
    let (Some(root), Some(out)) = (
        std::env::var_os("CFS_DIFF_WALK_ROOT"),
        std::env::var_os("CFS_DIFF_WALK_OUT"),
    ) else {
        eprintln!("walk_in_namespace: only differential_mounts runs this, with its environment");
        return;
    };
    std::fs::write(out, encode_walk(&walk(Path::new(&root)))).unwrap();
}

/// Fails unless `rebuilt` is the image `want`, showing how their dumps differ.
fn assert_same_image(what: &str, want: &Path, rebuilt: &Path) {
    let (a, b) = (
        std::fs::read(want).unwrap(),
        std::fs::read(rebuilt).unwrap(),
    );
    if a == b {
        return;
    }
    let dump = |p: &Path| cfs().ok([os("dump"), p.as_os_str()]);
    let (da, db) = (dump(want), dump(rebuilt));
    let la: BTreeSet<&str> = da.lines().collect();
    let lb: BTreeSet<&str> = db.lines().collect();
    let mut lines: Vec<String> = la.difference(&lb).map(|l| format!("- {l}")).collect();
    lines.extend(lb.difference(&la).map(|l| format!("+ {l}")));
    let first = a.iter().zip(&b).position(|(x, y)| x != y);
    panic!(
        "{what}: the rebuilt image differs ({} vs {} bytes, first difference at {first:?}); \
         dumps differ in {} lines:\n{}",
        a.len(),
        b.len(),
        lines.len(),
        lines
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// `cfs mkfs` of a mounted tree with the original's flags; checks the image
/// and the objects stored.
fn rebuild_and_compare(what: &str, mnt: &Path, dir: &Path, original: &Built) {
    let image = dir.join(format!("rebuilt-{what}.cfs"));
    let objects = dir.join(format!("objects-{what}"));
    let mut args = vec![os("mkfs")];
    args.extend(original.rebuild_flags.iter().map(|f| f.as_os_str()));
    args.extend([
        os("--digest-store"),
        objects.as_os_str(),
        mnt.as_os_str(),
        image.as_os_str(),
    ]);
    cfs().ok(&args);
    assert_same_image(
        &format!("{what}: cfs mkfs of the mount"),
        &original.image,
        &image,
    );
    assert_eq!(
        objects_in(&objects),
        objects_in(&original.objects),
        "{what}: cfs mkfs of the mount stored other objects"
    );
}

/// A round's image, built from the generated tree.
struct Built {
    image: PathBuf,
    objects: PathBuf,
    /// Its composefs format version.
    version: u32,
    /// The flags that rebuild the image from a mount of it.
    rebuild_flags: Vec<OsString>,
}

/// Prints how to rerun a round if it fails.
struct Reproduce {
    seed: u64,
    size: usize,
}

impl Drop for Reproduce {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "\ndifferential: the round with seed {:#x} failed; rerun it alone with\n  \
                 CFS_DIFF_SEED={:#x} CFS_DIFF_SIZE={} CFS_DIFF_ROUNDS=1 \
                 cargo test -p cfs --test cfs differential\n",
                self.seed, self.seed, self.size
            );
        }
    }
}

/// Why the fuse+overlay leg can't run, or the id ranges to map.
pub(crate) fn userns_ids() -> Result<As, String> {
    for tool in ["newuidmap", "newgidmap"] {
        if !need::have_tool(tool) {
            return Err(format!("{tool} is not installed (apt-get install uidmap)"));
        }
    }
    let range = |file: &str| {
        subordinate_ids(file)
            .filter(|&(_, count)| count >= 65536)
            .ok_or_else(|| format!("{file} gives {TEST_USER} no range of 65536 ids"))
    };
    Ok(As::UserNsAllIds {
        uids: range("/etc/subuid")?,
        gids: range("/etc/subgid")?,
    })
}

/// A tmpfs mounted over a directory for a round's files, unmounted on drop
/// (after the mounts inside it, declared later). Not the disk: the object
/// store syncs what it writes, and deleting synced files from a disk
/// mounted with `discard` costs seconds.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn new(dir: &Path) -> Tmpfs {
        // mode=0755: the test user reaches the image and objects.
        ok(std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "mode=0755,size=4g", "cfs-differential"])
            .arg(dir)
            .output()
            .unwrap());
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        umount(&self.0);
    }
}

/// Times the steps of a round.
struct Laps {
    last: Instant,
    done: Vec<String>,
}

impl Laps {
    fn lap(&mut self, what: &str) {
        self.done
            .push(format!("{what} {:.1?}", self.last.elapsed()));
        self.last = Instant::now();
    }
}

/// How the FUSE legs' servers take requests: as they choose, or forced over
/// FUSE io_uring (`--fuse-transport uring`), which their stats then prove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// The default transport.
    Default,
    /// FUSE over io_uring (the caller turned the kernel's `enable_uring` on).
    Uring,
}

impl Via {
    /// Asserts that a server's log shows it served over this transport.
    fn check(self, what: &str, log: &str) {
        if self == Via::Uring {
            let s = cfs_testkit::mounts::fuse_stats(log);
            assert_eq!(s["transport"], "uring", "{what}: {log}");
            assert_ne!(
                s["uring_requests"], "0",
                "{what}: nothing came over io_uring: {log}"
            );
        }
    }
}

pub(crate) fn round(seed: u64, size: usize, userns: &Result<As, String>, via: Via) {
    let _reproduce = Reproduce { seed, size };
    let mut laps = Laps {
        last: Instant::now(),
        done: Vec::new(),
    };
    let t = tempfile::tempdir().unwrap();
    let _tmpfs = Tmpfs::new(t.path());
    // Only root reaches the source and the mounts made as root.
    let private = t.path().join("root");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let src = private.join("src");
    let mut gen = Gen::new(seed, &src, &private);
    gen.generate(size);
    gen.set_metadata();
    let want = expected_from_source(walk(&src));
    laps.lap("generated");
    let built = build_round(&t.path().join("shared"), &src, &want);
    laps.lap("built");
    let (kernel, userns_image) = kernel_leg(&built, &private, &want);
    laps.lap("kernel");
    standalone_leg(&built, &private, &kernel, via);
    laps.lap("standalone");
    match userns {
        Ok(who) => {
            let home = t.path().join("user");
            fuse_overlay_leg(*who, &home, &built, &kernel, &userns_image, via);
            laps.lap("fuse+overlay");
        }
        Err(why) => report_skip(&format!("the fuse+overlay leg: {why}")),
    }
    let with = |prefix: &str| {
        want.values()
            .filter(|e| {
                e.xattrs
                    .keys()
                    .any(|k| k.as_bytes().starts_with(prefix.as_bytes()))
            })
            .count()
    };
    eprintln!(
        "round {seed:#x}: {}; xattrs on {} paths (ACLs on {}, trusted.overlay.* on {}); {}",
        gen.summary(),
        want.values().filter(|e| !e.xattrs.is_empty()).count(),
        with("system.posix_acl"),
        with("trusted.overlay."),
        laps.done.join(", ")
    );
}

/// Builds the source into `dir` (image and objects, readable by the test
/// user), checks the image read back, and works out the rebuild flags.
fn build_round(dir: &Path, src: &Path, want: &BTreeMap<PathBuf, Entry>) -> Built {
    std::fs::create_dir(dir).unwrap();
    let (image, objects, _) = build(dir, src);
    ok(std::process::Command::new("chmod")
        .args([os("-R"), os("a+rX"), dir.as_os_str()])
        .output()
        .unwrap());
    // The image as the reader sees it (not through `cfs dump`: the C
    // dumpfile format caps an inode's xattrs at 32 KiB, which one generated
    // file exceeds; the dump's own round trip is the fuzz targets' job).
    let read = cfs_format::reader::Image::open(std::fs::read(&image).unwrap()).unwrap();
    assert_same(
        "the image (read back) vs source",
        want,
        &expected_from_tree(&read.to_tree().unwrap(), &objects),
    );
    // A whiteout makes the writer pick format version 1; a mount shows it as
    // an escaped whiteout (an empty file with xattrs), which needs no
    // version 1, so the rebuild asks for it.
    let version = read.composefs_version().unwrap();
    let mut rebuild_flags = vec![OsString::from("--hardlinks")];
    if version == 1 {
        rebuild_flags.push("--min-version=1".into());
    }
    Built {
        image,
        objects,
        version,
        rebuild_flags,
    }
}

/// Mounts in the kernel, walks, rebuilds; returns the walk and, written next
/// to it, the image a fuse+overlay mount's rebuild must give.
fn kernel_leg(
    built: &Built,
    dir: &Path,
    want: &BTreeMap<PathBuf, Entry>,
) -> (BTreeMap<PathBuf, Entry>, PathBuf) {
    let mnt = dir.join("kernel");
    std::fs::create_dir(&mnt).unwrap();
    let _guard = mount(
        &[
            os("--fuse=no"),
            os("--basedir"),
            built.objects.as_os_str(),
            built.image.as_os_str(),
            mnt.as_os_str(),
        ],
        &mnt,
    )
    .unwrap();
    let kernel = walk_bounded(&mnt, WALK_LIMIT);
    assert_same("kernel mount vs source", want, &kernel);
    rebuild_and_compare("kernel", &mnt, dir, built);
    let userns_image = dir.join("userns.cfs");
    std::fs::write(&userns_image, image_as_seen_in_userns(&mnt, built.version)).unwrap();
    (kernel, userns_image)
}

/// Mounts with `cfs fuse-serve`, walks, rebuilds.
fn standalone_leg(built: &Built, dir: &Path, kernel: &BTreeMap<PathBuf, Entry>, via: Via) {
    let mut args = vec!["--basedir", built.objects.to_str().unwrap()];
    if via == Via::Uring {
        args.extend(["--fuse-transport", "uring"]);
    }
    let fuse = FuseMount::new(&cfs(), &built.image, &args).unwrap();
    let standalone = walk_bounded(fuse.path(), WALK_LIMIT);
    assert_same("standalone FUSE vs kernel mount", kernel, &standalone);
    rebuild_and_compare("standalone", fuse.path(), dir, built);
    let log = fuse.finish();
    assert!(
        !log.contains("panicked"),
        "the FUSE server panicked:\n{log}"
    );
    via.check("standalone", &log);
}

/// As the test user in a user namespace: mounts (auto must pick
/// fuse+overlay), walks with [`walk_in_namespace`], rebuilds, unmounts; the
/// walk and image are checked here.
fn fuse_overlay_leg(
    who: As,
    home: &Path,
    built: &Built,
    kernel: &BTreeMap<PathBuf, Entry>,
    userns_image: &Path,
    via: Via,
) {
    std::fs::create_dir(home).unwrap();
    ok(std::process::Command::new("chown")
        .args([os(TEST_USER), home.as_os_str()])
        .output()
        .unwrap());
    let flags: Vec<&str> = built
        .rebuild_flags
        .iter()
        .map(|f| f.to_str().unwrap())
        .collect();
    let script = format!(
        r#"mkdir m
        trap '"$CFS" unmount m 2>/dev/null || true' EXIT
        "$CFS" mount --explain --basedir "$OBJECTS" "$IMAGE" m
        CFS_DIFF_WALK_ROOT=m CFS_DIFF_WALK_OUT=walk \
            "$WALKER" --ignored --exact differential::walk_in_namespace --test-threads=1 >&2
        "$CFS" mkfs {} --digest-store objects m rebuilt.cfs
        "$CFS" unmount m"#,
        flags.join(" ")
    );
    let walker = std::env::current_exe().unwrap();
    let tag = Tag::new();
    let log = home.join("server.log");
    let mut env = vec![
        ("IMAGE", built.image.as_os_str()),
        ("OBJECTS", built.objects.as_os_str()),
        ("WALKER", walker.as_os_str()),
    ];
    if via == Via::Uring {
        env.extend([
            ("CFS_FUSE_TRANSPORT", os("uring")),
            ("CFS_FUSE_STATS", os("1")),
            ("CFS_SERVER_LOG", log.as_os_str()),
        ]);
    }
    let out = Script {
        cfs: &cfs(),
        who,
        dir: home,
        env: &env,
        limit: Duration::from_secs(300),
        tag: Some(&tag),
    }
    .run(&script);
    tag.assert_none_left(Duration::from_secs(5));
    assert!(
        out.status.success(),
        "fuse+overlay leg failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("mode: fuse+overlay\n"), "{said}");
    let got = decode_walk(&std::fs::read_to_string(home.join("walk")).unwrap());
    assert_same(
        "fuse+overlay vs kernel mount (as a user namespace sees it)",
        &as_text(&as_seen_in_userns(kernel)),
        &got,
    );
    assert_same_image(
        "fuse+overlay: cfs mkfs of the mount",
        userns_image,
        &home.join("rebuilt.cfs"),
    );
    assert_eq!(
        objects_in(&home.join("objects")),
        objects_in(&built.objects),
        "fuse+overlay: cfs mkfs of the mount stored other objects"
    );
    if via == Via::Uring {
        // The server writes its stats as it exits, after the unmount.
        let deadline = Instant::now() + Duration::from_secs(10);
        let text = loop {
            let t = std::fs::read_to_string(&log).unwrap_or_default();
            if t.contains("cfs-fuse stats:") || Instant::now() > deadline {
                break t;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        via.check("fuse+overlay", &text);
    }
}

#[test]
fn differential_mounts() {
    require!(need::rootless(&["setpriv", "unshare", "timeout"]));
    let seed = env_number("CFS_DIFF_SEED", DEFAULT_SEED);
    let size = env_number("CFS_DIFF_SIZE", DEFAULT_SIZE as u64) as usize;
    let rounds = env_number("CFS_DIFF_ROUNDS", DEFAULT_ROUNDS as u64) as usize;
    let userns = userns_ids();
    eprintln!(
        "differential: CFS_DIFF_SEED={seed:#x} CFS_DIFF_SIZE={size} CFS_DIFF_ROUNDS={rounds}"
    );
    for i in 0..rounds {
        let round_seed = if i == 0 {
            seed
        } else {
            splitmix64(seed ^ splitmix64(i as u64))
        };
        round(round_seed, size, &userns, Via::Default);
    }
}
