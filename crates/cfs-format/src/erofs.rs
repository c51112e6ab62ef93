//! EROFS on-disk structures as composefs writes them, plus the composefs header.
//!
//! Every struct mirrors one in the kernel's `fs/erofs/erofs_fs.h` and is made of
//! little-endian fields with alignment 1, so a cast from bytes can only fail on
//! size and needs no `unsafe`. A composefs image is laid out as:
//!
//! ```text
//! 0      ComposefsHeader (32 bytes), zero padding
//! 1024   Superblock (128 bytes)
//! 1152   inodes, each on a 32-byte slot: nid = (offset - 1024 & !4095) / 32,
//!        i.e. offset = meta_blkaddr * 4096 + nid * 32; every inode is followed by
//!        its xattr body and its inline ("tail") data
//!        shared xattrs: entry at xattr_blkaddr * 4096 + 4 * id
//! blocks data blocks (directory blocks, inline-file blocks, long symlinks)
//! ```

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Log2 of the only block size composefs uses.
pub const BLOCK_BITS: u32 = 12;
/// The block size: 4096 bytes.
pub const BLOCK_SIZE: u64 = 1 << BLOCK_BITS;
/// Inodes start on 32-byte slots; a nid counts slots.
pub const SLOT_SIZE: u64 = 32;
/// Byte offset of the superblock.
pub const SUPER_OFFSET: u64 = 1024;
/// `EROFS_SUPER_MAGIC_V1`.
pub const SUPER_MAGIC: u32 = 0xE0F5_E1E2;
/// `EROFS_FEATURE_COMPAT_SB_CHKSUM`.
pub const FEATURE_COMPAT_SB_CHKSUM: u32 = 0x1;
/// `EROFS_FEATURE_COMPAT_MTIME`: extended inodes carry their own mtime.
pub const FEATURE_COMPAT_MTIME: u32 = 0x2;
/// `EROFS_FEATURE_COMPAT_XATTR_FILTER`: inodes carry a bloom filter of xattr names.
pub const FEATURE_COMPAT_XATTR_FILTER: u32 = 0x4;
/// `EROFS_NULL_ADDR`: a chunk index entry with no data (a hole).
pub const NULL_ADDR: u32 = 0xFFFF_FFFF;
/// Mask of the chunk size bits in `i_u.c.format` (`EROFS_CHUNK_FORMAT_BLKBITS_MASK`).
pub const CHUNK_FORMAT_BLKBITS_MASK: u16 = 0x001F;
/// `EROFS_CHUNK_FORMAT_INDEXES`: 8-byte chunk indexes instead of 4-byte block map.
pub const CHUNK_FORMAT_INDEXES: u16 = 0x0020;
/// Seed of the xattr name bloom filter (`EROFS_XATTR_FILTER_SEED`).
pub const XATTR_FILTER_SEED: u32 = 0x25BB_E08F;
/// Bits in the xattr name filter.
pub const XATTR_FILTER_BITS: u32 = 32;
/// Filter value meaning "no names" (`EROFS_XATTR_FILTER_DEFAULT`).
pub const XATTR_FILTER_DEFAULT: u32 = 0xFFFF_FFFF;
/// Marks a long-prefix xattr name index; composefs never writes one, and at most
/// this many shared xattrs are referenced from one inode.
pub const XATTR_LONG_PREFIX: u8 = 0x80;

/// Magic of the composefs header at offset 0.
pub const COMPOSEFS_MAGIC: u32 = 0xd078_629a;
/// Version of the composefs header layout (`LCFS_EROFS_VERSION`).
pub const COMPOSEFS_HEADER_VERSION: u32 = 1;
/// Header flag: some inode has a POSIX ACL (`LCFS_EROFS_FLAGS_HAS_ACL`).
pub const COMPOSEFS_FLAG_HAS_ACL: u32 = 1;

/// Bit position of the inode version (compact 0 / extended 1) in `i_format`.
pub const I_VERSION_BIT: u16 = 0;
/// Bit position of the data layout in `i_format`.
pub const I_DATALAYOUT_BIT: u16 = 1;

/// How an inode's data is stored (`EROFS_INODE_*`), decoded from `i_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataLayout {
    /// All data in blocks starting at `raw_blkaddr`.
    FlatPlain,
    /// Whole blocks at `raw_blkaddr`, the tail right after the inode.
    FlatInline,
    /// A chunk index follows the inode (composefs: all holes, content elsewhere).
    ChunkBased,
}

