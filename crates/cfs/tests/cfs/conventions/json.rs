//! `--json`: each output is one JSON value on one line, parsed with
//! serde_json and compared field by field with what the test made, so a
//! renamed, dropped or mis-filled field fails here (docs/json.md is the
//! contract).

use crate::cfs;
use crate::support::mount;
use cfs_testkit::{need, os, require};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

/// Parses a command's whole stdout as one JSON value on one line.
fn parse(stdout: &str) -> Value {
    assert!(
        stdout.ends_with('\n') && stdout.matches('\n').count() == 1,
        "not one line: {stdout:?}"
    );
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The keys of a JSON object, sorted.
fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort();
    k
}

/// A tree with one inline and two external files (`tag` makes it unique).
fn tree(dir: &Path, tag: &str) {
    std::fs::create_dir_all(dir.join("d")).unwrap();
    std::fs::write(dir.join("small"), tag).unwrap();
    std::fs::write(dir.join("d/big"), format!("{tag} big\n").repeat(200)).unwrap();
    std::fs::write(dir.join("d/other"), format!("{tag} other\n").repeat(300)).unwrap();
}

/// Regular files under `objects/XX/`: their count and total size.
fn count_objects(repo: &Path) -> (u64, u64) {
    let (mut n, mut bytes) = (0, 0);
    for d in std::fs::read_dir(repo.join("objects")).unwrap() {
        let d = d.unwrap();
        if !d.file_type().unwrap().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(d.path()).unwrap() {
            let m = f.unwrap().metadata().unwrap();
            if m.is_file() {
                n += 1;
                bytes += m.len();
            }
        }
    }
    (n, bytes)
}

/// The object path (`ab/cdef…`) of a digest.
fn object_path(hex: &str) -> String {
    format!("{}/{}", &hex[..2], &hex[2..])
}

