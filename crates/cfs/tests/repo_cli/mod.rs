//! Running `cfs --repo REPO …` from the repository and OCI tests.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

/// `cfs --repo REPO ARGS…`, with `CFS_REPO` cleared.
pub fn cfs(repo: &Path, args: &[&dyn AsRef<OsStr>]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cfs"));
    c.arg("--repo").arg(repo);
    for a in args {
        c.arg(a.as_ref());
    }
    c.env_remove("CFS_REPO").output().unwrap()
}

/// Stdout of a command that must succeed.
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Stderr of a command that must fail.
pub fn err(o: Output) -> String {
    assert!(
        !o.status.success(),
        "unexpected success: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}
