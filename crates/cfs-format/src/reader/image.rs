//! Opening an image: the composefs header and the EROFS superblock, checked
//! once in O(1), plus the bounds-checked slicing every other read goes through.
//!
//! A composefs image starts with a 32-byte `lcfs_erofs_header_s` at offset 0;
//! a plain EROFS image (from `mkfs.erofs`) has zeros there. Both carry the
//! superblock at byte 1024. Nothing past the superblock and the root inode is
//! looked at when opening, so opening costs the same for any image size.

use super::header::{ComposefsInfo, Headers, HEADERS_LEN};
use super::{corrupt, ImageSource, Nid, ReadError};
use crate::erofs::{BLOCK_SIZE, FEATURE_COMPAT_XATTR_FILTER};
use crate::tree::Timespec;
use std::ops::Deref;
use zerocopy::FromBytes;

/// How strictly [`Image::open_with`] checks the header at offset 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct OpenOptions {
    allow_plain_erofs: bool,
}

impl OpenOptions {
    /// The strict defaults of [`Image::open`]: a composefs header is required.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also accept a plain EROFS image without a composefs header (as
    /// `mkfs.erofs` writes). A composefs header, when present, is still checked.
    pub fn allow_plain_erofs(mut self, yes: bool) -> Self {
        self.allow_plain_erofs = yes;
        self
    }

    /// Whether a plain EROFS image is accepted.
    pub fn allows_plain_erofs(&self) -> bool {
        self.allow_plain_erofs
    }
}

/// An opened image over bytes from `T` (a `Vec<u8>` in tests; an mmap or a
/// `pread` block cache in production, see [`ImageSource`]).
///
/// Cheap to share between threads when `T` is: every read takes `&self`.
pub struct Image<T: ImageSource> {
    data: T,
    /// The composefs header, `None` for plain EROFS.
    composefs: Option<ComposefsInfo>,
    /// Byte offset of nid 0: `meta_blkaddr * 4096`.
    pub(super) meta_offset: u64,
    /// Byte offset of shared xattr id 0: `xattr_blkaddr * 4096`.
    pub(super) xattr_offset: u64,
    root: Nid,
    build_time: Timespec,
    /// The superblock has `EROFS_FEATURE_COMPAT_XATTR_FILTER` and no long prefixes.
    pub(super) xattr_filter: bool,
}

impl<T: ImageSource> Image<T> {
    /// Checks the composefs header and superblock; reads nothing else.
    ///
    /// The header must carry the composefs magic and version 1; a plain EROFS
    /// image is refused (see [`Image::open_erofs`]).
    pub fn open(data: T) -> Result<Self, ReadError> {
        Self::open_with(data, OpenOptions::default())
    }

    /// Like [`Image::open`], but also accepts a plain EROFS image with no
    /// composefs header, such as `mkfs.erofs` writes.
    pub fn open_erofs(data: T) -> Result<Self, ReadError> {
        Self::open_with(data, OpenOptions::new().allow_plain_erofs(true))
    }

    /// Opens with explicit [`OpenOptions`]: the header check
    /// ([`Headers::check`]), then the root inode.
    pub fn open_with(data: T, options: OpenOptions) -> Result<Self, ReadError> {
        let len = data.size();
        // At most HEADERS_LEN, so it fits a usize.
        let start_len = len.min(HEADERS_LEN as u64) as usize;
        let start = data
            .bytes_at(0, start_len)
            .ok_or_else(|| corrupt(None, "the image headers could not be read"))?;
        let headers =
            Headers::check(start, len, options).map_err(|e| corrupt(None, e.to_string()))?;
        let sb = headers.superblock;
        let meta_offset = u64::from(sb.meta_blkaddr.get()) * BLOCK_SIZE;
        let xattr_offset = u64::from(sb.xattr_blkaddr.get()) * BLOCK_SIZE;
        let image = Image {
            composefs: headers.composefs,
            meta_offset,
            xattr_offset,
            root: Nid(u64::from(sb.root_nid.get())),
            build_time: Timespec {
                sec: sb.build_time.get() as i64,
                nsec: sb.build_time_nsec.get(),
            },
            xattr_filter: sb.feature_compat.get() & FEATURE_COMPAT_XATTR_FILTER != 0
                && sb.xattr_prefix_count == 0,
            data,
        };
        // The root inode must be there and be a directory: one O(1) read.
        let root = image.inode(image.root)?;
        if !root.is_dir() {
            return Err(corrupt(
                Some(image.root),
                format!("root inode i_mode {:#o} is not a directory", root.mode()),
            ));
        }
        Ok(image)
    }

