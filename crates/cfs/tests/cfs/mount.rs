//! End-to-end kernel mounts: `cfs mount`, `cfs unmount` and `mount.composefs`
//! on images `cfs mkfs --digest-store` builds from a generated tree holding
//! every file type, xattrs (user, security, `trusted.overlay.*` that the image
//! stores escaped), hard links, a whiteout and a large sparse file.
//!
//! The mounted tree is walked (lstat, readlink, xattrs, sha256 of contents)
//! and compared with the source tree and with the image's own dump (`cfs
//! dump`, contents from the objects it names). The few things a composefs mount shows
//! differently from its source by design are mapped, each with its reason, in
//! [`expected_from_source`].
//!
//! Needs root, erofs and overlayfs; skipped with a message otherwise. Every
//! mount is undone by a guard, and each test checks that no mount or loop
//! device naming its files is left behind.

use crate::cfs;
use crate::support::*;
use cfs_testkit::mounts::{assert_nothing_left, loop_devices_naming, Mounted};
use cfs_testkit::walk::{diff, sha256_file, walk};
use cfs_testkit::{need, ok, os, require, stderr};
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;

#[test]
fn mounted_tree_equals_source() {
    require!(need::kernel_mounts());
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src);
    let (image, objects, _) = build(t.path(), &src);
    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let want = expected_from_source(walk(&src));
    let from_dump = expected_from_dump(&image, &objects);
    // As root the default takes a loop device (readahead through the image
    // file's page cache); `file` mounts the file itself.
    for (extra, on_loop) in [
        (&[][..], true),
        (&[os("--erofs-backing=loop")][..], true),
        (&[os("--erofs-backing=file")][..], false),
    ] {
        let mut args = vec![
            image.as_os_str(),
            mnt.as_os_str(),
            os("--basedir"),
            objects.as_os_str(),
        ];
        args.extend_from_slice(extra);
        let guard = mount(&args, &mnt).unwrap();
        let got = walk(&mnt);
        assert_eq!(
            !loop_devices_naming(&image).is_empty(),
            on_loop,
            "mount {extra:?}: is the image on a loop device?"
        );
        drop(guard);
        let d = diff(&want, &got);
        assert!(
            d.is_empty(),
            "mount {extra:?} differs from the source:\n{}",
            d.join("\n")
        );
        let d = diff(&from_dump, &got);
        assert!(
            d.is_empty(),
            "mount {extra:?} differs from the image's dump:\n{}",
            d.join("\n")
        );
    }
    assert_nothing_left(t.path());
}

/// Removes the temporary `/sbin/mount.composefs` link on the way out.
struct SbinHelper(PathBuf);

