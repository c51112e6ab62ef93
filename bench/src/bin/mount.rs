//! Mount benchmarks: the same composefs image mounted by `cfs mount` (erofs
//! from the file + overlayfs over the object store) and by plain
//! `mount -t erofs` (metadata only, no overlay: the kernel's limit). For each,
//! the time to mount (the whole command, as a user runs it) and a stat-all
//! walk (readdir + lstat of every entry) cold, after dropping the page,
//! dentry and inode caches, and warm, right after. Needs root.
//!
//! `cargo run --release --bin mount -- [SOURCE_DIR [WORK_DIR]]`: SOURCE_DIR
//! (default `/usr`) is built once with `cfs mkfs --digest-store` into WORK_DIR
//! (default `/var/tmp/cfs-bench-mount`), reused by later runs. The `cfs` binary
//! is `../target/release/cfs` unless `CFS` names another.

use cfs_bench::{drop_caches, run, walk};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 5;

struct Times {
    mount: Vec<Duration>,
    cold: Vec<Duration>,
    warm: Vec<Duration>,
    entries: u64,
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bench(mount: &dyn Fn(&Path), unmount: &dyn Fn(&Path), mnt: &Path) -> Times {
    let mut t = Times {
        mount: vec![],
        cold: vec![],
        warm: vec![],
        entries: 0,
    };
    for _ in 0..RUNS {
        drop_caches();
        let s = Instant::now();
        mount(mnt);
        t.mount.push(s.elapsed());
        drop_caches();
        let s = Instant::now();
        t.entries = walk(mnt);
        t.cold.push(s.elapsed());
        let s = Instant::now();
        walk(mnt);
        t.warm.push(s.elapsed());
        unmount(mnt);
    }
    t
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let source = PathBuf::from(args.get(1).map_or("/usr", String::as_str));
    let work = PathBuf::from(
        args.get(2)
            .map_or("/var/tmp/cfs-bench-mount", String::as_str),
    );
    let cfs = std::env::var_os("CFS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/cfs"),
        PathBuf::from,
    );
    let (image, objects, mnt) = (
        work.join("image.cfs"),
        work.join("objects"),
        work.join("mnt"),
    );
    std::fs::create_dir_all(&mnt).unwrap();
    if !image.exists() {
        eprintln!(
            "building {} from {} (once)…",
            image.display(),
            source.display()
        );
        let s = Instant::now();
        run(Command::new(&cfs)
            .arg("mkfs")
            .arg("--digest-store")
            .arg(&objects)
            .arg(&source)
            .arg(&image));
        eprintln!("built in {:.1} s", s.elapsed().as_secs_f64());
    }
    let size = std::fs::metadata(&image).unwrap().len();

    let cfs_mount = |m: &Path| {
        run(Command::new(&cfs)
            .arg("mount")
            .arg(&image)
            .arg(m)
            .arg("--basedir")
            .arg(&objects))
    };
    let cfs_unmount = |m: &Path| run(Command::new(&cfs).arg("unmount").arg(m));
    let erofs_mount = |m: &Path| {
        run(Command::new("mount")
            .args(["-t", "erofs", "-o", "ro"])
            .arg(&image)
            .arg(m))
    };
    let umount = |m: &Path| run(Command::new("umount").arg(m));

    let mut c = bench(&cfs_mount, &cfs_unmount, &mnt);
    let mut e = bench(&erofs_mount, &umount, &mnt);
    // Raw erofs also shows the 256 whiteout stubs `00`..`ff` a format-1 root
    // holds for overlayfs, which the composefs overlay hides.
    assert!(
        c.entries == e.entries || c.entries + 256 == e.entries,
        "both mounts show the same tree: {} vs {}",
        c.entries,
        e.entries
    );
    println!(
        "image of {}: {} entries, {:.1} MiB; median of {RUNS} runs\n",
        source.display(),
        c.entries,
        size as f64 / (1 << 20) as f64
    );
    println!("| | cfs mount (erofs + overlayfs) | mount -t erofs (limit) | cfs / erofs |");
    println!("|---|---|---|---|");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (what, a, b) in [
        (
            "mount (command)",
            median(&mut c.mount),
            median(&mut e.mount),
        ),
        (
            "stat-all walk, cold",
            median(&mut c.cold),
            median(&mut e.cold),
        ),
        (
            "stat-all walk, warm",
            median(&mut c.warm),
            median(&mut e.warm),
        ),
    ] {
        println!(
            "| {what} | {:.1} ms | {:.1} ms | {:.2}× |",
            ms(a),
            ms(b),
            a.as_secs_f64() / b.as_secs_f64()
        );
    }
}
