//! The real-workload benchmark (`src/bin/workloads.rs`): the machine's `/usr`
//! mounted by cfs in every mode and by its peers, and the jobs users run on
//! such mounts, timed cold and warm, with each FUSE server's CPU time.

pub mod interleave;
pub mod rows;
pub mod server;
pub mod setup;
pub mod who;

use server::Server;
use std::path::Path;
use std::time::{Duration, Instant};
use who::Place;

/// One run: wall time, the server's CPU time, what the script printed.
#[derive(Debug, Clone)]
pub struct Run {
    /// Wall time of the script.
    pub wall: Duration,
    /// CPU time the row's FUSE server used meanwhile, if it has one.
    pub cpu: Option<Duration>,
    /// What the script printed, trimmed.
    pub out: String,
}

/// Runs `script` once at `place`, timing it and `server`'s CPU.
pub fn once(place: &Place, server: Option<Server>, script: &str) -> Result<Run, String> {
    let cpu0 = server.map(|s| s.cpu_fine());
    let t = Instant::now();
    let out = place.run(script);
    let wall = t.elapsed();
    who::check(&out, script)?;
    Ok(Run {
        wall,
        cpu: server.map(|s| s.cpu_fine().saturating_sub(cpu0.unwrap_or_default())),
        out: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    })
}

/// One job: a shell script over the mount point `MNT`, and what it prints
/// (a count compared across rows, so a broken mount shows).
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Short name (`CFS_BENCH_WORKLOADS` selects by it).
    pub id: &'static str,
    /// What the table calls it.
    pub title: &'static str,
    script: fn(&Path) -> String,
}

impl Workload {
    /// The script for a mount at `mnt`.
    pub fn script(&self, mnt: &Path) -> String {
        (self.script)(mnt)
    }
}

/// The modules the python job imports.
pub const IMPORTS: &str =
    "import asyncio, json, email.mime.text, http.client, decimal, unittest, xml.dom.minidom, sqlite3, argparse, logging";

/// Python with everything under `/usr` from the mount: the mount's dynamic
/// loader runs the mount's interpreter with only the mount's libraries
/// (`--library-path`, `--inhibit-cache`: no `/etc/ld.so.cache`), the mount's
/// standard library (`PYTHONHOME`), no current directory on `sys.path` (`-P`)
/// and the C locale (`LC_ALL=C`, `PYTHONCOERCECLOCALE=0`: no locale or gconv
/// files, whose paths are compiled into glibc) in an otherwise empty
/// environment. `strace -f -e trace=%file` of it shows every file it opens
/// under the mount but `/etc/{localtime,nsswitch.conf,passwd}`.
pub fn python(mnt: &Path) -> String {
    let m = mnt.display();
    format!(
        "env -i LC_ALL=C PYTHONCOERCECLOCALE=0 PYTHONHOME={m} PYTHONDONTWRITEBYTECODE=1 \
         OPENSSL_CONF={m}/lib/ssl/openssl.cnf {m}/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 \
         --inhibit-cache --library-path {m}/lib/x86_64-linux-gnu {m}/bin/python3 -P -c '{IMPORTS}'"
    )
}

fn walk(mnt: &Path) -> String {
    format!(
        "find {} -printf '%p %s %m %U %G %T@\\n' | wc -l",
        mnt.display()
    )
}

fn imports(mnt: &Path) -> String {
    let one = python(mnt);
    format!(
        "p=; for i in 1 2 3 4; do {one} & p=\"$p $!\"; done; n=0; \
         for x in $p; do wait $x && n=$((n+1)); done; echo $n; [ $n = 4 ]"
    )
}

fn tar(mnt: &Path) -> String {
    // Through a pipe: GNU tar skips reading files when it writes to /dev/null.
    format!(
        "tar cf - -C {} share/doc lib/python3.11 | wc -c",
        mnt.display()
    )
}

/// Every workload, in the order they run.
pub const WORKLOADS: [Workload; 3] = [
    Workload {
        id: "walk",
        title: "metadata walk: `find MNT -printf '%p %s %m %U %G %T@\\n'`",
        script: walk,
    },
    Workload {
        id: "python",
        title: "4 parallel `python3 -c 'import asyncio, json, …'`, interpreter and stdlib from the mount",
        script: imports,
    },
    Workload {
        id: "tar",
        title: "`tar c` of `share/doc` and `lib/python3.11` (reads every file)",
        script: tar,
    },
];
