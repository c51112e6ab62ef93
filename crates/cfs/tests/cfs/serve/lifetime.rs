//! How long a server lives, what it holds, and what it shows.

use super::{run_ok, setup, Setup};
use cfs_testkit::mounts::bounded;
use cfs_testkit::users::As;
use cfs_testkit::{need, os, require};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A plain user mounts an image, and its objects, that live in the very
/// directory the mount covers: the server was handed them open before the
/// mount appeared, so the mount returns within seconds (it used to hang for
/// good, the server waiting on its own mount). In a user namespace too.
#[test]
fn a_mount_over_the_images_own_directory_returns() {
    require!(need::rootless(super::TOOLS));
    let s = setup();
    for (who, fuse) in [(As::User, "auto"), (As::UserNs, "auto")] {
        for digest in ["", r#"--digest "$DIGEST""#] {
            let start = Instant::now();
            let out = run_ok(
                who,
                &s,
                &format!(
                    r#"
                    d=$(mktemp -d "$PWD/own.XXXXXX"); cd "$d"
                    cp "$IMAGE" img; cp -r "$OBJECTS" objects
                    timeout 20 $CFS mount --fuse={fuse} {digest} --basedir "$d/objects" "$d/img" "$d"
                    cat "$d/inline"
                    $CFS unmount "$d"
                    "#
                ),
            );
            assert_eq!(out, "inline A\n", "{who:?} {digest}");
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{who:?}: took {:?}",
                start.elapsed()
            );
        }
    }
    s.tag.assert_none_left(Duration::from_secs(10));
}

/// A fuse+overlay server started in a mount namespace that then loses every
/// other process (`unshare -Urm sh -c 'cfs mount …'`, and root's `unshare
/// -m`) exits, ending the namespace and its mount with it, instead of
/// keeping the namespace alive for ever.
#[test]
fn a_server_left_alone_in_its_mount_namespace_exits() {
    require!(need::rootless(super::TOOLS));
    let s = setup();
    run_ok(
        As::UserNs,
        &s,
        r#"mkdir ns-user; $CFS mount --basedir "$OBJECTS" "$IMAGE" ns-user; cat ns-user/inline"#,
    );
    s.tag.assert_none_left(Duration::from_secs(10));
    run_ok(
        As::Root,
        &s,
        r#"mkdir ns-root
           unshare -m --propagation private sh -c \
             '$CFS mount --fuse=yes --basedir "$OBJECTS" "$IMAGE" ns-root; cat ns-root/inline'"#,
    );
    s.tag.assert_none_left(Duration::from_secs(10));
    assert!(cfs_testkit::mounts::mounted_under(&s.home).is_empty());
}

/// A detached server holds none of its caller's fds, stdio or other:
/// reading `cfs mount`'s (and `cfs fuse-serve`'s) output to its end returns
/// at once, not at unmount, also when the caller had the pipes as fds 7 and
/// 8 as well (a server used to keep every fd it inherited without
/// `FD_CLOEXEC`: a pipe's reader waited, a `flock` stayed held).
#[test]
fn a_detached_server_keeps_no_fd_of_its_caller() {
    require!(need::rootless(super::TOOLS));
    let s = setup();
    for (i, args) in [
        vec!["mount", "--fuse=yes", "--basedir"],
        vec!["mount", "--fuse=standalone", "--basedir"],
        vec!["fuse-serve", "--basedir"],
    ]
    .into_iter()
    .enumerate()
    {
        let mnt = s.home.join(format!("stdio{i}"));
        std::fs::create_dir(&mnt).unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exec \"$@\" 7>&1 8>&2", "sh"])
            .arg(crate::cfs().exe())
            .args(args.iter().map(os))
            .args([s.objects.as_os_str(), s.image.as_os_str(), mnt.as_os_str()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        s.tag.mark(&mut cmd);
        let _m = cfs_testkit::mounts::Mounted::new(&crate::cfs(), &mnt);
        let out = bounded(
            Duration::from_secs(20),
            "reading cfs's output to its end",
            move || cmd.output().unwrap(),
        );
        assert!(
            out.status.success(),
            "{args:?}: {}",
            cfs_testkit::stderr(&out)
        );
        assert!(std::fs::read(mnt.join("inline")).is_ok(), "{args:?}");
    }
}