impl DataLayout {
    /// The raw value stored in `i_format`.
    pub const fn raw(self) -> u16 {
        match self {
            DataLayout::FlatPlain => 0,
            DataLayout::FlatInline => 2,
            DataLayout::ChunkBased => 4,
        }
    }

    /// Decodes a raw layout; compressed layouts are not composefs and give `None`.
    pub const fn from_raw(raw: u16) -> Option<Self> {
        match raw {
            0 => Some(DataLayout::FlatPlain),
            2 => Some(DataLayout::FlatInline),
            4 => Some(DataLayout::ChunkBased),
            _ => None,
        }
    }
}

/// Directory entry file types (`EROFS_FT_*`).
pub mod file_type {
    /// Unknown.
    pub const UNKNOWN: u8 = 0;
    /// Regular file.
    pub const REG_FILE: u8 = 1;
    /// Directory.
    pub const DIR: u8 = 2;
    /// Character device.
    pub const CHRDEV: u8 = 3;
    /// Block device.
    pub const BLKDEV: u8 = 4;
    /// FIFO.
    pub const FIFO: u8 = 5;
    /// Socket.
    pub const SOCK: u8 = 6;
    /// Symbolic link.
    pub const SYMLINK: u8 = 7;
}

/// Xattr name prefix indexes (`EROFS_XATTR_INDEX_*`).
pub mod xattr_index {
    /// `user.`
    pub const USER: u8 = 1;
    /// `system.posix_acl_access` (whole name)
    pub const POSIX_ACL_ACCESS: u8 = 2;
    /// `system.posix_acl_default` (whole name)
    pub const POSIX_ACL_DEFAULT: u8 = 3;
    /// `trusted.`
    pub const TRUSTED: u8 = 4;
    /// `lustre.` (never written by composefs)
    pub const LUSTRE: u8 = 5;
    /// `security.`
    pub const SECURITY: u8 = 6;
}

/// The prefixes that xattr name indexes stand for, in the order C composefs
/// matches them when writing. Index 5 (`lustre.`) is read but never written.
pub const XATTR_PREFIXES: [(&[u8], u8); 5] = [
    (b"user.", xattr_index::USER),
    (b"system.posix_acl_access", xattr_index::POSIX_ACL_ACCESS),
    (b"system.posix_acl_default", xattr_index::POSIX_ACL_DEFAULT),
    (b"trusted.", xattr_index::TRUSTED),
    (b"security.", xattr_index::SECURITY),
];

/// The prefix for a name index when reading, `None` for an unknown index.
pub fn xattr_prefix(index: u8) -> Option<&'static [u8]> {
    match index {
        0 => Some(b""),
        xattr_index::LUSTRE => Some(b"lustre."),
        _ => XATTR_PREFIXES
            .iter()
            .find(|(_, i)| *i == index)
            .map(|(p, _)| *p),
    }
}

/// The composefs header at offset 0 (`struct lcfs_erofs_header_s`).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ComposefsHeader {
    /// [`COMPOSEFS_MAGIC`]
    pub magic: U32,
    /// [`COMPOSEFS_HEADER_VERSION`]
    pub version: U32,
    /// `COMPOSEFS_FLAG_*`
    pub flags: U32,
    /// The composefs format version (0 or 1) the image was written as.
    pub composefs_version: U32,
    /// Zero.
    pub unused: [U32; 4],
}

