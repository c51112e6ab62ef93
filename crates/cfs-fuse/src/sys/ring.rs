//! One FUSE-over-io_uring queue: its ring, and the buffers of its entries,
//! which the kernel writes requests into and reads answers from
//! (`Documentation/filesystems/fuse-io-uring.rst`).
//!
//! The ring itself (setup, the mmapped queues, their memory ordering,
//! `io_uring_enter`) is the `io-uring` crate's. This module owns what that
//! crate can't know: which memory the kernel may touch, and when.
//!
//! **Invariant**: an entry's buffers (its [`UringReqHeader`], its payload,
//! and the two-`iovec` array that names them) are the kernel's from the
//! moment the SQE that hands the entry over (`REGISTER` or
//! `COMMIT_AND_FETCH`) is pushed until that SQE's completion is reaped; the
//! kernel writes them only in that window (it fills a request in just
//! before it completes the command). [`Queue`] marks an entry as the
//! kernel's before pushing, gives out slices of its buffers only while it
//! is not ([`Queue::request`], [`Queue::commit`]), and never frees the
//! buffers of an entry the kernel may still hold: dropping a queue leaks
//! those (the ring is closed first, so the kernel cancels the commands).

use crate::abi::uring::{UringCmdReq, UringReqHeader, CMD_COMMIT_AND_FETCH, CMD_REGISTER};
use crate::abi::OutHeader;
use io_uring::squeue::Entry128;
use io_uring::{cqueue, opcode, types, IoUring};
use rustix::event::{eventfd, EventfdFlags, PollFlags};
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use zerocopy::native_endian::{I32, U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

/// `user_data` of the poll on the wake-up eventfd.
const WAKE: u64 = u64::MAX;

/// `struct io_uring_sqe` with `IORING_SETUP_SQE128`, as `IORING_OP_URING_CMD`
/// uses it (`include/uapi/linux/io_uring.h`): the command in the last 80 bytes.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Sqe128 {
    opcode: u8,
    flags: u8,
    ioprio: U16,
    fd: I32,
    cmd_op: U32,
    pad1: U32,
    addr: U64,
    len: U32,
    uring_cmd_flags: U32,
    user_data: U64,
    buf_index: U16,
    personality: U16,
    file_index: U32,
    cmd: [u8; 80],
}

impl Sqe128 {
    /// A FUSE uring command on `fd` for queue `qid`.
    fn fuse_cmd(fd: i32, cmd_op: u32, qid: u16, commit_id: u64, user_data: u64) -> Sqe128 {
        let mut cmd = [0u8; 80];
        let req = UringCmdReq {
            commit_id: commit_id.into(),
            qid: qid.into(),
            ..Default::default()
        };
        cmd[..size_of::<UringCmdReq>()].copy_from_slice(req.as_bytes());
        Sqe128 {
            opcode: opcode::UringCmd80::CODE,
            flags: 0,
            ioprio: 0.into(),
            fd: fd.into(),
            cmd_op: cmd_op.into(),
            pad1: 0.into(),
            addr: 0.into(),
            len: 0.into(),
            uring_cmd_flags: 0.into(),
            user_data: user_data.into(),
            buf_index: 0.into(),
            personality: 0.into(),
            file_index: 0.into(),
            cmd,
        }
    }

    #[allow(unsafe_code)]
    fn entry(self) -> Entry128 {
        let bytes: [u8; 128] = zerocopy::transmute!(self);
        // SAFETY: Entry128 is `#[repr(C)]` of a `struct io_uring_sqe` (64
        // bytes of integers and unions of integers, no padding) and 64 more
        // bytes: 128 bytes for which every bit pattern is valid, and the
        // sizes are checked by `transmute` at compile time. The layout of
        // `Sqe128` is the kernel's, tested against the crate's own builder.
        unsafe { std::mem::transmute::<[u8; 128], Entry128>(bytes) }
    }
}

/// `struct iovec`.
#[repr(C)]
struct Iovec {
    base: *mut u8,
    len: usize,
}

/// One ring entry's buffers, owned through raw pointers because the kernel
/// writes them while we hold them.
struct Slot {
    header: NonNull<UringReqHeader>,
    payload: NonNull<[u8]>,
    /// The kernel reads this on REGISTER; kept as long as the buffers.
    iov: NonNull<[Iovec; 2]>,
    /// The kernel may write the buffers (see the module's invariant).
    in_kernel: bool,
}

// SAFETY: a Slot owns its three heap allocations outright (nothing else
// points at them but the kernel, per the invariant), so moving it to
// another thread is moving a Box.
#[allow(unsafe_code)]
unsafe impl Send for Slot {}

