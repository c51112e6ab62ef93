use super::*;
use crate::import::Progress;
use cfs_format::Digest;
use std::collections::HashSet;

fn tree(root: &Path) {
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    std::fs::write(root.join("a/big"), vec![3u8; 100_000]).unwrap();
    std::fs::write(root.join("a/b/big-copy"), vec![3u8; 100_000]).unwrap();
    std::fs::write(root.join("a/other"), vec![4u8; 5000]).unwrap();
    std::fs::write(root.join("small"), b"inline").unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    std::fs::hard_link(root.join("a/other"), root.join("hl")).unwrap();
}

#[test]
fn create_image_matches_mkcomposefs_and_gc_keeps_named() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    tree(&src);
    let repo = Repository::init(&tmp.path().join("repo")).unwrap();
    let opts = CreateOptions::default();
    let report = repo
        .create_image(&src, "one", &opts, &Progress::default())
        .unwrap();
    assert_eq!(report.stats.files, 4); // big, big-copy, other (once: hard link), small
    assert_eq!(report.stats.new_objects, 2);
    assert_eq!(repo.resolve("one").unwrap(), report.id);
    assert_eq!(repo.resolve(&report.id.to_hex()).unwrap(), report.id);
    // Mounts open the image's object, found by reading images/ID by hand.
    let file = repo.image_file("one").unwrap();
    assert_eq!(file, repo.objects().object_path(&report.id));
    assert_eq!(
        cfs_format::fsverity::digest(&std::fs::read(&file).unwrap()),
        report.id
    );
    assert!(matches!(
        repo.image_file("nope"),
        Err(RepoError::UnknownImage { .. })
    ));

    // Same image as a one-pass scan with content, written directly.
    let scanned = crate::scan::scan(&src, &opts.scan).unwrap();
    let direct = cfs_format::writer::write_image(&scanned.tree, &opts.write).unwrap();
    assert_eq!(cfs_format::fsverity::digest(&direct), report.id);

    let objs = repo.image_objects(&report.id).unwrap();
    assert_eq!(objs.len(), 2);
    assert!(repo.fsck(&[]).unwrap().is_clean());

    // An unnamed object is garbage; named ones stay.
    repo.objects()
        .insert_bytes(b"garbage that nobody names")
        .unwrap();
    let gc = repo.gc(&[], false).unwrap();
    assert_eq!(gc.objects_removed, 1);
    assert_eq!(gc.objects_kept, 3);
    assert!(repo.fsck(&[]).unwrap().is_clean());

    repo.remove("one").unwrap();
    assert!(matches!(
        repo.resolve("one"),
        Err(RepoError::UnknownImage { .. })
    ));
    let gc = repo.gc(&[], false).unwrap();
    assert_eq!((gc.objects_removed, gc.objects_kept), (3, 0));
}

#[test]
fn names_are_checked() {
    for bad in [
        "",
        ".x",
        "-x",
        "a/b",
        "a b",
        &"a".repeat(300),
        &"0".repeat(64),
    ] {
        assert!(refs::check_name(bad).is_err(), "{bad:?}");
    }
    for good in ["debian-12", "fedora:41", "x.y_z+1@2"] {
        refs::check_name(good).unwrap();
    }
}

#[test]
fn init_refuses_a_file_and_a_foreign_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = Repository::init(&file).unwrap_err().to_string();
    assert!(
        err.contains("file") && err.contains("not a directory"),
        "{err}"
    );
    let err = Repository::open(&file).unwrap_err().to_string();
    assert!(err.contains("not a directory"), "{err}");
    std::fs::write(tmp.path().join("other"), b"x").unwrap();
    assert!(Repository::init(tmp.path()).is_err());
    let r = tmp.path().join("r");
    Repository::init(&r).unwrap();
    Repository::init(&r).unwrap();
    std::fs::write(r.join(VERSION_FILE), "99\n").unwrap();
    assert!(matches!(
        Repository::open(&r),
        Err(RepoError::UnsupportedVersion { .. })
    ));
}