/// `cfs mounts` prints one line per mount whatever the mount point's name
/// (a newline in it can't forge a line), escaped as mountinfo does, and
/// `--json` gives the exact path.
#[test]
fn cfs_mounts_escapes_mount_points_and_speaks_json() {
    require!(need::rootless(super::TOOLS));
    let s = setup();
    let mnt = s.home.join("a b\nfuse\t/x");
    std::fs::create_dir_all(&mnt).unwrap();
    let _m = crate::support::mount(
        &[
            os("--fuse=standalone"),
            os("--basedir"),
            s.objects.as_os_str(),
            s.image.as_os_str(),
            mnt.as_os_str(),
        ],
        &mnt,
    )
    .unwrap();
    let listed = crate::cfs().ok(["mounts"]);
    let escaped = format!("{}/a\\040b\\012fuse\\011/x", s.home.display());
    assert!(
        listed.lines().any(|l| l == format!("fuse\t{escaped}")),
        "{listed}"
    );
    for line in listed.lines() {
        let (mode, _) = line.split_once('\t').unwrap_or_else(|| panic!("{line:?}"));
        assert!(
            // Every mode: other users' mounts are listed too.
            ["kernel", "fuse", "fuse+overlay", "service"].contains(&mode),
            "{line:?}"
        );
    }
    let json = crate::cfs().ok(["mounts", "--json"]);
    let all: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let ours: Vec<&serde_json::Value> = all
        .iter()
        .filter(|v| v["mountpoint"] == mnt.to_str().unwrap())
        .collect();
    assert_eq!(ours.len(), 1, "{json}");
    assert_eq!(ours[0]["mode"], "fuse");
    assert_eq!(ours[0]["mountpoint_escaped"], escaped);
    assert!(ours[0]["mount_id"].as_u64().is_some());
}

/// Standalone FUSE lists `trusted.*` names only to callers with
/// `CAP_SYS_ADMIN`, as the kernel mount does: root sees them, the plain
/// user (on a root mount, which allows others) doesn't, on either mount.
#[test]
fn standalone_lists_trusted_names_only_to_the_privileged() {
    require!(need::rootless(super::TOOLS));
    let s = super::setup_with(|src| {
        super::make_tree(src, "inline A\n");
        cfs_testkit::walk::set_xattr(&src.join("dir"), "trusted.cfs-test", b"x");
        cfs_testkit::walk::set_xattr(&src.join("inline"), "trusted.overlay.mine", b"y");
    });
    let names = |who: As, s: &Setup, fuse: &str| {
        run_ok(
            who,
            s,
            &format!(
                r#"getfattr -h -m - --absolute-names ../m-{fuse}/dir ../m-{fuse}/inline 2>/dev/null \
                     | grep -v '^#' | grep . | sort"#
            ),
        )
    };
    let mut seen = Vec::new();
    for fuse in ["no", "standalone"] {
        let mnt = s.t.path().join(format!("m-{fuse}"));
        std::fs::create_dir(&mnt).unwrap();
        let _m = crate::support::mount(
            &[
                os(&format!("--fuse={fuse}")),
                os("--basedir"),
                s.objects.as_os_str(),
                s.image.as_os_str(),
                mnt.as_os_str(),
            ],
            &mnt,
        )
        .unwrap();
        let (root, user) = (names(As::Root, &s, fuse), names(As::User, &s, fuse));
        assert!(root.contains("trusted.cfs-test"), "{fuse}: {root}");
        assert!(root.contains("trusted.overlay.mine"), "{fuse}: {root}");
        assert!(!user.contains("trusted."), "{fuse}: the user sees {user}");
        assert!(user.contains("user.note"), "{fuse}: {user}");
        seen.push((root, user));
    }
    assert_eq!(
        seen[0], seen[1],
        "kernel and standalone FUSE list differently"
    );
}
