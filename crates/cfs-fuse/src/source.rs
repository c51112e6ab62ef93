//! Where the image bytes come from: an mmap when the file can't change under
//! us, otherwise a `pread` block cache.
//!
//! Serving starts after the superblock is checked; nothing else of the image
//! is read up front, whichever source is used.
//!
//! An mmap'd image is shared with every other server (and the kernel's own
//! mounts) of the same file through the page cache, and answers are borrowed
//! straight from it. That is only sound for a file that is never truncated or
//! rewritten while mapped (see [`Immutable`]): otherwise a reader could fault
//! on a truncated page or see bytes change after it checked them.
//!
//! Any other image is read through a [`BlockCache`]: 4 KiB blocks read with
//! `pread` on first use and pinned, so the `&[u8]` the reader hands out stays
//! valid and unchanged for as long as the server runs. Start-up costs one
//! small allocation per image block (the slot table) and reads only the
//! blocks holding the headers and the root inode.

use cfs_format::erofs::BLOCK_SIZE;
use cfs_format::reader::ImageSource;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

/// The bytes of an image being served.
#[derive(Debug)]
pub enum ImageBytes {
    /// A read-only shared mapping of an immutable file.
    Mapped(memmap2::Mmap),
    /// Blocks read on demand from a file that might change.
    Cached(BlockCache),
}

impl ImageSource for ImageBytes {
    fn size(&self) -> u64 {
        match self {
            ImageBytes::Mapped(m) => m.size(),
            ImageBytes::Cached(c) => c.size(),
        }
    }

    fn bytes_at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        match self {
            ImageBytes::Mapped(m) => m.bytes_at(offset, len),
            ImageBytes::Cached(c) => c.bytes_at(offset, len),
        }
    }

    fn prefix_at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        match self {
            ImageBytes::Mapped(m) => m.prefix_at(offset, len),
            ImageBytes::Cached(c) => c.prefix_at(offset, len),
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
    /// or the file has fs-verity, through a [`BlockCache`] otherwise.
    pub fn open(path: &Path, immutable: Option<Immutable>) -> std::io::Result<Self> {
        let file = File::open(path)?;
        let immutable = immutable.or_else(|| has_verity(&file).then_some(Immutable::Verity));
        match immutable {
            Some(why) => map(&file, why).map(ImageBytes::Mapped),
            None => BlockCache::new(file).map(ImageBytes::Cached),
        }
    }

    /// True when the bytes are a mapping of the file.
    pub fn is_mapped(&self) -> bool {
        matches!(self, ImageBytes::Mapped(_))
    }

    /// What the block cache has read so far, for `CFS_FUSE_STATS`; `None` when mapped.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        match self {
            ImageBytes::Mapped(_) => None,
            ImageBytes::Cached(c) => Some(c.stats()),
        }
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

const BLOCK: usize = BLOCK_SIZE as usize;

