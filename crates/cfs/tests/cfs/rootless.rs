//! End-to-end mounts in every mode, by real users in real namespaces:
//! root (auto → kernel, `--fuse=yes` → fuse+overlay), a plain user (auto →
//! standalone FUSE through `fusermount3`), and that user as root of a user
//! namespace (`unshare -Urm`: auto → fuse+overlay, reads served by the
//! kernel, a writable mount). Also: a killed server, and bad input.
//!
//! Needs root to set up: it makes `/dev/fuse` usable by everyone (0666, as
//! distributions ship it) and creates the user `cfs-test` (as `.ci/run`
//! does). Skipped with a message when not root or without `setpriv`,
//! `unshare`, `fusermount3` or the filesystems. Every command runs under
//! `timeout`, so a hung server fails a test instead of hanging CI.

use crate::cfs;
use crate::support::{build, expected_from_dump};
use cfs_testkit::mounts::unmounted_within;
use cfs_testkit::users::{As, Script, Tag, TEST_USER};
use cfs_testkit::walk::{diff, walk};
use cfs_testkit::{need, ok, os, require, stderr};

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// What these tests need besides root and the file systems.
const TOOLS: &[&str] = &["setpriv", "unshare", "fusermount3", "timeout", "getfattr"];

/// How long a test script may run.
const SCRIPT_LIMIT: Duration = Duration::from_secs(60);

/// A tree without anything a mode shows differently by design (no
/// whiteouts, no `trusted.overlay.*`), all owned by root: inline and
/// external files, a hard link, symlinks, a fifo, user xattrs.
fn make_tree(src: &Path) {
    use std::fs;
    fs::create_dir_all(src.join("dir/sub")).unwrap();
    fs::write(src.join("inline"), b"small enough to live in the image\n").unwrap();
    fs::write(src.join("dir/sub/inline2"), b"also small\n").unwrap();
    for (i, name) in ["ext1", "dir/ext2", "dir/sub/ext3"].iter().enumerate() {
        let data: Vec<u8> = (0..300_007u32 + i as u32)
            .map(|j| (j.wrapping_mul(2_654_435_761 + i as u32) >> 11) as u8)
            .collect();
        fs::write(src.join(name), data).unwrap();
    }
    fs::hard_link(src.join("ext1"), src.join("dir/hardlink")).unwrap();
    std::os::unix::fs::symlink("../inline", src.join("dir/rel-link")).unwrap();
    std::os::unix::fs::symlink("/absolute/target", src.join("abs-link")).unwrap();
    let fifo = src.join("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    for (p, k, v) in [
        ("inline", "user.comment", &b"hello"[..]),
        ("ext1", "user.binary", &[0, 1, 2, 255][..]),
        ("dir", "user.dir", &b"x"[..]),
    ] {
        rustix::fs::lsetxattr(src.join(p), k, v, rustix::fs::XattrFlags::empty()).unwrap();
    }
}

/// The external files (contents in the object store).
const EXTERNAL: &[&str] = &["ext1", "dir/ext2", "dir/sub/ext3"];

/// A world-readable tree, image and objects, a directory owned by the
/// test user for its mount points, and the tag of the processes the test
/// starts.
struct Setup {
    _t: tempfile::TempDir,
    image: PathBuf,
    objects: PathBuf,
    home: PathBuf,
    tag: Tag,
}

fn setup_image() -> Setup {
    setup_with(make_tree)
}

/// [`setup_image`] of the tree `make` writes into the directory it is given.
fn setup_with(make: impl FnOnce(&Path)) -> Setup {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make(&src);
    let (image, objects, _) = build(t.path(), &src);
    let home = t.path().join("user");
    std::fs::create_dir(&home).unwrap();
    cfs_testkit::command::run_ok(std::process::Command::new("chmod").args([
        os("-R"),
        os("a+rX"),
        t.path().as_os_str(),
    ]));
    cfs_testkit::command::run_ok(
        std::process::Command::new("chown").args([os(TEST_USER), home.as_os_str()]),
    );
    Setup {
        _t: t,
        image,
        objects,
        home,
        tag: Tag::new(),
    }
}

