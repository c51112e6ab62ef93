//! Writing objects: one read of the source, hashed while it is copied.
//!
//! 1. An anonymous `O_TMPFILE` in the store (or, where the file system lacks
//!    it, a `.tmp-PID-N` file that only `gc` ever looks at).
//! 2. The content: `FICLONE` (reflink) when the source's file system shares
//!    extents with the store's, then the clone is read back to hash it; else
//!    read, hash and write chunk by chunk. Either way the digest is of the
//!    bytes that are in the new file.
//! 3. The source is an open file (never a path: see [`crate::source`]) and
//!    must not change: the inode, size and mtime the scan saw, still the
//!    same after reading, and exactly that many bytes read.
//! 4. `fdatasync`, chmod 0644, fs-verity where available, then `linkat` under
//!    `XX/REST`. Until that link, the object has no name; after it, it is
//!    complete and durable. `EEXIST` (another writer won) or an object already
//!    present means dedup: the existing file is kept and the copy dropped.

use super::{ObjectStore, StoreError};
use crate::source::Identity;
use cfs_format::fsverity::FsVerityHasher;
use cfs_format::Digest;
use rustix::fs::{AtFlags, Mode, OFlags, CWD};
use rustix::io::Errno;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Largest read or write at once.
const CHUNK: usize = 256 * 1024;

/// The result of storing one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    /// The object's fs-verity digest (its name).
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// False when the object was already present (dedup): nothing was added.
    pub new: bool,
}

/// A source file to store: already open (through [`SourceTree::open`],
/// which checked it is the inode a scan saw), with that identity and its
/// path for messages.
///
/// [`SourceTree::open`]: crate::source::SourceTree::open
#[derive(Debug, Clone, Copy)]
pub struct SourceFile<'a> {
    /// The open file.
    pub file: &'a std::fs::File,
    /// Its path, for messages only (never opened).
    pub path: &'a Path,
    /// The inode, size and mtime it must keep while it is read.
    pub seen: Identity,
}

/// Where a temporary object lives until it is linked under its name.
pub(super) enum Temp {
    /// An `O_TMPFILE`: no name, vanishes with its last fd.
    Anonymous,
    /// A named file in the store's top directory (fallback).
    Named(String),
}

