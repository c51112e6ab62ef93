//! Image names: `images/ID` links an image id to its object, and
//! `images/refs/NAME` links a human name to an id. Both are relative
//! symlinks, as in composefs-rs, so the repository can be moved or
//! bind-mounted. A name is replaced atomically (new symlink, then rename).

use super::{RepoError, Repository};
use cfs_format::Digest;
use rustix::fs::AtFlags;
use rustix::io::Errno;
use std::path::PathBuf;

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
    fn images_dir(&self) -> PathBuf {
        self.path.join("images")
    }

    /// Links `images/ID` to the image's object (no-op if present) and syncs `images/`.
    pub(crate) fn link_image_id(&self, id: &Digest) -> Result<(), RepoError> {
        let link = self.images_dir().join(id.to_hex());
        let target = format!("../objects/{}", id.object_path());
        match rustix::fs::symlinkat(
            target.as_str(),
            &self.dir,
            format!("images/{}", id.to_hex()),
        ) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(RepoError::io("create", &link)(e)),
        }
        self.sync_dir("images")
    }

    /// Points the name at an image id, replacing what it named before.
    pub fn set_ref(&self, name: &str, id: &Digest) -> Result<(), RepoError> {
        check_name(name)?;
        let tmp = format!("images/refs/.tmp-{}-{name}", std::process::id());
        let dest = format!("images/refs/{name}");
        let target = format!("../{}", id.to_hex());
        let _ = rustix::fs::unlinkat(&self.dir, tmp.as_str(), AtFlags::empty());
        rustix::fs::symlinkat(target.as_str(), &self.dir, tmp.as_str())
            .map_err(RepoError::io("create", &self.path.join(&tmp)))?;
        if let Err(e) = rustix::fs::renameat(&self.dir, tmp.as_str(), &self.dir, dest.as_str()) {
            // No temporary name left behind for gc to find.
            let _ = rustix::fs::unlinkat(&self.dir, tmp.as_str(), AtFlags::empty());
            return Err(RepoError::io("rename", &self.path.join(&dest))(e));
        }
        self.sync_dir("images/refs")
    }

    fn sync_dir(&self, rel: &str) -> Result<(), RepoError> {
        let p = self.path.join(rel);
        std::fs::File::open(&p)
            .and_then(|d| d.sync_all())
            .map_err(RepoError::std_io("sync", &p))
    }

    /// The image id a name points to; `None` if there is no such name.
    /// A dangling or malformed ref is an error.
    pub fn read_ref(&self, name: &str) -> Result<Option<Digest>, RepoError> {
        check_name(name)?;
        let rel = format!("images/refs/{name}");
        let target = match rustix::fs::readlinkat(&self.dir, rel.as_str(), Vec::new()) {
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

    /// Resolves a name or an image id (64 hex digits) to an image id that is
    /// present in `images/`.
    pub fn resolve(&self, name: &str) -> Result<Digest, RepoError> {
        let id = match Digest::from_hex(name.as_bytes()) {
            Ok(d) => d,
            Err(_) => self
                .read_ref(name)?
                .ok_or_else(|| RepoError::UnknownImage(name.to_owned()))?,
        };
        if !self.has_image_id(&id) {
            return Err(RepoError::UnknownImage(name.to_owned()));
        }
        Ok(id)
    }

    /// The image file a name or an image id names: `REPO/images/ID`, a
    /// symlink to the image's object. Mounting and serving open this path;
    /// [`Repository::resolve`] decides what it is.
    pub fn image_file(&self, name: &str) -> Result<PathBuf, RepoError> {
        let id = self.resolve(name)?;
        Ok(self.images_dir().join(id.to_hex()))
    }

    /// True when `images/ID` exists.
    pub fn has_image_id(&self, id: &Digest) -> bool {
        rustix::fs::statat(
            &self.dir,
            format!("images/{}", id.to_hex()),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .is_ok()
    }

    /// Every ref: `(name, target id)`, sorted by name. Malformed entries are
    /// skipped here (fsck reports them).
    pub fn refs(&self) -> Result<Vec<(String, Digest)>, RepoError> {
        let dir = self.path.join("images/refs");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(RepoError::std_io("read", &dir))? {
            let e = e.map_err(RepoError::std_io("read", &dir))?;
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            if check_name(&name).is_err() {
                continue;
            }
            if let Ok(Some(id)) = self.read_ref(&name) {
                out.push((name, id));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every image id in `images/`, sorted.
    pub fn image_ids(&self) -> Result<Vec<Digest>, RepoError> {
        let dir = self.images_dir();
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(RepoError::std_io("read", &dir))? {
            let e = e.map_err(RepoError::std_io("read", &dir))?;
            if let Ok(d) = Digest::from_hex(e.file_name().as_encoded_bytes()) {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes a name. When no other name points to the same image, its
    /// `images/ID` link goes too; the image's objects stay until `gc`.
    /// An image id removes the id link and every name pointing to it.
    /// Returns the id of the image.
    pub fn remove(&self, name: &str) -> Result<Digest, RepoError> {
        let id = match Digest::from_hex(name.as_bytes()) {
            Ok(id) if self.has_image_id(&id) => id,
            Ok(_) => return Err(RepoError::UnknownImage(name.to_owned())),
            Err(_) => self
                .read_ref(name)?
                .ok_or_else(|| RepoError::UnknownImage(name.to_owned()))?,
        };
        let by_id = Digest::from_hex(name.as_bytes()).is_ok();
        let mut others = false;
        for (n, target) in self.refs()? {
            if target != id {
                continue;
            }
            if by_id || n == name {
                let rel = format!("images/refs/{n}");
                rustix::fs::unlinkat(&self.dir, rel.as_str(), AtFlags::empty())
                    .map_err(RepoError::io("remove", &self.path.join(&rel)))?;
            } else {
                others = true;
            }
        }
        if !others {
            let rel = format!("images/{}", id.to_hex());
            match rustix::fs::unlinkat(&self.dir, rel.as_str(), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(RepoError::io("remove", &self.path.join(&rel))(e)),
            }
        }
        self.sync_dir("images/refs")?;
        self.sync_dir("images")?;
        Ok(id)
    }
}
