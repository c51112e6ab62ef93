//! Upstream composefs's own FUSE round trip (`tests/test-random-fuse.sh`),
//! with cfs: a random tree ([`super::gendir`]) is dumped the way upstream's
//! `dumpdir --userxattr --whiteout` dumps it, built into an image (whose
//! dump rebuilds it byte for byte), mounted with FUSE, dumped again and
//! compared; the mount is built into a second image, unmounted with plain
//! `umount`, and the second image mounted at the same path and compared
//! with the first mount. Repeated `CFS_ROUNDTRIP_ROUNDS` times (10, as
//! upstream), every mount at one path: a server that unmounted by path on
//! its way out would take down the next round's mount.

use super::gendir::GenDir;
use crate::support::expected_from_source;
use cfs_testkit::mounts::unmounted_within;
use cfs_testkit::walk::{diff, walk, Entry};
use cfs_testkit::{need, os, require, Rng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What upstream's `dumpdir --userxattr --whiteout` keeps: whiteouts read
/// as the mount shows them, and `user.` xattrs only.
fn dumpdir(walked: BTreeMap<PathBuf, Entry>) -> BTreeMap<PathBuf, Entry> {
    let mut out = expected_from_source(walked);
    for e in out.values_mut() {
        e.xattrs
            .retain(|k, _| k.as_encoded_bytes().starts_with(b"user."));
    }
    out
}

fn user_only(walked: BTreeMap<PathBuf, Entry>) -> BTreeMap<PathBuf, Entry> {
    walked
        .into_iter()
        .map(|(p, mut e)| {
            e.xattrs
                .retain(|k, _| k.as_encoded_bytes().starts_with(b"user."));
            (p, e)
        })
        .collect()
}

/// Mounts `image` with the standalone FUSE server at `mnt`.
fn fuse_mount(image: &Path, objects: &Path, mnt: &Path) {
    crate::cfs().ok([
        os("fuse-serve"),
        os("--basedir"),
        objects.as_os_str(),
        image.as_os_str(),
        mnt.as_os_str(),
    ]);
}

/// Unmounts `mnt` as upstream does (`umount`), and checks it is gone.
fn umount(mnt: &Path) {
    cfs_testkit::command::run_ok(std::process::Command::new("umount").arg(mnt));
    assert!(
        unmounted_within(mnt, Duration::from_secs(5)),
        "{}",
        mnt.display()
    );
}

fn assert_same(what: &str, seed: u64, a: &BTreeMap<PathBuf, Entry>, b: &BTreeMap<PathBuf, Entry>) {
    let d = diff(a, b);
    assert!(
        d.is_empty(),
        "{what} differ (CFS_TEST_SEED={seed}):\n{}",
        d.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn upstream_random_fuse_round_trip_with_remounts_at_one_path() {
    require!(need::fuse_mounts());
    let (mut seeds, first) = Rng::from_env("CFS_TEST_SEED");
    let rounds = cfs_testkit::rng::env_number("CFS_ROUNDTRIP_ROUNDS", 10);
    println!("round trip: {rounds} rounds from CFS_TEST_SEED={first}");
    let t = tempfile::tempdir().unwrap();
    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _guard = cfs_testkit::mounts::Mounted::new(&crate::cfs(), &mnt);
    for round in 0..rounds {
        let seed = seeds.next_u64();
        let work = t.path().join(format!("round{round}"));
        std::fs::create_dir(&work).unwrap();
        let (root, objects) = (work.join("root"), work.join("objects"));
        GenDir::new(seed, true, 1 << 20).generate(&root);
        let want = dumpdir(walk(&root));
        let image = work.join("root.cfs");
        crate::cfs().ok([
            os("mkfs"),
            os("--digest-store"),
            objects.as_os_str(),
            root.as_os_str(),
            image.as_os_str(),
        ]);
        // The dump rebuilds the image byte for byte.
        let dump = crate::cfs().ok([os("dump"), image.as_os_str()]);
        let dumpfile = work.join("root.dump");
        std::fs::write(&dumpfile, &dump).unwrap();
        let rebuilt = work.join("dump.cfs");
        crate::cfs().ok([
            os("mkfs"),
            os("--from-file"),
            dumpfile.as_os_str(),
            rebuilt.as_os_str(),
        ]);
        assert!(
            std::fs::read(&image).unwrap() == std::fs::read(&rebuilt).unwrap(),
            "dump + mkfs is not reproducible (CFS_TEST_SEED={seed})"
        );

        fuse_mount(&image, &objects, &mnt);
        let got = user_only(walk(&mnt));
        let image2 = work.join("fuse.cfs");
        crate::cfs().ok([
            os("mkfs"),
            os("--digest-store"),
            objects.as_os_str(),
            mnt.as_os_str(),
            image2.as_os_str(),
        ]);
        umount(&mnt);
        assert_same("the tree and its FUSE mount", seed, &want, &got);

        fuse_mount(&image2, &objects, &mnt);
        let got2 = user_only(walk(&mnt));
        umount(&mnt);
        assert_same(
            "the FUSE mounts of the image and of its rebuild",
            seed,
            &got,
            &got2,
        );
        std::fs::remove_dir_all(&work).unwrap();
    }
}