impl Temp {
    /// Removes a named temporary file; nothing to do for an anonymous one.
    pub(super) fn remove(self, store: &ObjectStore) {
        if let Temp::Named(name) = self {
            let _ = rustix::fs::unlinkat(store.dir.as_fd(), name.as_str(), AtFlags::empty());
        }
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);
static NO_TMPFILE: AtomicBool = AtomicBool::new(false);
static NO_REFLINK: AtomicBool = AtomicBool::new(false);

impl ObjectStore {
    /// Creates a temporary file for a new object, read-write; `what` names
    /// the content in errors.
    pub(super) fn temp_file(&self, what: &str) -> Result<(OwnedFd, Temp), StoreError> {
        if !NO_TMPFILE.load(Ordering::Relaxed) {
            match rustix::fs::openat(
                self.dir.as_fd(),
                ".",
                OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            ) {
                Ok(fd) => return Ok((fd, Temp::Anonymous)),
                Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => {
                    NO_TMPFILE.store(true, Ordering::Relaxed);
                }
                Err(e) => {
                    return Err(StoreError::store(
                        "create a temporary file",
                        what,
                        self.path(),
                    )(e))
                }
            }
        }
        let name = format!(
            ".tmp-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let fd = rustix::fs::openat(
            self.dir.as_fd(),
            name.as_str(),
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(StoreError::store(
            "create a temporary file",
            what,
            self.path(),
        ))?;
        Ok((fd, Temp::Named(name)))
    }

    /// Stores a file's content; see the module doc.
    pub fn insert_file(&self, source: SourceFile<'_>) -> Result<Inserted, StoreError> {
        let what = source.path.display().to_string();
        let (tmp, temp) = self.temp_file(&what)?;
        let result = self.fill_and_publish(&source, (tmp, &temp), &what);
        // Linked or not, the temporary name (if any) goes.
        temp.remove(self);
        result
    }

    fn fill_and_publish(
        &self,
        source: &SourceFile<'_>,
        (tmp, temp): (OwnedFd, &Temp),
        what: &str,
    ) -> Result<Inserted, StoreError> {
        let (src, path) = (source.file.as_fd(), source.path);
        let size = source.seen.size;
        let mut hasher = FsVerityHasher::new();
        let mut buf = vec![0u8; CHUNK.min(size as usize + 1).max(4096)];
        let mut total = 0u64;
        let cloned = size > 0
            && !NO_REFLINK.load(Ordering::Relaxed)
            && match rustix::fs::ioctl_ficlone(&tmp, src) {
                Ok(()) => true,
                Err(_) => {
                    // EXDEV, EOPNOTSUPP, EINVAL: this pair of file systems can't share extents.
                    NO_REFLINK.store(true, Ordering::Relaxed);
                    false
                }
            };
        // Hash what is in the new file: the clone read back, or each chunk as it is written.
        let reader = if cloned { tmp.as_fd() } else { src };
        // At most one byte more than scanned: a file its owner keeps
        // extending (`truncate -s +1G` in a loop costs nothing) must fail
        // here, not be copied until the store's file system is full.
        while total <= size {
            let want = buf
                .len()
                .min(usize::try_from((size - total).saturating_add(1)).unwrap_or(usize::MAX));
            // At the offset read so far: the fd's own position does not matter.
            let n = match rustix::io::pread(reader, &mut buf[..want], total) {
                Ok(0) => break,
                Ok(n) => n,
                Err(Errno::INTR) => continue,
                Err(e) => return Err(StoreError::io("read", path)(e)),
            };
            hasher.update(&buf[..n]);
            if !cloned {
                write_sparse(&tmp, &buf[..n], total).map_err(StoreError::store(
                    "write",
                    what,
                    self.path(),
                ))?;
            }
            total += n as u64;
        }
        let after = Identity::of(src).map_err(StoreError::io("stat", path))?;
        let changed = if total > size {
            Some(format!("it grew past the {size} bytes scanned"))
        } else if total != size {
            Some(format!("{size} bytes when scanned, {total} read"))
        } else {
            source.seen.difference(&after)
        };
        if let Some(what) = changed {
            return Err(StoreError::SourceChanged {
                path: path.to_path_buf(),
                what,
            });
        }
        let digest = hasher.finish();
        self.publish(tmp, temp, digest, size, what)
    }

    /// Stores exactly `size` bytes read from a stream (a tar entry), hashed
    /// while they are written. `what` names the source in errors; a stream
    /// that ends early is an error and nothing is stored.
    pub fn insert_reader(
        &self,
        reader: &mut dyn std::io::Read,
        size: u64,
        what: &Path,
    ) -> Result<Inserted, StoreError> {
        let shown = what.display().to_string();
        let (tmp, temp) = self.temp_file(&shown)?;
        let result = self
            .copy_from_reader(reader, size, what, &tmp)
            .and_then(|digest| self.publish(tmp, &temp, digest, size, &shown));
        temp.remove(self);
        result
    }

    fn copy_from_reader(
        &self,
        reader: &mut dyn std::io::Read,
        size: u64,
        what: &Path,
        tmp: &OwnedFd,
    ) -> Result<Digest, StoreError> {
        let mut hasher = FsVerityHasher::new();
        let mut buf = vec![0u8; CHUNK.min(size as usize).max(4096)];
        let mut left = size;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match reader.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(StoreError::SourceChanged {
                        path: what.to_path_buf(),
                        what: format!("ended after {} of {size} bytes", size - left),
                    })
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StoreError::std_io("read", what)(e)),
            };
            hasher.update(&buf[..n]);
            write_sparse(tmp, &buf[..n], size - left).map_err(StoreError::store(
                "write",
                &what.display().to_string(),
                self.path(),
            ))?;
            left -= n as u64;
        }
        Ok(hasher.finish())
    }

    /// Stores bytes held in memory (an image, a manifest).
    pub fn insert_bytes(&self, data: &[u8]) -> Result<Inserted, StoreError> {
        self.insert_bytes_as(data, &format!("{} bytes", data.len()))
    }

    /// Stores bytes held in memory; `what` names them in errors ("the image
    /// of DIR", a tar entry).
    pub fn insert_bytes_as(&self, data: &[u8], what: &str) -> Result<Inserted, StoreError> {
        let digest = cfs_format::fsverity::digest(data);
        let size = data.len() as u64;
        if self.contains(&digest) {
            return Ok(Inserted {
                digest,
                size,
                new: false,
            });
        }
        let (tmp, temp) = self.temp_file(what)?;
        let result = write_all(&tmp, data)
            .map_err(StoreError::store("write", what, self.path()))
            .and_then(|()| self.publish(tmp, &temp, digest, size, what));
        temp.remove(self);
        result
    }

    /// Syncs a complete temporary object and links it under its digest;
    /// `what` names the content in errors.
    fn publish(
        &self,
        tmp: OwnedFd,
        temp: &Temp,
        digest: Digest,
        size: u64,
        what: &str,
    ) -> Result<Inserted, StoreError> {
        let existing = Inserted {
            digest,
            size,
            new: false,
        };
        if self.contains(&digest) {
            return Ok(existing);
        }
        let rel = digest.object_path();
        let failed = |op| StoreError::store(op, what, self.path());
        // Written sparse, the file may end in a hole: its length is set here.
        rustix::fs::ftruncate(&tmp, size).map_err(failed("size"))?;
        rustix::fs::fdatasync(&tmp).map_err(failed("sync"))?;
        rustix::fs::fchmod(&tmp, Mode::from_raw_mode(0o644)).map_err(failed("chmod"))?;
        let fd = self.maybe_enable_verity(tmp)?;
        let (sub, new_dir) = self
            .subdir_or_create(digest.0[0])
            .map_err(failed("create its directory"))?;
        let name = &rel[3..];
        let linked = match temp {
            Temp::Anonymous => {
                let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
                match rustix::fs::linkat(CWD, proc.as_str(), sub, name, AtFlags::SYMLINK_FOLLOW) {
                    // No /proc: AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH, but try.
                    Err(Errno::NOENT) => {
                        rustix::fs::linkat(&fd, "", sub, name, AtFlags::EMPTY_PATH)
                    }
                    r => r,
                }
            }
            Temp::Named(tmp_name) => rustix::fs::linkat(
                self.dir.as_fd(),
                tmp_name.as_str(),
                sub,
                name,
                AtFlags::empty(),
            ),
        };
        match linked {
            Ok(()) => {
                self.mark_dirty(&digest, new_dir);
                Ok(Inserted {
                    new: true,
                    ..existing
                })
            }
            Err(Errno::EXIST) => Ok(existing),
            Err(e) => Err(failed("link")(e)),
        }
    }
}

