//! Real workloads on real mounts (root only; issue 17): this machine's `/usr`
//! mounted by cfs in every mode and by its peers (composefs-rs's `cfsctl` in
//! each of its modes, squashfuse, erofsfuse where built), and the jobs users
//! run on such a mount: a metadata walk, 4 parallel python imports with the
//! interpreter and standard library from the mount, and a `tar` of two
//! directories. Each cold (after `drop_caches`; min of 3; the first one after
//! the mount also on its own) then warm (the first run right after the cold
//! ones on its own, then min of 5), with the FUSE server's CPU time per run
//! and over 10 s idle. Prints markdown tables, ratios to cfs's kernel mount.
//!
//! Builds its images once into `CFS_BENCH_DIR` (default
//! `/var/tmp/cfs-bench-workloads`) and keeps them; mounts at `DIR/mnt` and
//! unmounts everything it mounted. `CFS_BENCH_ROWS` / `CFS_BENCH_WORKLOADS`
//! (comma-separated ids) select rows and workloads; `CFS_BENCH_COLD` and
//! `CFS_BENCH_WARM` set the repetitions (3 and 5). Each row first waits (up
//! to 15 min) until under 5 % of the CPU is used outside nice'd processes.
//! `CFS_BENCH_INTERLEAVE=N` instead mounts every row at once and runs them
//! in turn, N rounds, for paired ratios (see `cfs_bench::workloads::interleave`).

use cfs_bench::workloads::rows::{self, Row};
use cfs_bench::workloads::server;
use cfs_bench::workloads::setup::{self, Bench, UringSwitch};
use cfs_bench::workloads::who::Place;
use cfs_bench::workloads::{interleave, once, Run, Workload, WORKLOADS};
use cfs_bench::{busy_share, cfs, drop_caches, wait_quiet};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A row's results for one workload.
#[derive(Debug, Clone, Default)]
struct Result {
    /// Cold runs, the first right after mounting.
    cold: Vec<Run>,
    /// Warm runs, the first right after the last cold one.
    warm: Vec<Run>,
}

/// A row's results.
#[derive(Debug, Clone, Default)]
struct RowResult {
    mount: Duration,
    idle_cpu: Option<Duration>,
    by_workload: BTreeMap<&'static str, Result>,
    error: Option<String>,
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .max(1)
}

fn selected(var: &str, id: &str) -> bool {
    match std::env::var(var) {
        Ok(list) if !list.is_empty() => list.split(',').any(|x| x == id),
        _ => true,
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn measure_row(b: &Bench, row: &Row, workloads: &[Workload]) -> RowResult {
    let mnt = b.mnt();
    let mut res = RowResult::default();
    let _uring = if row.uring {
        match UringSwitch::on() {
            Some(s) => Some(s),
            None => {
                res.error = Some("no fuse.enable_uring on this kernel".into());
                return res;
            }
        }
    } else {
        None
    };
    drop_caches();
    let (place, took) = match Place::mount(row.who, &row.mount_at(&mnt)) {
        Ok(p) => p,
        Err(e) => {
            res.error = Some(e);
            return res;
        }
    };
    res.mount = took;
    let server = row
        .server
        .as_ref()
        .and_then(|m| server::find(&m.names, &mnt, m.arg.as_deref()));
    if row.server.is_some() && server.is_none() {
        eprintln!("bench: {}: server process not found, no CPU times", row.id);
    }
    let (cold_n, warm_n) = (
        env_count("CFS_BENCH_COLD", 3),
        env_count("CFS_BENCH_WARM", 5),
    );
    'workloads: for w in workloads {
        if row.only.is_some_and(|only| !only.contains(&w.id)) {
            continue;
        }
        let script = w.script(&mnt);
        let mut r = Result::default();
        for _ in 0..cold_n {
            drop_caches();
            match once(&place, server, &script) {
                Ok(run) => r.cold.push(run),
                Err(e) => {
                    res.error = Some(e);
                    break 'workloads;
                }
            }
        }
        for _ in 0..=warm_n {
            match once(&place, server, &script) {
                Ok(run) => r.warm.push(run),
                Err(e) => {
                    res.error = Some(e);
                    break 'workloads;
                }
            }
        }
        eprintln!(
            "bench: {} {}: cold {:?} warm {:?} (load {})",
            row.id,
            w.id,
            r.cold.iter().map(|x| ms(x.wall)).collect::<Vec<_>>(),
            r.warm.iter().map(|x| ms(x.wall)).collect::<Vec<_>>(),
            load()
        );
        res.by_workload.insert(w.id, r);
    }
    if let Some(s) = server {
        let c0 = s.cpu_fine();
        std::thread::sleep(Duration::from_secs(10));
        res.idle_cpu = Some(s.cpu_fine().saturating_sub(c0));
    }
    if let Err(e) = place.unmount(&row.unmount_at(&mnt)) {
        eprintln!("bench: {}: unmount: {e}", row.id);
        res.error.get_or_insert(e);
    }
    if let Some(s) = server {
        let t = Instant::now();
        while s.alive() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if s.alive() {
            eprintln!(
                "bench: {}: server {} still alive after unmount",
                row.id, s.pid
            );
        }
    }
    res
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e3)
}

fn min_wall(runs: &[Run]) -> Option<Duration> {
    runs.iter().map(|r| r.wall).min()
}

fn min_cpu(runs: &[Run]) -> Option<Duration> {
    runs.iter().filter_map(|r| r.cpu).min()
}

fn ratio(d: Option<Duration>, base: Option<Duration>) -> String {
    match (d, base) {
        (Some(d), Some(b)) if !b.is_zero() => format!("{:.2}×", d.as_secs_f64() / b.as_secs_f64()),
        _ => "-".into(),
    }
}

