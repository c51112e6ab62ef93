//! The one mount and serve path, tried the way an attacker and an outside
//! test suite would (issue 15): every FUSE mode as root, as a plain user and
//! in a user namespace.
//! - `stale`: a server held up while its mount is replaced leaves the new
//!   mount at the same path alone;
//! - `race`: `cfs unmount` never follows a symlink a user flips;
//! - `changed`: `--digest` serves the checked bytes after an in-place
//!   rewrite; a served image truncated, rewritten or extended answers EIO
//!   and the server lives; a 1 TiB-apparent image costs the server little;
//! - `lifetime`: a mount over the image's own directory returns, a server
//!   alone in its namespace exits, a detached server keeps no stdio, `cfs
//!   mounts` escapes, standalone FUSE lists `trusted.*` only to the capable;
//! - `roundtrip`: upstream composefs's random FUSE round trip
//!   (`tests/test-random-fuse.sh` with `gendir`/`dumpdir`), remounting at
//!   one path.

mod changed;
mod gendir;
mod lifetime;
mod race;
mod roundtrip;
mod stale;

use crate::cfs;
use crate::support::build;
use cfs_testkit::os;
use cfs_testkit::users::{As, Script, Tag, TEST_USER};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// What these tests need besides root and the file systems.
const TOOLS: &[&str] = &["setpriv", "unshare", "fusermount3", "timeout", "getfattr"];

/// How long a test script may run.
const LIMIT: Duration = Duration::from_secs(90);

/// A world-readable tree, image and objects, a directory owned by the test
/// user for its files and mount points, and the tag of the processes the
/// test starts.
struct Setup {
    t: tempfile::TempDir,
    image: PathBuf,
    objects: PathBuf,
    digest: String,
    home: PathBuf,
    tag: Tag,
}

/// A small tree: inline and external files, a symlink, user xattrs, and
/// `inline` holding `inline` (so that two trees differ by it alone).
fn make_tree(src: &Path, inline: &str) {
    std::fs::create_dir_all(src.join("dir/sub")).unwrap();
    std::fs::write(src.join("inline"), inline).unwrap();
    let big: Vec<u8> = (0..200_003u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8)
        .collect();
    std::fs::write(src.join("dir/external"), big).unwrap();
    std::fs::write(src.join("dir/sub/small"), b"small\n").unwrap();
    std::os::unix::fs::symlink("../inline", src.join("dir/link")).unwrap();
    cfs_testkit::walk::set_xattr(&src.join("inline"), "user.note", b"hello");
}

/// The tree of [`make_tree`] built into an image, set up for every user.
fn setup() -> Setup {
    setup_with(|src| make_tree(src, "inline A\n"))
}

/// A tree made by `make` built into an image, set up for every user.
fn setup_with(make: impl FnOnce(&Path)) -> Setup {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make(&src);
    let (image, objects, digest) = build(t.path(), &src);
    let home = t.path().join("user");
    std::fs::create_dir(&home).unwrap();
    chmod_world_readable(t.path());
    cfs_testkit::command::run_ok(
        std::process::Command::new("chown").args([os(TEST_USER), home.as_os_str()]),
    );
    Setup {
        t,
        image,
        objects,
        digest,
        home,
        tag: Tag::new(),
    }
}

fn chmod_world_readable(dir: &Path) {
    cfs_testkit::command::run_ok(std::process::Command::new("chmod").args([
        os("-R"),
        os("a+rX"),
        dir.as_os_str(),
    ]));
}

/// Runs `script` under `sh -eu` as `who`, in the test user's directory,
/// bounded by [`LIMIT`]. `$CFS`, `$IMAGE`, `$OBJECTS`, `$DIGEST` are set,
/// and `list DIR` prints what a mount shows (types, modes, sizes, link
/// targets, contents, user xattrs).
fn run(who: As, s: &Setup, script: &str) -> Output {
    Script {
        cfs: &cfs(),
        who,
        dir: &s.home,
        env: &[
            ("IMAGE", s.image.as_os_str()),
            ("OBJECTS", s.objects.as_os_str()),
            ("DIGEST", os(&s.digest)),
        ],
        limit: LIMIT,
        tag: Some(&s.tag),
    }
    .run(&format!("{LIST}\n{script}"))
}

/// [`run`], failing the test unless the script succeeds; its stdout.
fn run_ok(who: As, s: &Setup, script: &str) -> String {
    cfs_testkit::command::script_ok(who, script, run(who, s, script))
}

/// `list DIR`: what a mount shows, the same for every mode.
const LIST: &str = r#"
list() (
    cd "$1"
    find . ! -type d -printf '%p %y %m %s %l\n' | sort
    find . -type f -print0 | sort -z | xargs -0 -r sha256sum
    find . | sort | while read -r p; do getfattr -h -d -m '^user\.' -- "$p" 2>/dev/null || true; done
)
"#;

/// The ways to mount a FUSE mode, as `(who, what the script runs to mount
/// IMAGE on MNT, what unmounts it "from outside", without the server (not
/// `umount(8)`, which asks the file system for its `statfs`), the mode's
/// name)`:
/// standalone FUSE as root (`fsopen`) and as a plain user (`fusermount3`),
/// fuse+overlay as root and in a user namespace.
const FUSE_MODES: &[(As, &str, &str, &str)] = &[
    (
        As::Root,
        r#"$CFS mount --fuse=standalone --basedir "$OBJECTS""#,
        "$CFS unmount",
        "root standalone",
    ),
    (
        As::Root,
        r#"$CFS mount --fuse=yes --basedir "$OBJECTS""#,
        "$CFS unmount",
        "root fuse+overlay",
    ),
    (
        As::User,
        r#"$CFS mount --basedir "$OBJECTS""#,
        "fusermount3 -u",
        "user standalone",
    ),
    (
        As::UserNs,
        r#"$CFS mount --basedir "$OBJECTS""#,
        "$CFS unmount",
        "user namespace fuse+overlay",
    ),
];

/// Drops the kernel's page, dentry and inode caches.
fn drop_caches() {
    std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
}
