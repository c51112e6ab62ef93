//! Serving an image with `cfs fuse-serve --foreground` and looking at the
//! mount: a mount guard that unmounts and reaps its server, a walk that
//! records errors instead of failing, the server's request counters, and
//! time limits, so that a hung server fails a test instead of hanging CI.
//! Shared by the FUSE tests and the load and fault tests.

use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The `cfs` binary under test.
pub fn cfs() -> &'static str {
    env!("CARGO_BIN_EXE_cfs")
}

/// Why these tests can't run here, if they can't.
pub fn unavailable() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse".into());
    }
    let fs = || std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    for (name, module) in [("erofs", "erofs"), ("overlay", "overlay"), ("fuse", "fuse")] {
        if !fs().contains(name) {
            let _ = Command::new("modprobe").arg(module).status();
            if !fs().contains(name) {
                return Some(format!("the kernel has no {name}"));
            }
        }
    }
    None
}

/// Returns from the test with a message when [`unavailable`] says why it can't run.
#[allow(unused_macros)]
macro_rules! require_kernel {
    () => {
        if let Some(why) = $crate::common::fuse_mount::unavailable() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

#[allow(unused_imports)]
pub(crate) use require_kernel;

/// Runs `f` in a thread, failing the test if it takes longer than `limit`.
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

/// Runs a command that must succeed.
pub fn run_ok(cmd: &mut Command) {
    let out = cmd.output().expect("run a command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Unmounts `path`, lazily if a plain unmount fails; errors are ignored.
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

/// A `cfs fuse-serve --foreground` child, unmounted and reaped on drop.
pub struct FuseMount {
    dir: tempfile::TempDir,
    child: Child,
    log: PathBuf,
    _logdir: tempfile::TempDir,
    stopped: bool,
}

impl FuseMount {
    /// Serves `image` with `args` on a fresh directory; `Err` with the
    /// server's log when it isn't ready within 20 s.
    pub fn new(image: &Path, args: &[&str]) -> Result<FuseMount, String> {
        let dir = tempfile::tempdir().unwrap();
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("log");
        let mut child = Command::new(cfs())
            .arg("fuse-serve")
            .arg(image)
            .arg(dir.path())
            .args(["--foreground", "--notify-ready"])
            .args(args)
            .env("CFS_FUSE_STATS", "1")
            .stdin(Stdio::null())
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
        let start = Instant::now();
        while self.alive() {
            if start.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
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
        let start = Instant::now();
        while self.alive() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.alive() {
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

/// What a walk records of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    pub size: u64,
    pub rdev: u64,
    pub mtime: (i64, i64),
    pub target: Option<Vec<u8>>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// sha256 of the content, or the error reading it.
    pub content: Option<Result<String, String>>,
}

/// All xattrs of a path, not following symlinks, or the first error.
pub fn xattrs_of(path: &Path) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    let mut list = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(path, &mut list[..]).map_err(|e| format!("listxattr: {e}"))?;
    for name in list[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut v = vec![0u8; 65536];
        let n = rustix::fs::lgetxattr(path, name, &mut v[..])
            .map_err(|e| format!("getxattr {}: {e}", String::from_utf8_lossy(name)))?;
        v.truncate(n);
        out.insert(name.to_vec(), v);
    }
    Ok(out)
}

/// sha256 of a file's content, or the error (its errno) reading it.
pub fn sha256_file(path: &Path) -> Result<String, String> {
    let mut f = std::fs::File::open(path).map_err(|e| e.kind().to_string())?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) => return Err(format!("{:?}", e.raw_os_error())),
        }
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Walks `root`: lstat, readlink, xattrs, and (when `contents`) the sha256 of
/// every regular file up to 64 MiB. Errors are recorded, not fatal.
pub fn walk(root: &Path, contents: bool) -> BTreeMap<PathBuf, Result<Entry, String>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        let entry = (|| {
            let m = std::fs::symlink_metadata(&path).map_err(|e| format!("lstat: {e}"))?;
            let ft = m.file_type();
            if ft.is_dir() {
                let mut names: Vec<_> = std::fs::read_dir(&path)
                    .map_err(|e| format!("readdir: {e}"))?
                    .map(|e| e.map(|e| e.file_name()))
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("readdir: {e}"))?;
                names.sort();
                stack.extend(names.into_iter().map(|n| rel.join(n)));
            }
            let target = if ft.is_symlink() {
                Some(
                    std::fs::read_link(&path)
                        .map_err(|e| format!("readlink: {e}"))?
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                )
            } else {
                None
            };
            let content =
                (contents && ft.is_file() && m.size() <= 64 << 20).then(|| sha256_file(&path));
            Ok(Entry {
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                nlink: m.nlink(),
                size: m.size(),
                rdev: m.rdev(),
                mtime: (m.mtime(), m.mtime_nsec()),
                target,
                xattrs: xattrs_of(&path)?,
                content,
            })
        })();
        out.insert(rel, entry);
    }
    out
}

/// Differences between two walks, as readable lines (at most 20).
pub fn diff(
    a_name: &str,
    a: &BTreeMap<PathBuf, Result<Entry, String>>,
    b_name: &str,
    b: &BTreeMap<PathBuf, Result<Entry, String>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (p, ea) in a {
        match b.get(p) {
            None => out.push(format!("{}: only in {a_name}", p.display())),
            Some(eb) if eb != ea => out.push(format!(
                "{}:\n  {a_name}: {ea:?}\n  {b_name}: {eb:?}",
                p.display()
            )),
            _ => {}
        }
    }
    for p in b.keys().filter(|p| !a.contains_key(*p)) {
        out.push(format!("{}: only in {b_name}", p.display()));
    }
    out.truncate(20);
    out
}

/// [`walk`], failing the test after two minutes.
pub fn walk_bounded(root: &Path, contents: bool) -> BTreeMap<PathBuf, Result<Entry, String>> {
    let root = root.to_owned();
    bounded(Duration::from_secs(120), "a walk", move || {
        walk(&root, contents)
    })
}

/// Parses the server's `cfs-fuse stats:` line into counters.
pub fn stats(log: &str) -> BTreeMap<String, String> {
    log.lines()
        .find_map(|l| l.strip_prefix("cfs-fuse stats: "))
        .unwrap_or_else(|| panic!("no stats line in the server log:\n{log}"))
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}
