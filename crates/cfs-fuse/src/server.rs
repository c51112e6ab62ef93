//! The filesystem: turns each parsed [`Request`] into reads of the image
//! (through [`Image`]), the mode's presentation rules ([`ServeMode`]) and
//! object opens ([`ObjectStore`]), and writes the answer's bytes. It knows
//! nothing of transports: the session hands it requests from
//! `/dev/fuse` or io_uring alike.
//!
//! Every request takes `&self` and runs on any of the worker threads. The
//! walk path (lookup, getattr, readdirplus, readlink, xattrs, reads of inline
//! data) touches only the immutable image: no lock, no allocation beyond the
//! reply. Open files of the object store live in a sharded table, locked per
//! shard on open, release and read.
//!
//! What the kernel is told, and why (`fs/fuse/*.c`):
//! - entry and attribute timeouts of a year, and negative entries (inode 0)
//!   with the same timeout: the image never changes, so the dcache can keep
//!   everything and a miss is never asked twice;
//! - `FUSE_DO_READDIRPLUS` (without `READDIRPLUS_AUTO`): every readdir
//!   carries the attributes, so a walk never sends a LOOKUP;
//! - `OPENDIR` answers ENOSYS once: the kernel stops sending OPENDIR and
//!   RELEASEDIR and opens directories with `FOPEN_KEEP_CACHE |
//!   FOPEN_CACHE_DIR`, so directory listings are cached too;
//! - with passthrough, files are opened with an OPEN (it is where an object
//!   is opened, verified and handed to the kernel as the backing file);
//! - without passthrough (a plain user's standalone mount), OPEN answers
//!   ENOSYS once (`FUSE_NO_OPEN_SUPPORT`): the kernel stops sending OPEN and
//!   RELEASE for files and opens them with `FOPEN_KEEP_CACHE`, so opening a
//!   file whose pages are cached costs no round trip (two before). A READ
//!   then carries no handle: the server opens the object for it through the
//!   same path as OPEN did (`openat2` beneath the store, the digest checked
//!   before the first byte, cached per object inode), reads and closes it.
//!   A missing or tampered object fails the read with EIO instead of the
//!   open; overlay-lower mode keeps OPEN (it refuses external files there);
//! - `FUSE_CACHE_SYMLINKS`, `FUSE_PARALLEL_DIROPS`, `FUSE_MAX_PAGES` (the
//!   largest the kernel allows), and `FUSE_PASSTHROUGH` when serving contents
//!   as a process with `CAP_SYS_ADMIN`.

use crate::abi::{self, init, Attr};
use crate::attr::{file_attr, InoMap};
use crate::errors::{ErrorLog, ServeError};
use crate::mode::ServeMode;
use crate::objects::ObjectStore;
use crate::reply::{self, Answer};
use crate::request::{Op, Request};
use crate::source::ImageBytes;
use crate::sys::fuse_dev::Backing;
use cfs_format::reader::{Image, Inode, Nid};
use cfs_format::FileType as CfsType;
use rustix::io::Errno;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How long the kernel may trust an entry or attribute: the image is immutable.
const TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// A map split into shards, each behind its own lock, so that requests for
/// different keys rarely contend. Used only off the walk path.
struct Sharded<K, V> {
    shards: Vec<Mutex<HashMap<K, V>>>,
}

