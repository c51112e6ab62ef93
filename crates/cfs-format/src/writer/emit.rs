//! Last pass of the writer: the bytes, in the order and positions [`layout`](super::layout) decided.

use super::layout::{xattr_index, Layout};
use super::prepare::{chunk_bits, chunk_count, Inode, Prepared, MAX_NONINLINE_CHUNKS};
use crate::erofs::{
    self, file_type, ComposefsHeader, DataLayout, Dirent, InodeCompact, InodeExtended, Superblock,
    XattrBodyHeader, XattrEntry, BLOCK_SIZE,
};
use crate::tree::{FileType, Xattr};
use zerocopy::IntoBytes;

struct Out {
    buf: Vec<u8>,
}

impl Out {
    fn put(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }
    fn pad(&mut self, n: u64) {
        self.buf.resize(self.buf.len() + n as usize, 0);
    }
    fn align(&mut self, to: u64) {
        let len = self.buf.len() as u64;
        self.pad(len.next_multiple_of(to) - len);
    }
    fn pos(&self) -> u64 {
        self.buf.len() as u64
    }
}

fn dirent_type(ft: FileType) -> u8 {
    match ft {
        FileType::Regular => file_type::REG_FILE,
        FileType::Directory => file_type::DIR,
        FileType::Symlink => file_type::SYMLINK,
        FileType::BlockDevice => file_type::BLKDEV,
        FileType::CharDevice => file_type::CHRDEV,
        FileType::Fifo => file_type::FIFO,
        FileType::Socket => file_type::SOCK,
    }
}

fn put_xattr(out: &mut Out, x: &Xattr) {
    let (index, suffix) = xattr_index(&x.name);
    let e = XattrEntry {
        e_name_len: suffix.len() as u8,
        e_name_index: index,
        e_value_size: (x.value.len() as u16).into(),
    };
    out.put(e.as_bytes());
    out.put(suffix);
    out.put(&x.value);
    out.align(4);
}

/// The xattr name bloom filter: bit set = no name hashes there.
fn name_filter(xattrs: &[Xattr]) -> u32 {
    let mut bits = 0u32;
    for x in xattrs {
        let (index, suffix) = xattr_index(&x.name);
        let bit = erofs::xxh32(suffix, erofs::XATTR_FILTER_SEED.wrapping_add(u32::from(index)))
            & (erofs::XATTR_FILTER_BITS - 1);
        bits |= 1 << bit;
    }
    erofs::XATTR_FILTER_DEFAULT & !bits
}

/// Writes directory entries `entries` as one chunk (a block or the tail).
fn put_dirents(out: &mut Out, p: &Prepared, l: &Layout, entries: &[(Vec<u8>, usize)], align: u64) {
    let mut nameoff = (entries.len() * erofs::DIRENT_SIZE) as u16;
    for (name, target) in entries {
        let d = Dirent {
            nid: l.inodes[*target].nid.into(),
            nameoff: nameoff.into(),
            file_type: dirent_type(p.inodes[*target].file_type),
            reserved: 0,
        };
        nameoff = nameoff.wrapping_add(name.len() as u16);
        out.put(d.as_bytes());
    }
    for (name, _) in entries {
        out.put(name);
    }
    out.align(align);
}

/// Splits a directory's entries into full blocks and the tail, as laid out.
fn dir_chunks(entries: &[(Vec<u8>, usize)], n_blocks: u64) -> (Vec<&[(Vec<u8>, usize)]>, &[(Vec<u8>, usize)]) {
    let mut blocks = Vec::new();
    let mut first = 0;
    let mut block = 0u64;
    for (i, (name, _)) in entries.iter().enumerate() {
        let len = (erofs::DIRENT_SIZE + name.len()) as u64;
        if block + len > BLOCK_SIZE {
            blocks.push(&entries[first..i]);
            first = i;
            block = 0;
        }
        block += len;
    }
    if (blocks.len() as u64) < n_blocks {
        blocks.push(&entries[first..]);
        first = entries.len();
    }
    (blocks, &entries[first..])
}

