//! Where there is no service, `cfs mount` mounts with FUSE as it always
//! did, and `--explain` says why; `--fuse=yes` never asks the service;
//! `--fuse=no` without privilege needs it.

use super::{home, image_vars, run_ok, unavailable, Service};
use cfs_testkit::require;
use cfs_testkit::users::As;
use std::time::Duration;

#[test]
fn without_the_service_cfs_mount_falls_back_to_fuse() {
    require!(unavailable());
    let h = home();
    let (image, objects) = super::small_image(h.top());
    let vars = &image_vars(&image, &objects);
    for (who, mode, line) in [
        (As::User, "fuse", "fuse.cfs cfs"),
        (As::UserNs, "fuse+overlay", "overlay composefs"),
    ] {
        let out = run_ok(
            who,
            &h,
            None,
            vars,
            r#"mkdir -p m
               $CFS mount --explain --basedir "$OBJECTS" "$IMAGE" m
               echo "line: $(mountline m)"
               cat m/inline
               if $CFS mount --fuse=no --basedir "$OBJECTS" "$IMAGE" m 2> err; then echo "no: mounted"; else echo "no: $(cat err)"; fi
               $CFS unmount m"#,
        );
        assert!(
            out.starts_with(&format!("mode: {mode}\n")),
            "{who:?}:\n{out}"
        );
        assert!(
            out.contains("no mount service at /nonexistent/cfs-mount.sock"),
            "{who:?}: --explain does not say why:\n{out}"
        );
        assert!(out.contains(&format!("line: {line}\n")), "{who:?}:\n{out}");
        assert!(out.contains("inline\n"), "{out}");
        assert!(
            out.contains("no way to mount here: --fuse=no: the kernel mount needs CAP_SYS_ADMIN"),
            "{who:?}:\n{out}"
        );
    }
    h.tag.assert_none_left(Duration::from_secs(10));
}

#[test]
fn fuse_yes_never_asks_the_service() {
    require!(unavailable());
    let h = home();
    let svc = Service::start(&[]);
    let (image, objects) = super::small_image(h.top());
    let vars = &image_vars(&image, &objects);
    let out = run_ok(
        As::User,
        &h,
        Some(&svc),
        vars,
        r#"mkdir -p m
           $CFS mount --fuse=yes --explain --basedir "$OBJECTS" "$IMAGE" m
           echo "line: $(mountline m)"
           $CFS unmount m"#,
    );
    assert!(out.starts_with("mode: fuse\n"), "{out}");
    assert!(out.contains("line: fuse.cfs cfs\n"), "{out}");
    assert!(
        !svc.log().contains("uid "),
        "the service was asked:\n{}",
        svc.log()
    );
    h.tag.assert_none_left(Duration::from_secs(10));
}
