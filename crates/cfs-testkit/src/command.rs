//! Running the `cfs` binary under test, and judging what a command did.
//!
//! The binary's path is known only to the crate whose tests run it
//! (`env!("CARGO_BIN_EXE_cfs")`), so a test builds a [`Cfs`] from it once;
//! everything else here takes that runner.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `cfs` binary under test, maybe bound to a repository (`--repo`).
/// Commands run with `CFS_REPO` and `CFS_PARSE_STRICT` cleared, so the
/// caller's environment never changes what a test sees.
#[derive(Debug, Clone)]
pub struct Cfs {
    exe: PathBuf,
    repo: Option<PathBuf>,
}

impl Cfs {
    /// The binary at `exe`.
    pub fn new(exe: impl Into<PathBuf>) -> Cfs {
        Cfs {
            exe: exe.into(),
            repo: None,
        }
    }

    /// The binary's path.
    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// The same binary, every command given `--repo REPO`.
    pub fn repo(&self, repo: impl AsRef<Path>) -> Cfs {
        Cfs {
            exe: self.exe.clone(),
            repo: Some(repo.as_ref().to_owned()),
        }
    }

    /// A command for `cfs [--repo REPO] ARGS…`, to add to before running.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new(&self.exe);
        if let Some(repo) = &self.repo {
            c.arg("--repo").arg(repo);
        }
        c.args(args)
            .env_remove("CFS_REPO")
            .env_remove("CFS_PARSE_STRICT")
            .stdin(Stdio::null());
        c
    }

    /// A command for `cfs [--repo REPO]`, arguments to be added.
    pub fn cmd(&self) -> Command {
        self.command(std::iter::empty::<&OsStr>())
    }

    /// Runs `cfs ARGS…` to completion.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = self.command(args);
        c.output()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.exe.display()))
    }

    /// Runs a command that must succeed; its stdout.
    pub fn ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        ok(self.run(args))
    }

    /// Runs a command that must fail; its stderr.
    pub fn fails<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        err(self.run(args))
    }

    /// A directory holding `mkcomposefs`, `composefs-info` and
    /// `mount.composefs` as links to the binary (it picks its personality by
    /// `argv[0]`); removed on drop.
    pub fn personalities(&self) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for name in ["mkcomposefs", "composefs-info", "mount.composefs"] {
            std::os::unix::fs::symlink(&self.exe, d.path().join(name)).unwrap();
        }
        d
    }
}

/// An argument as `&OsStr`, for argument lists mixing strings and paths.
pub fn os<S: AsRef<OsStr> + ?Sized>(s: &S) -> &OsStr {
    s.as_ref()
}

/// Arguments mixing strings and paths, owned.
pub fn args<S: AsRef<OsStr>>(items: &[S]) -> Vec<OsString> {
    items.iter().map(|s| s.as_ref().to_owned()).collect()
}

/// Stdout of a command that must have succeeded (the failure shows both
/// streams).
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "failed ({}): {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8(o.stdout).expect("stdout is UTF-8")
}

/// Stderr of a command that must have failed.
pub fn err(o: Output) -> String {
    assert!(
        !o.status.success(),
        "unexpected success: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A command's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A command's stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The stdout of a script that must have succeeded: fails the test with who
/// ran it, the script, its stdout and its stderr otherwise.
pub fn script_ok(who: impl std::fmt::Debug, script: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{who:?} script failed:\n{script}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must succeed.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
