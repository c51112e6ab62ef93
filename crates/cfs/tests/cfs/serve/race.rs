//! `cfs unmount` as root can't be raced into unmounting another mount.
//!
//! It used to check mountinfo for the symlink-resolved path and then call
//! `umount2` on the path as given, which the kernel resolved again: a user
//! flipping a symlink in the mount point's parent between the two got root
//! to unmount whatever the other side of the link held.

use super::{setup, LIMIT};
use cfs_testkit::users::TEST_USER;
use cfs_testkit::{need, os, require};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A plain user flips `link` between its own directory (with its FUSE mount
/// at `mnt`, remounted whenever it goes) and a root directory holding an
/// unrelated tmpfs at `mnt`, while root loops `cfs unmount link/mnt`: the
/// tmpfs is never touched.
#[test]
fn unmount_never_follows_a_symlink_a_user_flips() {
    require!(need::rootless(super::TOOLS), need::tools(&["mountpoint"]));
    let s = setup();
    let rootside = s.t.path().join("rootside");
    std::fs::create_dir_all(rootside.join("mnt")).unwrap();
    let tmpfs = rootside.join("mnt");
    cfs_testkit::command::run_ok(Command::new("mount").args([
        os("-t"),
        os("tmpfs"),
        os("cfs-race"),
        tmpfs.as_os_str(),
    ]));
    let _unmount_tmpfs = Guard(tmpfs.clone());
    std::fs::write(tmpfs.join("marker"), b"root's own\n").unwrap();
    std::fs::create_dir_all(s.home.join("real/mnt")).unwrap();
    cfs_testkit::command::run_ok(Command::new("chown").args([
        os("-R"),
        os(TEST_USER),
        s.home.join("real").as_os_str(),
    ]));
    let _unmount_user = Guard(s.home.join("real/mnt"));

    // The user: keep its mount up and flip the link, for a few seconds.
    let flipper = format!(
        r#"
        end=$(( $(date +%s) + 4 ))
        while [ "$(date +%s)" -lt "$end" ]; do
            mountpoint -q real/mnt || $CFS mount --basedir "$OBJECTS" "$IMAGE" real/mnt || true
            ln -sfn real link.new && mv -T link.new link
            ln -sfn '{}' link.new && mv -T link.new link
        done
        "#,
        rootside.display()
    );
    let mut user = s
        .tag
        .mark(
            Command::new("timeout")
                .arg(LIMIT.as_secs().to_string())
                .args(["setpriv", "--reuid", TEST_USER, "--regid", TEST_USER])
                .args(["--init-groups", "sh", "-c", &flipper])
                .env("CFS", crate::cfs().exe())
                .env("IMAGE", &s.image)
                .env("OBJECTS", &s.objects)
                .current_dir(&s.home)
                .stdin(Stdio::null())
                .stdout(Stdio::null()),
        )
        .spawn()
        .unwrap();

    // Root: unmount through the link, again and again.
    let target = s.home.join("link/mnt");
    let (mut unmounted, mut refused) = (0, 0);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        let o = crate::cfs().run([os("unmount"), target.as_os_str()]);
        if o.status.success() {
            unmounted += 1;
        } else {
            refused += 1;
        }
        assert!(
            std::fs::read(tmpfs.join("marker")).is_ok(),
            "root's tmpfs was unmounted through the user's link ({unmounted} unmounts, \
             {refused} refusals so far)"
        );
    }
    let _ = user.wait();
    println!("unmount race: {unmounted} unmounts of the user's mount, {refused} refusals");
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        info.lines()
            .any(|l| l.contains(&format!(" {} ", tmpfs.display())) && l.contains("tmpfs")),
        "root's tmpfs is gone"
    );
    assert_eq!(
        std::fs::read(tmpfs.join("marker")).unwrap(),
        b"root's own\n"
    );
}

