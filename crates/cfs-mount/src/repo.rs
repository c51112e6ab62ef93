//! Finding an image in a repository by name, against the documented layout:
//! `REPO/objects/XX/REST` (the object directory), `REPO/images/<64-hex id>`
//! (an image file or a symlink to one) and `REPO/images/refs/<name>` (a
//! symlink to `../<id>`). A stand-in for the repository crate's own lookup,
//! to be swapped for it once that is merged; callers only see [`resolve`].

use std::path::{Path, PathBuf};

/// An image found in a repository, and the object directory it reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoImage {
    /// The image file (through the ref's symlink).
    pub image: PathBuf,
    /// `REPO/objects`.
    pub objects: PathBuf,
}

/// Why a name could not be found in a repository.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The name can't be a ref or an image id.
    #[error("{0:?} is not a valid image name (no empty, `.` or `..` components, not absolute)")]
    BadName(String),
    /// Neither a ref nor an image id.
    #[error("no image {name:?} in repository {}: {} does not exist", .repo.display(), .tried.display())]
    NotFound {
        /// The repository.
        repo: PathBuf,
        /// The name.
        name: String,
        /// The path looked at.
        tried: PathBuf,
    },
    /// The repository has no object directory.
    #[error("{} has no object directory ({} is missing)", .repo.display(), .objects.display())]
    NoObjects {
        /// The repository.
        repo: PathBuf,
        /// `REPO/objects`.
        objects: PathBuf,
    },
}

fn is_image_id(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The path `name` names inside `repo`, without touching the file system:
/// a 64-hex image id is `images/<id>`, anything else a ref `images/refs/<name>`.
pub fn image_path(repo: &Path, name: &str) -> Result<PathBuf, ResolveError> {
    if is_image_id(name) {
        return Ok(repo.join("images").join(name));
    }
    let ok = name
        .split('/')
        .all(|c| !c.is_empty() && c != "." && c != "..");
    if !ok {
        return Err(ResolveError::BadName(name.to_string()));
    }
    Ok(repo.join("images").join("refs").join(name))
}

/// Resolves `name` (a ref or an image id) in `repo` to its image file and
/// the repository's object directory.
pub fn resolve(repo: &Path, name: &str) -> Result<RepoImage, ResolveError> {
    let tried = image_path(repo, name)?;
    if !tried.is_file() {
        return Err(ResolveError::NotFound {
            repo: repo.to_path_buf(),
            name: name.to_string(),
            tried,
        });
    }
    let objects = repo.join("objects");
    if !objects.is_dir() {
        return Err(ResolveError::NoObjects {
            repo: repo.to_path_buf(),
            objects,
        });
    }
    Ok(RepoImage {
        image: tried,
        objects,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_to_paths() {
        let r = Path::new("/r");
        let id = "ab".repeat(32);
        assert_eq!(
            image_path(r, &id).unwrap(),
            Path::new("/r/images").join(&id)
        );
        assert_eq!(
            image_path(r, "fedora").unwrap(),
            Path::new("/r/images/refs/fedora")
        );
        assert_eq!(
            image_path(r, "os/v1").unwrap(),
            Path::new("/r/images/refs/os/v1")
        );
        // Upper-case hex is not an id: it is looked up as a ref.
        let upper = "AB".repeat(32);
        assert_eq!(
            image_path(r, &upper).unwrap(),
            Path::new("/r/images/refs").join(&upper)
        );
        for bad in ["", "..", "../x", "/etc/passwd", "a//b", "a/./b", "a/"] {
            assert!(
                matches!(image_path(r, bad), Err(ResolveError::BadName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn resolves_refs_and_ids_through_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        let id = "cd".repeat(32);
        std::fs::create_dir_all(r.join("images/refs")).unwrap();
        std::fs::write(r.join("images").join(&id), b"img").unwrap();
        std::os::unix::fs::symlink(format!("../{id}"), r.join("images/refs/base")).unwrap();
        assert!(matches!(
            resolve(r, "base"),
            Err(ResolveError::NoObjects { .. })
        ));
        std::fs::create_dir(r.join("objects")).unwrap();
        let got = resolve(r, "base").unwrap();
        assert_eq!(std::fs::read(&got.image).unwrap(), b"img");
        assert_eq!(got.objects, r.join("objects"));
        assert_eq!(resolve(r, &id).unwrap().image, r.join("images").join(&id));
        let e = resolve(r, "nope").unwrap_err().to_string();
        assert!(e.contains("images/refs/nope does not exist"), "{e}");
    }
}
