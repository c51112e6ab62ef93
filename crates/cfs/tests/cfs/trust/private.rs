//! Private repositories: a plain user can read no file of root's repository
//! nor of another user's, can't hold their lock (so can't delay root's
//! import or gc), and a symlink planted in a user's repository is not
//! followed by root working there. A repository of another user is not
//! root's to use (its owner controls every object in it); root's is
//! everyone's to read if root opens it. A busy lock is reported with its
//! holder.

use crate::cfs;
use cfs_testkit::users::{setup_test_user, As, Script, TEST_USER};
use cfs_testkit::{need, os, require, skip};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

fn tree(src: &Path) {
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/big"), b"root's file\n".repeat(1000)).unwrap();
    std::fs::write(src.join("small"), b"inline\n").unwrap();
}

/// Runs `script` as `who` in `dir` (bounded).
fn as_(who: As, dir: &Path, script: &str) -> Output {
    Script {
        cfs: &cfs(),
        who,
        dir,
        env: &[],
        limit: Duration::from_secs(60),
        tag: None,
    }
    .run(script)
}

/// A temporary directory of mode `mode`, where root and the test user work.
fn shared_dir(mode: u32) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    t
}

fn mode(p: &Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions()) & 0o7777
}

#[test]
fn a_plain_user_can_neither_read_nor_lock_roots_repository() {
    require!(need::root());
    if let Err(e) = setup_test_user() {
        skip!("no test user: {e}");
    }
    let t = shared_dir(0o755);
    let src = t.path().join("src");
    tree(&src);
    let repo = t.path().join("repo");
    cfs()
        .repo(&repo)
        .ok([os("create-image"), src.as_os_str(), os("img")]);
    assert_eq!(mode(&repo), 0o700);

    // Nothing to read, list or lock.
    let o = as_(
        As::User,
        t.path(),
        r#"for p in repo repo/lock repo/objects repo/images repo/cfs-repo-version; do
               if cat "$p" 2>/dev/null || ls "$p" >/dev/null 2>&1; then echo "readable: $p"; fi
           done
           find repo -type f 2>/dev/null | while read -r f; do cat "$f" >/dev/null 2>&1 && echo "read: $f"; done
           if flock -n repo/lock true 2>/dev/null; then echo "locked repo/lock"; fi
           if $CFS --repo repo images 2>/dev/null; then echo "listed images"; fi
           echo done"#,
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "done\n", "{o:?}");

    // The user tries to hold the lock while root imports and collects.
    let holder = std::process::Command::new("setpriv")
        .args(["--reuid", TEST_USER, "--regid", TEST_USER, "--init-groups"])
        .args(["flock", "-s"])
        .arg(repo.join("lock"))
        .args(["sleep", "30"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut holder = scopeguard(holder);
    let start = Instant::now();
    let r = cfs().repo(&repo);
    r.ok([
        os("--lock-timeout"),
        os("20"),
        os("create-image"),
        src.as_os_str(),
        os("img2"),
    ]);
    r.ok([os("--lock-timeout"), os("20"), os("gc")]);
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "root was delayed"
    );
    let _ = holder.0.kill();

    // Another user's repository is as closed to this user.
    let home = t.path().join("home");
    std::fs::create_dir(&home).unwrap();
    rustix::fs::chown(
        &home,
        Some(rustix::process::Uid::from_raw(uid_of(TEST_USER))),
        None,
    )
    .unwrap();
    let o = as_(
        As::User,
        &home,
        r#"mkdir src; echo mine > src/f; head -c 5000 /dev/zero > src/big
           $CFS --repo r create-image src img >/dev/null
           stat -c %a r"#,
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "700\n", "{o:?}");
    let o = std::process::Command::new("setpriv")
        .args(["--reuid", "nobody", "--regid", "nogroup", "--clear-groups"])
        .args(["sh", "-c", "find r -type f 2>/dev/null | head -1; cat r/objects/*/* 2>/dev/null; ls r 2>/dev/null; echo done"])
        .current_dir(&home)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "done\n", "{o:?}");
}

/// A user makes a repository (and an empty directory) in a directory root
/// works in too. Root's import there would put root's files where that user
/// reads them, and dedup against the objects that user planted; its mount
/// would show what that user chose. Root is refused every use, naming the
/// owner; the user's own use goes on, and root's readable repository is
/// open to the user.
#[test]
fn root_uses_no_repository_of_another_user() {
    require!(need::root());
    if let Err(e) = setup_test_user() {
        skip!("no test user: {e}");
    }
    let t = shared_dir(0o1777);
    let o = as_(
        As::User,
        t.path(),
        "mkdir src empty; echo mine > src/f; $CFS --repo urepo create-image src img",
    );
    assert!(o.status.success(), "{o:?}");
    let secret = t.path().join("secret");
    tree(&secret);
    let owner = format!(
        "belongs to uid {}, neither you (uid 0) nor root",
        uid_of(TEST_USER)
    );
    for args in [
        vec![os("create-image"), secret.as_os_str(), os("s")],
        vec![os("images")],
        vec![os("dump"), os("img")],
        vec![os("mount"), os("img"), t.path().join("mnt").as_os_str()],
    ] {
        let err = cfs().repo(t.path().join("urepo")).fails(&args);
        assert!(err.contains(&owner), "{args:?}: {err}");
    }
    let err = cfs().repo(t.path().join("empty")).fails(["init"]);
    assert!(err.contains(&owner), "init: {err}");
    assert!(!t.path().join("empty/cfs-repo-version").exists());
    let o = as_(
        As::User,
        t.path(),
        "$CFS --repo urepo images | cut -f1; find urepo/objects -type f | wc -l",
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "img\n1\n", "{o:?}");
    // Root's own repository, opened by root to others: the user reads it.
    let rrepo = t.path().join("rrepo");
    cfs()
        .repo(&rrepo)
        .ok([os("create-image"), secret.as_os_str(), os("r")]);
    std::fs::set_permissions(&rrepo, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = as_(As::User, t.path(), "$CFS --repo rrepo images | cut -f1");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "r\n", "{o:?}");
}

