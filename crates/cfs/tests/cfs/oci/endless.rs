//! Input that never ends, blocks, or expands without bound, given to the
//! commands that read a file a user names (`import-tar`, `import-image`,
//! `dump`, `mkfs --from-file`, `oci pull oci:DIR`): each must end with an
//! error naming the problem, within a time and memory bound. Before these
//! were bounded, `cfs import-tar /dev/zero x` and `… - x < /dev/zero` ran
//! forever, a FIFO blocked the open, a 40 GiB sparse image was read into
//! memory, and a small `.tar.gz` of zeros wrote all of them to the
//! repository.

use super::tars::{write_layout, Tar};
use crate::cfs;
use cfs_testkit::memory::run_capped;
use cfs_testkit::{err, ok};
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// Memory any of these commands may take: far under what reading the
/// inputs whole would.
const CAP: u64 = 512 << 20;

/// Runs `cfs --repo REPO ARGS…` (no `--repo` for `mkfs`) with stdin from
/// `stdin` (or none), capped in memory and killed (failing the test) after
/// a minute.
fn bounded(repo: &Path, args: &[&OsStr], stdin: Option<&Path>) -> Output {
    // Commands with no use for a repository refuse one.
    let cmd = if args.first() == Some(&os("mkfs")) || args.first() == Some(&os("digest")) {
        cfs().command(args)
    } else {
        cfs().repo(repo).command(args)
    };
    let cmd = match stdin {
        None => cmd,
        Some(from) => {
            // run_capped gives no stdin: a shell redirects it, then execs cfs.
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg("f=$1; shift; exec \"$@\" < \"$f\"")
                .arg("sh")
                .arg(from)
                .arg(cmd.get_program())
                .args(cmd.get_args());
            sh.env_remove("CFS_REPO");
            sh
        }
    };
    run_capped(&cmd, CAP, Duration::from_secs(60)).output
}

fn os(s: &(impl AsRef<OsStr> + ?Sized)) -> &OsStr {
    s.as_ref()
}

fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
}

fn refused(o: Output, what: &str, want: &str) {
    let e = err(o);
    assert!(e.contains(want), "{what}: wanted {want:?} in:\n{e}");
}

#[test]
fn import_tar_of_endless_zeros_ends() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    ok(cfs().repo(&repo).run(["init"]));
    let zero = Path::new("/dev/zero");
    refused(
        bounded(&repo, &[os("import-tar"), os(zero), os("x")], None),
        "import-tar /dev/zero",
        "not a regular file (a character device)",
    );
    refused(
        bounded(&repo, &[os("import-tar"), os("-"), os("x")], Some(zero)),
        "import-tar - < /dev/zero",
        "over the limit max_trailer = 4194304",
    );
    // A tar padded to a 10 KiB record (GNU tar's default) still imports,
    // from a pipe as from a file.
    let tar = t.path().join("padded.tar");
    let mut bytes = Tar::default().file("f", b"hi\n").done();
    bytes.resize(10 * 1024, 0);
    std::fs::write(&tar, &bytes).unwrap();
    let from_file = ok(bounded(&repo, &[os("import-tar"), os(&tar), os("a")], None));
    let from_pipe = ok(bounded(
        &repo,
        &[os("import-tar"), os("-"), os("b")],
        Some(&tar),
    ));
    assert_eq!(from_file, from_pipe);
}

#[test]
fn fifos_named_as_input_are_refused_without_blocking() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    ok(cfs().repo(&repo).run(["init"]));
    let fifo = t.path().join("fifo");
    mkfifo(&fifo);
    let out = t.path().join("out.cfs");
    let cases: &[(&str, Vec<&OsStr>)] = &[
        ("import-tar", vec![os("import-tar"), os(&fifo), os("x")]),
        ("import-image", vec![os("import-image"), os(&fifo), os("x")]),
        ("dump", vec![os("dump"), os(&fifo)]),
        (
            "mkfs --from-file",
            vec![os("mkfs"), os("--from-file"), os(&fifo), os(&out)],
        ),
        (
            "mkfs --from-file",
            vec![os("mkfs"), os("--from-file"), os("/dev/zero"), os(&out)],
        ),
        ("digest", vec![os("digest"), os(&fifo)]),
        ("digest", vec![os("digest"), os("/dev/zero")]),
    ];
    for (what, args) in cases {
        refused(bounded(&repo, args, None), what, "not a regular file");
    }
    // A layout whose index.json, or a blob, is a FIFO.
    // A layer larger than its config and manifest, to pick its blob by size.
    let noise: Vec<u8> = (0..1u32 << 16)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let layers = vec![Tar::default().file("f", &noise).done()];
    for victim in ["index.json", "blob"] {
        let layout = t.path().join(format!("layout-{victim}"));
        write_layout(&layout, "v1", &layers);
        let path = if victim == "index.json" {
            layout.join("index.json")
        } else {
            // The layer blob: the largest one (config and manifest are smaller).
            let blobs = layout.join("blobs/sha256");
            std::fs::read_dir(&blobs)
                .unwrap()
                .map(|e| e.unwrap().path())
                .max_by_key(|p| std::fs::metadata(p).unwrap().len())
                .unwrap()
        };
        std::fs::remove_file(&path).unwrap();
        mkfifo(&path);
        let src = format!("oci:{}:v1", layout.display());
        let e = err(bounded(
            &repo,
            &[os("oci"), os("pull"), os(&src), os("x")],
            None,
        ));
        // It said "EOF while parsing … column 0" for index.json, and
        // "cannot could not open" for a blob.
        assert!(
            e.contains(&format!(
                "could not open {}: not a regular file (a FIFO)",
                path.display()
            )) && !e.contains("cannot could"),
            "{victim}: {e}"
        );
    }
}