/// Runs `script` (after the [`LIST`] function) under `sh -eu` with a time
/// limit: as root, as the test user, or as the test user in a new user and
/// mount namespace. `$CFS`, `$IMAGE`, `$OBJECTS` and `$HOME_DIR` are set.
fn run(who: As, s: &Setup, script: &str) -> Output {
    Script {
        cfs: &cfs(),
        who,
        dir: &s.home,
        env: &[
            ("IMAGE", s.image.as_os_str()),
            ("OBJECTS", s.objects.as_os_str()),
            ("HOME_DIR", s.home.as_os_str()),
        ],
        limit: SCRIPT_LIMIT,
        tag: Some(&s.tag),
    }
    .run(&format!("{LIST}\n{script}"))
}

fn run_ok(who: As, s: &Setup, script: &str) -> String {
    cfs_testkit::command::script_ok(who, script, run(who, s, script))
}

/// `list DIR`: a listing of a tree, the same for every mode that shows it
/// alike: types, modes, owners, link counts, sizes, mtimes, symlink targets,
/// sha256 of every regular file, user xattrs. Directory sizes and link
/// counts are layout, not content, and left out.
const LIST: &str = r#"
list() (
    cd "$1"
    find . -type d -printf '%p d %m %U %G %T@\n' | sort
    find . ! -type d -printf '%p %y %m %U %G %n %s %T@ %l\n' | sort
    find . -type f -print0 | sort -z | xargs -0 -r sha256sum
    find . | sort | while read -r p; do getfattr -h -d -m '^user\.' -- "$p" 2>/dev/null || true; done
)
"#;

/// The kernel mount's listing, which the `mount` tests and the root test
/// here hold equal to the image's dump: the reference for the other users.
fn kernel_listing(s: &Setup) -> String {
    run_ok(
        As::Root,
        s,
        r#"mkdir -p k; $CFS mount --fuse=no --basedir "$OBJECTS" "$IMAGE" k
           list k; $CFS unmount k"#,
    )
}

#[test]
fn root_auto_is_kernel_and_fuse_yes_is_fuse_overlay() {
    require!(need::rootless(TOOLS));
    let s = setup_image();
    let want = expected_from_dump(&s.image, &s.objects);
    let mnt = s.home.join("root-mnt");
    std::fs::create_dir(&mnt).unwrap();
    for (fuse, mode) in [("auto", "kernel"), ("yes", "fuse+overlay")] {
        let out = ok(s
            .tag
            .mark(&mut cfs().command([
                os("mount"),
                os("--explain"),
                os(&format!("--fuse={fuse}")),
                os("--basedir"),
                s.objects.as_os_str(),
                s.image.as_os_str(),
                mnt.as_os_str(),
            ]))
            .output()
            .unwrap());
        assert!(out.starts_with(&format!("mode: {mode}\n")), "{out}");
        let listed = cfs().ok(["mounts"]);
        assert!(
            listed.contains(&format!("{mode}\t{}", mnt.display())),
            "{listed}"
        );
        if mode == "fuse+overlay" {
            // The server carries the test's tag (how the tests tell their
            // own processes from everyone else's).
            assert!(
                !s.tag.processes().is_empty(),
                "no tagged server behind the fuse+overlay mount"
            );
        }
        let got = walk(&mnt);
        cfs().ok([os("unmount"), mnt.as_os_str()]);
        let d = diff(&want, &got);
        assert!(
            d.is_empty(),
            "{mode} differs from the dump:\n{}",
            d.join("\n")
        );
    }
    // No server is left once the fuse+overlay mount is gone.
    s.tag.assert_none_left(Duration::from_secs(5));
}

