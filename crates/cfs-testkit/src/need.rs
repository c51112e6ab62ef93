//! What a test needs of the machine, each check answering `Some(why not)`
//! or `None`; use them with [`crate::require!`]. The rootless checks also do
//! the setup `.ci/run` does (the test user, `/dev/fuse` usable by everyone as
//! distributions ship it), so that a test runs alone as well as in CI.

use crate::users::TEST_USER;
use std::path::Path;
use std::process::{Command, Stdio};

/// Root (euid 0): needed to mount, to drop caches, to set up users.
pub fn root() -> Option<String> {
    (!rustix::process::geteuid().is_root()).then(|| "needs root".into())
}

/// Whether `tool` is on `PATH`.
pub fn have_tool(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Every tool on `PATH`, or which one to install.
pub fn tools(tools: &[&str]) -> Option<String> {
    tools
        .iter()
        .find(|t| !have_tool(t))
        .map(|t| format!("{t} is not installed"))
}

/// Each file system in the kernel (loading its module as root if needed).
pub fn filesystems(names: &[&str]) -> Option<String> {
    let have = |fs: &str| {
        std::fs::read_to_string("/proc/filesystems")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split_whitespace().last() == Some(fs))
    };
    for fs in names {
        if !have(fs) {
            let _ = Command::new("modprobe")
                .arg(fs)
                .stderr(Stdio::null())
                .status();
            if !have(fs) {
                return Some(format!("the kernel has no {fs}"));
            }
        }
    }
    None
}

/// Root with erofs and overlayfs: composefs kernel mounts.
pub fn kernel_mounts() -> Option<String> {
    root().or_else(|| filesystems(&["erofs", "overlay"]))
}

/// Root with erofs, overlayfs, fuse and `/dev/fuse`: every mount mode as root.
pub fn fuse_mounts() -> Option<String> {
    kernel_mounts()
        .or_else(|| filesystems(&["fuse"]))
        .or_else(|| (!Path::new("/dev/fuse").exists()).then(|| "no /dev/fuse".into()))
}

/// What the tests that mount as root and as [`TEST_USER`] need: root, the
/// `tools`, erofs, overlayfs and fuse. When all is there, does the setup:
/// `/dev/fuse` 0666 and the user created.
pub fn rootless(tools_needed: &[&str]) -> Option<String> {
    if let Some(why) = fuse_mounts() {
        return Some(why);
    }
    if let Some(why) = tools(tools_needed) {
        return Some(why);
    }
    crate::users::setup_test_user()
        .err()
        .map(|e| format!("could not set up {TEST_USER}: {e}"))
}
