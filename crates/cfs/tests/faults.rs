//! Load and faults, end to end with the real binary (the "Hardening" issue):
//! many readers on FUSE mounts for as long as asked, the FUSE server killed
//! mid-read, the repository's file system full mid-import, gc killed
//! mid-sweep. The promise under test: no fault makes cfs panic, hang, lose
//! data or write where it shouldn't. What each test proves, the numbers of a
//! long run and how to rerun it: `docs/hardening.md`.
//!
//! Needs root (mounts, `/proc/sys/vm/drop_caches`); each test says why it
//! skips otherwise. Every wait is bounded, so a hang fails a test instead of
//! hanging CI. `CFS_FUSE_LOAD_SECS` sets the load test's duration (12 s by
//! default), `CFS_GC_KILLS` the number of gc kills (6), `CFS_TEST_SEED` the
//! seed of the kill delays.

mod common;
mod repo_cli;

use common::fuse_mount::{self as fm, bounded, require_kernel, FuseMount};
use repo_cli::{expected_id, fsck_json, generate, objects_match_names, Rng};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const CFS: &str = env!("CARGO_BIN_EXE_cfs");

/// The FUSE tests drop caches and load both cores: one at a time.
static FUSE_SERIAL: Mutex<()> = Mutex::new(());

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Asks the kernel to drop clean caches: 1 page cache, 2 dentries and
/// inodes (and with an inode its pages), 3 both. Needs root.
fn drop_caches(what: u8) {
    let _ = std::fs::write("/proc/sys/vm/drop_caches", format!("{what}\n"));
}

/// Drops a file's pages from the page cache, so that its next read is a
/// request to the FUSE server again.
fn forget_pages(f: &File) {
    let _ = rustix::fs::fadvise(f, 0, None, rustix::fs::Advice::DontNeed);
}

/// `len` bytes of a pattern unique to `seed`.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// File sizes around the inline (64 B) and block (4 KiB) limits, up to 300 kB.
const SIZES: [usize; 10] = [0, 10, 64, 65, 4095, 4096, 4097, 20_000, 100_000, 300_000];

