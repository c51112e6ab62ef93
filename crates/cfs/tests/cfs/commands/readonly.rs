//! A repository that can't be written (a read-only mount, a directory its
//! user may not write) still serves every command that only reads, and
//! `cfs info` writes nothing even where it could.

use super::{Scratch, TOOLS};
use crate::cfs;
use cfs_testkit::users::As;
use cfs_testkit::{need, os, require};
use std::time::Duration;

/// Every read-only command on `r` (which must not be writable), then a
/// mount by name: prints `ok` per command, the mount's file, and whether the
/// mount said it could not be recorded.
const CHECK: &str = r#"
if touch r/probe 2>/dev/null; then echo "r is writable"; exit 1; fi
for c in images info fsck "gc --dry-run" "image-objects doc" "dump doc" "ls doc" "objects doc"; do
    if $CFS --repo r $c >/dev/null 2>err; then echo "ok $c"; else echo "FAILED $c: $(cat err)"; fi
done
mkdir -p m
$CFS --repo r mount doc m 2>mount.err
cat m/small
$CFS unmount m
grep -c "could not record the mount" mount.err
"#;

const WANT: &str = "ok images\nok info\nok fsck\nok gc --dry-run\nok image-objects doc\n\
                    ok dump doc\nok ls doc\nok objects doc\ninline\n1\n";

#[test]
fn read_only_repositories_serve_readers() {
    require!(need::rootless(TOOLS));
    let s = Scratch::new();
    // A repository without a lock file yet: none can be made either.
    let setup = "$CFS --repo r create-image src doc >/dev/null; rm -f r/lock\n";
    // The plain user: a directory it may not write.
    let out = s.run_ok(
        As::User,
        &[],
        &format!("{setup}chmod -R a-w r\n{CHECK}\nchmod -R u+w r; rm -rf r m"),
    );
    assert_eq!(out, WANT, "user");
    // Root of a user namespace may write its user's files whatever their
    // mode: a read-only bind mount, in its own mount namespace.
    // The FUSE server of the mount made there exits a moment after `cfs
    // unmount` returns (a few ms), holding files of r until then.
    let ro = "mount --bind r r; mount -o remount,ro,bind r\n";
    let unbind = "for _ in $(seq 100); do umount r 2>/dev/null && break; sleep 0.05; done";
    let out = s.run_ok(
        As::UserNs,
        &[],
        &format!("{setup}{ro}{CHECK}\n{unbind}; rm -rf r m"),
    );
    assert_eq!(out, WANT, "user namespace");
    // Root (kernel mount) the same way, in a private mount namespace.
    let out = s.run_ok(
        As::Root,
        &[],
        &format!(
            "{setup}unshare -m --propagation private sh -eu -c '{ro}{}'",
            CHECK.replace('\'', "'\\''")
        ),
    );
    assert_eq!(out, WANT, "root");
    s.tag.assert_none_left(Duration::from_secs(5));
}

#[test]
fn info_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("big"), b"x".repeat(10_000)).unwrap();
    let repo = t.path().join("repo");
    let r = cfs().repo(&repo);
    // An empty repository: fs-verity support is not known yet.
    r.ok(["init"]);
    let state = || {
        let o = std::process::Command::new("find")
            .arg(&repo)
            .args(["-printf", "%p %s %T@ %C@\n"])
            .output()
            .unwrap();
        String::from_utf8(o.stdout).unwrap()
    };
    let before = state();
    let info = r.ok(["info"]);
    assert!(
        info.contains("fs-verity: not known until an object is stored"),
        "{info}"
    );
    assert_eq!(state(), before, "cfs info changed the repository");
    r.ok([os("create-image"), src.as_os_str(), os("img")]);
    let before = state();
    let info = r.ok(["info"]);
    assert!(info.contains("objects: 2 "), "{info}");
    assert!(
        info.contains("fs-verity: enabled on objects")
            || info.contains("fs-verity: objects have none"),
        "{info}"
    );
    assert_eq!(state(), before, "cfs info changed the repository");
}