/// A symlink a plain user planted on the path is not followed by root's
/// `cfs unmount`: `cfs unmount ~user/link/mnt`, with `link` pointing at a
/// root directory holding root's own cfs mount at `mnt`, is refused and
/// root's mount stays (it used to be unmounted).
#[test]
fn unmount_never_follows_a_symlink_a_user_planted() {
    require!(need::rootless(super::TOOLS), need::kernel_mounts());
    let s = setup();
    let rootside = s.t.path().join("rootside");
    std::fs::create_dir_all(rootside.join("mnt")).unwrap();
    let _unmount = Guard(rootside.join("mnt"));
    let o = crate::cfs().run([
        os("mount"),
        os("--basedir"),
        s.objects.as_os_str(),
        s.image.as_os_str(),
        rootside.join("mnt").as_os_str(),
    ]);
    assert!(o.status.success(), "root's mount: {o:?}");
    cfs_testkit::command::run_ok(
        Command::new("setpriv")
            .args(["--reuid", TEST_USER, "--regid", TEST_USER, "--init-groups"])
            .args(["ln", "-s"])
            .arg(&rootside)
            .arg(s.home.join("link")),
    );
    let o = crate::cfs().run([os("unmount"), s.home.join("link/mnt").as_os_str()]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("symlink"),
        "unmount through the user's link: {o:?}"
    );
    assert!(
        std::fs::read(rootside.join("mnt/inline")).is_ok(),
        "root's mount was unmounted through the user's link"
    );
    let o = crate::cfs().run([os("unmount"), rootside.join("mnt").as_os_str()]);
    assert!(o.status.success(), "root's own unmount: {o:?}");
}

/// Root's `cfs mount` goes where it was told, never through a symlink a
/// plain user planted on the path: not when the mount point already is one
/// (it used to be followed, and root's directory covered), and not when the
/// user flips the name between its directory and a symlink to root's while
/// root mounts again and again (the mount was attached by path, resolved
/// again after the checks). Kernel mode, fuse+overlay and standalone FUSE.
#[test]
fn mount_never_follows_a_symlink_a_user_plants_or_flips() {
    require!(
        need::rootless(super::TOOLS),
        need::kernel_mounts(),
        need::tools(&["/usr/bin/python3"])
    );
    let s = setup();
    let rootside = s.t.path().join("rootside");
    std::fs::create_dir(&rootside).unwrap();
    std::fs::write(rootside.join("marker"), b"root's own\n").unwrap();
    let _unmount_rootside = Guard(rootside.clone());
    let _unmount_user = Guard(s.home.join("m"));
    let _unmount_user_side = Guard(s.home.join("s"));
    let untouched = |when: &str| {
        assert_eq!(
            std::fs::read(rootside.join("marker")).ok().as_deref(),
            Some(&b"root's own\n"[..]),
            "root's directory was covered by a mount through the user's symlink ({when})"
        );
    };
    let user = |script: &str| {
        cfs_testkit::command::run_ok(
            Command::new("setpriv")
                .args(["--reuid", TEST_USER, "--regid", TEST_USER, "--init-groups"])
                .args(["sh", "-c", script])
                .current_dir(&s.home),
        )
    };
    let mount = |modes: &str, at: &std::path::Path| {
        crate::cfs().run([
            os("mount"),
            os(modes),
            os("--basedir"),
            s.objects.as_os_str(),
            s.image.as_os_str(),
            at.as_os_str(),
        ])
    };
    let unmount_both = || {
        for name in ["m", "s"] {
            let p = s.home.join(name);
            if !p.is_symlink() && !cfs_testkit::mounts::mounted_under(&p).is_empty() {
                let _ = crate::cfs().run([os("unmount"), p.as_os_str()]);
            }
        }
    };

    // A symlink planted beforehand.
    user(&format!("ln -s '{}' link", rootside.display()));
    for fuse in ["--fuse=no", "--fuse=yes", "--fuse=standalone"] {
        let o = mount(fuse, &s.home.join("link"));
        untouched(fuse);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains("symlink"),
            "{fuse}: mounting on the user's symlink: {o:?}"
        );
    }
    // Root's own symlink is root's choice, and followed.
    std::os::unix::fs::symlink(s.home.join("m"), s.t.path().join("rootlink")).unwrap();
    user("mkdir m");
    let o = mount("--fuse=no", &s.t.path().join("rootlink"));
    assert!(o.status.success(), "through root's own symlink: {o:?}");
    assert!(!cfs_testkit::mounts::mounted_under(&s.home.join("m")).is_empty());
    unmount_both();

    // The name flipped (renameat2 RENAME_EXCHANGE) while root mounts.
    let mut flipping = flip_m_and_s(&s, "", &rootside);
    let (mut mounted, mut refused) = (0, 0);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        let fuse = ["--fuse=no", "--fuse=yes", "--fuse=standalone"][(mounted + refused) % 3];
        if mount(fuse, &s.home.join("m")).status.success() {
            mounted += 1;
        } else {
            refused += 1;
        }
        untouched(&format!(
            "{fuse}, {mounted} mounts, {refused} refusals so far"
        ));
        unmount_both();
    }
    let flipped = flipping.wait().unwrap();
    assert!(flipped.success(), "the user's flipper failed: {flipped}");
    unmount_both();
    println!("mount race: {mounted} mounts in the user's directory, {refused} refusals");
    untouched("at the end");
}