pub(super) fn emit(p: &Prepared, l: &Layout) -> Vec<u8> {
    let data_start = (l.inodes_end + l.shared_xattr_size).next_multiple_of(BLOCK_SIZE);
    let total = data_start + l.n_data_blocks * BLOCK_SIZE;
    let mut out = Out {
        buf: Vec::with_capacity(total as usize),
    };

    let header = ComposefsHeader {
        magic: erofs::COMPOSEFS_MAGIC.into(),
        version: erofs::COMPOSEFS_HEADER_VERSION.into(),
        flags: if p.has_acl { erofs::COMPOSEFS_FLAG_HAS_ACL } else { 0 }.into(),
        composefs_version: p.version.into(),
        unused: Default::default(),
    };
    out.put(header.as_bytes());
    out.pad(erofs::SUPER_OFFSET - erofs::COMPOSEFS_HEADER_SIZE as u64);

    let sb = Superblock {
        magic: erofs::SUPER_MAGIC.into(),
        feature_compat: (erofs::FEATURE_COMPAT_MTIME | erofs::FEATURE_COMPAT_XATTR_FILTER).into(),
        blkszbits: erofs::BLOCK_BITS as u8,
        root_nid: (l.inodes[0].nid as u16).into(),
        inos: (p.inodes.len() as u64).into(),
        build_time: (p.build_time.sec as u64).into(),
        build_time_nsec: p.build_time.nsec.into(),
        blocks: ((data_start / BLOCK_SIZE + l.n_data_blocks) as u32).into(),
        meta_blkaddr: (((erofs::SUPER_OFFSET + erofs::SUPERBLOCK_SIZE as u64) / BLOCK_SIZE) as u32).into(),
        xattr_blkaddr: ((l.inodes_end / BLOCK_SIZE) as u32).into(),
        ..Superblock::default()
    };
    out.put(sb.as_bytes());

    let mut next_block = data_start / BLOCK_SIZE;
    for (i, (ino, il)) in p.inodes.iter().zip(&l.inodes).enumerate() {
        out.pad(il.pad);
        debug_assert_eq!(out.pos() % erofs::SLOT_SIZE, 0);
        put_inode(&mut out, p, l, i, ino, &mut next_block);
    }
    out.align(erofs::SLOT_SIZE);
    debug_assert_eq!(out.pos(), l.inodes_end);

    for x in &l.shared_xattrs {
        put_xattr(&mut out, x);
    }
    out.align(BLOCK_SIZE);
    debug_assert_eq!(out.pos(), data_start);

    for (ino, il) in p.inodes.iter().zip(&l.inodes) {
        if il.n_blocks == 0 {
            continue;
        }
        match ino.file_type {
            FileType::Directory => {
                let (blocks, _) = dir_chunks(&ino.entries, il.n_blocks);
                for b in blocks {
                    put_dirents(&mut out, p, l, b, BLOCK_SIZE);
                }
            }
            FileType::Regular => match &ino.content {
                Some(c) => {
                    out.put(&c[..c.len().min(BLOCK_SIZE as usize)]);
                    out.align(BLOCK_SIZE);
                }
                None => {
                    for _ in 0..MAX_NONINLINE_CHUNKS {
                        out.put(&erofs::NULL_ADDR.to_le_bytes());
                    }
                }
            },
            FileType::Symlink => {
                out.put(ino.symlink.as_deref().unwrap_or_default());
                out.align(BLOCK_SIZE);
            }
            _ => {}
        }
    }
    debug_assert_eq!(out.pos(), total);
    out.buf
}

