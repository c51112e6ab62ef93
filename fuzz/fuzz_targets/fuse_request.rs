//! Invariant: any bytes, read as a FUSE request from `/dev/fuse` or split
//! the way FUSE io_uring delivers one (header, op header, payload), parse to
//! a request or a `BadRequest`: never a panic. And a request whose
//! `/dev/fuse` bytes parse gives the same operation from its io_uring split.
//! Errors are fine; panics are bugs.
#![no_main]

use cfs_fuse::request::{op_header_size, Body, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dev = Request::from_dev(data);
    // The io_uring view of the same bytes: the header, then the opcode's
    // fixed struct (op_in, 128 bytes in the ring), then the rest.
    let (header, body) = data.split_at(data.len().min(40));
    let opcode = header.get(4..8).map_or(0, |b| u32::from_ne_bytes(b.try_into().unwrap()));
    let at = op_header_size(opcode).unwrap_or(body.len()).min(body.len());
    let (arg, rest) = body.split_at(at);
    let uring = Request::parse(header, Body { arg, rest });
    if let Ok(dev) = dev {
        let uring = uring.expect("/dev/fuse bytes parse, their io_uring split doesn't");
        assert_eq!(dev.op, uring.op);
        assert_eq!(dev.unique(), uring.unique());
    }
});
