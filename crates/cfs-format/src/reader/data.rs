//! File data: byte ranges of a file, symlink targets, and the overlay
//! redirect and fs-verity digest of a composefs file whose content lives
//! outside the image.
//!
//! How a byte offset maps to image bytes depends on the layout (`erofs_fs.h`,
//! kernel `data.c`):
//! - `FLAT_PLAIN`: all `i_size` bytes at `raw_blkaddr * 4096`;
//! - `FLAT_INLINE`: the first `ceil(i_size / 4096) - 1` blocks at
//!   `raw_blkaddr * 4096`, the rest (1..=4096 bytes) inline right after the
//!   xattr body, and not crossing the block the inode is in;
//! - `CHUNK_BASED`: chunks of `4096 << (format & 0x1f)` bytes, each mapped by
//!   a `__le32` block address (or an 8-byte `ChunkIndex` with
//!   `CHUNK_FORMAT_INDEXES`) in a table after the xattr body, aligned to the
//!   entry size; `NULL_ADDR` is a hole that reads as zeros. composefs writes
//!   chunk-based files as all holes: their content is the redirect target.

use super::{corrupt, Image, ImageSource, Inode, Nid, ReadError};
use crate::erofs::{
    ChunkIndex, DataLayout, BLOCK_SIZE, CHUNK_FORMAT_BLKBITS_MASK, CHUNK_FORMAT_INDEXES, NULL_ADDR,
};
use crate::fsverity::Digest;
use crate::overlay;
use crate::tree::{FileType, MAX_SYMLINK_LEN};
use zerocopy::little_endian::U32;

/// What a hole reads as; a hole extent is handed out in pieces of this size.
static ZEROS: [u8; BLOCK_SIZE as usize] = [0; BLOCK_SIZE as usize];

impl<T: ImageSource> Image<T> {
    /// Up to `len` bytes of the data of inode `nid` from byte `offset`: the
    /// longest run that is contiguous in the image, so it may be shorter than
    /// asked for (call again from where it ended); empty at or past the end.
    /// Holes read as zeros. Borrowed from the image: no copy.
    pub fn read(&self, nid: Nid, offset: u64, len: usize) -> Result<&[u8], ReadError> {
        let inode = self.inode(nid)?;
        self.read_inode(&inode, offset, len)
    }

    /// [`Image::read`] for an inode already looked up.
    pub fn read_inode(&self, inode: &Inode, offset: u64, len: usize) -> Result<&[u8], ReadError> {
        self.extent(inode, offset, len as u64)
    }

    /// Fills `buf` with the data of inode `nid` from `offset`, stopping only at
    /// the end of the file; returns the number of bytes written.
    pub fn read_into(&self, nid: Nid, offset: u64, buf: &mut [u8]) -> Result<usize, ReadError> {
        let inode = self.inode(nid)?;
        let mut done = 0;
        while done < buf.len() {
            let at = offset
                .checked_add(done as u64)
                .ok_or_else(|| corrupt(Some(nid), "read offset overflows"))?;
            let piece = self.read_inode(&inode, at, buf.len() - done)?;
            if piece.is_empty() {
                break;
            }
            buf[done..done + piece.len()].copy_from_slice(piece);
            done += piece.len();
        }
        Ok(done)
    }

    /// The target of symlink `nid`, borrowed from the image (at most 4095 bytes,
    /// possibly holding NUL bytes on a corrupt image).
    pub fn symlink_target(&self, nid: Nid) -> Result<&[u8], ReadError> {
        let inode = self.inode(nid)?;
        if inode.file_type() != Some(FileType::Symlink) {
            return Err(ReadError::NotASymlink { nid: nid.0 });
        }
        self.symlink_inode(&inode)
    }

    pub(super) fn symlink_inode(&self, inode: &Inode) -> Result<&[u8], ReadError> {
        let nid = Some(inode.nid());
        if inode.size() > MAX_SYMLINK_LEN as u64 {
            return Err(corrupt(
                nid,
                format!("symlink i_size {} is over {MAX_SYMLINK_LEN}", inode.size()),
            ));
        }
        if inode.layout() == DataLayout::ChunkBased {
            return Err(corrupt(nid, "symlink has a chunk-based layout"));
        }
        let target = self.extent(inode, 0, inode.size())?;
        if target.len() as u64 != inode.size() {
            return Err(corrupt(nid, "symlink target is not contiguous"));
        }
        Ok(target)
    }

    /// The value of `trusted.overlay.redirect` on `nid`: where overlayfs finds
    /// the content of a composefs file (`/ab/cdef...` in the object store).
    pub fn redirect(&self, nid: Nid) -> Result<Option<&[u8]>, ReadError> {
        self.get_xattr(nid, overlay::REDIRECT)
    }

