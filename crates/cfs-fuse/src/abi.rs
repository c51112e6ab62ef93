//! The FUSE wire format: the structs, opcodes and flags of the kernel's
//! `include/uapi/linux/fuse.h` (protocol 7.42) that a read-only server
//! needs, and nothing else.
//!
//! Every struct is `#[repr(C)]` of byte-order integer fields (alignment 1),
//! deriving zerocopy's traits: reading one out of request bytes can only fail
//! on size, and needs no `unsafe`. The byte order is the host's
//! ([`zerocopy::native_endian`]), not little-endian as in the image format:
//! FUSE is a kernel ↔ process protocol on one machine, and the kernel writes
//! its structs in its own byte order. The layout test below pins each
//! struct's size to the header's.

use zerocopy::native_endian::{I32, I64, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The protocol's major version (`FUSE_KERNEL_VERSION`).
pub const KERNEL_VERSION: u32 = 7;
/// The minor version this server speaks: 7.42 added FUSE over io_uring.
pub const KERNEL_MINOR_VERSION: u32 = 42;
/// The node id of the root directory (`FUSE_ROOT_ID`).
pub const ROOT_ID: u64 = 1;
/// The smallest read buffer the kernel accepts (`FUSE_MIN_READ_BUFFER`).
pub const MIN_READ_BUFFER: usize = 8192;

/// Request opcodes (`enum fuse_opcode`), the ones this server answers or
/// must recognise.
#[allow(missing_docs)]
pub mod opcode {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const READLINK: u32 = 5;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const GETXATTR: u32 = 22;
    pub const LISTXATTR: u32 = 23;
    pub const FLUSH: u32 = 25;
    pub const INIT: u32 = 26;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const ACCESS: u32 = 34;
    pub const INTERRUPT: u32 = 36;
    pub const DESTROY: u32 = 38;
    pub const BATCH_FORGET: u32 = 42;
    pub const READDIRPLUS: u32 = 44;
}

/// INIT flags (`FUSE_*` of `fuse_init_in.flags | flags2 << 32`).
#[allow(missing_docs)]
pub mod init {
    pub const ASYNC_READ: u64 = 1 << 0;
    pub const BIG_WRITES: u64 = 1 << 5;
    pub const DO_READDIRPLUS: u64 = 1 << 13;
    pub const NO_OPEN_SUPPORT: u64 = 1 << 17;
    pub const PARALLEL_DIROPS: u64 = 1 << 18;
    pub const POSIX_ACL: u64 = 1 << 20;
    pub const MAX_PAGES: u64 = 1 << 22;
    pub const CACHE_SYMLINKS: u64 = 1 << 23;
    pub const NO_OPENDIR_SUPPORT: u64 = 1 << 24;
    /// The rest of the flags are in `flags2`.
    pub const INIT_EXT: u64 = 1 << 30;
    pub const PASSTHROUGH: u64 = 1 << 37;
    pub const OVER_IO_URING: u64 = 1 << 41;
}

/// Flags of an OPEN answer (`FOPEN_*`).
#[allow(missing_docs)]
pub mod fopen {
    pub const KEEP_CACHE: u32 = 1 << 1;
    pub const PASSTHROUGH: u32 = 1 << 7;
}

/// `struct fuse_in_header`: the start of every request.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct InHeader {
    pub len: U32,
    pub opcode: U32,
    pub unique: U64,
    pub nodeid: U64,
    pub uid: U32,
    pub gid: U32,
    pub pid: U32,
    /// Length of extensions after the arguments, in 8-byte units.
    pub total_extlen: U16,
    pub padding: U16,
}

/// `struct fuse_out_header`: the start of every answer.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct OutHeader {
    pub len: U32,
    /// 0 or a negative errno.
    pub error: I32,
    pub unique: U64,
}

/// The start of `struct fuse_init_in` every kernel sends (7.6 on); later
/// kernels append `flags2` and reserved words.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct InitIn {
    pub major: U32,
    pub minor: U32,
    pub max_readahead: U32,
    pub flags: U32,
}

/// `struct fuse_init_out` (64 bytes since 7.23).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct InitOut {
    pub major: U32,
    pub minor: U32,
    pub max_readahead: U32,
    pub flags: U32,
    pub max_background: U16,
    pub congestion_threshold: U16,
    pub max_write: U32,
    pub time_gran: U32,
    pub max_pages: U16,
    pub map_alignment: U16,
    pub flags2: U32,
    pub max_stack_depth: U32,
    pub request_timeout: U16,
    pub unused: [U16; 11],
}

