//! Scans of small temporary trees, checked field by field.

use super::*;
use cfs_format::fsverity::digest;
use std::fs;
use std::os::unix::fs::symlink;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + 3) % 251) as u8).collect()
}

/// A tree with every kind of entry the scanner handles.
fn sample() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    for (name, len) in [
        ("empty", 0),
        ("one", 1),
        ("sixty-four", 64),
        ("sixty-five", 65),
    ] {
        fs::write(r.join(name), pattern(len)).unwrap();
    }
    fs::create_dir_all(r.join("a/b/c")).unwrap();
    fs::write(r.join("a/b/c/big"), pattern(4096 * 3 + 17)).unwrap();
    symlink("../one", r.join("a/link")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        r.join("a/fifo"),
        rustix::fs::FileType::Fifo,
        Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    fs::write(r.join("a/hl1"), pattern(100)).unwrap();
    fs::hard_link(r.join("a/hl1"), r.join("a/b/hl2")).unwrap();
    fs::hard_link(r.join("a/hl1"), r.join("zz-hl3")).unwrap();
    tmp
}

fn node<'a>(tree: &'a Tree, path: &str) -> &'a Node {
    tree.node(
        tree.lookup_path(path.as_bytes())
            .unwrap_or_else(|| panic!("{path} missing")),
    )
}

#[test]
fn regular_files_by_size() {
    let tmp = sample();
    let scan = scan(tmp.path(), &ScanOptions::default()).unwrap();
    let t = &scan.tree;

    let empty = node(t, "/empty");
    assert_eq!(empty.stat.size, 0);
    assert_eq!(
        (&empty.content, &empty.payload, empty.digest),
        (&None, &None, None)
    );

    for (name, len) in [("/one", 1), ("/sixty-four", 64)] {
        let n = node(t, name);
        assert_eq!(n.content.as_deref(), Some(&pattern(len)[..]), "{name}");
        let d = digest(&pattern(len));
        assert_eq!(n.digest, Some(d), "{name}");
        assert_eq!(n.payload.as_deref(), Some(d.object_path().as_bytes()));
    }
    for (name, len) in [("/sixty-five", 65), ("/a/b/c/big", 4096 * 3 + 17)] {
        let n = node(t, name);
        assert_eq!(n.content, None, "{name}");
        let d = digest(&pattern(len));
        assert_eq!(n.digest, Some(d), "{name}");
        assert_eq!(n.payload.as_deref(), Some(d.object_path().as_bytes()));
        assert_eq!(n.stat.size, len as u64);
        assert_eq!(n.stat.mode & 0o170000, 0o100000);
    }
    let mut external: Vec<_> = scan.external.iter().map(|f| scan.source.rel(f)).collect();
    external.sort();
    let expect: Vec<PathBuf> = ["a/b/c/big", "a/b/hl2", "a/hl1", "sixty-five", "zz-hl3"]
        .iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(external, expect);
}

#[test]
fn symlink_fifo_dirs_and_mtime() {
    let tmp = sample();
    let t = scan(tmp.path(), &ScanOptions::default()).unwrap().tree;
    let link = node(&t, "/a/link");
    assert_eq!(link.payload.as_deref(), Some(&b"../one"[..]));
    assert_eq!(link.stat.size, 6);
    assert_eq!(link.file_type(), Some(FileType::Symlink));

    let fifo = node(&t, "/a/fifo");
    assert_eq!(fifo.file_type(), Some(FileType::Fifo));
    assert_eq!(fifo.stat.mode & 0o7777, 0o640);

    // Directory link counts: 2 + subdirectories.
    assert_eq!(node(&t, "/").stat.nlink, 3);
    assert_eq!(node(&t, "/a").stat.nlink, 3);
    assert_eq!(node(&t, "/a/b/c").stat.nlink, 2);

    let meta = fs::symlink_metadata(tmp.path().join("one")).unwrap();
    use std::os::unix::fs::MetadataExt;
    let one = node(&t, "/one");
    assert_eq!(one.stat.mtime.sec, meta.mtime());
    assert_eq!(i64::from(one.stat.mtime.nsec), meta.mtime_nsec());
    assert_eq!(one.stat.uid, meta.uid());

    let epoch = scan(
        tmp.path(),
        &ScanOptions {
            use_epoch: true,
            ..ScanOptions::default()
        },
    )
    .unwrap()
    .tree;
    assert!(epoch
        .nodes()
        .all(|(_, n)| n.stat.mtime == Timespec::default()));
}

#[test]
fn hard_links_split_by_default_like_c() {
    let tmp = sample();
    let t = scan(tmp.path(), &ScanOptions::default()).unwrap().tree;
    let ids: Vec<NodeId> = ["/a/hl1", "/a/b/hl2", "/zz-hl3"]
        .iter()
        .map(|p| t.lookup_path(p.as_bytes()).unwrap())
        .collect();
    assert!(ids[0] != ids[1] && ids[1] != ids[2]);
    for id in ids {
        assert_eq!(t.node(id).stat.nlink, 1);
    }
    assert!(t
        .nodes()
        .all(|(_, n)| n.entries.iter().all(|e| !e.hardlink)));
}

