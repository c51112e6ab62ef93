//! Directories: iterating entries (resumably, for FUSE `readdir`) and
//! finding one by name with the kernel's binary search (`namei.c`).
//!
//! A directory's data is cut into 4096-byte blocks (the last one shorter, and
//! inline after the inode for `FLAT_INLINE`). Each block starts with an array
//! of 12-byte `erofs_dirent`s; the first one's `nameoff` is the size of that
//! array. Names follow, packed and not NUL-terminated: an entry's name runs to
//! the next entry's `nameoff`, and the last one to the first NUL or the end of
//! the block. Names are sorted by bytes, across blocks too, which is what lets
//! `lookup` bisect first over blocks (by their first name), then within one.
//!
//! Nothing is skipped here: `.` and `..` are entries like any other (see
//! [`DirEntryRef::is_dot_or_dotdot`]).
//!
//! A readdir position (FUSE's offset cookie) is the byte offset of an entry's
//! dirent in the directory data: `block * 4096 + index * 12`.

use super::{corrupt, Image, ImageSource, Inode, Nid, ReadError};
use crate::erofs::{Dirent, BLOCK_SIZE, DIRENT_SIZE};
use crate::tree::{FileType, MAX_NAME_LEN};
use std::cmp::Ordering;
use zerocopy::FromBytes;

const DIRENT: u64 = DIRENT_SIZE as u64;

/// One directory entry, its name borrowed from the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirEntryRef<'a> {
    /// The inode it names.
    pub nid: Nid,
    /// The name: 1 to 255 bytes.
    pub name: &'a [u8],
    /// The dirent's `file_type` (one of [`crate::erofs::file_type`]), as stored.
    pub file_type: u8,
    /// Position of this entry, to pass to [`Image::readdir`] to start at it.
    pub offset: u64,
    /// Position right after this entry: the cookie to resume reading from.
    pub next_offset: u64,
}

impl DirEntryRef<'_> {
    /// True for the `.` and `..` entries, which most callers skip.
    pub fn is_dot_or_dotdot(&self) -> bool {
        self.name == b"." || self.name == b".."
    }

    /// The file type the dirent claims (the inode's mode is authoritative).
    pub fn file_type(&self) -> Option<FileType> {
        use crate::erofs::file_type as ft;
        Some(match self.file_type {
            ft::REG_FILE => FileType::Regular,
            ft::DIR => FileType::Directory,
            ft::CHRDEV => FileType::CharDevice,
            ft::BLKDEV => FileType::BlockDevice,
            ft::FIFO => FileType::Fifo,
            ft::SOCK => FileType::Socket,
            ft::SYMLINK => FileType::Symlink,
            _ => return None,
        })
    }
}

/// One directory block, its dirent array checked.
#[derive(Clone, Copy)]
struct DirBlock<'a> {
    nid: Nid,
    index: u64,
    data: &'a [u8],
    count: usize,
}

impl<'a> DirBlock<'a> {
    fn parse(nid: Nid, index: u64, data: &'a [u8]) -> Result<Self, ReadError> {
        let first = Self::dirent_in(nid, index, data, 0)?;
        let names_at = usize::from(first.nameoff.get());
        if names_at < DIRENT_SIZE || names_at % DIRENT_SIZE != 0 || names_at >= data.len() {
            return Err(corrupt(
                Some(nid),
                format!(
                    "directory block {index}: first dirent nameoff {names_at} (block is {} bytes)",
                    data.len()
                ),
            ));
        }
        Ok(DirBlock {
            nid,
            index,
            data,
            count: names_at / DIRENT_SIZE,
        })
    }

    fn dirent_in(nid: Nid, index: u64, data: &[u8], i: usize) -> Result<Dirent, ReadError> {
        data.get(i * DIRENT_SIZE..(i + 1) * DIRENT_SIZE)
            .and_then(|b| Dirent::read_from_bytes(b).ok())
            .ok_or_else(|| {
                corrupt(
                    Some(nid),
                    format!("directory block {index}: dirent {i} is past the block end"),
                )
            })
    }