#[test]
fn set_ref_that_fails_leaves_no_temporary_name() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repository::init(&tmp.path().join("repo")).unwrap();
    let id = repo
        .objects()
        .insert_bytes(b"not really an image")
        .unwrap()
        .digest;
    // A directory where the name goes: the rename over it fails.
    std::fs::create_dir_all(tmp.path().join("repo/images/refs/taken/x")).unwrap();
    let e = repo.set_ref("taken", &id).unwrap_err();
    assert!(e.to_string().contains("could not rename"), "{e}");
    let left: Vec<_> = std::fs::read_dir(tmp.path().join("repo/images/refs"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["taken"], "a temporary name was left behind");
}

fn mode_of(p: &Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions()) & 0o7777
}

#[test]
fn init_makes_the_repository_private() {
    let tmp = tempfile::tempdir().unwrap();
    let new = tmp.path().join("a/new");
    let r = Repository::init(&new).unwrap();
    assert_eq!(mode_of(&new), 0o700);
    assert_eq!(r.made_private_from(), None);
    // An existing, empty, world-readable directory is tightened, and said so.
    let old = tmp.path().join("old");
    std::fs::create_dir(&old).unwrap();
    std::fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let r = Repository::init(&old).unwrap();
    assert_eq!(r.made_private_from(), Some(0o755));
    assert_eq!(mode_of(&old), 0o700);
    assert_eq!(r.mode().unwrap(), 0o700);
    // So is an existing repository made by an older cfs.
    std::fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    assert_eq!(Repository::open(&old).unwrap().made_private_from(), None);
    assert_eq!(mode_of(&old), 0o755, "open changes nothing");
    assert_eq!(
        Repository::init(&old).unwrap().made_private_from(),
        Some(0o755)
    );
    assert_eq!(mode_of(&old), 0o700);
}

/// A repository with one image, and an outside directory a hostile owner
/// points symlinks at.
fn planted() -> (tempfile::TempDir, Repository, Digest) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    tree(&src);
    std::fs::create_dir(tmp.path().join("outside")).unwrap();
    let repo = Repository::init(&tmp.path().join("repo")).unwrap();
    let id = repo
        .create_image(&src, "one", &CreateOptions::default(), &Progress::default())
        .unwrap()
        .id;
    (tmp, repo, id)
}

#[test]
fn a_planted_lock_symlink_is_not_followed() {
    let (tmp, repo, _) = planted();
    let outside = tmp.path().join("outside/created-by-cfs");
    std::fs::remove_file(tmp.path().join("repo/lock")).unwrap();
    std::os::unix::fs::symlink(&outside, tmp.path().join("repo/lock")).unwrap();
    let e = repo.lock(LockMode::Shared).unwrap_err().to_string();
    assert!(e.contains("repo/lock"), "{e}");
    assert!(!outside.exists(), "the lock symlink was followed");
    std::fs::remove_file(tmp.path().join("repo/lock")).unwrap();
    // A FIFO in its place is refused, not waited on.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        tmp.path().join("repo/lock"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let e = repo.lock(LockMode::Shared).unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
}

#[test]
fn planted_directory_symlinks_are_not_followed() {
    let (tmp, repo, id) = planted();
    let t = tmp.path();
    // images/ swapped for a symlink to a look-alike outside.
    std::fs::rename(t.join("repo/images"), t.join("images-was")).unwrap();
    std::os::unix::fs::symlink(t.join("images-was"), t.join("repo/images")).unwrap();
    assert!(repo.resolve("one").is_err());
    assert!(repo.gc(&[], false).is_err());
    assert!(repo.set_ref("two", &id).is_err());
    assert!(!t.join("images-was/refs/two").exists());
    std::fs::remove_file(t.join("repo/images")).unwrap();
    std::fs::rename(t.join("images-was"), t.join("repo/images")).unwrap();

    // An objects/XX directory swapped for a symlink: gc removes nothing outside.
    repo.objects().insert_bytes(b"garbage").unwrap();
    let garbage = cfs_format::fsverity::digest(b"garbage");
    let rel = garbage.object_path();
    let xx = t.join("repo/objects").join(&rel[..2]);
    std::fs::rename(&xx, t.join("outside/xx")).unwrap();
    std::os::unix::fs::symlink(t.join("outside/xx"), &xx).unwrap();
    let fresh = Repository::open(&t.join("repo")).unwrap();
    let _ = fresh.gc(&[], false);
    assert!(
        t.join("outside/xx").join(&rel[3..]).exists(),
        "gc followed objects/XX"
    );
    assert!(!fresh.objects().contains(&garbage));
}