/// The EROFS superblock at offset 1024 (`struct erofs_super_block`).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Superblock {
    /// [`SUPER_MAGIC`]
    pub magic: U32,
    /// crc32c of the superblock block, when `FEATURE_COMPAT_SB_CHKSUM`.
    pub checksum: U32,
    /// `FEATURE_COMPAT_*`
    pub feature_compat: U32,
    /// log2 of the block size.
    pub blkszbits: u8,
    /// Extension slots after the superblock (0).
    pub sb_extslots: u8,
    /// nid of the root directory.
    pub root_nid: U16,
    /// Number of inodes.
    pub inos: U64,
    /// mtime of compact inodes (seconds).
    pub build_time: U64,
    /// mtime of compact inodes (nanoseconds).
    pub build_time_nsec: U32,
    /// Size of the image in blocks.
    pub blocks: U32,
    /// Block where nid 0 lives.
    pub meta_blkaddr: U32,
    /// Block where shared xattr id 0 lives.
    pub xattr_blkaddr: U32,
    /// Volume UUID (zero).
    pub uuid: [u8; 16],
    /// Volume name (zero).
    pub volume_name: [u8; 16],
    /// `FEATURE_INCOMPAT_*` (zero for composefs).
    pub feature_incompat: U32,
    /// Compression algorithms / lz4 max distance (zero).
    pub u1: U16,
    /// Extra devices (zero).
    pub extra_devices: U16,
    /// Device table slot offset (zero).
    pub devt_slotoff: U16,
    /// Directory block size bits beyond blkszbits (zero).
    pub dirblkbits: u8,
    /// Number of long xattr prefixes (zero).
    pub xattr_prefix_count: u8,
    /// Start of the long xattr prefix table (zero).
    pub xattr_prefix_start: U32,
    /// nid of the packed inode (zero).
    pub packed_nid: U64,
    /// Reserved for the xattr filter (zero).
    pub xattr_filter_reserved: u8,
    /// Reserved (zero).
    pub reserved2: [u8; 23],
}

/// A 32-byte compact inode (`struct erofs_inode_compact`); its mtime is the
/// superblock's build time.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct InodeCompact {
    /// Version bit and data layout.
    pub i_format: U16,
    /// Size of the xattr body: 0, or 12 + 4 * (icount - 1) bytes.
    pub i_xattr_icount: U16,
    /// File type and permissions.
    pub i_mode: U16,
    /// Link count.
    pub i_nlink: U16,
    /// File size.
    pub i_size: U32,
    /// mtime offset from build time in newer kernels; zero here.
    pub i_reserved: U32,
    /// raw_blkaddr, rdev, or chunk format (low 16 bits).
    pub i_u: U32,
    /// Inode number shown to userspace (stat's st_ino is derived from the nid).
    pub i_ino: U32,
    /// Owner.
    pub i_uid: U16,
    /// Group.
    pub i_gid: U16,
    /// Reserved.
    pub i_reserved2: U32,
}

/// A 64-byte extended inode (`struct erofs_inode_extended`).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct InodeExtended {
    /// Version bit and data layout.
    pub i_format: U16,
    /// Size of the xattr body: 0, or 12 + 4 * (icount - 1) bytes.
    pub i_xattr_icount: U16,
    /// File type and permissions.
    pub i_mode: U16,
    /// Reserved.
    pub i_reserved: U16,
    /// File size.
    pub i_size: U64,
    /// raw_blkaddr, rdev, or chunk format (low 16 bits).
    pub i_u: U32,
    /// Inode number.
    pub i_ino: U32,
    /// Owner.
    pub i_uid: U32,
    /// Group.
    pub i_gid: U32,
    /// Modification time, seconds.
    pub i_mtime: U64,
    /// Modification time, nanoseconds.
    pub i_mtime_nsec: U32,
    /// Link count.
    pub i_nlink: U32,
    /// Reserved.
    pub i_reserved2: [u8; 16],
}

/// Header of an inode's xattr body (`struct erofs_xattr_ibody_header`).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct XattrBodyHeader {
    /// Inverted bloom filter of the names present (bit set = name absent).
    pub h_name_filter: U32,
    /// Number of shared xattr ids (u32 each) that follow the header.
    pub h_shared_count: u8,
    /// Reserved.
    pub h_reserved2: [u8; 7],
}

/// One xattr entry, followed by the name suffix and the value, padded to 4
/// bytes (`struct erofs_xattr_entry`).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct XattrEntry {
    /// Length of the name suffix.
    pub e_name_len: u8,
    /// Prefix index (see [`xattr_index`]).
    pub e_name_index: u8,
    /// Length of the value.
    pub e_value_size: U16,
}

/// A directory entry (`struct erofs_dirent`). A directory block starts with
/// the dirents; the first one's `nameoff` is the number of dirents times 12.
/// Names follow, not NUL-terminated except where the block has room.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Dirent {
    /// Target inode.
    pub nid: U64,
    /// Offset of the name within the block.
    pub nameoff: U16,
    /// One of [`file_type`].
    pub file_type: u8,
    /// Reserved.
    pub reserved: u8,
}

