//! Tar bombs: small compressed layers that expand into huge trees or huge
//! extension headers. Each is imported by the real binary under a memory
//! cap (`cfs_testkit::memory`: `prlimit --data`), its peak RSS printed on
//! stdout, and must be refused with an error naming the limit and the
//! entry, or imported within the budget (`docs/oci.md`, "Budget").

use super::tars::{gzip, write_layout, Tar};
use crate::cfs;
use cfs_testkit::memory::{run_capped, Measured};
use cfs_testkit::{ok, report};
use flate2::write::GzEncoder;
use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// The memory cap of every import here: above the budget's worst case
/// (about 1.1 GB, `docs/oci.md`), far below what the bombs took before.
const CAP: u64 = 1536 << 20;

/// Writes a gzipped tar to `path`, streaming: `fill` appends entries to a
/// [`Tar`] it may flush (`flush`) whenever it likes.
fn gz_tar(path: &Path, fill: impl FnOnce(&mut dyn FnMut(&mut Tar))) -> u64 {
    let file = std::fs::File::create(path).unwrap();
    let mut gz = GzEncoder::new(std::io::BufWriter::new(file), flate2::Compression::fast());
    let mut raw = 0u64;
    fill(&mut |t: &mut Tar| {
        raw += t.0.len() as u64;
        gz.write_all(&t.0).unwrap();
        t.0.clear();
    });
    gz.write_all(&[0u8; 1024]).unwrap();
    gz.finish().unwrap().flush().unwrap();
    raw + 1024
}

/// `cfs import-tar FILE bomb` into a fresh repository under `dir`, capped.
fn import(dir: &Path, file: &Path) -> Measured {
    let repo = dir.join("repo");
    let _ = std::fs::remove_dir_all(&repo);
    ok(cfs().repo(&repo).run(["init"]));
    let cmd = cfs().repo(&repo).command([
        OsStr::new("import-tar"),
        file.as_os_str(),
        OsStr::new("bomb"),
    ]);
    measured(file, cmd)
}

/// Runs `cmd` capped, reports its peak, checks it stayed under the cap.
fn measured(what: &Path, cmd: std::process::Command) -> Measured {
    let m = run_capped(&cmd, CAP, Duration::from_secs(600));
    let name = what.file_name().unwrap().to_string_lossy();
    let size = std::fs::metadata(what).map(|m| m.len()).unwrap_or(0);
    report(&format!(
        "{name} ({size} bytes): peak RSS {:.1} MiB{}, {}",
        m.peak_mib(),
        if m.capped {
            ""
        } else {
            " (no prlimit: not capped)"
        },
        if m.output.status.success() {
            "imported".to_owned()
        } else {
            String::from_utf8_lossy(&m.output.stderr)
                .chars()
                .take(300)
                .collect()
        }
    ));
    assert!(
        m.peak_kib * 1024 < CAP,
        "{name}: peak {} KiB over the cap",
        m.peak_kib
    );
    m
}

/// The import must have been refused naming `limit` and the entry `entry`.
fn refused(m: &Measured, limit: &str, entry: &str) {
    let e = String::from_utf8_lossy(&m.output.stderr);
    assert!(
        !m.output.status.success() && m.output.status.code() == Some(1),
        "not a clean refusal ({}): {e}",
        m.output.status
    );
    assert!(e.contains(limit), "does not name {limit}: {e}");
    assert!(e.contains(entry), "does not name {entry}: {e}");
    assert!(!e.contains("panicked"), "{e}");
}

fn imported(m: &Measured) {
    assert!(
        m.output.status.success(),
        "refused: {}",
        String::from_utf8_lossy(&m.output.stderr)
    );
}

/// Entry `i` of a deep bomb: a PAX path `NNNNNN/a/a/…/a/f`, `depth` deep,
/// unique by its first component, so every entry implies `depth` new
/// directories.
fn deep_entry(t: &mut Tar, i: usize, depth: usize) {
    let path = format!("{i:06}/{}f", "a/".repeat(depth));
    t.pax(&[("path", path.as_bytes())]).file("placeholder", b"");
}