#[test]
fn hard_links_detected_on_request() {
    let tmp = sample();
    let opts = ScanOptions {
        hardlinks: true,
        ..ScanOptions::default()
    };
    let scan = scan(tmp.path(), &opts).unwrap();
    let t = &scan.tree;
    // Breadth-first over sorted names: /zz-hl3 (depth 1) is met first.
    let primary = t.lookup_path(b"/zz-hl3").unwrap();
    assert_eq!(t.lookup_path(b"/a/hl1"), Some(primary));
    assert_eq!(t.lookup_path(b"/a/b/hl2"), Some(primary));
    assert_eq!(t.node(primary).stat.nlink, 3);
    assert!(!t.node(NodeId::ROOT).entry(b"zz-hl3").unwrap().hardlink);
    let a = t.node(t.lookup_path(b"/a").unwrap());
    assert!(a.entry(b"hl1").unwrap().hardlink);
    // One object to store, not three.
    assert_eq!(
        scan.external.iter().filter(|f| f.node == primary).count(),
        1
    );
}

#[test]
fn xattr_modes() {
    let tmp = sample();
    let p = tmp.path().join("one");
    if let Err(e) = rustix::fs::setxattr(&p, "user.test", b"v\0x", rustix::fs::XattrFlags::empty())
    {
        cfs_testkit::skip!("user xattrs not supported here: {e}");
    }
    let root_is_root = rustix::process::geteuid().is_root();
    if root_is_root {
        rustix::fs::setxattr(&p, "trusted.test", b"t", rustix::fs::XattrFlags::empty()).unwrap();
    }
    let all = scan(tmp.path(), &ScanOptions::default()).unwrap().tree;
    let n = node(&all, "/one");
    assert_eq!(n.xattr(b"user.test"), Some(&b"v\0x"[..]));
    if root_is_root {
        assert_eq!(n.xattr(b"trusted.test"), Some(&b"t"[..]));
    }

    let user = scan(
        tmp.path(),
        &ScanOptions {
            xattrs: XattrMode::UserOnly,
            ..ScanOptions::default()
        },
    )
    .unwrap()
    .tree;
    assert!(user
        .nodes()
        .all(|(_, n)| n.xattrs.iter().all(|x| x.name.starts_with(b"user."))));
    assert_eq!(node(&user, "/one").xattr(b"user.test"), Some(&b"v\0x"[..]));

    let none = scan(
        tmp.path(),
        &ScanOptions {
            xattrs: XattrMode::None,
            ..ScanOptions::default()
        },
    )
    .unwrap()
    .tree;
    assert!(none.nodes().all(|(_, n)| n.xattrs.is_empty()));
}

#[test]
fn devices_kept_or_skipped() {
    cfs_testkit::require!(cfs_testkit::need::root());
    let tmp = sample();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        tmp.path().join("null"),
        rustix::fs::FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    let t = scan(tmp.path(), &ScanOptions::default()).unwrap().tree;
    let n = node(&t, "/null");
    assert_eq!(n.file_type(), Some(FileType::CharDevice));
    assert_eq!(n.stat.rdev, rustix::fs::makedev(1, 3));
    let skipped = scan(
        tmp.path(),
        &ScanOptions {
            skip_devices: true,
            ..ScanOptions::default()
        },
    )
    .unwrap()
    .tree;
    assert_eq!(skipped.lookup_path(b"/null"), None);
}

#[test]
fn errors_name_the_path() {
    let tmp = sample();
    let err = scan(&tmp.path().join("one"), &ScanOptions::default()).unwrap_err();
    assert!(matches!(err, ScanError::NotADirectory(_)), "{err}");
    let err = scan(&tmp.path().join("missing"), &ScanOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("could not open") && msg.contains("missing"),
        "{msg}"
    );
}

/// A file its owner keeps extending (sparse `set_len`, free to do) from the
/// moment the scan opens it to hash it: the scan fails naming it, one byte
/// past the size it saw, instead of reading for ever.
#[test]
fn a_file_that_keeps_growing_fails_the_scan() {
    use rustix::fs::inotify;
    use std::sync::atomic::{AtomicBool, Ordering};
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("grows");
    let f = fs::File::create(&file).unwrap();
    f.set_len(256 << 20).unwrap();
    // Told when the file is opened (the scan's O_PATH open is not an open
    // for inotify; its read is), without blocking.
    let watch =
        inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK).unwrap();
    inotify::add_watch(&watch, &file, inotify::WatchFlags::OPEN).unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let grower = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while rustix::io::read(&watch, &mut buf).is_err() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            while !stop.load(Ordering::Relaxed) {
                let len = f.metadata().unwrap().len();
                if f.set_len(len + (1 << 30)).is_err() {
                    return;
                }
            }
        })
    };
    let (done, result) = std::sync::mpsc::channel();
    let root = tmp.path().to_path_buf();
    std::thread::spawn(move || {
        let _ = done.send(scan(&root, &ScanOptions::default()).map(|_| ()));
    });
    let outcome = result.recv_timeout(std::time::Duration::from_secs(30));
    stop.store(true, Ordering::Relaxed);
    grower.join().unwrap();
    let e = outcome.expect("scan still reading after 30 s").unwrap_err();
    assert!(matches!(e, ScanError::Source(_)), "{e}");
    assert!(
        e.to_string().contains(
            "grows: changed since it was scanned (it grew past the 268435456 bytes scanned)"
        ),
        "{e}"
    );
}