/// A tree for the FUSE tests: `dirs` directories of `per_dir` files (sizes
/// from [`SIZES`], a user xattr on every fifth), a symlink, a hard link and a
/// long symlink per directory, and `big` files of `big_size` bytes in `big/`.
fn load_tree(src: &Path, dirs: usize, per_dir: usize, big: usize, big_size: usize) {
    for d in 0..dirs {
        let dir = src.join(format!("d{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..per_dir {
            let i = d * per_dir + f;
            let path = dir.join(format!("f{f:03}"));
            std::fs::write(&path, pattern(i as u64, SIZES[i % SIZES.len()])).unwrap();
            if i.is_multiple_of(5) {
                common::set_xattr(&path, "user.n", i.to_string().as_bytes());
            }
        }
        std::os::unix::fs::symlink("f001", dir.join("link")).unwrap();
        std::os::unix::fs::symlink("y".repeat(900 + d), dir.join("long-link")).unwrap();
        std::fs::hard_link(dir.join("f002"), dir.join("hardlink")).unwrap();
    }
    std::fs::create_dir(src.join("big")).unwrap();
    for k in 0..big {
        let data = pattern(1_000_000 + k as u64, big_size);
        std::fs::write(src.join(format!("big/b{k}")), data).unwrap();
    }
}

/// The first walk of a mount must show the source: every path, its type and
/// mode, size, content, symlink target and xattrs.
fn assert_shows_source(src: &Path, mounted: &BTreeMap<PathBuf, Result<fm::Entry, String>>) {
    let source = common::walk(src);
    assert_eq!(source.len(), mounted.len(), "the mount shows other paths");
    for (p, s) in &source {
        let m = match mounted.get(p) {
            Some(Ok(m)) => m,
            other => panic!("{}: {other:?}", p.display()),
        };
        let xattrs: BTreeMap<Vec<u8>, Vec<u8>> = s
            .xattrs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
            .collect();
        let same = m.mode == s.mode
            && s.size.is_none_or(|size| size == m.size)
            && m.content.as_ref().map(|c| c.as_ref().ok()) == s.sha256.as_ref().map(Some)
            && m.target.as_deref() == s.symlink.as_ref().map(|t| t.as_bytes())
            && m.xattrs == xattrs;
        assert!(same, "{}:\n  source {s:?}\n  mount  {m:?}", p.display());
    }
}

/// What the load test's readers share.
struct Load {
    /// The first walk: what every later walk must see again.
    reference: BTreeMap<PathBuf, Result<fm::Entry, String>>,
    paths: Vec<PathBuf>,
    /// Regular files and the sha256 of their content.
    files: Vec<(PathBuf, String)>,
    /// Directories and their number of entries.
    dirs: BTreeMap<PathBuf, usize>,
    /// The big files, in the source tree.
    big: Vec<(PathBuf, u64)>,
    src: PathBuf,
    deadline: Instant,
    errors: Mutex<Vec<String>>,
}

impl Load {
    fn new(
        reference: BTreeMap<PathBuf, Result<fm::Entry, String>>,
        src: &Path,
        deadline: Instant,
    ) -> Load {
        let mut files = Vec::new();
        let mut dirs: BTreeMap<PathBuf, usize> = BTreeMap::new();
        for (p, e) in &reference {
            let e = e.as_ref().unwrap();
            if let Some(Ok(sha)) = &e.content {
                files.push((p.clone(), sha.clone()));
            }
            if e.mode & 0o170000 == 0o040000 {
                dirs.entry(p.clone()).or_default();
            }
            if let Some(parent) = p.parent().filter(|_| !p.as_os_str().is_empty()) {
                *dirs.entry(parent.to_path_buf()).or_default() += 1;
            }
        }
        let big = std::fs::read_dir(src.join("big"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    PathBuf::from("big").join(e.file_name()),
                    e.metadata().unwrap().len(),
                )
            })
            .collect();
        Load {
            paths: reference.keys().cloned().collect(),
            reference,
            files,
            dirs,
            big,
            src: src.to_owned(),
            deadline,
            errors: Mutex::new(Vec::new()),
        }
    }

    fn fail(&self, what: String) {
        let mut e = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if e.len() < 40 {
            e.push(what);
        }
    }

    fn over(&self) -> bool {
        Instant::now() >= self.deadline
    }

    fn reference(&self, p: &Path) -> &fm::Entry {
        self.reference[p].as_ref().unwrap()
    }

    /// A full walk (lstat, readdir, readlink, every xattr), equal to the reference.
    fn walk(&self, root: &Path) -> u64 {
        let got = fm::walk(root, false);
        if got.len() != self.reference.len() {
            self.fail(format!(
                "walk of {} saw {} paths",
                root.display(),
                got.len()
            ));
        }
        for (p, e) in &got {
            let want = fm::Entry {
                content: None,
                ..self.reference(p).clone()
            };
            match e {
                Ok(e) if *e == want => {}
                e => self.fail(format!("walk: {}: {e:?}, want {want:?}", p.display())),
            }
        }
        got.len() as u64
    }

    /// Reads every file (in a random order), dropping its pages afterwards.
    fn read(&self, root: &Path, rng: &mut Rng) -> u64 {
        let mut order: Vec<usize> = (0..self.files.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut n = 0;
        for i in order {
            if self.over() {
                break;
            }
            let (p, want) = &self.files[i];
            match sha256_and_forget(&root.join(p)) {
                Ok(got) if got == *want => {}
                got => self.fail(format!("read {}: {got:?}, want {want}", p.display())),
            }
            n += 1;
        }
        n
    }

    /// lstat, readlink, getxattr and readdir of random paths.
    fn stat(&self, root: &Path, rng: &mut Rng) -> u64 {
        for _ in 0..200 {
            let p = &self.paths[rng.below(self.paths.len() as u64) as usize];
            let want = self.reference(p);
            let path = root.join(p);
            let check = || -> Result<(), String> {
                let m = std::fs::symlink_metadata(&path).map_err(|e| format!("lstat: {e}"))?;
                if (m.mode(), m.mtime(), m.mtime_nsec()) != (want.mode, want.mtime.0, want.mtime.1)
                {
                    return Err(format!("lstat: {m:?}"));
                }
                if let Some(t) = &want.target {
                    let got = std::fs::read_link(&path).map_err(|e| format!("readlink: {e}"))?;
                    if got.as_os_str().as_bytes() != t.as_slice() {
                        return Err(format!("readlink: {}", got.display()));
                    }
                }
                for (name, value) in &want.xattrs {
                    let mut buf = vec![0u8; 65536];
                    let n = rustix::fs::lgetxattr(&path, name.as_slice(), &mut buf[..])
                        .map_err(|e| format!("getxattr: {e}"))?;
                    if buf[..n] != value[..] {
                        return Err("getxattr: wrong value".into());
                    }
                }
                if let Some(&entries) = self.dirs.get(p) {
                    let n = std::fs::read_dir(&path)
                        .and_then(|d| d.collect::<Result<Vec<_>, _>>())
                        .map_err(|e| format!("readdir: {e}"))?
                        .len();
                    if n != entries {
                        return Err(format!("readdir: {n} entries, want {entries}"));
                    }
                }
                Ok(())
            };
            if let Err(e) = check() {
                self.fail(format!("{}: {e}", p.display()));
            }
        }
        200
    }

    /// Reads random ranges of the big files, compared with the source.
    fn pread(&self, root: &Path, rng: &mut Rng) -> u64 {
        for _ in 0..40 {
            let (p, size) = &self.big[rng.below(self.big.len() as u64) as usize];
            let offset = rng.below(*size);
            let len = (1 + rng.below(1 << 20)).min(size - offset) as usize;
            let mut want = vec![0u8; len];
            File::open(self.src.join(p))
                .and_then(|f| f.read_exact_at(&mut want, offset))
                .unwrap();
            let mut got = vec![0u8; len];
            let read = File::open(root.join(p)).and_then(|f| {
                f.read_exact_at(&mut got, offset)?;
                forget_pages(&f);
                Ok(())
            });
            match read {
                Ok(()) if got == want => {}
                Ok(()) => self.fail(format!("pread {} at {offset}: wrong data", p.display())),
                Err(e) => self.fail(format!("pread {} at {offset}: {e}", p.display())),
            }
        }
        40
    }
}

/// sha256 of a file, read in 256 KiB pieces; its pages are dropped afterwards.
fn sha256_and_forget(path: &Path) -> Result<String, String> {
    let mut f = File::open(path).map_err(|e| format!("open: {e}"))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    forget_pages(&f);
    Ok(format!("{:x}", h.finalize()))
}

/// The server's resident memory in KiB and its open fds.
fn server_usage(pid: u32) -> (u64, usize) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (rss, fds)
}

