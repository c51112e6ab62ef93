//! Image inodes as FUSE attributes, and the nid ↔ FUSE inode number mapping.
//!
//! FUSE inode numbers are EROFS nids: stable, unique, and free to compute in
//! both directions, so the server keeps no inode table. The only exception is
//! the root, which FUSE calls 1 (`FUSE_ROOT_ID`). In a composefs image nids 0
//! and 1 lie inside the composefs header (inodes start after the superblock),
//! so no real inode collides with those two; an entry naming nid 0 or 1 other
//! than the root is corrupt.

use cfs_format::reader::{Inode, Nid};
use cfs_format::FileType as CfsType;
use fuser::{FileAttr, FileType, INodeNo};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Maps between nids and FUSE inode numbers.
#[derive(Debug, Clone, Copy)]
pub struct InoMap {
    root: Nid,
}

impl InoMap {
    /// The mapping for an image whose root directory is `root`.
    pub fn new(root: Nid) -> Self {
        InoMap { root }
    }

    /// The FUSE inode number of `nid`, `None` for a nid that can't be an
    /// inode number (0 or 1 when not the root).
    pub fn ino(&self, nid: Nid) -> Option<INodeNo> {
        match nid.0 {
            _ if nid == self.root => Some(INodeNo::ROOT),
            0 | 1 => None,
            n => Some(INodeNo(n)),
        }
    }

    /// The nid FUSE inode number `ino` stands for.
    pub fn nid(&self, ino: INodeNo) -> Nid {
        if ino == INodeNo::ROOT {
            self.root
        } else {
            Nid(ino.0)
        }
    }
}

/// The FUSE file type of an inode's mode, `None` if it has none.
pub fn kind(mode: u32) -> Option<FileType> {
    Some(match CfsType::from_mode(mode)? {
        CfsType::Regular => FileType::RegularFile,
        CfsType::Directory => FileType::Directory,
        CfsType::Symlink => FileType::Symlink,
        CfsType::CharDevice => FileType::CharDevice,
        CfsType::BlockDevice => FileType::BlockDevice,
        CfsType::Fifo => FileType::NamedPipe,
        CfsType::Socket => FileType::Socket,
    })
}

/// The attributes FUSE reports for `inode` as inode number `ino`: the image's
/// mode, owner, link count, size, rdev and mtime (also used as atime and
/// ctime, as the kernel's erofs does). `None` when the mode has no file type.
pub fn file_attr(ino: INodeNo, inode: &Inode) -> Option<FileAttr> {
    let mtime = inode.mtime();
    let time = if mtime.sec >= 0 {
        UNIX_EPOCH + Duration::new(mtime.sec as u64, mtime.nsec.min(999_999_999))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::new(mtime.sec.unsigned_abs(), 0))
            .and_then(|t| t.checked_add(Duration::from_nanos(mtime.nsec.min(999_999_999).into())))
            .unwrap_or(UNIX_EPOCH)
    };
    Some(FileAttr {
        ino,
        size: inode.size(),
        blocks: inode.size().div_ceil(512),
        atime: time,
        mtime: time,
        ctime: time,
        crtime: time,
        kind: kind(inode.mode())?,
        perm: (inode.mode() & 0o7777) as u16,
        nlink: inode.nlink(),
        uid: inode.uid(),
        gid: inode.gid(),
        rdev: inode.rdev() as u32,
        blksize: 4096,
        flags: 0,
    })
}

/// Attributes for a negative entry (inode number 0): only the number matters.
pub fn negative_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ino_mapping() {
        let m = InoMap::new(Nid(36));
        assert_eq!(m.ino(Nid(36)), Some(INodeNo::ROOT));
        assert_eq!(m.nid(INodeNo::ROOT), Nid(36));
        assert_eq!(m.ino(Nid(40)), Some(INodeNo(40)));
        assert_eq!(m.nid(INodeNo(40)), Nid(40));
        assert_eq!(m.ino(Nid(0)), None);
        assert_eq!(m.ino(Nid(1)), None);
        // A root at nid 0 or 1 is still the root.
        assert_eq!(InoMap::new(Nid(0)).ino(Nid(0)), Some(INodeNo::ROOT));
    }

    #[test]
    fn kinds() {
        assert_eq!(kind(0o100644), Some(FileType::RegularFile));
        assert_eq!(kind(0o040755), Some(FileType::Directory));
        assert_eq!(kind(0o120777), Some(FileType::Symlink));
        assert_eq!(kind(0o020644), Some(FileType::CharDevice));
        assert_eq!(kind(0o000644), None);
    }
}
