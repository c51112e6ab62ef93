//! `cfs mount` through the service, as the plain user and as root of a user
//! namespace: a kernel overlay over erofs (not FUSE), the walk and contents
//! of the source, `cfs mounts` says `service`, the user unmounts it and
//! another user can't.

use super::{home, run, run_ok, unavailable, Service, MAKE_SRC};
use cfs_testkit::require;
use cfs_testkit::users::As;
use std::time::Duration;

/// The body both users run: make a tree, import it, mount it by name (and
/// the image file with --basedir), list both, print the mount lines.
const MOUNT_BY_NAME_AND_FILE: &str = r#"
make_src
id=$($CFS --repo r create-image src img)
mkdir m f
$CFS --repo r mount --explain img m
echo "line: $(mountline m)"
$CFS mounts | grep -F "$(pwd -P)/m" | sed 's/^/mounts: /'
echo "--- source"; list src
echo "--- name"; list m
$CFS mount --basedir r/objects "r/objects/$(echo $id | cut -c1-2)/$(echo $id | cut -c3-)" f
echo "--- file"; list f
echo "--- end"
"#;

fn section<'a>(out: &'a str, name: &str) -> &'a str {
    let start = out
        .find(&format!("--- {name}\n"))
        .unwrap_or_else(|| panic!("no section {name} in:\n{out}"))
        + name.len()
        + 5;
    let end = out[start..].find("--- ").map_or(out.len(), |i| start + i);
    &out[start..end]
}

fn assert_service_mounts(who: &str, out: &str) {
    assert!(out.starts_with("mode: service\n"), "{who}:\n{out}");
    assert!(
        out.contains("line: overlay composefs-service\n"),
        "{who}: not a kernel overlay made by the service:\n{out}"
    );
    assert!(out.contains("mounts: service\t"), "{who}:\n{out}");
    let src = section(out, "source");
    assert!(
        src.contains("./dir/hardlink f"),
        "{who}: the listing is empty?\n{src}"
    );
    assert_eq!(
        section(out, "name"),
        src,
        "{who}: the mount by name differs from the source"
    );
    assert_eq!(
        section(out, "file"),
        src,
        "{who}: the image file's mount differs from the source"
    );
}

#[test]
fn a_plain_user_gets_a_kernel_mount_only_it_can_unmount() {
    require!(unavailable());
    let h = home();
    let svc = Service::start(&[]);
    let out = run_ok(
        As::User,
        &h,
        Some(&svc),
        &[],
        &format!("{MAKE_SRC}\n{MOUNT_BY_NAME_AND_FILE}"),
    );
    assert_service_mounts("plain user", &out);
    // Another user can't unmount them; the user can.
    let other = run(
        As::Root,
        &h,
        Some(&svc),
        &[],
        r#"setpriv --reuid 65534 --regid 65534 --clear-groups $CFS unmount "$HOME_DIR/m" 2>&1 && echo UNMOUNTED
           mountline m"#,
    );
    let text = String::from_utf8_lossy(&other.stdout);
    assert!(
        !text.contains("UNMOUNTED"),
        "another user unmounted it:\n{text}"
    );
    assert!(
        text.contains("not made for you") && text.contains("overlay composefs-service"),
        "{text}\nservice log:\n{}",
        svc.log()
    );
    let out = run_ok(
        As::User,
        &h,
        Some(&svc),
        &[],
        "$CFS unmount m; $CFS unmount f; echo \"left: $(mountline m)$(mountline f)\"",
    );
    assert_eq!(out, "left: \n");
    // The service recorded both mounts for this user, and forgot them.
    let log = svc.log();
    assert_eq!(log.matches(": mount: mounted image").count(), 2, "{log}");
    let unmounted = log
        .lines()
        .filter(|l| l.contains("uid ") && l.contains(": unmount u") && l.ends_with(": unmounted"))
        .count();
    assert_eq!(unmounted, 2, "{log}");
    assert!(
        log.contains("refused: that mount was not made for you"),
        "{log}"
    );
    h.tag.assert_none_left(Duration::from_secs(10));
}

#[test]
fn in_a_user_namespace_the_images_root_is_the_namespaces_root() {
    require!(unavailable());
    let h = home();
    let svc = Service::start(&["--collect-every", "1"]);
    // Imported in the namespace, the files are root's (the user's own uid,
    // mapped to 0): the image says uid 0, and so does the mount.
    let out = run_ok(
        As::UserNs,
        &h,
        Some(&svc),
        &[],
        &format!(
            "{MAKE_SRC}\n{MOUNT_BY_NAME_AND_FILE}\n\
             echo \"owner: $(stat -c %u:%g m/ext1 m/dir | tr '\\n' ' ')\"\n\
             $CFS unmount m; $CFS unmount f; echo \"left: $(mountline m)$(mountline f)\""
        ),
    );
    assert_service_mounts("user namespace", &out);
    assert!(out.contains("owner: 0:0 0:0 \n"), "{out}");
    assert!(out.ends_with("left: \n"), "{out}");
    h.tag.assert_none_left(Duration::from_secs(10));

    // A mount left in a namespace goes with it, and the cache entry with
    // the mount: the service finds it gone and collects the image.
    let out = run_ok(
        As::UserNs,
        &h,
        Some(&svc),
        &[],
        "mkdir g; $CFS --repo r mount img g; echo \"line: $(mountline g)\"",
    );
    assert_eq!(out, "line: overlay composefs-service\n");
    let images = svc.cache().join("images");
    let cached = || {
        std::fs::read_dir(&images)
            .map(|d| d.flatten().filter(|e| e.file_name() != "refs").count())
            .unwrap_or(0)
    };
    assert!(
        cfs_testkit::mounts::wait_until(Duration::from_secs(20), || cached() == 0),
        "the image of a mount whose namespace is gone is still cached:\n{}",
        svc.log()
    );
}

/// A mount whose record (its pin, which says who may unmount it and keeps
/// its image) can't be written is undone, not left unaccounted for.
#[test]
fn a_mount_that_cannot_be_recorded_is_undone() {
    require!(unavailable());
    let h = home();
    let svc = Service::start(&[]);
    // The cache's pins directory made read-only (a read-only bind mount on
    // itself, undone by the guard): the pins can be read, not written.
    let pins = svc.cache().join("pins");
    std::fs::create_dir_all(&pins).unwrap();
    struct ReadOnly(std::path::PathBuf);
    impl Drop for ReadOnly {
        fn drop(&mut self) {
            cfs_testkit::mounts::umount(&self.0);
        }
    }
    cfs_testkit::command::run_ok(std::process::Command::new("mount").args([
        cfs_testkit::os("--bind"),
        pins.as_os_str(),
        pins.as_os_str(),
    ]));
    let _ro = ReadOnly(pins.clone());
    cfs_testkit::command::run_ok(std::process::Command::new("mount").args([
        cfs_testkit::os("-o"),
        cfs_testkit::os("remount,bind,ro"),
        pins.as_os_str(),
    ]));
    let (image, objects) = super::small_image(h.top());
    let vars = &super::image_vars(&image, &objects);
    let out = run(
        As::User,
        &h,
        Some(&svc),
        vars,
        r#"mkdir m
           $CFS mount --fuse=no --basedir "$OBJECTS" "$IMAGE" m || true
           echo "left: $(mountline m)""#,
    );
    let err = cfs_testkit::stderr(&out);
    assert!(
        err.contains("could not record the mount") && err.contains("so it was undone"),
        "{err}"
    );
    assert!(!err.contains("not cleanly"), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "left: \n", "{err}");
}
