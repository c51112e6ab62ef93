//! FUSE benchmarks (root only): the cfs FUSE server beside the kernel's erofs
//! and overlayfs and Debian's squashfuse, in one run. Prints markdown tables.
//!
//! - mount-ready time of `cfs fuse-serve` (detached: until it returns) for synthetic images of 1k, 100k
//!   and 1M inodes (spawn to "ready": must stay flat);
//! - cold (caches dropped) and warm stat-all walks of a real tree (`/usr`,
//!   or `CFS_BENCH_TREE`) on kernel erofs, cfs FUSE standalone and squashfuse;
//! - sequential read of a 1 GiB file, standalone FUSE vs kernel overlay;
//! - server RSS after the walks.
//!
//! Uses the release `cfs` binary of the main workspace (`cargo build
//! --release` first) and `mksquashfs`/`squashfuse` from Debian.

use cfs_bench::{cfs, drop_caches, run, umount, walk};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// `cfs fuse-serve ARGS MNT`, detached: it returns once the mount answers
/// (the server opened everything before attaching, and answered INIT). The
/// time that took is what a user waits for.
fn cfs_mount(args: &[&str], mnt: &Path) -> Duration {
    let (_, t) = timed(|| run(Command::new(cfs()).arg("fuse-serve").args(args).arg(mnt)));
    t
}

/// `cfs fuse-serve --foreground ARGS MNT`: the server as a child (for its
/// RSS), once the mount answers.
fn cfs_serve(args: &[&str], mnt: &Path) -> Child {
    let child = Command::new(cfs())
        .arg("fuse-serve")
        .args(args)
        .arg(mnt)
        .arg("--foreground")
        .spawn()
        .expect("cfs fuse-serve");
    wait_mounted(mnt, "cfs fuse-serve");
    child
}