#[test]
fn plain_user_gets_standalone_fuse() {
    require!(need::rootless(TOOLS));
    let s = setup_image();
    let want = kernel_listing(&s);
    let out = run_ok(
        As::User,
        &s,
        r#"mkdir -p m
           $CFS mount --explain --basedir "$OBJECTS" "$IMAGE" m
           $CFS mounts
           echo ---
           list m
           $CFS unmount m
           echo unmounted"#,
    );
    let (head, rest) = out.split_once("---\n").unwrap();
    assert!(head.starts_with("mode: fuse\n"), "{head}");
    assert!(
        head.contains(&format!("fuse\t{}/m", s.home.display())),
        "{head}"
    );
    let listing = rest.strip_suffix("unmounted\n").unwrap();
    assert_eq!(
        listing, want,
        "standalone FUSE differs from the kernel mount"
    );

    // Without passthrough files open without a round trip: the first OPEN
    // is answered ENOSYS and the kernel sends no other (nor any RELEASE);
    // the server still reads, and checks, the objects.
    let log = s.home.join("server.log");
    let externals = EXTERNAL
        .iter()
        .map(|p| format!("m/{p}"))
        .collect::<Vec<_>>()
        .join(" ");
    run_ok(
        As::User,
        &s,
        &format!(
            r#"export CFS_FUSE_STATS=1 CFS_SERVER_LOG="$HOME_DIR/server.log"
               $CFS mount --basedir "$OBJECTS" "$IMAGE" m
               for i in 1 2 3; do cat m/inline m/dir/sub/inline2 {externals} > /dev/null; done
               $CFS unmount m"#
        ),
    );
    let stats = server_stats(&log);
    let n = |k: &str| {
        cfs_testkit::mounts::fuse_stats(&stats)[k]
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(n("open"), 1, "{stats}");
    assert!(n("read") >= EXTERNAL.len() as u64, "{stats}");
    s.tag.assert_none_left(Duration::from_secs(5));
}

/// The server's `cfs-fuse stats:` line from its log, waiting up to 5 s for
/// the server to end and write it.
fn server_stats(log: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.starts_with("cfs-fuse stats:")) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no stats from the server: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn user_namespace_gets_fuse_overlay_with_kernel_reads() {
    require!(need::rootless(TOOLS));
    let s = setup_image();
    let want = kernel_listing(&s);
    let out = run_ok(
        As::UserNs,
        &s,
        r#"mkdir -p m
           $CFS mount --explain --basedir "$OBJECTS" "$IMAGE" m
           $CFS mounts
           echo ---
           list m
           $CFS unmount m"#,
    );
    let (head, listing) = out.split_once("---\n").unwrap();
    assert!(head.starts_with("mode: fuse+overlay\n"), "{head}");
    assert!(head.contains("fuse+overlay\t"), "{head}");
    assert_eq!(listing, want, "fuse+overlay differs from the kernel mount");

    // Reads of external files are served by overlayfs from the object store:
    // the server counts no READ.
    let externals = EXTERNAL
        .iter()
        .map(|p| format!("m/{p}"))
        .collect::<Vec<_>>()
        .join(" ");
    let log = s.home.join("server.log");
    run_ok(
        As::UserNs,
        &s,
        &format!(
            r#"export CFS_FUSE_STATS=1 CFS_SERVER_LOG="$HOME_DIR/server.log"
               $CFS mount --basedir "$OBJECTS" "$IMAGE" m
               cat {externals} > /dev/null
               $CFS unmount m"#
        ),
    );
    let stats = server_stats(&log);
    assert!(stats.contains(" read=0 "), "{stats}");

    // Writable: changes land in the upper dir, the image and objects stay.
    let out = run_ok(
        As::UserNs,
        &s,
        r#"mkdir -p up work
           $CFS mount --upperdir up --workdir work --read-write --basedir "$OBJECTS" "$IMAGE" m
           echo new > m/newfile
           echo more >> m/inline
           rm m/ext1
           cat m/inline
           $CFS unmount m
           ls up | sort"#,
    );
    assert_eq!(
        out,
        "small enough to live in the image\nmore\next1\ninline\nnewfile\n"
    );
    assert!(std::fs::metadata(s.home.join("up/newfile")).is_ok());
    s.tag.assert_none_left(Duration::from_secs(5));
}

/// Files of an owner the user namespace doesn't map, which its root may
/// not read (`0700`, `0600`), as `/usr/share/polkit-1/rules.d` is in a
/// distribution's `/usr`: every mode shows them, with their modes and the
/// overflow owner, and refuses to list or read them, as the kernel would in
/// that namespace. fuse+overlay once failed their lookup (stat: EACCES),
/// because its FUSE lower checked the mounter's permission to read their
/// `user.overlay.*` xattrs.
#[test]
fn user_namespace_shows_files_its_root_may_not_read() {
    require!(need::rootless(TOOLS));
    let s = setup_with(|src| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(src.join("private")).unwrap();
        std::fs::write(src.join("private/inline"), b"small\n").unwrap();
        std::fs::write(src.join("private/external"), "x".repeat(100_000)).unwrap();
        std::fs::write(src.join("locked"), "y".repeat(100_000)).unwrap();
        std::fs::write(src.join("open"), b"anyone\n").unwrap();
        for (p, mode) in [("private", 0o700), ("locked", 0o600)] {
            std::fs::set_permissions(src.join(p), std::fs::Permissions::from_mode(mode)).unwrap();
        }
        for p in ["private", "private/inline", "private/external", "locked"] {
            std::os::unix::fs::lchown(src.join(p), Some(4242), Some(4242)).unwrap();
        }
    });
    let overflow = std::fs::read_to_string("/proc/sys/kernel/overflowuid").unwrap();
    let overflow = overflow.trim();
    let script = r#"mkdir -p m
        $CFS mount --explain --basedir "$OBJECTS" "$IMAGE" m > explained
        head -n 1 explained
        stat -c '%n %a %u' m/private m/locked m/open
        ls m/private 2>/dev/null && echo listed || echo "list refused"
        cat m/locked > /dev/null 2>&1 && echo read || echo "read refused"
        cat m/open
        $CFS unmount m"#;
    let shown = |mode: &str, owner: &str| {
        format!(
            "mode: {mode}\nm/private 700 {owner}\nm/locked 600 {owner}\nm/open 644 0\n\
             list refused\nread refused\nanyone\n"
        )
    };
    assert_eq!(
        run_ok(As::UserNs, &s, script),
        shown("fuse+overlay", overflow),
        "fuse+overlay in a user namespace"
    );
    assert_eq!(
        run_ok(As::User, &s, script),
        shown("fuse", "4242"),
        "standalone FUSE as the plain user"
    );
    s.tag.assert_none_left(Duration::from_secs(5));
}