fn cell(d: Option<Duration>, base: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{} ({})", ms(d), ratio(Some(d), base)),
        None => "-".into(),
    }
}

fn cpu_cell(d: Option<Duration>) -> String {
    d.map_or("-".into(), ms)
}

fn print_tables(rows: &[Row], results: &[RowResult], workloads: &[Workload]) {
    let base = rows.iter().position(|r| r.id == "kernel");
    println!("\n### Mount and idle\n");
    println!("| mount | who | mount command, cold (ms) | server CPU idle 10 s (ms) |");
    println!("|---|---|---|---|");
    for (row, res) in rows.iter().zip(results) {
        match &res.error {
            Some(e) if res.by_workload.is_empty() => {
                println!(
                    "| {} | {} | failed: {} | |",
                    row.label,
                    row.who.label(),
                    e.replace('|', "/")
                )
            }
            _ => println!(
                "| {} | {} | {} | {} |",
                row.label,
                row.who.label(),
                ms(res.mount),
                cpu_cell(res.idle_cpu)
            ),
        }
    }
    for w in workloads {
        let get = |i: usize| results[i].by_workload.get(w.id);
        let b = base.and_then(get);
        let (bc, b1, bw1, bw) = (
            b.and_then(|r| min_wall(&r.cold)),
            b.and_then(|r| r.cold.first().map(|x| x.wall)),
            b.and_then(|r| r.warm.first().map(|x| x.wall)),
            b.and_then(|r| min_wall(&r.warm[1..])),
        );
        println!("\n### {}\n", w.title);
        println!("ms (ratio to cfs kernel); server CPU in ms.\n");
        println!("| mount | cold, min | cold, 1st after mount | warm, 1st after cold | warm, min | server CPU cold (min) | server CPU warm (min) | output |");
        println!("|---|---|---|---|---|---|---|---|");
        for (i, row) in rows.iter().enumerate() {
            let Some(r) = get(i) else {
                continue;
            };
            let warm_rest = r.warm.get(1..).unwrap_or(&[]);
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                row.label,
                cell(min_wall(&r.cold), bc),
                cell(r.cold.first().map(|x| x.wall), b1),
                cell(r.warm.first().map(|x| x.wall), bw1),
                cell(min_wall(warm_rest), bw),
                cpu_cell(min_cpu(&r.cold)),
                cpu_cell(min_cpu(warm_rest)),
                r.cold.first().map_or("", |x| x.out.as_str()),
            );
        }
    }
    for (row, res) in rows.iter().zip(results) {
        if let Some(e) = &res.error {
            println!("\n{}: error: {e}", row.id);
        }
    }
}

fn main() {
    assert!(
        rustix_is_root(),
        "run as root: mounts, drop_caches, setpriv/unshare for the user rows"
    );
    assert!(
        cfs().exists(),
        "build the main workspace first: cargo build --release -p cfs"
    );
    let b = Bench::from_env();
    let fuse_mode = setup::users_and_fuse();
    let rows: Vec<Row> = rows::all(&b)
        .into_iter()
        .filter(|r| selected("CFS_BENCH_ROWS", &r.id))
        .collect();
    b.prepare(setup::Need {
        cfsctl: rows.iter().any(|r| r.id.starts_with("cfsctl")),
        squashfs: rows.iter().any(|r| r.id.starts_with("squashfuse")),
    });
    let _service = rows
        .iter()
        .any(|r| r.id.starts_with("service"))
        .then(start_service);
    let workloads: Vec<Workload> = WORKLOADS
        .into_iter()
        .filter(|w| selected("CFS_BENCH_WORKLOADS", w.id))
        .collect();
    println!(
        "tree {}, {} rows; load before: {}",
        b.tree.display(),
        rows.len(),
        load()
    );
    if let Some(rounds) = std::env::var("CFS_BENCH_INTERLEAVE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        let (_, busy) = wait_quiet(Duration::from_secs(900));
        eprintln!(
            "bench: interleaved, {rounds} rounds (load {}, busy outside nice'd processes {:.0} %)",
            load(),
            busy * 100.0
        );
        interleave::run(&b, &rows, &workloads, rounds);
        println!("load after: {}", load());
        setup::restore_fuse(fuse_mode);
        return;
    }
    let mut results = Vec::new();
    // Each row waits (up to 15 min) for a quiet machine: under 5 % of the
    // CPU used outside nice'd processes.
    for row in &rows {
        let (_, busy) = wait_quiet(Duration::from_secs(900));
        eprintln!(
            "bench: {} (load {}, busy outside nice'd processes {:.0} %)",
            row.id,
            load(),
            busy * 100.0
        );
        results.push(measure_row(&b, row, &workloads));
        eprintln!(
            "bench: {} done (busy outside nice'd processes now {:.0} %)",
            row.id,
            busy_share(Duration::from_secs(2)) * 100.0
        );
    }
    println!("load after: {}", load());
    print_tables(&rows, &results, &workloads);
    setup::restore_fuse(fuse_mode);
}

/// `cfs mount-service` on [`rows::SERVICE_SOCKET`], a cache of its own;
/// killed when this goes.
fn start_service() -> KillOnDrop {
    let socket = std::path::Path::new(rows::SERVICE_SOCKET);
    let dir = socket.parent().expect("a directory");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("service directory");
    let child = std::process::Command::new(cfs())
        .arg("mount-service")
        .arg("--socket")
        .arg(socket)
        .arg("--cache")
        .arg(dir.join("cache"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("log")).expect("service log"))
        .spawn()
        .expect("cfs mount-service");
    let service = KillOnDrop(child);
    let start = std::time::Instant::now();
    while !socket.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no service socket"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    service
}

/// A child killed when this goes.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rustix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|v| v.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
