//! How the commands behave for the people who use them, end to end with the
//! real binary, as root, as the plain user `cfs-test` and as that user in a
//! user namespace:
//! - `defaults`: the default repository is the real user's, and errors name it;
//! - `arguments`: `--repo` means something or is refused, IMAGE arguments
//!   are files, `-` or names, `-` is stdin/stdout;
//! - `readonly`: read-only repositories serve every command that only reads;
//! - `images`: `create-image --force`, `compute-id`, `import-image`,
//!   `create-dumpfile`;
//! - `mounts`: the object check, `--upperdir`, the kernel's reasons, idmap;
//! - `messages`: errors that quote input stay printable.

mod arguments;
mod defaults;
mod images;
mod messages;
mod mounts;
mod readonly;

use crate::cfs;
use cfs_testkit::mounts::mounted_under;
use cfs_testkit::users::{As, Script, Tag, TEST_USER};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// What the user-facing tests need besides root and the file systems.
pub const TOOLS: &[&str] = &["setpriv", "unshare", "fusermount3", "timeout"];

/// A test's own directory, readable by the test user, with `home` owned by
/// that user and a small tree `home/src` (an inline file, an external one,
/// a hard link) in it. On drop, whatever is still mounted under it is
/// detached (a failed test's leftovers, never anyone else's).
pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub tag: Tag,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        let home = dir.path().join("home");
        let src = home.join("src");
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::write(src.join("small"), b"inline\n").unwrap();
        std::fs::write(src.join("d/big"), b"an external file\n".repeat(500)).unwrap();
        std::fs::hard_link(src.join("d/big"), src.join("big-link")).unwrap();
        cfs_testkit::command::run_ok(
            std::process::Command::new("chown")
                .arg("-R")
                .arg(format!("{TEST_USER}:{TEST_USER}"))
                .arg(&home),
        );
        Scratch {
            dir,
            home,
            tag: Tag::new(),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `script` as `who` in `home` under `sh -eu`, with `env`, bounded.
    pub fn run(&self, who: As, env: &[(&str, &OsStr)], script: &str) -> Output {
        Script {
            cfs: &cfs(),
            who,
            dir: &self.home,
            env,
            limit: Duration::from_secs(90),
            tag: Some(&self.tag),
        }
        .run(script)
    }

    /// [`Scratch::run`], which must succeed; its stdout.
    pub fn run_ok(&self, who: As, env: &[(&str, &OsStr)], script: &str) -> String {
        cfs_testkit::command::script_ok(who, script, self.run(who, env, script))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for line in mounted_under(self.dir.path()).iter().rev() {
            if let Some(mnt) = line.split(' ').nth(4) {
                cfs_testkit::mounts::umount(Path::new(mnt));
            }
        }
    }
}

/// Sets a path's permission bits.
pub fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
}

/// The home directory of the test user in `/etc/passwd`.
pub fn passwd_home() -> String {
    let o = std::process::Command::new("getent")
        .args(["passwd", TEST_USER])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .split(':')
        .nth(5)
        .unwrap()
        .to_owned()
}