/// Resident memory may not grow once warm: the second half of the samples
/// may not exceed the first half's peak by more than this (allocator noise).
const RSS_SLACK_KB: u64 = 8 * 1024;
/// Nor may any sample exceed the first (taken after a second of load) by more.
const RSS_GROWTH_KB: u64 = 32 * 1024;

/// Many readers on two mounts of one image, for `CFS_FUSE_LOAD_SECS`: one
/// server handing contents to the kernel (passthrough, as root), one reading
/// them itself (`--no-passthrough`). Caches are defeated so the servers see
/// real work: dentries and inodes dropped every second (`drop_caches`),
/// every file's pages dropped after it is read (`fadvise`). Zero errors,
/// the same answers as the first walk (which must show the source), and
/// each server's memory and fds flat, sampled every second.
#[test]
fn many_readers_see_no_errors_and_server_memory_stays_flat() {
    require_kernel!();
    let _serial = FUSE_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let secs = env_u64("CFS_FUSE_LOAD_SECS", 12).max(4);
    let tmp = ScratchFs::fast(1024);
    let src = tmp.path().join("src");
    load_tree(&src, 24, 50, 4, 8 << 20);
    let (image, objects, _) = common::build(tmp.path(), &src);
    let basedir = objects.to_str().unwrap();
    let mut mounts = [
        FuseMount::new(&image, &["--basedir", basedir]).unwrap(),
        FuseMount::new(&image, &["--basedir", basedir, "--no-passthrough"]).unwrap(),
    ];
    let reference = fm::walk_bounded(mounts[0].path(), true);
    assert_shows_source(&src, &reference);
    assert_eq!(fm::walk_bounded(mounts[1].path(), true), reference);

    let start = Instant::now();
    let load = Arc::new(Load::new(
        reference,
        &src,
        start + Duration::from_secs(secs),
    ));
    const ROLES: [&str; 4] = ["walk", "read", "stat", "pread"];
    let workers: Vec<_> = (0..16)
        .map(|i| {
            let load = load.clone();
            let root = mounts[(i / 4) % 2].path().to_owned();
            std::thread::spawn(move || {
                let mut rng = Rng(0x5EED + i as u64);
                let (mut rounds, mut ops) = (0u64, 0u64);
                while !load.over() {
                    ops += match ROLES[i % 4] {
                        "walk" => load.walk(&root),
                        "read" => load.read(&root, &mut rng),
                        "stat" => load.stat(&root, &mut rng),
                        _ => load.pread(&root, &mut rng),
                    };
                    rounds += 1;
                }
                (i % 4, rounds, ops)
            })
        })
        .collect();

    // Once a second: drop dentries and inodes, then sample both servers.
    let pids = [mounts[0].server_pid(), mounts[1].server_pid()];
    let mut samples: [Vec<(u64, usize)>; 2] = Default::default();
    let mut tick = start;
    while tick < load.deadline {
        tick += Duration::from_secs(1);
        std::thread::sleep(tick.saturating_duration_since(Instant::now()));
        drop_caches(2);
        for (s, pid) in samples.iter_mut().zip(pids) {
            s.push(server_usage(pid));
        }
    }
    let done = bounded(
        Duration::from_secs(secs + 120),
        "the load test's readers",
        move || {
            workers
                .into_iter()
                .map(|w| w.join().expect("a reader panicked"))
                .collect::<Vec<_>>()
        },
    );
    let errors = load.errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "errors under load:\n{}",
        errors.join("\n")
    );
    let mut per_role = [(0u64, 0u64); 4];
    for (role, rounds, ops) in done {
        per_role[role].0 += rounds;
        per_role[role].1 += ops;
    }
    eprintln!("{secs} s, 16 readers on 2 mounts:");
    for (role, (rounds, ops)) in ROLES.iter().zip(per_role) {
        eprintln!("  {role}: {rounds} rounds, {ops} operations");
        assert!(rounds > 0, "no {role} round finished");
    }

    for (k, m) in mounts.iter_mut().enumerate() {
        assert!(m.alive(), "server {k} died:\n{}", m.log());
    }
    for (name, s) in ["passthrough", "no-passthrough"].iter().zip(&samples) {
        let half = s.len() / 2;
        let peak = |part: &[(u64, usize)]| {
            part.iter()
                .fold((0, 0), |(r, f), &(rss, fds)| (r.max(rss), f.max(fds)))
        };
        let (first, second) = (peak(&s[..half]), peak(&s[half..]));
        let rss: Vec<u64> = s.iter().map(|x| x.0).collect();
        eprintln!(
            "  {name} server RSS kB: first {}, peak {} in the first half, {} in the second, last {}; fds peak {} then {}",
            rss[0],
            first.0,
            second.0,
            rss[rss.len() - 1],
            first.1,
            second.1
        );
        assert!(
            second.0 <= first.0 + RSS_SLACK_KB,
            "{name} server RSS grew in the second half: {rss:?}"
        );
        assert!(
            first.0.max(second.0) <= rss[0] + RSS_GROWTH_KB,
            "{name} server RSS grew by more than {RSS_GROWTH_KB} kB: {rss:?}"
        );
        assert!(
            second.1 <= first.1 + 8,
            "{name} server fds grew in the second half: {s:?}"
        );
    }
    let [pt, np] = mounts;
    for (name, m, own_reads) in [("passthrough", pt, false), ("no-passthrough", np, true)] {
        let log = m.finish();
        assert!(!log.contains("panicked"), "{log}");
        let s = fm::stats(&log);
        eprintln!("  {name} server: {}", log.lines().next().unwrap_or(""));
        let n = |k: &str| s[k].parse::<u64>().unwrap();
        // LOOKUPs only come once the dentry cache is dropped: the caches
        // were defeated and the server did the work.
        assert!(n("lookup") > 0 && n("open") > 0, "{name}: {log}");
        if own_reads {
            assert!(n("read") > 0, "{name}: the server read nothing: {log}");
            assert!(s["passthrough"] == "false", "{log}");
        }
    }
}

