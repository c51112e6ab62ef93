//! The image a mount serves: opened once, checked, and (with `digest=`)
//! measured, before anything is mounted. The open file is what the kernel
//! (erofs) or the FUSE server reads, so the bytes checked are the bytes
//! served, whatever happens to the path afterwards.
//!
//! **A digest is a promise about bytes, so the bytes must not change after
//! the check.** Where the file has fs-verity, the kernel measures it
//! (`FS_IOC_MEASURE_VERITY`) and keeps it immutable for as long as it
//! exists: the file itself is served. Without fs-verity, whoever may write
//! the file could rewrite it in place after the check, and a mount reading
//! the file would show the new bytes. So the file is copied, hashing while
//! copying, into a memfd that is then sealed against writes, shrinking and
//! growing (`F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`): that
//! private copy is what is compared with the digest and what every mode
//! serves (the kernel mode through a loop device, since erofs mounts only
//! files with a page-cache `read_folio`, which shmem lacks; FUSE maps it,
//! the seals being the kernel's guarantee the mapping stays valid). It
//! costs the image's size in memory (shmem, swappable; holes stay holes),
//! and no repository or writable place is needed, which is why it is a
//! memfd rather than a repository object. Without `digest=` nothing was
//! checked and the file is served as it is: the kernel reads it, and the
//! FUSE server reads it through its block cache, which answers EIO for
//! what it hadn't read once the file changes.
//!
//! Opening never blocks on a FIFO or device (`O_NONBLOCK` until the file is
//! known to be regular) and the headers are checked before any mount.

use crate::error::MountError;
use crate::sys::{self, Measured};
use cfs_format::fsverity::FsVerityHasher;
use cfs_format::reader::{HeaderError, Headers, OpenOptions, HEADERS_LEN};
use cfs_format::Digest;
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{Mode, OFlags, SealFlags, SeekFrom};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Why the served bytes can't change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frozen {
    /// The file has fs-verity.
    Verity,
    /// A sealed private copy, made for `digest=` (the file has no fs-verity).
    SealedCopy,
    /// Nothing keeps the file from changing (no digest was asked for).
    No,
}

/// An image opened and checked for mounting.
#[derive(Debug)]
pub struct CheckedImage {
    /// What is served: the image file itself, or its sealed copy.
    pub file: File,
    /// The path it was opened from, for messages.
    pub path: PathBuf,
    /// Whether the image says it holds POSIX ACLs (the composefs header flag).
    pub has_acl: bool,
    /// Why its bytes can't change, if they can't.
    pub frozen: Frozen,
}

impl CheckedImage {
    /// Opens `path`, checks its headers, and with `expected` checks its
    /// fs-verity digest (see the module doc for what is served then).
    pub fn open(path: &Path, expected: Option<Digest>) -> Result<CheckedImage, MountError> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map_err(|e| MountError::Io {
            op: "open image",
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        let file = File::from(fd);
        // A regular file is checked before the flag matters: a FIFO would
        // have blocked a plain open.
        if file.metadata().is_ok_and(|m| m.file_type().is_file()) {
            rustix::fs::fcntl_setfl(&file, OFlags::empty()).map_err(|e| MountError::Io {
                op: "set up image",
                path: path.to_path_buf(),
                source: e.into(),
            })?;
        }
        CheckedImage::from_file(file, path, expected)
    }

    /// As [`open`](Self::open), for an image the caller opened (`path` names
    /// it in messages, and is never opened).
    pub fn from_file(
        file: File,
        path: &Path,
        expected: Option<Digest>,
    ) -> Result<CheckedImage, MountError> {
        let io = |op: &'static str| {
            move |source: std::io::Error| MountError::Io {
                op,
                path: path.to_path_buf(),
                source,
            }
        };
        let meta = file.metadata().map_err(io("stat image"))?;
        if !meta.file_type().is_file() {
            return Err(MountError::BadImage {
                path: path.to_path_buf(),
                what: "not a regular file".into(),
            });
        }
        check_headers(&file, path)?;
        let measured = sys::measure_verity(file.as_fd()).map_err(|e| io("measure")(e.into()))?;
        let has_verity = matches!(measured, Measured::Sha256(_) | Measured::OtherAlgorithm);
        let (file, frozen) = match (expected, measured) {
            (None, _) if has_verity => (file, Frozen::Verity),
            (None, _) => (file, Frozen::No),
            (Some(expected), Measured::Sha256(found)) => {
                check_digest(path, expected, found, "measured by the kernel")?;
                (file, Frozen::Verity)
            }
            (Some(expected), _) => {
                let (copy, found) = sealed_copy(&file, meta.len()).map_err(io("copy"))?;
                check_digest(path, expected, found, "computed in userspace")?;
                (copy, Frozen::SealedCopy)
            }
        };
        // The headers of what is served (the copy's, when copied).
        let has_acl = check_headers(&file, path)?;
        Ok(CheckedImage {
            file,
            path: path.to_path_buf(),
            has_acl,
            frozen,
        })
    }
}