fn put_inode(out: &mut Out, p: &Prepared, l: &Layout, i: usize, ino: &Inode, next_block: &mut u64) {
    let il = &l.inodes[i];
    let n_shared = il.shared.iter().filter(|s| s.is_some()).count();
    let icount = if il.xattr_size == 0 {
        0
    } else {
        (il.xattr_size - erofs::XATTR_BODY_HEADER_SIZE as u64) / 4 + 1
    };
    let mut layout = if il.tail_size > 0 {
        DataLayout::FlatInline
    } else {
        DataLayout::FlatPlain
    };
    let mut chunk_format = None;
    let size = match ino.file_type {
        FileType::Directory => il.n_blocks * BLOCK_SIZE + il.tail_size,
        FileType::Regular => {
            if ino.stat.size > 0 && ino.content.is_none() {
                layout = DataLayout::ChunkBased;
                chunk_format = Some((chunk_bits(ino.stat.size) - erofs::BLOCK_BITS) as u32);
            }
            ino.stat.size
        }
        FileType::Symlink => ino.stat.size,
        _ => 0,
    };
    let mut i_u = 0u32;
    match ino.file_type {
        FileType::CharDevice | FileType::BlockDevice => i_u = ino.stat.rdev as u32,
        FileType::Directory | FileType::Regular | FileType::Symlink => {
            if il.n_blocks > 0 {
                i_u = *next_block as u32;
                *next_block += il.n_blocks;
            }
            // The chunk format shares the union with raw_blkaddr: its low 16 bits.
            if let Some(f) = chunk_format {
                i_u = (i_u & 0xFFFF_0000) | f;
            }
        }
        _ => {}
    }
    let format = layout.raw() << erofs::I_DATALAYOUT_BIT | u16::from(!il.compact) << erofs::I_VERSION_BIT;
    let st = &ino.stat;
    if il.compact {
        let c = InodeCompact {
            i_format: format.into(),
            i_xattr_icount: (icount as u16).into(),
            i_mode: (st.mode as u16).into(),
            i_nlink: (st.nlink as u16).into(),
            i_size: (size as u32).into(),
            i_u: i_u.into(),
            i_ino: (i as u32).into(),
            i_uid: (st.uid as u16).into(),
            i_gid: (st.gid as u16).into(),
            ..InodeCompact::default()
        };
        out.put(c.as_bytes());
    } else {
        let e = InodeExtended {
            i_format: format.into(),
            i_xattr_icount: (icount as u16).into(),
            i_mode: (st.mode as u16).into(),
            i_size: size.into(),
            i_u: i_u.into(),
            i_ino: (i as u32).into(),
            i_uid: st.uid.into(),
            i_gid: st.gid.into(),
            i_mtime: (st.mtime.sec as u64).into(),
            i_mtime_nsec: st.mtime.nsec.into(),
            i_nlink: st.nlink.into(),
            ..InodeExtended::default()
        };
        out.put(e.as_bytes());
    }

    if il.xattr_size > 0 {
        let start = out.pos();
        let h = XattrBodyHeader {
            h_name_filter: name_filter(&ino.xattrs).into(),
            h_shared_count: n_shared as u8,
            h_reserved2: [0; 7],
        };
        out.put(h.as_bytes());
        for off in il.shared.iter().flatten() {
            let id = ((l.inodes_end % BLOCK_SIZE + off) / 4) as u32;
            out.put(&id.to_le_bytes());
        }
        for (x, s) in ino.xattrs.iter().zip(&il.shared) {
            if s.is_none() {
                put_xattr(out, x);
            }
        }
        debug_assert_eq!(out.pos() - start, il.xattr_size);
    }

    match ino.file_type {
        FileType::Directory => {
            let (_, tail) = dir_chunks(&ino.entries, il.n_blocks);
            if il.tail_size > 0 {
                put_dirents(out, p, l, tail, 1);
            }
        }
        FileType::Symlink if il.n_blocks == 0 => out.put(ino.symlink.as_deref().unwrap_or_default()),
        FileType::Regular if il.tail_size > 0 => match &ino.content {
            Some(c) => out.put(&c[c.len() - il.tail_size as usize..]),
            None => {
                for _ in 0..chunk_count(ino.stat.size) {
                    out.put(&erofs::NULL_ADDR.to_le_bytes());
                }
            }
        },
        _ => {}
    }
}
