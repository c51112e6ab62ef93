//! Live mounts are roots for gc: `rm` + `gc` while an image is mounted, in
//! every mode, as root and as the plain user, leaves every file readable;
//! after unmount the next gc frees the objects. A mount that vanished
//! without `cfs unmount` (its namespace died with its last process, its
//! server was killed and the mount detached with `umount`) stops pinning:
//! gc finds the recorded mount gone (`statmount(2)` answers ENOENT for its
//! mount id in its mount namespace) and deletes the pin. And gc racing
//! mount and unmount never loses an object a mount reads.

use crate::cfs;
use cfs_testkit::users::{As, Script, Tag, TEST_USER};
use cfs_testkit::{need, os, require, stderr};
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

const TOOLS: &[&str] = &["setpriv", "unshare", "fusermount3", "timeout", "diff"];

/// A directory the test user owns (repositories and mount points go there).
struct Home {
    _t: tempfile::TempDir,
    dir: PathBuf,
    tag: Tag,
}

fn home() -> Home {
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        t.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let dir = t.path().join("home");
    std::fs::create_dir(&dir).unwrap();
    cfs_testkit::command::run_ok(
        std::process::Command::new("chown").args([os(TEST_USER), dir.as_os_str()]),
    );
    Home {
        _t: t,
        dir,
        tag: Tag::new(),
    }
}

fn run(who: As, h: &Home, script: &str) -> Output {
    Script {
        cfs: &cfs(),
        who,
        dir: &h.dir,
        env: &[],
        limit: Duration::from_secs(90),
        tag: Some(&h.tag),
    }
    .run(&format!("{SETUP}\n{script}"))
}

fn run_ok(who: As, h: &Home, script: &str) -> String {
    cfs_testkit::command::script_ok(who, script, run(who, h, script))
}

/// Shell functions: `setup` makes `src/` (external and inline files) and
/// `r/` holding it as `img`; `objects` counts the objects in `r`.
const SETUP: &str = r#"
objects() { find r/objects -type f | wc -l; }
setup() {
    mkdir -p src/d m
    i=0; while [ $i -lt 20 ]; do head -c $((70000 + i)) /dev/urandom > src/d/f$i; i=$((i+1)); done
    echo small > src/small
    $CFS --repo r create-image src img > /dev/null
}
"#;

/// The body every mode runs once `img` is mounted at `m`: rm, gc, read
/// everything, unmount, gc. Prints `rm:`, `gc1:`, `gc2:` lines and the
/// object counts.
const CHECK: &str = r#"
echo "objects before: $(objects)"
$CFS --repo r rm img 2>&1 | sed 's/^/rm: /'
$CFS --repo r gc | sed 's/^/gc1: /'
echo "objects while mounted: $(objects)"
diff -r src m && echo "all files read"
$CFS unmount m
$CFS --repo r gc | sed 's/^/gc2: /'
echo "objects after: $(objects)"
"#;

fn assert_pinned_then_freed(what: &str, out: &str) {
    let line =
        |prefix: &str| -> Vec<&str> { out.lines().filter(|l| l.starts_with(prefix)).collect() };
    let before = line("objects before: ");
    let during = line("objects while mounted: ");
    assert!(
        !before.is_empty() && before[0] != "objects before: 0",
        "{what}: {out}"
    );
    assert_eq!(
        before[0].rsplit(' ').next(),
        during[0].rsplit(' ').next(),
        "{what}: gc removed objects of a mounted image:\n{out}"
    );
    assert!(
        out.contains("still mounted"),
        "{what}: rm did not say so:\n{out}"
    );
    assert!(
        out.contains("gc1: kept 1 unnamed images that are still mounted"),
        "{what}:\n{out}"
    );
    assert!(out.contains("all files read"), "{what}:\n{out}");
    assert!(
        out.contains("gc2: removed 1 pins of mounts that are gone"),
        "{what}:\n{out}"
    );
    assert!(
        out.contains("objects after: 0"),
        "{what}: not freed after unmount:\n{out}"
    );
}

#[test]
fn rm_and_gc_while_mounted_as_root_in_every_mode() {
    require!(need::rootless(TOOLS));
    for (what, mount) in [
        ("kernel", "$CFS --repo r mount --fuse=no img m"),
        ("fuse+overlay", "$CFS --repo r mount --fuse=yes img m"),
        (
            "standalone (fuse-serve)",
            "$CFS --repo r fuse-serve img m 2>server.log",
        ),
    ] {
        let h = home();
        let out = run_ok(As::Root, &h, &format!("setup\n{mount}\n{CHECK}"));
        assert_pinned_then_freed(what, &out);
        h.tag.assert_none_left(Duration::from_secs(10));
    }
}

#[test]
fn rm_and_gc_while_mounted_as_a_plain_user() {
    require!(need::rootless(TOOLS));
    for (what, who) in [
        ("standalone", As::User),
        ("fuse+overlay in a user namespace", As::UserNs),
    ] {
        let h = home();
        let out = run_ok(
            who,
            &h,
            &format!("setup\n$CFS --repo r mount img m\n{CHECK}"),
        );
        assert_pinned_then_freed(what, &out);
        h.tag.assert_none_left(Duration::from_secs(10));
    }
}

