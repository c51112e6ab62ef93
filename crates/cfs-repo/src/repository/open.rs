//! Creating (`init`) and opening a repository.
//!
//! `init` creates the directories first and the version file last (written
//! to a temporary name and renamed), so a half-initialised repository is
//! never taken for a complete one, and running `init` again finishes it.
//! Everything inside is reached through the top directory's fd
//! ([`beneath`]), and `init` makes that directory private: a repository holds
//! copies of whatever trees were imported (root's included), and one 0700
//! directory at the top keeps all of it from other users.

use super::{beneath, LockWait, RepoError, Repository, FORMAT_VERSION, VERSION_FILE};
use crate::store::ObjectStore;
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use std::os::fd::OwnedFd;
use std::path::Path;

/// Directories every repository has.
pub(super) const DIRS: [&str; 5] = [
    "objects",
    "images",
    "images/refs",
    "streams",
    "streams/refs",
];
/// Everything that may sit at the top of a repository.
pub(super) const TOP_LEVEL: [&str; 6] =
    [VERSION_FILE, "lock", "objects", "images", "streams", "pins"];

/// Mode of a repository's top directory: only its owner can enter it.
pub(super) const PRIVATE_MODE: u32 = 0o700;

impl Repository {
    /// Creates a repository at `path` (and its parents), or completes or
    /// reopens one that is there. An existing non-empty directory that is not
    /// a repository is refused. The top directory is made private (mode
    /// 0700; see [`Repository::made_private_from`]).
    pub fn init(path: &Path) -> Result<Repository, RepoError> {
        let root = match open_top(path) {
            Ok(fd) => fd,
            Err(RepoError::NotARepository { .. }) if !path.exists() => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(RepoError::std_io("create", parent))?;
                }
                match rustix::fs::mkdir(path, Mode::from_raw_mode(PRIVATE_MODE)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(RepoError::io("create", path)(e)),
                }
                open_top(path)?
            }
            Err(e) => return Err(e),
        };
        let made_private_from = make_private(&root, path)?;
        if !has_version_file(&root) {
            let names = beneath::names(&root).map_err(RepoError::io("read", path))?;
            if let Some(name) = names.iter().find(|n| !TOP_LEVEL.iter().any(|t| *n == *t)) {
                return Err(RepoError::NotARepository {
                    path: path.to_path_buf(),
                    reason: format!(
                        "the directory is not empty (holds {name:?}); refusing to init"
                    ),
                });
            }
            for d in DIRS {
                beneath::create_dirs(&root, d, Mode::from_raw_mode(0o755))
                    .map_err(RepoError::io("create", &path.join(d)))?;
            }
            write_version_file(&root, path)?;
        }
        let mut repo = Self::open_top_fd(path, root)?;
        repo.made_private_from = made_private_from;
        Ok(repo)
    }

    /// Opens an existing repository, checking its version.
    pub fn open(path: &Path) -> Result<Repository, RepoError> {
        Self::open_top_fd(path, open_top(path)?)
    }

    fn open_top_fd(path: &Path, dir: OwnedFd) -> Result<Repository, RepoError> {
        let version_path = path.join(VERSION_FILE);
        let version = match beneath::open(
            &dir,
            VERSION_FILE,
            OFlags::RDONLY | OFlags::NONBLOCK,
            Mode::empty(),
        ) {
            Ok(fd) => {
                let mut buf = [0u8; 64];
                let n = rustix::io::read(&fd, &mut buf)
                    .map_err(RepoError::io("read", &version_path))?;
                String::from_utf8_lossy(&buf[..n]).into_owned()
            }
            Err(Errno::NOENT) => {
                return Err(RepoError::NotARepository {
                    path: path.to_path_buf(),
                    reason: format!("no {VERSION_FILE}; create one with `cfs init`"),
                })
            }
            Err(e) => return Err(RepoError::io("open", &version_path)(e)),
        };
        if version.trim() != FORMAT_VERSION.to_string() {
            return Err(RepoError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: version.trim().chars().take(40).collect(),
            });
        }
        let objects_path = path.join("objects");
        let objects_dir =
            beneath::open_dir(&dir, "objects").map_err(RepoError::io("open", &objects_path))?;
        let objects = ObjectStore::from_dir(&objects_path, objects_dir);
        Ok(Repository {
            path: path.to_path_buf(),
            dir,
            objects,
            made_private_from: None,
            lock_wait: LockWait::default(),
        })
    }

    /// When [`init`](Self::init) found the top directory open to others,
    /// the mode it had (it is 0700 now); `None` when it was private already
    /// or the repository was only opened.
    pub fn made_private_from(&self) -> Option<u32> {
        self.made_private_from
    }

    /// The permission bits of the top directory now.
    pub fn mode(&self) -> Result<u32, RepoError> {
        let st = rustix::fs::fstat(&self.dir).map_err(RepoError::io("stat", &self.path))?;
        Ok(st.st_mode & 0o7777)
    }
}