/// How a reader of the kill test ended.
#[derive(Debug)]
enum End {
    /// An operation failed with this error.
    Failed { op: String, error: std::io::Error },
    /// Something read back differs from the source.
    WrongData(String),
}

/// Starts a reader thread that loops over `work` until it fails, counting
/// passes; it reports how it ended on `tx`.
fn reader(
    name: String,
    passes: Arc<AtomicU64>,
    tx: mpsc::Sender<(String, End)>,
    mut work: impl FnMut() -> Result<(), End> + Send + 'static,
) {
    std::thread::spawn(move || loop {
        if let Err(end) = work() {
            let _ = tx.send((name, end));
            return;
        }
        passes.fetch_add(1, Ordering::Relaxed);
    });
}

fn failed(op: &str) -> impl FnOnce(std::io::Error) -> End + '_ {
    move |error| End::Failed {
        op: op.to_owned(),
        error,
    }
}

/// Reads a file through, its pages dropped first so that every read is a
/// request to the server (or, with passthrough, to the backing file).
fn read_through(path: &Path, want: &[u8]) -> Result<(), End> {
    let mut f = File::open(path).map_err(failed("open"))?;
    forget_pages(&f);
    let mut buf = vec![0u8; 128 << 10];
    let mut at = 0;
    loop {
        let n = f.read(&mut buf).map_err(failed("read"))?;
        if n == 0 {
            break;
        }
        if want.get(at..at + n) != Some(&buf[..n]) {
            return Err(End::WrongData(format!("{} at {at}", path.display())));
        }
        at += n;
    }
    if at != want.len() {
        return Err(End::WrongData(format!("{}: {at} bytes", path.display())));
    }
    Ok(())
}

/// lstat, readdir, readlink and listxattr + getxattr of every path, as the
/// reference has them (getxattr is never cached by the kernel).
fn walk_through(
    root: &Path,
    reference: &BTreeMap<PathBuf, Result<fm::Entry, String>>,
) -> Result<(), End> {
    for (p, want) in reference {
        let want = want.as_ref().unwrap();
        let path = root.join(p);
        let m = std::fs::symlink_metadata(&path).map_err(failed("lstat"))?;
        if m.mode() != want.mode {
            return Err(End::WrongData(format!(
                "{}: mode {:o}",
                p.display(),
                m.mode()
            )));
        }
        if m.is_dir() {
            std::fs::read_dir(&path)
                .and_then(|d| d.collect::<Result<Vec<_>, _>>())
                .map_err(failed("readdir"))?;
        }
        if m.is_symlink() {
            std::fs::read_link(&path).map_err(failed("readlink"))?;
        }
        let mut names = vec![0u8; 65536];
        let n = rustix::fs::llistxattr(&path, &mut names[..])
            .map_err(|e| failed("listxattr")(e.into()))?;
        let mut got = BTreeMap::new();
        for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let mut value = vec![0u8; 65536];
            let n = rustix::fs::lgetxattr(&path, name, &mut value[..])
                .map_err(|e| failed("getxattr")(e.into()))?;
            value.truncate(n);
            got.insert(name.to_vec(), value);
        }
        if got != want.xattrs {
            return Err(End::WrongData(format!("{}: xattrs", p.display())));
        }
    }
    Ok(())
}

/// True when `path` is a mount point in this process's mount table.
fn is_mounted(path: &Path) -> bool {
    let want = path.as_os_str().as_bytes();
    std::fs::read("/proc/self/mountinfo")
        .unwrap()
        .split(|&b| b == b'\n')
        .any(|l| l.split(|&b| b == b' ').nth(4) == Some(want))
}

