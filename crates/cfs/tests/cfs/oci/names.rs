//! One name space for OCI images and repository images: `cfs rm oci:NAME`
//! removes the tag as `cfs oci rm NAME` does, `cfs oci tag`/`untag`, and
//! no command leaves a tag without its image (fsck stays clean).

use super::tars::{sample_layers, write_layout};
use crate::support::{fsck_json, in_repo};
use cfs_testkit::{err, ok, stderr};
use std::path::Path;

/// A repository with the sample image pulled as `sample`; its image id.
fn pulled(t: &Path) -> (std::path::PathBuf, String) {
    let layout = t.join("layout");
    write_layout(&layout, "v1", &sample_layers());
    let repo = t.join("repo");
    let src = format!("oci:{}:v1", layout.display());
    let id = ok(in_repo(&repo, &[&"oci", &"pull", &src, &"sample"]));
    (repo, id.trim().to_owned())
}

fn oci_images(repo: &Path) -> String {
    ok(in_repo(repo, &[&"oci", &"images"]))
}

#[test]
fn rm_of_the_image_name_removes_the_tag() {
    let t = tempfile::tempdir().unwrap();
    let (repo, id) = pulled(t.path());
    let o = in_repo(&repo, &[&"rm", &"oci:sample"]);
    assert!(stderr(&o).contains("removed the OCI tag sample"), "{o:?}");
    ok(o);
    assert_eq!(oci_images(&repo), "");
    let (clean, report) = fsck_json(&repo);
    assert!(clean, "{report}");
    // And by image id: every OCI name of it goes with its tag.
    let (repo, _) = pulled(&t.path().join("again"));
    ok(in_repo(&repo, &[&"oci", &"tag", &"sample", &"second"]));
    ok(in_repo(&repo, &[&"rm", &id]));
    assert_eq!(oci_images(&repo), "");
    assert_eq!(ok(in_repo(&repo, &[&"images"])), "");
    assert!(fsck_json(&repo).0);
    // An unknown name names the repository searched.
    let e = err(in_repo(&repo, &[&"rm", &"oci:sample"]));
    assert!(
        e.contains("no image named \"oci:sample\" in the repository")
            && e.contains(&*repo.to_string_lossy()),
        "{e}"
    );
}

#[test]
fn tag_and_untag() {
    let t = tempfile::tempdir().unwrap();
    let (repo, id) = pulled(t.path());
    let images = oci_images(&repo);
    let manifest = images.split('\t').nth(1).unwrap().to_owned();

    ok(in_repo(&repo, &[&"oci", &"tag", &"sample", &"copy"]));
    // By manifest digest too.
    ok(in_repo(&repo, &[&"oci", &"tag", &manifest, &"by-digest"]));
    let images = oci_images(&repo);
    for name in ["sample", "copy", "by-digest"] {
        assert!(
            images.contains(&format!("{name}\t{manifest}\t{id}\n")),
            "{name}: {images}"
        );
    }
    assert!(fsck_json(&repo).0);
    // An existing name needs --force.
    let e = err(in_repo(&repo, &[&"oci", &"tag", &"sample", &"copy"]));
    assert!(e.contains("--force"), "{e}");
    ok(in_repo(
        &repo,
        &[&"oci", &"tag", &"--force", &"sample", &"copy"],
    ));
    let e = err(in_repo(&repo, &[&"oci", &"tag", &"nosuch", &"x"]));
    assert!(e.contains("no OCI image named \"nosuch\""), "{e}");
    let e = err(in_repo(
        &repo,
        &[&"oci", &"tag", &format!("sha256:{}", "0".repeat(64)), &"x"],
    ));
    assert!(e.contains("no tag points to manifest"), "{e}");

    // untag is rm: the tag and its image name go, the others stay.
    ok(in_repo(&repo, &[&"oci", &"untag", &"copy"]));
    let images = oci_images(&repo);
    assert!(!images.contains("copy"), "{images}");
    assert!(images.contains("sample\t"), "{images}");
    let names = ok(in_repo(&repo, &[&"images"]));
    assert!(
        !names.contains("oci:copy") && names.contains("oci:sample"),
        "{names}"
    );
    assert!(fsck_json(&repo).0);
    // gc keeps what the remaining tags use: the image still reads back.
    ok(in_repo(&repo, &[&"gc"]));
    ok(in_repo(&repo, &[&"dump", &"oci:by-digest"]));
    assert!(fsck_json(&repo).0);
}
