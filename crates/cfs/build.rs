//! Records the git commit cfs is built from, for `cfs --version`, as the
//! compile-time variable `CFS_GIT_COMMIT`: `CFS_GIT_COMMIT` from the
//! environment if set (a packager building from a tarball who knows the
//! commit), else `git rev-parse` of the checkout this crate is tracked in,
//! else `unknown` (a tarball without `.git`, no git installed, or a checkout
//! of some other repository around an unpacked tarball).
//!
//! Cargo re-runs this script when HEAD moves: it watches the HEAD file
//! (a checkout or a switch of branch), the ref HEAD points to (a commit on
//! the branch) and `packed-refs` (where a ref lives once packed), each only
//! if it exists (a watched path that doesn't exist re-runs the script on
//! every build).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=CFS_GIT_COMMIT");
    println!("cargo:rerun-if-changed=build.rs");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = std::env::var("CFS_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| commit_of(&dir))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=CFS_GIT_COMMIT={commit}");
}

/// The checkout's commit, if this crate is tracked in it (a checkout of
/// another repository around an unpacked tarball is not ours); watches
/// HEAD in any case.
fn commit_of(dir: &Path) -> Option<String> {
    watch_head(dir);
    git(dir, &["ls-files", "--error-unmatch", "Cargo.toml"])?;
    git(dir, &["rev-parse", "--short=12", "HEAD"])
}

/// Asks cargo to re-run this script when HEAD, the branch it names or the
/// packed refs change.
fn watch_head(dir: &Path) {
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        let Some(path) = git(
            dir,
            &["rev-parse", "--path-format=absolute", "--git-path", &name],
        ) else {
            continue;
        };
        if Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

/// `git ARGS` in `dir`: its trimmed output, or `None` if git is missing,
/// fails, or prints nothing.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}
