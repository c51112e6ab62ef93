//! The fuser `Filesystem`: a thin layer that turns each request into reads of
//! the image (through [`Image`]), the mode's presentation rules
//! ([`ServeMode`]) and object opens ([`ObjectStore`]).
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
//! - `FUSE_CACHE_SYMLINKS`, `FUSE_PARALLEL_DIROPS`, `FUSE_MAX_PAGES` (fuser
//!   asks for the largest), and `FUSE_PASSTHROUGH` when serving contents as a
//!   process with `CAP_SYS_ADMIN`.

use crate::attr::{file_attr, negative_attr, InoMap};
use crate::errors::{ErrorLog, ServeError};
use crate::mode::ServeMode;
use crate::objects::ObjectStore;
use crate::source::ImageBytes;
use cfs_format::reader::{Image, Inode, Nid};
use cfs_format::FileType as CfsType;
use fuser::{
    BackingId, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How long the kernel may trust an entry or attribute: the image is immutable.
const TTL: Duration = Duration::from_secs(365 * 24 * 3600);
const GENERATION: Generation = Generation(0);

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

thread_local! {
    /// Per worker thread: the buffer reads are assembled in.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The filesystem served: one image, one mode, optionally an object store.
pub struct CfsFs {
    image: Image<ImageBytes>,
    inos: InoMap,
    mode: ServeMode,
    objects: Option<ObjectStore>,
    errors: ErrorLog,
    /// Decided in `init`: the kernel accepts backing files from us.
    passthrough: bool,
    /// Decided in `init`: files are opened without OPEN (no passthrough,
    /// contents served here, and the kernel supports zero-message opens).
    zero_open: bool,
    want_passthrough: bool,
    handles: Sharded<u64, OpenObject>,
    /// Backing files by nid, with their open count: the kernel wants one
    /// backing file per inode for all its open handles.
    backing: Sharded<Nid, (Arc<BackingId>, u64)>,
    next_fh: AtomicU64,
    stats: Option<Stats>,
}

impl CfsFs {
    /// A filesystem over `image` in `mode`. `objects` is where external files
    /// are read from in standalone mode; `passthrough` asks the kernel to read
    /// them directly (needs `CAP_SYS_ADMIN`; falls back to `pread` if refused).
    pub fn new(
        image: Image<ImageBytes>,
        mode: ServeMode,
        objects: Option<ObjectStore>,
        passthrough: bool,
    ) -> Self {
        CfsFs {
            inos: InoMap::new(image.root_nid()),
            image,
            mode,
            objects,
            errors: ErrorLog::default(),
            passthrough: false,
            zero_open: false,
            want_passthrough: passthrough && mode.serves_contents(),
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
    fn attr_of(&self, nid: Nid) -> Result<(Inode, fuser::FileAttr), ServeError> {
        let inode = self.image.inode(nid)?;
        let ino = self.inos.ino(nid).ok_or(ServeError::BadNid(nid.0))?;
        let attr = file_attr(ino, &inode).ok_or(ServeError::BadMode(inode.mode()))?;
        Ok((inode, attr))
    }

    /// The entry `name` in directory `dir`: `None` if absent or hidden.
    fn lookup_entry(&self, dir: Nid, name: &[u8]) -> Result<Option<fuser::FileAttr>, ServeError> {
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

    /// Reads `size` bytes at `offset` of an image-backed file into a reply.
    fn read_image(&self, nid: Nid, offset: u64, size: usize, reply: ReplyData) {
        let inode = match self.image.inode(nid) {
            Ok(i) => i,
            Err(e) => return reply.error(self.errors.errno(nid, &e.into())),
        };
        let want = inode.size().saturating_sub(offset).min(size as u64) as usize;
        // The common case: one contiguous run, answered straight from the image.
        match self.image.read_inode(&inode, offset, want) {
            Ok(piece) if piece.len() == want => return reply.data(piece),
            Ok(_) => {}
            Err(e) => return reply.error(self.errors.errno(nid, &e.into())),
        }
        READ_BUF.with_borrow_mut(|buf| {
            buf.clear();
            while buf.len() < want {
                let at = offset + buf.len() as u64;
                match self.image.read_inode(&inode, at, want - buf.len()) {
                    Ok([]) => break,
                    Ok(piece) => buf.extend_from_slice(piece),
                    Err(e) => return reply.error(self.errors.errno(nid, &e.into())),
                }
            }
            reply.data(buf)
        })
    }

    /// Reads `size` bytes at `offset` of an object file into a reply.
    fn read_object(&self, nid: Nid, file: &File, offset: u64, size: u32, reply: ReplyData) {
        READ_BUF.with_borrow_mut(|buf| {
            buf.resize(size as usize, 0);
            let mut done = 0;
            while done < buf.len() {
                match file.read_at(&mut buf[done..], offset + done as u64) {
                    Ok(0) => break,
                    Ok(n) => done += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let e = ServeError::Io {
                            op: "read an object",
                            source: e,
                        };
                        return reply.error(self.errors.errno(nid, &e));
                    }
                }
            }
            reply.data(&buf[..done])
        })
    }
}

impl Filesystem for CfsFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let caps = config.capabilities();
        let mut want = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_NO_OPENDIR_SUPPORT
            | InitFlags::FUSE_MAX_PAGES;
        if self
            .image
            .composefs_flags()
            .is_some_and(|f| f & cfs_format::erofs::COMPOSEFS_FLAG_HAS_ACL != 0)
        {
            want |= InitFlags::FUSE_POSIX_ACL;
        }
        if self.want_passthrough && caps.contains(InitFlags::FUSE_PASSTHROUGH) {
            want |= InitFlags::FUSE_PASSTHROUGH;
            self.passthrough = config.set_max_stack_depth(1).is_ok();
        }
        // Without passthrough nothing needs OPEN: see the module comment.
        self.zero_open = !self.passthrough
            && self.mode.serves_contents()
            && caps.contains(InitFlags::FUSE_NO_OPEN_SUPPORT);
        if self.zero_open {
            want |= InitFlags::FUSE_NO_OPEN_SUPPORT;
        }
        let _ = config.add_capabilities(want & caps);
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn destroy(&mut self) {
        if let Some(s) = &self.stats {
            let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
            eprintln!(
                "cfs-fuse stats: lookup={} getattr={} readdir={} readdirplus={} opendir={} open={} read={} passthrough={}",
                g(&s.lookup),
                g(&s.getattr),
                g(&s.readdir),
                g(&s.readdirplus),
                g(&s.opendir),
                g(&s.open),
                g(&s.read),
                self.passthrough
            );
            if let Some(c) = self.image.source().cache_stats() {
                eprintln!("cfs-fuse cache: {c}");
            }
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        count(self.stats().map(|s| &s.lookup));
        let dir = self.inos.nid(parent);
        match self.lookup_entry(dir, name.as_bytes()) {
            Ok(Some(attr)) => reply.entry(&TTL, &attr, GENERATION),
            // A negative entry the kernel caches for TTL.
            Ok(None) => reply.entry(&TTL, &negative_attr(), GENERATION),
            Err(e) => reply.error(self.errors.errno(dir, &e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        count(self.stats().map(|s| &s.getattr));
        let nid = self.inos.nid(ino);
        match self.attr_of(nid) {
            Ok((_, attr)) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(self.errors.errno(nid, &e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let nid = self.inos.nid(ino);
        match self.image.symlink_target(nid) {
            Ok(target) => reply.data(target),
            Err(e) => reply.error(self.errors.errno(nid, &e.into())),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // ENOSYS once: the kernel stops sending OPENDIR/RELEASEDIR and caches
        // directory contents (FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR).
        count(self.stats().map(|s| &s.opendir));
        reply.error(Errno::ENOSYS);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        count(self.stats().map(|s| &s.readdir));
        let dir = self.inos.nid(ino);
        let entries = match self.image.readdir(dir, offset) {
            Ok(e) => e,
            Err(e) => return reply.error(self.errors.errno(dir, &e.into())),
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => return reply.error(self.errors.errno(dir, &e.into())),
            };
            let attr = self.attr_of(entry.nid);
            if let Ok((inode, _)) = &attr {
                if self.mode.hides_entry(inode.mode(), inode.rdev()) {
                    continue;
                }
            }
            let (ino, kind) = match (&attr, self.inos.ino(entry.nid)) {
                (Ok((_, a)), _) => (a.ino, a.kind),
                // A bad inode still lists its name; looking it up answers EIO.
                (Err(_), Some(ino)) => (ino, fuser::FileType::RegularFile),
                (Err(_), None) => continue,
            };
            let name = OsStr::from_bytes(entry.name);
            if reply.add(ino, entry.next_offset, kind, name) {
                break;
            }
        }
        reply.ok()
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        count(self.stats().map(|s| &s.readdirplus));
        let dir = self.inos.nid(ino);
        let entries = match self.image.readdir(dir, offset) {
            Ok(e) => e,
            Err(e) => return reply.error(self.errors.errno(dir, &e.into())),
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => return reply.error(self.errors.errno(dir, &e.into())),
            };
            let attr = match self.attr_of(entry.nid) {
                Ok((inode, _)) if self.mode.hides_entry(inode.mode(), inode.rdev()) => continue,
                Ok((_, attr)) => attr,
                Err(e) => {
                    // Listed without attributes (node id 0: the kernel links
                    // nothing); a lookup of it answers EIO.
                    self.errors.errno(entry.nid, &e);
                    negative_attr()
                }
            };
            let name = OsStr::from_bytes(entry.name);
            if reply.add(attr.ino, entry.next_offset, name, &TTL, &attr, GENERATION) {
                break;
            }
        }
        reply.ok()
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        count(self.stats().map(|s| &s.open));
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        if self.zero_open {
            // Once: from now on the kernel opens files itself.
            return reply.error(Errno::ENOSYS);
        }
        let nid = self.inos.nid(ino);
        let keep = FopenFlags::FOPEN_KEEP_CACHE;
        if !self.mode.serves_contents() {
            // Overlay-lower: contents come from the object store through the
            // overlay on top; an external file opened here directly is refused.
            return match self.image.redirect(nid) {
                Ok(None) => reply.opened(FileHandle(0), keep),
                Ok(Some(_)) => reply.error(Errno::EPERM),
                Err(e) => reply.error(self.errors.errno(nid, &e.into())),
            };
        }
        let file = match self.open_content(nid) {
            Ok(None) => return reply.opened(FileHandle(0), keep),
            Ok(Some(f)) => Arc::new(f),
            Err(e) => return reply.error(self.errors.errno(nid, &e)),
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        if self.passthrough {
            let mut backing = self.backing.shard(&nid);
            let id = match backing.get_mut(&nid) {
                Some((id, n)) => {
                    *n += 1;
                    Some(id.clone())
                }
                None => match reply.open_backing(&*file) {
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
                self.handles.shard(&fh).insert(
                    fh,
                    OpenObject {
                        nid,
                        file,
                        passthrough: true,
                    },
                );
                return reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id);
            }
        }
        self.handles.shard(&fh).insert(
            fh,
            OpenObject {
                nid,
                file,
                passthrough: false,
            },
        );
        reply.opened(FileHandle(fh), keep)
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let Some(open) = self.handles.shard(&fh.0).remove(&fh.0) else {
            return reply.ok();
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
        reply.ok()
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        count(self.stats().map(|s| &s.read));
        let nid = self.inos.nid(ino);
        if fh.0 == 0 && self.zero_open {
            // No OPEN was sent: open (and verify) the object for this read.
            return match self.open_content(nid) {
                Ok(None) => self.read_image(nid, offset, size as usize, reply),
                Ok(Some(file)) => self.read_object(nid, &file, offset, size, reply),
                Err(e) => reply.error(self.errors.errno(nid, &e)),
            };
        }
        if fh.0 == 0 {
            return self.read_image(nid, offset, size as usize, reply);
        }
        let file = match self.handles.shard(&fh.0).get(&fh.0) {
            Some(open) => open.file.clone(),
            None => return reply.error(Errno::EBADF),
        };
        self.read_object(nid, &file, offset, size, reply)
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let blocks = self.image.size().div_ceil(4096);
        reply.statfs(blocks, 0, 0, 0, 0, 4096, 255, 4096)
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let nid = self.inos.nid(ino);
        match self.xattr_value(nid, name.as_bytes()) {
            Ok(Some(v)) if size == 0 => reply.size(v.len() as u32),
            Ok(Some(v)) if v.len() > size as usize => reply.error(Errno::ERANGE),
            Ok(Some(v)) => reply.data(v),
            Ok(None) => reply.error(Errno::NO_XATTR),
            Err(e) => reply.error(self.errors.errno(nid, &e)),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let nid = self.inos.nid(ino);
        match self.xattr_list(nid, || crate::caller::may_list_trusted(req.pid())) {
            Ok(list) if size == 0 => reply.size(list.len() as u32),
            Ok(list) if list.len() > size as usize => reply.error(Errno::ERANGE),
            Ok(list) => reply.data(&list),
            Err(e) => reply.error(self.errors.errno(nid, &e)),
        }
    }
}
