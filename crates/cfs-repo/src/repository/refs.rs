//! Image names: `images/ID` links an image id to its object, and
//! `images/refs/NAME` links a human name to an id. Both are relative
//! symlinks, as in composefs-rs, so the repository can be moved or
//! bind-mounted. A name is replaced atomically (new symlink, then rename).
//! The links are only ever read (`readlinkat`) and checked, never followed
//! by a path lookup: see [`Repository::image_file`].

use super::{RepoError, Repository};
use cfs_format::Digest;
use rustix::fs::AtFlags;
use rustix::io::Errno;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// The directory of image names, relative to the repository.
const REFS: &str = "images/refs";

/// Longest image name.
const MAX_NAME: usize = 200;

/// Checks an image name: letters, digits and `._-+@:`; not starting with `.`
/// or `-`; not a 64-hex string (that would read as an image id).
pub fn check_name(name: &str) -> Result<(), RepoError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-+@:".contains(&c))
        && Digest::from_hex(name.as_bytes()).is_err();
    if ok {
        Ok(())
    } else {
        Err(RepoError::InvalidName(name.to_owned()))
    }
}

impl Repository {
    /// Links `images/ID` to the image's object (no-op if present) and syncs `images/`.
    pub(crate) fn link_image_id(&self, id: &Digest) -> Result<(), RepoError> {
        let images = self.open_dir("images")?;
        let target = format!("../objects/{}", id.object_path());
        match rustix::fs::symlinkat(target.as_str(), &images, id.to_hex()) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => {
                return Err(RepoError::io(
                    "create",
                    &self.path.join("images").join(id.to_hex()),
                )(e))
            }
        }
        rustix::fs::fsync(&images).map_err(RepoError::io("sync", &self.path.join("images")))
    }

    /// Points the name at an image id, replacing what it named before.
    pub fn set_ref(&self, name: &str, id: &Digest) -> Result<(), RepoError> {
        check_name(name)?;
        self.replace_link(REFS, name, &format!("../{}", id.to_hex()))
    }

    /// The image id a name points to; `None` if there is no such name.
    /// A dangling or malformed ref is an error.
    pub fn read_ref(&self, name: &str) -> Result<Option<Digest>, RepoError> {
        check_name(name)?;
        self.read_ref_in(&self.open_dir(REFS)?, name)
    }

    fn read_ref_in(&self, refs: &OwnedFd, name: &str) -> Result<Option<Digest>, RepoError> {
        let rel = format!("{REFS}/{name}");
        let target = match rustix::fs::readlinkat(refs, name, Vec::new()) {
            Ok(t) => t,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(RepoError::io("read", &self.path.join(&rel))(e)),
        };
        let t = target.as_bytes();
        match t.strip_prefix(b"../").map(Digest::from_hex) {
            Some(Ok(d)) => Ok(Some(d)),
            _ => Err(RepoError::NotARepository {
                path: self.path.join(&rel),
                reason: format!("ref points to {:?}, not ../IMAGE-ID", target),
            }),
        }
    }

    /// The error for a name or id this repository does not have.
    pub(crate) fn unknown(&self, name: &str) -> RepoError {
        RepoError::UnknownImage {
            name: name.to_owned(),
            repo: self.path.clone(),
        }
    }

    /// Resolves a name or an image id (64 hex digits) to an image id that is
    /// present in `images/`.
    pub fn resolve(&self, name: &str) -> Result<Digest, RepoError> {
        let id = match Digest::from_hex(name.as_bytes()) {
            Ok(d) => d,
            Err(_) => self.read_ref(name)?.ok_or_else(|| self.unknown(name))?,
        };
        if !self.has_image_id(&id) {
            return Err(self.unknown(name));
        }
        Ok(id)
    }

    /// The image file a name or an image id names, for mounting and
    /// serving: the image's object `REPO/objects/XX/REST`. The `images/ID`
    /// link is resolved here, by hand: it must say exactly
    /// `../objects/XX/REST` for that id (anything else, pointing out of the
    /// repository or at another object, is refused), and the object must be
    /// a regular file reached through no symlink.
    pub fn image_file(&self, name: &str) -> Result<PathBuf, RepoError> {
        let id = self.resolve(name)?;
        self.image_object(&id)?;
        Ok(self.objects.object_path(&id))
    }

    /// Opens a stored image by name or id (see [`image_file`](Self::image_file)).
    pub fn open_image(&self, name: &str) -> Result<(Digest, std::fs::File), RepoError> {
        let id = self.resolve(name)?;
        Ok((id, self.image_object(&id)?))
    }

    /// Checks `images/ID` and opens the object it names.
    pub(super) fn image_object(&self, id: &Digest) -> Result<std::fs::File, RepoError> {
        let link = self.path.join("images").join(id.to_hex());
        let images = self.open_dir("images")?;
        let target = rustix::fs::readlinkat(&images, id.to_hex(), Vec::new())
            .map_err(RepoError::io("read", &link))?;
        let want = format!("../objects/{}", id.object_path());
        if target.as_bytes() != want.as_bytes() {
            return Err(RepoError::NotARepository {
                path: link,
                reason: format!("points to {target:?}, not {want}"),
            });
        }
        let file = self.objects.open_object(id)?;
        let st = rustix::fs::fstat(&file).map_err(RepoError::io("stat", &link))?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(RepoError::NotARepository {
                path: self.objects.object_path(id),
                reason: "the image object is not a regular file".into(),
            });
        }
        Ok(file)
    }

    /// True when `images/ID` exists.
    pub fn has_image_id(&self, id: &Digest) -> bool {
        self.open_dir("images").is_ok_and(|images| {
            rustix::fs::statat(&images, id.to_hex(), AtFlags::SYMLINK_NOFOLLOW).is_ok()
        })
    }

    /// Every ref: `(name, target id)`, sorted by name. Malformed entries are
    /// skipped here (fsck reports them).
    pub fn refs(&self) -> Result<Vec<(String, Digest)>, RepoError> {
        let refs = self.open_dir(REFS)?;
        let names =
            super::beneath::names(&refs).map_err(RepoError::io("read", &self.path.join(REFS)))?;
        let mut out = Vec::new();
        for name in names {
            let Ok(name) = name.into_string() else {
                continue;
            };
            if check_name(&name).is_err() {
                continue;
            }
            if let Ok(Some(id)) = self.read_ref_in(&refs, &name) {
                out.push((name, id));
            }
        }
        Ok(out)
    }

    /// Every image id in `images/`, sorted.
    pub fn image_ids(&self) -> Result<Vec<Digest>, RepoError> {
        Ok(self
            .names_in("images")?
            .into_iter()
            .filter_map(|n| Digest::from_hex(n.as_encoded_bytes()).ok())
            .collect())
    }

    /// Removes a name. When no other name points to the same image, its
    /// `images/ID` link goes too; the image's objects stay until `gc`.
    /// An image id removes the id link and every name pointing to it.
    /// Returns the id of the image.
    pub fn remove(&self, name: &str) -> Result<Digest, RepoError> {
        let id = match Digest::from_hex(name.as_bytes()) {
            Ok(id) if self.has_image_id(&id) => id,
            Ok(_) => return Err(self.unknown(name)),
            Err(_) => self.read_ref(name)?.ok_or_else(|| self.unknown(name))?,
        };
        let by_id = Digest::from_hex(name.as_bytes()).is_ok();
        let refs = self.open_dir(REFS)?;
        let images = self.open_dir("images")?;
        let mut others = false;
        for (n, target) in self.refs()? {
            if target != id {
                continue;
            }
            if by_id || n == name {
                rustix::fs::unlinkat(&refs, n.as_str(), AtFlags::empty())
                    .map_err(RepoError::io("remove", &self.path.join(REFS).join(&n)))?;
            } else {
                others = true;
            }
        }
        if !others {
            match rustix::fs::unlinkat(&images, id.to_hex(), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => {
                    return Err(RepoError::io(
                        "remove",
                        &self.path.join("images").join(id.to_hex()),
                    )(e))
                }
            }
        }
        rustix::fs::fsync(&refs).map_err(RepoError::io("sync", &self.path.join(REFS)))?;
        rustix::fs::fsync(&images).map_err(RepoError::io("sync", &self.path.join("images")))?;
        Ok(id)
    }
}