/// Deep unique paths: implicit directories count against the budget, and
/// the layer record does not repeat their paths.
#[test]
fn deep_unique_paths() {
    let t = tempfile::tempdir().unwrap();
    // The 2.6 KiB bomb that took 1.1 GB: deeper than max_depth.
    let f = t.path().join("deep-2040x100.tar.gz");
    gz_tar(&f, |flush| {
        let mut tar = Tar::default();
        for i in 0..100 {
            deep_entry(&mut tar, i, 2040);
            flush(&mut tar);
        }
    });
    refused(
        &import(t.path(), &f),
        "max_depth = 1024",
        "entry \"000000/a/a/a",
    );

    // 100 entries 1000 deep: 100k directories, within the budget.
    let layer: Vec<u8> = {
        let mut tar = Tar::default();
        for i in 0..100 {
            deep_entry(&mut tar, i, 1000);
        }
        tar.done()
    };
    let f = t.path().join("deep-1000x100.tar.gz");
    std::fs::write(&f, gzip(&layer)).unwrap();
    imported(&import(t.path(), &f));
    // Pulled, its layer record holds no line per implied directory: it is
    // smaller than the tar (a full dumpfile would be ~100 MB).
    let layout = t.path().join("layout");
    write_layout(&layout, "v1", std::slice::from_ref(&layer));
    let repo = t.path().join("pulled");
    ok(cfs().repo(&repo).run(["init"]));
    let mut pull = cfs().repo(&repo).cmd();
    pull.args([
        "oci",
        "pull",
        &format!("oci:{}:v1", layout.display()),
        "deep",
    ]);
    imported(&measured(&layout.join("index.json"), pull));
    let records: Vec<u64> = std::fs::read_dir(repo.join("streams/oci/layers/sha256"))
        .unwrap()
        .map(|e| std::fs::metadata(e.unwrap().path()).unwrap().len())
        .collect();
    report(&format!(
        "its layer record: {records:?} bytes, the tar {} bytes",
        layer.len()
    ));
    assert!(
        records.len() == 1 && records[0] < layer.len() as u64,
        "{records:?}"
    );
    // It reads back: a second pull and gc/fsck use it.
    ok(cfs().repo(&repo).run([
        "oci",
        "pull",
        &format!("oci:{}:v1", layout.display()),
        "again",
    ]));
    ok(cfs().repo(&repo).run(["gc"]));
    ok(cfs().repo(&repo).run(["fsck"]));

    // 2100 entries 1000 deep: over max_layer_nodes.
    let f = t.path().join("deep-1000x2100.tar.gz");
    gz_tar(&f, |flush| {
        let mut tar = Tar::default();
        for i in 0..2100 {
            deep_entry(&mut tar, i, 1000);
            flush(&mut tar);
        }
    });
    refused(
        &import(t.path(), &f),
        "over the limit max_layer_nodes = 2097152",
        "entry \"0020",
    );
}

/// A million empty files (6 MB of gzip): imported, memory linear in them.
#[test]
fn many_empty_entries() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("empty-1m.tar.gz");
    gz_tar(&f, |flush| {
        let mut tar = Tar::default();
        for i in 0..1_000_000u32 {
            tar.file(&format!("d{:03}/{i:07}", i / 10_000), b"");
            if i % 10_000 == 9_999 {
                flush(&mut tar);
            }
        }
        flush(&mut tar);
    });
    let m = import(t.path(), &f);
    imported(&m);
    let listed = ok(cfs().run([
        "dump".as_ref(),
        t.path().join("repo/images/refs/bomb").as_os_str(),
    ]));
    assert_eq!(listed.lines().count(), 1 + 100 + 1_000_000);
}

/// Huge PAX records: one over max_extension; many just under it, whose
/// xattrs fill the layer's memory budget (`max_layer_bytes`, 1 GiB) from
/// 5.7 MB of gzip (values of one repeated byte expand about 1,000 times,
/// just under `max_expansion_ratio`).
#[test]
fn huge_pax_records() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("pax-64m.tar.gz");
    gz_tar(&f, |flush| {
        let mut tar = Tar::default();
        tar.pax(&[("comment", &vec![b'x'; 64 << 20])])
            .file("f", b"");
        flush(&mut tar);
    });
    refused(
        &import(t.path(), &f),
        "max_extension = 1048576",
        "entry after",
    );

    let f = t.path().join("xattrs-1200x900k.tar.gz");
    let value = vec![b'v'; 60 << 10];
    gz_tar(&f, |flush| {
        let mut tar = Tar::default();
        for i in 0..1200 {
            let names: Vec<String> = (0..15)
                .map(|j| format!("SCHILY.xattr.user.v{j:02}"))
                .collect();
            let records: Vec<(&str, &[u8])> =
                names.iter().map(|n| (n.as_str(), &value[..])).collect();
            tar.pax(&records).file(&format!("f{i:05}"), b"");
            flush(&mut tar);
        }
    });
    refused(
        &import(t.path(), &f),
        "memory of this layer's tree over the limit max_layer_bytes",
        "entry \"f0",
    );
}

/// Huge GNU long names: over max_extension, or read and then over max_path.
#[test]
fn huge_gnu_long_names() {
    let t = tempfile::tempdir().unwrap();
    let long_name = |tar: &mut Tar, len: usize| {
        let name = vec![b'n'; len];
        tar.long_name(&name).file("short", b"");
    };
    let f = t.path().join("gnu-long-2m.tar.gz");
    gz_tar(&f, |flush| {
        let mut tar = Tar::default();
        for _ in 0..10 {
            long_name(&mut tar, 2 << 20);
            flush(&mut tar);
        }
    });
    refused(
        &import(t.path(), &f),
        "max_extension = 1048576",
        "entry after",
    );
    let f = t.path().join("gnu-long-900k.tar.gz");
    gz_tar(&f, |flush| {
        let mut tar = Tar::default();
        long_name(&mut tar, 900 << 10);
        flush(&mut tar);
    });
    refused(&import(t.path(), &f), "max_path = 4096", "entry \"nnnn");
}
