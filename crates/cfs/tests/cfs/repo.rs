//! End-to-end tests of the repository commands, driving the real `cfs`
//! binary: import of a real and a generated tree, crash safety under
//! SIGKILL, concurrent imports and gc, corruption found by fsck, bad input.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cfs;
use crate::support::{expected_id, fsck_json, generate, in_repo, objects_match_names};
use cfs_testkit::{err, need, ok, require, skip, Rng};

#[test]
fn generated_tree_imports_and_dumps_every_file() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    generate(&src, 600, 20_000, 1);
    let repo = tmp.path().join("repo");
    ok(in_repo(&repo, &[&"init"]));
    let out = ok(in_repo(&repo, &[&"create-image", &"--stats", &src, &"gen"]));
    let id = out.trim();
    assert_eq!(id, expected_id(&src));
    assert_eq!(ok(in_repo(&repo, &[&"images"])), format!("gen\t{id}\n"));

    // The dump lists every external file with its digest, and its object exists.
    let dump = ok(cfs()
        .cmd()
        .arg("dump")
        .arg(repo.join("images").join(id))
        .output()
        .unwrap());
    let mut external = 0;
    for line in dump.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f[2].starts_with("100") && f[1].parse::<u64>().unwrap() > 64 {
            assert_ne!(f[10], "-", "{line}");
            assert!(repo.join("objects").join(f[8]).is_file(), "{line}");
            external += 1;
        }
    }
    assert!(external > 300, "{external}");
    let objects = ok(in_repo(&repo, &[&"image-objects", &"gen"]));
    assert!(objects.lines().count() > 200);
    objects_match_names(&repo);
    assert!(fsck_json(&repo).0);

    // A second import of the same tree stores nothing new: same id.
    let o = in_repo(&repo, &[&"create-image", &"--stats", &src, &"gen2"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(" 0 new objects"),
        "{o:?}"
    );
    assert_eq!(ok(o).trim(), id);

    // composefs-info and mkcomposefs accept the repository.
    let bin = tempfile::tempdir().unwrap();
    for name in ["composefs-info", "mkcomposefs"] {
        std::os::unix::fs::symlink(cfs().exe(), bin.path().join(name)).unwrap();
    }
    let missing = ok(Command::new(bin.path().join("composefs-info"))
        .arg("missing-objects")
        .arg("--basedir")
        .arg(&repo)
        .arg(repo.join("images").join(id))
        .output()
        .unwrap());
    assert_eq!(missing, "");
    let other = tmp.path().join("other");
    generate(&other, 30, 10_000, 9);
    ok(Command::new(bin.path().join("mkcomposefs"))
        .arg(format!("--digest-store={}", repo.display()))
        .arg(&other)
        .arg(tmp.path().join("other.img"))
        .output()
        .unwrap());
    assert!(!repo.join("d0").exists());
    assert!(fsck_json(&repo).0);

    // rm + gc: the names go, then the objects.
    ok(in_repo(&repo, &[&"rm", &"gen"]));
    ok(in_repo(&repo, &[&"rm", &"gen2"]));
    let dry = ok(in_repo(&repo, &[&"gc", &"--dry-run"]));
    assert!(dry.contains("would remove"), "{dry}");
    // The last name of an image takes its images/ID link along; the objects wait for gc.
    assert!(!repo.join("images").join(id).exists());
    assert!(dry.lines().count() > 200, "{dry}");
    let out = ok(in_repo(&repo, &[&"gc"]));
    assert!(out.contains("kept 0 objects"), "{out}");
    assert_eq!(ok(in_repo(&repo, &[&"images"])), "");
    let info = ok(in_repo(&repo, &[&"info"]));
    assert!(info.contains("objects: 0 (0 B)"), "{info}");
    assert!(info.contains("fs-verity: "), "{info}");
}

