//! Parsing a FUSE request out of bytes the kernel wrote, bounds-checked.
//!
//! A request is a [`InHeader`], the opcode's fixed argument struct (its
//! "op header", possibly empty) and the rest (a name, a list of forgets).
//! `/dev/fuse` delivers the three back to back; FUSE over io_uring puts the
//! header and the op header in the entry's header buffer and the rest in its
//! payload buffer. [`Body`] is that split, so both transports share one
//! parser ([`Request::parse`]).
//!
//! The kernel is the only writer, but the parser still trusts nothing: every
//! read names what it reads, a short or malformed request is a
//! [`BadRequest`] (answered EIO, or dropped when it can't be answered), and
//! no byte sequence can make it panic (unit-tested and fuzzed:
//! `fuzz/fuzz_targets/fuse_request.rs`).

use crate::abi::{self, opcode, InHeader};
use zerocopy::FromBytes;

/// A request that could not be parsed: what was missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadRequest {
    /// Fewer bytes than the struct needs.
    #[error("request too short for {what}: {have} of {need} bytes")]
    Short {
        /// What was being read.
        what: &'static str,
        /// Bytes there.
        have: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The header's length disagrees with the bytes read.
    #[error("request header says {said} bytes, {got} were read")]
    Length {
        /// `InHeader::len`.
        said: u32,
        /// Bytes read.
        got: usize,
    },
    /// A name without its terminating NUL.
    #[error("{0} is not NUL-terminated")]
    Unterminated(&'static str),
}

/// Reads a `T` from the front of `bytes`, naming it on short input.
fn take<'a, T: FromBytes + zerocopy::KnownLayout + zerocopy::Immutable + 'a>(
    bytes: &'a [u8],
    what: &'static str,
) -> Result<(&'a T, &'a [u8]), BadRequest> {
    T::ref_from_prefix(bytes).map_err(|_| BadRequest::Short {
        what,
        have: bytes.len(),
        need: size_of::<T>(),
    })
}

/// The NUL-terminated name at the front of `bytes` (without the NUL).
fn name<'a>(bytes: &'a [u8], what: &'static str) -> Result<&'a [u8], BadRequest> {
    let end = bytes
        .iter()
        .position(|&b| b == 0)
        .ok_or(BadRequest::Unterminated(what))?;
    Ok(&bytes[..end])
}

/// The size of an opcode's fixed argument struct (what io_uring puts in
/// `op_in`); `None` for INIT, whose struct grew over the versions and which
/// only ever comes through `/dev/fuse` (its whole body is its argument).
pub fn op_header_size(opcode: u32) -> Option<usize> {
    Some(match opcode {
        opcode::INIT => return None,
        opcode::FORGET => size_of::<abi::ForgetIn>(),
        opcode::BATCH_FORGET => size_of::<abi::BatchForgetIn>(),
        opcode::GETATTR => size_of::<abi::GetattrIn>(),
        opcode::OPEN | opcode::OPENDIR => size_of::<abi::OpenIn>(),
        opcode::READ | opcode::READDIR | opcode::READDIRPLUS => size_of::<abi::ReadIn>(),
        opcode::RELEASE | opcode::RELEASEDIR => size_of::<abi::ReleaseIn>(),
        opcode::GETXATTR | opcode::LISTXATTR => size_of::<abi::GetxattrIn>(),
        opcode::INTERRUPT => size_of::<abi::InterruptIn>(),
        opcode::ACCESS => size_of::<abi::AccessIn>(),
        // LOOKUP (a name), READLINK, STATFS, DESTROY, and whatever this
        // server doesn't answer: nothing fixed.
        _ => 0,
    })
}

/// A request's arguments: its op header and the rest.
#[derive(Debug, Clone, Copy)]
pub struct Body<'a> {
    /// The opcode's fixed argument struct (at least its size; io_uring's
    /// `op_in` is 128 bytes whatever the struct).
    pub arg: &'a [u8],
    /// What follows it.
    pub rest: &'a [u8],
}

impl<'a> Body<'a> {
    /// Splits the bytes after the header of a `/dev/fuse` request.
    pub fn split(opcode: u32, body: &'a [u8]) -> Body<'a> {
        let at = op_header_size(opcode).unwrap_or(body.len()).min(body.len());
        let (arg, rest) = body.split_at(at);
        Body { arg, rest }
    }
}

/// What a request asks, with its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Op<'a> {
    Init {
        major: u32,
        minor: u32,
        max_readahead: u32,
        /// `flags | flags2 << 32` (flags2 only with `FUSE_INIT_EXT`).
        flags: u64,
    },
    Lookup {
        name: &'a [u8],
    },
    Forget,
    BatchForget,
    Getattr,
    Readlink,
    Open {
        flags: u32,
    },
    Read {
        fh: u64,
        offset: u64,
        size: u32,
    },
    Release {
        fh: u64,
    },
    Statfs,
    Getxattr {
        name: &'a [u8],
        size: u32,
    },
    Listxattr {
        size: u32,
    },
    Opendir,
    Readdir {
        offset: u64,
        size: u32,
        plus: bool,
    },
    Releasedir,
    Interrupt {
        unique: u64,
    },
    Destroy,
    /// Anything else (writes, locks, ioctls…): answered ENOSYS.
    Other(u32),
}

