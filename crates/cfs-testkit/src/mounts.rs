//! Mounts a test makes, undone by guards even when the test fails, and
//! bounded waits, so that a hung server fails a test instead of hanging CI.
//!
//! Tests look only at their own mounts: a guard knows its mount point, and
//! [`mounted_under`] filters the mount table to a test's own directory.

use crate::command::Cfs;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs `f` on another thread, failing the test if it takes longer than `limit`.
pub fn bounded<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} took longer than {limit:?}"))
}

/// Polls `done` every 20 ms until it holds (true) or `limit` passes (false).
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Unmounts `path` with umount(8), lazily if a plain unmount fails; errors
/// are ignored (a guard's last resort).
pub fn umount(path: &Path) {
    let ok = Command::new("umount")
        .arg(path)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(path)
            .stderr(Stdio::null())
            .status();
    }
}

/// The lines of this process's mount table that name a path under `dir`:
/// what a test left mounted of its own (never anyone else's mounts).
pub fn mounted_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&*dir))
        .map(str::to_owned)
        .collect()
}

/// The lines of `losetup -a` whose backing file's name contains `path`:
/// the loop devices bound to it, or to anything under it (empty without
/// `losetup`).
pub fn loop_devices_naming(path: &Path) -> Vec<String> {
    let Ok(o) = Command::new("losetup").arg("-a").output() else {
        return Vec::new();
    };
    let path = path.to_string_lossy();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains(&*path))
        .map(str::to_owned)
        .collect()
}

/// Fails if a mount or a loop device still refers to anything under `dir`.
pub fn assert_nothing_left(dir: &Path) {
    let left = mounted_under(dir);
    assert!(left.is_empty(), "mounts left behind: {left:#?}");
    let left = loop_devices_naming(dir);
    assert!(left.is_empty(), "loop devices left behind: {left:#?}");
}

/// True once `mnt` is no longer a mount point in this process's table.
pub fn unmounted_within(mnt: &Path, limit: Duration) -> bool {
    wait_until(limit, || mounted_under(mnt).is_empty())
}

/// A mount point with something `cfs mount` mounted on it, unmounted on drop
/// (`cfs unmount`, lazily if that fails).
#[derive(Debug)]
pub struct Mounted {
    cfs: Cfs,
    path: PathBuf,
}