#[test]
fn a_mount_that_vanished_without_unmount_stops_pinning() {
    require!(need::rootless(TOOLS));
    // Root: a kernel mount in a private mount namespace that then ends.
    let h = home();
    let out = run_ok(
        As::Root,
        &h,
        r#"setup
           unshare -m --propagation private sh -eu -c '$CFS --repo r mount --fuse=no img m; $CFS --repo r rm img 2>/dev/null; ls r/pins | wc -l'
           echo "objects before: $(objects)"
           $CFS --repo r gc
           echo "objects after: $(objects)""#,
    );
    assert!(out.starts_with("1\n"), "no pin was written:\n{out}");
    assert!(
        out.contains("removed 1 pins of mounts that are gone"),
        "{out}"
    );
    assert!(out.contains("objects after: 0"), "{out}");

    // The plain user: fuse+overlay in a user namespace, left mounted, the
    // namespace kept alive by a process in it: still pinned. That process
    // killed, the server sees its namespace empty and exits, the namespace
    // and its mount go, and so does the pin.
    let h = home();
    let out = run_ok(
        As::UserNs,
        &h,
        "setup; $CFS --repo r mount img m; $CFS --repo r rm img 2>/dev/null
         sleep 300 </dev/null >/dev/null 2>&1 &
         echo mounted",
    );
    assert_eq!(out, "mounted\n");
    let out = run_ok(
        As::User,
        &h,
        r#"$CFS --repo r gc; echo "objects: $(objects)""#,
    );
    assert!(
        out.contains("kept 1 unnamed images that are still mounted"),
        "{out}"
    );
    assert!(!out.contains("objects: 0"), "{out}");
    let servers = h.tag.processes();
    assert!(!servers.is_empty(), "nothing keeps the namespace");
    for (pid, _) in &servers {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    h.tag.assert_none_left(Duration::from_secs(10));
    let out = run_ok(
        As::User,
        &h,
        r#"$CFS --repo r gc; echo "objects: $(objects)""#,
    );
    assert!(
        out.contains("removed 1 pins of mounts that are gone"),
        "{out}"
    );
    assert!(out.contains("objects: 0"), "{out}");

    // Root, standalone: the server killed, the dead mount detached with
    // umount(8) rather than `cfs unmount`.
    let h = home();
    let out = run_ok(
        As::Root,
        &h,
        "setup; $CFS --repo r fuse-serve img m 2>server.log; $CFS --repo r rm img 2>/dev/null; echo ok",
    );
    assert_eq!(out, "ok\n");
    for (pid, _) in h.tag.processes() {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    h.tag.assert_none_left(Duration::from_secs(10));
    let out = run_ok(
        As::Root,
        &h,
        r#"$CFS --repo r gc | grep -c 'still mounted'; umount -l m; $CFS --repo r gc; echo "objects: $(objects)""#,
    );
    assert!(
        out.starts_with("1\n"),
        "a dead but present mount should still pin:\n{out}"
    );
    assert!(
        out.contains("removed 1 pins of mounts that are gone"),
        "{out}"
    );
    assert!(out.contains("objects: 0"), "{out}");
}

#[test]
fn gc_racing_mount_and_unmount_never_loses_a_live_object() {
    require!(need::kernel_mounts());
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..10u32 {
        std::fs::write(
            src.join(format!("d/f{i}")),
            i.to_le_bytes().repeat(20_000 + i as usize),
        )
        .unwrap();
    }
    let repo = t.path().join("repo");
    let mnt = t.path().join("m");
    std::fs::create_dir(&mnt).unwrap();
    let r = cfs().repo(&repo);
    r.ok(["init"]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let (r, stop) = (r.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let o = r.run(["gc"]);
                assert!(o.status.success(), "gc failed: {}", stderr(&o));
                n += 1;
            }
            n
        })
    };
    let (mut mounted, mut refused) = (0, 0);
    for i in 0..15u64 {
        // Each round a different tree, so each image has objects of its own.
        std::fs::write(src.join("round"), i.to_le_bytes().repeat(1000)).unwrap();
        let name = format!("img{i}");
        r.ok([os("create-image"), src.as_os_str(), os(&name)]);
        let remover = {
            let (r, name) = (r.clone(), name.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis([0, 1, 3, 8, 15, 30][i as usize % 6]));
                r.ok(["rm", &name]);
            })
        };
        // Sometimes the removal starts first.
        std::thread::sleep(Duration::from_millis(i % 3 * 2));
        let o = r.run([os("mount"), os("--fuse=no"), os(&name), mnt.as_os_str()]);
        remover.join().unwrap();
        if o.status.success() {
            mounted += 1;
            let guard = cfs_testkit::mounts::Mounted::new(&cfs(), &mnt);
            // gc runs meanwhile; every file must still read as imported.
            for _ in 0..3 {
                let d = std::process::Command::new("diff")
                    .arg("-r")
                    .arg(&src)
                    .arg(&mnt)
                    .output()
                    .unwrap();
                assert!(
                    d.status.success(),
                    "round {i}: a mounted file no longer reads:\n{}{}",
                    String::from_utf8_lossy(&d.stdout),
                    stderr(&d)
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            drop(guard);
        } else {
            refused += 1;
            let e = stderr(&o);
            // The name went first: the image is not found (by name or id link).
            assert!(
                e.contains(&format!("no image named \"{name}\"")) || e.contains("/images/"),
                "round {i}: {e}"
            );
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let gcs = collector.join().unwrap();
    println!("gc race: {mounted} mounts read intact, {refused} found their image already removed, {gcs} gc runs");
    r.ok(["gc"]);
    let left: Vec<PathBuf> = std::fs::read_dir(repo.join("objects"))
        .unwrap()
        .flatten()
        .flat_map(|d| {
            std::fs::read_dir(d.path())
                .unwrap()
                .flatten()
                .map(|e| e.path())
        })
        .collect();
    assert!(
        left.is_empty(),
        "objects left after the last unmount and gc: {left:?}"
    );
}