fn uid_of(user: &str) -> u32 {
    let o = std::process::Command::new("id")
        .args(["-u", user])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

/// Kills the child on drop.
struct Guard(std::process::Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
fn scopeguard(c: std::process::Child) -> Guard {
    Guard(c)
}

#[test]
fn an_existing_directory_is_made_private_and_said_so() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    std::fs::set_permissions(&repo, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = cfs().repo(&repo).run(["init"]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("was mode 0755") && err.contains("0700"),
        "{err}"
    );
    assert_eq!(mode(&repo), 0o700);
    let info = cfs().repo(&repo).ok(["info"]);
    assert!(
        info.contains("access: private to its owner (0700)"),
        "{info}"
    );
}

#[test]
fn a_busy_lock_names_its_holder_and_times_out() {
    if !need::have_tool("flock") {
        skip!("flock is not installed");
    }
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cfs().repo(&repo).ok(["init"]);
    let mut holder = std::process::Command::new("flock")
        .arg(repo.join("lock"))
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    let pid = holder.id();
    assert!(cfs_testkit::mounts::wait_until(
        Duration::from_secs(5),
        || {
            std::fs::read_to_string("/proc/locks").is_ok_and(|l| l.contains(&format!(" {pid} ")))
        }
    ));
    let start = Instant::now();
    let err = cfs()
        .repo(&repo)
        .fails([os("--lock-timeout"), os("0.5"), os("gc")]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(
        err.contains(&format!("held by pid {pid} (exclusive, flock")),
        "{err}"
    );
    assert!(err.contains("waiting for up to 0.5s"), "{err}");
    assert!(err.contains("still locked after"), "{err}");
}

#[test]
fn root_follows_no_symlink_planted_in_a_users_repository() {
    require!(need::root());
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    tree(&src);
    let repo = t.path().join("repo");
    cfs()
        .repo(&repo)
        .ok([os("create-image"), src.as_os_str(), os("img")]);
    let elsewhere = t.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();

    // The lock a symlink: root's import refuses, creating nothing there.
    std::fs::remove_file(repo.join("lock")).unwrap();
    std::os::unix::fs::symlink(elsewhere.join("planted"), repo.join("lock")).unwrap();
    let err = cfs()
        .repo(&repo)
        .fails([os("create-image"), src.as_os_str(), os("two")]);
    assert!(err.contains("repo/lock"), "{err}");
    assert!(!elsewhere.join("planted").exists());
    std::fs::remove_file(repo.join("lock")).unwrap();

    // An objects/XX directory a symlink out: gc unlinks nothing there.
    let garbage = t.path().join("garbage");
    std::fs::create_dir(&garbage).unwrap();
    std::fs::write(
        garbage.join("g"),
        b"unnamed content, soon garbage\n".repeat(10),
    )
    .unwrap();
    let digest_store = repo.as_os_str();
    cfs().ok([
        os("mkfs"),
        os("--digest-store"),
        digest_store,
        garbage.as_os_str(),
        t.path().join("g.cfs").as_os_str(),
    ]);
    let objs: Vec<_> = std::fs::read_dir(repo.join("objects"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    let victim_dir =
        objs.iter()
            .find(|d| {
                std::fs::read_dir(d).unwrap().flatten().any(|f| {
                    std::fs::read(f.path()).is_ok_and(|b| b.starts_with(b"unnamed content"))
                })
            })
            .unwrap()
            .clone();
    let moved = elsewhere.join("xx");
    std::fs::rename(&victim_dir, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &victim_dir).unwrap();
    let _ = cfs().repo(&repo).run(["gc"]);
    assert_eq!(
        std::fs::read_dir(&moved).unwrap().count(),
        1,
        "gc unlinked through a symlink"
    );

    // images/ID a symlink out of the repository: refused by name.
    std::fs::remove_file(&victim_dir).unwrap();
    let id = cfs().repo(&repo).ok(["images"]);
    let id = id.split('\t').nth(1).unwrap().trim().to_owned();
    std::fs::write(elsewhere.join("fake"), b"x").unwrap();
    std::fs::remove_file(repo.join("images").join(&id)).unwrap();
    std::os::unix::fs::symlink(elsewhere.join("fake"), repo.join("images").join(&id)).unwrap();
    let err = cfs()
        .repo(&repo)
        .fails([os("mount"), os("img"), t.path().as_os_str()]);
    assert!(err.contains("points to"), "{err}");
}
