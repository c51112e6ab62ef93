use super::*;
use crate::import::Progress;

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
    // Mounts open images/ID, which reads as the image itself.
    let file = repo.image_file("one").unwrap();
    assert_eq!(file, repo.path().join("images").join(report.id.to_hex()));
    assert_eq!(
        cfs_format::fsverity::digest(&std::fs::read(&file).unwrap()),
        report.id
    );
    assert!(matches!(
        repo.image_file("nope"),
        Err(RepoError::UnknownImage(_))
    ));

    // Same image as a one-pass scan with content, written directly.
    let scanned = crate::scan::scan(&src, &opts.scan).unwrap();
    let direct = cfs_format::writer::write_image(&scanned.tree, &opts.write).unwrap();
    assert_eq!(cfs_format::fsverity::digest(&direct), report.id);

    let objs = repo.image_objects(&report.id).unwrap();
    assert_eq!(objs.len(), 2);
    assert!(repo.fsck().unwrap().is_clean());

    // An unnamed object is garbage; named ones stay.
    repo.objects()
        .insert_bytes(b"garbage that nobody names")
        .unwrap();
    let gc = repo.gc(false).unwrap();
    assert_eq!(gc.objects_removed, 1);
    assert_eq!(gc.objects_kept, 3);
    assert!(repo.fsck().unwrap().is_clean());

    repo.remove("one").unwrap();
    assert!(matches!(
        repo.resolve("one"),
        Err(RepoError::UnknownImage(_))
    ));
    let gc = repo.gc(false).unwrap();
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
