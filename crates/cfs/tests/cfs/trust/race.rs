//! The import race: a thread running as the plain user swaps the final
//! names and the directories of its own tree with symlinks to a root-only
//! directory (`renameat2(RENAME_EXCHANGE)` and plain `rename`), thousands of
//! times, while root imports the tree again and again with `cfs
//! create-image`, `cfs mkfs --digest-store` and `mkcomposefs
//! --digest-store`. Not one byte of the root-only files may appear in any
//! object, image or dump; every import either succeeds (with the user's
//! own files) or fails naming a path in the tree.
//!
//! The attacker is a thread of the test whose credentials alone are the
//! user's (`setresuid` on that thread only, which also drops its
//! capabilities): unprivileged, and fast enough to swap many times per
//! import.

use crate::cfs;
use cfs_testkit::users::{setup_test_user, TEST_USER};
use cfs_testkit::{need, os, require, skip};
use rustix::fs::{RenameFlags, CWD};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What every root-only file holds; found anywhere, it leaked.
const MARK: &[u8] = b"ROOT-ONLY-SECRET";
/// Sizes of the external and the inline file.
const BIG: usize = 6000;
const SMALL: usize = 40;

/// `pattern` repeated to exactly `len` bytes.
fn sized(pattern: impl AsRef<[u8]>, len: usize) -> Vec<u8> {
    pattern.as_ref().iter().copied().cycle().take(len).collect()
}

/// Directories of the user's tree.
const DIRS: usize = 4;
/// Swaps the attacker must have made before the imports may stop.
const MIN_SWAPS: u64 = 20_000;
/// Imports per path, at least.
const MIN_RUNS: usize = 20;

fn id_of(flag: &str) -> u32 {
    let o = std::process::Command::new("id")
        .args([flag, TEST_USER])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

/// `T/tree` (the user's: `dK/big`, `dK/small`, each with a symlink twin
/// `dK/big.lnk` → `T/secret/big` and so on, and `dK.lnk` → `T/secret`) and
/// `T/secret` (root's, 0700, the same names holding [`MARK`]).
fn setup(t: &Path, uid: u32, gid: u32) -> (PathBuf, PathBuf) {
    let tree = t.join("tree");
    let secret = t.join("secret");
    std::fs::create_dir(&secret).unwrap();
    std::fs::write(secret.join("big"), sized(MARK, BIG)).unwrap();
    std::fs::write(secret.join("small"), sized(MARK, SMALL)).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    for k in 0..DIRS {
        let d = tree.join(format!("d{k}"));
        std::fs::create_dir_all(&d).unwrap();
        // The sizes of root's files: an attacker knows them (stat needs no
        // read permission), and a size check alone must not be the defence.
        std::fs::write(d.join("big"), sized(format!("user file {k}\n"), BIG)).unwrap();
        std::fs::write(d.join("small"), sized(format!("user small {k}\n"), SMALL)).unwrap();
        for f in ["big", "small"] {
            std::os::unix::fs::symlink(secret.join(f), d.join(format!("{f}.lnk"))).unwrap();
        }
        std::os::unix::fs::symlink(&secret, tree.join(format!("d{k}.lnk"))).unwrap();
    }
    let chown = |p: &Path| {
        rustix::fs::chownat(
            CWD,
            p,
            Some(rustix::process::Uid::from_raw(uid)),
            Some(rustix::process::Gid::from_raw(gid)),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap()
    };
    chown(&tree);
    for e in walk(&tree) {
        chown(&e);
    }
    std::fs::set_permissions(t, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (tree, secret)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// The attacker: drops this thread to the user, then swaps until `stop`.
fn attack(tree: PathBuf, uid: u32, gid: u32, stop: Arc<AtomicBool>, swaps: Arc<AtomicU64>) {
    rustix::thread::set_thread_groups(&[]).unwrap();
    let g = rustix::process::Gid::from_raw(gid);
    rustix::thread::set_thread_res_gid(g, g, g).unwrap();
    let u = rustix::process::Uid::from_raw(uid);
    rustix::thread::set_thread_res_uid(u, u, u).unwrap();
    assert!(
        std::fs::read(tree.join("../secret/big")).is_err(),
        "the attacker thread can read root's files: not unprivileged"
    );
    let exchange = |a: &Path, b: &Path| {
        rustix::fs::renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).is_ok()
    };
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for k in 0..DIRS {
            let d = tree.join(format!("d{k}"));
            let mut done = 0;
            // Final names: the file and its symlink twin trade places, twice.
            for f in ["big", "small"] {
                let (a, b) = (d.join(f), d.join(format!("{f}.lnk")));
                done += u64::from(exchange(&a, &b)) + u64::from(exchange(&a, &b));
            }
            // The directory and a symlink to root's directory trade places.
            let lnk = tree.join(format!("d{k}.lnk"));
            done += u64::from(exchange(&d, &lnk)) + u64::from(exchange(&d, &lnk));
            // A plain rename: the file replaced by a symlink, then a new file.
            let (f, tmp) = (d.join("small"), d.join("small.tmp"));
            if std::os::unix::fs::symlink(tree.join("../secret/small"), &tmp).is_ok()
                && std::fs::rename(&tmp, &f).is_ok()
            {
                done += 1;
                if std::fs::write(&tmp, sized(format!("user small {k} again\n"), SMALL)).is_ok()
                    && std::fs::rename(&tmp, &f).is_ok()
                {
                    done += 1;
                }
            }
            n += done;
        }
        swaps.store(n, Ordering::Relaxed);
    }
}

/// Files under `dir` holding [`MARK`].
fn leaks_in(dir: &Path) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| p.is_file() && !p.is_symlink())
        .filter(|p| {
            let bytes = std::fs::read(p).unwrap();
            bytes.windows(MARK.len()).any(|w| w == MARK)
        })
        .collect()
}

