//! Test support for cfs: the single home of what the integration tests of
//! every crate share. Nothing here is shipped (`publish = false`); no cfs
//! crate is a dependency, so any crate's tests may use it.
//!
//! - [`skip!`] and [`require!`]: a test that can't run here says why on
//!   stdout (past the test harness's capture, so the line shows for a
//!   passing test) and returns; `scripts/test.sh` counts those lines.
//! - [`need`]: what a test needs of the machine (root, file systems, tools),
//!   answered as "why not", and the setup `.ci/run` does (the test user, a
//!   usable `/dev/fuse`) so that a test also runs alone.
//! - [`conformance`]: C composefs's reference data in `../shared/conformance`.
//! - [`command`]: running the `cfs` binary under test, and judging outputs.
//! - [`walk`]: what a directory tree (a source or a mount) holds, compared.
//! - [`mounts`]: guards that unmount what a test mounted, bounded waits.
//! - [`memory`]: a command run under a memory cap, its peak memory measured.
//! - [`users`]: scripts run as the test user, in user namespaces, and the
//!   processes a test started (never anyone else's).
//! - [`rng`]: a small seeded PRNG.
//! - [`tar`]: pieces of tar archives written by hand.

pub mod command;
pub mod conformance;
pub mod memory;
pub mod mounts;
pub mod need;
pub mod rng;
pub mod tar;
pub mod users;
pub mod walk;

pub use command::{err, ok, os, stderr, stdout, Cfs};
pub use conformance::fuzz_regressions;
pub use rng::Rng;

use std::io::Write as _;

/// The prefix of the line a skipped test prints; `scripts/test.sh` counts it.
pub const SKIP_MARK: &str = "SKIPPED:";

/// Prints `SKIPPED: <test>: <reason>` on the real standard output, past the
/// harness's capture (which only catches `print!`), so that a skip shows
/// even for a test that passes. Prefer [`skip!`], which also returns.
pub fn report_skip(reason: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let line = format!("{SKIP_MARK} {test}: {reason}\n");
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

/// Prints `<test>: <what>` on the real standard output, past the harness's
/// capture (as [`report_skip`] does): what a test measured, for the log.
pub fn report(what: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let line = format!("{test}: {what}\n");
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

/// Skips the current test: prints why (see [`report_skip`]) and returns.
#[macro_export]
macro_rules! skip {
    ($($why:tt)+) => {{
        $crate::report_skip(&format!($($why)+));
        return;
    }};
}

/// Skips the current test when a check from [`need`] says why it can't run.
#[macro_export]
macro_rules! require {
    ($($check:expr),+ $(,)?) => {
        $(
            if let Some(why) = $check {
                $crate::skip!("{why}");
            }
        )+
    };
}