/// The environment variable that makes [`broad_tree_scan_child`] run: the
/// directory it scans.
const BROAD_TREE_ENV: &str = "CFS_SCAN_BROAD_TREE";

/// Regression: the scan held one open fd per queued directory, so a
/// directory with more subdirectories than the fd limit (systemd's soft
/// limit is 1,024) failed with "Too many open files". 300 of them, scanned
/// in a child process limited to 64 fds.
#[test]
fn a_broad_tree_scans_under_a_small_fd_limit() {
    let tmp = tempfile::tempdir().unwrap();
    for i in 0..300 {
        let d = tmp.path().join(format!("d{i:03}"));
        fs::create_dir(&d).unwrap();
        fs::write(d.join("f"), pattern(100 + i)).unwrap();
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "scan::tests::broad_tree_scan_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(BROAD_TREE_ENV, tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("scanned 300 directories"),
        "child failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run by [`a_broad_tree_scans_under_a_small_fd_limit`] in its own process.
#[test]
#[ignore = "run in a child process by a_broad_tree_scans_under_a_small_fd_limit"]
fn broad_tree_scan_child() {
    let Some(dir) = std::env::var_os(BROAD_TREE_ENV) else {
        return;
    };
    let limit = rustix::process::Rlimit {
        current: Some(64),
        maximum: Some(64),
    };
    rustix::process::setrlimit(rustix::process::Resource::Nofile, limit).unwrap();
    for xattrs in [XattrMode::All, XattrMode::None] {
        let options = ScanOptions {
            xattrs,
            ..ScanOptions::default()
        };
        let scan = scan(Path::new(&dir), &options).unwrap();
        assert_eq!(scan.external.len(), 300);
    }
    println!("scanned 300 directories");
}

/// Makes `depth` nested directories named `name` below `root`, by fd (their
/// paths may be too long for one call); returns the deepest one.
fn nest(root: &Path, name: &str, depth: usize) -> OwnedFd {
    let mut dir =
        rustix::fs::open(root, OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).unwrap();
    for _ in 0..depth {
        rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755)).unwrap();
        dir = rustix::fs::openat(
            &dir,
            name,
            OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
    }
    dir
}

fn write_at(dir: &OwnedFd, name: &str, content: &[u8]) {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
    rustix::io::write(&fd, content).unwrap();
}

/// A path of exactly `PATH_MAX - 1` bytes below the root is scanned and
/// read; one byte more is refused as it is found, naming the (shortened)
/// path and the limit.
#[test]
fn paths_longer_than_path_max_are_refused() {
    let long = "d".repeat(255);
    let tmp = tempfile::tempdir().unwrap();
    // 15 × (255 + 1) + 255 = 4,095 bytes.
    let deep = nest(tmp.path(), &long, 15);
    write_at(&deep, &"f".repeat(255), &pattern(100));
    let scan = scan(tmp.path(), &ScanOptions::default()).unwrap();
    assert_eq!(scan.external.len(), 1);
    assert_eq!(
        scan.source.rel(&scan.external[0]).as_os_str().len(),
        PATH_MAX - 1
    );
    assert_eq!(scan.tree.nodes().count(), 17);

    let tmp = tempfile::tempdir().unwrap();
    // 15 × (255 + 1) + (1 + 1) + 254 = 4,096 bytes.
    let deep = nest(tmp.path(), &long, 15);
    rustix::fs::mkdirat(&deep, "e", Mode::from_raw_mode(0o755)).unwrap();
    let e = rustix::fs::openat(
        &deep,
        "e",
        OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    write_at(&e, &"f".repeat(254), b"");
    let e = super::scan(tmp.path(), &ScanOptions::default()).unwrap_err();
    assert!(
        matches!(e, ScanError::PathTooLong { len: PATH_MAX, .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("its path below the scanned root is 4096 bytes, longer than the limit of 4095 (PATH_MAX)"),
        "{msg}"
    );
    assert!(msg.contains(" bytes ...]") && msg.len() < 400, "{msg}");
    assert!(
        msg.starts_with(&format!("{}/ddd", tmp.path().display())),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("{}: its path", "f".repeat(70))),
        "{msg}"
    );
}
