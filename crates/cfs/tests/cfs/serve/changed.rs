//! What a mount serves when its image file changes.
//!
//! - With `--digest`, the bytes checked are the bytes served: without
//!   fs-verity on the file, every mode mounts a sealed private copy, so the
//!   file's owner rewriting it in place afterwards changes nothing.
//! - Without, the FUSE server reads the file through its block cache: once
//!   the file changes (truncated, rewritten, extended), what it hadn't read
//!   answers EIO, and the server lives on (a mapped image would have died
//!   of SIGBUS on truncation).
//! - A 64 KiB image with an apparent size of 1 TiB costs the server what it
//!   reads, not a table sized by the file.

use super::{drop_caches, make_tree, run_ok, setup, setup_with, Setup, FUSE_MODES};
use cfs_testkit::mounts::{bounded, wait_until};
use cfs_testkit::users::As;
use cfs_testkit::{need, os, require};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// For every mode (the kernel's too): mount `--digest` of an image file the
/// mounting user owns, rewrite the file in place with another image, drop
/// the caches: the mount still shows the checked image.
#[test]
fn digest_mounts_show_the_checked_bytes_after_an_in_place_rewrite() {
    require!(need::rootless(super::TOOLS));
    let s = setup();
    // Another image of the same layout, differing in one file's content.
    let other = s.t.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (image_b, _, _) = crate::support::build(&other, &{
        let src = other.join("src");
        make_tree(&src, "inline B\n");
        src
    });
    super::chmod_world_readable(&other);
    let kernel = (
        As::Root,
        r#"$CFS mount --fuse=no --basedir "$OBJECTS""#,
        "",
        "kernel",
    );
    for (i, &(who, mount, _, what)) in std::iter::once(&kernel).chain(FUSE_MODES).enumerate() {
        let dir = s.home.join(format!("digest{i}"));
        let script = format!(
            r#"
            d="$PWD/digest{i}"; mkdir "$d"; cd "$d"; mkdir m
            cp "$IMAGE" img
            {mount} --digest "$DIGEST" ./img m
            list m > before
            dd if="$IMAGE_B" of=img conv=notrunc status=none
            touch rewritten
            n=0; while [ ! -e dropped ]; do
                n=$((n + 1)); [ $n -lt 600 ] || exit 1; sleep 0.05
            done
            list m > after
            $CFS unmount m
            cmp -s img "$IMAGE_B" || {{ echo "the file was not rewritten"; exit 1; }}
            cat after
            "#
        );
        let mut child = script_child(who, &s, &script, &[("IMAGE_B", image_b.as_os_str())]);
        let rewritten = dir.join("rewritten");
        assert!(
            wait_until(Duration::from_secs(60), || rewritten.exists()
                || child.try_wait().ok().flatten().is_some()),
            "{what}: the script never rewrote the image"
        );
        drop_caches();
        let _ = std::fs::write(dir.join("dropped"), b"");
        let out = bounded(Duration::from_secs(60), "the script", move || {
            child.wait_with_output().unwrap()
        });
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{what}: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        let before = std::fs::read_to_string(dir.join("before")).unwrap();
        let inline_a = cfs_testkit::walk::sha256_hex(b"inline A\n");
        assert!(before.contains(&inline_a), "{what}: {before}");
        assert_eq!(stdout, before, "{what}: the mount changed with the file");
    }
    s.tag.assert_none_left(Duration::from_secs(10));
}