#[test]
fn images_info_and_fsck_describe_the_repository() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    let r = cfs().repo(&repo);
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    tree(&a, "a");
    tree(&b, "b");
    let id_a = r.ok([os("create-image"), a.as_os_str(), os("alpha")]);
    let id_a2 = r.ok([os("create-image"), a.as_os_str(), os("zeta")]);
    let id_b = r.ok([os("create-image"), b.as_os_str(), os("beta")]);
    let (id_a, id_b) = (id_a.trim().to_owned(), id_b.trim().to_owned());
    assert_eq!(id_a, id_a2.trim());
    // beta's image made unnamed: `rm` takes the name and `images/ID`, the
    // image object stays until a gc; `images/ID` linked again (as an import
    // interrupted before naming it leaves it) makes it an unnamed image.
    r.ok(["rm", "beta"]);
    std::os::unix::fs::symlink(
        format!("../objects/{}", object_path(&id_b)),
        repo.join("images").join(&id_b),
    )
    .unwrap();

    // images: unnamed first, then by names; names sorted.
    let images = parse(&r.ok(["images", "--json"]));
    assert_eq!(
        images,
        json!([
            {"id": id_b, "names": []},
            {"id": id_a, "names": ["alpha", "zeta"]},
        ])
    );

    // info: what the repository directory holds.
    let info = parse(&r.ok(["info", "--json"]));
    assert_eq!(
        keys(&info),
        [
            "bytes",
            "format_version",
            "images",
            "mode",
            "objects",
            "path",
            "private",
            "verity"
        ]
    );
    let (objects, bytes) = count_objects(&repo);
    assert_eq!(info["path"], repo.to_str().unwrap());
    assert_eq!(info["mode"], "0700");
    assert_eq!(info["private"], true);
    let version = std::fs::read_to_string(repo.join("cfs-repo-version")).unwrap();
    assert_eq!(
        info["format_version"].as_u64(),
        version.trim().parse::<u64>().ok()
    );
    assert_eq!(info["objects"], objects);
    assert_eq!(info["bytes"], bytes);
    assert_eq!(info["images"], 2);
    let text = r.ok(["info"]);
    let verity = info["verity"].as_str().unwrap();
    assert!(["enabled", "unavailable", "unknown"].contains(&verity));
    assert_eq!(
        verity == "enabled",
        text.contains("fs-verity: enabled"),
        "{text}"
    );

    // fsck of a clean repository.
    let clean = parse(&r.ok(["fsck", "--json"]));
    assert_eq!(
        clean,
        json!({
            "clean": true, "objects": objects, "bytes": bytes, "images": 2, "refs": 2,
            "corrupt": [], "missing": [], "stray": [], "broken": [],
        })
    );

    // A corrupt object of alpha's, a missing one of beta's, a stray file.
    let need = |id: &str| -> Vec<String> {
        r.ok(["image-objects", id])
            .lines()
            .map(|l| l.replace('/', ""))
            .collect()
    };
    let (of_a, of_b) = (need(&id_a), need(&id_b));
    let corrupt = repo.join("objects").join(object_path(&of_a[0]));
    let mut perms = std::fs::metadata(&corrupt).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    std::fs::set_permissions(&corrupt, perms).unwrap();
    std::fs::write(&corrupt, b"not what it was").unwrap();
    let found = cfs().ok([os("digest"), corrupt.as_os_str()]);
    let found = found.split_whitespace().next().unwrap().to_owned();
    let missing = of_b.iter().find(|o| !of_a.contains(o)).unwrap();
    std::fs::remove_file(repo.join("objects").join(object_path(missing))).unwrap();
    let (objects, bytes) = count_objects(&repo);
    let stray = repo.join("objects").join(&of_a[0][..2]).join("stray-file");
    std::fs::write(&stray, b"x").unwrap();

    let o = r.run(["fsck", "--json"]);
    assert!(!o.status.success(), "fsck passed a broken repository");
    let report = parse(&String::from_utf8(o.stdout).unwrap());
    assert_eq!(report["clean"], false);
    assert_eq!(report["images"], 2);
    assert_eq!(report["refs"], 2);
    // The stray file is no object.
    assert_eq!(
        (&report["objects"], &report["bytes"]),
        (&json!(objects), &json!(bytes))
    );
    assert_eq!(
        report["corrupt"],
        json!([{
            "path": corrupt.strip_prefix(&repo).unwrap().to_str().unwrap(),
            "expected": of_a[0],
            "found": found,
            "error": null,
        }])
    );
    assert_eq!(
        report["missing"],
        json!([{"image": id_b, "object": missing}])
    );
    let strays = report["stray"].as_array().unwrap();
    assert_eq!(strays.len(), 1, "{report}");
    assert_eq!(keys(&strays[0]), ["path", "what"]);
    assert_eq!(
        strays[0]["path"],
        stray.strip_prefix(&repo).unwrap().to_str().unwrap()
    );
    assert!(!strays[0]["what"].as_str().unwrap().is_empty());
    assert_eq!(report["broken"], json!([]));
}

/// `cfs mounts --json` describes exactly the mounts this test made: mode,
/// path (also escaped, for a name with a space and a newline), the mount
/// id `statx` gives for it, the filesystem type.
#[test]
fn mounts_json_describes_each_mount() {
    require!(need::fuse_mounts());
    let (t, image, objects, _digest) = crate::support::small_setup();
    let kernel = t.path().join("mnt");
    let fuse = t.path().join("f u\nse");
    std::fs::create_dir(&fuse).unwrap();
    let base = [os("--basedir"), objects.as_os_str()];
    let _k = mount(
        &[
            &base[..],
            &[os("--fuse=no"), image.as_os_str(), kernel.as_os_str()],
        ]
        .concat(),
        &kernel,
    )
    .unwrap();
    let _f = mount(
        &[
            &base[..],
            &[os("--fuse=standalone"), image.as_os_str(), fuse.as_os_str()],
        ]
        .concat(),
        &fuse,
    )
    .unwrap();
    let all = parse(&cfs().ok(["mounts", "--json"]));
    let all = all.as_array().unwrap();
    let dir = t.path().to_str().unwrap();
    for (path, escaped, mode, fstype) in [
        (&kernel, format!("{dir}/mnt"), "kernel", "overlay"),
        (&fuse, format!("{dir}/f\\040u\\012se"), "fuse", "fuse.cfs"),
    ] {
        let ours: Vec<&Value> = all
            .iter()
            .filter(|m| m["mountpoint"] == path.to_str().unwrap())
            .collect();
        assert_eq!(ours.len(), 1, "{path:?} in {all:?}");
        let m = ours[0];
        let id = rustix::fs::statx(
            rustix::fs::CWD,
            path.as_path(),
            rustix::fs::AtFlags::empty(),
            rustix::fs::StatxFlags::MNT_ID,
        )
        .unwrap()
        .stx_mnt_id;
        assert_eq!(
            *m,
            json!({
                "mode": mode,
                "mountpoint": path.to_str().unwrap(),
                "mountpoint_escaped": escaped,
                "mount_id": id,
                "fstype": fstype,
            })
        );
    }
}

