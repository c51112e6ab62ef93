//! Repository images by the commands people reach for: `create-image` asks
//! before replacing a name, `compute-id` prints exactly the id
//! `create-image` stores, `import-image` takes a composefs image made
//! elsewhere (checked, its missing objects counted), `create-dumpfile`
//! writes what `mkfs --from-file` builds back.

use crate::cfs;
use crate::support::fsck_json;
use cfs_testkit::{err, ok, os, stderr};
use std::path::{Path, PathBuf};

/// A tree with hard links (so the two ids differ), in `t/src`.
fn tree(t: &Path) -> PathBuf {
    let src = t.join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("small"), b"inline\n").unwrap();
    std::fs::write(src.join("d/big"), b"an external file\n".repeat(500)).unwrap();
    std::fs::hard_link(src.join("d/big"), src.join("big-link")).unwrap();
    std::fs::hard_link(src.join("small"), src.join("d/small-link")).unwrap();
    src
}

#[test]
fn create_image_asks_before_replacing_a_name() {
    let t = tempfile::tempdir().unwrap();
    let src = tree(t.path());
    let other = t.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("f"), b"another tree\n").unwrap();
    let r = cfs().repo(t.path().join("repo"));
    let first = r.ok([os("create-image"), src.as_os_str(), os("img")]);
    let e = r.fails([os("create-image"), other.as_os_str(), os("img")]);
    assert!(
        e.contains(&format!("\"img\" already names image {}", first.trim()))
            && e.contains("--force"),
        "{e}"
    );
    assert_eq!(r.ok(["images"]), format!("img\t{first}"));
    let second = r.ok([
        os("create-image"),
        os("--force"),
        other.as_os_str(),
        os("img"),
    ]);
    assert_ne!(second, first);
    // The replaced image stays, unnamed, until the next gc.
    let images = r.ok(["images"]);
    assert!(images.contains(&format!("-\t{first}")), "{images}");
    assert!(images.contains(&format!("img\t{second}")), "{images}");
    let gc = r.ok(["gc"]);
    assert!(gc.starts_with("removed 2 objects"), "{gc}");
    assert_eq!(r.ok(["images"]), format!("img\t{second}"));
    assert!(fsck_json(&t.path().join("repo")).0);
}

#[test]
fn compute_id_is_the_id_create_image_stores() {
    let t = tempfile::tempdir().unwrap();
    let src = tree(t.path());
    let r = cfs().repo(t.path().join("repo"));
    let computed = cfs().ok([os("compute-id"), src.as_os_str()]);
    let stored = r.ok([os("create-image"), src.as_os_str(), os("kept")]);
    assert_eq!(computed, stored);
    // mkfs keeps hard links only with --hardlinks (C 1.0.x splits them).
    let mkfs = |extra: &[&str]| {
        let mut args = vec![os("mkfs"), os("--print-digest-only")];
        args.extend(extra.iter().map(os));
        args.push(src.as_os_str());
        cfs().ok(&args)
    };
    assert_eq!(mkfs(&["--hardlinks"]), computed);
    let split = cfs().ok([os("compute-id"), os("--no-hardlinks"), src.as_os_str()]);
    assert_ne!(split, computed);
    assert_eq!(mkfs(&[]), split);
    assert_eq!(
        r.ok([
            os("create-image"),
            os("--no-hardlinks"),
            src.as_os_str(),
            os("split")
        ]),
        split
    );
    // compute-id stored nothing.
    assert_eq!(
        std::fs::read_dir(t.path()).unwrap().count(),
        2,
        "only src and repo"
    );
}

#[test]
fn import_image_checks_and_counts_missing_objects() {
    let t = tempfile::tempdir().unwrap();
    let src = tree(t.path());
    let image = t.path().join("made-elsewhere.cfs");
    let objects = t.path().join("objects-elsewhere");
    let id = cfs().ok([
        os("mkfs"),
        os("--hardlinks"),
        os("--print-digest"),
        os("--digest-store"),
        objects.as_os_str(),
        src.as_os_str(),
        image.as_os_str(),
    ]);
    let repo = t.path().join("repo");
    let r = cfs().repo(&repo);
    let o = r.run([os("import-image"), image.as_os_str(), os("imported")]);
    assert!(
        stderr(&o).contains("1 of the 1 objects image") && stderr(&o).contains("are missing"),
        "{o:?}"
    );
    assert_eq!(ok(o), id);
    assert_eq!(r.ok(["images"]), format!("imported\t{id}"));
    // It dumps like the file; fsck reports the missing object.
    assert_eq!(
        r.ok(["dump", "imported"]),
        cfs().ok([os("dump"), image.as_os_str()])
    );
    let (clean, report) = fsck_json(&repo);
    assert!(!clean && report.contains("\"missing\":[{"), "{report}");
    // Once the objects are there, nothing is said.
    cfs().ok([
        os("mkfs"),
        os("--hardlinks"),
        os("--digest-store"),
        repo.as_os_str(),
        src.as_os_str(),
        t.path().join("again.cfs").as_os_str(),
    ]);
    let o = r.run([
        os("import-image"),
        os("--force"),
        image.as_os_str(),
        os("imported"),
    ]);
    assert_eq!(stderr(&o), "");
    assert!(fsck_json(&repo).0);
    // Not an image: refused, nothing stored.
    let junk = t.path().join("junk");
    std::fs::write(&junk, vec![0x5a; 9000]).unwrap();
    let e = err(r.run([os("import-image"), junk.as_os_str(), os("junk")]));
    assert!(e.contains("is not a valid composefs image"), "{e}");
    assert!(!r.ok(["images"]).contains("junk"));
    // An existing name needs --force.
    let e = r.fails([os("import-image"), image.as_os_str(), os("imported")]);
    assert!(e.contains("--force"), "{e}");
}

#[test]
fn create_dumpfile_of_a_directory_builds_back_its_image() {
    let t = tempfile::tempdir().unwrap();
    let src = tree(t.path());
    let r = cfs().repo(t.path().join("repo"));
    let id = r.ok([os("create-image"), src.as_os_str(), os("img")]);
    let dump = t.path().join("tree.dump");
    cfs().ok([os("create-dumpfile"), src.as_os_str(), dump.as_os_str()]);
    let text = std::fs::read_to_string(&dump).unwrap();
    assert_eq!(text, r.ok(["dump", "img"]));
    assert!(
        text.contains(" @100644 "),
        "hard links as @ entries:\n{text}"
    );
    let rebuilt = cfs().ok([
        os("mkfs"),
        os("--from-file"),
        os("--print-digest-only"),
        dump.as_os_str(),
    ]);
    assert_eq!(rebuilt, id);
    // --no-hardlinks: the dump of the split tree.
    let split = cfs().ok([os("create-dumpfile"), os("--no-hardlinks"), src.as_os_str()]);
    assert!(!split.contains(" @100644 "), "{split}");
}