/// `struct fuse_attr`.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
#[allow(missing_docs)]
pub struct Attr {
    pub ino: U64,
    pub size: U64,
    pub blocks: U64,
    pub atime: I64,
    pub mtime: I64,
    pub ctime: I64,
    pub atimensec: U32,
    pub mtimensec: U32,
    pub ctimensec: U32,
    pub mode: U32,
    pub nlink: U32,
    pub uid: U32,
    pub gid: U32,
    pub rdev: U32,
    pub blksize: U32,
    pub flags: U32,
}

/// `struct fuse_entry_out`: the answer to LOOKUP, and each READDIRPLUS entry.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct EntryOut {
    pub nodeid: U64,
    pub generation: U64,
    pub entry_valid: U64,
    pub attr_valid: U64,
    pub entry_valid_nsec: U32,
    pub attr_valid_nsec: U32,
    pub attr: Attr,
}

/// `struct fuse_attr_out`: the answer to GETATTR.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct AttrOut {
    pub attr_valid: U64,
    pub attr_valid_nsec: U32,
    pub dummy: U32,
    pub attr: Attr,
}

/// `struct fuse_getattr_in`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct GetattrIn {
    pub getattr_flags: U32,
    pub dummy: U32,
    pub fh: U64,
}

/// `struct fuse_open_in` (OPEN and OPENDIR).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct OpenIn {
    pub flags: U32,
    pub open_flags: U32,
}

/// `struct fuse_open_out`.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct OpenOut {
    pub fh: U64,
    pub open_flags: U32,
    pub backing_id: I32,
}

/// `struct fuse_read_in` (READ, READDIR, READDIRPLUS).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct ReadIn {
    pub fh: U64,
    pub offset: U64,
    pub size: U32,
    pub read_flags: U32,
    pub lock_owner: U64,
    pub flags: U32,
    pub padding: U32,
}

/// `struct fuse_release_in` (RELEASE, RELEASEDIR).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct ReleaseIn {
    pub fh: U64,
    pub flags: U32,
    pub release_flags: U32,
    pub lock_owner: U64,
}

/// `struct fuse_getxattr_in` (GETXATTR, then the name; LISTXATTR).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct GetxattrIn {
    pub size: U32,
    pub padding: U32,
}

/// `struct fuse_getxattr_out`: the size of a value or list, when asked with size 0.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct GetxattrOut {
    pub size: U32,
    pub padding: U32,
}

/// `struct fuse_forget_in`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct ForgetIn {
    pub nlookup: U64,
}

/// `struct fuse_batch_forget_in`, followed by `count` `fuse_forget_one`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct BatchForgetIn {
    pub count: U32,
    pub dummy: U32,
}

/// `struct fuse_interrupt_in`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct InterruptIn {
    pub unique: U64,
}

/// `struct fuse_access_in`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct AccessIn {
    pub mask: U32,
    pub padding: U32,
}

/// `struct fuse_kstatfs` (`fuse_statfs_out`).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct StatfsOut {
    pub blocks: U64,
    pub bfree: U64,
    pub bavail: U64,
    pub files: U64,
    pub ffree: U64,
    pub bsize: U32,
    pub namelen: U32,
    pub frsize: U32,
    pub padding: U32,
    pub spare: [U32; 6],
}

/// `struct fuse_dirent` without its name: a READDIR record is this, the
/// name, and zeros up to a multiple of 8 bytes.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct Dirent {
    pub ino: U64,
    /// The offset to ask for to continue after this entry.
    pub off: U64,
    pub namelen: U32,
    /// `(mode & S_IFMT) >> 12`.
    pub kind: U32,
}

/// `struct fuse_backing_map`: the argument of `FUSE_DEV_IOC_BACKING_OPEN`.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct BackingMap {
    pub fd: I32,
    pub flags: U32,
    pub padding: U64,
}

/// FUSE over io_uring (`Documentation/filesystems/fuse-io-uring.rst`): each
/// ring entry is a header buffer ([`uring::UringReqHeader`]) and a payload buffer,
/// registered with `FUSE_IO_URING_CMD_REGISTER` and answered with
/// `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`, both as `IORING_OP_URING_CMD` on
/// 128-byte SQEs whose 80-byte command area holds a [`uring::UringCmdReq`].
pub mod uring {
    use super::*;