/// The server SIGKILLed while readers stream big files (their pages dropped,
/// so each read is a request) and walkers stat, list and read xattrs: every
/// reader gets an error (ENOTCONN, ECONNABORTED or EIO), none a hang or
/// wrong data, within 10 s; then `cfs unmount` removes the mount, `cfs
/// mounts` no longer lists it, and no server process is left. With the
/// server reading contents itself, and with passthrough (where a read in
/// progress may finish from the backing file, and the next open fails).
#[test]
fn killed_server_fails_every_reader_and_unmount_cleans_up() {
    require_kernel!();
    let _serial = FUSE_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = ScratchFs::fast(1024);
    let src = tmp.path().join("src");
    load_tree(&src, 6, 20, 4, 32 << 20);
    let (image, objects, _) = common::build(tmp.path(), &src);
    let big: Arc<Vec<(PathBuf, Vec<u8>)>> = Arc::new(
        (0..4)
            .map(|k| {
                let p = PathBuf::from(format!("big/b{k}"));
                let data = std::fs::read(src.join(&p)).unwrap();
                (p, data)
            })
            .collect(),
    );
    for passthrough in [false, true] {
        let mut args = vec!["--basedir", objects.to_str().unwrap()];
        if !passthrough {
            args.push("--no-passthrough");
        }
        let mut fuse = FuseMount::new(&image, &args).unwrap();
        let root = fuse.path().to_owned();
        let reference = Arc::new(fm::walk_bounded(&root, false));
        assert!(reference.values().all(|e| e.is_ok()), "{reference:?}");

        let (tx, rx) = mpsc::channel();
        let mut passes = Vec::new();
        for r in 0..4 {
            let (root, big, n) = (root.clone(), big.clone(), Arc::new(AtomicU64::new(0)));
            passes.push(n.clone());
            let mut next = r;
            reader(format!("reader {r}"), n, tx.clone(), move || {
                let (p, want) = &big[next % big.len()];
                next += 1;
                read_through(&root.join(p), want)
            });
        }
        for w in 0..3 {
            let (root, reference) = (root.clone(), reference.clone());
            let n = Arc::new(AtomicU64::new(0));
            passes.push(n.clone());
            reader(format!("walker {w}"), n, tx.clone(), move || {
                walk_through(&root, &reference)
            });
        }
        drop(tx);

        // Kill once every reader is in its second pass or later.
        let start = Instant::now();
        while passes.iter().any(|n| n.load(Ordering::Relaxed) == 0) {
            if let Ok((name, end)) = rx.try_recv() {
                panic!("{name} ended before the kill: {end:?}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "readers made no progress"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        drop_caches(2);
        fuse.kill_server();
        let killed = Instant::now();
        let limit = Duration::from_secs(10);
        let mut ends = Vec::new();
        while ends.len() < passes.len() {
            match rx.recv_timeout(limit.saturating_sub(killed.elapsed())) {
                Ok((name, end)) => ends.push((name, end, killed.elapsed())),
                Err(_) => panic!(
                    "passthrough {passthrough}: {} of {} readers still running {limit:?} after the kill (a hang): {ends:?}",
                    passes.len() - ends.len(),
                    passes.len()
                ),
            }
        }
        let errno = |e: &std::io::Error| e.raw_os_error().unwrap_or(0);
        let allowed = [
            rustix::io::Errno::NOTCONN,
            rustix::io::Errno::CONNABORTED,
            rustix::io::Errno::IO,
        ]
        .map(|e| e.raw_os_error());
        for (name, end, after) in &ends {
            eprintln!("passthrough {passthrough}: {name} ended after {after:?}: {end:?}");
            match end {
                End::Failed { error, .. } if allowed.contains(&errno(error)) => {}
                End::WrongData(what) => panic!("{name} read wrong data: {what}"),
                End::Failed { op, error } => {
                    panic!("{name}: {op}: {error}, not ENOTCONN, ECONNABORTED or EIO")
                }
            }
        }
        if !passthrough {
            assert!(
                ends.iter()
                    .any(|(_, e, _)| matches!(e, End::Failed { op, .. } if op == "read")),
                "no reader was stopped mid-file: {ends:?}"
            );
        }

        // `cfs unmount` cleans up the dead mount.
        let o = cfs_bounded(&[OsStr::new("unmount"), root.as_os_str()], limit);
        assert!(o.status.success(), "cfs unmount: {}", common::stderr(&o));
        assert!(!is_mounted(&root), "{} is still mounted", root.display());
        let listed = cfs_bounded(&[OsStr::new("mounts")], limit);
        assert!(
            !String::from_utf8_lossy(&listed.stdout).contains(&*root.to_string_lossy()),
            "cfs mounts still lists {}",
            root.display()
        );
        let pid = fuse.server_pid();
        assert!(
            fuse.exited_within(limit),
            "the killed server is still running"
        );
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "server process {pid} is left"
        );
    }
}

/// `cfs ARGS…`, failing the test if it takes longer than `limit`.
fn cfs_bounded(args: &[&OsStr], limit: Duration) -> Output {
    let args: Vec<_> = args.iter().map(|a| a.to_os_string()).collect();
    let what = format!("cfs {args:?}");
    bounded(limit, &what, move || {
        Command::new(CFS)
            .args(&args)
            .env_remove("CFS_REPO")
            .output()
            .unwrap()
    })
}

/// `cfs --repo REPO ARGS…`, failing the test if it takes longer than two minutes.
fn repo_bounded(repo: &Path, args: &[&str]) -> Output {
    let mut all = vec![OsStr::new("--repo"), repo.as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    cfs_bounded(&all, Duration::from_secs(120))
}

/// A small file system mounted on a fresh directory, unmounted on drop.
struct ScratchFs {
    dir: tempfile::TempDir,
    mounted: bool,
    /// The ext4 image file's directory.
    _backing: Option<tempfile::TempDir>,
}

impl ScratchFs {
    /// A tmpfs of `mib` MiB.
    fn tmpfs(mib: u64) -> Result<ScratchFs, String> {
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path()))?;
        Ok(ScratchFs {
            dir,
            mounted: true,
            _backing: None,
        })
    }

    /// Room for test trees: a tmpfs of `mib` MiB where this process can mount
    /// one, else a plain temporary directory. (Creating thousands of files
    /// on a busy disk takes milliseconds each; what these tests look at does
    /// not depend on the file system.)
    fn fast(mib: u64) -> ScratchFs {
        let tmpfs = rustix::process::geteuid()
            .is_root()
            .then(|| ScratchFs::tmpfs(mib).ok())
            .flatten();
        tmpfs.unwrap_or_else(|| ScratchFs {
            dir: tempfile::tempdir().unwrap(),
            mounted: false,
            _backing: None,
        })
    }

    /// An ext4 of `mib` MiB (no blocks reserved for root) on a loop device.
    fn ext4(mib: u64) -> Result<ScratchFs, String> {
        let backing = tempfile::tempdir().unwrap();
        let file = backing.path().join("ext4.img");
        File::create(&file).unwrap().set_len(mib << 20).unwrap();
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&file))?;
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&file)
            .arg(dir.path()))?;
        Ok(ScratchFs {
            dir,
            mounted: true,
            _backing: Some(backing),
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes free for root.
    fn free(&self) -> u64 {
        let st = rustix::fs::statvfs(self.path()).unwrap();
        st.f_bfree * st.f_frsize
    }

    /// Fills the file system with `filler` until `left` bytes are free.
    fn fill_leaving(&self, left: u64) -> PathBuf {
        let filler = self.path().join("filler");
        let mut f = File::create(&filler).unwrap();
        let chunk = vec![0xA5u8; 1 << 20];
        while self.free() > left {
            let n = (self.free() - left).min(chunk.len() as u64) as usize;
            if std::io::Write::write_all(&mut f, &chunk[..n]).is_err() {
                break;
            }
            f.sync_all().unwrap();
        }
        filler
    }
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        if self.mounted {
            fm::umount(self.dir.path());
        }
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let o = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?}: {}", common::stderr(&o)))
    }
}