impl Slot {
    fn new(payload_len: usize) -> Slot {
        let header = Box::new(UringReqHeader::new_zeroed());
        let payload = vec![0u8; payload_len].into_boxed_slice();
        let header = NonNull::from(Box::leak(header));
        let payload = NonNull::from(Box::leak(payload));
        let iov = Box::new([
            Iovec {
                base: header.as_ptr().cast(),
                len: size_of::<UringReqHeader>(),
            },
            Iovec {
                base: payload.as_ptr().cast(),
                len: payload_len,
            },
        ]);
        Slot {
            header,
            payload,
            iov: NonNull::from(Box::leak(iov)),
            in_kernel: false,
        }
    }
}

impl Drop for Slot {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        if self.in_kernel {
            // The kernel may still write them: leak rather than free.
            return;
        }
        // SAFETY: the three pointers came from Box::leak in Slot::new and are
        // freed only here, once; the entry is not the kernel's, so nothing
        // else uses them.
        unsafe {
            drop(Box::from_raw(self.header.as_ptr()));
            drop(Box::from_raw(self.payload.as_ptr()));
            drop(Box::from_raw(self.iov.as_ptr()));
        }
    }
}

/// What a reaped completion says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Entry `index` holds a request ([`Queue::request`]).
    Request(usize),
    /// Entry `index` came back without one: the kernel's errno (ENOTCONN
    /// when the connection is going away).
    Failed(usize, i32),
    /// The wake-up eventfd was written ([`Waker::wake`]).
    Woken,
}

/// Wakes a queue's thread out of its wait, from any thread.
#[derive(Debug, Clone)]
pub struct Waker(Arc<OwnedFd>);

impl Waker {
    /// Makes the queue's pending or next wait return [`Event::Woken`].
    pub fn wake(&self) {
        let _ = rustix::io::write(&*self.0, &1u64.to_ne_bytes());
    }
}

/// One FUSE queue (the kernel keeps one per possible CPU): an io_uring with
/// 128-byte SQEs and `depth` entries of `payload_len`-byte payload buffers.
pub struct Queue {
    // Dropped first: closing the ring cancels the kernel's commands.
    ring: IoUring<Entry128, cqueue::Entry>,
    slots: Vec<Slot>,
    events: std::collections::VecDeque<Event>,
    dev: Arc<OwnedFd>,
    wake: Arc<OwnedFd>,
    qid: u16,
}

impl Queue {
    /// A queue `qid` on the connection `dev`, nothing registered yet. Made
    /// on the thread that will serve it: only that thread may submit to it.
    pub fn new(
        dev: Arc<OwnedFd>,
        qid: u16,
        depth: usize,
        payload_len: usize,
    ) -> std::io::Result<Queue> {
        let entries = (depth + 1).next_power_of_two() as u32;
        // One thread submits to this ring, the one that made it and serves
        // it (`uring.rs`), so the kernel may run its completion work in that
        // thread, when it next waits, instead of interrupting it for each
        // request (SINGLE_ISSUER | DEFER_TASKRUN, Linux 6.1; FUSE io_uring
        // needs 6.14). Measured (bench/README.md, "Round trip"): GETXATTR
        // median 7.9–9.3 µs, 4.0–4.8 µs of server CPU per call, against
        // 8.4–10.4 µs and 4.5–5.5 µs without.
        let ring = IoUring::<Entry128, cqueue::Entry>::builder()
            .setup_cqsize(entries * 2)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(entries)?;
        let wake = Arc::new(eventfd(0, EventfdFlags::CLOEXEC)?);
        Ok(Queue {
            ring,
            slots: (0..depth).map(|_| Slot::new(payload_len)).collect(),
            events: std::collections::VecDeque::with_capacity(depth + 1),
            dev,
            wake,
            qid,
        })
    }

    /// A handle that wakes this queue's thread.
    pub fn waker(&self) -> Waker {
        Waker(self.wake.clone())
    }

    /// Entries the kernel holds.
    pub fn in_kernel(&self) -> usize {
        self.slots.iter().filter(|s| s.in_kernel).count()
    }

    #[allow(unsafe_code)]
    fn push(&mut self, entry: &Entry128) -> std::io::Result<()> {
        // SAFETY: an SQE of ours makes the kernel use the buffers of exactly
        // one slot, and its completion (user_data = the slot's index) ends
        // that use: a REGISTER names the slot's iovec array (hence its two
        // buffers); a COMMIT_AND_FETCH names no memory, but the commit id
        // `commit` reads from the slot's own header makes the kernel take
        // back the entry registered with that slot's buffers. Both callers
        // mark the slot as the kernel's before pushing, so its buffers are
        // neither lent out nor freed until that completion is reaped. The
        // wake-up poll names only the eventfd, which the queue holds for as
        // long as the ring (dropped first).
        let pushed = unsafe { self.ring.submission().push(entry) };
        if pushed.is_err() {
            // Can't happen: the ring has room for every entry at once.
            self.ring.submit()?;
            // SAFETY: as above.
            unsafe { self.ring.submission().push(entry) }
                .map_err(|_| std::io::Error::other("io_uring submission queue full"))?;
        }
        Ok(())
    }