impl Mounted {
    /// Takes charge of what is mounted on `path`.
    pub fn new(cfs: &Cfs, path: impl Into<PathBuf>) -> Mounted {
        Mounted {
            cfs: cfs.clone(),
            path: path.into(),
        }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `cfs mount ARGS…` (`mnt` being its mount point); on success the
    /// guard, else the command's stderr.
    pub fn mount<S: AsRef<std::ffi::OsStr>>(
        cfs: &Cfs,
        args: &[S],
        mnt: &Path,
    ) -> Result<Mounted, String> {
        let mut all = vec![std::ffi::OsString::from("mount")];
        all.extend(args.iter().map(|a| a.as_ref().to_owned()));
        let o = cfs.run(&all);
        if o.status.success() {
            Ok(Mounted::new(cfs, mnt))
        } else {
            Err(crate::command::stderr(&o))
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if !self
            .cfs
            .run(["unmount".as_ref(), self.path.as_os_str()])
            .status
            .success()
        {
            let _ = self
                .cfs
                .run(["unmount".as_ref(), "--lazy".as_ref(), self.path.as_os_str()]);
        }
    }
}

/// A `cfs fuse-serve --foreground` child serving an image on a fresh
/// directory, unmounted and reaped on drop.
pub struct FuseMount {
    dir: tempfile::TempDir,
    child: Child,
    log: PathBuf,
    _logdir: tempfile::TempDir,
    stopped: bool,
}

impl FuseMount {
    /// Serves `image` with `args`; `Err` with the server's log when it isn't
    /// ready within 20 s. The server counts requests (`CFS_FUSE_STATS`).
    pub fn new(cfs: &Cfs, image: &Path, args: &[&str]) -> Result<FuseMount, String> {
        let dir = tempfile::tempdir().unwrap();
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("log");
        let mut child = cfs
            .command([
                "fuse-serve".as_ref(),
                image.as_os_str(),
                dir.path().as_os_str(),
            ])
            .args(["--foreground", "--notify-ready"])
            .args(args)
            .env("CFS_FUSE_STATS", "1")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start cfs fuse-serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let ready = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        let m = FuseMount {
            dir,
            child,
            log,
            _logdir: logdir,
            stopped: false,
        };
        if ready.trim() != "ready" {
            return Err(format!("not ready: {}", m.log()));
        }
        Ok(m)
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// What the server wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// True while the server runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    /// The server's process id.
    pub fn server_pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILLs the server, leaving its mount behind (clients then get
    /// ENOTCONN until it is unmounted).
    pub fn kill_server(&mut self) {
        let _ = self.child.kill();
    }

    /// Waits up to `limit` for the server to exit; true once it has (and is reaped).
    pub fn exited_within(&mut self, limit: Duration) -> bool {
        wait_until(limit, || !self.alive())
    }

    /// Unmounts, waits for the server to exit, and returns its log.
    pub fn finish(mut self) -> String {
        self.stop();
        self.log()
    }

    fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        umount(self.dir.path());
        // Generous: on a loaded machine a server may take seconds to see its
        // connection end and write its stats (which tests read).
        if !self.exited_within(Duration::from_secs(60)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Parses a FUSE server's `cfs-fuse stats:` line (`CFS_FUSE_STATS=1`) into counters.
pub fn fuse_stats(log: &str) -> std::collections::BTreeMap<String, String> {
    log.lines()
        .find_map(|l| l.strip_prefix("cfs-fuse stats: "))
        .unwrap_or_else(|| panic!("no stats line in the server log:\n{log}"))
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// An EROFS mount of an image by mount(8) (directly, else through a loop
/// device), unmounted on drop: the kernel's own view of an image.
pub struct ErofsMount(tempfile::TempDir);

impl ErofsMount {
    /// Mounts `image` read-only on a fresh directory.
    pub fn new(image: &Path) -> Result<ErofsMount, String> {
        let dir = tempfile::tempdir().unwrap();
        let mut last = String::new();
        for opts in ["ro", "ro,loop"] {
            let o = Command::new("mount")
                .args(["-t", "erofs", "-o", opts])
                .arg(image)
                .arg(dir.path())
                .output()
                .map_err(|e| format!("mount: {e}"))?;
            if o.status.success() {
                return Ok(ErofsMount(dir));
            }
            last = crate::command::stderr(&o);
        }
        Err(format!("mount -t erofs {}: {last}", image.display()))
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for ErofsMount {
    fn drop(&mut self) {
        umount(self.0.path());
    }
}

/// composefs as the kernel mounts it, by mount(8) and nothing of cfs: an
/// EROFS mount of the image and an overlay of it with the object directory
/// as a data-only layer; both unmounted on drop. The reference the FUSE
/// modes are compared with.
pub struct KernelOverlay {
    overlay: tempfile::TempDir,
    erofs: ErofsMount,
}

impl KernelOverlay {
    /// Mounts `image` over `objects`.
    pub fn new(image: &Path, objects: &Path) -> Result<KernelOverlay, String> {
        let erofs = ErofsMount::new(image)?;
        let overlay = tempfile::tempdir().unwrap();
        let opts = format!(
            "ro,lowerdir={}::{},metacopy=on,redirect_dir=on",
            erofs.path().display(),
            objects.display()
        );
        let o = Command::new("mount")
            .args(["-t", "overlay", "-o", &opts, "none"])
            .arg(overlay.path())
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !o.status.success() {
            return Err(format!("mount -t overlay: {}", crate::command::stderr(&o)));
        }
        Ok(KernelOverlay { overlay, erofs })
    }

    /// The overlay's mount point.
    pub fn path(&self) -> &Path {
        self.overlay.path()
    }

    /// The EROFS mount under it: the image's raw view.
    pub fn erofs(&self) -> &Path {
        self.erofs.path()
    }
}

impl Drop for KernelOverlay {
    fn drop(&mut self) {
        umount(self.overlay.path());
    }
}
