//! Serving requests read from `/dev/fuse`, by worker threads that spin
//! briefly for the next request before they sleep.
//!
//! Each worker has its own fd on the connection (`FUSE_DEV_IOC_CLONE`), so
//! answers don't contend on one processing queue; a worker that can't clone
//! shares the connection's fd. A worker blocks in `read`, where the kernel
//! wakes exactly one sleeper per request (an exclusive wait).
//!
//! **Why spin**: a request to a sleeping worker costs a wake-up on another
//! CPU (`fuse_dev_do_read` sleeping, `__wake_up` from the requester) on both
//! sides of the round trip; a stat walk or an overlay's xattr probes send
//! the next request a few microseconds after the answer, far sooner than a
//! sleeper wakes. So a worker that has just answered polls its fd (`poll`
//! with a zero timeout: no state changes, sleeping stays an exclusive
//! `read`) for at most a budget before it sleeps:
//! - one worker spins at a time (the others sleep at once), so spinning
//!   costs at most one CPU;
//! - a worker spins only after answering, so an idle server costs no CPU;
//! - the budget adapts: a spin that found a request doubles it (up to the
//!   maximum, `--fuse-spin-us`), one that didn't halves it, down to nothing;
//!   a worker whose requests keep arriving sooner than the maximum after
//!   its answers arms it again. A server under light load (requests further
//!   apart than the budget) stops spinning after a few misses.
//!
//! Off by default ([`crate::DEFAULT_SPIN_US`]): on a 2-CPU machine the
//! spinner took the CPU the requester needed, and cost more than it saved.

use crate::abi::OutHeader;
use crate::reply::Answer;
use crate::request::Request;
use crate::server::CfsFs;
use crate::session::{send, DEV_BUFFER};
use crate::sys::fuse_dev::clone_connection;
use crate::uring::Queues;
use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zerocopy::FromBytes;

/// Workers allowed to spin at once.
const MAX_SPINNERS: usize = 1;
/// The smallest budget worth a spin; below it the worker stops spinning.
const MIN_SPIN: Duration = Duration::from_micros(2);

/// One worker's spin state.
struct Spin {
    max: Duration,
    budget: Duration,
    /// Smoothed time from an answer to the next request this worker read.
    gap: Duration,
}

impl Spin {
    fn new(max: Duration) -> Spin {
        Spin {
            max,
            budget: max,
            gap: max,
        }
    }

    /// Polls `fd` until it has a request or the budget is spent; adapts.
    fn after_answer(&mut self, fd: &OwnedFd, spinners: &AtomicUsize) {
        if self.budget.is_zero() {
            // Re-arm when requests come back soon after answers anyway.
            if !self.max.is_zero() && self.gap < self.max {
                self.budget = self.max / 4;
            }
            return;
        }
        if spinners.fetch_add(1, Ordering::Relaxed) >= MAX_SPINNERS {
            spinners.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let start = Instant::now();
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let hit = loop {
            let mut fds = [PollFd::new(fd, PollFlags::IN)];
            match poll(&mut fds, Some(&zero)) {
                Ok(n) if n > 0 => break true,
                Ok(_) | Err(Errno::INTR) => {}
                Err(_) => break false,
            }
            if start.elapsed() >= self.budget {
                break false;
            }
            std::hint::spin_loop();
        };
        spinners.fetch_sub(1, Ordering::Relaxed);
        self.budget = if hit {
            (self.budget * 2).clamp(MIN_SPIN, self.max)
        } else {
            let half = self.budget / 2;
            if half < MIN_SPIN {
                Duration::ZERO
            } else {
                half
            }
        };
    }

    /// Notes that the next request came `gap` after the last answer.
    fn saw_gap(&mut self, gap: Duration) {
        self.gap = (self.gap * 7 + gap) / 8;
    }
}

/// State shared by a connection's workers.
struct Shared<'a> {
    fs: &'a CfsFs,
    spinners: AtomicUsize,
    spin: Duration,
    logged_bad: AtomicBool,
    requests: AtomicU64,
}