impl Drop for SbinHelper {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `mount -t composefs` through mount(8) itself, with cfs installed as
/// `/sbin/mount.composefs` for the duration of the test (skipped where another
/// helper is already installed there).
#[test]
fn mount_t_composefs_through_mount8() {
    require!(need::kernel_mounts());
    let sbin = PathBuf::from("/sbin/mount.composefs");
    if sbin.symlink_metadata().is_ok() {
        cfs_testkit::skip!("/sbin/mount.composefs already exists (not ours to replace)");
    }
    let (t, image, objects, digest) = small_setup();
    std::os::unix::fs::symlink(cfs().exe(), &sbin).unwrap();
    let _installed = SbinHelper(sbin);
    let mnt = t.path().join("mnt");
    let o = Command::new("mount")
        .args(["-t", "composefs"])
        .arg(&image)
        .arg(&mnt)
        .arg("-o")
        .arg(format!("basedir={},digest={digest},ro", objects.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "mount -t composefs: {}", stderr(&o));
    let g = Mounted::new(&cfs(), &mnt);
    assert_eq!(std::fs::read(mnt.join("inline")).unwrap(), b"hi\n");
    assert_eq!(std::fs::read(mnt.join("d/external")).unwrap().len(), 1700);
    drop(g);
    assert_nothing_left(t.path());
}

/// A mount of an image the caller opened (as `cfs mount NAME` opens a
/// repository image beneath the repository's fd) reads that open file and
/// never its path again: here the path is gone before the mount is made.
#[test]
fn an_opened_image_is_mounted_without_its_path() {
    require!(need::kernel_mounts());
    let (t, image, objects, _) = small_setup();
    let opened = std::fs::File::open(&image).unwrap();
    std::fs::remove_file(&image).unwrap();
    let mnt = t.path().join("mnt");
    let cfg = cfs_mount::MountConfig {
        opened_image: Some(cfs_mount::OpenedImage::new(opened)),
        ..cfs_mount::MountConfig::new(&image, &objects)
    };
    cfs_mount::mount(&cfg, &mnt, cfs_mount::MountMode::Kernel).unwrap();
    let _g = Mounted::new(&cfs(), &mnt);
    assert_eq!(std::fs::read(mnt.join("inline")).unwrap(), b"hi\n");
    assert_eq!(std::fs::read(mnt.join("d/external")).unwrap().len(), 1700);
}

#[test]
fn mount_by_name_in_a_repository() {
    require!(need::kernel_mounts());
    let (t, image, objects, digest) = small_setup();
    // A real repository, filled by hand with an image built outside it.
    let repo = t.path().join("repo");
    cfs().repo(&repo).ok(["init"]);
    std::fs::rename(&objects, repo.join("objects")).unwrap();
    // The image is an object too; images/ID links to it.
    let object = format!("{}/{}", &digest[..2], &digest[2..]);
    std::fs::create_dir_all(repo.join("objects").join(&digest[..2])).unwrap();
    std::fs::rename(&image, repo.join("objects").join(&object)).unwrap();
    std::os::unix::fs::symlink(
        format!("../objects/{object}"),
        repo.join("images").join(&digest),
    )
    .unwrap();
    std::os::unix::fs::symlink(format!("../{digest}"), repo.join("images/refs/base")).unwrap();
    let mnt = t.path().join("mnt");
    for name in ["base", digest.as_str()] {
        let g = mount(
            &[os(name), mnt.as_os_str(), os("--repo"), repo.as_os_str()],
            &mnt,
        )
        .unwrap();
        assert_eq!(std::fs::read(mnt.join("inline")).unwrap(), b"hi\n");
        assert_eq!(std::fs::read(mnt.join("d/external")).unwrap().len(), 1700);
        drop(g);
    }
    let e = mount(
        &[os("nope"), mnt.as_os_str(), os("--repo"), repo.as_os_str()],
        &mnt,
    )
    .unwrap_err();
    assert!(e.contains("no image named \"nope\""), "{e}");
    assert_nothing_left(t.path());
}

#[test]
fn writable_mount_writes_only_the_upper_dir() {
    require!(need::kernel_mounts());
    let (t, image, objects, _) = small_setup();
    let (upper, work, mnt) = (
        t.path().join("upper"),
        t.path().join("work"),
        t.path().join("mnt"),
    );
    std::fs::create_dir(&upper).unwrap();
    std::fs::create_dir(&work).unwrap();
    let image_sha = sha256_file(&image);
    let objects_before = walk(&objects);
    let base = [
        image.as_os_str(),
        mnt.as_os_str(),
        os("--basedir"),
        objects.as_os_str(),
    ];
    let upper_args = [
        os("--upperdir"),
        upper.as_os_str(),
        os("--workdir"),
        work.as_os_str(),
    ];

    // An upper dir makes a writable mount (--read-write is implied); without
    // one, --read-write is refused.
    let g = mount(&[&base[..], &upper_args[..]].concat(), &mnt).unwrap();
    std::fs::write(mnt.join("probe"), b"x").unwrap();
    std::fs::remove_file(mnt.join("probe")).unwrap();
    drop(g);
    let e = mount(&[&base[..], &[os("--read-write")][..]].concat(), &mnt).unwrap_err();
    assert!(e.contains("--upperdir"), "{e}");

    let g = mount(
        &[&base[..], &upper_args[..], &[os("--read-write")][..]].concat(),
        &mnt,
    )
    .unwrap();
    std::fs::write(mnt.join("new"), b"new file\n").unwrap();
    let mut ext = std::fs::read(mnt.join("d/external")).unwrap();
    ext.extend_from_slice(b"appended\n");
    std::fs::write(mnt.join("d/external"), &ext).unwrap();
    std::fs::remove_file(mnt.join("inline")).unwrap();
    drop(g);

    assert_eq!(std::fs::read(upper.join("new")).unwrap(), b"new file\n");
    assert_eq!(std::fs::read(upper.join("d/external")).unwrap(), ext);
    let wo = std::fs::symlink_metadata(upper.join("inline")).unwrap();
    assert!(
        cfs_format::overlay::is_whiteout(wo.mode(), wo.rdev()),
        "a whiteout in upper"
    );
    assert_eq!(sha256_file(&image), image_sha, "the image changed");
    assert_eq!(walk(&objects), objects_before, "the object store changed");
    // fsck: every object still has the fs-verity digest its name says.
    for (rel, e) in walk(&objects) {
        if e.content.is_some() {
            let hex = cfs().ok([os("digest"), objects.join(&rel).as_os_str()]);
            let name = rel.to_string_lossy().replace('/', "");
            assert_eq!(hex.split_whitespace().next().unwrap(), name);
        }
    }
    // Remounted over the same upper dir, the changes are there.
    let g = mount(&[&base[..], &upper_args[..]].concat(), &mnt).unwrap();
    assert_eq!(std::fs::read(mnt.join("d/external")).unwrap(), ext);
    assert!(!mnt.join("inline").exists());
    drop(g);
    assert_nothing_left(t.path());
}

/// A repository image mounted by name with an upper dir: writes land in the
/// upper dir, and `cfs fsck` finds the repository clean afterwards.
#[test]
fn writable_mount_of_a_repository_image_keeps_fsck_clean() {
    require!(need::kernel_mounts());
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src);
    let repo = t.path().join("repo");
    let r = |args: &[&OsStr]| {
        let mut all = vec![os("--repo"), repo.as_os_str()];
        all.extend_from_slice(args);
        cfs().run(&all)
    };
    ok(r(&[os("create-image"), src.as_os_str(), os("tree")]));
    let (upper, work, mnt) = (
        t.path().join("up"),
        t.path().join("wk"),
        t.path().join("mnt"),
    );
    for d in [&upper, &work, &mnt] {
        std::fs::create_dir(d).unwrap();
    }
    let g = mount(
        &[
            os("tree"),
            mnt.as_os_str(),
            os("--repo"),
            repo.as_os_str(),
            os("--upperdir"),
            upper.as_os_str(),
            os("--workdir"),
            work.as_os_str(),
            os("--read-write"),
        ],
        &mnt,
    )
    .unwrap();
    std::fs::write(mnt.join("written"), b"upper only\n").unwrap();
    drop(g);
    assert_eq!(
        std::fs::read(upper.join("written")).unwrap(),
        b"upper only\n"
    );
    let o = r(&[os("fsck")]);
    assert!(
        o.status.success(),
        "fsck after a writable mount: {}",
        stderr(&o)
    );
    assert_nothing_left(t.path());
}

#[test]
fn verity_require_fails_clearly_without_fs_verity() {
    require!(need::kernel_mounts());
    let (t, image, objects, _) = small_setup();
    let mnt = t.path().join("mnt");
    let args = [
        image.as_os_str(),
        mnt.as_os_str(),
        os("--basedir"),
        objects.as_os_str(),
    ];
    match mount(&[&args[..], &[os("--verity=require")][..]].concat(), &mnt) {
        Err(e) => assert!(e.contains("lacks fs-verity"), "{e}"),
        Ok(_) => println!("note: this object store has fs-verity; verity=require mounted"),
    }
    // try degrades to off where fs-verity is missing; off always mounts.
    for v in ["--verity=try", "--verity=off"] {
        drop(mount(&[&args[..], &[os(v)][..]].concat(), &mnt).unwrap());
    }
    assert_nothing_left(t.path());
}

#[test]
fn bad_inputs_fail_clearly_and_leave_nothing() {
    require!(need::kernel_mounts());
    let (t, image, objects, digest) = small_setup();
    let mnt = t.path().join("mnt");
    let data = std::fs::read(&image).unwrap();
    let write = |name: &str, f: &dyn Fn(&mut Vec<u8>)| {
        let mut d = data.clone();
        f(&mut d);
        let p = t.path().join(name);
        std::fs::write(&p, d).unwrap();
        p
    };
    let bad_magic = write("bad-magic.cfs", &|d| d[1024..1028].copy_from_slice(b"XXXX"));
    let truncated = write("truncated.cfs", &|d| d.truncate(d.len() - 4096));
    let garbage = write("garbage.cfs", &|d| {
        for (i, b) in d[1152..].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(151).wrapping_add(7);
        }
    });
    let wrong = "ab".repeat(32);
    let (none, no_image) = (t.path().join("none"), t.path().join("no-image"));
    let cases: Vec<(Vec<&OsStr>, &str)> = vec![
        (
            vec![bad_magic.as_os_str(), os("--basedir"), objects.as_os_str()],
            "EROFS superblock magic",
        ),
        (
            vec![truncated.as_os_str(), os("--basedir"), objects.as_os_str()],
            "truncated",
        ),
        (
            vec![
                garbage.as_os_str(),
                os("--basedir"),
                objects.as_os_str(),
                os("--no-check-objects"),
            ],
            "could not mount",
        ),
        (
            vec![image.as_os_str(), os("--basedir"), none.as_os_str()],
            "object directory",
        ),
        (
            vec![
                image.as_os_str(),
                os("--basedir"),
                objects.as_os_str(),
                os("--digest"),
                os(&wrong),
            ],
            "not the expected",
        ),
        (
            vec![
                image.as_os_str(),
                os("--basedir"),
                objects.as_os_str(),
                os("--erofs-backing=loop"),
                os("--digest"),
                os(&wrong),
            ],
            "not the expected",
        ),
        // The object check reads it first, and refuses it.
        (
            vec![garbage.as_os_str(), os("--basedir"), objects.as_os_str()],
            "is not a usable composefs image",
        ),
        // Unchecked, the kernel refuses it (through a loop device).
        (
            vec![
                garbage.as_os_str(),
                os("--basedir"),
                objects.as_os_str(),
                os("--erofs-backing=loop"),
                os("--no-check-objects"),
            ],
            "could not mount",
        ),
        (
            vec![no_image.as_os_str(), os("--basedir"), objects.as_os_str()],
            "could not open image",
        ),
    ];
    for (mut args, want) in cases {
        args.insert(1, mnt.as_os_str());
        match mount(&args, &mnt) {
            Ok(_) => panic!("{args:?} mounted"),
            Err(e) => assert!(e.contains(want), "{args:?}: want {want:?} in {e}"),
        }
        assert_nothing_left(t.path());
    }
    // The right digest mounts.
    let args = [
        image.as_os_str(),
        mnt.as_os_str(),
        os("--basedir"),
        objects.as_os_str(),
        os("--digest"),
        os(&digest),
    ];
    drop(mount(&args, &mnt).unwrap());
    // A mount point that doesn't exist: refused before anything is built.
    let e = mount(
        &[
            image.as_os_str(),
            t.path().join("no-mnt").as_os_str(),
            os("--basedir"),
            objects.as_os_str(),
        ],
        &mnt,
    )
    .unwrap_err();
    assert!(e.contains("does not exist (create it with mkdir)"), "{e}");
    let e = cfs().fails([os("unmount"), mnt.as_os_str()]);
    assert!(e.contains("not a mount point"), "{e}");
    assert_nothing_left(t.path());
}