    /// Where the bytes come from.
    pub fn source(&self) -> &T {
        &self.data
    }

    /// The image size in bytes.
    pub fn size(&self) -> u64 {
        self.data.size()
    }

    /// The nid of the root directory (superblock `root_nid`).
    pub fn root_nid(&self) -> Nid {
        self.root
    }

    /// The composefs format version from the header, `None` for a plain EROFS image.
    pub fn composefs_version(&self) -> Option<u32> {
        self.composefs.map(|c| c.version)
    }

    /// The composefs header flags (`COMPOSEFS_FLAG_*`), `None` for a plain EROFS image.
    pub fn composefs_flags(&self) -> Option<u32> {
        self.composefs.map(|c| c.flags)
    }

    /// The superblock build time: the mtime of every compact inode.
    pub fn build_time(&self) -> Timespec {
        self.build_time
    }

    /// `len` bytes at `offset`, or an error naming `what` was being read.
    pub(super) fn slice(
        &self,
        nid: Option<Nid>,
        offset: u64,
        len: u64,
        what: &str,
    ) -> Result<&[u8], ReadError> {
        let n = self.check(nid, offset, len, what)?;
        self.data
            .bytes_at(offset, n)
            .ok_or_else(|| self.unreadable(nid, offset, len, what))
    }

    /// Checks that `len` bytes at `offset` are inside the image, then returns
    /// a prefix of the (at most) `max` bytes from `offset + skip`: as long as
    /// the source serves without copying, empty only if `max` or `len - skip`
    /// is 0. For file data, which callers take in pieces.
    pub(super) fn slice_prefix(
        &self,
        nid: Option<Nid>,
        offset: u64,
        len: u64,
        skip: u64,
        max: u64,
        what: &str,
    ) -> Result<&[u8], ReadError> {
        self.check(nid, offset, len, what)?;
        let skip = skip.min(len);
        let at = offset + skip;
        // Fits a usize: at most `len`, which `check` proved does.
        let want = (len - skip).min(max) as usize;
        match self.data.prefix_at(at, want) {
            Some(b) if !b.is_empty() || want == 0 => Ok(&b[..b.len().min(want)]),
            _ => Err(self.unreadable(nid, at, want as u64, what)),
        }
    }

    /// `len` as a `usize` if `len` bytes at `offset` are inside the image.
    fn check(
        &self,
        nid: Option<Nid>,
        offset: u64,
        len: u64,
        what: &str,
    ) -> Result<usize, ReadError> {
        let size = self.size();
        offset
            .checked_add(len)
            .filter(|&end| end <= size)
            .and_then(|_| usize::try_from(len).ok())
            .ok_or_else(|| {
                corrupt(
                    nid,
                    format!(
                        "{what}: {len} bytes at offset {offset} are outside the image ({size} bytes)"
                    ),
                )
            })
    }

    /// The error for a range inside the image that the source could not serve.
    fn unreadable(&self, nid: Option<Nid>, offset: u64, len: u64, what: &str) -> ReadError {
        corrupt(
            nid,
            format!("{what}: {len} bytes at offset {offset} could not be read from the image"),
        )
    }

    /// A `U` read from `offset`, or an error naming `what` was being read.
    pub(super) fn read_at<U: FromBytes + zerocopy::KnownLayout + zerocopy::Immutable>(
        &self,
        nid: Option<Nid>,
        offset: u64,
        what: &str,
    ) -> Result<U, ReadError> {
        let bytes = self.slice(nid, offset, size_of::<U>() as u64, what)?;
        U::read_from_bytes(bytes).map_err(|_| corrupt(nid, format!("{what}: short read")))
    }
}

impl<T: Deref<Target = [u8]>> Image<T> {
    /// The image bytes, for an image held in memory or mapped.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }
}

impl<T: ImageSource> std::fmt::Debug for Image<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("len", &self.size())
            .field("composefs_version", &self.composefs_version())
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}