    /// `FUSE_IO_URING_CMD_REGISTER`: hand an entry to the kernel.
    pub const CMD_REGISTER: u32 = 1;
    /// `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`: answer an entry's request and
    /// hand the entry back.
    pub const CMD_COMMIT_AND_FETCH: u32 = 2;
    /// `FUSE_URING_IN_OUT_HEADER_SZ`.
    pub const IN_OUT_HEADER_SZ: usize = 128;
    /// `FUSE_URING_OP_IN_OUT_SZ`.
    pub const OP_IN_OUT_SZ: usize = 128;

    /// `struct fuse_uring_ent_in_out`.
    #[derive(
        Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
    )]
    #[repr(C)]
    #[allow(missing_docs)]
    pub struct EntInOut {
        pub flags: U64,
        /// The id to commit the answer with (the request's unique).
        pub commit_id: U64,
        /// Bytes used in the payload buffer, both ways.
        pub payload_sz: U32,
        pub padding: U32,
        pub reserved: U64,
    }

    /// `struct fuse_uring_req_header`: the header buffer of a ring entry.
    #[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
    #[repr(C)]
    pub struct UringReqHeader {
        /// `fuse_in_header` of the request, `fuse_out_header` of the answer.
        pub in_out: [u8; IN_OUT_HEADER_SZ],
        /// The request's first argument (its per-opcode header), if any.
        pub op_in: [u8; OP_IN_OUT_SZ],
        /// Ring bookkeeping.
        pub ring_ent_in_out: EntInOut,
    }

    /// `struct fuse_uring_cmd_req`: the start of the SQE's command area.
    #[derive(
        Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
    )]
    #[repr(C)]
    #[allow(missing_docs)]
    pub struct UringCmdReq {
        pub flags: U64,
        /// Which request the answer is for (commit only).
        pub commit_id: U64,
        /// The queue (CPU) the entry belongs to.
        pub qid: U16,
        pub padding: [u8; 6],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes from `fuse.h` (7.42); a wrong field would shift everything after it.
    #[test]
    fn sizes_match_the_kernel_header() {
        let table: &[(&str, usize, usize)] = &[
            ("fuse_in_header", size_of::<InHeader>(), 40),
            ("fuse_out_header", size_of::<OutHeader>(), 16),
            ("fuse_init_in (7.6 prefix)", size_of::<InitIn>(), 16),
            ("fuse_init_out", size_of::<InitOut>(), 64),
            ("fuse_attr", size_of::<Attr>(), 88),
            ("fuse_entry_out", size_of::<EntryOut>(), 128),
            ("fuse_attr_out", size_of::<AttrOut>(), 104),
            ("fuse_getattr_in", size_of::<GetattrIn>(), 16),
            ("fuse_open_in", size_of::<OpenIn>(), 8),
            ("fuse_open_out", size_of::<OpenOut>(), 16),
            ("fuse_read_in", size_of::<ReadIn>(), 40),
            ("fuse_release_in", size_of::<ReleaseIn>(), 24),
            ("fuse_getxattr_in", size_of::<GetxattrIn>(), 8),
            ("fuse_getxattr_out", size_of::<GetxattrOut>(), 8),
            ("fuse_forget_in", size_of::<ForgetIn>(), 8),
            ("fuse_batch_forget_in", size_of::<BatchForgetIn>(), 8),
            ("fuse_interrupt_in", size_of::<InterruptIn>(), 8),
            ("fuse_access_in", size_of::<AccessIn>(), 8),
            ("fuse_kstatfs", size_of::<StatfsOut>(), 80),
            ("fuse_dirent (no name)", size_of::<Dirent>(), 24),
            ("fuse_backing_map", size_of::<BackingMap>(), 16),
            ("fuse_uring_ent_in_out", size_of::<uring::EntInOut>(), 32),
            (
                "fuse_uring_req_header",
                size_of::<uring::UringReqHeader>(),
                288,
            ),
            ("fuse_uring_cmd_req", size_of::<uring::UringCmdReq>(), 24),
        ];
        for &(name, got, want) in table {
            assert_eq!(got, want, "{name}");
        }
    }

    /// An OutHeader as the kernel reads it: len, error, unique.
    #[test]
    fn out_header_bytes() {
        let h = OutHeader {
            len: 16.into(),
            error: (-2).into(),
            unique: 0x0102_0304_0506_0708.into(),
        };
        let mut want = Vec::new();
        want.extend_from_slice(&16u32.to_ne_bytes()); // len
        want.extend_from_slice(&(-2i32).to_ne_bytes()); // error: -ENOENT
        want.extend_from_slice(&0x0102_0304_0506_0708u64.to_ne_bytes()); // unique
        assert_eq!(h.as_bytes(), &want[..]);
    }
}
