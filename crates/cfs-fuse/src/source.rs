//! Where the image bytes come from: a mapping when the kernel guarantees
//! the file can't change, otherwise a `pread` block cache.
//!
//! Serving starts after the superblock is checked; nothing else of the image
//! is read up front, whichever source is used.
//!
//! A mapped image is shared with every other server (and the kernel's own
//! mounts) of the same file through the page cache, and answers are borrowed
//! straight from it. That is only sound for a file nobody can rewrite or
//! truncate while it is mapped, so [`ImageBytes::open`] maps only what the
//! kernel itself freezes: a file with fs-verity, or a sealed memfd (what
//! `cfs mount --digest` serves when the file has no fs-verity). The check is
//! made on the open file ([`crate::sys::immutable`]), never taken from a
//! caller.
//!
//! Any other image is read through a [`BlockCache`]: 4 KiB blocks read with
//! `pread` on first use and pinned, so the `&[u8]` the reader hands out stays
//! valid and unchanged for as long as the server runs. Its memory grows with
//! what requests read, never with the file's size: a 64 KiB image with an
//! apparent size of 1 TiB costs what a 64 KiB one does.

use crate::sys;
use cfs_format::erofs::BLOCK_SIZE;
use cfs_format::reader::ImageSource;
use rustix::fs::{statx, AtFlags, StatxFlags};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

/// The bytes of an image being served.
#[derive(Debug)]
pub enum ImageBytes {
    /// A read-only shared mapping of a file the kernel keeps from changing
    /// (made by [`crate::sys`], the only place a mapping can come from).
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

impl ImageBytes {
    /// The bytes of the open image `file`: mapped when the kernel guarantees
    /// they can't change (fs-verity, a sealed memfd), else a [`BlockCache`].
    pub fn open(file: File) -> std::io::Result<Self> {
        match sys::map_immutable(&file)? {
            Some(m) => Ok(ImageBytes::Mapped(m)),
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

const BLOCK: usize = BLOCK_SIZE as usize;
type Block = [u8; BLOCK];

/// Bits of a block index each level of the block table resolves.
const FANOUT_BITS: u32 = 9;
/// Slots per table node (512: a node is 8 KiB of slots).
const FANOUT: usize = 1 << FANOUT_BITS;

/// An image read on demand with `pread`, 4 KiB block by block, each block
/// pinned once read.
///
/// - **Hits take no lock.** Blocks hang off a radix table of [`OnceLock`]
///   slots, 512 per node, as deep as the file's block count needs (two
///   levels up to 512 MiB, four for 1 TiB); a hit is one atomic load per
///   level. A miss reads the block and publishes it with one `get_or_init`
///   (two threads missing the same block both read it, one copy wins).
/// - **Memory grows with what is read, not with the file's size.** A table
///   node is allocated the first time a block under it is read, so the
///   table costs at most one 8 KiB node per level per block read (far less
///   when reads cluster, as an image's metadata does), and opening costs one
///   node whatever the apparent size.
/// - **Ranges inside a block are borrowed** from it: no copy, no allocation.
///   A range straddling blocks (an extended inode or an xattr body across a
///   block boundary) is copied once out of its pinned blocks into a span
///   kept under its `(offset, len)`, so asking again costs nothing more. File
///   data never straddles: the reader takes it in pieces that stop at block
///   ends ([`ImageSource::prefix_at`]). Spans are bounded by what was read:
///   at most twice the bytes of the blocks read, plus 16 MiB, past which a
///   straddling read fails (EIO).
/// - **Nothing is evicted**, because the reader's answers borrow from the
///   cache for as long as it lives.
/// - **A file changed under us** can't cause undefined behaviour or a crash:
///   every block is read once and never changes after, and every read is
///   bounds-checked against the size taken at open. Each miss also checks
///   the file's size, modification and change times after its `pread`; once
///   they differ from what they were at open (the file was truncated,
///   extended or rewritten, by anyone), every later miss fails: readers get
///   EIO (logged once) where they would otherwise get a mix of old and new
///   bytes, and what was already read keeps being served. A write
///   concurrent with the `pread` is caught too, because the kernel updates
///   a file's change time before it copies the new bytes in, and a change
///   time once read is never handed out again (multigrain timestamps).
/// - **Errors.** A range past the end is `None`, which the reader reports
///   as corrupt data (EIO). So is a failed `pread`, logged once; the block
///   is read again on the next request.
pub struct BlockCache {
    file: File,
    size: u64,
    /// Size and times at open.
    version: Version,
    root: Table,
    /// Bit shift of the root level's index (`(depth - 1) * FANOUT_BITS`).
    root_shift: u32,
    /// Hash buckets of spans, each a chain of `OnceLock` links (append-only,
    /// so a span found stays where it is).
    spans: Box<[OnceLock<Box<Span>>]>,
    span_bytes: AtomicU64,
    span_count: AtomicU64,
    blocks_read: AtomicU64,
    nodes: AtomicU64,
    changed: AtomicBool,
    logged_io: AtomicBool,
    logged_budget: AtomicBool,
}

/// One node of the block table.
enum Table {
    /// Deeper nodes, each covering `FANOUT` times fewer blocks.
    Inner(Box<[OnceLock<Box<Table>>]>),
    /// Blocks.
    Leaf(Box<[OnceLock<Box<Block>>]>),
}

impl Table {
    fn new(leaf: bool) -> Table {
        if leaf {
            Table::Leaf((0..FANOUT).map(|_| OnceLock::new()).collect())
        } else {
            Table::Inner((0..FANOUT).map(|_| OnceLock::new()).collect())
        }
    }
}

/// What a file's size and times were: a change to its bytes changes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    size: u64,
    mtime: (i64, u32),
    ctime: (i64, u32),
}

impl Version {
    fn of(file: &File) -> std::io::Result<Version> {
        let s = statx(file, "", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS)?;
        Ok(Version {
            size: s.stx_size,
            mtime: (s.stx_mtime.tv_sec, s.stx_mtime.tv_nsec),
            ctime: (s.stx_ctime.tv_sec, s.stx_ctime.tv_nsec),
        })
    }
}

/// A straddling range, copied once: its offset (its length is `bytes.len()`).
struct Span {
    offset: u64,
    bytes: Box<[u8]>,
    next: OnceLock<Box<Span>>,
}

/// Span bytes allowed beyond twice the bytes of the blocks read.
const SPAN_SLACK: u64 = 16 << 20;

/// What a [`BlockCache`] has read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Blocks in the image.
    pub blocks: u64,
    /// Blocks read (and pinned).
    pub blocks_read: u64,
    /// Table nodes allocated (8 KiB each).
    pub nodes: u64,
    /// Straddling ranges copied.
    pub spans: u64,
    /// Bytes in those copies.
    pub span_bytes: u64,
}

impl std::fmt::Display for CacheStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "blocks_read={} of {} nodes={} spans={} span_bytes={}",
            self.blocks_read, self.blocks, self.nodes, self.spans, self.span_bytes
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
    /// A cache over `file`, whose size is taken now and fixed. Reads nothing.
    pub fn new(file: File) -> std::io::Result<Self> {
        let version = Version::of(&file)?;
        let size = version.size;
        let blocks = size.div_ceil(BLOCK_SIZE);
        let mut depth = 1u32;
        while depth * FANOUT_BITS < 64 && blocks > 1u64 << (depth * FANOUT_BITS) {
            depth += 1;
        }
        let buckets = 1024;
        Ok(BlockCache {
            file,
            size,
            version,
            root: Table::new(depth == 1),
            root_shift: (depth - 1) * FANOUT_BITS,
            spans: (0..buckets).map(|_| OnceLock::new()).collect(),
            span_bytes: AtomicU64::new(0),
            span_count: AtomicU64::new(0),
            blocks_read: AtomicU64::new(0),
            nodes: AtomicU64::new(1),
            changed: AtomicBool::new(false),
            logged_io: AtomicBool::new(false),
            logged_budget: AtomicBool::new(false),
        })
    }