    /// Entry `i` (< count): its dirent and name.
    fn entry(&self, i: usize) -> Result<(Dirent, &'a [u8]), ReadError> {
        let de = Self::dirent_in(self.nid, self.index, self.data, i)?;
        let start = usize::from(de.nameoff.get());
        let bad = |what: String| {
            corrupt(
                Some(self.nid),
                format!("directory block {} dirent {i}: {what}", self.index),
            )
        };
        if start < self.count * DIRENT_SIZE || start > self.data.len() {
            return Err(bad(format!("nameoff {start} is outside the name area")));
        }
        let end = if i + 1 < self.count {
            usize::from(
                Self::dirent_in(self.nid, self.index, self.data, i + 1)?
                    .nameoff
                    .get(),
            )
        } else {
            let rest = &self.data[start..];
            start + rest.iter().position(|&b| b == 0).unwrap_or(rest.len())
        };
        if end < start || end > self.data.len() {
            return Err(bad(format!("name runs from {start} to {end}")));
        }
        let name = &self.data[start..end];
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(bad(format!("name length {}", name.len())));
        }
        Ok((de, name))
    }

    fn entry_ref(&self, i: usize) -> Result<DirEntryRef<'a>, ReadError> {
        let (de, name) = self.entry(i)?;
        let offset = self.index.saturating_mul(BLOCK_SIZE) + i as u64 * DIRENT;
        let next_offset = if i + 1 < self.count {
            offset + DIRENT
        } else {
            (self.index + 1).saturating_mul(BLOCK_SIZE)
        };
        Ok(DirEntryRef {
            nid: Nid(de.nid.get()),
            name,
            file_type: de.file_type,
            offset,
            next_offset,
        })
    }
}

/// Iterator over a directory's entries from some position, made by
/// [`Image::readdir`]. Yields each entry once; after an error, yields nothing more.
pub struct ReadDir<'a, T: ImageSource> {
    image: &'a Image<T>,
    inode: Inode,
    blocks: u64,
    block: u64,
    entry: usize,
    current: Option<DirBlock<'a>>,
    done: bool,
}

impl<'a, T: ImageSource> Iterator for ReadDir<'a, T> {
    type Item = Result<DirEntryRef<'a>, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let block = match self.current {
                Some(b) => b,
                None if self.block >= self.blocks => break,
                None => match self.image.dir_block(&self.inode, self.block) {
                    Ok(b) => *self.current.insert(b),
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                },
            };
            if self.entry >= block.count {
                self.block += 1;
                self.entry = 0;
                self.current = None;
                continue;
            }
            let item = block.entry_ref(self.entry);
            self.entry += 1;
            self.done = item.is_err();
            return Some(item);
        }
        self.done = true;
        None
    }
}

