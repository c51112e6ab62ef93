//! Rows measured side by side (`CFS_BENCH_INTERLEAVE=N`): every row mounted
//! at once, each at its own mount point, and each workload run on one row
//! after another, N rounds, the order rotated by one row every round.
//!
//! Sequential rows are minutes apart, and a machine drifts over minutes (its
//! disk shared with other guests, other work): their cold runs spread by
//! 10–25 %, more than the 5 % some goals ask to resolve. Here every row of a
//! round meets the same machine, so each round gives a **paired ratio** (a
//! row's time over the kernel row's in the same round), and the tables
//! report the median of those beside each row's median and range.
//!
//! Cold runs drop the page cache first. One cold round is run and not
//! counted before the counted ones: each mount's first use (a FUSE server
//! filling its image cache, which later cold runs keep: it is the server's
//! memory, not the page cache). Warm runs follow the cold rounds, after one
//! uncounted run per row.

use crate::drop_caches;
use crate::workloads::rows::Row;
use crate::workloads::server::{self, Server};
use crate::workloads::setup::{Bench, UringSwitch};
use crate::workloads::who::Place;
use crate::workloads::{once, Run, Workload};
use std::path::PathBuf;
use std::time::Duration;

/// A row mounted at its own place.
struct Mounted<'r> {
    row: &'r Row,
    mnt: PathBuf,
    place: Place,
    server: Option<Server>,
}

/// One workload's runs on each mounted row (same order as the rows).
struct Runs {
    cold: Vec<Vec<Run>>,
    warm: Vec<Vec<Run>>,
}

/// Mounts every row, runs each workload `rounds` times cold and warm on each
/// in turn, unmounts, and prints a table per workload. Rows that fail to
/// mount are reported and left out.
pub fn run(b: &Bench, rows: &[Row], workloads: &[Workload], rounds: usize) {
    // The /dev/fuse rows name their transport, so io_uring being on for the
    // whole run changes only the rows that ask for it.
    let uring = if rows.iter().any(|r| r.uring) {
        UringSwitch::on()
    } else {
        None
    };
    let mut mounted = Vec::new();
    for row in rows {
        if row.uring && uring.is_none() {
            println!("{}: skipped: no fuse.enable_uring on this kernel", row.id);
            continue;
        }
        let mnt = b.mnt_of(&row.id);
        match Place::mount(row.who, &row.mount_at(&mnt)) {
            Ok((place, _)) => {
                let server = row
                    .server
                    .as_ref()
                    .and_then(|m| server::find(&m.names, &mnt, m.arg.as_deref()));
                mounted.push(Mounted {
                    row,
                    mnt,
                    place,
                    server,
                });
            }
            Err(e) => println!("{}: not mounted: {e}", row.id),
        }
    }
    let mut results = Vec::new();
    for w in workloads {
        let on: Vec<usize> = (0..mounted.len())
            .filter(|&i| mounted[i].row.only.is_none_or(|o| o.contains(&w.id)))
            .collect();
        match runs(&mounted, &on, w, rounds) {
            Ok(r) => {
                let measured: Vec<&Row> = on.iter().map(|&i| mounted[i].row).collect();
                results.push((w, measured, r));
            }
            Err(e) => println!("{}: {e}", w.id),
        }
    }
    for m in mounted {
        if let Err(e) = m.place.unmount(&m.row.unmount_at(&m.mnt)) {
            println!("{}: unmount: {e}", m.row.id);
        }
    }
    for (w, measured, r) in &results {
        print_table(w, measured, r, rounds);
    }
}

/// Runs `w` on the rows `on` of `mounted`, cold then warm.
fn runs(mounted: &[Mounted], on: &[usize], w: &Workload, rounds: usize) -> Result<Runs, String> {
    let n = on.len();
    let mut cold = vec![Vec::new(); n];
    let mut warm = vec![Vec::new(); n];
    let one = |k: usize| {
        let m = &mounted[on[k]];
        once(&m.place, m.server, &w.script(&m.mnt)).map_err(|e| format!("{}: {e}", m.row.id))
    };
    for round in 0..=rounds {
        for j in 0..n {
            let k = (j + round) % n;
            drop_caches();
            let run = one(k)?;
            if round > 0 {
                cold[k].push(run);
            }
        }
        eprintln!("bench: {} cold round {round} of {rounds}", w.id);
    }
    for round in 0..=rounds {
        for j in 0..n {
            let k = (j + round) % n;
            let run = one(k)?;
            if round > 0 {
                warm[k].push(run);
            }
        }
    }
    Ok(Runs { cold, warm })
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// "median (min–max)" of the wall times, in ms.
fn spread(runs: &[Run]) -> String {
    let walls: Vec<f64> = runs.iter().map(|r| ms(r.wall)).collect();
    let min = walls.iter().copied().fold(f64::INFINITY, f64::min);
    let max = walls.iter().copied().fold(0.0, f64::max);
    match median(walls) {
        Some(m) => format!("{m:.0} ({min:.0}–{max:.0})"),
        None => "-".into(),
    }
}

/// The median over rounds of `runs[i] / base[i]`.
fn paired(runs: &[Run], base: Option<&Vec<Run>>) -> String {
    let Some(base) = base else {
        return "-".into();
    };
    let ratios = runs
        .iter()
        .zip(base)
        .map(|(r, b)| r.wall.as_secs_f64() / b.wall.as_secs_f64())
        .collect();
    median(ratios).map_or("-".into(), |r| format!("{r:.2}×"))
}

fn cpu(runs: &[Run]) -> String {
    median(runs.iter().filter_map(|r| r.cpu).map(ms).collect())
        .map_or("-".into(), |c| format!("{c:.0}"))
}

fn print_table(w: &Workload, rows: &[&Row], r: &Runs, rounds: usize) {
    let base = rows.iter().position(|row| row.id == "kernel");
    println!("\n### {} (interleaved, {rounds} rounds)\n", w.title);
    println!(
        "ms, median (min–max); ratio = median over rounds of the row's time / the cfs kernel mount's in the same round; server CPU in ms, median.\n"
    );
    println!("| mount | cold | cold ratio | warm | warm ratio | server CPU cold | server CPU warm | output |");
    println!("|---|---|---|---|---|---|---|---|");
    for (k, row) in rows.iter().enumerate() {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            row.label,
            spread(&r.cold[k]),
            paired(&r.cold[k], base.map(|b| &r.cold[b])),
            spread(&r.warm[k]),
            paired(&r.warm[k], base.map(|b| &r.warm[b])),
            cpu(&r.cold[k]),
            cpu(&r.warm[k]),
            r.cold[k].first().map_or("", |x| x.out.as_str()),
        );
    }
}
