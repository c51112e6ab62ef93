//! `cfs man DIR`: a page for `cfs`, for every subcommand `cfs --help` lists
//! (and `cfs oci --help`), and for the three C names, in a man directory's
//! layout; each rendered by `man -l` with groff's warnings on, and none.

use crate::cfs;
use cfs_testkit::{need, os, require};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The subcommands a `--help` lists (its `Commands:` section), less `help`.
fn listed(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

/// `man -l PAGE` with groff's warnings on: the rendered text, unhyphenated
/// and with runs of white space made one space; fails on any warning.
pub fn render(page: &Path) -> String {
    let o = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(page)
        .env("MANWIDTH", "100")
        .env("MANROFFOPT", "-rHY=0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.is_empty(),
        "man -l {}: {err}",
        page.display()
    );
    let text = String::from_utf8(o.stdout).unwrap();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn a_page_per_command_and_c_name_rendering_cleanly() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("man");
    let printed: Vec<PathBuf> = cfs()
        .ok([os("man"), dir.as_os_str()])
        .lines()
        .map(PathBuf::from)
        .collect();
    let mut written = BTreeSet::new();
    for section in ["man1", "man8"] {
        for f in std::fs::read_dir(dir.join(section)).unwrap() {
            written.insert(f.unwrap().path());
        }
    }
    assert_eq!(
        printed.iter().cloned().collect::<BTreeSet<_>>(),
        written,
        "cfs man printed other files than it wrote"
    );

    let mut expected = vec!["man1/cfs.1".to_owned()];
    for sub in listed(&cfs().ok(["--help"])) {
        expected.push(format!("man1/cfs-{sub}.1"));
    }
    for sub in listed(&cfs().ok(["oci", "--help"])) {
        expected.push(format!("man1/cfs-oci-{sub}.1"));
    }
    expected.extend([
        "man1/mkcomposefs.1".to_owned(),
        "man1/composefs-info.1".to_owned(),
        "man8/mount.composefs.8".to_owned(),
    ]);
    assert!(expected.len() > 25, "{expected:?}");
    let expected: BTreeSet<PathBuf> = expected.iter().map(|p| dir.join(p)).collect();
    assert_eq!(written, expected);

    require!(need::tools(&["man"]));
    for page in &written {
        let text = render(page);
        let name = page.file_stem().unwrap().to_str().unwrap();
        for heading in ["NAME", "SYNOPSIS", "DESCRIPTION"] {
            assert!(text.contains(heading), "{name}: no {heading}");
        }
        assert!(text.contains(&format!("{name} - ")), "{name}:\n{text}");
    }
    // What each C page is for, and what a subcommand's page says.
    let page = |p: &str| render(&dir.join(p));
    let mount8 = page("man8/mount.composefs.8");
    for word in [
        "MOUNT OPTIONS",
        "basedir=",
        "digest=",
        "upperdir=",
        "mount(8)",
    ] {
        assert!(mount8.contains(word), "mount.composefs(8): no {word}");
    }
    let mk = page("man1/mkcomposefs.1");
    for word in [
        "--digest-store",
        "--from-file",
        "FORMAT VERSIONS",
        "--min-version",
    ] {
        assert!(mk.contains(word), "mkcomposefs(1): no {word}");
    }
    let info = page("man1/composefs-info.1");
    for word in ["missing-objects", "measure-file", "--basedir", "--filter"] {
        assert!(info.contains(word), "composefs-info(1): no {word}");
    }
    let mount1 = page("man1/cfs-mount.1");
    for word in ["--fuse", "--upperdir", "MODES", "fuse+overlay", "cfs mount"] {
        assert!(mount1.contains(word), "cfs-mount(1): no {word}");
    }
    let cfs1 = page("man1/cfs.1");
    for word in ["cfs-mount(1)", "ENVIRONMENT", "CFS_REPO", "JSON OUTPUT"] {
        assert!(cfs1.contains(word), "cfs(1): no {word}");
    }
}
