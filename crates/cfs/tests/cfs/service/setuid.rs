//! An image may claim setuid-root files and device nodes: through the
//! service they gain the user nothing. A dumpfile-made image holds a
//! setuid-root copy of `id` and device nodes (`/dev/null`, a disk, memory):
//! run from the mount, `id` prints the user's own uid (`nosuid`); no device
//! opens (`nodev`, which the user can't undo in the initial namespaces). A
//! user namespace's root could remount without `nodev`, so there the
//! service refuses such an image, and `cfs mount` falls back to
//! fuse+overlay (whose FUSE superblock belongs to the user namespace and
//! opens no devices either).

use super::{home, image_vars, run_ok, test_user_ids, unavailable, Service};
use cfs_testkit::require;
use cfs_testkit::users::As;
use std::path::Path;
use std::time::Duration;

/// Writes, under `dir`, an object directory with a copy of `id` and a
/// dumpfile image naming it setuid root, beside device nodes.
fn setuid_image(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let id = std::fs::read("/usr/bin/id").unwrap();
    let digest = cfs_format::fsverity::digest(&id).to_hex();
    let objects = dir.join("objects");
    let obj = objects.join(&digest[..2]).join(&digest[2..]);
    std::fs::create_dir_all(obj.parent().unwrap()).unwrap();
    std::fs::write(&obj, &id).unwrap();
    let dump = format!(
        "/ 4096 40755 4 0 0 0 0.0 - - -\n\
         /bin 0 40755 2 0 0 0 0.0 - - -\n\
         /bin/id {} 104755 1 0 0 0 0.0 {}/{} - {digest}\n\
         /dev 0 40755 2 0 0 0 0.0 - - -\n\
         /dev/mem 0 20666 1 0 0 257 0.0 - - -\n\
         /dev/null 0 20666 1 0 0 259 0.0 - - -\n\
         /dev/sda 0 60666 1 0 0 2048 0.0 - - -\n",
        id.len(),
        &digest[..2],
        &digest[2..],
    );
    let dumpfile = dir.join("setuid.dump");
    std::fs::write(&dumpfile, dump).unwrap();
    let image = dir.join("setuid.cfs");
    crate::cfs().ok([
        cfs_testkit::os("mkfs"),
        cfs_testkit::os("--from-file"),
        dumpfile.as_os_str(),
        image.as_os_str(),
    ]);
    cfs_testkit::command::run_ok(std::process::Command::new("chmod").args([
        cfs_testkit::os("-R"),
        cfs_testkit::os("a+rX"),
        dir.as_os_str(),
    ]));
    (image, objects)
}

#[test]
fn setuid_root_runs_as_the_user_and_devices_do_not_open() {
    require!(unavailable());
    let h = home();
    let svc = Service::start(&[]);
    let (image, objects) = setuid_image(h.top());
    let vars = &image_vars(&image, &objects);
    let out = run_ok(
        As::User,
        &h,
        Some(&svc),
        vars,
        r#"mkdir m
           $CFS mount --basedir "$OBJECTS" "$IMAGE" m
           echo "line: $(mountline m)"
           echo "claims: $(stat -c '%u %a' m/bin/id)"
           echo "id: $(m/bin/id -u) $(m/bin/id -g) (I am $(id -u))"
           for d in null mem sda; do
               if head -c 1 m/dev/$d > /dev/null 2> err; then echo "$d: opened"; else echo "$d: $(cat err)"; fi
           done
           if (echo x > m/dev/null) 2> err; then echo "null w: opened"; else echo "null w: $(cat err)"; fi
           $CFS unmount m"#,
    );
    let (uid, gid) = test_user_ids();
    assert!(out.contains("line: overlay composefs-service\n"), "{out}");
    assert!(
        out.contains("claims: 0 4755\n"),
        "the image claims setuid root:\n{out}"
    );
    assert!(
        out.contains(&format!("id: {uid} {gid} (I am {uid})\n")),
        "setuid root took effect:\n{out}"
    );
    for d in ["null", "mem", "sda", "null w"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{d}: ")))
            .unwrap();
        assert!(line.contains("Permission denied"), "{line}\n{out}");
    }
    h.tag.assert_none_left(Duration::from_secs(10));
}

#[test]
fn a_user_namespace_gets_no_devices_from_the_service_and_falls_back() {
    require!(unavailable());
    let h = home();
    let svc = Service::start(&[]);
    let (image, objects) = setuid_image(h.top());
    let vars = &image_vars(&image, &objects);
    let out = run_ok(
        As::UserNs,
        &h,
        Some(&svc),
        vars,
        r#"mkdir m
           if $CFS mount --fuse=no --basedir "$OBJECTS" "$IMAGE" m 2> err; then echo "no: mounted"; else echo "no: $(cat err)"; fi
           $CFS mount --explain --basedir "$OBJECTS" "$IMAGE" m
           echo "line: $(mountline m)"
           if head -c 1 m/dev/sda > /dev/null 2> err; then echo "sda: opened"; else echo "sda: $(cat err)"; fi
           $CFS unmount m"#,
    );
    assert!(
        out.contains("the mount service refused: the image holds 3 device nodes"),
        "{out}"
    );
    assert!(out.contains("mode: fuse+overlay\n"), "no fallback:\n{out}");
    assert!(out.contains("line: overlay composefs\n"), "{out}");
    assert!(
        out.contains("sda: ") && !out.contains("sda: opened"),
        "{out}"
    );
    h.tag.assert_none_left(Duration::from_secs(10));
}
