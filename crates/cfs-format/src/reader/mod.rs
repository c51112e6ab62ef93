//! A zero-copy reader over composefs (and plain) EROFS image bytes.
//!
//! [`Image::open`] checks the headers only, in O(1) whatever the image size;
//! every later access is bounds-checked with checked arithmetic and returns an
//! error naming the inode and field on bad data, never panics. Reads hand out
//! `&[u8]` slices borrowed from the image so that a FUSE server can answer
//! straight from an mmap without copying or allocating. Every read is a
//! bounded range asked of an [`ImageSource`], never the whole image, so the
//! bytes can also come from a cache that reads the file on demand.
//!
//! The reader is split by concept:
//! - [`source`](ImageSource): where the bytes come from (a slice, an mmap, a block cache);
//! - [`header`](Headers): the image header check (composefs header, superblock, size);
//! - [`image`](Image): opening, the superblock, bounds-checked slicing;
//! - [`inode`](Inode): inodes by nid, compact and extended, and their data layout;
//! - [`dir`](DirEntryRef): directory iteration, resumable `readdir`, binary-search `lookup`;
//! - [`xattr`](XattrRef): shared and inline xattrs, the name filter, `get_xattr`;
//! - `data`: file content, symlink targets, the overlay redirect and digest;
//! - `tree`: [`Image::to_tree`], the whole image as C composefs reads it back;
//! - `objects`: [`Image::backing_objects`], the objects an image names.
//!
//! Layout rules follow the kernel's `fs/erofs` (`erofs_fs.h`, `inode.c`,
//! `data.c`, `dir.c`, `namei.c`, `xattr.c`); where the kernel refuses an image
//! (inline data crossing a block, a name longer than 255 bytes, ...) so do we.

mod data;
mod dir;
mod header;
mod image;
mod inode;
mod objects;
mod source;
mod tree;
mod xattr;

pub use dir::{DirEntryRef, ReadDir};
pub use header::{ComposefsInfo, HeaderError, Headers, HEADERS_LEN};
pub use image::{Image, OpenOptions};
pub use inode::{Inode, Nid};
pub use source::ImageSource;
pub use tree::TreeLimits;
pub use xattr::{XattrRef, Xattrs};

/// Why an image (or part of one) can't be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// Corrupt or unsupported data: which inode (if any) and what.
    #[error("corrupt image{}: {what}", .nid.map(|n| format!(" (inode {n})")).unwrap_or_default())]
    Corrupt {
        /// The inode being read, if any.
        nid: Option<u64>,
        /// What was wrong.
        what: String,
    },
    /// A directory operation on an inode that is not a directory.
    #[error("inode {nid} is not a directory")]
    NotADirectory {
        /// The inode.
        nid: u64,
    },
    /// A symlink operation on an inode that is not a symlink.
    #[error("inode {nid} is not a symlink")]
    NotASymlink {
        /// The inode.
        nid: u64,
    },
    /// [`Image::to_tree`] stopped at one of its [`TreeLimits`].
    #[error("image exceeds a reading limit: {what}")]
    Limit {
        /// Which limit, and its value.
        what: String,
    },
}

/// A [`ReadError::Corrupt`] for inode `nid` (if any) naming `what` was wrong.
pub(crate) fn corrupt(nid: Option<Nid>, what: impl Into<String>) -> ReadError {
    ReadError::Corrupt {
        nid: nid.map(|n| n.0),
        what: what.into(),
    }
}
