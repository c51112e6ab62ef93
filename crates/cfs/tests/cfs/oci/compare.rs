//! Comparing what `cfs oci mount` shows with `umoci unpack` of the same
//! image: as root (kernel mount, every attribute but times and link counts)
//! and as the test user in a user namespace (fuse+overlay, a listing without
//! owners, which the namespace maps).

use crate::cfs;
use crate::support::in_repo;
use cfs_testkit::mounts::Mounted;
use cfs_testkit::users::{As, Script, Tag};
use cfs_testkit::walk::{walk, Entry};
use cfs_testkit::{need, ok, os, report_skip};
use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A walk as the comparison with `umoci unpack` sees it: times and link
/// counts left out (an unpack sets its own), `user.*` xattrs only (the
/// others are the machine's, not the image's).
fn seen(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut w = walk(root);
    for e in w.values_mut() {
        e.mtime = (0, 0);
        e.nlink = 0;
        e.xattrs.retain(|k, _| k.as_bytes().starts_with(b"user."));
    }
    w
}

fn assert_same_tree(reference: &Path, mounted: &Path) {
    cfs_testkit::walk::assert_same("mount vs umoci unpack", &seen(reference), &seen(mounted));
}

/// Mounts `cfs oci mount NAME` and compares with `umoci unpack` of `image`;
/// returns the unpacked rootfs (None when skipped).
pub fn compare_with_umoci(repo: &Path, name: &str, image: &str, work: &Path) -> Option<PathBuf> {
    if let Some(why) = need::kernel_mounts().or_else(|| need::tools(&["umoci"])) {
        report_skip(&format!("comparing the mounted tree with umoci: {why}"));
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
    ok(in_repo(repo, &[&"oci", &"mount", &name, &mnt]));
    let _guard = Mounted::new(&cfs(), &mnt);
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

/// As the plain test user inside `unshare -Urm`, as a rootless container
/// engine runs: `cfs oci mount NAME` (auto picks fuse+overlay there) gives the
/// same tree as `rootfs`, contents included.
pub fn compare_rootless(repo: &Path, name: &str, rootfs: &Path, work: &Path) {
    if let Some(why) = need::rootless(&["setpriv", "unshare", "fusermount3", "timeout"]) {
        report_skip(&format!("the rootless mount: {why}"));
        return;
    }
    // The reference listing first: making the work dir readable below changes modes in it.
    let want = Command::new("sh")
        .args(["-c", LISTING, "sh"])
        .arg(rootfs)
        .output()
        .unwrap();
    assert!(want.status.success());
    cfs_testkit::command::run_ok(Command::new("chmod").arg("-R").arg("a+rX").arg(work));
    let home = work.join("rootless-home");
    std::fs::create_dir_all(&home).unwrap();
    cfs_testkit::command::run_ok(
        Command::new("chown").args([os(cfs_testkit::users::TEST_USER), home.as_os_str()]),
    );
    // The user's own copy: root's repository is unmapped in a user
    // namespace, so not one its root may use.
    let user_repo = home.join("repo");
    cfs_testkit::command::run_ok(Command::new("cp").arg("-a").arg(repo).arg(&user_repo));
    cfs_testkit::command::run_ok(
        Command::new("chown")
            .arg("-R")
            .arg(cfs_testkit::users::TEST_USER)
            .arg(&user_repo),
    );
    let script = format!(
        "mkdir -p \"$HOME_DIR/m\"\n\
         \"$CFS\" --repo \"$REPO\" oci mount --explain '{name}' \"$HOME_DIR/m\" >&2\n\
         sh -c '{}' sh \"$HOME_DIR/m\"\n\
         \"$CFS\" unmount \"$HOME_DIR/m\"",
        LISTING.replace('\'', "'\\''")
    );
    let tag = Tag::new();
    let got = Script {
        cfs: &cfs(),
        who: As::UserNs,
        dir: &home,
        env: &[
            ("REPO", user_repo.as_os_str()),
            ("HOME_DIR", home.as_os_str()),
        ],
        limit: Duration::from_secs(120),
        tag: Some(&tag),
    }
    .run(&script);
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
    tag.assert_none_left(Duration::from_secs(5));
}
