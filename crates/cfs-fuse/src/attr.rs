//! Image inodes as FUSE attributes, and the nid ↔ FUSE inode number mapping.
//!
//! FUSE inode numbers are EROFS nids: stable, unique, and free to compute in
//! both directions, so the server keeps no inode table. The only exception is
//! the root, which FUSE calls 1 (`FUSE_ROOT_ID`). In a composefs image nids 0
//! and 1 lie inside the composefs header (inodes start after the superblock),
//! so no real inode collides with those two; an entry naming nid 0 or 1 other
//! than the root is corrupt.

use crate::abi::{Attr, ROOT_ID};
use cfs_format::reader::{Inode, Nid};
use cfs_format::FileType as CfsType;

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
    pub fn ino(&self, nid: Nid) -> Option<u64> {
        match nid.0 {
            _ if nid == self.root => Some(ROOT_ID),
            0 | 1 => None,
            n => Some(n),
        }
    }

    /// The nid FUSE inode number `ino` stands for.
    pub fn nid(&self, ino: u64) -> Nid {
        if ino == ROOT_ID {
            self.root
        } else {
            Nid(ino)
        }
    }
}

/// The attributes FUSE reports for `inode` as inode number `ino`: the image's
/// mode, owner, link count, size, rdev and mtime (also used as atime and
/// ctime, as the kernel's erofs does). `None` when the mode has no file type.
pub fn file_attr(ino: u64, inode: &Inode) -> Option<Attr> {
    CfsType::from_mode(inode.mode())?;
    let mtime = inode.mtime();
    let (sec, nsec) = (mtime.sec, mtime.nsec.min(999_999_999));
    Some(Attr {
        ino: ino.into(),
        size: inode.size().into(),
        blocks: inode.size().div_ceil(512).into(),
        atime: sec.into(),
        mtime: sec.into(),
        ctime: sec.into(),
        atimensec: nsec.into(),
        mtimensec: nsec.into(),
        ctimensec: nsec.into(),
        mode: inode.mode().into(),
        nlink: inode.nlink().into(),
        uid: inode.uid().into(),
        gid: inode.gid().into(),
        rdev: (inode.rdev() as u32).into(),
        blksize: 4096.into(),
        flags: 0.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ino_mapping() {
        let m = InoMap::new(Nid(36));
        assert_eq!(m.ino(Nid(36)), Some(ROOT_ID));
        assert_eq!(m.nid(ROOT_ID), Nid(36));
        assert_eq!(m.ino(Nid(40)), Some(40));
        assert_eq!(m.nid(40), Nid(40));
        assert_eq!(m.ino(Nid(0)), None);
        assert_eq!(m.ino(Nid(1)), None);
        // A root at nid 0 or 1 is still the root.
        assert_eq!(InoMap::new(Nid(0)).ino(Nid(0)), Some(ROOT_ID));
    }
}
