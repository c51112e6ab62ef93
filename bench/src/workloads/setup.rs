//! The bench directory: the tree's image in each peer's own format and store,
//! built once and kept (objects present), and the peers' binaries.
//!
//! ```text
//! DIR/cfs-repo        cfs create-image TREE usr (cfs repository, objects)
//! DIR/cfsctl-repo     cfsctl init --insecure; cfsctl create-image TREE usr
//! DIR/tree.sqsh       mksquashfs TREE
//! DIR/peers/bin/      cfsctl (cargo install composefs-ctl), erofsfuse if built
//! DIR/mnt             the mount point, owned by the plain user
//! DIR/mnt-ID          row ID's own, when rows are interleaved
//! ```

use crate::cfs;
use crate::workloads::who::USER;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// composefs-rs's command line tool, pinned.
const CFSCTL_VERSION: &str = "0.9.4";

/// Paths of the bench directory.
pub struct Bench {
    /// The directory itself.
    pub dir: PathBuf,
    /// The tree every image holds.
    pub tree: PathBuf,
}

impl Bench {
    /// `CFS_BENCH_DIR` (default `/var/tmp/cfs-bench-workloads`) of `CFS_BENCH_TREE`
    /// (default `/usr`).
    pub fn from_env() -> Bench {
        let dir = std::env::var_os("CFS_BENCH_DIR")
            .map_or_else(|| "/var/tmp/cfs-bench-workloads".into(), PathBuf::from);
        let tree = std::env::var_os("CFS_BENCH_TREE").map_or_else(|| "/usr".into(), PathBuf::from);
        Bench { dir, tree }
    }
    /// cfs's repository.
    pub fn cfs_repo(&self) -> PathBuf {
        self.dir.join("cfs-repo")
    }
    /// composefs-rs's repository.
    pub fn cfsctl_repo(&self) -> PathBuf {
        self.dir.join("cfsctl-repo")
    }
    /// The squashfs image.
    pub fn sqsh(&self) -> PathBuf {
        self.dir.join("tree.sqsh")
    }
    /// The mount point.
    pub fn mnt(&self) -> PathBuf {
        self.dir.join("mnt")
    }
    /// Row `id`'s own mount point (for interleaved rows, all mounted at
    /// once), made and given to the plain user if missing.
    pub fn mnt_of(&self, id: &str) -> PathBuf {
        let at = self.dir.join(format!("mnt-{id}"));
        if std::fs::create_dir(&at).is_ok() {
            run(Command::new("chown").arg(USER).arg(&at));
        }
        at
    }
    /// `cfsctl`.
    pub fn cfsctl(&self) -> PathBuf {
        self.dir.join("peers/bin/cfsctl")
    }
    /// `erofsfuse`, from the peers or the system, if there is one.
    pub fn erofsfuse(&self) -> Option<PathBuf> {
        let own = self.dir.join("peers/bin/erofsfuse");
        if own.exists() {
            return Some(own);
        }
        let sys = PathBuf::from("/usr/bin/erofsfuse");
        sys.exists().then_some(sys)
    }
    /// C composefs's `mount.composefs`, if built into `DIR/peers/c` (meson
    /// `--prefix=DIR/peers/c` from containers/composefs; bench/README.md).
    pub fn c_mount(&self) -> Option<PathBuf> {
        let own = self.c_prefix().join("sbin/mount.composefs");
        own.exists().then_some(own)
    }
    /// Where C composefs is installed for the bench.
    pub fn c_prefix(&self) -> PathBuf {
        self.dir.join("peers/c")
    }
    /// The erofs image (no overlay xattrs needed) for erofsfuse: cfs's image
    /// of the tree, by its file in the repository.
    pub fn cfs_image(&self) -> PathBuf {
        self.cfs_repo().join("images/refs/usr")
    }