#[test]
fn mount_composefs_helper() {
    require!(need::kernel_mounts());
    let (t, image, objects, digest) = small_setup();
    let mnt = t.path().join("mnt");
    let helper = t.path().join("mount.composefs");
    std::os::unix::fs::symlink(cfs().exe(), &helper).unwrap();
    // As mount(8) runs it: `mount.composefs SOURCE DIR [-sfnv] -o OPTS -t TYPE`.
    let run = |opts: String| {
        Command::new(&helper)
            .arg(&image)
            .arg(&mnt)
            .args(["-n", "-o", &opts, "-t", "composefs"])
            .output()
            .unwrap()
    };
    let base = format!("basedir={}", objects.display());
    let o = run(format!("{base},digest={digest},noverity,ro"));
    assert!(o.status.success(), "{}", stderr(&o));
    let g = Mounted::new(&cfs(), &mnt);
    assert_eq!(std::fs::read(mnt.join("d/external")).unwrap().len(), 1700);
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.contains(&*mnt.to_string_lossy()))
        .unwrap();
    assert!(line.contains(" - overlay composefs ro,"), "{line}");
    drop(g);

    let (upper, work) = (t.path().join("u"), t.path().join("w"));
    std::fs::create_dir(&upper).unwrap();
    std::fs::create_dir(&work).unwrap();
    let o = run(format!(
        "{base},upperdir={},workdir={},rw",
        upper.display(),
        work.display()
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let g = Mounted::new(&cfs(), &mnt);
    std::fs::write(mnt.join("written"), b"w").unwrap();
    drop(g);
    assert!(upper.join("written").exists());

    for (opts, want) in [
        (
            format!("{base},digest={}", "00".repeat(32)),
            "Failed to mount composefs",
        ),
        (format!("{base},verity"), "lacks fs-verity"),
        (format!("{base},frob"), "Unsupported option frob"),
        ("ro".to_string(), "no object directory"),
        (format!("{base},upperdir=/x"), "Both workdir and upperdir"),
    ] {
        let o = run(opts.clone());
        assert!(!o.status.success(), "{opts} mounted");
        let e = stderr(&o);
        assert!(
            e.starts_with("mount.composefs: ") && e.contains(want),
            "{opts}: {e}"
        );
    }
    assert_nothing_left(t.path());
}