#[test]
fn an_image_link_pointing_elsewhere_is_refused() {
    let (tmp, repo, id) = planted();
    let t = tmp.path();
    let link = t.join("repo/images").join(id.to_hex());
    std::fs::write(t.join("outside/img"), b"not this").unwrap();
    for target in [
        t.join("outside/img"),
        PathBuf::from("../../outside/img"),
        PathBuf::from("../objects/00/00"),
    ] {
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = repo.image_file("one").unwrap_err().to_string();
        assert!(e.contains("points to"), "{}: {e}", target.display());
    }
}

#[test]
fn a_busy_lock_says_who_holds_it_and_times_out() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static TOLD: AtomicBool = AtomicBool::new(false);
    let (_tmp, mut repo, _) = planted();
    let held = repo.lock(LockMode::Exclusive).unwrap();
    repo.set_lock_wait(LockWait {
        timeout: Some(std::time::Duration::from_millis(200)),
        on_wait: Some(|c| {
            assert_eq!(c.wanted, LockMode::Shared);
            assert!(
                c.holders.iter().any(|h| h.pid == std::process::id()),
                "{:?}",
                c.holders
            );
            TOLD.store(true, Ordering::Relaxed);
        }),
    });
    let e = repo.lock(LockMode::Shared).unwrap_err();
    assert!(matches!(e, RepoError::LockTimeout { .. }), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("held by pid {} (exclusive", std::process::id())),
        "{e}"
    );
    assert!(TOLD.load(Ordering::Relaxed));
    drop(held);
    repo.lock(LockMode::Shared).unwrap();
}

#[test]
fn a_live_pin_keeps_an_unnamed_image_and_a_stale_one_goes() {
    let (tmp, repo, id) = planted();
    let path = repo.path().to_path_buf();
    let pending = repo.begin_mount("one").unwrap();
    assert_eq!(pending.image(), id);
    // The mount holding the test's directory stands for the image's mount:
    // it outlives the test.
    let pin = match pending.pin(tmp.path()) {
        Ok(p) => p,
        Err(e) => {
            println!("skipped: this kernel can't name mounts ({e})");
            return;
        }
    };
    assert_eq!(pin.state, PinState::Live);
    let repo = Repository::open(&path).unwrap();
    repo.remove("one").unwrap();
    assert_eq!(repo.mounts_of(&id).unwrap().len(), 1);
    let gc = repo.gc(&[], false).unwrap();
    assert_eq!(gc.mounted_only, [id]);
    assert_eq!((gc.objects_removed, gc.stale_pins_removed), (0, 0));
    assert!(repo.fsck(&[]).unwrap().is_clean());

    // The same pin, for a mount that does not exist (any more).
    let text = std::fs::read_to_string(path.join(&pin.path)).unwrap();
    let gone = pin.mount.mnt_id + (1 << 40);
    std::fs::remove_file(path.join(&pin.path)).unwrap();
    std::fs::write(
        path.join(format!("pins/{}-{gone}", pin.mount.mnt_ns_id)),
        text.replace(
            &format!("mnt_id {}", pin.mount.mnt_id),
            &format!("mnt_id {gone}"),
        ),
    )
    .unwrap();
    assert_eq!(repo.pins().unwrap()[0].state, PinState::Stale);
    assert!(repo.mounts_of(&id).unwrap().is_empty());
    let gc = repo.gc(&[], false).unwrap();
    assert_eq!(gc.stale_pins_removed, 1);
    assert_eq!(gc.objects_removed, 3);
    assert!(repo.pins().unwrap().is_empty());
}