/// Every mount root makes of a repository image is pinned, even when the
/// plain user owning the mount point's directory moves it while root
/// mounts (`renameat2(RENAME_EXCHANGE)` with a symlink): the pin is taken
/// from the id of the mount made, not from whatever the path shows later
/// (the watcher used to look at the path, found nothing new there, and left
/// the mount unpinned without a word; `cfs gc` then removed what it reads).
#[test]
fn a_mount_is_pinned_wherever_the_user_moves_its_directory() {
    require!(
        need::rootless(super::TOOLS),
        need::kernel_mounts(),
        need::tools(&["/usr/bin/python3"])
    );
    let s = setup();
    let repo = s.t.path().join("repo");
    crate::cfs().ok([
        os("--repo"),
        repo.as_os_str(),
        os("create-image"),
        s.t.path().join("src").as_os_str(),
        os("app"),
    ]);
    let elsewhere = s.t.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let _unmount_m = Guard(s.home.join("m"));
    let _unmount_s = Guard(s.home.join("s"));
    let mut flipping = flip_m_and_s(&s, "os.mkdir(\"m\")", &elsewhere);
    let pins = || std::fs::read_dir(repo.join("pins")).map_or(0, |d| d.count());
    let (mut mounted, mut elsewhere_named) = (0, 0);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        let before = pins();
        let o = crate::cfs().run([
            os("--repo"),
            repo.as_os_str(),
            os("mount"),
            os("app"),
            s.home.join("m").as_os_str(),
        ]);
        if o.status.success() {
            mounted += 1;
            let on_s = !cfs_testkit::mounts::mounted_under(&s.home.join("s")).is_empty();
            elsewhere_named += usize::from(on_s);
            assert_eq!(
                pins(),
                before + 1,
                "mount {mounted} (on {}) was not pinned: {o:?}",
                if on_s { "s" } else { "m" }
            );
        }
        for name in ["m", "s"] {
            let p = s.home.join(name);
            if !p.is_symlink() && !cfs_testkit::mounts::mounted_under(&p).is_empty() {
                let _ = crate::cfs().run([os("unmount"), p.as_os_str()]);
            }
        }
    }
    let flipped = flipping.wait().unwrap();
    assert!(flipped.success(), "the user's flipper failed: {flipped}");
    println!("pin race: {mounted} mounts pinned, {elsewhere_named} of them under the other name");
}