/// An OCI layout with two layers (one plain tar, one gzipped) written
/// here; what `oci images` and `oci inspect` must say about it.
#[test]
fn oci_images_and_inspect_describe_the_tag() {
    use sha2::Digest as _;
    let sha = |b: &[u8]| format!("sha256:{:x}", sha2::Sha256::digest(b));
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let d = sha(b);
        std::fs::write(blobs.join(&d[7..]), b).unwrap();
        d
    };
    let (l1, l2) = (t.path().join("l1"), t.path().join("l2"));
    tree(&l1, "one");
    tree(&l2, "two");
    let tar = |dir: &Path| {
        let o = Command::new("tar")
            .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner"])
            .args(["--mtime=@0", "--format=gnu", "-C"])
            .arg(dir)
            .args(["-cf", "-", "."])
            .output()
            .unwrap();
        assert!(o.status.success());
        o.stdout
    };
    let (t1, t2) = (tar(&l1), tar(&l2));
    let gz2 = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&t2).unwrap();
        e.finish().unwrap()
    };
    let plain = "application/vnd.oci.image.layer.v1.tar";
    let gzip = "application/vnd.oci.image.layer.v1.tar+gzip";
    let layers = [
        (put(&t1), t1.len(), plain, sha(&t1)),
        (put(&gz2), gz2.len(), gzip, sha(&t2)),
    ];
    let config = json!({
        "architecture": "riscv64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layers[0].3, layers[1].3]},
    })
    .to_string();
    let config_digest = put(config.as_bytes());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest, "size": config.len(),
        },
        "layers": layers.iter().map(|(d, size, media, _)| json!({
            "mediaType": media, "digest": d, "size": size,
        })).collect::<Vec<_>>(),
    })
    .to_string();
    let manifest_digest = put(manifest.as_bytes());
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "v1"},
        }],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();

    let repo = t.path().join("repo");
    let r = cfs().repo(&repo);
    let src = format!("oci:{}:v1", layout.display());
    let id = r.ok(["oci", "pull", &src, "app"]).trim().to_owned();

    let images = parse(&r.ok(["oci", "images", "--json"]));
    assert_eq!(
        images,
        json!([{"name": "app", "manifest": manifest_digest, "image_id": id}])
    );

    let inspect = parse(&r.ok(["oci", "inspect", "app", "--json"]));
    assert_eq!(
        keys(&inspect),
        [
            "architecture",
            "config",
            "image_id",
            "layers",
            "manifest",
            "name",
            "os"
        ]
    );
    assert_eq!(inspect["name"], "app");
    assert_eq!(inspect["image_id"], id);
    assert_eq!(inspect["manifest"], manifest_digest);
    assert_eq!(inspect["config"], config_digest);
    assert_eq!(inspect["os"], "linux");
    assert_eq!(inspect["architecture"], "riscv64");
    let got = inspect["layers"].as_array().unwrap();
    assert_eq!(got.len(), 2);
    for (l, (digest, size, media, diff_id)) in got.iter().zip(&layers) {
        assert_eq!(
            keys(l),
            ["diff_id", "digest", "media_type", "record", "size"]
        );
        assert_eq!(l["digest"], *digest);
        assert_eq!(l["size"], *size);
        assert_eq!(l["media_type"], *media);
        assert_eq!(l["diff_id"], *diff_id);
        // The record is an object in the store.
        let record = l["record"].as_str().unwrap();
        assert_eq!(record.len(), 64, "{record}");
        assert!(repo.join("objects").join(object_path(record)).is_file());
    }
    // The text form says the same.
    let text = r.ok(["oci", "inspect", "app"]);
    assert!(text.contains(&format!("image id:  {id}")), "{text}");
    assert!(text.contains("platform:  linux/riscv64"), "{text}");
}
