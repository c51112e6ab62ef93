//! Second pass of the writer: decide where every inode, xattr and data block
//! goes, exactly as C `mkcomposefs` does.
//!
//! - Inodes follow the superblock at byte 1152, each on a 32-byte slot. An
//!   inode is compact (32 bytes) when its mtime equals the build time and its
//!   nlink, uid, gid fit 16 bits and its size 32 bits; else extended (64).
//! - Its xattr body follows: a 12-byte header, 4-byte ids of shared xattrs,
//!   then inline entries. An xattr (name and value) used by two or more
//!   inodes is shared (at most 128 per inode), stored once after the inodes.
//! - Then its tail: the last partial directory block, a symlink target, the
//!   tail of an inline file, or the chunk index of an external file. A tail
//!   never crosses a block boundary: padding before the inode moves it, and a
//!   tail that can't fit becomes a whole data block instead. Directory and
//!   file tails over half a block are never inlined.
//! - Data blocks (directory blocks, inline-file blocks, long symlinks, chunk
//!   indexes too big to inline) follow the shared xattrs, in inode order.

use super::prepare::{chunk_count, Entry, Prepared};
use super::WriteError;
use crate::erofs::{self, BLOCK_SIZE, SLOT_SIZE};
use crate::tree::{FileType, Xattr};
use std::collections::HashMap;

/// Where one inode goes.
#[derive(Debug, Clone, Default)]
pub(super) struct InodeLayout {
    pub compact: bool,
    /// Zero bytes written before the inode.
    pub pad: u64,
    pub nid: u64,
    pub n_blocks: u64,
    pub tail_size: u64,
    pub xattr_size: u64,
    /// For each xattr (in sorted order): its byte offset among the shared xattrs, or None if inline.
    pub shared: Vec<Option<u64>>,
}

/// Where everything goes.
#[derive(Debug)]
pub(super) struct Layout {
    pub inodes: Vec<InodeLayout>,
    pub inodes_end: u64,
    /// Shared xattrs in the order they are stored.
    pub shared_xattrs: Vec<Xattr>,
    pub shared_xattr_size: u64,
    pub n_data_blocks: u64,
}

/// Size of an inline xattr entry: header, name suffix, value, padded to 4.
pub(super) fn xattr_entry_size(x: &Xattr) -> u64 {
    let (_, suffix) = xattr_index(&x.name);
    (erofs::XATTR_ENTRY_SIZE + suffix.len() + x.value.len()).next_multiple_of(4) as u64
}

/// The name index and remaining suffix of a full xattr name.
pub(super) fn xattr_index(name: &[u8]) -> (u8, &[u8]) {
    for (prefix, index) in erofs::XATTR_PREFIXES {
        if let Some(rest) = name.strip_prefix(prefix) {
            return (index, rest);
        }
    }
    (0, name)
}

fn dir_size(entries: &[Entry]) -> (u64, u64) {
    let mut n_blocks = 0;
    let mut block = 0u64;
    for (name, _) in entries {
        let len = (erofs::DIRENT_SIZE + name.len()) as u64;
        if block + len > BLOCK_SIZE {
            n_blocks += 1;
            block = 0;
        }
        block += len;
    }
    // Never inline more than half a block.
    if block > BLOCK_SIZE / 2 {
        n_blocks += 1;
        block = 0;
    }
    (n_blocks, block)
}

/// Largest xattr body an inode can have: `i_xattr_icount` is 16 bits and
/// counts 4-byte words after the 12-byte header, plus one
/// (`erofs_xattr_ibody_size` in `erofs_fs.h`): 12 + 4 × 65534 bytes.
pub(super) const MAX_XATTR_BODY: u64 =
    erofs::XATTR_BODY_HEADER_SIZE as u64 + 4 * (u16::MAX as u64 - 1);

