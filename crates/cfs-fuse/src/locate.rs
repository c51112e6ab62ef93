//! Finding an image and the object directory of a repository laid out as
//! `REPO/objects/xx/rest`, `REPO/images/<64-hex id>` and
//! `REPO/images/refs/NAME`. A stand-in, by path only, until the repository
//! crate offers this; a swap replaces just this module.

use crate::source::Immutable;
use std::path::{Path, PathBuf};

/// An image resolved to a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The image file.
    pub path: PathBuf,
    /// Set when the file belongs to the repository, which never rewrites it.
    pub immutable: Option<Immutable>,
}

/// The object directory of repository `repo`.
pub fn objects_dir(repo: &Path) -> PathBuf {
    repo.join("objects")
}

/// Resolves `image`: an existing path as is, else (with a repository) an
/// image id (64 hex digits) under `images/`, else a ref under `images/refs/`.
/// A file inside the repository is marked immutable.
pub fn locate_image(image: &Path, repo: Option<&Path>) -> std::io::Result<Located> {
    let candidates: Vec<PathBuf> = match repo {
        Some(repo) if !image.exists() => {
            let name = image.as_os_str().as_encoded_bytes();
            let is_id = name.len() == 64 && name.iter().all(u8::is_ascii_hexdigit);
            if is_id {
                vec![repo.join("images").join(image)]
            } else {
                vec![repo.join("images/refs").join(image)]
            }
        }
        _ => vec![image.to_owned()],
    };
    let path = candidates.into_iter().next().unwrap_or_default();
    let real = std::fs::canonicalize(&path)?;
    let immutable = match repo.map(std::fs::canonicalize).transpose()? {
        Some(repo)
            if real.starts_with(repo.join("images")) || real.starts_with(repo.join("objects")) =>
        {
            Some(Immutable::RepositoryObject)
        }
        _ => None,
    };
    Ok(Located {
        path: real,
        immutable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_ids_refs_and_paths() {
        let repo = tempfile::tempdir().unwrap();
        let r = repo.path();
        let id = "ab".repeat(32);
        std::fs::create_dir_all(r.join("images/refs")).unwrap();
        std::fs::create_dir_all(r.join("objects/ab")).unwrap();
        std::fs::write(r.join("objects/ab").join(&id[2..]), b"img").unwrap();
        std::os::unix::fs::symlink(
            format!("../objects/ab/{}", &id[2..]),
            r.join("images").join(&id),
        )
        .unwrap();
        std::os::unix::fs::symlink(format!("../{id}"), r.join("images/refs/app")).unwrap();
        let by_id = locate_image(Path::new(&id), Some(r)).unwrap();
        assert_eq!(by_id.immutable, Some(Immutable::RepositoryObject));
        let by_ref = locate_image(Path::new("app"), Some(r)).unwrap();
        assert_eq!(by_ref.path, by_id.path);
        let outside = tempfile::NamedTempFile::new().unwrap();
        let plain = locate_image(outside.path(), Some(r)).unwrap();
        assert_eq!(plain.immutable, None);
        assert!(locate_image(Path::new("missing"), Some(r)).is_err());
        assert_eq!(objects_dir(r), r.join("objects"));
    }
}
