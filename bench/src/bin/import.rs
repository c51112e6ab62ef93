//! Import benchmark: `cfs create-image` of a real tree (default `/usr`)
//! beside `cp -a` of the same tree (the I/O reference) and the single-core
//! fs-verity/sha256 rate (the hashing reference). Prints a markdown table.
//!
//! `cargo run --release --bin import [TREE]`, with the release `cfs` built
//! in the main workspace (`cargo build --release`), or `CFS_BIN=...`.
//! Every run starts from a warm page cache (the tree is read once first), so
//! the numbers compare copying, hashing and syncing, not the source disk.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn walk(p: &Path, files: &mut u64, bytes: &mut u64) {
    let Ok(rd) = std::fs::read_dir(p) else { return };
    for e in rd.flatten() {
        let Ok(m) = e.path().symlink_metadata() else {
            continue;
        };
        if m.is_dir() {
            walk(&e.path(), files, bytes);
        } else if m.is_file() {
            *files += 1;
            *bytes += m.len();
            // Warm the page cache.
            if let Ok(mut f) = std::fs::File::open(e.path()) {
                let _ = std::io::copy(&mut f, &mut std::io::sink());
            }
        }
    }
}

fn timed(what: &str, cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let o = cmd.output().expect(what);
    let d = t.elapsed();
    assert!(
        o.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!(
        "{what}: {:.2}s {}",
        d.as_secs_f64(),
        String::from_utf8_lossy(&o.stderr).trim()
    );
    d
}

fn main() {
    let tree = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "/usr".into()));
    let cfs = std::env::var_os("CFS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/cfs"));
    assert!(
        cfs.exists(),
        "build cfs first: cargo build --release (or set CFS_BIN)"
    );
    let work = tempfile_dir();

    let (mut files, mut bytes) = (0, 0);
    walk(&tree, &mut files, &mut bytes);
    let mb = bytes as f64 / 1e6;
    eprintln!("{}: {files} files, {mb:.0} MB", tree.display());

    let copy = work.join("copy");
    let cp = timed("cp -a", Command::new("cp").arg("-a").arg(&tree).arg(&copy));
    let _ = std::fs::remove_dir_all(&copy);

    let repo = work.join("repo");
    let import = |what| {
        timed(
            what,
            Command::new(&cfs)
                .arg("--repo")
                .arg(&repo)
                .args(["create-image", "--stats", "--force"])
                .arg(&tree)
                .arg("bench"),
        )
    };
    let cold = import("cfs create-image (empty store)");
    let warm = import("cfs create-image (all objects present)");
    let _ = std::fs::remove_dir_all(&work);

    let data: Vec<u8> = (0..256u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let hash = cfs_bench::median(5, || cfs_format::fsverity::digest(&data));
    let hash_mb = data.len() as f64 / 1e6 / hash.as_secs_f64();

    let rate = |d: Duration| (mb / d.as_secs_f64(), files as f64 / d.as_secs_f64());
    println!(
        "Tree: `{}`, {files} files, {mb:.0} MB; {} CPUs.\n",
        tree.display(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("| job | time | MB/s | files/s | vs `cp -a` | vs 1-core sha256 |");
    println!("|---|---|---|---|---|---|");
    let (cp_mb, _) = rate(cp);
    for (what, d) in [
        ("`cp -a` (no fsync)", cp),
        ("`cfs create-image`, empty store", cold),
        ("`cfs create-image`, all objects present", warm),
    ] {
        let (m, f) = rate(d);
        println!(
            "| {what} | {:.1} s | {m:.0} | {f:.0} | {:.2}× | {:.2}× |",
            d.as_secs_f64(),
            m / cp_mb,
            m / hash_mb
        );
    }
    println!("| fs-verity (sha256) digest, one core, in memory | {:.0} ms / 256 MiB | {hash_mb:.0} | | | 1.00× |",
        hash.as_secs_f64() * 1e3);
}

/// A fresh directory under the current directory's file system (`./bench-tmp-PID`),
/// so copies and the store share one file system as in production.
fn tempfile_dir() -> PathBuf {
    let p = std::env::current_dir()
        .expect("cwd")
        .join(format!("bench-tmp-{}", std::process::id()));
    std::fs::create_dir_all(&p).expect("create bench dir");
    p
}