pub(super) fn layout(p: &Prepared) -> Result<Layout, WriteError> {
    // Count each (name, value) pair over all inodes.
    let mut counts: HashMap<&Xattr, u32> = HashMap::new();
    for ino in &p.inodes {
        for x in &ino.xattrs {
            *counts.entry(x).or_default() += 1;
        }
    }
    let mut shared: Vec<&Xattr> = counts
        .iter()
        .filter(|(_, &c)| c > 1)
        .map(|(x, _)| *x)
        .collect();
    // C's canonical order: descending by name, then by value length, then by value bytes.
    shared.sort_by(|a, b| {
        b.name
            .cmp(&a.name)
            .then(b.value.len().cmp(&a.value.len()))
            .then(b.value.cmp(&a.value))
    });
    let mut shared_offset: HashMap<&Xattr, u64> = HashMap::new();
    let mut off = 0;
    for x in &shared {
        shared_offset.insert(x, off);
        off += xattr_entry_size(x);
    }
    let shared_xattr_size = off;

    let mut pos = erofs::SUPER_OFFSET + erofs::SUPERBLOCK_SIZE as u64;
    let meta_start = pos - pos % BLOCK_SIZE;
    let mut n_data_blocks = 0;
    let mut inodes = Vec::with_capacity(p.inodes.len());
    for ino in &p.inodes {
        let mut l = InodeLayout::default();
        (l.n_blocks, l.tail_size) = match ino.file_type {
            FileType::Directory => dir_size(&ino.entries),
            FileType::Symlink => (0, ino.symlink.as_ref().map_or(0, |s| s.len() as u64)),
            FileType::Regular if ino.stat.size > 0 => match &ino.content {
                Some(_) => {
                    let size = ino.stat.size;
                    if size % BLOCK_SIZE > BLOCK_SIZE / 2 {
                        (size / BLOCK_SIZE + 1, 0)
                    } else {
                        (size / BLOCK_SIZE, size % BLOCK_SIZE)
                    }
                }
                None => (0, chunk_count(ino.stat.size) * 4),
            },
            _ => (0, 0),
        };
        let size = if ino.file_type == FileType::Directory {
            l.n_blocks * BLOCK_SIZE + l.tail_size
        } else {
            ino.stat.size
        };
        l.compact = ino.stat.mtime == p.build_time
            && ino.stat.nlink <= u32::from(u16::MAX)
            && ino.stat.uid <= u32::from(u16::MAX)
            && ino.stat.gid <= u32::from(u16::MAX)
            && size <= u64::from(u32::MAX);
        let inode_size = if l.compact {
            erofs::INODE_COMPACT_SIZE
        } else {
            erofs::INODE_EXTENDED_SIZE
        } as u64;

        let mut n_shared = 0u64;
        let mut unshared_size = 0;
        for x in &ino.xattrs {
            match shared_offset.get(x) {
                Some(&o) if n_shared < u64::from(erofs::XATTR_LONG_PREFIX) => {
                    n_shared += 1;
                    l.shared.push(Some(o));
                }
                _ => {
                    unshared_size += xattr_entry_size(x);
                    l.shared.push(None);
                }
            }
        }
        l.xattr_size = if ino.xattrs.is_empty() {
            0
        } else {
            (erofs::XATTR_BODY_HEADER_SIZE as u64 + n_shared * 4 + unshared_size)
                .next_multiple_of(4)
        };
        // C writes the count truncated to 16 bits: an image the kernel refuses.
        if l.xattr_size > MAX_XATTR_BODY {
            return Err(WriteError::Invalid {
                path: p.path_of(inodes.len()),
                reason: format!(
                    "xattrs take {} bytes, more than an inode holds ({MAX_XATTR_BODY})",
                    l.xattr_size
                ),
            });
        }

        let aligned = pos.next_multiple_of(SLOT_SIZE);
        l.pad = aligned - pos;
        pos = aligned;
        let extra = tail_padding(ino.file_type, &mut l, pos, inode_size);
        l.pad += extra;
        pos += extra;

        n_data_blocks += l.n_blocks;
        l.nid = (pos - meta_start) / SLOT_SIZE;
        pos += inode_size + l.xattr_size + l.tail_size;
        inodes.push(l);
    }
    Ok(Layout {
        inodes,
        inodes_end: pos.next_multiple_of(SLOT_SIZE),
        shared_xattrs: shared.into_iter().cloned().collect(),
        shared_xattr_size,
        n_data_blocks,
    })
}

/// Padding in front of an inode at `pos` so that its tail stays in one block;
/// may instead move the tail to a data block (C `compute_erofs_inode_padding_for_tail`).
fn tail_padding(ft: FileType, l: &mut InodeLayout, pos: u64, inode_size: u64) -> u64 {
    let non_tail = inode_size + l.xattr_size;
    let total = non_tail + l.tail_size;
    if ft == FileType::Symlink {
        // The inode and its target share a block, unless together they overflow one.
        if total / BLOCK_SIZE > 0 {
            l.n_blocks += 1;
            l.tail_size = 0;
        }
        if pos / BLOCK_SIZE != (pos + total - 1) / BLOCK_SIZE {
            return pos.next_multiple_of(BLOCK_SIZE) - pos;
        }
        return 0;
    }
    let remainder = BLOCK_SIZE - (pos + non_tail) % BLOCK_SIZE;
    if remainder < l.tail_size {
        let extra = remainder.next_multiple_of(SLOT_SIZE);
        let remainder = BLOCK_SIZE - (pos + non_tail + extra) % BLOCK_SIZE;
        if l.tail_size <= remainder {
            return extra;
        }
        l.n_blocks += 1;
        l.tail_size = 0;
        return pos.next_multiple_of(BLOCK_SIZE) - pos;
    }
    0
}
