//! Sparse files as GNU tar writes them, in every format it has (`--format=gnu`,
//! and `--format=pax` with `--sparse-version` 0.0, 0.1 and 1.0): each is
//! imported as the file it describes, compared by sha256 with the source.

use crate::cfs;
use cfs_testkit::{ok, report, skip};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

/// Writes `name` under `dir`: `size` bytes, data (a pattern) at `segments`.
fn sparse_file(dir: &Path, name: &str, size: u64, segments: &[(u64, usize)]) {
    let mut f = std::fs::File::create(dir.join(name)).unwrap();
    for &(offset, len) in segments {
        f.seek(SeekFrom::Start(offset)).unwrap();
        let data: Vec<u8> = (0..len)
            .map(|i| (i as u64 * 7 + offset) as u8 | 1)
            .collect();
        f.write_all(&data).unwrap();
    }
    f.set_len(size).unwrap();
}

fn sha256(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

/// Each regular file of the image `NAME` in `repo`: its size and the sha256
/// of its content (read from the object store, or inline).
fn image_files(repo: &Path, name: &str) -> BTreeMap<String, (u64, String)> {
    let dump = ok(cfs().run([
        "dump".as_ref(),
        repo.join("images/refs").join(name).as_os_str(),
    ]));
    let mut out = BTreeMap::new();
    for line in dump.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if !f[2].starts_with("100") {
            continue;
        }
        let size: u64 = f[1].parse().unwrap();
        let content = match (f[8], f[9]) {
            (_, c) if c != "-" => c.as_bytes().to_vec(),
            ("-", _) => Vec::new(),
            (object, _) => std::fs::read(repo.join("objects").join(object)).unwrap(),
        };
        out.insert(
            f[0].trim_start_matches('/').to_owned(),
            (size, sha256(&content)),
        );
    }
    out
}

#[test]
fn gnu_tar_sparse_files_in_every_format() {
    let version = Command::new("tar").arg("--version").output();
    match version {
        Ok(o) if String::from_utf8_lossy(&o.stdout).contains("GNU tar") => {}
        _ => skip!("needs GNU tar (package tar)"),
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // (name, real size, data segments)
    let many: Vec<(u64, usize)> = (0..50)
        .map(|i| (i * 1_000_000 + 4096, 100 + i as usize))
        .collect();
    type File<'a> = (&'a str, u64, &'a [(u64, usize)]);
    let files: &[File] = &[
        (
            "middle",
            10_000_000,
            &[
                (0, 3000),
                (100_000, 3000),
                (5_000_000, 3000),
                (9_000_000, 3000),
            ],
        ),
        ("all-holes", 1 << 20, &[]),
        ("tail-only", 2_000_010, &[(2_000_000, 10)]),
        ("head-only", 1 << 24, &[(0, 70_000)]),
        ("many-segments", 64 << 20, &many),
        ("dense", 5000, &[(0, 5000)]),
    ];
    let mut want = BTreeMap::new();
    for &(name, size, segments) in files {
        sparse_file(&src, name, size, segments);
        let data = std::fs::read(src.join(name)).unwrap();
        want.insert(name.to_owned(), (size, sha256(&data)));
    }
    let formats: &[(&str, &[&str])] = &[
        ("gnu", &["--format=gnu"]),
        ("pax-0.0", &["--format=pax", "--sparse-version=0.0"]),
        ("pax-0.1", &["--format=pax", "--sparse-version=0.1"]),
        ("pax-1.0", &["--format=pax", "--sparse-version=1.0"]),
    ];
    let repo = t.path().join("repo");
    ok(cfs().repo(&repo).run(["init"]));
    for &(format, flags) in formats {
        let tar = t.path().join(format!("{format}.tar"));
        let o = Command::new("tar")
            .arg("--sparse")
            .args(flags)
            .arg("-cf")
            .arg(&tar)
            .arg("-C")
            .arg(&src)
            .args(files.iter().map(|f| f.0))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "tar {format}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let stored = std::fs::metadata(&tar).unwrap().len();
        ok(cfs().repo(&repo).run([
            "import-tar".as_ref(),
            tar.as_os_str(),
            std::ffi::OsStr::from_bytes(format.as_bytes()),
        ]));
        let got = image_files(&repo, format);
        assert_eq!(got, want, "{format}");
        report(&format!(
            "{format}: a {stored}-byte tar imported as {} files, sha256 equal to the source",
            got.len()
        ));
    }
    ok(cfs().repo(&repo).run(["fsck"]));
}