#[test]
fn root_imports_of_a_tree_the_user_swaps_store_none_of_roots_files() {
    require!(need::root());
    if let Err(e) = setup_test_user() {
        skip!("no test user: {e}");
    }
    let t = tempfile::tempdir().unwrap();
    let (uid, gid) = (id_of("-u"), id_of("-g"));
    let (tree, _secret) = setup(t.path(), uid, gid);
    let out = t.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let repo = out.join("repo");
    let store1 = out.join("store-mkfs");
    let store2 = out.join("store-mkcomposefs");
    let bin = cfs().personalities();
    let mkcomposefs = bin.path().join("mkcomposefs");

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let attacker = {
        let (tree, stop, swaps) = (tree.clone(), stop.clone(), swaps.clone());
        std::thread::spawn(move || attack(tree, uid, gid, stop, swaps))
    };

    let start = Instant::now();
    let mut runs: Vec<(String, Output)> = Vec::new();
    let mut i = 0;
    while (i < MIN_RUNS || swaps.load(Ordering::Relaxed) < MIN_SWAPS)
        && start.elapsed() < Duration::from_secs(120)
    {
        let img1 = out.join(format!("mkfs-{i}.cfs"));
        let img2 = out.join(format!("mkcomposefs-{i}.cfs"));
        let name = format!("race-{i}");
        runs.push((
            "create-image".into(),
            cfs()
                .repo(&repo)
                .run([os("create-image"), tree.as_os_str(), os(&name)]),
        ));
        runs.push((
            "mkfs --digest-store".into(),
            cfs().run([
                os("mkfs"),
                os("--digest-store"),
                store1.as_os_str(),
                tree.as_os_str(),
                img1.as_os_str(),
            ]),
        ));
        runs.push((
            "mkcomposefs --digest-store".into(),
            std::process::Command::new(&mkcomposefs)
                .arg(format!("--digest-store={}", store2.display()))
                .arg(&tree)
                .arg(&img2)
                .output()
                .unwrap(),
        ));
        i += 1;
    }
    stop.store(true, Ordering::Relaxed);
    attacker.join().expect("the attacker thread failed");
    let swapped = swaps.load(Ordering::Relaxed);

    // Every run: success, or a failure that names a path in the tree.
    let (mut good, mut refused) = (0, 0);
    for (what, o) in &runs {
        let err = String::from_utf8_lossy(&o.stderr);
        if o.status.success() {
            good += 1;
        } else {
            refused += 1;
            assert!(
                err.contains(&tree.display().to_string()),
                "{what} failed without naming the path: {err}"
            );
        }
    }
    println!(
        "import race: {swapped} swaps, {} imports: {good} succeeded, {refused} refused naming the path",
        runs.len()
    );
    assert!(swapped >= MIN_SWAPS, "only {swapped} swaps");

    // Not one root-only byte in any object, image or dump.
    let leaks = leaks_in(&out);
    assert!(leaks.is_empty(), "root-only bytes in {leaks:#?}");
    let mut images: Vec<PathBuf> = walk(&out)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "cfs"))
        .collect();
    if repo.join("images").is_dir() {
        images.extend(
            std::fs::read_dir(repo.join("images"))
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().is_some_and(|n| n.len() == 64)),
        );
    }
    assert!(!images.is_empty(), "no import succeeded at all");
    for image in &images {
        let dump = cfs().run([os("dump"), image.as_os_str()]);
        assert!(dump.status.success(), "{}", image.display());
        assert!(
            !dump.stdout.windows(MARK.len()).any(|w| w == MARK),
            "root-only bytes in the dump of {}",
            image.display()
        );
    }
}
