//! The README's install command, run into a temporary prefix with the
//! binary under test (`--binary`, so the test doesn't spend minutes on a
//! release build), and everything used from there: the C names, `man -M`,
//! the completions, and `mount -t composefs` through the installed helper.
//!
//! mount(8) looks for `mount.TYPE` helpers in `/sbin` only (util-linux's
//! libmount: `/sbin:/sbin/fs.d:/sbin/fs`; `PATH` is not searched), so the
//! mount test runs mount(8) in a private mount namespace where a directory
//! holding only a link to the installed `PREFIX/sbin/mount.composefs` is
//! bind-mounted over `/sbin`: mount(8) then runs the installed helper as it
//! would from a real install, and nothing outside the namespace changes.
//! It also runs the helper directly with the arguments mount(8) gives it.

use crate::cfs;
use crate::conventions::man::render;
use cfs_testkit::mounts::assert_nothing_left;
use cfs_testkit::{need, require, stderr};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The checkout's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The install command the README gives (the line running
/// `scripts/install.sh` in its Install section), as arguments after the
/// script, without `sudo`.
fn readme_command() -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let line = readme
        .lines()
        .skip_while(|l| !l.starts_with("## Install"))
        .find(|l| l.contains("scripts/install.sh"))
        .expect("the README's Install section runs scripts/install.sh");
    let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    let at = words
        .iter()
        .position(|w| w == "scripts/install.sh")
        .unwrap();
    assert!(
        words[..at].iter().all(|w| w == "sudo"),
        "unexpected install line: {line}"
    );
    words[at + 1..].to_vec()
}

/// Runs the README's command with its `--prefix` replaced by `prefix` (and
/// `extra` arguments), installing the binary under test.
fn install(prefix: &Path, extra: &[&str]) -> String {
    let mut args = readme_command();
    let p = args
        .iter()
        .position(|a| a == "--prefix")
        .expect("the README's command names its --prefix");
    args[p + 1] = prefix.to_str().unwrap().to_owned();
    let o = Command::new(root().join("scripts/install.sh"))
        .args(&args)
        .args(extra)
        .arg("--binary")
        .arg(cfs().exe())
        .env_remove("PREFIX")
        .env_remove("DESTDIR")
        .output()
        .unwrap();
    assert!(o.status.success(), "install.sh {args:?}: {}", stderr(&o));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn readme_install_command_installs_everything_under_the_prefix() {
    let t = tempfile::tempdir().unwrap();
    let prefix = t.path().join("prefix");
    let said = install(&prefix, &[]);
    assert!(said.contains("installed cfs"), "{said}");
    // The note that mount(8) won't find PREFIX/sbin.
    assert!(said.contains("/sbin/mount.composefs"), "{said}");

    let bin = prefix.join("bin");
    assert_eq!(
        std::fs::read(bin.join("cfs")).unwrap(),
        std::fs::read(cfs().exe()).unwrap()
    );
    for (link, target) in [
        ("bin/mkcomposefs", "cfs"),
        ("bin/composefs-info", "cfs"),
        ("sbin/mount.composefs", "../bin/cfs"),
    ] {
        assert_eq!(
            std::fs::read_link(prefix.join(link)).unwrap(),
            Path::new(target),
            "{link}"
        );
    }
    // Each name runs as itself.
    let version = |exe: PathBuf| {
        let o = Command::new(&exe).arg("-V").output().unwrap();
        String::from_utf8(o.stdout).unwrap()
    };
    for name in ["bin/cfs", "bin/mkcomposefs", "bin/composefs-info"] {
        let want = Path::new(name).file_name().unwrap().to_str().unwrap();
        assert!(version(prefix.join(name)).starts_with(&format!("{want} ")));
    }
    assert!(version(prefix.join("sbin/mount.composefs")).starts_with("mount.composefs "));

    // Completions and documentation.
    let share = prefix.join("share");
    for f in [
        "bash-completion/completions/cfs",
        "zsh/site-functions/_cfs",
        "fish/vendor_completions.d/cfs.fish",
        "doc/cfs/json.md",
        "doc/cfs/README.md",
        "doc/cfs/mount-service.md",
    ] {
        assert!(
            std::fs::metadata(share.join(f)).unwrap().len() > 0,
            "{f} is empty"
        );
    }
    if need::have_tool("bash") {
        let o = Command::new("bash")
            .args(["-c", ". \"$1\" && complete -p cfs", "bash"])
            .arg(share.join("bash-completion/completions/cfs"))
            .output()
            .unwrap();
        assert!(o.status.success() && o.stderr.is_empty(), "{}", stderr(&o));
    }

    // The mount service's units, the service started from this binary.
    let units = prefix.join("lib/systemd/system");
    assert!(
        std::fs::metadata(units.join("cfs-mount.socket"))
            .unwrap()
            .len()
            > 0
    );
    let service = std::fs::read_to_string(units.join("cfs-mount.service")).unwrap();
    assert!(
        service.contains(&format!(
            "ExecStart={} mount-service ",
            bin.join("cfs").display()
        )),
        "{service}"
    );

    // Manual pages, read with man -M as a user of the prefix would.
    let man = share.join("man");
    assert!(man.join("man1/cfs-oci-pull.1").is_file());
    require!(need::tools(&["man"]));
    for (section, page, says) in [
        ("1", "cfs", "cfs - composefs"),
        ("1", "cfs-mount", "cfs mount"),
        ("1", "mkcomposefs", "mkcomposefs - Create a composefs image"),
        (
            "1",
            "composefs-info",
            "composefs-info - Inspect composefs images",
        ),
        ("8", "mount.composefs", "MOUNT OPTIONS"),
    ] {
        let o = Command::new("man")
            .arg("-M")
            .arg(&man)
            .args([section, page])
            .env("MANWIDTH", "100")
            .env("MANROFFOPT", "-rHY=0")
            .output()
            .unwrap();
        assert!(o.status.success(), "man {section} {page}: {}", stderr(&o));
        let text = String::from_utf8_lossy(&o.stdout);
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(text.contains(says), "man {section} {page}: {text}");
        // The same page, rendered alone, has no warning.
        let file = man.join(format!("man{section}/{page}.{section}"));
        render(&file);
    }
}

/// A packager's staged install: everything under DESTDIR, nothing written
/// elsewhere, the links right for the final prefix.
#[test]
fn destdir_stages_a_package() {
    let t = tempfile::tempdir().unwrap();
    let stage = t.path().join("stage");
    let o = Command::new(root().join("scripts/install.sh"))
        .args(["--prefix", "/usr", "--destdir"])
        .arg(&stage)
        .args(["--sbindir", "/sbin", "--binary"])
        .arg(cfs().exe())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let entries: Vec<String> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, ["stage"]);
    assert!(stage.join("usr/bin/cfs").is_file());
    assert!(stage.join("usr/share/man/man8/mount.composefs.8").is_file());
    // Outside the prefix, mount.composefs points at the final binary.
    assert_eq!(
        std::fs::read_link(stage.join("sbin/mount.composefs")).unwrap(),
        Path::new("/usr/bin/cfs")
    );
    assert_eq!(
        std::fs::read_link(stage.join("usr/bin/mkcomposefs")).unwrap(),
        Path::new("cfs")
    );
}