/// Every path of the repository outside `objects/XX/` (names, links, the
/// lock, streams): what a failed import must not have touched.
fn outside_objects(repo: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(repo.join(&rel)).unwrap() {
            let e = e.unwrap();
            let p = rel.join(e.file_name());
            if p.parent() == Some(Path::new("objects")) {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.insert(p);
        }
    }
    out
}

/// Asserts that an import failed for lack of space, cleanly: exit status 1
/// (no panic), an error naming the problem and what was being stored, and
/// the repository as it was outside its objects, clean to fsck, every
/// object's content matching its name.
fn assert_failed_cleanly(o: &Output, repo: &Path, names: &BTreeSet<PathBuf>, fs: &str) {
    let err = common::stderr(o);
    assert_eq!(o.status.code(), Some(1), "{fs}: {err}");
    assert!(
        err.contains("No space left on device") && err.contains("could not store "),
        "{fs}: {err}"
    );
    assert_eq!(
        err.matches("No space left on device").count(),
        1,
        "{fs}: the cause is repeated: {err}"
    );
    assert_eq!(&outside_objects(repo), names, "{fs}: {err}");
    let (clean, report) = fsck_json(repo);
    assert!(clean, "{fs}: {report}");
    objects_match_names(repo);
}

/// A repository on a nearly full tmpfs and ext4: `create-image` and
/// `import-tar` run out of space midway and fail cleanly (see
/// [`assert_failed_cleanly`]); gc still works on the full file system; once
/// space is freed the same imports succeed with the expected image id, and
/// the image stored before is untouched throughout.
#[test]
fn full_file_system_fails_imports_cleanly_and_the_repository_recovers() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to mount small file systems");
        return;
    }
    let tmp = ScratchFs::fast(256);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    generate(&a, 40, 20_000, 11);
    generate(&b, 300, 60_000, 12);
    let tar = tmp.path().join("b.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(tmp.path())
        .arg("b"))
    .unwrap();
    let want_b = expected_id(&b);
    let mut tested = Vec::new();
    for (fs, scratch) in [
        ("tmpfs", ScratchFs::tmpfs(24)),
        ("ext4", ScratchFs::ext4(32)),
    ] {
        let scratch = match scratch {
            Ok(s) => s,
            Err(e) => {
                eprintln!("skipped on {fs}: {e}");
                continue;
            }
        };
        let repo = scratch.path().join("repo");
        let id_a = repo_cli::ok(repo_bounded(
            &repo,
            &["create-image", a.to_str().unwrap(), "a"],
        ));
        let images = repo_cli::ok(repo_bounded(&repo, &["images"]));
        let names = outside_objects(&repo);
        let filler = scratch.fill_leaving(2 << 20);

        let o = repo_bounded(&repo, &["create-image", b.to_str().unwrap(), "b"]);
        assert_failed_cleanly(&o, &repo, &names, fs);
        assert!(
            common::stderr(&o).contains(&*b.to_string_lossy()),
            "{fs}: {o:?}"
        );
        let o = repo_bounded(&repo, &["import-tar", tar.to_str().unwrap(), "t"]);
        assert_failed_cleanly(&o, &repo, &names, fs);
        assert!(common::stderr(&o).contains("cannot import"), "{fs}: {o:?}");
        assert_eq!(repo_cli::ok(repo_bounded(&repo, &["images"])), images);
        // gc needs no space: it drops what the failed imports stored.
        repo_cli::ok(repo_bounded(&repo, &["gc"]));
        assert!(fsck_json(&repo).0, "{fs}");

        std::fs::remove_file(filler).unwrap();
        let id_b = repo_cli::ok(repo_bounded(
            &repo,
            &["create-image", b.to_str().unwrap(), "b"],
        ));
        assert_eq!(id_b.trim(), want_b, "{fs}");
        repo_cli::ok(repo_bounded(
            &repo,
            &["import-tar", tar.to_str().unwrap(), "t"],
        ));
        repo_cli::ok(repo_bounded(&repo, &["gc"]));
        let (clean, report) = fsck_json(&repo);
        assert!(clean, "{fs}: {report}");
        objects_match_names(&repo);
        let images = repo_cli::ok(repo_bounded(&repo, &["images"]));
        assert!(
            images.contains(&format!("a\t{}", id_a.trim())),
            "{fs}: {images}"
        );
        assert_eq!(images.lines().count(), 3, "{fs}: {images}");
        tested.push(fs);
    }
    assert!(!tested.is_empty(), "no file system could be mounted");
}