/// Serves `dev` with `threads` workers until the connection ends (every
/// worker's read answers ENODEV). With io_uring `queues`, this is the
/// `/dev/fuse` side of the session (FORGET, INTERRUPT, requests before the
/// ring is ready), and its end wakes the queues.
pub(crate) fn serve(
    fs: &Arc<CfsFs>,
    dev: &Arc<OwnedFd>,
    threads: usize,
    spin: Duration,
    queues: Option<&Queues>,
) -> std::io::Result<()> {
    let shared = Shared {
        fs,
        spinners: AtomicUsize::new(0),
        spin,
        logged_bad: AtomicBool::new(false),
        requests: Default::default(),
    };
    let result = std::thread::scope(|s| {
        let workers: Vec<_> = (1..threads)
            .map(|i| {
                let fd = clone_connection(dev.as_fd()).ok().map(Arc::new);
                let fd = fd.unwrap_or_else(|| dev.clone());
                let shared = &shared;
                std::thread::Builder::new()
                    .name(format!("cfs-fuse-{i}"))
                    .spawn_scoped(s, move || worker(shared, &fd))
            })
            .collect();
        let mut result = worker(&shared, dev);
        for w in workers {
            let r = match w {
                Ok(handle) => handle.join().unwrap_or(Err(Errno::IO)),
                Err(e) => Err(Errno::from_io_error(&e).unwrap_or(Errno::AGAIN)),
            };
            result = result.and(r);
        }
        result
    });
    if let Some(q) = queues {
        q.wake_all();
        q.set_dev_requests(shared.requests.load(Ordering::Relaxed));
    }
    result.map_err(Into::into)
}

/// One worker: read, answer, spin, until ENODEV.
fn worker(shared: &Shared<'_>, fd: &OwnedFd) -> Result<(), Errno> {
    let mut buf = vec![0u8; DEV_BUFFER];
    let mut out = Vec::with_capacity(64 << 10);
    let mut spin = Spin::new(shared.spin);
    let mut answered: Option<Instant> = None;
    loop {
        if answered.is_some() {
            spin.after_answer(fd, &shared.spinners);
        }
        let n = match rustix::io::read(fd, &mut buf) {
            Ok(n) => n,
            // Interrupted, or the request went away before we read it.
            Err(Errno::INTR | Errno::NOENT | Errno::AGAIN) => continue,
            Err(Errno::NODEV) => return Ok(()),
            Err(e) => return Err(e),
        };
        if let Some(t) = answered {
            spin.saw_gap(t.elapsed());
        }
        shared.requests.fetch_add(1, Ordering::Relaxed);
        out.clear();
        out.resize(size_of::<OutHeader>(), 0);
        let (unique, answer) = match Request::from_dev(&buf[..n]) {
            Ok(req) => (req.unique(), shared.fs.answer(&req, &mut out)),
            Err(e) => {
                if !shared.logged_bad.swap(true, Ordering::Relaxed) {
                    eprintln!("cfs-fuse: bad request from the kernel: {e} (logged once)");
                }
                // Answer EIO when at least the header says whom to answer.
                match crate::abi::InHeader::ref_from_prefix(&buf[..n]) {
                    Ok((h, _)) => (h.unique.get(), Answer::Error(Errno::IO)),
                    Err(_) => continue,
                }
            }
        };
        match send(fd, unique, answer, &mut out) {
            Ok(()) => {}
            Err(Errno::NODEV) => return Ok(()),
            Err(e) => return Err(e),
        }
        answered = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spin_budget_adapts() {
        let max = Duration::from_micros(40);
        let mut s = Spin::new(max);
        // Misses halve the budget down to nothing.
        for _ in 0..10 {
            s.budget = if s.budget / 2 < MIN_SPIN {
                Duration::ZERO
            } else {
                s.budget / 2
            };
        }
        assert!(s.budget.is_zero());
        // Long gaps keep it off; short ones re-arm it.
        s.gap = Duration::from_millis(5);
        let idle = AtomicUsize::new(0);
        let (r, _w) = rustix::pipe::pipe().unwrap();
        s.after_answer(&r, &idle);
        assert!(s.budget.is_zero(), "re-armed under light load");
        for _ in 0..40 {
            s.saw_gap(Duration::from_micros(5));
        }
        s.after_answer(&r, &idle);
        assert_eq!(s.budget, max / 4, "not re-armed under a steady stream");
        // A spin on an empty pipe misses and halves; on a full one it hits.
        s.after_answer(&r, &idle);
        assert_eq!(s.budget, max / 8);
        rustix::io::write(&_w, b"x").unwrap();
        s.after_answer(&r, &idle);
        assert_eq!(s.budget, max / 4);
        assert_eq!(idle.load(Ordering::Relaxed), 0, "spinner released");
    }
}