    /// What has been read so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            blocks: self.size.div_ceil(BLOCK_SIZE),
            blocks_read: self.blocks_read.load(Ordering::Relaxed),
            nodes: self.nodes.load(Ordering::Relaxed),
            spans: self.span_count.load(Ordering::Relaxed),
            span_bytes: self.span_bytes.load(Ordering::Relaxed),
        }
    }

    /// The slot of block `index` (below the block count), making the table
    /// nodes on the way if they are missing.
    fn slot(&self, index: u64) -> &OnceLock<Box<Block>> {
        let mut table = &self.root;
        let mut shift = self.root_shift;
        loop {
            let i = (index >> shift) as usize & (FANOUT - 1);
            match table {
                Table::Leaf(blocks) => return &blocks[i],
                Table::Inner(children) => {
                    shift -= FANOUT_BITS;
                    table = children[i].get_or_init(|| {
                        self.nodes.fetch_add(1, Ordering::Relaxed);
                        Box::new(Table::new(shift == 0))
                    });
                }
            }
        }
    }

    /// Block `index`, read now if it wasn't. `None` past the end, on an I/O
    /// error, or once the file has changed.
    fn block(&self, index: u64) -> Option<&Block> {
        let at = index.checked_mul(BLOCK_SIZE).filter(|&at| at < self.size)?;
        let slot = self.slot(index);
        if let Some(b) = slot.get() {
            return Some(b);
        }
        if self.changed.load(Ordering::Relaxed) {
            return None;
        }
        let len = (self.size - at).min(BLOCK_SIZE) as usize;
        let mut fresh: Box<Block> = vec![0u8; BLOCK].into_boxed_slice().try_into().ok()?;
        if let Err(e) = self.file.read_exact_at(&mut fresh[..len], at) {
            if !self.logged_io.swap(true, Ordering::Relaxed) {
                eprintln!("cfs-fuse: could not read the image at byte {at}: {e} (logged once)");
            }
            self.check_unchanged();
            return None;
        }
        if !self.check_unchanged() {
            return None;
        }
        let mut fresh = Some(fresh);
        let block = slot.get_or_init(|| fresh.take().expect("init runs once"));
        if fresh.is_none() {
            self.blocks_read.fetch_add(1, Ordering::Relaxed);
        }
        Some(block)
    }

    /// False (and from now on, for every miss) once the file's size or
    /// times differ from those at open.
    fn check_unchanged(&self) -> bool {
        if self.changed.load(Ordering::Relaxed) {
            return false;
        }
        let now = Version::of(&self.file);
        if now.as_ref().is_ok_and(|v| *v == self.version) {
            return true;
        }
        if !self.changed.swap(true, Ordering::Relaxed) {
            let what = match now {
                Ok(v) if v.size != self.version.size => {
                    format!(
                        "its size went from {} to {} bytes",
                        self.version.size, v.size
                    )
                }
                Ok(_) => "it was rewritten".to_string(),
                Err(e) => format!("it can't be stat'ed: {e}"),
            };
            eprintln!(
                "cfs-fuse: the image file changed while served ({what}); \
                 parts not read before answer EIO from now on"
            );
        }
        false
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

    /// A fresh copy of `len` bytes at `offset`, out of pinned blocks, within
    /// the span budget (which grows with the blocks read).
    fn copy(&self, offset: u64, len: usize) -> Option<Box<[u8]>> {
        let mut out = Vec::with_capacity(len.min(1 << 20));
        let mut at = offset;
        while out.len() < len {
            let block = self.block(at / BLOCK_SIZE)?;
            let start = (at % BLOCK_SIZE) as usize;
            let n = (BLOCK - start).min(len - out.len());
            out.extend_from_slice(&block[start..start + n]);
            at += n as u64;
        }
        let read = self.blocks_read.load(Ordering::Relaxed) * BLOCK_SIZE;
        let budget = read.saturating_mul(2).saturating_add(SPAN_SLACK);
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
    use std::os::unix::fs::FileExt;

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
    fn straddling_copies_are_capped() {
        let (_f, _bytes, c) = cache(2 * BLOCK);
        // Each distinct straddling range is a new copy; the cap stops them.
        let refused = (0..100_000)
            .map(|i| c.bytes_at(BLOCK as u64 - 1 - (i % 64) as u64, 100 + i / 64))
            .position(|r| r.is_none());
        assert!(refused.is_some(), "never refused");
        assert!(c.stats().span_bytes <= 2 * 2 * BLOCK as u64 + SPAN_SLACK);
    }

    #[test]
    fn a_huge_sparse_file_costs_what_is_read() {
        // 1 TiB apparent size, a few blocks of data.
        let f = tempfile::tempfile().unwrap();
        let tib = 1u64 << 40;
        f.set_len(tib).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"tail", tib - 4).unwrap();
        let c = BlockCache::new(f).unwrap();
        assert_eq!(c.stats().nodes, 1, "opening allocates one table node");
        assert_eq!(c.bytes_at(0, 4), Some(&b"head"[..]));
        assert_eq!(c.bytes_at(tib - 4, 4), Some(&b"tail"[..]));
        assert_eq!(c.bytes_at(tib / 2, 3), Some(&[0u8; 3][..]));
        let s = c.stats();
        assert_eq!((s.blocks, s.blocks_read), (tib / BLOCK as u64, 3));
        // Four levels for 2^28 blocks: the root plus three nodes per read.
        assert!(s.nodes <= 1 + 3 * 3, "{s}");
    }

    #[test]
    fn a_file_changed_under_the_cache_answers_none_for_what_was_not_read() {
        type Change = fn(&File, &[u8]);
        let changes: &[(&str, Change)] = &[
            ("rewritten in place", |f, bytes| {
                let other: Vec<u8> = bytes.iter().map(|b| b ^ 0xff).collect();
                f.write_all_at(&other, 0).unwrap();
            }),
            ("extended", |f, bytes| {
                f.write_all_at(b"more", bytes.len() as u64).unwrap();
            }),
            ("truncated", |f, _| f.set_len(BLOCK as u64).unwrap()),
        ];
        for (what, change) in changes {
            let (f, bytes, c) = cache(3 * BLOCK);
            assert_eq!(c.bytes_at(10, 10), Some(&bytes[10..20]), "{what}");
            change(f.as_file(), &bytes);
            assert_eq!(
                c.bytes_at(2 * BLOCK as u64, 10),
                None,
                "{what}: a new block"
            );
            assert_eq!(c.bytes_at(BLOCK as u64 + 1, 10), None, "{what}: another");
            assert_eq!(
                c.bytes_at(10, 10),
                Some(&bytes[10..20]),
                "{what}: already read"
            );
        }
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