    /// The fs-verity digest in `trusted.overlay.metacopy` on `nid`, if it holds one.
    pub fn digest(&self, nid: Nid) -> Result<Option<Digest>, ReadError> {
        Ok(self
            .get_xattr(nid, overlay::METACOPY)?
            .and_then(overlay::metacopy_digest))
    }

    /// The inline tail of a `FLAT_INLINE` inode: `len` bytes right after the
    /// xattr body, which must not cross the block the inode starts in.
    fn tail(&self, inode: &Inode, len: u64) -> Result<&[u8], ReadError> {
        let start = inode.inline_offset();
        if start % BLOCK_SIZE + len > BLOCK_SIZE {
            return Err(corrupt(
                Some(inode.nid()),
                format!("inline data ({len} bytes at offset {start}) crosses a block boundary"),
            ));
        }
        self.slice(Some(inode.nid()), start, len, "inline data")
    }

    /// Data from `offset` to the end of the contiguous run it falls in (never
    /// past `i_size`), at most `max` bytes, and possibly fewer where the
    /// image source stops (see [`super::ImageSource::prefix_at`]); empty
    /// when `offset >= i_size`. The whole run is bounds-checked either way.
    pub(super) fn extent(&self, inode: &Inode, offset: u64, max: u64) -> Result<&[u8], ReadError> {
        let size = inode.size();
        if offset >= size {
            return Ok(&[]);
        }
        let nid = Some(inode.nid());
        let blocks_at = u64::from(inode.blkaddr()) * BLOCK_SIZE;
        match inode.layout() {
            DataLayout::FlatPlain => {
                self.slice_prefix(nid, blocks_at, size, offset, max, "data blocks")
            }
            DataLayout::FlatInline => {
                let in_blocks = (size.div_ceil(BLOCK_SIZE) - 1) * BLOCK_SIZE;
                if offset < in_blocks {
                    self.slice_prefix(nid, blocks_at, in_blocks, offset, max, "data blocks")
                } else {
                    let tail = self.tail(inode, size - in_blocks)?;
                    // offset - in_blocks < size - in_blocks = tail.len()
                    let tail = &tail[(offset - in_blocks) as usize..];
                    Ok(&tail[..tail.len().min(usize::try_from(max).unwrap_or(usize::MAX))])
                }
            }
            DataLayout::ChunkBased => self.chunk_extent(inode, offset, max),
        }
    }

    fn chunk_extent(&self, inode: &Inode, offset: u64, max: u64) -> Result<&[u8], ReadError> {
        let nid = Some(inode.nid());
        let format = inode.raw_u() as u16;
        if format & !(CHUNK_FORMAT_BLKBITS_MASK | CHUNK_FORMAT_INDEXES) != 0 {
            return Err(corrupt(
                nid,
                format!("inode i_u chunk format {format:#06x} has unknown bits"),
            ));
        }
        let chunk_bits = 12 + u32::from(format & CHUNK_FORMAT_BLKBITS_MASK);
        let chunk = offset >> chunk_bits;
        let chunk_start = chunk << chunk_bits;
        let chunk_end = chunk_start
            .saturating_add(1 << chunk_bits)
            .min(inode.size());
        let unit: u64 = if format & CHUNK_FORMAT_INDEXES != 0 {
            8
        } else {
            4
        };
        let entry_at = inode
            .inline_offset()
            .checked_next_multiple_of(unit)
            .and_then(|t| t.checked_add(chunk.checked_mul(unit)?))
            .ok_or_else(|| corrupt(nid, "chunk index offset overflows"))?;
        let blkaddr = if unit == 8 {
            let index: ChunkIndex = self.read_at(nid, entry_at, "chunk index")?;
            if index.blkaddr.get() != NULL_ADDR && index.device_id.get() != 0 {
                return Err(corrupt(
                    nid,
                    format!(
                        "chunk {chunk} is on device {} (extra devices are not supported)",
                        index.device_id.get()
                    ),
                ));
            }
            index.blkaddr.get()
        } else {
            self.read_at::<U32>(nid, entry_at, "chunk block address")?
                .get()
        };
        let run = chunk_end - offset;
        if blkaddr == NULL_ADDR {
            return Ok(&ZEROS[..run.min(BLOCK_SIZE).min(max) as usize]);
        }
        let start = u64::from(blkaddr) * BLOCK_SIZE + (offset - chunk_start);
        self.slice_prefix(nid, start, run, 0, max, "chunk data")
    }
}