    /// Builds whatever the rows `need` and is missing. Each step leaves a
    /// stamp, so a half-built step is redone.
    pub fn prepare(&self, need: Need) {
        std::fs::create_dir_all(&self.dir).expect("bench dir");
        if need.cfsctl && !self.cfsctl().exists() {
            run(Command::new("cargo")
                .args([
                    "install",
                    "--locked",
                    "composefs-ctl",
                    "--version",
                    CFSCTL_VERSION,
                    "--root",
                ])
                .arg(self.dir.join("peers")));
        }
        self.step("cfs-repo", || {
            let _ = std::fs::remove_dir_all(self.cfs_repo());
            run(Command::new(cfs())
                .arg("--repo")
                .arg(self.cfs_repo())
                .arg("init"));
            run(Command::new(cfs())
                .arg("--repo")
                .arg(self.cfs_repo())
                .arg("create-image")
                .arg(&self.tree)
                .arg("usr"));
        });
        if need.cfsctl {
            self.step("cfsctl-repo", || {
                let _ = std::fs::remove_dir_all(self.cfsctl_repo());
                run(Command::new(self.cfsctl())
                    .args(["init", "--algorithm", "fsverity-sha256-12", "--insecure"])
                    .arg(self.cfsctl_repo()));
                run(Command::new(self.cfsctl())
                    .arg("--repo")
                    .arg(self.cfsctl_repo())
                    .args(["create-image", "--no-propagate-usr-to-root"])
                    .arg(&self.tree)
                    .arg("usr"));
            });
        }
        if need.squashfs {
            self.step("squashfs", || {
                run(Command::new("mksquashfs")
                    .arg(&self.tree)
                    .arg(self.sqsh())
                    .args([
                        "-noappend",
                        "-no-progress",
                        "-quiet",
                        "-comp",
                        "gzip",
                        "-noD",
                        "-noF",
                    ]));
            });
        }
        // The plain user reads everything (the repositories are private by
        // default) and owns the mount point. Only what was built: the mount
        // points may have mounts on them (a read-only one fails `chmod`).
        run(Command::new("chmod").arg("a+rx").arg(&self.dir));
        for built in [
            self.cfs_repo(),
            self.cfsctl_repo(),
            self.sqsh(),
            self.dir.join("peers"),
        ] {
            if built.exists() {
                run(Command::new("chmod").arg("-R").arg("a+rX").arg(built));
            }
        }
        let _ = std::fs::create_dir(self.mnt());
        run(Command::new("chown").arg(USER).arg(self.mnt()));
    }

    fn step(&self, name: &str, f: impl FnOnce()) {
        let stamp = self.dir.join(format!(".done-{name}"));
        if stamp.exists() {
            return;
        }
        let t = Instant::now();
        eprintln!("bench: building {name} …");
        f();
        eprintln!("bench: {name} took {:.0} s", t.elapsed().as_secs_f64());
        std::fs::write(&stamp, self.tree.as_os_str().as_encoded_bytes()).expect("stamp");
    }
}

/// What the selected rows need built.
#[derive(Debug, Clone, Copy)]
pub struct Need {
    /// cfsctl and its repository.
    pub cfsctl: bool,
    /// The squashfs image.
    pub squashfs: bool,
}

/// Makes the machine ready for the plain-user rows: the user exists and may
/// open `/dev/fuse`. Returns what to restore.
pub fn users_and_fuse() -> Option<u32> {
    let _ = Command::new("useradd").args(["-m", USER]).output();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata("/dev/fuse").ok()?.permissions().mode() & 0o777;
    if mode & 0o006 != 0o006 {
        run(Command::new("chmod").arg("0666").arg("/dev/fuse"));
        return Some(mode);
    }
    None
}

/// Puts `/dev/fuse`'s mode back.
pub fn restore_fuse(mode: Option<u32>) {
    if let Some(m) = mode {
        run(Command::new("chmod").arg(format!("{m:o}")).arg("/dev/fuse"));
    }
}

fn run(cmd: &mut Command) {
    crate::run(cmd)
}

/// `enable_uring` of the fuse module, set for the io_uring rows and put back.
pub struct UringSwitch {
    old: Option<String>,
}

/// The module parameter.
const URING_PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

impl UringSwitch {
    /// Turns FUSE-over-io_uring on; `None` where the kernel has no such knob.
    pub fn on() -> Option<UringSwitch> {
        let old = std::fs::read_to_string(URING_PARAM).ok()?;
        std::fs::write(URING_PARAM, "Y").ok()?;
        eprintln!("bench: {URING_PARAM} = Y (was {})", old.trim());
        Some(UringSwitch {
            old: Some(old.trim().to_owned()),
        })
    }
}

impl Drop for UringSwitch {
    fn drop(&mut self) {
        if let Some(old) = self.old.take() {
            let _ = std::fs::write(URING_PARAM, &old);
            eprintln!("bench: {URING_PARAM} = {old} again");
        }
    }
}

/// Whether `path` names an existing file.
pub fn exists(path: &Path) -> bool {
    path.exists()
}