/// Opens the top directory (the path is the caller's: symlinks in it are
/// followed, as for any path given on a command line), which must be the
/// caller's own or root's ([`RepoError::OtherOwner`]): whoever owns a
/// repository controls what every image in it holds. (Root of a user
/// namespace sees the machine's root as unmapped, so it takes only its own.)
fn open_top(path: &Path) -> Result<OwnedFd, RepoError> {
    let dir = open_dir(path)?;
    let owner = rustix::fs::fstat(&dir)
        .map_err(RepoError::io("stat", path))?
        .st_uid;
    let you = rustix::process::geteuid().as_raw();
    if owner != you && owner != 0 {
        return Err(RepoError::OtherOwner {
            path: path.to_path_buf(),
            owner,
            you,
        });
    }
    Ok(dir)
}

fn open_dir(path: &Path) -> Result<OwnedFd, RepoError> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::NOTDIR => RepoError::NotARepository {
            path: path.to_path_buf(),
            reason: "it is not a directory".into(),
        },
        Errno::NOENT => RepoError::NotARepository {
            path: path.to_path_buf(),
            reason: "it does not exist; create it with `cfs init`".into(),
        },
        e => RepoError::io("open", path)(e),
    })
}

/// Takes group and other access away from the top directory; returns the
/// mode it had when it changed anything.
fn make_private(dir: &OwnedFd, path: &Path) -> Result<Option<u32>, RepoError> {
    let st = rustix::fs::fstat(dir).map_err(RepoError::io("stat", path))?;
    let mode = st.st_mode & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    rustix::fs::fchmod(dir, Mode::from_raw_mode(PRIVATE_MODE)).map_err(|e| {
        RepoError::NotARepository {
            path: path.to_path_buf(),
            reason: format!(
                "its mode {mode:04o} lets others read it, and it could not be made private \
                 (0700): {e}"
            ),
        }
    })?;
    Ok(Some(mode))
}

fn has_version_file(dir: &OwnedFd) -> bool {
    rustix::fs::statat(dir, VERSION_FILE, AtFlags::SYMLINK_NOFOLLOW).is_ok()
}

/// Writes the version file under a temporary name and renames it into place.
fn write_version_file(dir: &OwnedFd, path: &Path) -> Result<(), RepoError> {
    let tmp = format!(".{VERSION_FILE}.tmp");
    let tmp_path = path.join(&tmp);
    let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
    let fd = beneath::open(
        dir,
        &tmp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
        Mode::from_raw_mode(0o644),
    )
    .map_err(RepoError::io("create", &tmp_path))?;
    let text = format!("{FORMAT_VERSION}\n");
    rustix::io::write(&fd, text.as_bytes())
        .and_then(|_| rustix::fs::fsync(&fd))
        .map_err(RepoError::io("write", &tmp_path))?;
    rustix::fs::renameat(dir, tmp.as_str(), dir, VERSION_FILE)
        .map_err(RepoError::io("rename", &path.join(VERSION_FILE)))?;
    rustix::fs::fsync(dir).map_err(RepoError::io("sync", path))
}