/// `mount -t composefs` through the installed helper (see the module
/// comment for how mount(8) is made to find it), and the helper run
/// directly as mount(8) runs it; the image built by the installed
/// `mkcomposefs`.
#[test]
fn installed_helper_mounts_for_mount8() {
    require!(
        need::kernel_mounts(),
        need::tools(&["unshare", "mount", "umount", "findmnt"])
    );
    let t = tempfile::tempdir().unwrap();
    let prefix = t.path().join("prefix");
    install(&prefix, &[]);
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("small"), b"hi\n").unwrap();
    std::fs::write(src.join("d/big"), "installed\n".repeat(500)).unwrap();
    let (image, objects) = (t.path().join("image.cfs"), t.path().join("objects"));
    let o = Command::new(prefix.join("bin/mkcomposefs"))
        .arg(format!("--digest-store={}", objects.display()))
        .arg(&src)
        .arg(&image)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let (fake_sbin, mnt) = (t.path().join("sbin"), t.path().join("mnt"));
    std::fs::create_dir(&fake_sbin).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    std::os::unix::fs::symlink(
        prefix.join("sbin/mount.composefs"),
        fake_sbin.join("mount.composefs"),
    )
    .unwrap();
    let script = r#"set -eu
        mount --bind "$FAKE_SBIN" "$(readlink -f /sbin)"
        mount -t composefs "$IMAGE" "$MNT" -o "basedir=$OBJECTS,ro"
        echo "mount8: $(findmnt -n -o FSTYPE,SOURCE "$MNT") $(cat "$MNT/small") $(wc -c <"$MNT/d/big")"
        umount "$MNT"
        "$PREFIX/sbin/mount.composefs" "$IMAGE" "$MNT" -n -o "basedir=$OBJECTS" -t composefs
        echo "direct: $(findmnt -n -o FSTYPE,SOURCE "$MNT") $(cat "$MNT/small")"
        umount "$MNT"
    "#;
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .env("FAKE_SBIN", &fake_sbin)
        .env("IMAGE", &image)
        .env("MNT", &mnt)
        .env("OBJECTS", &objects)
        .env("PREFIX", &prefix)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}\n{out}", stderr(&o));
    assert!(out.contains("mount8: overlay composefs hi 5000"), "{out}");
    assert!(out.contains("direct: overlay composefs hi"), "{out}");
    assert_nothing_left(t.path());
}
