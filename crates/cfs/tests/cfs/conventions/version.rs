//! `--version` says which commit the binary was built from: the checkout's
//! HEAD when the tests run in one (cargo re-runs the build script when HEAD
//! moves, so the binary under test is never older), else `unknown`; the C
//! names answer `-V` the same way.

use crate::cfs;
use std::process::Command;

/// The checkout's HEAD, abbreviated as the build script does, if the tests
/// run in a git checkout of cfs.
fn head() -> Option<String> {
    let o = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

#[test]
fn version_names_the_commit_on_every_name() {
    let commit = head().unwrap_or_else(|| "unknown".to_owned());
    let want = |name: &str| format!("{name} {} (commit {commit})\n", env!("CARGO_PKG_VERSION"));
    assert_eq!(cfs().ok(["--version"]), want("cfs"));
    assert_eq!(cfs().ok(["-V"]), want("cfs"));
    let names = cfs().personalities();
    for name in ["mkcomposefs", "composefs-info", "mount.composefs"] {
        for flag in ["-V", "--version"] {
            let o = Command::new(names.path().join(name))
                .arg(flag)
                .output()
                .unwrap();
            assert!(o.status.success(), "{name} {flag}");
            assert_eq!(
                String::from_utf8_lossy(&o.stdout),
                want(name),
                "{name} {flag}"
            );
        }
    }
}

/// `mount.composefs`'s command line is a clap definition now; a wrong one
/// still exits 1, as C's helper does and as mount(8) reads "incorrect
/// invocation" (not clap's 2, "system error"), and says what is wrong.
#[test]
fn mount_helper_usage_errors_exit_1() {
    let names = cfs().personalities();
    let helper = names.path().join("mount.composefs");
    for (args, says) in [
        (&["only-one"][..], "<MOUNTPOINT>"),
        (&["a", "b", "-x"], "unexpected argument '-x'"),
        (&["a", "b", "-o"], "a value is required for '-o <OPTIONS>'"),
    ] {
        let o = Command::new(&helper).args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let o = Command::new(&helper).arg("--help").output().unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("-o <OPTIONS>"));
}
