//! Inodes by nid: compact (32-byte) and extended (64-byte) EROFS inodes
//! (`struct erofs_inode_compact` / `erofs_inode_extended` in `erofs_fs.h`).
//!
//! An inode lives at `meta_blkaddr * 4096 + nid * 32`. Right after it comes its
//! xattr body (`0` or `12 + 4 * (i_xattr_icount - 1)` bytes), and right after
//! that its inline data: the tail of a `FLAT_INLINE` file or directory, or the
//! chunk index of a `CHUNK_BASED` file. A compact inode has no mtime of its own:
//! it is the superblock's build time.

use super::{corrupt, Image, ImageSource, ReadError};
use crate::erofs::{
    DataLayout, InodeCompact, InodeExtended, INODE_COMPACT_SIZE, INODE_EXTENDED_SIZE,
    I_DATALAYOUT_BIT, SLOT_SIZE, XATTR_BODY_HEADER_SIZE,
};
use crate::tree::{FileType, Stat, Timespec};
use std::fmt;
use zerocopy::little_endian::U16;

/// An inode number as EROFS stores it: the inode's 32-byte slot counted from
/// `meta_blkaddr * 4096`. Stable, so a FUSE server can use it as its inode id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nid(pub u64);

impl fmt::Display for Nid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Bits of `i_format` the kernel knows (`EROFS_I_ALL`): version and layout.
const I_FORMAT_ALL: u16 = (1 << (I_DATALAYOUT_BIT + 3)) - 1;

/// One decoded inode: the fields of either on-disk form, plus where its xattr
/// body and inline data are. Made by [`Image::inode`]; every field is checked
/// again where it is used to read more bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inode {
    nid: Nid,
    offset: u64,
    extended: bool,
    layout: DataLayout,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    size: u64,
    mtime: Timespec,
    i_u: u32,
    ino: u32,
    xattr_icount: u16,
}

impl Inode {
    /// The inode's nid.
    pub fn nid(&self) -> Nid {
        self.nid
    }

    /// True for a 64-byte extended inode, false for a 32-byte compact one.
    pub fn is_extended(&self) -> bool {
        self.extended
    }

    /// How the inode's data is stored.
    pub fn layout(&self) -> DataLayout {
        self.layout
    }

    /// File type and permission bits (`i_mode`).
    pub fn mode(&self) -> u32 {
        self.mode
    }

    /// The file type, `None` when `i_mode` holds no valid one.
    pub fn file_type(&self) -> Option<FileType> {
        FileType::from_mode(self.mode)
    }

    /// True for a directory.
    pub fn is_dir(&self) -> bool {
        self.file_type() == Some(FileType::Directory)
    }

    /// Owner.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Group.
    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// Link count.
    pub fn nlink(&self) -> u32 {
        self.nlink
    }

    /// Size in bytes (`i_size`).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Modification time: the inode's own if extended, else the build time.
    pub fn mtime(&self) -> Timespec {
        self.mtime
    }

    /// Device number of a character or block device (`i_u` as Linux's new
    /// `dev_t` encoding), 0 for every other type.
    pub fn rdev(&self) -> u64 {
        match self.file_type() {
            Some(FileType::CharDevice | FileType::BlockDevice) => u64::from(self.i_u),
            _ => 0,
        }
    }

    /// The raw `i_u` union: `raw_blkaddr` for flat layouts, the chunk format
    /// for chunk-based ones, `rdev` for devices.
    pub fn raw_u(&self) -> u32 {
        self.i_u
    }

    /// First data block of a flat inode (`i_u.raw_blkaddr`).
    pub fn blkaddr(&self) -> u32 {
        self.i_u
    }

    /// The inode number stored in the image (`i_ino`).
    pub fn ino(&self) -> u32 {
        self.ino
    }

    /// `i_xattr_icount`.
    pub fn xattr_icount(&self) -> u16 {
        self.xattr_icount
    }

    /// Byte offset of the inode in the image.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Size of the on-disk inode: 32 or 64.
    pub fn inode_size(&self) -> u64 {
        if self.extended {
            INODE_EXTENDED_SIZE as u64
        } else {
            INODE_COMPACT_SIZE as u64
        }
    }

    /// Byte offset of the xattr body, right after the inode.
    pub fn xattr_body_offset(&self) -> u64 {
        // Can't overflow: Image::inode checked offset + 64 fits the image.
        self.offset + self.inode_size()
    }

    /// Size of the xattr body: 0, or `12 + 4 * (icount - 1)`.
    pub fn xattr_body_size(&self) -> u64 {
        match self.xattr_icount {
            0 => 0,
            n => XATTR_BODY_HEADER_SIZE as u64 + 4 * (u64::from(n) - 1),
        }
    }

    /// Byte offset of the inline data (tail or chunk index), right after the xattr body.
    pub fn inline_offset(&self) -> u64 {
        self.xattr_body_offset() + self.xattr_body_size()
    }

    /// The stat fields composefs keeps, as read (no overlay xattrs applied).
    pub fn stat(&self) -> Stat {
        Stat {
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            nlink: self.nlink,
            rdev: self.rdev(),
            size: self.size,
            mtime: self.mtime,
        }
    }
}

impl<T: ImageSource> Image<T> {
    /// The inode at `nid` (`meta_blkaddr * 4096 + nid * 32`), compact or extended.
    ///
    /// Fails on an inode outside the image, unknown `i_format` bits, or a data
    /// layout other than flat plain, flat inline or chunk based (compressed
    /// inodes are not supported).
    pub fn inode(&self, nid: Nid) -> Result<Inode, ReadError> {
        let at = Some(nid);
        let offset = nid
            .0
            .checked_mul(SLOT_SIZE)
            .and_then(|o| o.checked_add(self.meta_offset))
            .ok_or_else(|| corrupt(at, "nid: inode offset overflows"))?;
        let i_format = self.read_at::<U16>(at, offset, "inode i_format")?.get();
        if i_format & !I_FORMAT_ALL != 0 {
            return Err(corrupt(
                at,
                format!("inode i_format {i_format:#06x} has unknown bits"),
            ));
        }
        let raw_layout = (i_format >> I_DATALAYOUT_BIT) & 7;
        let layout = DataLayout::from_raw(raw_layout).ok_or_else(|| {
            corrupt(
                at,
                format!("inode i_format: unsupported data layout {raw_layout}"),
            )
        })?;
        let inode = if i_format & 1 == 0 {
            let c: InodeCompact = self.read_at(at, offset, "compact inode")?;
            Inode {
                nid,
                offset,
                extended: false,
                layout,
                mode: u32::from(c.i_mode.get()),
                uid: u32::from(c.i_uid.get()),
                gid: u32::from(c.i_gid.get()),
                nlink: u32::from(c.i_nlink.get()),
                size: u64::from(c.i_size.get()),
                mtime: self.build_time(),
                i_u: c.i_u.get(),
                ino: c.i_ino.get(),
                xattr_icount: c.i_xattr_icount.get(),
            }
        } else {
            let e: InodeExtended = self.read_at(at, offset, "extended inode")?;
            Inode {
                nid,
                offset,
                extended: true,
                layout,
                mode: u32::from(e.i_mode.get()),
                uid: e.i_uid.get(),
                gid: e.i_gid.get(),
                nlink: e.i_nlink.get(),
                size: e.i_size.get(),
                mtime: Timespec {
                    sec: e.i_mtime.get() as i64,
                    nsec: e.i_mtime_nsec.get(),
                },
                i_u: e.i_u.get(),
                ino: e.i_ino.get(),
                xattr_icount: e.i_xattr_icount.get(),
            }
        };
        Ok(inode)
    }
}