impl Op<'_> {
    /// True for requests the kernel expects no answer to.
    pub fn no_reply(&self) -> bool {
        matches!(self, Op::Forget | Op::BatchForget)
    }
}

/// A parsed request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The header: opcode, unique id, node id, caller.
    pub header: &'a InHeader,
    /// What is asked.
    pub op: Op<'a>,
}

impl<'a> Request<'a> {
    /// The request id to answer with.
    pub fn unique(&self) -> u64 {
        self.header.unique.get()
    }

    /// The node (inode) the request is about.
    pub fn nodeid(&self) -> u64 {
        self.header.nodeid.get()
    }

    /// The thread id of the caller, as seen in the server's pid namespace
    /// (0 when not visible there).
    pub fn pid(&self) -> u32 {
        self.header.pid.get()
    }

    /// Parses a whole `/dev/fuse` read: header, then the arguments; the
    /// header's length must be what was read.
    pub fn from_dev(bytes: &'a [u8]) -> Result<Request<'a>, BadRequest> {
        let (header, body) = take::<InHeader>(bytes, "fuse_in_header")?;
        if header.len.get() as usize != bytes.len() {
            return Err(BadRequest::Length {
                said: header.len.get(),
                got: bytes.len(),
            });
        }
        let body = Body::split(header.opcode.get(), body);
        Ok(Request {
            header,
            op: Op::parse(header.opcode.get(), body)?,
        })
    }

    /// Parses a request from its header and arguments (io_uring: the
    /// header buffer's `in_out` and `op_in`, and the payload).
    pub fn parse(header: &'a [u8], body: Body<'a>) -> Result<Request<'a>, BadRequest> {
        let (header, _) = take::<InHeader>(header, "fuse_in_header")?;
        Ok(Request {
            header,
            op: Op::parse(header.opcode.get(), body)?,
        })
    }
}