/// A real tree: /usr/share/doc of this machine, where present.
#[test]
fn real_tree_usr_share_doc() {
    let src = Path::new("/usr/share/doc");
    require!(need::root());
    if !src.is_dir() {
        skip!("no /usr/share/doc here");
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let id = ok(in_repo(&repo, &[&"create-image", &src, &"doc"]));
    assert_eq!(id.trim(), expected_id(src));
    let dump = ok(cfs()
        .cmd()
        .arg("dump")
        .arg(repo.join("images").join(id.trim()))
        .output()
        .unwrap());
    // Everything below the root, as the import counts it.
    let scanned =
        cfs_testkit::walk::walk_recording(src, cfs_testkit::walk::Contents::Skip).len() - 1;
    assert_eq!(
        dump.lines().count() - 1,
        scanned,
        "every path is in the dump"
    );
    objects_match_names(&repo);
    assert!(fsck_json(&repo).0);
}

#[test]
fn sigkill_at_random_points_leaves_no_corrupt_object() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    generate(&src, 1000, 40_000, 2);
    let want = expected_id(&src);
    let repo = tmp.path().join("repo");
    ok(in_repo(&repo, &[&"init"]));
    let mut rng = Rng::from_env("CFS_TEST_SEED").0;
    let started = Instant::now();
    // Measure a full run once, to spread the kills over its length.
    let t = Instant::now();
    let probe = tmp.path().join("probe-repo");
    ok(in_repo(&probe, &[&"create-image", &src, &"x"]));
    let full = t.elapsed().as_millis().max(20) as u64;
    for i in 0..10 {
        // Start each run from nothing stored, so every kill lands mid-import:
        // drop the name (if a run completed) and collect what the last run left.
        let _ = in_repo(&repo, &[&"rm", &"img"]);
        ok(in_repo(&repo, &[&"gc"]));
        let mut child = cfs()
            .cmd()
            .arg("--repo")
            .arg(&repo)
            .args([
                OsStr::new("create-image"),
                src.as_os_str(),
                OsStr::new("img"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = rng.below(full as usize) as u64;
        std::thread::sleep(Duration::from_millis(delay));
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        let _ = child.wait();
        eprintln!("kill {i} after {delay} of {full} ms (already finished: {finished})");
        let (_, report) = fsck_json(&repo);
        assert!(
            report.contains("\"corrupt\":[]") && report.contains("\"missing\":[]"),
            "kill {i} after {delay} ms: {report}"
        );
        assert!(
            !report.contains("\"broken\":[{"),
            "kill {i} after {delay} ms: {report}"
        );
    }
    // The last run may have finished and named it: replacing asks for --force.
    let out = ok(in_repo(&repo, &[&"create-image", &"--force", &src, &"img"]));
    assert_eq!(out.trim(), want);
    ok(in_repo(&repo, &[&"gc"]));
    let (clean, report) = fsck_json(&repo);
    assert!(clean, "{report}");
    objects_match_names(&repo);
    assert!(started.elapsed() < Duration::from_secs(240));
}

#[test]
fn overlapping_imports_and_gc_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    generate(&a, 800, 30_000, 3);
    generate(&b, 800, 30_000, 4); // shares the duplicate content with a
    let repo = tmp.path().join("repo");
    ok(in_repo(&repo, &[&"init"]));
    // Garbage for gc to chew on meanwhile.
    ok(in_repo(&repo, &[&"create-image", &b, &"old"]));
    ok(in_repo(&repo, &[&"rm", &"old"]));
    let spawn = |dir: &Path, name: &str| {
        cfs()
            .cmd()
            .arg("--repo")
            .arg(&repo)
            .args([
                OsStr::new("create-image"),
                dir.as_os_str(),
                OsStr::new(name),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let ia = spawn(&a, "a");
    let ib = spawn(&b, "b");
    let mut gcs = 0;
    let mut running = [Some(ia), Some(ib)];
    let mut ids = Vec::new();
    while running.iter().any(Option::is_some) {
        ok(in_repo(&repo, &[&"gc"]));
        gcs += 1;
        for slot in running.iter_mut() {
            if let Some(c) = slot {
                if c.try_wait().unwrap().is_some() {
                    ids.push(ok(slot.take().unwrap().wait_with_output().unwrap()));
                }
            }
        }
    }
    assert!(gcs >= 1);
    ok(in_repo(&repo, &[&"gc"]));
    let (clean, report) = fsck_json(&repo);
    assert!(clean, "{report}");
    let images = ok(in_repo(&repo, &[&"images"]));
    assert!(
        images.contains(&format!("a\t{}", expected_id(&a))),
        "{images}"
    );
    assert!(
        images.contains(&format!("b\t{}", expected_id(&b))),
        "{images}"
    );
    for name in ["a", "b"] {
        for obj in ok(in_repo(&repo, &[&"image-objects", &name])).lines() {
            assert!(repo.join("objects").join(obj).is_file(), "{name}: {obj}");
        }
    }
}

#[test]
fn fsck_reports_corrupt_missing_and_stray_precisely() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    generate(&src, 100, 10_000, 5);
    let repo = tmp.path().join("repo");
    ok(in_repo(&repo, &[&"create-image", &src, &"img"]));
    let objects: Vec<String> = ok(in_repo(&repo, &[&"image-objects", &"img"]))
        .lines()
        .map(String::from)
        .collect();
    let (flip, gone) = (&objects[0], &objects[1]);
    let path = repo.join("objects").join(flip);
    let mut data = std::fs::read(&path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x20;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(&path, data).unwrap();
    std::fs::remove_file(repo.join("objects").join(gone)).unwrap();
    let stray = format!("{}/not-a-digest", &flip[..2]);
    std::fs::write(repo.join("objects").join(&stray), b"junk").unwrap();
    std::fs::File::create(repo.join("junk"))
        .unwrap()
        .write_all(b"x")
        .unwrap();

    let (clean, json) = fsck_json(&repo);
    assert!(!clean);
    let gone_hex = gone.replace('/', "");
    assert!(
        json.contains(&format!(
            "\"corrupt\":[{{\"path\":\"objects/{flip}\",\"expected\":\"{}\"",
            flip.replace('/', "")
        )),
        "{json}"
    );
    assert!(
        json.contains(&format!("\"object\":\"{gone_hex}\"}}]")),
        "{json}"
    );
    assert!(
        json.contains(&format!("\"path\":\"objects/{stray}\"")),
        "{json}"
    );
    assert!(json.contains("\"path\":\"junk\""), "{json}");
    assert_eq!(json.matches("\"expected\"").count(), 1, "{json}");
    assert_eq!(json.matches("\"object\"").count(), 1, "{json}");

    let o = in_repo(&repo, &[&"fsck"]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(!o.status.success());
    assert!(
        text.contains(&format!("corrupt objects/{flip}: content hashes to ")),
        "{text}"
    );
    assert!(text.contains(&format!("missing objects/{gone}")), "{text}");
    assert!(text.contains(&format!("stray objects/{stray}")), "{text}");
    assert!(text.contains("stray junk"), "{text}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("1 corrupt, 1 missing, 2 stray"));
}

#[test]
fn bad_input_is_a_clear_error_naming_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    // The repository path is a file.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    for args in [
        &[&"init" as &dyn AsRef<OsStr>][..],
        &[&"images"],
        &[&"create-image", &tmp.path(), &"x"],
    ] {
        let e = err(in_repo(&file, args));
        assert!(e.contains("a-file") && e.contains("not a directory"), "{e}");
    }
    // Not a repository / a bad name / a missing source / an unknown image.
    let repo = tmp.path().join("repo");
    let e = err(in_repo(&repo, &[&"images"]));
    assert!(e.contains("cfs init"), "{e}");
    ok(in_repo(&repo, &[&"init"]));
    let e = err(in_repo(
        &repo,
        &[&"create-image", &tmp.path().join("nope"), &"x"],
    ));
    assert!(e.contains("nope"), "{e}");
    let e = err(in_repo(&repo, &[&"create-image", &file, &"x"]));
    assert!(e.contains("a-file") && e.contains("not a directory"), "{e}");
    let e = err(in_repo(&repo, &[&"create-image", &tmp.path(), &"../x"]));
    assert!(e.contains("invalid image name"), "{e}");
    let e = err(in_repo(&repo, &[&"image-objects", &"nothing"]));
    assert!(e.contains("no image named \"nothing\""), "{e}");

    // A file that changes while it is read.
    let src = tmp.path().join("growing");
    std::fs::create_dir(&src).unwrap();
    let big = src.join("log");
    std::fs::write(&big, vec![1u8; 4 << 20]).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let e = std::thread::scope(|s| {
        s.spawn(|| {
            let mut f = std::fs::OpenOptions::new().append(true).open(&big).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.write_all(&[2u8; 4096]).unwrap();
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        });
        // Start only once the writer is really appending (CI machines are busy).
        while std::fs::metadata(&big).unwrap().len() < (4 << 20) + (64 << 10) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // An import may still fall in a pause of the writer (a busy machine,
        // a stopped test): it then stores what it saw, consistently (fsck
        // below). Some import of ten must see the change.
        let mut tries = 0;
        let o = loop {
            tries += 1;
            let o = in_repo(&repo, &[&"create-image", &src, &"g"]);
            if !o.status.success() || tries == 10 {
                break o;
            }
        };
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        err(o)
    });
    // Which check sees the change is timing: the size at open against the
    // scan's, or the file against itself while it is read. Either refuses
    // the import and names the file.
    assert!(
        e.contains("growing/log")
            && (e.contains("changed while it was read")
                || e.contains("changed since it was scanned")),
        "{e}"
    );
    assert!(fsck_json(&repo).0);
}

/// An unreadable file (as a user who can't read it): the error names it.
#[test]
fn unreadable_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let secret = src.join("secret");
    std::fs::write(&secret, vec![0u8; 1000]).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let repo = tmp.path().join("repo");
    let o = if rustix::process::geteuid().is_root() {
        // Root reads everything: run as nobody, with a repository nobody owns.
        let setpriv = Path::new("/usr/bin/setpriv");
        if !setpriv.exists() {
            skip!("no setpriv to drop root");
        }
        std::fs::create_dir(&repo).unwrap();
        rustix::fs::chown(&repo, Some(rustix::fs::Uid::from_raw(65534)), None).unwrap();
        for p in [tmp.path(), src.as_path()] {
            std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        Command::new(setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(cfs().exe())
            .arg("--repo")
            .arg(&repo)
            .arg("create-image")
            .arg(&src)
            .arg("x")
            .output()
            .unwrap()
    } else {
        in_repo(&repo, &[&"create-image", &src, &"x"])
    };
    let e = err(o);
    assert!(
        e.contains("src/secret") && e.contains("ermission denied"),
        "{e}"
    );
    let _: PathBuf = repo;
}

/// Regression: the scan held one fd per queued directory, so `cfs
/// compute-id /usr` failed under the usual limit of 1,024 fds ("Too many
/// open files"). 600 sibling directories, each with a file: hashed under a
/// limit of 64 fds, imported under 512 (the store keeps up to 256
/// `objects/XX/` directories open), both give the id computed without a
/// limit; imported again under a soft limit of 64, which cfs raises to the
/// hard limit.
#[test]
fn a_broad_tree_imports_under_a_small_fd_limit() {
    if !need::have_tool("prlimit") {
        skip!("no prlimit");
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for i in 0..600 {
        let d = src.join(format!("d{i:03}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("f"), format!("{i:0200}")).unwrap();
    }
    let expect = cfs().ok([OsStr::new("compute-id"), src.as_os_str()]);
    let repo = tmp.path().join("repo");
    ok(in_repo(&repo, &[&"init"]));
    let limited = |nofile: &str, args: &[&dyn AsRef<OsStr>]| {
        let mut c = Command::new("prlimit");
        c.arg(format!("--nofile={nofile}"))
            .arg("--")
            .arg(cfs().exe())
            .env_remove("CFS_REPO")
            .stdin(Stdio::null());
        for a in args {
            c.arg(a);
        }
        ok(c.output().unwrap())
    };
    assert_eq!(limited("64", &[&"compute-id", &src]), expect);
    let id = limited("512", &[&"--repo", &repo, &"create-image", &src, &"broad"]);
    assert_eq!(id, expect);
    // A soft limit below what the store needs, under a hard limit above it:
    // cfs raises its soft limit to the hard one at start.
    let id = limited(
        "64:1024",
        &[&"--repo", &repo, &"create-image", &src, &"again"],
    );
    assert_eq!(id, expect);
    assert!(fsck_json(&repo).0);
}

/// A path below the scanned root longer than PATH_MAX − 1 bytes: refused
/// as the scan finds it, naming the path (shortened) and the limit.
#[test]
fn a_path_past_path_max_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // 15 × (255 + 1) + (1 + 1) + 254 = 4,096 bytes below `src`, made by fd.
    let name = "d".repeat(255);
    let mut dir = rustix::fs::open(
        &src,
        rustix::fs::OFlags::DIRECTORY,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    for n in std::iter::repeat_n(name.as_str(), 15).chain(["e"]) {
        rustix::fs::mkdirat(&dir, n, rustix::fs::Mode::from_raw_mode(0o755)).unwrap();
        dir = rustix::fs::openat(
            &dir,
            n,
            rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
    }
    rustix::fs::mkdirat(
        &dir,
        "f".repeat(254),
        rustix::fs::Mode::from_raw_mode(0o755),
    )
    .unwrap();
    let e = cfs().fails([OsStr::new("compute-id"), src.as_os_str()]);
    assert!(
        e.contains("src/ddd")
            && e.contains("its path below the scanned root is 4096 bytes, longer than the limit of 4095 (PATH_MAX)")
            && e.len() < 600,
        "{e}"
    );
}