impl<T: ImageSource> Image<T> {
    /// The entries of directory `nid`, starting at position `offset` (0 for the
    /// start, or an entry's [`DirEntryRef::next_offset`] to resume after it).
    /// An offset between entries starts at the next one.
    pub fn readdir(&self, nid: Nid, offset: u64) -> Result<ReadDir<'_, T>, ReadError> {
        let inode = self.inode(nid)?;
        self.readdir_inode(&inode, offset)
    }

    /// [`Image::readdir`] for an inode already looked up.
    pub fn readdir_inode(&self, inode: &Inode, offset: u64) -> Result<ReadDir<'_, T>, ReadError> {
        if !inode.is_dir() {
            return Err(ReadError::NotADirectory { nid: inode.nid().0 });
        }
        let in_block = offset % BLOCK_SIZE;
        Ok(ReadDir {
            image: self,
            inode: *inode,
            blocks: inode.size().div_ceil(BLOCK_SIZE),
            block: offset / BLOCK_SIZE,
            entry: in_block.div_ceil(DIRENT) as usize,
            current: None,
            done: false,
        })
    }

    /// Finds `name` in directory `dir` by binary search, first over blocks by
    /// their first name, then within the block (kernel `erofs_namei`).
    /// `None` when absent. Entries must be sorted, as every writer sorts them;
    /// on a corrupt image that is not, the answer may be wrong but never a panic.
    pub fn lookup(&self, dir: Nid, name: &[u8]) -> Result<Option<DirEntryRef<'_>>, ReadError> {
        let inode = self.inode(dir)?;
        self.lookup_inode(&inode, name)
    }

    /// [`Image::lookup`] for an inode already looked up.
    pub fn lookup_inode(
        &self,
        dir: &Inode,
        name: &[u8],
    ) -> Result<Option<DirEntryRef<'_>>, ReadError> {
        if !dir.is_dir() {
            return Err(ReadError::NotADirectory { nid: dir.nid().0 });
        }
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Ok(None);
        }
        // The last block whose first name is <= name holds it, if anything does.
        let (mut lo, mut hi) = (0, dir.size().div_ceil(BLOCK_SIZE));
        let mut candidate = None;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let block = self.dir_block(dir, mid)?;
            match name.cmp(block.entry(0)?.1) {
                Ordering::Less => hi = mid,
                Ordering::Equal => return block.entry_ref(0).map(Some),
                Ordering::Greater => {
                    candidate = Some(block);
                    lo = mid + 1;
                }
            }
        }
        let Some(block) = candidate else {
            return Ok(None);
        };
        let (mut lo, mut hi) = (1, block.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match name.cmp(block.entry(mid)?.1) {
                Ordering::Less => hi = mid,
                Ordering::Equal => return block.entry_ref(mid).map(Some),
                Ordering::Greater => lo = mid + 1,
            }
        }
        Ok(None)
    }

    /// Block `index` of directory `dir`, its dirent array checked.
    fn dir_block(&self, dir: &Inode, index: u64) -> Result<DirBlock<'_>, ReadError> {
        let start = index
            .checked_mul(BLOCK_SIZE)
            .filter(|&s| s < dir.size())
            .ok_or_else(|| {
                corrupt(
                    Some(dir.nid()),
                    format!("directory block {index} is past i_size"),
                )
            })?;
        let len = (dir.size() - start).min(BLOCK_SIZE) as usize;
        let data = self.extent(dir, start, len as u64)?;
        let data = data.get(..len).ok_or_else(|| {
            corrupt(
                Some(dir.nid()),
                format!("directory block {index} is not contiguous"),
            )
        })?;
        DirBlock::parse(dir.nid(), index, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory block: dirents for `names` (nameoffs given explicitly when
    /// `offs` is `Some`), the names, then zero padding to `len`.
    fn block(names: &[&[u8]], offs: Option<&[u16]>, len: usize) -> Vec<u8> {
        let mut b = Vec::new();
        let mut off = (names.len() * DIRENT_SIZE) as u16;
        for (i, n) in names.iter().enumerate() {
            b.extend_from_slice(&(100 + i as u64).to_le_bytes());
            let o = offs.map_or(off, |o| o[i]);
            b.extend_from_slice(&o.to_le_bytes());
            b.extend_from_slice(&[crate::erofs::file_type::REG_FILE, 0]);
            off += n.len() as u16;
        }
        for n in names {
            b.extend_from_slice(n);
        }
        b.resize(len.max(b.len()), 0);
        b
    }

    fn names(data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let b = DirBlock::parse(Nid(7), 0, data).map_err(|e| e.to_string())?;
        (0..b.count)
            .map(|i| {
                b.entry(i)
                    .map(|(_, n)| n.to_vec())
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    #[test]
    fn dirent_blocks() {
        let long = [b'n'; 256];
        type Case<'a> = (&'a str, Vec<u8>, Result<&'a [&'a [u8]], &'a str>);
        let cases: &[Case<'_>] = &[
            (
                "padded",
                block(&[b".", b"..", b"abc"], None, 4096),
                Ok(&[b".", b"..", b"abc"]),
            ),
            (
                "exact fit",
                block(&[b".", b"xyz"], None, 0),
                Ok(&[b".", b"xyz"]),
            ),
            (
                "tail short",
                block(&[b"a", b"bc"], None, 30),
                Ok(&[b"a", b"bc"]),
            ),
            (
                "nameoff 0",
                block(&[b"a"], Some(&[0]), 64),
                Err("first dirent nameoff 0"),
            ),
            (
                "nameoff 13",
                block(&[b"a"], Some(&[13]), 64),
                Err("first dirent nameoff 13"),
            ),
            (
                "nameoff past end",
                block(&[b"a"], Some(&[24]), 24),
                Err("first dirent nameoff 24"),
            ),
            (
                "names go back",
                block(&[b"ab", b"c"], Some(&[24, 20]), 64),
                Err("name runs from 24 to 20"),
            ),
            (
                "names cross",
                block(&[b"ab", b"c", b"d"], Some(&[36, 39, 38]), 64),
                Err("name runs"),
            ),
            (
                "empty name",
                block(&[b"a", b"b"], Some(&[24, 24]), 64),
                Err("name length 0"),
            ),
            (
                "empty last",
                block(&[b"a", b""], None, 64),
                Err("name length 0"),
            ),
            (
                "too long",
                block(&[&long[..]], None, 4096),
                Err("name length 256"),
            ),
            ("block too short", vec![0; 6], Err("past the block end")),
        ];
        for (what, data, expect) in cases {
            let got = names(data);
            match expect {
                Ok(want) => assert_eq!(
                    got.as_deref(),
                    Ok(&want.iter().map(|n| n.to_vec()).collect::<Vec<_>>()[..]),
                    "{what}"
                ),
                Err(msg) => {
                    let err = got.expect_err(what);
                    assert!(
                        err.contains(msg) && err.contains("inode 7"),
                        "{what}: {err}"
                    );
                }
            }
        }
    }
}