/// One reader of the killed-server test: `cat`, `getfattr` (never cached by
/// the kernel) and `ls -l` over the tree until one fails, then the error.
/// `pass$i` tells that it got through the tree once.
const READER: &str = r#"
i=$1
while :; do
    for f in ext1 dir/ext2 dir/sub/ext3 inline dir/rel-link; do
        cat "m/$f" > /dev/null 2> "err$i" || break 2
        getfattr -h -d -m - "m/$f" > /dev/null 2> "err$i" || break 2
        ls -l "m/${f%/*}" > /dev/null 2> "err$i" || break 2
    done
    touch "pass$i"
done
echo "reader $i stopped: $(cat "err$i")"
"#;

/// The server SIGKILLed while four readers loop over the mount, in both
/// user modes (standalone through `fusermount3`, fuse+overlay in a user
/// namespace): each reader stops with ENOTCONN, ECONNABORTED or EIO (or
/// ECANCELED, over FUSE io_uring) within
/// 10 s, none hangs; then `cfs unmount` removes the mount and no process of
/// the user is left.
#[test]
fn killed_server_gives_errors_not_hangs_and_unmount_cleans_up() {
    require!(need::rootless(TOOLS));
    let s = setup_image();
    for who in [As::User, As::UserNs] {
        let out = run(
            who,
            &s,
            &format!(
                r#"rm -f pass* out* err*
               READER='{READER}'
               mkdir -p m
               $CFS mount --basedir "$OBJECTS" "$IMAGE" m
               for i in 1 2 3 4; do
                   (timeout -k 1 30 sh -c "$READER" sh $i; echo "reader $i exit $?") > out$i 2>&1 &
               done
               n=0
               until [ -e pass1 ] && [ -e pass2 ] && [ -e pass3 ] && [ -e pass4 ]; do
                   n=$((n+1)); if [ $n -gt 400 ]; then echo "readers made no progress"; break; fi
                   sleep 0.05
               done
               pkill -KILL -f "__serve .*$HOME_DIR/m"
               n=0
               while [ "$(cat out* | grep -c '^reader .* exit')" -lt 4 ]; do
                   n=$((n+1)); if [ $n -gt 100 ]; then echo "readers hung"; break; fi
                   sleep 0.1
               done
               cat out1 out2 out3 out4
               if timeout 10 getfattr -h -d m/dir > /dev/null 2> err; then echo "still served"; fi
               cat err
               $CFS unmount m
               $CFS mounts"#
            ),
        );
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        eprintln!("{who:?}:\n{text}");
        assert!(out.status.success(), "{who:?}: {text}");
        for bad in ["still served", "readers made no progress", "readers hung"] {
            assert!(!text.contains(bad), "{who:?}: {bad}: {text}");
        }
        for i in 1..=4 {
            let stopped = text
                .lines()
                .find(|l| l.starts_with(&format!("reader {i} stopped: ")))
                .unwrap_or_else(|| panic!("{who:?}: reader {i} did not stop: {text}"));
            assert!(
                [
                    "not connected",
                    "connection abort",
                    "Input/output error",
                    "Operation canceled",
                ]
                .iter()
                .any(|e| stopped.contains(e)),
                "{who:?}: {stopped}"
            );
            assert!(
                text.contains(&format!("reader {i} exit 0")),
                "{who:?}: {text}"
            );
        }
        assert!(
            text.contains("not connected"),
            "{who:?}: no ENOTCONN: {text}"
        );
        assert!(
            !text.contains(&format!("{}/m", s.home.display())),
            "{who:?}: {text}"
        );
    }
    s.tag.assert_none_left(Duration::from_secs(5));
}

