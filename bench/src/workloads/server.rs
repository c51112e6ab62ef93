//! The FUSE server of a mount, found by its command line, and the CPU time it
//! has used.

use std::path::Path;
use std::time::Duration;

/// A running FUSE server process.
#[derive(Debug, Clone, Copy)]
pub struct Server {
    /// Its pid.
    pub pid: u32,
}

/// The process whose executable is named one of `names` and whose arguments
/// include `mnt` (or, for servers that don't name their mount point, whose
/// arguments include `arg`): the server of that mount.
pub fn find(names: &[&str], mnt: &Path, arg: Option<&str>) -> Option<Server> {
    let mnt = mnt.to_str()?;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let Some(exe) = args
            .first()
            .and_then(|a| Path::new(std::str::from_utf8(a).ok()?).file_name())
        else {
            continue;
        };
        if !names.iter().any(|n| exe == *n) {
            continue;
        }
        let wanted = arg.unwrap_or(mnt).as_bytes();
        if args.iter().skip(1).any(|a| *a == wanted) {
            found.push(pid);
        }
    }
    match found.as_slice() {
        [pid] => Some(Server { pid: *pid }),
        _ => None,
    }
}

impl Server {
    /// CPU time used so far, user + system, by all its threads (living and
    /// exited): `utime + stime` of `/proc/PID/stat`, in clock ticks of 10 ms.
    pub fn cpu(&self) -> Duration {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return Duration::ZERO;
        };
        // Fields after the parenthesised command name: state is field 3.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            f.get(i - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Duration::from_millis((ticks(14) + ticks(15)) * 10)
    }

    /// On-CPU time of its living threads in nanoseconds
    /// (`/proc/PID/task/*/schedstat`): finer than [`Server::cpu`].
    pub fn cpu_fine(&self) -> Duration {
        let mut ns = 0u64;
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) {
            for t in tasks.flatten() {
                if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                    ns += s
                        .split_whitespace()
                        .next()
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
        Duration::from_nanos(ns)
    }

    /// Whether the process is still there.
    pub fn alive(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}
