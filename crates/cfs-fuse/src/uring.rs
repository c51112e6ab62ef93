//! Serving FUSE over io_uring: one queue per possible CPU (the kernel
//! queues each request on the queue of the CPU it was made on), each served
//! by a thread bound to that CPU, so a request is answered where it was made,
//! with no cross-CPU wake-up.
//!
//! A queue thread sleeps in `io_uring_enter` until the kernel completes one
//! of its entries with a request, answers it in the entry's buffers, and
//! commits it (`COMMIT_AND_FETCH`) with its next wait: one system call per
//! round of requests. The entries and what the kernel may touch are
//! [`crate::sys::ring`]'s. A queue thread blocks while it answers, so a
//! slow request (a large object verified on OPEN) holds up the others made
//! on its CPU; `/dev/fuse` workers don't have that limit.

use crate::reply::Answer;
use crate::request::{op_header_size, Body, Request};
use crate::server::CfsFs;
use crate::session::uring_payload_len;
use crate::sys::ring::{Event, Queue, Waker};
use rustix::io::Errno;
use rustix::thread::{sched_setaffinity, CpuSet};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use zerocopy::FromBytes;

/// Entries per queue: requests one CPU may have in flight at once.
const DEPTH: usize = 16;
/// How long a queue waits, at the end, for the kernel to give its entries back.
const DRAIN: Duration = Duration::from_millis(200);

/// The running queues.
pub(crate) struct Queues {
    wakers: Vec<Waker>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    requests: Arc<AtomicU64>,
    dev_requests: AtomicU64,
}

/// The CPUs the kernel may run on (`/sys/devices/system/cpu/possible`,
/// e.g. `0-3,8`): the kernel makes one queue for each.
fn possible_cpus() -> Vec<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
            cpus.extend(a..=b.min(a + 4096));
        }
    }
    if cpus.is_empty() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        cpus.extend(0..n);
    }
    cpus
}

impl Queues {
    /// Sets up and registers one queue per possible CPU on `dev` (after
    /// INIT was answered with `FUSE_OVER_IO_URING`), each in its own thread
    /// bound to its CPU (the ring's only submitter), which then serves it.
    /// `Err` when a ring can't be made or the kernel refuses an entry.
    pub(crate) fn start(fs: &Arc<CfsFs>, dev: &Arc<OwnedFd>) -> std::io::Result<Queues> {
        let cpus = possible_cpus();
        let requests = Arc::new(AtomicU64::new(0));
        let logged_pin = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let mut threads = Vec::new();
        for (qid, &cpu) in cpus.iter().enumerate() {
            let qid = u16::try_from(qid).map_err(|_| Errno::TOOBIG)?;
            let (fs, dev, requests) = (fs.clone(), dev.clone(), requests.clone());
            let (logged_pin, tx) = (logged_pin.clone(), tx.clone());
            let t = std::thread::Builder::new()
                .name(format!("cfs-ring-{cpu}"))
                .spawn(move || {
                    let mut set = CpuSet::new();
                    set.set(cpu);
                    if let Err(e) = sched_setaffinity(None, &set) {
                        if !logged_pin.swap(true, Ordering::Relaxed) {
                            eprintln!("cfs-fuse: could not bind a queue thread to CPU {cpu}: {e}");
                        }
                    }
                    // The sender is dropped before serving: `start` reads
                    // until every thread has answered.
                    match setup(dev, qid) {
                        Ok(q) => {
                            let _ = tx.send(Ok(q.waker()));
                            drop(tx);
                            run(q, &fs, &requests)
                        }
                        Err(e) => drop(tx.send(Err(e))),
                    }
                })?;
            threads.push(t);
        }
        drop(tx);
        let mut wakers = Vec::with_capacity(cpus.len());
        let mut failed = None;
        for r in rx {
            match r {
                Ok(w) => wakers.push(w),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        let queues = Queues {
            wakers,
            threads: Mutex::new(threads),
            requests,
            dev_requests: AtomicU64::new(0),
        };
        match failed {
            None => Ok(queues),
            Some(e) => {
                queues.wake_all();
                queues.finish();
                Err(e)
            }
        }
    }

    /// Tells every queue thread the connection has ended.
    pub(crate) fn wake_all(&self) {
        for w in &self.wakers {
            w.wake();
        }
    }

    /// Notes how many requests came through `/dev/fuse` meanwhile.
    pub(crate) fn set_dev_requests(&self, n: u64) {
        self.dev_requests.store(n, Ordering::Relaxed);
    }

    /// The requests the queues answered, and those answered through
    /// `/dev/fuse` meanwhile.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.dev_requests.load(Ordering::Relaxed),
        )
    }

