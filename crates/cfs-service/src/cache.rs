//! The service's cache of validated images: a cfs repository owned by root
//! (default `/var/cache/cfs-mount`, mode 0700), holding images only, by
//! image id, each unnamed. A mount records a pin (`pins/NSID-MNTID`, with
//! the uid it was made for as `owner`), so the repository's own gc keeps
//! exactly the images some mount uses, and finds a mount gone with
//! `statmount(2)` however it went (unmounted, its namespace dead, a
//! reboot). The pins are also the record of who may unmount what, and
//! survive a restart of the service.

use cfs_format::Digest;
use cfs_repo::repository::{GcReport, PendingMount, Pin, PinState, RepoError, Repository};
use std::path::{Path, PathBuf};

/// The cache repository.
#[derive(Debug)]
pub struct Cache {
    path: PathBuf,
}

impl Cache {
    /// Opens the cache at `path`, creating it (private) if missing.
    pub fn open(path: &Path) -> Result<Cache, RepoError> {
        if Repository::is_repository(path) {
            Repository::open(path)?;
        } else {
            Repository::init(path)?;
        }
        Ok(Cache {
            path: path.to_path_buf(),
        })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn repo(&self) -> Result<Repository, RepoError> {
        Repository::open(&self.path)
    }

    /// The image `id` (whose bytes are `bytes`) ready to mount: the cached
    /// copy when there is one (`true`), else `bytes` stored now. Holds the
    /// cache's shared lock until the mount is pinned or given up.
    pub fn begin(&self, id: &Digest, bytes: &[u8]) -> Result<(PendingMount, bool), RepoError> {
        let repo = self.repo()?;
        if repo.has_image_id(id) {
            match self.repo()?.begin_mount(&id.to_hex()) {
                Ok(p) => return Ok((p, true)),
                // Collected meanwhile: store it again.
                Err(RepoError::UnknownImage { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok((repo.begin_mount_image(bytes)?, false))
    }

    /// Whether the image `id` is in the cache.
    pub fn has(&self, id: &Digest) -> bool {
        self.repo().is_ok_and(|r| r.has_image_id(id))
    }

    /// Every pin (the mounts made, with their owners).
    pub fn pins(&self) -> Result<Vec<Pin>, RepoError> {
        self.repo()?.pins()
    }

    /// The mounts made for the user `uid` that may still exist (live, or
    /// that the kernel could not tell).
    pub fn live_mounts_of(&self, uid: u32) -> Result<usize, RepoError> {
        Ok(self
            .pins()?
            .iter()
            .filter(|p| p.owner == Some(uid) && p.state != PinState::Stale)
            .count())
    }

    /// Removes the images no mount uses, and the pins of mounts gone. (The
    /// cache holds images only: no records under `streams/` to read.)
    pub fn collect(&self) -> Result<GcReport, RepoError> {
        self.repo()?.gc(&[], false)
    }
}