#[test]
fn oversized_image_files_are_refused_by_size() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    ok(cfs().repo(&repo).run(["init"]));
    // Sparse: no disk, and reading it whole would take 40 GiB of memory.
    let big = t.path().join("big.cfs");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(40 << 30)
        .unwrap();
    for args in [
        vec![os("import-image"), os(&big), os("x")],
        vec![os("dump"), os(&big)],
    ] {
        refused(
            bounded(&repo, &args, None),
            "40 GiB image",
            "42949672960 bytes, over the limit of 1073741824 bytes",
        );
    }
    // An index.json over the limit on JSON documents says so (it read
    // "EOF while parsing a value at line 1 column 16777216").
    let layout = t.path().join("layout");
    write_layout(&layout, "v1", &[Tar::default().file("f", b"x").done()]);
    let index = std::fs::OpenOptions::new()
        .append(true)
        .open(layout.join("index.json"))
        .unwrap();
    index.set_len((16 << 20) + 1).unwrap();
    let src = format!("oci:{}:v1", layout.display());
    refused(
        bounded(&repo, &[os("oci"), os("pull"), os(&src), os("x")], None),
        "index.json",
        "16777217 bytes, over the limit of 16777216 bytes",
    );
}

/// A zstd frame of `blocks`: `Ok(bytes)` stored raw, `Err((byte, n))` as
/// `n` copies of `byte` (an RLE block: 4 bytes for up to 128 KiB, what
/// makes zstd bombs 30,000 times their size). Written by hand so that the
/// test needs no zstd tool.
fn zstd_frame(blocks: &[Result<&[u8], (u8, usize)>]) -> Vec<u8> {
    // Magic; frame header: no single segment, no checksum, no content
    // size; a window of 128 KiB (exponent 7).
    let mut out = vec![0x28, 0xB5, 0x2F, 0xFD, 0x00, 7 << 3];
    for (i, block) in blocks.iter().enumerate() {
        let last = u32::from(i + 1 == blocks.len());
        let (kind, size, body): (u32, usize, &[u8]) = match block {
            Ok(bytes) => (0, bytes.len(), bytes),
            Err((byte, n)) => (1, *n, std::slice::from_ref(byte)),
        };
        assert!(size <= 128 << 10);
        let header = last | kind << 1 | (size as u32) << 3;
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.extend_from_slice(body);
    }
    out
}

/// A `.tar.zst` of about 8 KiB holding 256 MiB of zeros (the 263 KiB
/// `.tar.zst` that wrote 8 GiB, scaled down): refused once its layers'
/// expansion passes `expansion_floor` (64 MiB) at more than
/// `max_expansion_ratio` (1000) times the compressed bytes, before the file
/// is stored.
#[test]
fn compressed_zeros_are_refused_past_the_expansion_ratio() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    ok(cfs().repo(&repo).run(["init"]));
    let size: u64 = 256 << 20;
    let bomb = t.path().join("zeros.tar.zst");
    let mut header = Tar::default();
    header.raw(b"zeros", b'0', size, b"", b"", 0o644, (0, 0));
    let mut blocks = vec![Ok(&header.0[..])];
    blocks.extend((0..size >> 17).map(|_| Err((0u8, 128 << 10))));
    blocks.push(Err((0, 1024)));
    std::fs::write(&bomb, zstd_frame(&blocks)).unwrap();
    let compressed = std::fs::metadata(&bomb).unwrap().len();
    assert!(compressed < 1 << 20, "{compressed} bytes");
    let e = err(bounded(
        &repo,
        &[os("import-tar"), os(&bomb), os("x")],
        None,
    ));
    assert!(
        e.contains(&format!("layer {}", bomb.display()))
            && e.contains("over the limit max_expansion_ratio = 1000"),
        "{e}"
    );
    // Nothing of it was kept: no object of the file's size.
    let objects = repo.join("objects");
    let largest = walk_sizes(&objects).into_iter().max().unwrap_or(0);
    assert!(largest < 1 << 20, "an object of {largest} bytes was stored");
}

/// Sizes of the files under `dir`.
fn walk_sizes(dir: &Path) -> Vec<u64> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        if m.is_dir() {
            out.extend(walk_sizes(&e.path()));
        } else {
            out.push(m.len());
        }
    }
    out
}