/// Records under `streams/NAME/` as a test writes them: a link per object
/// kept, `streams/test/keep/HEX`; `streams/test/drop/*` given up.
struct TestRoots;

impl StreamRoots for TestRoots {
    fn name(&self) -> &str {
        "test"
    }

    fn mark(&self, repo: &Repository) -> Result<Marked, Box<dyn std::error::Error + Send + Sync>> {
        let mut marked = Marked::default();
        for e in std::fs::read_dir(repo.path().join("streams/test/keep"))? {
            let name = e?.file_name().into_string().map_err(|_| "bad name")?;
            marked.objects.insert(Digest::from_hex(name.as_bytes())?);
        }
        for e in std::fs::read_dir(repo.path().join("streams/test/drop"))? {
            marked
                .unreached
                .push(Path::new("streams/test/drop").join(e?.file_name()));
        }
        Ok(marked)
    }

    fn check(&self, _: &Repository, _: &HashSet<Digest>) -> Vec<(PathBuf, String)> {
        vec![(PathBuf::from("streams/test"), "checked".into())]
    }
}

/// A root asking gc to remove something outside its records.
struct GreedyRoots;

impl StreamRoots for GreedyRoots {
    fn name(&self) -> &str {
        "greedy"
    }

    fn mark(&self, _: &Repository) -> Result<Marked, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Marked {
            objects: HashSet::new(),
            unreached: vec![PathBuf::from("streams/greedy/../../images/refs/keep")],
        })
    }

    fn check(&self, _: &Repository, _: &HashSet<Digest>) -> Vec<(PathBuf, String)> {
        Vec::new()
    }
}

/// gc keeps what records under `streams/` reach when given their reader,
/// refuses to run while records nobody reads are there, and removes only
/// inside a reader's own directory; fsck reports what no reader checked.
#[test]
fn stream_roots_keep_objects_and_unread_records_stop_gc() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repository::init(&tmp.path().join("repo")).unwrap();
    let kept = repo
        .objects()
        .insert_bytes(b"kept by a record")
        .unwrap()
        .digest;
    let loose = repo
        .objects()
        .insert_bytes(b"kept by nothing")
        .unwrap()
        .digest;
    let dir = repo.path().join("streams/test");
    for sub in ["keep", "drop"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(dir.join("keep").join(kept.to_hex()), b"").unwrap();
    std::fs::write(dir.join("drop/old"), b"").unwrap();

    // No reader for streams/test: gc removes nothing, fsck says so.
    let e = repo.gc(&[], false).unwrap_err().to_string();
    assert!(
        e.contains("streams/test") && e.contains("nothing removed"),
        "{e}"
    );
    assert!(repo.objects().contains(&loose));
    let report = repo.fsck(&[]).unwrap();
    assert!(
        report
            .stray
            .iter()
            .any(|p| p.path == Path::new("streams/test") && p.what.contains("not checked")),
        "{report:?}"
    );

    // With it: the record's object stays, the loose one and the given-up link go.
    let gc = repo.gc(&[&TestRoots], false).unwrap();
    assert_eq!((gc.objects_kept, gc.objects_removed), (1, 1));
    assert!(repo.objects().contains(&kept) && !repo.objects().contains(&loose));
    assert!(!dir.join("drop/old").exists());
    assert!(gc.removed.contains(&PathBuf::from("streams/test/drop/old")));
    let report = repo.fsck(&[&TestRoots]).unwrap();
    assert!(
        report.broken.iter().any(|p| p.what == "checked"),
        "{report:?}"
    );
    assert!(report.stray.is_empty(), "{report:?}");

    // A reader can't have gc remove anything outside its records.
    std::fs::create_dir_all(repo.path().join("streams/greedy")).unwrap();
    let e = repo
        .gc(&[&TestRoots, &GreedyRoots], false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("outside its records"), "{e}");
}

