//! The image header check: the composefs header at offset 0 and the EROFS
//! superblock at 1024, checked against each other and against the image size.
//!
//! This is the one place that decides whether bytes are an image cfs reads or
//! mounts: [`Image::open`](super::Image::open) runs it before anything else,
//! and the kernel mount runs it on the file it hands to erofs. It looks at
//! the first [`HEADERS_LEN`] bytes and the size only, so it costs the same for
//! any image. What it requires:
//! - a composefs header with [`COMPOSEFS_MAGIC`] and header version
//!   [`COMPOSEFS_HEADER_VERSION`] (or, when [`OpenOptions::allow_plain_erofs`]
//!   is set, anything without that magic: a plain EROFS image has zeros there);
//! - the superblock magic, 4096-byte blocks and directory blocks
//!   (`blkszbits` 12, `dirblkbits` 0), as the kernel requires;
//! - `meta_blkaddr` inside the image, `xattr_blkaddr` at most at its end (an
//!   image with no shared xattrs may point just past its last inode).
//!
//! A mount also needs every block the superblock counts (`blocks`) in the
//! file, as the kernel may read any of them: [`Headers::check_complete`]. The
//! reader doesn't, as it checks each read against the size: a cut image
//! opens, and what is missing fails when it is read.

use super::OpenOptions;
use crate::erofs::{
    ComposefsHeader, Superblock, BLOCK_BITS, BLOCK_SIZE, COMPOSEFS_FLAG_HAS_ACL,
    COMPOSEFS_HEADER_VERSION, COMPOSEFS_MAGIC, SUPER_MAGIC, SUPER_OFFSET,
};
use zerocopy::FromBytes;

/// Bytes at the start of an image that hold both headers: the composefs
/// header at 0 and the superblock at [`SUPER_OFFSET`].
pub const HEADERS_LEN: usize = SUPER_OFFSET as usize + size_of::<Superblock>();

/// The composefs header's fields that matter once it is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComposefsInfo {
    /// The composefs format version the image was written as (0 or 1).
    pub version: u32,
    /// `COMPOSEFS_FLAG_*`.
    pub flags: u32,
}

/// An image's headers, checked (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct Headers {
    /// The composefs header, `None` for a plain EROFS image.
    pub composefs: Option<ComposefsInfo>,
    /// The EROFS superblock.
    pub superblock: Superblock,
}

/// Why the headers are not those of an image cfs reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The image ends before the header or superblock does.
    #[error("image of {len} bytes is shorter than the {what}")]
    TooShort {
        /// The image size.
        len: u64,
        /// `composefs header` or `EROFS superblock`.
        what: &'static str,
    },
    /// No composefs magic at offset 0 (and plain EROFS is not allowed).
    #[error("composefs header magic {0:#010x} (expected {COMPOSEFS_MAGIC:#010x})")]
    ComposefsMagic(u32),
    /// A composefs header layout this reader does not know.
    #[error("composefs header version {0} (expected {COMPOSEFS_HEADER_VERSION})")]
    HeaderVersion(u32),
    /// No EROFS magic at offset 1024.
    #[error("EROFS superblock magic {0:#010x} (expected {SUPER_MAGIC:#010x})")]
    SuperblockMagic(u32),
    /// A block size other than 4096.
    #[error("EROFS superblock blkszbits {0} (only {BLOCK_BITS} is supported)")]
    BlockSize(u8),
    /// Directory blocks larger than blocks.
    #[error("EROFS superblock dirblkbits {0} (only 0 is supported)")]
    DirBlockBits(u8),
    /// The inode area starts past the end of the image.
    #[error("EROFS superblock meta_blkaddr {0} is past the end of the image")]
    MetaPastEnd(u32),
    /// The shared xattr area starts past the end of the image.
    #[error("EROFS superblock xattr_blkaddr {0} is past the end of the image")]
    XattrPastEnd(u32),
    /// The image is shorter than the blocks the superblock counts.
    #[error("truncated: the superblock counts {blocks} blocks ({} bytes), the image has {len}", u64::from(*.blocks) * BLOCK_SIZE)]
    Truncated {
        /// `blocks` from the superblock.
        blocks: u32,
        /// The image size.
        len: u64,
    },
}