impl<K: Hash + Eq, V> Sharded<K, V> {
    fn new(n: usize) -> Self {
        Sharded {
            shards: (0..n).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, key: &K) -> MutexGuard<'_, HashMap<K, V>> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        let i = (h.finish() as usize) % self.shards.len();
        // A panic under the lock leaves a whole map behind: keep serving.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An open file of the object store.
struct OpenObject {
    nid: Nid,
    file: Arc<File>,
    passthrough: bool,
}

/// Request counters, kept only when `CFS_FUSE_STATS` is set and printed when
/// the session ends (how the tests see that the kernel really sends READDIRPLUS
/// and no OPENDIR).
#[derive(Default)]
struct Stats {
    lookup: AtomicU64,
    getattr: AtomicU64,
    readdir: AtomicU64,
    readdirplus: AtomicU64,
    opendir: AtomicU64,
    open: AtomicU64,
    read: AtomicU64,
}

fn count(stat: Option<&AtomicU64>) {
    if let Some(s) = stat {
        s.fetch_add(1, Ordering::Relaxed);
    }
}

/// The filesystem served: one image, one mode, optionally an object store.
pub struct CfsFs {
    image: Image<ImageBytes>,
    inos: InoMap,
    mode: ServeMode,
    objects: Option<ObjectStore>,
    errors: ErrorLog,
    /// Decided in `init`: the kernel accepts backing files from us.
    passthrough: AtomicBool,
    /// Decided in `init`: files are opened without OPEN (no passthrough,
    /// contents served here, and the kernel supports zero-message opens).
    zero_open: AtomicBool,
    want_passthrough: bool,
    /// The connection, for the backing-file ioctls of passthrough.
    dev: Arc<OwnedFd>,
    handles: Sharded<u64, OpenObject>,
    /// Backing files by nid, with their open count: the kernel wants one
    /// backing file per inode for all its open handles.
    backing: Sharded<Nid, (Arc<Backing>, u64)>,
    next_fh: AtomicU64,
    stats: Option<Stats>,
}

impl CfsFs {
    /// A filesystem over `image` in `mode`. `objects` is where external files
    /// are read from in standalone mode; `passthrough` asks the kernel to read
    /// them directly (needs `CAP_SYS_ADMIN`; falls back to `pread` if
    /// refused) through the connection `dev`.
    pub fn new(
        image: Image<ImageBytes>,
        mode: ServeMode,
        objects: Option<ObjectStore>,
        passthrough: bool,
        dev: Arc<OwnedFd>,
    ) -> Self {
        CfsFs {
            inos: InoMap::new(image.root_nid()),
            image,
            mode,
            objects,
            errors: ErrorLog::default(),
            passthrough: AtomicBool::new(false),
            zero_open: AtomicBool::new(false),
            want_passthrough: passthrough && mode.serves_contents(),
            dev,
            handles: Sharded::new(16),
            backing: Sharded::new(16),
            next_fh: AtomicU64::new(1),
            stats: std::env::var_os("CFS_FUSE_STATS").map(|_| Stats::default()),
        }
    }

    fn stats(&self) -> Option<&Stats> {
        self.stats.as_ref()
    }

    /// The inode behind `ino`, and its attributes.
    fn attr_of(&self, nid: Nid) -> Result<(Inode, Attr), ServeError> {
        let inode = self.image.inode(nid)?;
        let ino = self.inos.ino(nid).ok_or(ServeError::BadNid(nid.0))?;
        let attr = file_attr(ino, &inode).ok_or(ServeError::BadMode(inode.mode()))?;
        Ok((inode, attr))
    }

    /// The entry `name` in directory `dir`: `None` if absent or hidden.
    fn lookup_entry(&self, dir: Nid, name: &[u8]) -> Result<Option<Attr>, ServeError> {
        let Some(entry) = self.image.lookup(dir, name)? else {
            return Ok(None);
        };
        let (inode, attr) = self.attr_of(entry.nid)?;
        if self.mode.hides_entry(inode.mode(), inode.rdev()) {
            return Ok(None);
        }
        Ok(Some(attr))
    }

    /// Presented xattr names of `nid`, NUL-terminated, each once. `trusted.*`
    /// names are listed only when `may_list_trusted` says so (asked at most
    /// once, and only if there is such a name): the kernel lists them only
    /// to callers with `CAP_SYS_ADMIN` ([`crate::caller`]).
    fn xattr_list(
        &self,
        nid: Nid,
        may_list_trusted: impl FnOnce() -> bool,
    ) -> Result<Vec<u8>, ServeError> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut trusted = None;
        let mut may_list_trusted = Some(may_list_trusted);
        let mode = self.image.inode(nid)?.mode();
        for x in self.image.xattrs(nid)? {
            let x = x?;
            let name = x.name();
            let Some(shown) = self.mode.present_name(&name) else {
                continue;
            };
            if shown.starts_with(b"trusted.")
                && !*trusted.get_or_insert_with(|| may_list_trusted.take().is_some_and(|f| f()))
            {
                continue;
            }
            if !self.mode.hides_xattr(&shown, mode) && seen.insert(shown.to_vec()) {
                out.extend_from_slice(&shown);
                out.push(0);
            }
        }
        Ok(out)
    }

    fn xattr_value(&self, nid: Nid, name: &[u8]) -> Result<Option<&[u8]>, ServeError> {
        for image_name in self.mode.image_names(name) {
            if let Some(v) = self.image.get_xattr(nid, &image_name)? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// Opens inode `nid` for reading: `Ok(None)` when its content is in the
    /// image (or it has none), else the verified object file.
    fn open_content(&self, nid: Nid) -> Result<Option<File>, ServeError> {
        let inode = self.image.inode(nid)?;
        if inode.file_type() != Some(CfsType::Regular) {
            return Ok(None);
        }
        let Some(redirect) = self.image.redirect(nid)? else {
            if self
                .image
                .get_xattr(nid, cfs_format::overlay::METACOPY)?
                .is_some()
            {
                return Err(crate::objects::ObjectError::NoRedirect.into());
            }
            return Ok(None);
        };
        let Some(objects) = &self.objects else {
            return Err(ServeError::Io {
                op: "open an external file (no object store given)",
                source: std::io::Error::from_raw_os_error(rustix::io::Errno::IO.raw_os_error()),
            });
        };
        let digest = self.image.digest(nid)?;
        Ok(Some(objects.open_object(redirect, digest)?))
    }

    /// Reads `size` bytes at `offset` of an image-backed file into `out`.
    fn read_image(&self, nid: Nid, offset: u64, size: usize, out: &mut Vec<u8>) -> Answer {
        let inode = match self.image.inode(nid) {
            Ok(i) => i,
            Err(e) => return self.error(nid, e.into()),
        };
        let want = inode.size().saturating_sub(offset).min(size as u64) as usize;
        let start = out.len();
        while out.len() - start < want {
            let done = out.len() - start;
            match self
                .image
                .read_inode(&inode, offset + done as u64, want - done)
            {
                Ok([]) => break,
                Ok(piece) => out.extend_from_slice(piece),
                Err(e) => return self.error(nid, e.into()),
            }
        }
        Answer::Data
    }

    /// Reads `size` bytes at `offset` of an object file into `out`.
    fn read_object(
        &self,
        nid: Nid,
        file: &File,
        offset: u64,
        size: u32,
        out: &mut Vec<u8>,
    ) -> Answer {
        let start = out.len();
        out.resize(start + size as usize, 0);
        let mut done = 0;
        while done < size as usize {
            match file.read_at(&mut out[start + done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    out.truncate(start);
                    let e = ServeError::Io {
                        op: "read an object",
                        source: e,
                    };
                    return self.error(nid, e);
                }
            }
        }
        out.truncate(start + done);
        Answer::Data
    }

    /// The errno for `err` met on `nid` (logged once if worth it).
    fn error(&self, nid: Nid, err: ServeError) -> Answer {
        Answer::Error(self.errors.errno(nid, &err))
    }

    /// The INIT flags to ask for, given what the kernel `offers`; decides
    /// passthrough. The caller adds what the transport needs.
    pub fn init_flags(&self, offers: u64) -> u64 {
        let mut want = init::ASYNC_READ
            | init::BIG_WRITES
            | init::DO_READDIRPLUS
            | init::PARALLEL_DIROPS
            | init::CACHE_SYMLINKS
            | init::NO_OPENDIR_SUPPORT
            | init::MAX_PAGES;
        if self
            .image
            .composefs_flags()
            .is_some_and(|f| f & cfs_format::erofs::COMPOSEFS_FLAG_HAS_ACL != 0)
        {
            want |= init::POSIX_ACL;
        }
        if self.want_passthrough && offers & init::PASSTHROUGH != 0 {
            want |= init::PASSTHROUGH;
            self.passthrough.store(true, Ordering::Relaxed);
        }
        // Without passthrough nothing needs OPEN: see the module comment.
        let zero_open = !self.passthrough.load(Ordering::Relaxed)
            && self.mode.serves_contents()
            && offers & init::NO_OPEN_SUPPORT != 0;
        self.zero_open.store(zero_open, Ordering::Relaxed);
        if zero_open {
            want |= init::NO_OPEN_SUPPORT;
        }
        want & offers
    }

    /// The request counters line (`CFS_FUSE_STATS`), `None` when not kept.
    /// `transport` says how requests came.
    pub fn report(&self, transport: &str) -> Option<String> {
        let s = self.stats.as_ref()?;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut line = format!(
            "cfs-fuse stats: lookup={} getattr={} readdir={} readdirplus={} opendir={} open={} read={} passthrough={} {transport}",
            g(&s.lookup),
            g(&s.getattr),
            g(&s.readdir),
            g(&s.readdirplus),
            g(&s.opendir),
            g(&s.open),
            g(&s.read),
            self.passthrough.load(Ordering::Relaxed),
        );
        if let Some(c) = self.image.source().cache_stats() {
            line.push_str(&format!("\ncfs-fuse cache: {c}"));
        }
        Some(line)
    }

    /// Answers `req` into `out` (which the caller cleared). INIT is the
    /// session's; here it is refused.
    pub fn answer(&self, req: &Request, out: &mut Vec<u8>) -> Answer {
        let nid = self.inos.nid(req.nodeid());
        match req.op {
            Op::Lookup { name } => {
                count(self.stats().map(|s| &s.lookup));
                match self.lookup_entry(nid, name) {
                    // None: a negative entry the kernel caches for TTL.
                    Ok(attr) => {
                        reply::put(out, &reply::entry_out(attr.as_ref(), TTL));
                        Answer::Data
                    }
                    Err(e) => self.error(nid, e),
                }
            }
            Op::Getattr => {
                count(self.stats().map(|s| &s.getattr));
                match self.attr_of(nid) {
                    Ok((_, attr)) => reply::attr(out, &attr, TTL),
                    Err(e) => self.error(nid, e),
                }
            }
            Op::Readlink => match self.image.symlink_target(nid) {
                Ok(target) => reply::data(out, target),
                Err(e) => self.error(nid, e.into()),
            },
            Op::Opendir => {
                // ENOSYS once: the kernel stops sending OPENDIR/RELEASEDIR and
                // caches directory contents (FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR).
                count(self.stats().map(|s| &s.opendir));
                Answer::Error(Errno::NOSYS)
            }
            Op::Readdir { offset, size, plus } => self.readdir(nid, offset, size, plus, out),
            Op::Open { flags } => self.open(nid, flags, out),
            Op::Release { fh } => {
                self.release(fh);
                Answer::Data
            }
            Op::Read { fh, offset, size } => self.read(nid, fh, offset, size, out),
            Op::Statfs => {
                reply::put(
                    out,
                    &abi::StatfsOut {
                        blocks: self.image.size().div_ceil(4096).into(),
                        bsize: 4096.into(),
                        namelen: 255.into(),
                        frsize: 4096.into(),
                        ..Default::default()
                    },
                );
                Answer::Data
            }
            Op::Getxattr { name, size } => match self.xattr_value(nid, name) {
                Ok(Some(v)) => reply::xattr(out, v, size),
                Ok(None) => Answer::Error(Errno::NODATA),
                Err(e) => self.error(nid, e),
            },
            Op::Listxattr { size } => {
                let pid = req.pid();
                match self.xattr_list(nid, || crate::caller::may_list_trusted(pid)) {
                    Ok(list) => reply::xattr(out, &list, size),
                    Err(e) => self.error(nid, e),
                }
            }
            Op::Releasedir | Op::Destroy => Answer::Data,
            Op::Forget | Op::BatchForget => Answer::None,
            // Interrupts are not honoured: ENOSYS makes the kernel stop
            // sending them (as fuser did). INIT after INIT is a protocol error.
            Op::Interrupt { .. } | Op::Other(_) => Answer::Error(Errno::NOSYS),
            Op::Init { .. } => Answer::Error(Errno::PROTO),
        }
    }

    fn readdir(&self, dir: Nid, offset: u64, size: u32, plus: bool, out: &mut Vec<u8>) -> Answer {
        count(
            self.stats()
                .map(|s| if plus { &s.readdirplus } else { &s.readdir }),
        );
        let entries = match self.image.readdir(dir, offset) {
            Ok(e) => e,
            Err(e) => return self.error(dir, e.into()),
        };
        let mut listing = reply::Dir::new(out, size);
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => return self.error(dir, e.into()),
            };
            let attr = match self.attr_of(entry.nid) {
                Ok((inode, _)) if self.mode.hides_entry(inode.mode(), inode.rdev()) => continue,
                Ok((_, attr)) => Some(attr),
                Err(e) => {
                    // Listed without attributes; a lookup of it answers EIO.
                    self.errors.errno(entry.nid, &e);
                    None
                }
            };
            let added = if plus {
                // No attributes: node id 0, the kernel links nothing.
                let e = reply::entry_out(attr.as_ref(), TTL);
                listing.add_plus(&e, entry.next_offset, entry.name)
            } else {
                let (ino, mode) = match (attr, self.inos.ino(entry.nid)) {
                    (Some(a), _) => (a.ino.get(), a.mode.get()),
                    // A bad inode still lists its name; looking it up answers EIO.
                    (None, Some(ino)) => (ino, 0o100000),
                    (None, None) => continue,
                };
                listing.add(ino, entry.next_offset, mode, entry.name)
            };
            if !added {
                break;
            }
        }
        Answer::Data
    }

    fn open(&self, nid: Nid, flags: u32, out: &mut Vec<u8>) -> Answer {
        count(self.stats().map(|s| &s.open));
        if flags & rustix::fs::OFlags::ACCMODE.bits() != rustix::fs::OFlags::RDONLY.bits() {
            return Answer::Error(Errno::ROFS);
        }
        if self.zero_open.load(Ordering::Relaxed) {
            // Once: from now on the kernel opens files itself.
            return Answer::Error(Errno::NOSYS);
        }
        let keep = abi::fopen::KEEP_CACHE;
        if !self.mode.serves_contents() {
            // Overlay-lower: contents come from the object store through the
            // overlay on top; an external file opened here directly is refused.
            return match self.image.redirect(nid) {
                Ok(None) => reply::open(out, 0, keep, 0),
                Ok(Some(_)) => Answer::Error(Errno::PERM),
                Err(e) => self.error(nid, e.into()),
            };
        }
        let file = match self.open_content(nid) {
            Ok(None) => return reply::open(out, 0, keep, 0),
            Ok(Some(f)) => Arc::new(f),
            Err(e) => return self.error(nid, e),
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        if self.passthrough.load(Ordering::Relaxed) {
            let mut backing = self.backing.shard(&nid);
            let id = match backing.get_mut(&nid) {
                Some((id, n)) => {
                    *n += 1;
                    Some(id.clone())
                }
                None => match Backing::open(self.dev.clone(), &file) {
                    Ok(id) => {
                        let id = Arc::new(id);
                        backing.insert(nid, (id.clone(), 1));
                        Some(id)
                    }
                    // Refused (no privilege after all): serve with pread.
                    Err(_) => None,
                },
            };
            drop(backing);
            if let Some(id) = id {
                let open = OpenObject {
                    nid,
                    file,
                    passthrough: true,
                };
                self.handles.shard(&fh).insert(fh, open);
                return reply::open(out, fh, abi::fopen::PASSTHROUGH, id.id() as i32);
            }
        }
        let open = OpenObject {
            nid,
            file,
            passthrough: false,
        };
        self.handles.shard(&fh).insert(fh, open);
        reply::open(out, fh, keep, 0)
    }

    fn release(&self, fh: u64) {
        let Some(open) = self.handles.shard(&fh).remove(&fh) else {
            return;
        };
        if open.passthrough {
            let mut backing = self.backing.shard(&open.nid);
            if let Some((_, n)) = backing.get_mut(&open.nid) {
                *n -= 1;
                if *n == 0 {
                    backing.remove(&open.nid);
                }
            }
        }
    }

    fn read(&self, nid: Nid, fh: u64, offset: u64, size: u32, out: &mut Vec<u8>) -> Answer {
        count(self.stats().map(|s| &s.read));
        if fh == 0 && self.zero_open.load(Ordering::Relaxed) {
            // No OPEN was sent: open (and verify) the object for this read.
            return match self.open_content(nid) {
                Ok(None) => self.read_image(nid, offset, size as usize, out),
                Ok(Some(file)) => self.read_object(nid, &file, offset, size, out),
                Err(e) => self.error(nid, e),
            };
        }
        if fh == 0 {
            return self.read_image(nid, offset, size as usize, out);
        }
        let file = match self.handles.shard(&fh).get(&fh) {
            Some(open) => open.file.clone(),
            None => return Answer::Error(Errno::BADF),
        };
        self.read_object(nid, &file, offset, size, out)
    }
}
