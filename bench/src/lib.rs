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

/// The 1-minute load average.
pub fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// (busy, total) CPU ticks of the machine from `/proc/stat`, busy leaving
/// out what nice'd processes (nice 10 and more) used.
fn cpu_busy() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let n = |i: usize| f.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let busy = n(0) + n(1) + n(2) + n(5) + n(6) + n(7);
    (busy.saturating_sub(niced_ticks()), f.iter().take(8).sum())
}

/// User + system CPU ticks of the processes running at nice 10 or more.
fn niced_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let rest = stat.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            // `rest` starts at field 3: utime 14, stime 15, nice 19.
            let nice: i64 = f.get(16)?.parse().ok()?;
            let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            (nice >= 10).then(|| n(11) + n(12))
        })
        .sum()
}

/// The share of the machine's CPU used outside nice'd processes over `d`.
pub fn busy_share(d: Duration) -> f64 {
    let (b0, t0) = cpu_busy();
    std::thread::sleep(d);
    let (b1, t1) = cpu_busy();
    b1.saturating_sub(b0) as f64 / (t1 - t0).max(1) as f64
}

/// Waits up to `max` for the machine to be quiet: under 5 % of its CPU used
/// outside nice'd processes over 5 s. Returns the 1-minute load and that
/// share, as seen last.
pub fn wait_quiet(max: Duration) -> (f64, f64) {
    let start = Instant::now();
    loop {
        let busy = busy_share(Duration::from_secs(5));
        if busy < 0.05 || start.elapsed() > max {
            return (load1(), busy);
        }
    }
}
