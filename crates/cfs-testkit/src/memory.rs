//! Running a command under a memory cap and measuring its peak resident
//! memory, for the tests that feed hostile input (tar bombs) to the binary.
//!
//! The cap is `prlimit --data=BYTES` (`RLIMIT_DATA`: the heap and every
//! private writable mapping, which is where a runaway allocation goes; a
//! cap on the address space would also count what allocators and thread
//! stacks only reserve). Going over it makes an allocation fail, which
//! aborts a Rust program: a test sees that as a crash. The peak is the
//! child's `VmHWM` (the kernel's high-water mark of its resident set),
//! read from `/proc/PID/status` every few milliseconds while it runs: the
//! mark only grows, so the last reading is the peak up to a few
//! milliseconds before exit.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// What [`run_capped`] saw.
#[derive(Debug)]
pub struct Measured {
    /// The command's output.
    pub output: Output,
    /// Its peak resident memory, in KiB (0 if it ended before a reading).
    pub peak_kib: u64,
    /// Whether the cap was applied (`prlimit` was found).
    pub capped: bool,
}

impl Measured {
    /// The peak in MiB, for reports.
    pub fn peak_mib(&self) -> f64 {
        self.peak_kib as f64 / 1024.0
    }
}

/// The `VmHWM` of process `pid`, in KiB.
fn high_water_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `cmd` with its data segment capped at `cap_bytes` (when `prlimit`
/// is installed), killing it after `limit`; its output and peak memory.
pub fn run_capped(cmd: &Command, cap_bytes: u64, limit: Duration) -> Measured {
    let capped = crate::need::have_tool("prlimit");
    let mut c = if capped {
        let mut c = Command::new("prlimit");
        c.arg(format!("--data={cap_bytes}"))
            .arg("--")
            .arg(cmd.get_program());
        c
    } else {
        Command::new(cmd.get_program())
    };
    c.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        c.current_dir(d);
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .unwrap_or_else(|e| panic!("run {:?}: {e}", cmd.get_program()));
    let pid = child.id();
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as _));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as _));
    let start = Instant::now();
    let mut peak = 0;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if let Some(hwm) = high_water_kib(pid) {
            peak = peak.max(hwm);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{:?} ran over {limit:?}", cmd.get_program());
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    Measured {
        output: Output {
            status,
            stdout: out.join().expect("stdout reader"),
            stderr: err.join().expect("stderr reader"),
        },
        peak_kib: peak,
        capped,
    }
}