    /// Hands every entry to the kernel (`FUSE_IO_URING_CMD_REGISTER`) and
    /// arms the wake-up poll; submitted at once. Only after FUSE_INIT was
    /// answered with `FUSE_OVER_IO_URING`.
    pub fn register(&mut self) -> std::io::Result<()> {
        let fd = self.dev.as_raw_fd();
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            slot.in_kernel = true;
            let mut sqe = Sqe128::fuse_cmd(fd, CMD_REGISTER, self.qid, 0, i as u64);
            sqe.addr = (slot.iov.as_ptr() as u64).into();
            sqe.len = 2.into();
            self.push(&sqe.entry())?;
        }
        let poll = opcode::PollAdd::new(
            types::Fd(self.wake.as_raw_fd()),
            PollFlags::IN.bits().into(),
        )
        .build()
        .user_data(WAKE);
        self.push(&poll.into())?;
        self.ring.submit()?;
        Ok(())
    }

    /// Submits what is pending and sleeps until at least one completion,
    /// then reaps them all (see [`Queue::next_event`]).
    pub fn wait(&mut self) -> std::io::Result<()> {
        if self.events.is_empty() {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.reap();
        Ok(())
    }

    /// Submits what is pending and reaps completions, waiting up to
    /// `timeout` for one.
    pub fn wait_timeout(&mut self, timeout: std::time::Duration) -> std::io::Result<()> {
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::TIME.raw_os_error()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        self.reap();
        Ok(())
    }

    /// Moves the completions the kernel has posted into the event list.
    fn reap(&mut self) {
        for cqe in self.ring.completion() {
            let (data, res) = (cqe.user_data(), cqe.result());
            let event = match usize::try_from(data).ok().filter(|&i| i < self.slots.len()) {
                _ if data == WAKE => Event::Woken,
                Some(i) => {
                    self.slots[i].in_kernel = false;
                    if res == 0 {
                        Event::Request(i)
                    } else {
                        Event::Failed(i, -res)
                    }
                }
                None => continue,
            };
            self.events.push_back(event);
        }
    }

    /// Takes the reaped completions of refused entries, leaving the others:
    /// the errno of one, if any.
    pub fn refused(&mut self) -> Option<i32> {
        let mut errno = None;
        self.events.retain(|e| match e {
            Event::Failed(_, e) => {
                errno = Some(*e);
                false
            }
            _ => true,
        });
        errno
    }

    /// The next reaped completion, oldest first.
    pub fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Entry `index`'s request: the header buffer's `in_out` and `op_in`,
    /// and the payload bytes the kernel wrote. `None` while the kernel holds
    /// the entry.
    #[allow(unsafe_code)]
    pub fn request(&self, index: usize) -> Option<(&[u8], &[u8], &[u8])> {
        let slot = self.slots.get(index).filter(|s| !s.in_kernel)?;
        // SAFETY: the entry is not the kernel's (checked above), so nothing
        // writes these buffers while `&self` lends them out; they live as
        // long as the slot.
        let (header, payload) = unsafe { (slot.header.as_ref(), slot.payload.as_ref()) };
        let used = (header.ring_ent_in_out.payload_sz.get() as usize).min(payload.len());
        Some((&header.in_out, &header.op_in, &payload[..used]))
    }

    /// The size of each entry's payload buffer: the longest answer.
    pub fn payload_len(&self) -> usize {
        self.slots.first().map_or(0, |s| s.payload.len())
    }

    /// Answers entry `index`'s request with `error` (0 or a negative errno)
    /// and `reply`, and hands the entry back to the kernel
    /// (`FUSE_IO_URING_CMD_COMMIT_AND_FETCH`, submitted by the next
    /// [`Queue::wait`]). A reply longer than the payload buffer answers EIO.
    ///
    /// The request is named by the commit id the kernel wrote into this
    /// entry's own header, never by the caller: the kernel finds the entry
    /// to take back (and to write the next request into) by that id alone
    /// (`fuse_uring_commit_fetch`), so another request's id would hand it a
    /// different entry's buffers while this queue believes them its own.
    pub fn commit(&mut self, index: usize, error: i32, reply: &[u8]) -> std::io::Result<()> {
        match self.answer(index, error, reply) {
            Some(sqe) => self.push(&sqe.entry()),
            None => Ok(()),
        }
    }

    /// [`Queue::commit`] up to the push: writes the answer into entry
    /// `index`'s buffers, marks the entry as the kernel's and returns the
    /// SQE that hands it back; `None` while the kernel holds the entry.
    #[allow(unsafe_code)]
    fn answer(&mut self, index: usize, error: i32, reply: &[u8]) -> Option<Sqe128> {
        let slot = self.slots.get_mut(index).filter(|s| !s.in_kernel)?;
        // SAFETY: the entry is not the kernel's (checked above) and `&mut
        // self` lends nothing else out: these are the only references.
        let (header, payload) = unsafe { (slot.header.as_mut(), slot.payload.as_mut()) };
        // Written by the kernel with this entry's request (its unique), or
        // still 0 (never filled): the kernel then finds no request (ENOENT)
        // and takes no entry.
        let unique = header.ring_ent_in_out.commit_id.get();
        let (error, reply) = if reply.len() > payload.len() {
            (-rustix::io::Errno::IO.raw_os_error(), &[][..])
        } else {
            (error, reply)
        };
        payload[..reply.len()].copy_from_slice(reply);
        let out = OutHeader {
            len: ((size_of::<OutHeader>() + reply.len()) as u32).into(),
            error: error.into(),
            unique: unique.into(),
        };
        header.in_out[..size_of::<OutHeader>()].copy_from_slice(out.as_bytes());
        header.ring_ent_in_out.payload_sz = (reply.len() as u32).into();
        slot.in_kernel = true;
        let fd = self.dev.as_raw_fd();
        Some(Sqe128::fuse_cmd(
            fd,
            CMD_COMMIT_AND_FETCH,
            self.qid,
            unique,
            index as u64,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our SQE layout agrees with the io-uring crate's builder on every byte
    /// it sets (it can't set `len`, which REGISTER needs).
    #[test]
    fn sqe_layout_matches_the_crate() {
        let mut cmd = [0u8; 80];
        cmd[..24].copy_from_slice(
            UringCmdReq {
                commit_id: 77.into(),
                qid: 3.into(),
                ..Default::default()
            }
            .as_bytes(),
        );
        let theirs = opcode::UringCmd80::new(types::Fd(9), CMD_COMMIT_AND_FETCH)
            .cmd(cmd)
            .addr(Some(0x1234_5678))
            .build()
            .user_data(5);
        let mut ours = Sqe128::fuse_cmd(9, CMD_COMMIT_AND_FETCH, 3, 77, 5);
        ours.addr = 0x1234_5678.into();
        #[allow(unsafe_code)]
        let as_bytes = |e: Entry128| -> [u8; 128] {
            // SAFETY: the reverse of Sqe128::entry: 128 bytes of integers
            // without padding, every one initialised by the builders.
            unsafe { std::mem::transmute::<Entry128, [u8; 128]>(e) }
        };
        assert_eq!(as_bytes(ours.entry()), as_bytes(theirs));
    }

    /// The kernel finds the entry a commit hands back by the commit id
    /// alone, so the answer to entry `i` must carry the id the kernel wrote
    /// into entry `i`, whatever else the caller knows: with another entry's
    /// id, the kernel would write its next request into buffers this queue
    /// lends out as its own.
    #[test]
    fn a_commit_names_the_request_its_own_entry_holds() {
        let dev = Arc::new(OwnedFd::from(std::fs::File::open("/dev/null").unwrap()));
        let mut q = match Queue::new(dev, 0, 2, 64) {
            Ok(q) => q,
            Err(e) => {
                println!("skipped: no io_uring with SINGLE_ISSUER|DEFER_TASKRUN here ({e})");
                return;
            }
        };
        for (i, id) in [(0, 41u64), (1, 42)] {
            // SAFETY: test only: the entries were never handed to the kernel.
            #[allow(unsafe_code)]
            let header = unsafe { q.slots[i].header.as_mut() };
            header.ring_ent_in_out.commit_id = id.into();
        }
        let sqe = q.answer(1, 0, b"hi").unwrap();
        let req = UringCmdReq::ref_from_prefix(&sqe.cmd[..]).unwrap().0;
        assert_eq!((req.commit_id.get(), sqe.user_data.get()), (42, 1));
        assert!(
            q.slots[1].in_kernel,
            "entry 1 is the kernel's once answered"
        );
        assert!(q.request(1).is_none(), "and lends nothing out");
        assert!(q.answer(1, 0, b"again").is_none(), "nor is answered twice");
        // The answer's header names the same request.
        // SAFETY: test only: nothing was submitted, the kernel holds nothing.
        #[allow(unsafe_code)]
        let in_out = unsafe { q.slots[1].header.as_ref() }.in_out;
        let out = OutHeader::ref_from_prefix(&in_out[..]).unwrap().0;
        assert_eq!((out.unique.get(), out.len.get()), (42, 18));
        // Nothing was submitted: free the buffers rather than leak them.
        q.slots[1].in_kernel = false;
    }
}