/// Unmounts a path when dropped (lazily; errors ignored).
/// As the test user in its home, after `first` (a Python statement), makes
/// `s` a symlink to `to` and swaps the names `m` and `s`
/// (`renameat2(RENAME_EXCHANGE)`) for 4 s, as fast as it can.
fn flip_m_and_s(s: &super::Setup, first: &str, to: &std::path::Path) -> std::process::Child {
    let flipper = format!(
        r#"
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
{first}
os.symlink({to:?}, "s")
end = time.time() + 4
while time.time() < end:
    libc.renameat2(-100, b"m", -100, b"s", 2)
"#,
        to = to.display().to_string()
    );
    s.tag
        .mark(
            Command::new("timeout")
                .arg(LIMIT.as_secs().to_string())
                .args(["setpriv", "--reuid", TEST_USER, "--regid", TEST_USER])
                .args(["--init-groups", "/usr/bin/python3", "-c", &flipper])
                .current_dir(&s.home)
                .stdin(Stdio::null())
                .stdout(Stdio::null()),
        )
        .spawn()
        .unwrap()
}

struct Guard(std::path::PathBuf);

impl Drop for Guard {
    fn drop(&mut self) {
        while cfs_testkit::mounts::mounted_under(&self.0)
            .iter()
            .any(|l| l.contains(&format!(" {} ", self.0.display())))
        {
            let ok = Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                break;
            }
        }
    }
}

/// Root's `--upperdir`, `--workdir` and `--basedir` in a directory a plain
/// user owns: the user's symlinks there to root's directories are not
/// followed. overlayfs resolved the paths as root, so root's mount wrote
/// its changes into root's directory behind the user's link. Now each
/// layer is opened as a mount point is and given to overlayfs by fd.
#[test]
fn layer_directories_follow_no_symlink_of_another_user() {
    require!(need::rootless(super::TOOLS), need::kernel_mounts());
    let s = setup();
    let victim = s.t.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let mnt = s.t.path().join("lm");
    std::fs::create_dir(&mnt).unwrap();
    let _unmount = Guard(mnt.clone());
    cfs_testkit::command::run_ok(
        Command::new("setpriv")
            .args(["--reuid", TEST_USER, "--regid", TEST_USER, "--init-groups"])
            .args([
                "sh",
                "-c",
                "ln -s \"$1\" up; ln -s \"$2\" objs; mkdir work real-up",
            ])
            .arg("sh")
            .arg(&victim)
            .arg(&s.objects)
            .current_dir(&s.home),
    );
    let mount = |fuse: &str, upper: &str, basedir: &std::path::Path| {
        crate::cfs().run([
            os("mount"),
            os(fuse),
            os("--basedir"),
            basedir.as_os_str(),
            os("--upperdir"),
            s.home.join(upper).as_os_str(),
            os("--workdir"),
            s.home.join("work").as_os_str(),
            s.image.as_os_str(),
            mnt.as_os_str(),
        ])
    };
    for fuse in ["--fuse=no", "--fuse=yes"] {
        for (upper, basedir, refused) in [
            ("up", s.objects.clone(), "upper directory"),
            ("real-up", s.home.join("objs"), "object directory"),
        ] {
            let o = mount(fuse, upper, &basedir);
            let e = String::from_utf8_lossy(&o.stderr);
            assert!(
                !o.status.success()
                    && e.contains(refused)
                    && e.contains("is a symlink of another user"),
                "{fuse} {upper} {}: {e}",
                basedir.display()
            );
        }
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0, "{fuse}");
    }
    // The standalone server's object directory is opened the same way.
    let o = crate::cfs().run([
        os("mount"),
        os("--fuse=standalone"),
        os("--basedir"),
        s.home.join("objs").as_os_str(),
        s.image.as_os_str(),
        mnt.as_os_str(),
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && e.contains("object directory")
            && e.contains("is a symlink of another user"),
        "standalone: {e}"
    );
    // The user's own directories, given by their real paths, still serve.
    let o = mount("--fuse=no", "real-up", &s.objects);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.contains(&format!(" {} ", mnt.display())))
        .unwrap();
    // By fd, and mountinfo still names the real directories.
    assert!(
        line.contains(&format!("upperdir={}", s.home.join("real-up").display())),
        "{line}"
    );
    std::fs::write(mnt.join("new"), b"x").unwrap();
    assert!(s.home.join("real-up/new").exists());
    crate::cfs().ok([os("unmount"), mnt.as_os_str()]);
}