impl Headers {
    /// Checks the headers of an image of `len` bytes that starts with
    /// `start` (its first [`HEADERS_LEN`] bytes, or all of it when shorter).
    pub fn check(start: &[u8], len: u64, options: OpenOptions) -> Result<Self, HeaderError> {
        let too_short = |what| HeaderError::TooShort { len, what };
        let header = start
            .get(..size_of::<ComposefsHeader>())
            .and_then(|b| ComposefsHeader::read_from_bytes(b).ok())
            .ok_or(too_short("composefs header"))?;
        let composefs = if header.magic.get() == COMPOSEFS_MAGIC {
            if header.version.get() != COMPOSEFS_HEADER_VERSION {
                return Err(HeaderError::HeaderVersion(header.version.get()));
            }
            // C composefs writes versions 0 and 1 (2 is being designed); the
            // layout rules the reader checks do not depend on it.
            Some(ComposefsInfo {
                version: header.composefs_version.get(),
                flags: header.flags.get(),
            })
        } else if options.allows_plain_erofs() {
            None
        } else {
            return Err(HeaderError::ComposefsMagic(header.magic.get()));
        };

        let sb = start
            .get(SUPER_OFFSET as usize..HEADERS_LEN)
            .and_then(|b| Superblock::read_from_bytes(b).ok())
            .ok_or(too_short("EROFS superblock"))?;
        if sb.magic.get() != SUPER_MAGIC {
            return Err(HeaderError::SuperblockMagic(sb.magic.get()));
        }
        if u32::from(sb.blkszbits) != BLOCK_BITS {
            return Err(HeaderError::BlockSize(sb.blkszbits));
        }
        if sb.dirblkbits != 0 {
            return Err(HeaderError::DirBlockBits(sb.dirblkbits));
        }
        if u64::from(sb.meta_blkaddr.get()) * BLOCK_SIZE >= len {
            return Err(HeaderError::MetaPastEnd(sb.meta_blkaddr.get()));
        }
        if u64::from(sb.xattr_blkaddr.get()) * BLOCK_SIZE > len {
            return Err(HeaderError::XattrPastEnd(sb.xattr_blkaddr.get()));
        }
        Ok(Headers {
            composefs,
            superblock: sb,
        })
    }

    /// Checks that an image of `len` bytes holds every block the superblock
    /// counts.
    pub fn check_complete(&self, len: u64) -> Result<(), HeaderError> {
        let blocks = self.superblock.blocks.get();
        if u64::from(blocks) * BLOCK_SIZE > len {
            return Err(HeaderError::Truncated { blocks, len });
        }
        Ok(())
    }

