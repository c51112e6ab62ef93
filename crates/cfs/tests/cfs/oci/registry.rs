//! A real registry on loopback (Debian's `docker-registry`, images pushed
//! with `skopeo`): pull, mount, a wrong blob digest; and a Debian minbase
//! root (cached by `.ci/run`) compared with `umoci unpack`.

use super::compare::{compare_rootless, compare_with_umoci};
use super::tars::{sample_layers, write_layout};
use crate::support::in_repo;
use cfs_testkit::{err, need, ok, require, skip};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

struct Registry {
    child: std::process::Child,
    port: u16,
    storage: PathBuf,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry(work: &Path) -> Option<Registry> {
    let bin = ["docker-registry", "/usr/bin/docker-registry"]
        .into_iter()
        .find(|b| need::have_tool(b))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let storage = work.join("registry");
    std::fs::create_dir_all(&storage).unwrap();
    let config = work.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let reg = Registry {
        child,
        port,
        storage,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(reg);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    None
}

fn skopeo_push(layout: &Path, tag: &str, dest: &str) {
    let o = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(dest)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn registry_pull_mount_and_wrong_digest() {
    require!(need::tools(&["skopeo"]));
    let t = tempfile::tempdir().unwrap();
    let Some(reg) = start_registry(t.path()) else {
        skip!("needs docker-registry (Debian package docker-registry)");
    };
    let layout = t.path().join("layout");
    write_layout(&layout, "v1", &sample_layers());
    let src = format!("docker://127.0.0.1:{}/test/sample:v1", reg.port);
    skopeo_push(&layout, "v1", &src);
    let repo = t.path().join("repo");
    let id = ok(in_repo(
        &repo,
        &[&"oci", &"pull", &"--tls-verify=false", &src],
    ));
    assert!(ok(in_repo(&repo, &[&"oci", &"images"])).starts_with("sample:v1\t"));
    // The same image as from the layout.
    let repo2 = t.path().join("repo2");
    let id2 = ok(in_repo(
        &repo2,
        &[&"oci", &"pull", &format!("oci:{}:v1", layout.display())],
    ));
    assert_eq!(id, id2);
    if let Some(rootfs) = compare_with_umoci(
        &repo,
        "sample:v1",
        &format!("{}:v1", layout.display()),
        t.path(),
    ) {
        compare_rootless(&repo, "sample:v1", &rootfs, t.path());
    }
    // Pulled again: every layer is already there.
    let o = in_repo(
        &repo,
        &[&"oci", &"pull", &"--tls-verify=false", &src, &"again"],
    );
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(ok(o), id);
    assert!(e.contains("(0 fetched, 3 already present)"), "{e}");

    // Corrupt one layer in the registry's storage: the pull fails naming it.
    let manifest: String = std::fs::read_to_string(layout.join("index.json")).unwrap();
    let md = manifest
        .split("\"digest\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let m = std::fs::read_to_string(layout.join("blobs/sha256").join(&md[7..])).unwrap();
    let layer = m
        .split("\"digest\":\"")
        .nth(3)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let hex = &layer[7..];
    let data = reg
        .storage
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    let fresh = t.path().join("fresh");
    let e = err(in_repo(
        &fresh,
        &[&"oci", &"pull", &"--tls-verify=false", &src, &"bad"],
    ));
    assert!(e.contains(hex), "error does not name the blob {layer}: {e}");
    assert!(ok(in_repo(&fresh, &[&"oci", &"images"])).is_empty());
    assert!(ok(in_repo(&fresh, &[&"images"])).is_empty());
}

/// A debootstrapped Debian minbase root (cached by `.ci/run` as
/// `/var/cache/cfs-test/minbase.tar`), as a one-layer image made with
/// `umoci raw add-layer`: pulled, mounted and compared with `umoci unpack`.
#[test]
fn debian_minbase_matches_umoci_unpack() {
    let tar = Path::new("/var/cache/cfs-test/minbase.tar");
    if !tar.exists() {
        skip!(
            "no cached Debian minbase root at {} (.ci/run builds it with debootstrap)",
            tar.display()
        );
    }
    require!(need::tools(&["umoci"]));
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    let img = format!("{}:minbase", layout.display());
    for args in [
        vec!["init", "--layout", layout.to_str().unwrap()],
        vec!["new", "--image", &img],
        vec!["raw", "add-layer", "--image", &img, tar.to_str().unwrap()],
    ] {
        let o = Command::new("umoci").args(&args).output().unwrap();
        assert!(
            o.status.success(),
            "umoci {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let repo = t.path().join("repo");
    ok(in_repo(
        &repo,
        &[&"oci", &"pull", &format!("oci:{img}"), &"minbase"],
    ));
    compare_with_umoci(&repo, "minbase", &img, t.path());
    ok(in_repo(&repo, &[&"fsck"]));
}