impl CheckedImage {
    /// Checks that every object the image names ([`Image::backing_objects`])
    /// is in one of `basedirs`: each is looked up beneath the directory's fd
    /// (`openat2` `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, `O_PATH`), so
    /// nothing outside it counts. Reads the image through the fd being
    /// served, not by its path.
    ///
    /// [`Image::backing_objects`]: cfs_format::reader::Image::backing_objects
    pub fn check_objects(&self, basedirs: &[PathBuf]) -> Result<(), MountError> {
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source: std::io::Error| MountError::Io { op, path, source }
        };
        let file = self.file.try_clone().map_err(io("reopen", &self.path))?;
        let bytes = cfs_fuse::source::ImageBytes::open(file).map_err(io("read", &self.path))?;
        let objects = cfs_format::reader::Image::open(bytes)
            .and_then(|img| img.backing_objects())
            .map_err(|e| MountError::BadImage {
                path: self.path.clone(),
                what: e.to_string(),
            })?;
        let dirs = basedirs
            .iter()
            .map(|d| {
                rustix::fs::open(
                    d,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| MountError::MissingBasedir {
                    path: d.clone(),
                    source: Some(e.into()),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // An object path `XX/REST` is looked up in the `XX/` directory,
        // opened once per directory beneath the object directory (no symlink
        // followed on the way); any other path is opened whole.
        let beneath = |dir: &OwnedFd, rel: &[u8], flags: OFlags| {
            rustix::fs::openat2(
                dir,
                rel,
                flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
                rustix::fs::ResolveFlags::BENEATH | rustix::fs::ResolveFlags::NO_SYMLINKS,
            )
        };
        let mut wanted: HashMap<[u8; 2], usize> = HashMap::new();
        for o in &objects {
            if let Some((prefix, _)) = object_path(o) {
                *wanted.entry(prefix).or_default() += 1;
            }
        }
        let mut subdirs: HashMap<(usize, [u8; 2]), Option<ObjectDir>> = HashMap::new();
        let mut present = |rel: &[u8]| {
            dirs.iter()
                .enumerate()
                .any(|(i, dir)| match object_path(rel) {
                    Some((prefix, name)) => {
                        let sub = subdirs.entry((i, prefix)).or_insert_with(|| {
                            let fd =
                                beneath(dir, &prefix, OFlags::PATH | OFlags::DIRECTORY).ok()?;
                            Some(ObjectDir::new(fd, wanted[&prefix]))
                        });
                        sub.as_ref().is_some_and(|sub| sub.holds(name))
                    }
                    None => beneath(dir, rel, OFlags::PATH).is_ok(),
                })
        };
        let missing: Vec<&Vec<u8>> = objects.iter().filter(|o| !present(o)).collect();
        match missing.first() {
            None => Ok(()),
            Some(first) => Err(MountError::MissingObjects {
                path: self.path.clone(),
                missing: missing.len(),
                total: objects.len(),
                first: String::from_utf8_lossy(first).into_owned(),
                basedirs: basedirs.to_vec(),
            }),
        }
    }
}

/// An object path `XX/NAME`: its directory and its name.
fn object_path(rel: &[u8]) -> Option<([u8; 2], &[u8])> {
    match rel {
        [a, b, b'/', name @ ..] if !name.is_empty() && !name.contains(&b'/') => {
            Some(([*a, *b], name))
        }
        _ => None,
    }
}

/// Objects wanted from one `XX/` directory before listing it beats a
/// `statx` per object: a listing reads only the directory's blocks, where
/// each `statx` reads the object's inode (a random read on a cold cache; a
/// `/usr` image's 112k objects took ~1.7 s that way).
const LIST_FROM: usize = 8;

/// One `XX/` directory of an object store, asked whether it holds names.
enum ObjectDir {
    /// Few objects wanted: `statx` each (no symlink followed).
    Stat(OwnedFd),
    /// Many wanted: the names of its entries that are not directories, read
    /// once. Either way a directory is not an object.
    Listed(std::collections::HashSet<Vec<u8>>),
}

impl ObjectDir {
    /// `fd` is the directory (`O_PATH`); `wanted` objects will be asked for.
    fn new(fd: OwnedFd, wanted: usize) -> ObjectDir {
        if wanted < LIST_FROM {
            return ObjectDir::Stat(fd);
        }
        let listed = rustix::fs::openat(
            &fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .and_then(rustix::fs::Dir::read_from)
        .and_then(|dir| {
            let mut names = std::collections::HashSet::new();
            for entry in dir {
                let entry = entry?;
                if entry.file_type() != rustix::fs::FileType::Directory {
                    names.insert(entry.file_name().to_bytes().to_vec());
                }
            }
            Ok(names)
        });
        match listed {
            Ok(names) => ObjectDir::Listed(names),
            Err(_) => ObjectDir::Stat(fd),
        }
    }

    fn holds(&self, name: &[u8]) -> bool {
        match self {
            ObjectDir::Stat(fd) => {
                rustix::fs::statat(fd, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).is_ok_and(
                    |st| {
                        rustix::fs::FileType::from_raw_mode(st.st_mode)
                            != rustix::fs::FileType::Directory
                    },
                )
            }
            ObjectDir::Listed(names) => names.contains(name),
        }
    }
}

fn check_digest(
    path: &Path,
    expected: Digest,
    found: Digest,
    how: &'static str,
) -> Result<(), MountError> {
    if found == expected {
        return Ok(());
    }
    Err(MountError::DigestMismatch {
        path: path.to_path_buf(),
        expected,
        found,
        how,
    })
}

/// Checks the composefs header and EROFS superblock (the rule's one home is
/// `cfs_format::reader::Headers`), and that the file holds every block the
/// superblock counts. Returns whether the image has ACLs.
pub fn check_headers(file: &File, path: &Path) -> Result<bool, MountError> {
    let bad = |e: HeaderError| MountError::BadImage {
        path: path.to_path_buf(),
        what: e.to_string(),
    };
    let io = |source| MountError::Io {
        op: "read image",
        path: path.to_path_buf(),
        source,
    };
    let len = file.metadata().map_err(io)?.len();
    // At most HEADERS_LEN, so it fits a usize.
    let mut start = vec![0u8; len.min(HEADERS_LEN as u64) as usize];
    file.read_exact_at(&mut start, 0).map_err(io)?;
    let headers = Headers::check(&start, len, OpenOptions::new()).map_err(bad)?;
    headers.check_complete(len).map_err(bad)?;
    Ok(headers.has_acl())
}

/// Copies the first `size` bytes of `src` into a new memfd, hashing what is
/// copied, then seals it: the copy and the fs-verity digest of exactly its
/// bytes. Holes in `src` (`SEEK_DATA`/`SEEK_HOLE`) stay holes in the copy.
/// A file that shrinks while being copied is an error; bytes it grows by
/// are not copied.
fn sealed_copy(src: &File, size: u64) -> std::io::Result<(File, Digest)> {
    let memfd = rustix::fs::memfd_create(
        "cfs-image",
        rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
    )?;
    let copy = File::from(memfd);
    copy.set_len(size)?;
    let mut hasher = FsVerityHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < size {
        // The next data at or after `at`; everything before it is a hole.
        let data = match rustix::fs::seek(src, SeekFrom::Data(at)) {
            Ok(d) => d.min(size),
            Err(rustix::io::Errno::NXIO) => size,
            Err(e) => return Err(e.into()),
        };
        while at < data {
            let n = (data - at).min(buf.len() as u64) as usize;
            buf[..n].fill(0);
            hasher.update(&buf[..n]);
            at += n as u64;
        }
        let hole = match rustix::fs::seek(src, SeekFrom::Hole(at)) {
            Ok(h) => h.min(size),
            Err(rustix::io::Errno::NXIO) => size,
            Err(e) => return Err(e.into()),
        };
        while at < hole {
            let n = (hole - at).min(buf.len() as u64) as usize;
            src.read_exact_at(&mut buf[..n], at).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    std::io::Error::other("the image shrank while it was being copied")
                } else {
                    e
                }
            })?;
            hasher.update(&buf[..n]);
            copy.write_all_at(&buf[..n], at)?;
            at += n as u64;
        }
    }
    rustix::fs::fcntl_add_seals(
        &copy,
        SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
    )?;
    Ok((copy, hasher.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Listed or asked one by one, an object directory answers the same:
    /// files and symlinks are there, directories and absent names are not.
    #[test]
    fn an_object_directory_answers_the_same_listed_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("ab");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("cdef"), b"x").unwrap();
        std::os::unix::fs::symlink("cdef", sub.join("link")).unwrap();
        std::fs::create_dir(sub.join("adir")).unwrap();
        let open =
            || rustix::fs::open(&sub, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let stat = ObjectDir::new(open(), 1);
        let listed = ObjectDir::new(open(), LIST_FROM);
        assert!(matches!(stat, ObjectDir::Stat(_)));
        assert!(matches!(listed, ObjectDir::Listed(_)));
        for (name, there) in [
            (&b"cdef"[..], true),
            (b"link", true),
            (b"adir", false),
            (b"nothing", false),
        ] {
            assert_eq!(listed.holds(name), there, "{name:?}");
            assert_eq!(stat.holds(name), there, "{name:?}");
        }
        assert_eq!(object_path(b"ab/cdef"), Some((*b"ab", &b"cdef"[..])));
        assert_eq!(object_path(b"ab/"), None);
        assert_eq!(object_path(b"ab/c/d"), None);
    }

    #[test]
    fn a_sealed_copy_has_the_bytes_and_digest_and_cannot_change() {
        let src = tempfile::tempfile().unwrap();
        // Data, a hole of 3 MiB, data, and a trailing hole.
        src.write_all_at(b"front", 0).unwrap();
        src.write_all_at(&[7u8; 5000], 3 << 20).unwrap();
        let size = (4 << 20) + 123;
        src.set_len(size).unwrap();
        let mut want = vec![0u8; size as usize];
        want[..5].copy_from_slice(b"front");
        want[3 << 20..(3 << 20) + 5000].fill(7);
        let (copy, digest) = sealed_copy(&src, size).unwrap();
        assert_eq!(digest, cfs_format::fsverity::digest(&want));
        let mut got = vec![0u8; size as usize];
        copy.read_exact_at(&mut got, 0).unwrap();
        assert_eq!(got, want);
        assert!(copy.write_all_at(b"x", 0).is_err(), "sealed against writes");
        assert!(copy.set_len(1).is_err(), "sealed against shrinking");
        assert_eq!(
            cfs_fuse::sys::immutable(&copy),
            Some(cfs_fuse::sys::Immutable::Sealed)
        );
        // The source changing afterwards changes nothing in the copy.
        src.write_all_at(b"FRONT", 0).unwrap();
        copy.read_exact_at(&mut got[..5], 0).unwrap();
        assert_eq!(&got[..5], b"front");
    }

    #[test]
    fn open_refuses_what_is_not_an_image_and_checks_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let e = CheckedImage::open(&fifo, None).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let junk = dir.path().join("junk");
        std::fs::write(&junk, vec![0u8; 8192]).unwrap();
        let e = CheckedImage::open(&junk, None).unwrap_err();
        assert!(e.to_string().contains("magic"), "{e}");
    }
}
