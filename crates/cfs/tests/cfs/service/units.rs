//! The shipped systemd units: the service socket-activated the way
//! `cfs-mount.socket` does it (`systemd-socket-activate --seqpacket`, which
//! passes `LISTEN_FDS` as systemd does), run under what of
//! `cfs-mount.service`'s sandbox can be had without systemd as PID 1: its
//! `CapabilityBoundingSet=` (read from the unit), `NoNewPrivileges=`, and a
//! mount namespace of its own with `/` read-only but for the cache
//! (`ProtectSystem=strict`) and `/home`, `/root` empty (`ProtectHome=`). A
//! plain user and a user namespace still get their mounts: the service
//! mounts in their namespaces, not its own. And `systemd-analyze verify`
//! accepts both units.

use super::{home, image_vars, run_ok, small_image, unavailable, Service};
use cfs_testkit::users::As;
use cfs_testkit::{need, os, require};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn unit(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../dist/systemd")
        .join(name)
}

/// The unit's `CapabilityBoundingSet=`, as `setpriv --bounding-set` takes it.
fn bounding_set() -> String {
    let text = std::fs::read_to_string(unit("cfs-mount.service")).unwrap();
    let caps = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet=");
    let mut out = String::from("-all");
    for cap in caps.split_whitespace() {
        out.push_str(",+");
        out.push_str(&cap.strip_prefix("CAP_").unwrap().to_lowercase());
    }
    out
}

#[test]
fn socket_activated_under_the_units_restrictions() {
    require!(unavailable(), need::tools(&["systemd-socket-activate"]));
    let text = std::fs::read_to_string(unit("cfs-mount.service")).unwrap();
    for line in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "the unit no longer says {line}: update this test"
        );
    }
    let h = home();
    let caps = bounding_set();
    let svc = Service::start_with(|dir| {
        let cache = dir.join("cache");
        std::fs::create_dir(&cache).unwrap();
        let sandbox = format!(
            "mount --bind '{c}' '{c}' && mount -o remount,bind,ro / && \
             for d in /home /root; do [ -d $d ] && mount -t tmpfs -o ro,mode=0755 none $d; done; \
             exec '{exe}' mount-service --cache '{c}'",
            c = cache.display(),
            exe = crate::cfs().exe().display(),
        );
        let mut cmd = std::process::Command::new("systemd-socket-activate");
        cmd.arg("--seqpacket")
            .arg("-l")
            .arg(dir.join("mount.sock"))
            .arg("--fdname=cfs-mount.socket")
            .args(["setpriv", "--no-new-privs", "--inh-caps=-all"])
            .arg(format!("--bounding-set={caps}"))
            .args([
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                &sandbox,
            ]);
        cmd
    });
    // SocketMode=0666, which systemd-socket-activate does not set.
    super::chmod(&svc.socket(), 0o666);
    let (image, objects) = small_image(h.top());
    let vars = &image_vars(&image, &objects);
    for who in [As::User, As::UserNs] {
        let out = run_ok(
            who,
            &h,
            Some(&svc),
            vars,
            r#"mkdir -p m
               $CFS mount --fuse=no --basedir "$OBJECTS" "$IMAGE" m
               echo "line: $(mountline m)"
               cat m/inline
               $CFS unmount m"#,
        );
        assert_eq!(
            out,
            "line: overlay composefs-service\ninline\n",
            "{who:?}\n{}",
            svc.log()
        );
    }
    let log = svc.log();
    assert!(
        log.contains("listening on the socket systemd passed (cfs-mount.socket)"),
        "{log}"
    );
    h.tag.assert_none_left(Duration::from_secs(10));
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    require!(need::tools(&["systemd-analyze"]));
    // The unit names the installed binary; verify it with one that exists.
    let dir = tempfile::tempdir().unwrap();
    let service = std::fs::read_to_string(unit("cfs-mount.service"))
        .unwrap()
        .replace(
            "/usr/local/bin/cfs",
            &crate::cfs().exe().display().to_string(),
        );
    std::fs::write(dir.path().join("cfs-mount.service"), service).unwrap();
    std::fs::copy(
        unit("cfs-mount.socket"),
        dir.path().join("cfs-mount.socket"),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("cfs-mount.socket"))
        .arg(dir.path().join("cfs-mount.service"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("Failed to") && err.contains("bus") {
        cfs_testkit::skip!("systemd-analyze verify needs a running systemd here: {err}");
    }
    assert!(out.status.success() && err.trim().is_empty(), "{err}");
    let _ = os("");
}