#[test]
fn an_image_given_as_bytes_is_stored_unnamed_pinned_with_its_owner_and_collected() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("cache");
    let repo = Repository::init(&path).unwrap();
    let src = tmp.path().join("src");
    tree(&src);
    let scanned = crate::scan::scan(&src, &Default::default()).unwrap();
    let image = cfs_format::writer::write_image(&scanned.tree, &Default::default()).unwrap();
    let id = cfs_format::fsverity::digest(&image);
    let pending = repo.begin_mount_image(&image).unwrap();
    assert_eq!(pending.image(), id);
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut pending.opened_image(), &mut bytes).unwrap();
    assert_eq!(bytes, image);
    // The mount holding the test's directory stands for the image's mount.
    let Ok(mount) = crate::sys::mount_at(tmp.path()) else {
        println!("skipped: this kernel can't name mounts");
        return;
    };
    let pin = pending
        .pin_mount(mount, "/somewhere/else", Some(1001))
        .unwrap();
    let repo = Repository::open(&path).unwrap();
    let pins = repo.pins().unwrap();
    assert_eq!(pins, [pin]);
    assert_eq!(
        (pins[0].owner, pins[0].state.clone()),
        (Some(1001), PinState::Live)
    );
    // Kept while mounted, though nothing names it; the same bytes again
    // are the same image.
    assert_eq!(repo.gc(&[], false).unwrap().mounted_only, [id]);
    let again = repo.begin_mount_image(&image).unwrap();
    assert_eq!(again.image(), id);
    drop(again);
    let repo = Repository::open(&path).unwrap();
    // The mount gone, gc removes the pin, the link and the object.
    std::fs::remove_file(path.join(&pins[0].path)).unwrap();
    let gc = repo.gc(&[], false).unwrap();
    assert_eq!(
        (gc.images_removed.as_slice(), gc.objects_removed),
        ([id].as_slice(), 1)
    );
    assert!(repo.image_ids().unwrap().is_empty());
}

/// A repository, or an empty directory, that belongs to another user (not
/// root) is neither opened nor made a repository: its owner could plant
/// the objects an import dedups against, or read what the caller imports.
#[test]
fn a_repository_of_another_user_is_refused_naming_its_owner() {
    if !rustix::process::geteuid().is_root() {
        cfs_testkit::report_skip("needs root to give a directory to another user");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let theirs = tmp.path().join("theirs");
    Repository::init(&theirs).unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let nobody = Some(rustix::process::Uid::from_raw(65534));
    for dir in [&theirs, &empty] {
        rustix::fs::chown(dir, nobody, None).unwrap();
    }
    let empty_mode = mode_of(&empty);
    for (what, got) in [
        ("open", Repository::open(&theirs).err()),
        ("init", Repository::init(&theirs).err()),
        ("init of an empty directory", Repository::init(&empty).err()),
    ] {
        let Some(RepoError::OtherOwner {
            owner: 65534,
            you: 0,
            ..
        }) = got
        else {
            panic!("{what}: {got:?}");
        };
    }
    assert!(!empty.join(crate::repository::VERSION_FILE).exists());
    assert_eq!(
        mode_of(&empty),
        empty_mode,
        "init changed the mode of another's directory"
    );
    let message = Repository::open(&theirs).err().unwrap().to_string();
    assert!(
        message.contains("belongs to uid 65534, neither you (uid 0) nor root"),
        "{message}"
    );
}

/// An image over the size cfs reads back is not stored (it could be neither
/// mounted nor walked by gc). The bytes are zero pages never touched.
#[test]
fn an_image_over_the_read_limit_is_not_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repository::init(&tmp.path().join("repo")).unwrap();
    let big = vec![0u8; crate::input::MAX_IMAGE_BYTES as usize + 1];
    let e = repo.add_image(&big, "big", "the image of big").unwrap_err();
    assert!(
        matches!(e, RepoError::ImageTooLarge { size, .. } if size == big.len() as u64),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("the image of big: the image would be"),
        "{e}"
    );
    assert!(repo.images().unwrap().is_empty());
}