/// The objects of a repository, as `XX/REST`.
fn objects_in(repo: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for d in std::fs::read_dir(repo.join("objects")).unwrap() {
        let d = d.unwrap();
        for f in std::fs::read_dir(d.path()).unwrap() {
            out.insert(Path::new(&d.file_name()).join(f.unwrap().file_name()));
        }
    }
    out
}

fn object_count(repo: &Path) -> usize {
    objects_in(repo).len()
}

/// Garbage to collect again and again: thousands of objects and an image
/// that no name points to, made without an import (whose fsyncs take
/// seconds): every file of a tree and an image of it, hard-linked under
/// their digests (`cfs digest`) outside the repository, and linked into it
/// whenever needed. An object is immutable and named by its content, so a
/// link is the object.
struct Garbage {
    dir: PathBuf,
    image: String,
}

impl Garbage {
    fn new(src: &Path, dir: &Path) -> Garbage {
        let image = dir.with_extension("cfs");
        let o = cfs_bounded(
            &[
                OsStr::new("mkfs"),
                OsStr::new("--print-digest-only"),
                src.as_os_str(),
            ],
            Duration::from_secs(60),
        );
        let id = repo_cli::ok(o).trim().to_owned();
        let o = cfs_bounded(
            &[OsStr::new("mkfs"), src.as_os_str(), image.as_os_str()],
            Duration::from_secs(60),
        );
        repo_cli::ok(o);
        let mut files = vec![image];
        let mut stack = vec![src.to_owned()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let e = e.unwrap();
                let ft = e.file_type().unwrap();
                if ft.is_dir() {
                    stack.push(e.path());
                } else if ft.is_file() && e.metadata().unwrap().len() > 64 {
                    files.push(e.path());
                }
            }
        }
        for chunk in files.chunks(500) {
            let mut args = vec![OsStr::new("digest")];
            args.extend(chunk.iter().map(|p| p.as_os_str()));
            for line in repo_cli::ok(cfs_bounded(&args, Duration::from_secs(60))).lines() {
                let (digest, path) = line.split_once("  ").unwrap();
                let to = dir.join(&digest[..2]).join(&digest[2..]);
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                match std::fs::hard_link(path, to) {
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => panic!("{e}"),
                    _ => {}
                }
            }
        }
        Garbage {
            dir: dir.to_owned(),
            image: id,
        }
    }

    fn image_link(&self, repo: &Path) -> PathBuf {
        repo.join("images").join(&self.image)
    }

    /// Puts the garbage back; returns the number of objects.
    fn spread(&self, repo: &Path) -> usize {
        for d in std::fs::read_dir(&self.dir).unwrap() {
            let d = d.unwrap();
            let to = repo.join("objects").join(d.file_name());
            std::fs::create_dir_all(&to).unwrap();
            for f in std::fs::read_dir(d.path()).unwrap() {
                let f = f.unwrap();
                match std::fs::hard_link(f.path(), to.join(f.file_name())) {
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => panic!("{e}"),
                    _ => {}
                }
            }
        }
        let link = self.image_link(repo);
        let target = format!("../objects/{}/{}", &self.image[..2], &self.image[2..]);
        match std::os::unix::fs::symlink(target, link) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => panic!("{e}"),
            _ => {}
        }
        object_count(repo)
    }
}