/// An image read on demand with `pread`, 4 KiB block by block, each block
/// pinned once read.
///
/// - **Hits take no lock.** Each block has its own [`OnceLock`] slot; a miss
///   reads the block and publishes it with one `get_or_init` (two threads
///   missing the same block both read it, one copy wins).
/// - **Ranges inside a block are borrowed** from it: no copy, no allocation.
///   A range straddling blocks (an extended inode or an xattr body across a
///   block boundary) is copied once out of its pinned blocks into a span
///   kept under its `(offset, len)`, so asking again costs nothing more. File
///   data never straddles: the reader takes it in pieces that stop at block
///   ends ([`ImageSource::prefix_at`]).
/// - **Nothing is evicted**, because the reader's answers borrow from the
///   cache for as long as it lives. Memory is what requests touched: at most
///   the image size in blocks, plus the slot table (16 bytes per block, 0.4%
///   of the image, allocated at open: a fixed-size table is what makes a hit
///   lock-free), plus the spans. Spans are bounded by the image too: each
///   comes from a structure at its offset (an inode, an xattr body or entry),
///   so a well-formed image needs less than its own size of them; a hostile
///   one could ask for many overlapping ones, so they are capped at the image
///   size plus 16 MiB, past which a straddling read fails (EIO).
/// - **Errors.** A range past the end (the size is fixed by `fstat` at open)
///   is `None`, which the reader reports as corrupt data (EIO). So is a failed
///   `pread`, logged once; the block is read again on the next request.
/// - **A file changed under us** (it is not known to be immutable, which is
///   why it is not mapped) cannot cause undefined behaviour or a crash: every
///   block is read once and never changes after, the superblock the reader
///   checked at open stays what it checked, and every later read is bounds-
///   checked. The worst case is a mix of old and new blocks, which reads as
///   corrupt data (EIO) or wrong contents for the requests that touch it.
pub struct BlockCache {
    file: File,
    size: u64,
    blocks: Box<[OnceLock<Box<[u8; BLOCK]>>]>,
    /// Hash buckets of spans, each a chain of `OnceLock` links (append-only,
    /// so a span found stays where it is).
    spans: Box<[OnceLock<Box<Span>>]>,
    span_bytes: AtomicU64,
    span_count: AtomicU64,
    blocks_read: AtomicU64,
    logged_io: AtomicBool,
    logged_budget: AtomicBool,
}

/// A straddling range, copied once: its offset (its length is `bytes.len()`).
struct Span {
    offset: u64,
    bytes: Box<[u8]>,
    next: OnceLock<Box<Span>>,
}

/// Extra span bytes allowed beyond the image size.
const SPAN_SLACK: u64 = 16 << 20;

/// What a [`BlockCache`] has read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Blocks in the image.
    pub blocks: u64,
    /// Blocks read (and pinned).
    pub blocks_read: u64,
    /// Straddling ranges copied.
    pub spans: u64,
    /// Bytes in those copies.
    pub span_bytes: u64,
}

