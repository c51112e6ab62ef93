//! The default repository is the real user's: the plain user and that user
//! as root of a user namespace share `~/.local/share/cfs` (or
//! `$XDG_DATA_HOME/cfs`); root, also root of a namespace root made, gets
//! `/var/lib/cfs`. A name that isn't there is reported with the repository
//! searched.

use super::{passwd_home, Scratch, TOOLS};
use crate::cfs;
use cfs_testkit::users::As;
use cfs_testkit::{need, require};
use std::ffi::OsStr;
use std::time::Duration;

#[test]
fn a_user_namespace_uses_the_invoking_users_repository() {
    require!(need::rootless(TOOLS));
    let s = Scratch::new();
    let home = s.home.clone();
    let repo = home.join(".local/share/cfs");
    let env: &[(&str, &OsStr)] = &[("HOME", home.as_os_str())];
    for (who, name) in [(As::User, "by-user"), (As::UserNs, "in-userns")] {
        let out = s.run_ok(
            who,
            env,
            &format!(
                r#"unset XDG_DATA_HOME
                   $CFS init
                   $CFS create-image src {name} >/dev/null
                   $CFS images | cut -f1 | tr '\n' ' '; echo
                   if $CFS dump no-such-image 2>err; then echo found; fi; cat err
                   mkdir -p mnt; $CFS mount {name} mnt; cat mnt/small; $CFS unmount mnt"#
            ),
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], repo.to_str().unwrap(), "{who:?}: {out}");
        // The namespace sees what the user stored: one repository.
        let want_images = match who {
            As::User => "by-user ",
            _ => "by-user in-userns ",
        };
        assert_eq!(lines[1], want_images, "{who:?}: {out}");
        assert_eq!(
            lines[2],
            format!(
                "cfs: no image named \"no-such-image\" in the repository {}",
                repo.display()
            ),
            "{who:?}: {out}"
        );
        assert_eq!(lines[3], "inline", "{who:?}: {out}");
    }
    // $XDG_DATA_HOME wins over HOME; without HOME, the passwd entry of the
    // real user (not root's, although uid 0 in the namespace) decides.
    let xdg = home.join("xdg");
    let out = s.run_ok(
        As::UserNs,
        &[
            ("HOME", home.as_os_str()),
            ("XDG_DATA_HOME", xdg.as_os_str()),
        ],
        r#"$CFS init
           env -u HOME -u XDG_DATA_HOME $CFS dump no-such-image 2>&1 || true"#,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], xdg.join("cfs").to_str().unwrap(), "{out}");
    assert!(
        lines[1].contains(&format!("{}/.local/share/cfs", passwd_home())),
        "{out}"
    );
    s.tag.assert_none_left(Duration::from_secs(5));
}

#[test]
fn root_and_a_namespace_root_made_use_the_system_repository() {
    require!(need::root());
    let name = "no-such-image-for-a-default-repository-test";
    // Looking up a name creates nothing; whether /var/lib/cfs exists or not,
    // the error names it.
    let o = cfs()
        .command(["dump", name])
        .env("HOME", "/root")
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("/var/lib/cfs"), "{e}");
    let o = std::process::Command::new("unshare")
        .args(["-Urm"])
        .arg(cfs().exe())
        .args(["dump", name])
        .env_remove("CFS_REPO")
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("/var/lib/cfs"), "{e}");
}