/// The blocks [`write_sparse`] leaves as holes when they are all zeros.
const HOLE_BLOCK: usize = 4096;

/// Writes `data` at `offset` of a new object (empty until now, sized by
/// [`ObjectStore::publish`]), leaving every all-zero block a hole: a sparse
/// source (a file of a few bytes on disk that says it holds a terabyte, a
/// tar entry of compressed zeros) costs the store what it costs its owner,
/// not its apparent size. The digest is of every byte, holes read as zeros.
fn write_sparse(fd: &OwnedFd, data: &[u8], offset: u64) -> rustix::io::Result<()> {
    let mut run: Option<usize> = None;
    for (i, block) in data.chunks(HOLE_BLOCK).enumerate() {
        let at = i * HOLE_BLOCK;
        match (block.iter().all(|&b| b == 0), run) {
            (false, None) => run = Some(at),
            (true, Some(start)) => {
                pwrite_all(fd, &data[start..at], offset + start as u64)?;
                run = None;
            }
            _ => {}
        }
    }
    match run {
        Some(start) => pwrite_all(fd, &data[start..], offset + start as u64),
        None => Ok(()),
    }
}

fn pwrite_all(fd: &OwnedFd, mut data: &[u8], mut offset: u64) -> rustix::io::Result<()> {
    while !data.is_empty() {
        match rustix::io::pwrite(fd, data, offset) {
            Ok(n) => {
                data = &data[n..];
                offset += n as u64;
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn write_all(fd: &OwnedFd, mut data: &[u8]) -> rustix::io::Result<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
