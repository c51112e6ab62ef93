//! FUSE over io_uring (`--fuse-transport uring`): every FUSE mode served
//! through the kernel's io_uring queues passes the same comparisons as over
//! `/dev/fuse`, and asking for it where the kernel doesn't offer it fails
//! with a message saying why.
//!
//! The kernel offers FUSE io_uring only while the fuse module's
//! `enable_uring` parameter is on (off by default); these tests, as root,
//! turn it on or off for their duration ([`UringParam`]) and put the old
//! value back, one test at a time. Servers of other mounts are unaffected:
//! the kernel uses io_uring only for a server that asks for it at INIT.

use crate::cfs;
use crate::differential::{round, userns_ids, Via};
use cfs_testkit::mounts::assert_nothing_left;
use cfs_testkit::{need, require, skip, stderr};
use std::sync::{Mutex, MutexGuard};

const PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

/// One test at a time sets the parameter.
static PARAM_LOCK: Mutex<()> = Mutex::new(());

/// `enable_uring` set to a value for as long as this lives; the old value
/// is written back on drop (also when the test fails).
struct UringParam {
    old: String,
    _lock: MutexGuard<'static, ()>,
}

impl UringParam {
    /// Sets the parameter, or says why it can't be set here.
    fn set(on: bool) -> Result<UringParam, String> {
        let lock = PARAM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let old = std::fs::read_to_string(PARAM)
            .map_err(|e| format!("{PARAM}: {e} (a kernel without CONFIG_FUSE_IO_URING)"))?;
        std::fs::write(PARAM, if on { "Y" } else { "N" })
            .map_err(|e| format!("can't write {PARAM}: {e}"))?;
        Ok(UringParam {
            old: old.trim().to_string(),
            _lock: lock,
        })
    }
}

impl Drop for UringParam {
    fn drop(&mut self) {
        let _ = std::fs::write(PARAM, &self.old);
    }
}

/// The differential round (kernel, standalone FUSE as root, fuse+overlay in
/// a user namespace), its FUSE servers forced onto io_uring.
#[test]
fn every_fuse_mode_over_uring_matches_the_kernel() {
    require!(need::rootless(&["setpriv", "unshare", "timeout"]));
    let _on = match UringParam::set(true) {
        Ok(p) => p,
        Err(why) => skip!("{why}"),
    };
    round(0x0000_51e0_f00d, 150, &userns_ids(), Via::Uring);
}

/// `--fuse-transport uring` where the kernel offers no io_uring: the
/// server refuses at INIT, `cfs` exits non-zero naming the parameter, and
/// nothing is left mounted.
#[test]
fn forced_uring_where_unavailable_fails_clearly() {
    require!(need::root(), need::fuse_mounts());
    let _off = match UringParam::set(false) {
        Ok(p) => Some(p),
        // No parameter at all: the kernel can't offer it either.
        Err(_) if !std::path::Path::new(PARAM).exists() => None,
        Err(why) => skip!("{why}"),
    };
    let t = tempfile::tempdir().unwrap();
    let (src, mnt) = (t.path().join("src"), t.path().join("m"));
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/f"), b"x").unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let image = t.path().join("i.cfs");
    let objects = t.path().join("objects");
    let out = cfs()
        .command([
            "mkfs".as_ref(),
            format!("--digest-store={}", objects.display()).as_ref(),
            src.as_os_str(),
            image.as_os_str(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for how in [&["fuse-serve"][..], &["mount", "--fuse=standalone"]] {
        let out = cfs()
            .command(how.iter().map(std::ffi::OsStr::new))
            .arg("--basedir")
            .arg(&objects)
            .args(["--fuse-transport", "uring"])
            .arg(&image)
            .arg(&mnt)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(!out.status.success(), "{how:?} succeeded without io_uring");
        assert!(
            err.contains("FUSE over io_uring is not available") && err.contains("enable_uring"),
            "{how:?}: {err}"
        );
        assert_nothing_left(t.path());
    }
}
