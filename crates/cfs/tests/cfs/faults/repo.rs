//! The repository on a full file system, and gc killed mid-sweep.

use super::*;

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
    let err = stderr(o);
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
    require!(need::root());
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
                cfs_testkit::report_skip(&format!("the {fs} leg: {e}"));
                continue;
            }
        };
        let repo = scratch.path().join("repo");
        let id_a = ok(repo_bounded(
            &repo,
            &["create-image", a.to_str().unwrap(), "a"],
        ));
        let images = ok(repo_bounded(&repo, &["images"]));
        let names = outside_objects(&repo);
        let filler = scratch.fill_leaving(2 << 20);

        let o = repo_bounded(&repo, &["create-image", b.to_str().unwrap(), "b"]);
        assert_failed_cleanly(&o, &repo, &names, fs);
        assert!(stderr(&o).contains(&*b.to_string_lossy()), "{fs}: {o:?}");
        let o = repo_bounded(&repo, &["import-tar", tar.to_str().unwrap(), "t"]);
        assert_failed_cleanly(&o, &repo, &names, fs);
        assert!(stderr(&o).contains("cannot import"), "{fs}: {o:?}");
        assert_eq!(ok(repo_bounded(&repo, &["images"])), images);
        // gc needs no space: it drops what the failed imports stored.
        ok(repo_bounded(&repo, &["gc"]));
        assert!(fsck_json(&repo).0, "{fs}");

        std::fs::remove_file(filler).unwrap();
        let id_b = ok(repo_bounded(
            &repo,
            &["create-image", b.to_str().unwrap(), "b"],
        ));
        assert_eq!(id_b.trim(), want_b, "{fs}");
        ok(repo_bounded(
            &repo,
            &["import-tar", tar.to_str().unwrap(), "t"],
        ));
        ok(repo_bounded(&repo, &["gc"]));
        let (clean, report) = fsck_json(&repo);
        assert!(clean, "{fs}: {report}");
        objects_match_names(&repo);
        let images = ok(repo_bounded(&repo, &["images"]));
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
        let id = ok(o).trim().to_owned();
        let o = cfs_bounded(
            &[OsStr::new("mkfs"), src.as_os_str(), image.as_os_str()],
            Duration::from_secs(60),
        );
        ok(o);
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
            for line in ok(cfs_bounded(&args, Duration::from_secs(60))).lines() {
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
    cfs()
        .cmd()
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
    ok(o)
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
    ok(repo_bounded(
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

    let mut rng = Rng::from_env("CFS_TEST_SEED").0;
    let kills = env_u64("CFS_GC_KILLS", 6);
    let mut mid_sweep = 0;
    for i in 0..kills {
        let before = make_garbage();
        let mut gc = spawn(&repo, &[OsStr::new("gc")]);
        // Every other kill at any point of the run, stratified (kill i in
        // the i-th slice); the others at a random point of the sweep.
        let delay = if i % 2 == 0 {
            (gc_ms * i + rng.below_u64(gc_ms)) / kills
        } else {
            sweeping(&mut gc);
            rng.below_u64(sweep_ms)
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
        ok(repo_bounded(&repo, &["gc"]));
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
        std::thread::sleep(Duration::from_millis(rng.below_u64(gc_ms * (i + 1))));
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
        let id = ok(repo_bounded(&repo, &["images"]));
        assert!(id.contains(&format!("late\t{want_late}")), "{id}");
        assert_intact(&repo, &keep_dump, &format!("import beside kill {i}"));
        ok(repo_bounded(&repo, &["rm", "late"]));
    }
    ok(repo_bounded(&repo, &["gc"]));
    assert_eq!(object_count(&repo), kept);
    objects_match_names(&repo);

    // The kept image mounts and shows its tree, where this machine can mount.
    if let Some(why) = need::kernel_mounts() {
        cfs_testkit::report_skip(&format!("mounting the kept image: {why}"));
    } else {
        let mnt = tmp.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let args = [OsStr::new("mount"), OsStr::new("keep"), mnt.as_os_str()];
        let mut all = vec![OsStr::new("--repo"), repo.as_os_str()];
        all.extend(args);
        let o = cfs_bounded(&all, Duration::from_secs(60));
        assert!(o.status.success(), "mount: {}", stderr(&o));
        let id = ok(repo_bounded(&repo, &["images"]));
        let id = id.lines().find_map(|l| l.strip_prefix("keep\t")).unwrap();
        let want = crate::support::expected_from_dump(
            &repo.join("images").join(id),
            &repo.join("objects"),
        );
        let got = cfs_testkit::walk::walk(&mnt);
        let o = cfs_bounded(
            &[OsStr::new("unmount"), mnt.as_os_str()],
            Duration::from_secs(30),
        );
        assert!(o.status.success(), "unmount: {}", stderr(&o));
        let d = cfs_testkit::walk::diff(&want, &got);
        assert!(
            d.is_empty(),
            "the kept image mounts differently:\n{}",
            d.join("\n")
        );
    }
}
