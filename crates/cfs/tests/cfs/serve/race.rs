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

/// Unmounts a path when dropped (lazily; errors ignored).
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