/// Waits (up to 20 s) until `mnt` is a mount point that answers.
fn wait_mounted(mnt: &Path, what: &str) {
    let start = Instant::now();
    let parent = std::fs::metadata(mnt.parent().unwrap()).unwrap();
    loop {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata(mnt) {
            if m.dev() != parent.dev() {
                return;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what} did not mount"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Unmounts a cfs mount with `cfs unmount`.
fn cfs_unmount(mnt: &Path) {
    run(Command::new(cfs()).arg("unmount").arg(mnt));
}

fn stop(mut child: Child, mnt: &Path) {
    umount(mnt);
    let _ = child.wait();
}

/// A private repository at `repo` (`cfs init`).
fn init_repo(repo: &Path) {
    run(Command::new(cfs()).arg("--repo").arg(repo).arg("init"));
}

/// The image id `NAME` names in `repo`.
fn image_id(repo: &Path, name: &str) -> String {
    let out = Command::new(cfs())
        .arg("--repo")
        .arg(repo)
        .args(["images"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(name)).then(|| w.next().unwrap().to_owned())
        })
        .unwrap_or_else(|| panic!("no image {name} in {}:\n{text}", repo.display()))
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap()
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// A dumpfile of `n` empty files in directories of 1000.
fn synthetic_dump(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 48);
    writeln!(out, "/ 4096 40755 2 0 0 0 0.0 - - -").unwrap();
    let dirs = n.div_ceil(1000);
    for d in 0..dirs {
        writeln!(out, "/d{d:05} 4096 40755 2 0 0 0 0.0 - - -").unwrap();
        for f in 0..1000.min(n - d * 1000) {
            writeln!(out, "/d{d:05}/f{f:04} 0 100644 1 0 0 0 0.0 - - -").unwrap();
        }
    }
    out
}

fn mount_ready(tmp: &Path) {
    println!("\n### Mount-ready time (`cfs fuse-serve IMAGE MNT` until it returns, the mount answering), median of 5\n");
    println!("| inodes | image size | cfs, repository image (mmap), objects checked | same, `--no-check-objects` | cfs, plain path (pread block cache) | kernel `mount -t erofs` |");
    println!("|---|---|---|---|---|---|");
    let repo = tmp.join("ready-repo");
    init_repo(&repo);
    let mnt = tmp.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    for n in [1_000usize, 100_000, 1_000_000] {
        let dump = tmp.join("synthetic.dump");
        std::fs::write(&dump, synthetic_dump(n)).unwrap();
        let image = tmp.join(format!("synthetic-{n}.cfs"));
        run(Command::new(cfs())
            .args(["mkfs", "--from-file"])
            .arg(&dump)
            .arg(&image));
        let mut fuse = Vec::new();
        let mut mapped = Vec::new();
        let mut unchecked = Vec::new();
        let mut kernel = Vec::new();
        run(Command::new(cfs())
            .arg("--repo")
            .arg(&repo)
            .args(["import-image", "--force"])
            .arg(&image)
            .arg("bench"));
        for _ in 0..5 {
            mapped.push(cfs_mount(
                &["--repo", repo.to_str().unwrap(), "bench"],
                &mnt,
            ));
            cfs_unmount(&mnt);
            let args = [
                "--repo",
                repo.to_str().unwrap(),
                "--no-check-objects",
                "bench",
            ];
            unchecked.push(cfs_mount(&args, &mnt));
            cfs_unmount(&mnt);
            fuse.push(cfs_mount(&[image.to_str().unwrap()], &mnt));
            cfs_unmount(&mnt);
            let (_, t) = timed(|| {
                run(Command::new("mount")
                    .args(["-t", "erofs", "-o", "ro,loop"])
                    .arg(&image)
                    .arg(&mnt))
            });
            kernel.push(t);
            umount(&mnt);
        }
        fuse.sort();
        mapped.sort();
        unchecked.sort();
        kernel.sort();
        let size = std::fs::metadata(&image).unwrap().len();
        println!(
            "| {n} | {:.1} MiB | {} | {} | {} | {} |",
            size as f64 / (1 << 20) as f64,
            ms(mapped[2]),
            ms(unchecked[2]),
            ms(fuse[2]),
            ms(kernel[2])
        );
    }
}

fn walks(tmp: &Path, tree: &Path) {
    let repo = tmp.join("repo");
    init_repo(&repo);
    let (_, t) = timed(|| {
        run(Command::new(cfs())
            .arg("--repo")
            .arg(&repo)
            .arg("create-image")
            .arg(tree)
            .arg("tree"))
    });
    eprintln!("cfs create-image {}: {}", tree.display(), ms(t));
    // A repository image: the server maps it (it can't change under the mount).
    let id = image_id(&repo, "tree");
    let id = id.as_str();
    let image = repo.join("images").join(id);
    let sqsh = tmp.join("tree.sqsh");
    let (_, t) = timed(|| {
        run(Command::new("mksquashfs").arg(tree).arg(&sqsh).args([
            "-noappend",
            "-no-progress",
            "-quiet",
            "-comp",
            "gzip",
            "-noD",
            "-noF",
        ]))
    });
    eprintln!("mksquashfs: {}", ms(t));

    let mnt = tmp.join("walk");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut results = Vec::new();
    // Kernel erofs (metadata only: the limit any FUSE server can reach).
    let mut measure = |name: &str, mnt: &Path, pid: Option<u32>| {
        drop_caches();
        let (n, cold) = timed(|| walk(mnt));
        let (_, warm) = timed(|| walk(mnt));
        let (_, warm2) = timed(|| walk(mnt));
        let rss = pid.map(rss_kb);
        results.push((name.to_owned(), n, cold, warm.min(warm2), rss));
    };
    run(Command::new("mount")
        .args(["-t", "erofs", "-o", "ro,loop"])
        .arg(&image)
        .arg(&mnt));
    measure("kernel erofs", &mnt, None);
    umount(&mnt);
    let child = cfs_serve(&["--repo", repo.to_str().unwrap(), id], &mnt);
    measure("cfs FUSE standalone", &mnt, Some(child.id()));
    cfs_unmount(&mnt);
    stop(child, &mnt);
    let child = Command::new("squashfuse")
        .arg("-f")
        .arg(&sqsh)
        .arg(&mnt)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(mnt.to_str().unwrap())
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "squashfuse did not mount"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    measure("squashfuse (Debian)", &mnt, Some(child.id()));
    stop(child, &mnt);

    let kernel = results[0].clone();
    println!(
        "\n### Stat-all walk of `{}` (readdir + lstat, one thread)\n",
        tree.display()
    );
    println!("| mount | entries | cold | cold vs kernel | warm | warm vs kernel | server RSS |");
    println!("|---|---|---|---|---|---|---|");
    for (name, n, cold, warm, rss) in &results {
        println!(
            "| {name} | {n} | {} | {:.2}× | {} | {:.2}× | {} |",
            ms(*cold),
            cold.as_secs_f64() / kernel.2.as_secs_f64(),
            ms(*warm),
            warm.as_secs_f64() / kernel.3.as_secs_f64(),
            rss.map_or("-".into(), |r| format!("{:.1} MiB", r as f64 / 1024.0))
        );
    }
}

fn read_all(path: &Path) -> u64 {
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    loop {
        let k = f.read(&mut buf).unwrap();
        if k == 0 {
            return n;
        }
        n += k as u64;
    }
}

fn sequential(tmp: &Path) {
    let src = tmp.join("big-src");
    std::fs::create_dir_all(&src).unwrap();
    let data: Vec<u8> = (0..1u64 << 30)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(src.join("big"), &data).unwrap();
    drop(data);
    let objects = tmp.join("big-objects");
    let image = tmp.join("big.cfs");
    run(Command::new(cfs())
        .args(["mkfs", "--digest-store"])
        .arg(&objects)
        .arg(&src)
        .arg(&image));
    let mib = 1024.0;
    let rate = |d: Duration| format!("{:.0} MiB/s", mib / d.as_secs_f64());
    println!("\n### Sequential read of a 1 GiB file (caches dropped before each read)\n");
    println!("| mount | first read | again (caches dropped) |");
    println!("|---|---|---|");
    let ero = tmp.join("big-ero");
    let ovl = tmp.join("big-ovl");
    std::fs::create_dir_all(&ero).unwrap();
    std::fs::create_dir_all(&ovl).unwrap();
    run(Command::new("mount")
        .args(["-t", "erofs", "-o", "ro,loop"])
        .arg(&image)
        .arg(&ero));
    let opts = format!(
        "ro,lowerdir={}::{},metacopy=on,redirect_dir=on",
        ero.display(),
        objects.display()
    );
    run(Command::new("mount")
        .args(["-t", "overlay", "-o", &opts, "none"])
        .arg(&ovl));
    drop_caches();
    let (_, a) = timed(|| read_all(&ovl.join("big")));
    drop_caches();
    let (_, b) = timed(|| read_all(&ovl.join("big")));
    println!("| kernel overlay | {} | {} |", rate(a), rate(b));
    umount(&ovl);
    umount(&ero);
    for (name, verity) in [
        ("cfs FUSE standalone (verified)", "try"),
        ("cfs FUSE standalone (--verity off)", "off"),
    ] {
        let child = cfs_serve(
            &[
                image.to_str().unwrap(),
                "--basedir",
                objects.to_str().unwrap(),
                "--verity",
                verity,
            ],
            &ovl,
        );
        drop_caches();
        let (_, a) = timed(|| read_all(&ovl.join("big")));
        drop_caches();
        let (_, b) = timed(|| read_all(&ovl.join("big")));
        println!("| {name} | {} | {} |", rate(a), rate(b));
        cfs_unmount(&ovl);
        stop(child, &ovl);
    }
}

fn main() {
    assert!(
        cfs().exists(),
        "build the main workspace first: cargo build --release"
    );
    let tmp = std::env::var_os("CFS_BENCH_TMP")
        .map_or_else(|| PathBuf::from("/var/tmp/cfs-bench-fuse"), PathBuf::from);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let tree =
        std::env::var_os("CFS_BENCH_TREE").map_or_else(|| PathBuf::from("/usr"), PathBuf::from);
    let only = std::env::args().nth(1).unwrap_or_default();
    if only.is_empty() || only == "ready" {
        mount_ready(&tmp);
    }
    if only.is_empty() || only == "walk" {
        walks(&tmp, &tree);
    }
    if only.is_empty() || only == "read" {
        sequential(&tmp);
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
