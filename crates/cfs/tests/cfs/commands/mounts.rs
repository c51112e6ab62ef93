//! Mounting as people expect: an image whose objects are missing is refused
//! up front (unless `--no-check-objects`) in every mode and for every user;
//! `--upperdir` makes a writable mount; a refused overlay or erofs says the
//! kernel's reason; `idmap=` maps owners through a user namespace.

use super::{Scratch, TOOLS};
use crate::cfs;
use crate::support::mount;
use cfs_testkit::mounts::assert_nothing_left;
use cfs_testkit::users::As;
use cfs_testkit::{need, os, require};
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// Stores the scratch tree as `doc` in the repository `home/r` (owned by
/// the test user), and removes the one object it needs.
fn repo_missing_an_object(s: &Scratch) {
    s.run_ok(
        As::User,
        &[],
        r#"$CFS --repo r create-image src doc >/dev/null
           rm "r/objects/$($CFS --repo r image-objects doc)""#,
    );
}

#[test]
fn missing_objects_refuse_the_mount_in_every_mode() {
    require!(need::rootless(TOOLS));
    let s = Scratch::new();
    repo_missing_an_object(&s);
    // Each run its own mount point and error file (root's are root's), and
    // root its own copy of the repository (it uses no other user's).
    let script = |fuse: &str, n: usize, r: &str| {
        format!(
            r#"[ -d {r} ] || {{ cp -a r {r} && chown -R 0:0 {r}; }}
               mkdir -p m{n}
               if $CFS --repo {r} mount {fuse} doc m{n} 2>err{n}; then echo mounted; fi
               cat err{n}
               $CFS --repo {r} mount {fuse} --no-check-objects doc m{n}
               cat m{n}/small
               if cat m{n}/d/big >/dev/null 2>&1; then echo read; fi
               $CFS unmount m{n}"#
        )
    };
    for (n, (who, fuse)) in [
        (As::Root, "--fuse=no"),
        (As::Root, "--fuse=standalone"),
        (As::User, ""),
        (As::UserNs, ""),
    ]
    .into_iter()
    .enumerate()
    {
        let repo = if matches!(who, As::Root) {
            "root-r"
        } else {
            "r"
        };
        let out = s.run_ok(who, &[], &script(fuse, n, repo));
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].starts_with("cfs: cannot mount doc: 1 of the 1 objects ")
                && lines[0].contains("are missing from")
                && lines[0].contains("--no-check-objects"),
            "{who:?} {fuse}: {out}"
        );
        // Mounted anyway: inline files read, the missing one fails.
        assert_eq!(&lines[1..], ["inline"], "{who:?} {fuse}: {out}");
    }
    assert_nothing_left(s.path());
    s.tag.assert_none_left(Duration::from_secs(5));
}

#[test]
fn upperdir_makes_a_writable_mount() {
    require!(need::rootless(TOOLS));
    let s = Scratch::new();
    let script = r#"$CFS --repo r create-image src doc >/dev/null
        mkdir -p m up work
        $CFS --repo r mount --upperdir up --workdir work doc m
        echo new > m/new-file
        $CFS unmount m
        cat up/new-file
        if $CFS --repo r mount --read-write doc m 2>err; then echo mounted; fi
        if grep -q -- --upperdir err; then echo "needs --upperdir"; fi
        rm -rf r up work m err"#;
    for who in [As::UserNs, As::Root] {
        assert_eq!(
            s.run_ok(who, &[], script),
            "new\nneeds --upperdir\n",
            "{who:?}"
        );
    }
    assert_nothing_left(s.path());
    s.tag.assert_none_left(Duration::from_secs(5));
}

#[test]
fn refusals_carry_the_kernels_reason() {
    require!(need::kernel_mounts());
    let s = Scratch::new();
    let t = s.path();
    let r = cfs().repo(t.join("repo"));
    r.ok([
        os("create-image"),
        s.home.join("src").as_os_str(),
        os("doc"),
    ]);
    // An upper directory on another file system than the work directory.
    let other = t.join("tmpfs");
    std::fs::create_dir(&other).unwrap();
    cfs_testkit::command::run_ok(
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&other),
    );
    let _tmpfs = Unmount(&other);
    std::fs::create_dir(other.join("up")).unwrap();
    let (work, mnt) = (t.join("work"), t.join("mnt"));
    std::fs::create_dir(&work).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let e = r.fails([
        os("mount"),
        os("--upperdir"),
        other.join("up").as_os_str(),
        os("--workdir"),
        work.as_os_str(),
        os("doc"),
        mnt.as_os_str(),
    ]);
    assert!(
        e.contains("create overlay: Invalid argument")
            && e.contains(
                "[kernel: overlayfs: workdir and upperdir must reside under the same mount]"
            ),
        "{e}"
    );
    // An image whose superblock names a root inode erofs can't read.
    let image = t.join("bad.cfs");
    let mut bytes = std::fs::read(t.join("repo/images/refs/doc")).unwrap();
    bytes[1024 + 14..1024 + 16].copy_from_slice(&60000u16.to_le_bytes());
    std::fs::write(&image, bytes).unwrap();
    let e = r.fails([
        os("mount"),
        os("--no-check-objects"),
        os("--fuse=no"),
        image.as_os_str(),
        mnt.as_os_str(),
    ]);
    assert!(
        e.contains("as erofs") && e.contains("[kernel: erofs"),
        "{e}"
    );
    drop(_tmpfs);
    assert_nothing_left(t);
}