impl std::fmt::Display for CacheStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "blocks_read={} of {} spans={} span_bytes={}",
            self.blocks_read, self.blocks, self.spans, self.span_bytes
        )
    }
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("size", &self.size)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl BlockCache {
    /// A cache over `file`, whose size is taken now (`fstat`) and fixed.
    /// Reads nothing.
    pub fn new(file: File) -> std::io::Result<Self> {
        let size = file.metadata()?.len();
        let blocks = usize::try_from(size.div_ceil(BLOCK_SIZE))
            .map_err(|_| std::io::Error::other("image too large for this address space"))?;
        let buckets = (blocks / 16 + 1024).min(1 << 16).next_power_of_two();
        Ok(BlockCache {
            file,
            size,
            blocks: (0..blocks).map(|_| OnceLock::new()).collect(),
            spans: (0..buckets).map(|_| OnceLock::new()).collect(),
            span_bytes: AtomicU64::new(0),
            span_count: AtomicU64::new(0),
            blocks_read: AtomicU64::new(0),
            logged_io: AtomicBool::new(false),
            logged_budget: AtomicBool::new(false),
        })
    }

    /// What has been read so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            blocks: self.blocks.len() as u64,
            blocks_read: self.blocks_read.load(Ordering::Relaxed),
            spans: self.span_count.load(Ordering::Relaxed),
            span_bytes: self.span_bytes.load(Ordering::Relaxed),
        }
    }

    /// Block `index`, read now if it wasn't. `None` past the end or on an I/O error.
    fn block(&self, index: u64) -> Option<&[u8; BLOCK]> {
        let slot = self.blocks.get(usize::try_from(index).ok()?)?;
        if let Some(b) = slot.get() {
            return Some(b);
        }
        let at = index * BLOCK_SIZE;
        let len = (self.size - at).min(BLOCK_SIZE) as usize;
        let mut fresh: Box<[u8; BLOCK]> = vec![0u8; BLOCK].into_boxed_slice().try_into().ok()?;
        if let Err(e) = self.file.read_exact_at(&mut fresh[..len], at) {
            if !self.logged_io.swap(true, Ordering::Relaxed) {
                eprintln!("cfs-fuse: could not read the image at byte {at}: {e} (logged once)");
            }
            return None;
        }
        let mut fresh = Some(fresh);
        let block = slot.get_or_init(|| fresh.take().expect("init runs once"));
        if fresh.is_none() {
            self.blocks_read.fetch_add(1, Ordering::Relaxed);
        }
        Some(block)
    }

    /// `len` bytes at `offset` straddling a block boundary: the span copied
    /// for exactly this range, made now if there is none.
    fn span(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let hash = (offset ^ (len as u64).rotate_left(40)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut link = &self.spans[(hash >> 32) as usize & (self.spans.len() - 1)];
        let mut fresh: Option<Box<Span>> = None;
        loop {
            match link.get() {
                Some(s) if s.offset == offset && s.bytes.len() == len => return Some(&s.bytes),
                Some(s) => link = &s.next,
                None => {
                    if fresh.is_none() {
                        fresh = Some(Box::new(Span {
                            offset,
                            bytes: self.copy(offset, len)?,
                            next: OnceLock::new(),
                        }));
                    }
                    // Lost a race to another span: keep walking from it.
                    link.get_or_init(|| fresh.take().expect("checked above"));
                    if fresh.is_none() {
                        self.span_count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// A fresh copy of `len` bytes at `offset`, out of pinned blocks, within the span budget.
    fn copy(&self, offset: u64, len: usize) -> Option<Box<[u8]>> {
        let budget = self.size.saturating_add(SPAN_SLACK);
        let before = self.span_bytes.fetch_add(len as u64, Ordering::Relaxed);
        if before.saturating_add(len as u64) > budget {
            self.span_bytes.fetch_sub(len as u64, Ordering::Relaxed);
            if !self.logged_budget.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "cfs-fuse: the image asks for over {budget} bytes of block-straddling reads; \
                     refusing more (logged once)"
                );
            }
            return None;
        }
        let mut out = Vec::with_capacity(len);
        let mut at = offset;
        while out.len() < len {
            let block = self.block(at / BLOCK_SIZE);
            let Some(block) = block else {
                self.span_bytes.fetch_sub(len as u64, Ordering::Relaxed);
                return None;
            };
            let start = (at % BLOCK_SIZE) as usize;
            let n = (BLOCK - start).min(len - out.len());
            out.extend_from_slice(&block[start..start + n]);
            at += n as u64;
        }
        Some(out.into_boxed_slice())
    }
}

impl ImageSource for BlockCache {
    fn size(&self) -> u64 {
        self.size
    }

    fn bytes_at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let end = offset.checked_add(len as u64).filter(|&e| e <= self.size)?;
        if len == 0 {
            return Some(&[]);
        }
        let start = (offset % BLOCK_SIZE) as usize;
        if offset / BLOCK_SIZE == (end - 1) / BLOCK_SIZE {
            self.block(offset / BLOCK_SIZE)
                .map(|b| &b[start..start + len])
        } else {
            self.span(offset, len)
        }
    }

    fn prefix_at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let len = len.min(BLOCK - (offset % BLOCK_SIZE) as usize);
        self.bytes_at(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A file of `len` patterned bytes, the bytes, and a cache over it.
    fn cache(len: usize) -> (tempfile::NamedTempFile, Vec<u8>, BlockCache) {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&bytes).unwrap();
        let c = BlockCache::new(File::open(f.path()).unwrap()).unwrap();
        (f, bytes, c)
    }

    #[test]
    fn ranges_match_the_file() {
        let len = 3 * BLOCK + 100;
        let (_f, bytes, c) = cache(len);
        assert_eq!(c.stats().blocks_read, 0, "opening reads nothing");
        let cases: &[(u64, usize, &str)] = &[
            (0, 0, "empty"),
            (0, 32, "start"),
            (100, 3996, "to a block end"),
            (4064, 64, "last inode slot of a block"),
            (4064, 65, "straddling two blocks"),
            (4000, 2 * BLOCK, "straddling three blocks"),
            (len as u64 - 100, 100, "up to the end"),
            (
                len as u64 - 200,
                200,
                "straddling into the short last block",
            ),
            (len as u64, 0, "empty at the end"),
        ];
        for &(offset, n, what) in cases {
            let want = &bytes[offset as usize..offset as usize + n];
            assert_eq!(c.bytes_at(offset, n), Some(want), "{what}");
            let prefix = c.prefix_at(offset, n).unwrap();
            assert!(want.starts_with(prefix), "{what}: prefix");
            assert!(!prefix.is_empty() || n == 0, "{what}: empty prefix");
            assert_eq!(
                prefix.len(),
                n.min(BLOCK - offset as usize % BLOCK),
                "{what}: prefix stops at the block end"
            );
        }
        for (offset, n) in [(len as u64, 1), (len as u64 - 1, 2), (u64::MAX, 1)] {
            assert!(
                c.bytes_at(offset, n).is_none(),
                "{offset}+{n} is past the end"
            );
            assert!(
                c.prefix_at(offset, n).is_none(),
                "{offset}+{n} is past the end"
            );
        }
        assert!(c.bytes_at(0, usize::MAX).is_none());
        let s = c.stats();
        assert_eq!((s.blocks, s.blocks_read), (4, 4));
        assert_eq!(s.spans, 4);
    }

    #[test]
    fn repeated_reads_are_served_from_the_same_memory() {
        let (_f, _bytes, c) = cache(2 * BLOCK);
        let a = c.bytes_at(10, 20).unwrap().as_ptr();
        let b = c.bytes_at(4000, 200).unwrap().as_ptr();
        let before = c.stats();
        for _ in 0..100 {
            assert_eq!(c.bytes_at(10, 20).unwrap().as_ptr(), a);
            assert_eq!(c.bytes_at(4000, 200).unwrap().as_ptr(), b);
        }
        assert_eq!(c.stats(), before, "no new reads or copies");
        assert_eq!((before.spans, before.span_bytes), (1, 200));
    }

    #[test]
    fn a_file_truncated_under_the_cache_reads_as_errors() {
        let (f, bytes, c) = cache(3 * BLOCK);
        assert_eq!(c.bytes_at(0, 10), Some(&bytes[..10]));
        f.as_file().set_len(BLOCK as u64).unwrap();
        // Pinned blocks keep their bytes; blocks now gone can't be read.
        assert_eq!(c.bytes_at(0, 10), Some(&bytes[..10]));
        assert_eq!(c.bytes_at(2 * BLOCK as u64, 10), None);
        assert_eq!(c.bytes_at(BLOCK as u64 - 5, 10), None);
    }

    #[test]
    fn straddling_copies_are_capped() {
        let (_f, _bytes, c) = cache(2 * BLOCK);
        // Each distinct straddling range is a new copy; the cap stops them.
        let refused = (0..100_000)
            .map(|i| c.bytes_at(BLOCK as u64 - 1 - (i % 64) as u64, 100 + i / 64))
            .position(|r| r.is_none());
        assert!(refused.is_some(), "never refused");
        assert!(c.stats().span_bytes <= 2 * BLOCK as u64 + SPAN_SLACK);
    }

    #[test]
    fn concurrent_readers_see_the_file() {
        let (_f, bytes, c) = cache(64 * BLOCK + 123);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (c, bytes) = (&c, &bytes);
                s.spawn(move || {
                    let mut x = t + 1;
                    for _ in 0..20_000 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let offset = x % bytes.len() as u64;
                        let n = ((x >> 40) % 300) as usize;
                        let want = bytes.get(offset as usize..offset as usize + n);
                        assert_eq!(c.bytes_at(offset, n), want, "{offset}+{n}");
                    }
                });
            }
        });
        assert_eq!(c.stats().blocks_read, 65, "each block read once");
    }
}