    /// True when the composefs header says some inode has a POSIX ACL.
    pub fn has_acl(&self) -> bool {
        self.composefs
            .is_some_and(|c| c.flags & COMPOSEFS_FLAG_HAS_ACL != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    /// The headers of a good composefs image of `blocks` blocks.
    fn good(blocks: u32) -> (ComposefsHeader, Superblock) {
        let mut h = ComposefsHeader::default();
        h.magic.set(COMPOSEFS_MAGIC);
        h.version.set(COMPOSEFS_HEADER_VERSION);
        h.composefs_version.set(1);
        h.flags.set(COMPOSEFS_FLAG_HAS_ACL);
        let mut sb = Superblock::default();
        sb.magic.set(SUPER_MAGIC);
        sb.blkszbits = 12;
        sb.blocks.set(blocks);
        sb.xattr_blkaddr.set(1);
        (h, sb)
    }

    fn start(h: &ComposefsHeader, sb: &Superblock) -> Vec<u8> {
        let mut v = vec![0u8; HEADERS_LEN];
        v[..32].copy_from_slice(h.as_bytes());
        v[SUPER_OFFSET as usize..].copy_from_slice(sb.as_bytes());
        v
    }

    #[test]
    fn header_check_table() {
        type Edit = fn(&mut ComposefsHeader, &mut Superblock, &mut u64);
        let strict = OpenOptions::new();
        let plain = OpenOptions::new().allow_plain_erofs(true);
        // (what, edit of a good 2-block image, options, expected error text)
        let table: &[(&str, Edit, OpenOptions, Option<&str>)] = &[
            ("good", |_, _, _| {}, strict, None),
            ("exactly its blocks", |_, _, len| *len = 8192, strict, None),
            (
                "longer than its blocks",
                |_, _, len| *len = 9000,
                strict,
                None,
            ),
            (
                "header magic",
                |h, _, _| h.magic.set(0),
                strict,
                Some("composefs header magic 0x00000000"),
            ),
            ("plain EROFS allowed", |h, _, _| h.magic.set(0), plain, None),
            (
                "header version",
                |h, _, _| h.version.set(2),
                plain,
                Some("composefs header version 2"),
            ),
            (
                "superblock magic",
                |_, sb, _| sb.magic.set(0x5858_5858),
                strict,
                Some("EROFS superblock magic 0x58585858"),
            ),
            (
                "block size",
                |_, sb, _| sb.blkszbits = 9,
                strict,
                Some("blkszbits 9"),
            ),
            (
                "directory block size",
                |_, sb, _| sb.dirblkbits = 1,
                strict,
                Some("dirblkbits 1"),
            ),
            (
                "meta_blkaddr at the end",
                |_, sb, _| sb.meta_blkaddr.set(2),
                strict,
                Some("meta_blkaddr 2 is past the end"),
            ),
            (
                "xattr_blkaddr past the end",
                |_, sb, _| sb.xattr_blkaddr.set(3),
                strict,
                Some("xattr_blkaddr 3 is past the end"),
            ),
            (
                "truncated",
                |_, _, len| *len = 8191,
                strict,
                Some("truncated: the superblock counts 2 blocks (8192 bytes), the image has 8191"),
            ),
            (
                "blocks past the end",
                |_, sb, _| sb.blocks.set(u32::MAX),
                strict,
                Some("truncated"),
            ),
        ];
        for &(what, edit, options, want) in table {
            let (mut h, mut sb) = good(2);
            let mut len = 8192;
            edit(&mut h, &mut sb, &mut len);
            let got = Headers::check(&start(&h, &sb), len, options)
                .and_then(|headers| headers.check_complete(len).map(|()| headers));
            match (got, want) {
                (Ok(headers), None) => {
                    assert_eq!(headers.superblock.blocks.get(), sb.blocks.get(), "{what}");
                    assert_eq!(headers.has_acl(), h.magic.get() != 0, "{what}");
                }
                (Err(e), Some(want)) => {
                    assert!(e.to_string().contains(want), "{what}: {e}")
                }
                (got, want) => panic!("{what}: {got:?}, expected {want:?}"),
            }
        }
    }

    /// The reader opens a cut image (reads of what is missing fail later).
    #[test]
    fn a_cut_image_passes_the_check_but_is_not_complete() {
        let (h, sb) = good(2);
        let headers = Headers::check(&start(&h, &sb), 5000, OpenOptions::new()).unwrap();
        assert!(headers.check_complete(8192).is_ok());
        assert_eq!(
            headers.check_complete(5000),
            Err(HeaderError::Truncated {
                blocks: 2,
                len: 5000
            })
        );
    }

    #[test]
    fn short_images_name_the_missing_header() {
        let (h, sb) = good(2);
        let full = start(&h, &sb);
        for (len, what) in [
            (0, "composefs header"),
            (31, "composefs header"),
            (32, "EROFS superblock"),
            (HEADERS_LEN - 1, "EROFS superblock"),
        ] {
            let e = Headers::check(&full[..len], len as u64, OpenOptions::new()).unwrap_err();
            assert_eq!(
                e,
                HeaderError::TooShort {
                    len: len as u64,
                    what
                }
            );
        }
    }
}
