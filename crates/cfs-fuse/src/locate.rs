//! Where an image file lives decides how it is read: a file inside a
//! repository (`REPO/images/…` or `REPO/objects/…`) is never rewritten, so
//! the server may map it; any other file is read through the block cache.
//! Name lookup (refs, image ids) is the repository crate's job.

use crate::source::Immutable;
use std::path::{Path, PathBuf};

/// An image resolved to a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The image file, with symlinks resolved.
    pub path: PathBuf,
    /// Set when the file belongs to the repository, which never rewrites it.
    pub immutable: Option<Immutable>,
}

/// Resolves the image file `image` and marks it immutable when it lies in
/// repository `repo`'s `images/` or `objects/`.
pub fn locate_image(image: &Path, repo: Option<&Path>) -> std::io::Result<Located> {
    let real = std::fs::canonicalize(image)?;
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
    fn repository_files_are_immutable_others_not() {
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
        let by_id = locate_image(&r.join("images").join(&id), Some(r)).unwrap();
        assert_eq!(by_id.immutable, Some(Immutable::RepositoryObject));
        assert_eq!(
            by_id.path,
            r.join("objects/ab").join(&id[2..]).canonicalize().unwrap()
        );
        let outside = tempfile::NamedTempFile::new().unwrap();
        let plain = locate_image(outside.path(), Some(r)).unwrap();
        assert_eq!(plain.immutable, None);
        assert_eq!(locate_image(outside.path(), None).unwrap().immutable, None);
        assert!(locate_image(&r.join("missing"), Some(r)).is_err());
    }
}