impl<'a> Op<'a> {
    /// The operation `opcode` with arguments `body`.
    pub fn parse(opcode: u32, body: Body<'a>) -> Result<Op<'a>, BadRequest> {
        let Body { arg, rest } = body;
        Ok(match opcode {
            opcode::INIT => {
                let (init, after) = take::<abi::InitIn>(arg, "fuse_init_in")?;
                let mut flags = u64::from(init.flags.get());
                if flags & abi::init::INIT_EXT != 0 {
                    let (flags2, _) = take::<zerocopy::native_endian::U32>(after, "flags2")?;
                    flags |= u64::from(flags2.get()) << 32;
                }
                Op::Init {
                    major: init.major.get(),
                    minor: init.minor.get(),
                    max_readahead: init.max_readahead.get(),
                    flags,
                }
            }
            opcode::LOOKUP => Op::Lookup {
                name: name(rest, "lookup name")?,
            },
            opcode::FORGET => Op::Forget,
            opcode::BATCH_FORGET => Op::BatchForget,
            opcode::GETATTR => Op::Getattr,
            opcode::READLINK => Op::Readlink,
            opcode::OPEN => {
                let (a, _) = take::<abi::OpenIn>(arg, "fuse_open_in")?;
                Op::Open {
                    flags: a.flags.get(),
                }
            }
            opcode::READ => {
                let (a, _) = take::<abi::ReadIn>(arg, "fuse_read_in")?;
                Op::Read {
                    fh: a.fh.get(),
                    offset: a.offset.get(),
                    size: a.size.get(),
                }
            }
            opcode::RELEASE => {
                let (a, _) = take::<abi::ReleaseIn>(arg, "fuse_release_in")?;
                Op::Release { fh: a.fh.get() }
            }
            opcode::STATFS => Op::Statfs,
            opcode::GETXATTR => {
                let (a, _) = take::<abi::GetxattrIn>(arg, "fuse_getxattr_in")?;
                Op::Getxattr {
                    name: name(rest, "xattr name")?,
                    size: a.size.get(),
                }
            }
            opcode::LISTXATTR => {
                let (a, _) = take::<abi::GetxattrIn>(arg, "fuse_getxattr_in")?;
                Op::Listxattr { size: a.size.get() }
            }
            opcode::OPENDIR => Op::Opendir,
            opcode::READDIR | opcode::READDIRPLUS => {
                let (a, _) = take::<abi::ReadIn>(arg, "fuse_read_in")?;
                Op::Readdir {
                    offset: a.offset.get(),
                    size: a.size.get(),
                    plus: opcode == opcode::READDIRPLUS,
                }
            }
            opcode::RELEASEDIR => Op::Releasedir,
            opcode::INTERRUPT => {
                let (a, _) = take::<abi::InterruptIn>(arg, "fuse_interrupt_in")?;
                Op::Interrupt {
                    unique: a.unique.get(),
                }
            }
            opcode::DESTROY => Op::Destroy,
            other => Op::Other(other),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    /// A `/dev/fuse` request: header for `opcode` on `nodeid`, then `body`.
    pub(crate) fn dev_request(opcode: u32, nodeid: u64, body: &[u8]) -> Vec<u8> {
        let header = InHeader {
            len: ((size_of::<InHeader>() + body.len()) as u32).into(),
            opcode: opcode.into(),
            unique: 7.into(),
            nodeid: nodeid.into(),
            uid: 1000.into(),
            gid: 1000.into(),
            pid: 42.into(),
            total_extlen: 0.into(),
            padding: 0.into(),
        };
        let mut v = header.as_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    fn getxattr_body(size: u32, name: &[u8]) -> Vec<u8> {
        let mut b = abi::GetxattrIn {
            size: size.into(),
            padding: 0.into(),
        }
        .as_bytes()
        .to_vec();
        b.extend_from_slice(name);
        b
    }

    #[test]
    fn parses_what_the_kernel_sends() {
        let bytes = dev_request(opcode::LOOKUP, 1, b"name\0");
        let r = Request::from_dev(&bytes).unwrap();
        assert_eq!(r.op, Op::Lookup { name: b"name" });
        assert_eq!((r.unique(), r.nodeid(), r.pid()), (7, 1, 42));

        let bytes = dev_request(
            opcode::GETXATTR,
            9,
            &getxattr_body(0, b"user.overlay.redirect\0"),
        );
        let r = Request::from_dev(&bytes).unwrap();
        assert_eq!(
            r.op,
            Op::Getxattr {
                name: b"user.overlay.redirect",
                size: 0
            }
        );

        let mut init = abi::InitIn {
            major: 7.into(),
            minor: 45.into(),
            max_readahead: 131072.into(),
            flags: (abi::init::INIT_EXT as u32 | 1).into(),
        }
        .as_bytes()
        .to_vec();
        init.extend_from_slice(&(1u32 << 9).to_ne_bytes()); // flags2: bit 41
        init.resize(64, 0); // unused[11]
        let bytes = dev_request(opcode::INIT, 0, &init);
        let r = Request::from_dev(&bytes).unwrap();
        assert_eq!(
            r.op,
            Op::Init {
                major: 7,
                minor: 45,
                max_readahead: 131072,
                flags: abi::init::INIT_EXT | 1 | abi::init::OVER_IO_URING
            }
        );
    }

    /// The io_uring split (op header in one buffer, the rest in another)
    /// parses to the same request as the `/dev/fuse` bytes.
    #[test]
    fn both_transports_parse_alike() {
        let body = getxattr_body(64, b"security.capability\0");
        let dev = dev_request(opcode::GETXATTR, 5, &body);
        let mut op_in = [0u8; 128];
        op_in[..8].copy_from_slice(&body[..8]);
        let uring = Request::parse(
            &dev[..40],
            Body {
                arg: &op_in,
                rest: &body[8..],
            },
        )
        .unwrap();
        assert_eq!(uring.op, Request::from_dev(&dev).unwrap().op);
    }

    #[test]
    fn bad_requests_are_errors() {
        let table: &[(&str, Vec<u8>)] = &[
            ("empty", vec![]),
            (
                "half a header",
                dev_request(opcode::LOOKUP, 1, b"x\0")[..20].to_vec(),
            ),
            ("unterminated name", dev_request(opcode::LOOKUP, 1, b"abc")),
            ("short read_in", dev_request(opcode::READ, 1, &[0; 39])),
            (
                "short getxattr_in",
                dev_request(opcode::GETXATTR, 1, &[0; 4]),
            ),
            (
                "getxattr without name",
                dev_request(opcode::GETXATTR, 1, &[0; 8]),
            ),
            ("short init", dev_request(opcode::INIT, 0, &[0; 12])),
            ("init_ext without flags2", {
                let mut b = vec![0; 16];
                b[12..16].copy_from_slice(&(1u32 << 30).to_ne_bytes());
                dev_request(opcode::INIT, 0, &b)
            }),
            ("length lies", {
                let mut b = dev_request(opcode::STATFS, 1, &[]);
                b[0] = 99;
                b
            }),
        ];
        for (what, bytes) in table {
            assert!(Request::from_dev(bytes).is_err(), "{what}");
        }
        // Unknown opcodes parse, to be answered ENOSYS.
        let bytes = dev_request(4096, 1, &[1, 2, 3]);
        let r = Request::from_dev(&bytes).unwrap();
        assert_eq!(r.op, Op::Other(4096));
    }

    /// Every prefix of every request, and random bytes, parse or fail cleanly.
    #[test]
    fn hostile_bytes_never_panic() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for op in 0..=50u32 {
            let body: Vec<u8> = (0..80).map(|_| next() as u8).collect();
            let full = dev_request(op, 1, &body);
            for end in 0..=full.len() {
                let _ = Request::from_dev(&full[..end]);
                let _ = Request::parse(
                    &full[..end.min(40)],
                    Body::split(op, &full[end.min(40)..end]),
                );
            }
        }
    }
}