/// Starts `cfs --repo REPO ARGS…` with its output discarded.
fn spawn(repo: &Path, args: &[&OsStr]) -> std::process::Child {
    Command::new(CFS)
        .arg("--repo")
        .arg(repo)
        .args(args)
        .env_remove("CFS_REPO")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// `cfs dump` of the image named `keep`.
fn dump_keep(repo: &Path) -> String {
    let image = repo.join("images/refs/keep");
    let o = cfs_bounded(
        &[OsStr::new("dump"), image.as_os_str()],
        Duration::from_secs(60),
    );
    repo_cli::ok(o)
}

/// Everything the named images need is there and intact: fsck finds
/// nothing and the image `keep` dumps as it did.
fn assert_intact(repo: &Path, keep_dump: &str, when: &str) {
    let (clean, report) = fsck_json(repo);
    assert!(clean, "{when}: {report}");
    let dump = dump_keep(repo);
    assert_eq!(dump, keep_dump, "{when}: the image dumps differently");
}

/// `cfs gc` SIGKILLed at points spread over its run, over a repository with
/// a named image and thousands of unreferenced objects: after each kill fsck
/// is clean, the named image dumps as before, and the next gc completes
/// (nothing stale: the lock went with the process). Then gc killed while an
/// import runs beside it: the import completes and loses nothing. Finally the
/// kept image mounts and shows its tree.
#[test]
fn sigkill_during_gc_leaves_the_repository_consistent() {
    let tmp = ScratchFs::fast(512);
    let (keep, junk, late) = (
        tmp.path().join("keep"),
        tmp.path().join("junk"),
        tmp.path().join("late"),
    );
    generate(&keep, 200, 20_000, 21);
    generate(&junk, 3000, 6_000, 22);
    generate(&late, 200, 20_000, 23);
    let repo = tmp.path().join("repo");
    repo_cli::ok(repo_bounded(
        &repo,
        &["create-image", keep.to_str().unwrap(), "keep"],
    ));
    let keep_dump = dump_keep(&repo);
    let kept = object_count(&repo);
    let garbage = Garbage::new(&junk, &tmp.path().join("garbage"));
    let make_garbage = || garbage.spread(&repo);
    // The objects are removed in parallel in sorted order, the first one
    // first: it going means the sweep of objects has begun.
    let live = objects_in(&repo);
    make_garbage();
    let first = repo
        .join("objects")
        .join(objects_in(&repo).difference(&live).next().unwrap());
    let sweeping = |gc: &mut std::process::Child| {
        let start = Instant::now();
        while first.symlink_metadata().is_ok()
            && gc.try_wait().unwrap().is_none()
            && start.elapsed() < Duration::from_secs(30)
        {
            std::thread::yield_now();
        }
    };
    // A full gc, timed, to spread the kills over its length and the sweep's.
    let full = make_garbage();
    let mut gc = spawn(&repo, &[OsStr::new("gc")]);
    let t = Instant::now();
    sweeping(&mut gc);
    let mark_ms = t.elapsed().as_millis() as u64;
    assert!(gc.wait().unwrap().success());
    let gc_ms = (t.elapsed().as_millis() as u64).max(mark_ms + 1);
    let sweep_ms = gc_ms - mark_ms;
    assert_eq!(object_count(&repo), kept);
    eprintln!(
        "gc of {} objects: {gc_ms} ms, the sweep from {mark_ms} ms",
        full - kept
    );

    let mut rng = Rng::new();
    let kills = env_u64("CFS_GC_KILLS", 6);
    let mut mid_sweep = 0;
    for i in 0..kills {
        let before = make_garbage();
        let mut gc = spawn(&repo, &[OsStr::new("gc")]);
        // Every other kill at any point of the run, stratified (kill i in
        // the i-th slice); the others at a random point of the sweep.
        let delay = if i % 2 == 0 {
            (gc_ms * i + rng.below(gc_ms)) / kills
        } else {
            sweeping(&mut gc);
            rng.below(sweep_ms)
        };
        std::thread::sleep(Duration::from_millis(delay));
        let _ = gc.kill();
        let status = gc.wait().unwrap();
        let left = object_count(&repo);
        mid_sweep += usize::from(left > kept && left < before);
        eprintln!(
            "kill {i} after {}{delay} ms ({status}): {} of {} garbage objects left",
            if i % 2 == 0 { "" } else { "the sweep began + " },
            left - kept,
            before - kept
        );
        assert!(left >= kept, "kill {i}: gc removed a live object");
        assert_intact(&repo, &keep_dump, &format!("kill {i}"));
        repo_cli::ok(repo_bounded(&repo, &["gc"]));
        assert_eq!(
            object_count(&repo),
            kept,
            "kill {i}: the next gc left garbage"
        );
        assert_intact(&repo, &keep_dump, &format!("gc after kill {i}"));
    }
    eprintln!("{mid_sweep} of {kills} kills landed mid-sweep");

    // gc killed while an import runs: whichever holds the lock first, the
    // import completes with everything its image names.
    let want_late = expected_id(&late);
    for i in 0..2u64 {
        make_garbage();
        let import = spawn(
            &repo,
            &[
                OsStr::new("create-image"),
                late.as_os_str(),
                OsStr::new("late"),
            ],
        );
        let mut gc = spawn(&repo, &[OsStr::new("gc")]);
        std::thread::sleep(Duration::from_millis(rng.below(gc_ms * (i + 1))));
        let _ = gc.kill();
        let _ = gc.wait();
        let status = bounded(
            Duration::from_secs(120),
            "the import beside gc",
            move || {
                let mut import = import;
                import.wait().unwrap()
            },
        );
        assert!(status.success(), "import beside a killed gc: {status}");
        let id = repo_cli::ok(repo_bounded(&repo, &["images"]));
        assert!(id.contains(&format!("late\t{want_late}")), "{id}");
        assert_intact(&repo, &keep_dump, &format!("import beside kill {i}"));
        repo_cli::ok(repo_bounded(&repo, &["rm", "late"]));
    }
    repo_cli::ok(repo_bounded(&repo, &["gc"]));
    assert_eq!(object_count(&repo), kept);
    objects_match_names(&repo);

    // The kept image mounts and shows its tree, where this machine can mount.
    if let Some(why) = fm::unavailable() {
        eprintln!("not mounting the kept image: {why}");
    } else {
        let mnt = tmp.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let args = [OsStr::new("mount"), OsStr::new("keep"), mnt.as_os_str()];
        let mut all = vec![OsStr::new("--repo"), repo.as_os_str()];
        all.extend(args);
        let o = cfs_bounded(&all, Duration::from_secs(60));
        assert!(o.status.success(), "mount: {}", common::stderr(&o));
        let id = repo_cli::ok(repo_bounded(&repo, &["images"]));
        let id = id.lines().find_map(|l| l.strip_prefix("keep\t")).unwrap();
        let want = common::expected_from_dump(&repo.join("images").join(id), &repo.join("objects"));
        let got = common::walk(&mnt);
        let o = cfs_bounded(
            &[OsStr::new("unmount"), mnt.as_os_str()],
            Duration::from_secs(30),
        );
        assert!(o.status.success(), "unmount: {}", common::stderr(&o));
        let d = common::diff(&want, &got);
        assert!(
            d.is_empty(),
            "the kept image mounts differently:\n{}",
            d.join("\n")
        );
    }
}
