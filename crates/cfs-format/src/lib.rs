//! composefs on-disk formats, pure: no I/O and no `unsafe`.
//!
//! - [`tree`]: the in-memory tree every source produces and the writer consumes.
//! - [`dumpfile`]: the composefs dumpfile text format, parsed and printed as C composefs does.
//! - [`writer`]: EROFS images byte-identical to C `mkcomposefs`.
//! - [`reader`]: a zero-copy, bounds-checked reader over image bytes.
//! - [`fsverity`]: fs-verity digests computed in userspace.
//! - [`erofs`] and [`overlay`]: on-disk structs and the overlayfs xattr names.
#![forbid(unsafe_code)]

pub mod dumpfile;
pub mod erofs;
pub mod fsverity;
pub mod overlay;
pub mod reader;
pub mod tree;
pub mod writer;

pub use fsverity::Digest;
pub use tree::{FileType, Node, NodeId, Stat, Timespec, Tree, Xattr};
