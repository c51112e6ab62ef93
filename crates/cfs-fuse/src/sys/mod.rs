//! The crate's only `unsafe`: mapping an image file into memory (here), the
//! `/dev/fuse` ioctls ([`fuse_dev`]) and the buffers a FUSE io_uring queue
//! shares with the kernel ([`ring`]). Each states its invariant at its top.
//!
//! ## Mapping
//!
//! **Invariant**: every mapping this module makes is of a file whose bytes
//! can't change and which can't shrink for as long as the mapping lives.
//! The reader hands out `&[u8]` borrowed from the mapping, so a write would
//! change bytes it already checked, and a truncation would turn the next
//! access into SIGBUS, which kills the server.
//!
//! [`map_immutable`] maps only where the kernel itself guarantees that
//! ([`Immutable`]): a file with fs-verity, or a memfd sealed against writes
//! and shrinking. [`map_unchecked`] leaves the guarantee to its caller, which
//! must state it in its own `SAFETY` comment (BurntSushi's `MmapChoice`
//! pattern); nothing in cfs calls it, since no other file's stability can be
//! proven: a repository's image can still be truncated by whoever owns the
//! repository. Everything else is read through the block cache
//! ([`crate::source::BlockCache`]), where a changed file costs EIO, not a
//! crash.

pub mod fuse_dev;
pub mod ring;

use rustix::fs::{fcntl_get_seals, statx, AtFlags, SealFlags, StatxAttributes, StatxFlags};
use std::fs::File;

/// Why the kernel guarantees a file's bytes can't change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Immutable {
    /// fs-verity is enabled on the file: the kernel refuses to open it for
    /// writing and to truncate it, for as long as it exists.
    Verity,
    /// A memfd sealed with `F_SEAL_WRITE | F_SEAL_SHRINK`: no `write`, no
    /// new writable mapping, no truncation, and seals can't be removed
    /// (memfd_create(2)).
    Sealed,
}

/// What the kernel guarantees about `file`, asked of the file itself (never
/// taken from a caller's say-so).
pub fn immutable(file: &File) -> Option<Immutable> {
    let verity = statx(file, "", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS)
        .is_ok_and(|s| s.stx_attributes.contains(StatxAttributes::VERITY));
    if verity {
        return Some(Immutable::Verity);
    }
    // EINVAL for anything but a memfd (or another sealable shmem file).
    let sealed =
        fcntl_get_seals(file).is_ok_and(|s| s.contains(SealFlags::WRITE | SealFlags::SHRINK));
    sealed.then_some(Immutable::Sealed)
}

/// Maps `file` read-only when [`immutable`] says the kernel keeps it from
/// changing; `Ok(None)` when it doesn't.
#[allow(unsafe_code)]
pub fn map_immutable(file: &File) -> std::io::Result<Option<memmap2::Mmap>> {
    if immutable(file).is_none() {
        return Ok(None);
    }
    // SAFETY: immutable() just asked the kernel about this very open file
    // (not its path): with fs-verity the kernel refuses every write to it
    // and its truncation for as long as the file exists; a memfd with
    // F_SEAL_WRITE and F_SEAL_SHRINK refuses the same, and seals can never
    // be removed. So no byte of the mapping changes and no page disappears
    // while it lives, which is map_unchecked's contract. (An I/O error
    // re-reading an evicted page, or a verity block tampered below the file
    // system, still raises SIGBUS: the disk, not another user, fails then.)
    unsafe { map_unchecked(file) }.map(Some)
}

/// Maps `file` read-only and shared, without asking why that is safe.
///
/// # Safety
/// For as long as the returned mapping (or anything borrowed from it)
/// lives, no process may write to the file or truncate it: the reader keeps
/// `&[u8]` into the mapping, which must not change under it (Rust's aliasing
/// rules), and an access past a truncated end raises SIGBUS. Unlinking or
/// renaming the file is fine: the mapping keeps the inode.
#[allow(unsafe_code)]
pub unsafe fn map_unchecked(file: &File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: passed on to our caller, whose contract is memmap2's: the
    // file is not modified or truncated while mapped. The mapping is
    // PROT_READ and MAP_SHARED, so this process can't write through it.
    unsafe { memmap2::MmapOptions::new().map(file) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::{fcntl_add_seals, memfd_create, MemfdFlags};
    use std::io::Write;

    #[test]
    fn only_what_the_kernel_freezes_is_mapped() {
        let mut plain = tempfile::tempfile().unwrap();
        plain.write_all(b"plain").unwrap();
        assert_eq!(immutable(&plain), None);
        assert!(map_immutable(&plain).unwrap().is_none());

        let fd = memfd_create("t", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
        let mut memfd = File::from(fd);
        memfd.write_all(b"sealed bytes").unwrap();
        assert_eq!(immutable(&memfd), None, "unsealed memfd");
        fcntl_add_seals(&memfd, SealFlags::SHRINK).unwrap();
        assert_eq!(immutable(&memfd), None, "shrink seal alone");
        fcntl_add_seals(&memfd, SealFlags::WRITE | SealFlags::GROW | SealFlags::SEAL).unwrap();
        assert_eq!(immutable(&memfd), Some(Immutable::Sealed));
        let m = map_immutable(&memfd).unwrap().unwrap();
        assert_eq!(&m[..], b"sealed bytes");
        assert!(memfd.write_all(b"x").is_err(), "the seal refuses writes");
        assert!(memfd.set_len(1).is_err(), "the seal refuses truncation");
    }
}