    /// Waits for the queue threads to end.
    pub(crate) fn finish(&self) {
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Makes queue `qid` and hands its entries to the kernel, which refuses bad
/// ones at once.
fn setup(dev: Arc<OwnedFd>, qid: u16) -> std::io::Result<Queue> {
    let mut q = Queue::new(dev, qid, DEPTH, uring_payload_len())?;
    q.register()?;
    q.wait_timeout(Duration::ZERO)?;
    match q.refused() {
        Some(errno) => Err(std::io::Error::from_raw_os_error(errno)),
        None => Ok(q),
    }
}

/// A queue's thread: answer requests until the connection ends.
fn run(mut q: Queue, fs: &CfsFs, requests: &AtomicU64) {
    let mut out = Vec::with_capacity(64 << 10);
    let mut logged = false;
    'serve: loop {
        if let Err(e) = q.wait() {
            eprintln!("cfs-fuse: io_uring wait failed: {e}");
            break;
        }
        while let Some(event) = q.next_event() {
            match event {
                Event::Request(i) => {
                    out.clear();
                    let answer = match q.request(i) {
                        Some((header, op_in, payload)) => {
                            answer(fs, header, op_in, payload, &mut out)
                        }
                        None => continue,
                    };
                    requests.fetch_add(1, Ordering::Relaxed);
                    let (error, reply) = match answer {
                        Answer::Data => (0, &out[..]),
                        Answer::Error(e) => (-e.raw_os_error(), &[][..]),
                        Answer::None => (0, &[][..]),
                    };
                    if let Err(e) = q.commit(i, error, reply) {
                        eprintln!("cfs-fuse: io_uring commit failed: {e}");
                        break 'serve;
                    }
                }
                // The connection is going away (ENOTCONN), or the kernel
                // refused the entry: it is gone either way.
                Event::Failed(_, errno) => {
                    let ending = [Errno::NOTCONN, Errno::NODEV, Errno::CANCELED]
                        .iter()
                        .any(|e| e.raw_os_error() == errno);
                    if !ending && !logged {
                        logged = true;
                        eprintln!(
                            "cfs-fuse: the kernel returned an io_uring entry: {}",
                            std::io::Error::from_raw_os_error(errno)
                        );
                    }
                }
                Event::Woken => break 'serve,
            }
        }
        if q.in_kernel() == 0 {
            break;
        }
    }
    // Give the kernel a moment to hand back what it holds, so the buffers
    // can be freed rather than leaked.
    let deadline = std::time::Instant::now() + DRAIN;
    while q.in_kernel() > 0 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || q.wait_timeout(left).is_err() {
            break;
        }
        while q.next_event().is_some() {}
    }
}

/// Parses and answers one ring request.
fn answer(fs: &CfsFs, header: &[u8], op_in: &[u8], payload: &[u8], out: &mut Vec<u8>) -> Answer {
    let opcode = crate::abi::InHeader::ref_from_prefix(header).map_or(0, |(h, _)| h.opcode.get());
    let arg = &op_in[..op_header_size(opcode)
        .unwrap_or(op_in.len())
        .min(op_in.len())];
    match Request::parse(header, Body { arg, rest: payload }) {
        Ok(req) => fs.answer(&req, out),
        Err(_) => Answer::Error(Errno::IO),
    }
}
