//! Shared helpers for the benchmark binaries: timing, the `cfs` under test,
//! commands, caches and walks; the real-workload benchmark's parts.

pub mod workloads;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `f` `runs` times after one warm-up run; returns the median duration.
pub fn median<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    std::hint::black_box(f());
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// Reads a conformance asset (`../shared/conformance`), gunzipping it if needed.
pub fn asset(name: &str) -> Vec<u8> {
    cfs_testkit::conformance::asset(name)
}

/// The release build of `cfs` the benchmarks measure (`cargo build --release`
/// in the main workspace first), or `CFS_BENCH_CFS` (another build, to
/// compare).
pub fn cfs() -> PathBuf {
    match std::env::var_os("CFS_BENCH_CFS") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/cfs"),
    }
}

/// Runs a command that must succeed.
pub fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes dirty pages back and drops the page, dentry and inode caches (root).
pub fn drop_caches() {
    run(&mut Command::new("sync"));
    std::fs::write("/proc/sys/vm/drop_caches", "3").expect("drop caches (root?)");
}

/// Unmounts `p`, ignoring errors.
pub fn umount(p: &Path) {
    let _ = Command::new("umount").arg(p).status();
}

/// readdir + lstat of every entry under `root`; returns the count.
pub fn walk(root: &Path) -> u64 {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("readdir") {
            let e = e.expect("entry");
            let m = std::fs::symlink_metadata(e.path()).expect("lstat");
            n += 1;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    n
}