/// An 8-byte chunk index entry, used when `i_u` has [`CHUNK_FORMAT_INDEXES`]
/// (`struct erofs_inode_chunk_index`). Without that flag a chunk-based inode
/// instead has a plain `__le32` block address per chunk.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ChunkIndex {
    /// High bits of the start block (newer kernels) or allocation advice; zero here.
    pub startblk_hi: U16,
    /// Extra device holding the chunk; 0 is the image itself.
    pub device_id: U16,
    /// Start block of the chunk, or [`NULL_ADDR`] for a hole.
    pub blkaddr: U32,
}

/// Size of a composefs header in bytes.
pub const COMPOSEFS_HEADER_SIZE: usize = size_of::<ComposefsHeader>();
/// Size of a superblock in bytes.
pub const SUPERBLOCK_SIZE: usize = size_of::<Superblock>();
/// Size of a compact inode.
pub const INODE_COMPACT_SIZE: usize = size_of::<InodeCompact>();
/// Size of an extended inode.
pub const INODE_EXTENDED_SIZE: usize = size_of::<InodeExtended>();
/// Size of the xattr body header.
pub const XATTR_BODY_HEADER_SIZE: usize = size_of::<XattrBodyHeader>();
/// Size of an xattr entry header.
pub const XATTR_ENTRY_SIZE: usize = size_of::<XattrEntry>();
/// Size of a dirent.
pub const DIRENT_SIZE: usize = size_of::<Dirent>();
/// Size of a chunk index entry.
pub const CHUNK_INDEX_SIZE: usize = size_of::<ChunkIndex>();

/// xxh32 as the kernel's `lib/xxhash.c` computes it; EROFS hashes xattr name
/// suffixes with it for the name filter.
pub fn xxh32(input: &[u8], seed: u32) -> u32 {
    const P1: u32 = 2_654_435_761;
    const P2: u32 = 2_246_822_519;
    const P3: u32 = 3_266_489_917;
    const P4: u32 = 668_265_263;
    const P5: u32 = 374_761_393;
    let round = |acc: u32, lane: u32| {
        acc.wrapping_add(lane.wrapping_mul(P2))
            .rotate_left(13)
            .wrapping_mul(P1)
    };
    let le32 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);

    let mut rest = input;
    let mut h = if input.len() >= 16 {
        let mut v = [
            seed.wrapping_add(P1).wrapping_add(P2),
            seed.wrapping_add(P2),
            seed,
            seed.wrapping_sub(P1),
        ];
        while rest.len() >= 16 {
            for (i, lane) in v.iter_mut().enumerate() {
                *lane = round(*lane, le32(&rest[i * 4..]));
            }
            rest = &rest[16..];
        }
        v[0].rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18))
    } else {
        seed.wrapping_add(P5)
    };
    h = h.wrapping_add(input.len() as u32);
    while rest.len() >= 4 {
        h = h
            .wrapping_add(le32(rest).wrapping_mul(P3))
            .rotate_left(17)
            .wrapping_mul(P4);
        rest = &rest[4..];
    }
    for &b in rest {
        h = h
            .wrapping_add(u32::from(b).wrapping_mul(P5))
            .rotate_left(11)
            .wrapping_mul(P1);
    }
    h ^= h >> 15;
    h = h.wrapping_mul(P2);
    h ^= h >> 13;
    h = h.wrapping_mul(P3);
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_match_erofs_fs_h() {
        assert_eq!(COMPOSEFS_HEADER_SIZE, 32);
        assert_eq!(SUPERBLOCK_SIZE, 128);
        assert_eq!(INODE_COMPACT_SIZE, 32);
        assert_eq!(INODE_EXTENDED_SIZE, 64);
        assert_eq!(XATTR_BODY_HEADER_SIZE, 12);
        assert_eq!(XATTR_ENTRY_SIZE, 4);
        assert_eq!(DIRENT_SIZE, 12);
        assert_eq!(CHUNK_INDEX_SIZE, 8);
    }

    #[test]
    fn xxh32_reference_values() {
        // Reference values of the xxHash32 specification.
        assert_eq!(xxh32(b"", 0), 0x02CC_5D05);
        assert_eq!(xxh32(b"a", 0), 0x550D_7456);
        assert_eq!(xxh32(b"abc", 0), 0x32D1_53FF);
        assert_eq!(
            xxh32(b"Nobody inspects the spammish repetition", 0),
            0xE229_3B2F
        );
    }
}
