//! An image name is a name whatever the current directory holds: a file a
//! plain user leaves in a directory everyone can write (`/tmp`), named like
//! one of root's images, never stands in for it when root works there
//! (dump, create-dumpfile, mount), and a name root's repository lacks
//! fails, saying how to name the file if that was meant.

use crate::cfs;
use cfs_testkit::users::{setup_test_user, As, Script};
use cfs_testkit::{need, os, require, skip};
use std::path::Path;
use std::time::Duration;

#[test]
fn a_file_in_the_current_directory_never_stands_in_for_a_name() {
    require!(need::root());
    require!(need::kernel_mounts());
    if let Err(e) = setup_test_user() {
        skip!("no test user: {e}");
    }
    let t = tempfile::tempdir().unwrap();
    let root_src = t.path().join("root-src");
    std::fs::create_dir(&root_src).unwrap();
    std::fs::write(root_src.join("roots-file"), b"root's image\n").unwrap();
    let repo = t.path().join("repo");
    let r = cfs().repo(&repo);
    r.ok([os("create-image"), root_src.as_os_str(), os("app")]);
    r.ok([os("create-image"), root_src.as_os_str(), os("base")]);

    // The shared directory, and the user's images in it: `app`, named like
    // root's, and `absent`, like none of them; and a directory `base`, named
    // like root's other image.
    let shared = t.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    set_mode(t.path(), 0o755);
    set_mode(&shared, 0o1777);
    let o = Script {
        cfs: &cfs(),
        who: As::User,
        dir: &shared,
        env: &[],
        limit: Duration::from_secs(60),
        tag: None,
    }
    .run(
        r#"mkdir src; echo mine > src/users-file
           $CFS mkfs src app; $CFS mkfs src absent; mv src base; ls"#,
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "absent\napp\nbase\n",
        "{o:?}"
    );

    let in_shared = |args: &[&std::ffi::OsStr]| {
        let mut c = r.command(args);
        c.current_dir(&shared).output().unwrap()
    };
    let dumped = cfs_testkit::ok(in_shared(&[os("dump"), os("app")]));
    assert!(dumped.contains("/roots-file "), "{dumped}");
    assert!(!dumped.contains("users-file"), "{dumped}");

    let dumped = cfs_testkit::ok(in_shared(&[os("create-dumpfile"), os("base")]));
    assert!(dumped.contains("/roots-file "), "{dumped}");
    assert!(!dumped.contains("users-file"), "{dumped}");

    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    cfs_testkit::ok(in_shared(&[os("mount"), os("app"), mnt.as_os_str()]));
    let listed: Vec<_> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    cfs().ok([os("unmount"), mnt.as_os_str()]);
    assert_eq!(listed, [os("roots-file")]);

    // A name the repository lacks is not looked for in the directory; the
    // error says how to name the file.
    for args in [
        vec![os("dump"), os("absent")],
        vec![os("mount"), os("absent"), mnt.as_os_str()],
    ] {
        let e = cfs_testkit::err(in_shared(&args));
        assert!(e.contains("write ./absent"), "{e}");
        assert!(e.contains("no image named \"absent\""), "{e}");
    }
    // Spelled as a path, the file is what is read.
    let dumped = cfs_testkit::ok(in_shared(&[os("dump"), os("./app")]));
    assert!(dumped.contains("/users-file "), "{dumped}");
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
}