#[test]
fn bad_input_fails_clearly() {
    require!(need::rootless(TOOLS));
    let s = setup_image();
    let cases: &[(As, &str, &str)] = &[
        (
            As::User,
            r#"mkdir -p m; $CFS --repo r init; $CFS --repo r mount nope m"#,
            "no image named \"nope\"",
        ),
        (
            As::User,
            r#"touch f; $CFS mount --basedir "$OBJECTS" "$IMAGE" f"#,
            "is not a directory",
        ),
        (
            As::User,
            r#"mkdir -p m; $CFS mount --basedir "$OBJECTS" "$IMAGE" m
               trap '$CFS unmount m' EXIT
               $CFS mount --basedir "$OBJECTS" "$IMAGE" m"#,
            "already has a filesystem mounted",
        ),
        (
            As::User,
            r#"mkdir -p m; PATH=/nonexistent $CFS mount --basedir "$OBJECTS" "$IMAGE" m"#,
            "install fuse3",
        ),
        (
            As::User,
            r#"mkdir -p m u w; $CFS mount --upperdir u --workdir w --read-write --basedir "$OBJECTS" "$IMAGE" m"#,
            "unshare -Urm",
        ),
        (
            As::User,
            r#"mkdir -p m; $CFS mount --fuse=no --basedir "$OBJECTS" "$IMAGE" m"#,
            "--fuse=auto",
        ),
    ];
    for (who, script, want) in cases {
        let out = run(*who, &s, script);
        let err = stderr(&out);
        assert!(!out.status.success(), "{script}: succeeded");
        assert!(err.contains(want), "{script}: {err}");
    }
    s.tag.assert_none_left(Duration::from_secs(5));
}

/// `--foreground` keeps the server attached and serving; SIGTERM to it (or to
/// a detached server) unmounts and ends it cleanly, leaving nothing mounted.
#[test]
fn foreground_and_sigterm_end_the_server_cleanly() {
    require!(need::rootless(TOOLS));
    let s = setup_image();
    let mnt = s.home.join("fg-mnt");
    std::fs::create_dir(&mnt).unwrap();
    let base = |foreground: bool| {
        let mut args = vec![os("mount"), os("--fuse=yes")];
        if foreground {
            args.push(os("--foreground"));
        }
        args.extend_from_slice(&[
            os("--basedir"),
            s.objects.as_os_str(),
            s.image.as_os_str(),
            mnt.as_os_str(),
        ]);
        args
    };

    // Attached: the mount answers while `cfs mount --foreground` runs.
    let mut fg = s.tag.mark(&mut cfs().command(base(true))).spawn().unwrap();
    let start = Instant::now();
    while std::fs::read(mnt.join("inline")).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the foreground mount never answered"
        );
        assert!(
            fg.try_wait().unwrap().is_none(),
            "cfs mount --foreground exited"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        fg.try_wait().unwrap().is_none(),
        "--foreground returned early"
    );
    let pid = rustix::process::Pid::from_child(&fg);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = fg.wait().unwrap();
    assert!(status.success(), "SIGTERM exit: {status}");
    assert!(
        unmounted_within(&mnt, Duration::from_secs(10)),
        "still mounted after SIGTERM"
    );

    // Detached: SIGTERM to the server process unmounts too.
    ok(s.tag
        .mark(&mut cfs().command(base(false)))
        .output()
        .unwrap());
    assert!(std::fs::read(mnt.join("inline")).is_ok());
    let o = std::process::Command::new("pkill")
        .args(["-TERM", "-f"])
        .arg(format!("__serve .*--mountpoint {}", mnt.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "no detached server found to signal");
    assert!(
        unmounted_within(&mnt, Duration::from_secs(10)),
        "still mounted after SIGTERM"
    );
    let listed = cfs().ok(["mounts"]);
    assert!(
        !listed.contains(&*mnt.to_string_lossy()),
        "cfs mounts still lists the mount: {listed}"
    );
    s.tag.assert_none_left(Duration::from_secs(5));
}
