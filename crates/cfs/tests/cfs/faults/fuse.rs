//! The FUSE server under load and killed mid-read.

use super::*;

/// The FUSE tests drop caches and load both cores: one at a time.
static FUSE_SERIAL: Mutex<()> = Mutex::new(());

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
                cfs_testkit::walk::set_xattr(&path, "user.n", i.to_string().as_bytes());
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
fn assert_shows_source(src: &Path, mounted: &Recorded) {
    let source = cfs_testkit::walk::walk(src);
    assert_eq!(source.len(), mounted.len(), "the mount shows other paths");
    for (p, s) in &source {
        let m = match mounted.get(p) {
            Some(Ok(m)) => m,
            other => panic!("{}: {other:?}", p.display()),
        };
        let same = m.mode == s.mode
            && s.size.is_none_or(|size| Some(size) == m.size)
            && m.content == s.content
            && m.symlink == s.symlink
            && m.xattrs == s.xattrs;
        assert!(same, "{}:\n  source {s:?}\n  mount  {m:?}", p.display());
    }
}

/// What the load test's readers share.
struct Load {
    /// The first walk: what every later walk must see again.
    reference: Recorded,
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
    fn new(reference: Recorded, src: &Path, deadline: Instant) -> Load {
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

    fn reference(&self, p: &Path) -> &Entry {
        self.reference[p].as_ref().unwrap()
    }

    /// A full walk (lstat, readdir, readlink, every xattr), equal to the reference.
    fn walk(&self, root: &Path) -> u64 {
        let got = walk_recording(root, Contents::Skip);
        if got.len() != self.reference.len() {
            self.fail(format!(
                "walk of {} saw {} paths",
                root.display(),
                got.len()
            ));
        }
        for (p, e) in &got {
            let want = Entry {
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
            order.swap(i, rng.below(i + 1));
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
            let p = &self.paths[rng.below(self.paths.len())];
            let want = self.reference(p);
            let path = root.join(p);
            let check = || -> Result<(), String> {
                let m = std::fs::symlink_metadata(&path).map_err(|e| format!("lstat: {e}"))?;
                if (m.mode(), m.mtime(), m.mtime_nsec()) != (want.mode, want.mtime.0, want.mtime.1)
                {
                    return Err(format!("lstat: {m:?}"));
                }
                if let Some(t) = &want.symlink {
                    let got = std::fs::read_link(&path).map_err(|e| format!("readlink: {e}"))?;
                    if got.as_os_str() != t {
                        return Err(format!("readlink: {}", got.display()));
                    }
                }
                for (name, value) in &want.xattrs {
                    let mut buf = vec![0u8; 65536];
                    let n = rustix::fs::lgetxattr(&path, name.as_os_str(), &mut buf[..])
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
            let (p, size) = &self.big[rng.below(self.big.len())];
            let offset = rng.below_u64(*size);
            let len = (1 + rng.below_u64(1 << 20)).min(size - offset) as usize;
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
    require!(need::fuse_mounts());
    let _serial = FUSE_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let secs = env_u64("CFS_FUSE_LOAD_SECS", 12).max(4);
    let tmp = ScratchFs::fast(1024);
    let src = tmp.path().join("src");
    load_tree(&src, 24, 50, 4, 8 << 20);
    let (image, objects, _) = build(tmp.path(), &src);
    let basedir = objects.to_str().unwrap();
    let mut mounts = [
        FuseMount::new(&cfs(), &image, &["--basedir", basedir]).unwrap(),
        FuseMount::new(&cfs(), &image, &["--basedir", basedir, "--no-passthrough"]).unwrap(),
    ];
    let reference = walk_recording_bounded(mounts[0].path(), Contents::Hash, WALK_LIMIT);
    assert_shows_source(&src, &reference);
    assert_eq!(
        walk_recording_bounded(mounts[1].path(), Contents::Hash, WALK_LIMIT),
        reference
    );

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
                let mut rng = Rng::seeded(0x5EED + i as u64);
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
        let s = cfs_testkit::mounts::fuse_stats(&log);
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
fn walk_through(root: &Path, reference: &Recorded) -> Result<(), End> {
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
            got.insert(std::ffi::OsStr::from_bytes(name).to_os_string(), value);
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
/// reader gets an error (ENOTCONN, ECONNABORTED or EIO; ECANCELED for a
/// request in flight on a FUSE io_uring queue whose ring died with the
/// server, `CFS_FUSE_TRANSPORT=uring`), none a hang or
/// wrong data, within 10 s; then `cfs unmount` removes the mount, `cfs
/// mounts` no longer lists it, and no server process is left. With the
/// server reading contents itself, and with passthrough (where a read in
/// progress may finish from the backing file, and the next open fails).
#[test]
fn killed_server_fails_every_reader_and_unmount_cleans_up() {
    require!(need::fuse_mounts());
    let _serial = FUSE_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = ScratchFs::fast(1024);
    let src = tmp.path().join("src");
    load_tree(&src, 6, 20, 4, 32 << 20);
    let (image, objects, _) = build(tmp.path(), &src);
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
        let mut fuse = FuseMount::new(&cfs(), &image, &args).unwrap();
        let root = fuse.path().to_owned();
        let reference = Arc::new(walk_recording_bounded(&root, Contents::Skip, WALK_LIMIT));
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
            // What the kernel answers a request a dead FUSE io_uring server
            // had taken off its queue.
            rustix::io::Errno::CANCELED,
        ]
        .map(|e| e.raw_os_error());
        for (name, end, after) in &ends {
            eprintln!("passthrough {passthrough}: {name} ended after {after:?}: {end:?}");
            match end {
                End::Failed { error, .. } if allowed.contains(&errno(error)) => {}
                End::WrongData(what) => panic!("{name} read wrong data: {what}"),
                End::Failed { op, error } => {
                    panic!("{name}: {op}: {error}, not ENOTCONN, ECONNABORTED, EIO or ECANCELED")
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

        // `cfs unmount` cleans up the dead mount. It may find the mount busy
        // for a moment: another test's fork (before its exec) holds copies
        // of this process's open files on it, the readers' among them.
        let mut o = cfs_bounded(&[OsStr::new("unmount"), root.as_os_str()], limit);
        for _ in 0..50 {
            if o.status.success() || !stderr(&o).contains("busy") {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            o = cfs_bounded(&[OsStr::new("unmount"), root.as_os_str()], limit);
        }
        assert!(o.status.success(), "cfs unmount: {}", stderr(&o));
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