/// A script run in the background as `who` (see [`super::run`]), its
/// output captured.
fn script_child(
    who: As,
    s: &Setup,
    script: &str,
    env: &[(&str, &std::ffi::OsStr)],
) -> std::process::Child {
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5"])
        .arg(super::LIMIT.as_secs().to_string());
    if !matches!(who, As::Root) {
        cmd.args(["setpriv", "--reuid", cfs_testkit::users::TEST_USER])
            .args(["--regid", cfs_testkit::users::TEST_USER, "--init-groups"]);
    }
    if matches!(who, As::UserNs) {
        cmd.args(["unshare", "-Urm"]);
    }
    cmd.args(["sh", "-eu", "-c", &format!("{}\n{script}", super::LIST)])
        .env("CFS", crate::cfs().exe())
        .env("IMAGE", &s.image)
        .env("OBJECTS", &s.objects)
        .env("DIGEST", &s.digest)
        .envs(env.iter().copied())
        .current_dir(&s.home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    s.tag.mark(&mut cmd).spawn().unwrap()
}

/// Many directories and files: an image of many blocks, most of which a
/// listing of its root doesn't read.
fn many_blocks(src: &Path) {
    crate::support::generate(src, 3000, 100, 1);
}

/// Every FUSE mode, and each change to the image file (truncated, rewritten
/// with other bytes, extended) after only the mount's root was read:
/// reading deeper fails with EIO, the server stays alive and answers what
/// it had read, and the mount unmounts cleanly, its server gone.
#[test]
fn a_served_image_that_changes_answers_eio_and_the_server_lives() {
    require!(need::rootless(super::TOOLS));
    let s = setup_with(many_blocks);
    let changes = [
        ("truncated", "truncate -s 8192 img"),
        (
            "rewritten",
            "dd if=/dev/zero of=img bs=4096 seek=1 count=$(( $(stat -c %s img) / 4096 - 1 )) conv=notrunc status=none",
        ),
        ("extended", "truncate -s +1M img"),
    ];
    for (i, &(who, mount, _, what)) in FUSE_MODES.iter().enumerate() {
        for (j, (change, how)) in changes.iter().enumerate() {
            let script = format!(
                r#"
                d="$PWD/changed{i}-{j}"; mkdir "$d"; cd "$d"; mkdir m
                cp "$IMAGE" img
                {mount} ./img m
                ls m > /dev/null
                server=$(pgrep -f -- "__serve .*--mountpoint $d/m( |\$)" | head -n1)
                {how}
                errors=$(find m 2>&1 >/dev/null | grep -c 'Input/output error' || true)
                echo "eio=$errors"
                kill -0 "$server" || {{ echo "the server died"; exit 1; }}
                ls m > /dev/null
                $CFS unmount m
                n=0; while kill -0 "$server" 2>/dev/null; do
                    n=$((n + 1)); [ $n -lt 200 ] || {{ echo "the server outlived its mount"; exit 1; }}
                    sleep 0.05
                done
                "#
            );
            let out = run_ok(who, &s, &script);
            let eio: usize = out
                .lines()
                .find_map(|l| l.strip_prefix("eio="))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            assert!(
                eio > 0,
                "{what}, image {change}: no EIO from what the server hadn't read\n{out}"
            );
        }
    }
    s.tag.assert_none_left(Duration::from_secs(10));
}

/// A small image with an apparent size of 1 TiB (a sparse tail), served
/// standalone and walked: the server's peak RSS stays small (reported).
#[test]
fn a_one_tib_sparse_image_costs_the_server_what_it_reads() {
    require!(need::rootless(super::TOOLS));
    let s = setup();
    let image = s.t.path().join("huge.cfs");
    std::fs::copy(&s.image, &image).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    let mnt = s.t.path().join("huge-mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _m = crate::support::mount(
        &[
            os("--fuse=standalone"),
            os("--basedir"),
            s.objects.as_os_str(),
            image.as_os_str(),
            mnt.as_os_str(),
        ],
        &mnt,
    )
    .unwrap();
    let walked = cfs_testkit::walk::walk(&mnt);
    assert!(walked.len() > 4, "{walked:?}");
    let server = server_of(&mnt).expect("the server of the mount");
    let status = std::fs::read_to_string(format!("/proc/{server}/status")).unwrap();
    let kb = |k: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    };
    let (rss, peak) = (kb("VmRSS:"), kb("VmHWM:"));
    println!("server of a 1 TiB-apparent image: RSS {rss} kB, peak {peak} kB");
    assert!(
        peak < 64 * 1024,
        "the server's peak RSS is {peak} kB for a 1 TiB-apparent image"
    );
}

/// The pid of the detached server of the mount at `mnt`.
fn server_of(mnt: &Path) -> Option<u32> {
    let want = format!("--mountpoint\0{}\0", mnt.display());
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        (cmdline.contains("__serve") && cmdline.contains(&want)).then_some(pid)
    })
}
