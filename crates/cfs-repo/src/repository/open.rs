//! Creating (`init`) and opening a repository.
//!
//! `init` creates the directories first and the version file last (written
//! to a temporary name and renamed), so a half-initialised repository is
//! never taken for a complete one, and running `init` again finishes it.

use super::{RepoError, Repository, FORMAT_VERSION, VERSION_FILE};
use crate::store::ObjectStore;
use rustix::fs::{Mode, OFlags};
use std::io;
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
pub(super) const TOP_LEVEL: [&str; 5] = [VERSION_FILE, "lock", "objects", "images", "streams"];

impl Repository {
    /// Creates a repository at `path` (and its parents), or completes or
    /// reopens one that is there. An existing non-empty directory that is not
    /// a repository is refused.
    pub fn init(path: &Path) -> Result<Repository, RepoError> {
        match std::fs::metadata(path) {
            Ok(m) if !m.is_dir() => {
                return Err(RepoError::NotARepository {
                    path: path.to_path_buf(),
                    reason: "it is not a directory".into(),
                })
            }
            Ok(_) if Self::is_repository(path) => return Self::open(path),
            Ok(_) => {
                let read = std::fs::read_dir(path).map_err(RepoError::std_io("read", path))?;
                for entry in read {
                    let entry = entry.map_err(RepoError::std_io("read", path))?;
                    let name = entry.file_name();
                    if !TOP_LEVEL.iter().any(|t| name == *t) {
                        return Err(RepoError::NotARepository {
                            path: path.to_path_buf(),
                            reason: format!(
                                "the directory is not empty (holds {:?}); refusing to init",
                                name
                            ),
                        });
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(path).map_err(RepoError::std_io("create", path))?;
            }
            Err(e) => return Err(RepoError::std_io("stat", path)(e)),
        }
        for d in DIRS {
            let p = path.join(d);
            match std::fs::create_dir(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(RepoError::std_io("create", &p)(e)),
            }
        }
        let version = path.join(VERSION_FILE);
        let tmp = path.join(format!(".{VERSION_FILE}.tmp"));
        std::fs::write(&tmp, format!("{FORMAT_VERSION}\n"))
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .map_err(RepoError::std_io("write", &tmp))?;
        std::fs::rename(&tmp, &version).map_err(RepoError::std_io("rename", &version))?;
        std::fs::File::open(path)
            .and_then(|d| d.sync_all())
            .map_err(RepoError::std_io("sync", path))?;
        Self::open(path)
    }

    /// Opens an existing repository, checking its version.
    pub fn open(path: &Path) -> Result<Repository, RepoError> {
        let dir = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            rustix::io::Errno::NOTDIR => RepoError::NotARepository {
                path: path.to_path_buf(),
                reason: "it is not a directory".into(),
            },
            rustix::io::Errno::NOENT => RepoError::NotARepository {
                path: path.to_path_buf(),
                reason: "it does not exist; create it with `cfs init`".into(),
            },
            e => RepoError::io("open", path)(e),
        })?;
        let version_path = path.join(VERSION_FILE);
        let version = match std::fs::read_to_string(&version_path) {
            Ok(v) => v,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(RepoError::NotARepository {
                    path: path.to_path_buf(),
                    reason: format!("no {VERSION_FILE}; create one with `cfs init`"),
                })
            }
            Err(e) => return Err(RepoError::std_io("read", &version_path)(e)),
        };
        if version.trim() != FORMAT_VERSION.to_string() {
            return Err(RepoError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: version.trim().chars().take(40).collect(),
            });
        }
        let objects = ObjectStore::open(&path.join("objects"))?;
        Ok(Repository {
            path: path.to_path_buf(),
            dir,
            objects,
        })
    }
}
