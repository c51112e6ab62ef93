//! Where the image bytes come from: an mmap when the file can't change under
//! us, otherwise one read into memory.
//!
//! Serving starts after the superblock is checked; nothing else of the image
//! is read up front. An mmap'd image is shared with every other server (and
//! the kernel's own mounts) of the same file through the page cache. An
//! image that is not known to be immutable is read into memory once instead,
//! because a file truncated or rewritten under a mapping would fault or
//! change the bytes the reader already checked. (A `pread` block cache would
//! avoid holding the whole image; not done yet.)

use std::fs::File;
use std::ops::Deref;
use std::path::Path;

/// The bytes of an image being served.
#[derive(Debug)]
pub enum ImageBytes {
    /// A read-only shared mapping of an immutable file.
    Mapped(memmap2::Mmap),
    /// The whole file, read once.
    Owned(Vec<u8>),
}

impl Deref for ImageBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ImageBytes::Mapped(m) => m,
            ImageBytes::Owned(v) => v,
        }
    }
}

/// Why an image file is known not to change while mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Immutable {
    /// The file has fs-verity enabled: the kernel refuses every write to it.
    Verity,
    /// The file is an object of a repository, which by contract never rewrites
    /// or truncates an object in place (it only adds new ones and removes
    /// unreferenced ones by unlinking, which leaves a mapping intact).
    RepositoryObject,
}

impl ImageBytes {
    /// Opens `path` read-only: mapped when `immutable` says why that is safe
    /// or the file has fs-verity, read into memory otherwise.
    pub fn open(path: &Path, immutable: Option<Immutable>) -> std::io::Result<Self> {
        let file = File::open(path)?;
        let immutable = immutable.or_else(|| has_verity(&file).then_some(Immutable::Verity));
        match immutable {
            Some(why) => map(&file, why).map(ImageBytes::Mapped),
            None => {
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut &file, &mut v)?;
                Ok(ImageBytes::Owned(v))
            }
        }
    }

    /// True when the bytes are a mapping of the file.
    pub fn is_mapped(&self) -> bool {
        matches!(self, ImageBytes::Mapped(_))
    }
}

/// True when the file has fs-verity enabled (`STATX_ATTR_VERITY`).
fn has_verity(file: &File) -> bool {
    use rustix::fs::{statx, AtFlags, StatxAttributes, StatxFlags};
    statx(file, "", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS)
        .map(|s| s.stx_attributes.contains(StatxAttributes::VERITY))
        .unwrap_or(false)
}

/// Maps `file` read-only and shared.
#[allow(unsafe_code)]
fn map(file: &File, why: Immutable) -> std::io::Result<memmap2::Mmap> {
    let _ = why;
    // SAFETY: memmap2's contract is that the mapped file is not modified or
    // truncated while mapped, since the reader hands out `&[u8]` into it.
    // `why` proves that: with fs-verity the kernel refuses to open the file
    // for writing and to truncate it, for as long as it exists; a repository
    // object is never written after it is renamed into place, and removal is
    // an unlink, which keeps the mapped inode alive and unchanged. The mapping
    // is read-only (PROT_READ) and private to this process's address space.
    unsafe { memmap2::MmapOptions::new().map(file) }
}