/// Unmounts a test's own mount on drop.
struct Unmount<'a>(&'a Path);
impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        cfs_testkit::mounts::umount(self.0);
    }
}

/// A process in a new user namespace whose uid and gid maps this test
/// writes (`0 100000 65536`, `0 200000 65536`), killed on drop.
struct MappedNamespace(std::process::Child);

impl MappedNamespace {
    fn new() -> MappedNamespace {
        let mut child = std::process::Command::new("unshare")
            .args(["--user", "sleep", "120"])
            .spawn()
            .unwrap();
        let ns = format!("/proc/{}/ns/user", child.id());
        let own = std::fs::metadata("/proc/self/ns/user").unwrap().ino();
        // Wait (bounded) until the child is in its own namespace.
        let entered = cfs_testkit::mounts::wait_until(Duration::from_secs(10), || {
            std::fs::metadata(&ns).is_ok_and(|m| m.ino() != own)
        });
        if !entered {
            let _ = child.kill();
            panic!("unshare --user did not enter a namespace");
        }
        let proc = format!("/proc/{}", child.id());
        std::fs::write(format!("{proc}/uid_map"), "0 100000 65536\n").unwrap();
        std::fs::write(format!("{proc}/gid_map"), "0 200000 65536\n").unwrap();
        MappedNamespace(child)
    }

    fn path(&self) -> String {
        format!("/proc/{}/ns/user", self.0.id())
    }
}

impl Drop for MappedNamespace {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn idmap_maps_owners_through_a_user_namespace() {
    require!(need::kernel_mounts(), need::tools(&["unshare"]));
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("roots"), b"root's\n").unwrap();
    std::fs::write(src.join("users"), b"a user's file\n".repeat(100)).unwrap();
    rustix::fs::chown(
        src.join("users"),
        Some(rustix::fs::Uid::from_raw(1000)),
        Some(rustix::fs::Gid::from_raw(1000)),
    )
    .unwrap();
    let (image, objects) = (t.path().join("i.cfs"), t.path().join("objects"));
    cfs().ok([
        os("mkfs"),
        os("--digest-store"),
        objects.as_os_str(),
        src.as_os_str(),
        image.as_os_str(),
    ]);
    let ns = MappedNamespace::new();
    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let owners = |mnt: &Path| {
        ["roots", "users"].map(|f| {
            let m = std::fs::metadata(mnt.join(f)).unwrap();
            (m.uid(), m.gid())
        })
    };
    let want = [(100_000, 200_000), (101_000, 201_000)];

    // mount.composefs -o idmap=PATH, as C has it.
    let names = cfs().personalities();
    let o = std::process::Command::new(names.path().join("mount.composefs"))
        .arg(&image)
        .arg(&mnt)
        .arg("-o")
        .arg(format!("basedir={},idmap={}", objects.display(), ns.path()))
        .output()
        .unwrap();
    let guard = cfs_testkit::mounts::Mounted::new(&cfs(), &mnt);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(owners(&mnt), want);
    assert_eq!(std::fs::read(mnt.join("users")).unwrap().len(), 1400);
    drop(guard);

    // cfs mount --idmap, the same; FUSE modes refuse it.
    let ns_path = ns.path();
    let m = mount(
        &[
            os("--idmap"),
            OsStr::new(&ns_path),
            os("--basedir"),
            objects.as_os_str(),
            image.as_os_str(),
            mnt.as_os_str(),
        ],
        &mnt,
    )
    .unwrap();
    assert_eq!(owners(&mnt), want);
    drop(m);
    let e = cfs().fails([
        os("mount"),
        os("--fuse=yes"),
        os("--idmap"),
        OsStr::new(&ns_path),
        os("--basedir"),
        objects.as_os_str(),
        image.as_os_str(),
        mnt.as_os_str(),
    ]);
    assert!(e.contains("idmap needs the kernel mount"), "{e}");
    assert_nothing_left(t.path());
}
