//! Images in the repository: building one from a directory
//! ([`Repository::create_image`]), listing them, and reading the objects an
//! image names.
//!
//! `create_image` order, which is what makes a kill at any point harmless:
//! objects (each complete before it has a name), their directories synced, then the image
//! object, then `images/ID`, then the ref. Whatever is named is complete;
//! what a killed run leaves without a name is removed by `gc`.

use super::{LockMode, RepoError, Repository};
use crate::import::{self, ImportStats, Progress};
use crate::scan::{self, ScanOptions};
use cfs_format::reader::Image;
use cfs_format::writer::{self, WriteOptions};
use cfs_format::Digest;
use std::collections::BTreeSet;
use std::path::Path;

/// How to build an image from a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateOptions {
    /// How to read the directory; `skip_content` is forced on (content is
    /// read once, while it is stored).
    pub scan: ScanOptions,
    /// Image format versions.
    pub write: WriteOptions,
}

impl Default for CreateOptions {
    /// Hard links preserved, everything else as `mkcomposefs` does.
    fn default() -> Self {
        CreateOptions {
            scan: ScanOptions {
                hardlinks: true,
                ..ScanOptions::default()
            },
            write: WriteOptions::default(),
        }
    }
}

/// What `create_image` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateReport {
    /// The image id (fs-verity digest of the image).
    pub id: Digest,
    /// Size of the image in bytes.
    pub image_size: u64,
    /// Inodes in the image.
    pub inodes: u64,
    /// Files and objects.
    pub stats: ImportStats,
}

/// An image as `cfs images` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The image id.
    pub id: Digest,
    /// Names pointing to it (sorted; empty for an unnamed image).
    pub names: Vec<String>,
}

impl Repository {
    /// Stores the bytes of an image whose objects are in the store and
    /// names it `name`, in the order that keeps a crash harmless: every
    /// object durable, then the image object, `images/ID`, and the name last.
    /// `what` names the image in errors. The caller holds the shared lock.
    pub fn add_image(&self, image: &[u8], name: &str, what: &str) -> Result<Digest, RepoError> {
        super::refs::check_name(name)?;
        if image.len() as u64 > crate::input::MAX_IMAGE_BYTES {
            return Err(RepoError::ImageTooLarge {
                what: what.to_owned(),
                size: image.len() as u64,
            });
        }
        self.objects.sync()?;
        let stored = self.objects.insert_bytes_as(image, what)?;
        self.objects.sync()?;
        self.link_image_id(&stored.digest)?;
        self.set_ref(name, &stored.digest)?;
        Ok(stored.digest)
    }

    /// Builds an image of the directory `source` and stores it under `name`
    /// (replacing what the name pointed to). Holds the shared lock throughout.
    pub fn create_image(
        &self,
        source: &Path,
        name: &str,
        options: &CreateOptions,
        progress: &Progress,
    ) -> Result<CreateReport, RepoError> {
        super::refs::check_name(name)?;
        let _lock = self.lock(LockMode::Shared)?;
        let mut scan_options = options.scan;
        scan_options.skip_content = true;
        let mut scanned = scan::scan(source, &scan_options)?;
        let stats = import::store_contents(&mut scanned, &self.objects, progress)?;
        let image = writer::write_image(&scanned.tree, &options.write)?;
        let id = self.add_image(&image, name, &format!("the image of {}", source.display()))?;
        Ok(CreateReport {
            id,
            image_size: image.len() as u64,
            inodes: scanned.tree.len() as u64,
            stats,
        })
    }

    /// Every image with its names: named ones and those in `images/` only.
    pub fn images(&self) -> Result<Vec<ImageInfo>, RepoError> {
        let refs = self.refs()?;
        let mut out: Vec<ImageInfo> = self
            .image_ids()?
            .into_iter()
            .map(|id| ImageInfo {
                id,
                names: refs
                    .iter()
                    .filter(|(_, t)| *t == id)
                    .map(|(n, _)| n.clone())
                    .collect(),
            })
            .collect();
        out.sort_by(|a, b| a.names.cmp(&b.names).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Reads a stored image's bytes (at most [`MAX_IMAGE_BYTES`]).
    ///
    /// [`MAX_IMAGE_BYTES`]: crate::input::MAX_IMAGE_BYTES
    pub fn read_image(&self, id: &Digest) -> Result<Vec<u8>, RepoError> {
        Ok(self
            .objects
            .read_object(id, crate::input::MAX_IMAGE_BYTES)?)
    }

    /// The objects an image refers to (its external files' backing objects), sorted.
    pub fn image_objects(&self, id: &Digest) -> Result<BTreeSet<Digest>, RepoError> {
        let bytes = self.read_image(id)?;
        objects_of_image(bytes).map_err(|source| RepoError::CorruptImage {
            id: id.to_hex(),
            source,
        })
    }
}

/// The backing objects of an image ([`Image::backing_objects`]), as
/// digests: an object path that is not a digest's names nothing a
/// repository can hold. The whole image is read first ([`Image::to_tree`]):
/// gc and fsck stop at an image that does not read back completely.
pub fn objects_of_image(bytes: Vec<u8>) -> Result<BTreeSet<Digest>, cfs_format::reader::ReadError> {
    let image = Image::open(bytes)?;
    image.to_tree()?;
    Ok(image
        .backing_objects()?
        .iter()
        .filter_map(|p| Digest::from_object_path(p))
        .collect())
}

/// The image id [`Repository::create_image`] would store for `source` with
/// `options`, computed without a repository: the same scan (content read
/// and hashed, nothing stored) and the same writer, so the two can't differ.
pub fn compute_id(source: &Path, options: &CreateOptions) -> Result<Digest, RepoError> {
    let tree = tree_of_directory(source, options)?;
    let image = writer::write_image(&tree, &options.write)?;
    Ok(cfs_format::fsverity::digest(&image))
}

/// The tree [`Repository::create_image`] would build from `source`, each
/// file's content read and hashed (inline or by digest), nothing stored.
pub fn tree_of_directory(
    source: &Path,
    options: &CreateOptions,
) -> Result<cfs_format::Tree, RepoError> {
    let mut scan_options = options.scan;
    scan_options.skip_content = false;
    Ok(scan::scan(source, &scan_options)?.tree)
}

impl Repository {
    /// Stores the composefs image `bytes` (made elsewhere) under `name`,
    /// after reading it all back with the reader: a file that is not a
    /// valid composefs image is refused and nothing is stored. Its objects
    /// are not checked (see [`missing_objects`](Self::missing_objects)).
    /// `what` names the image in errors. Returns the image id.
    pub fn import_image(&self, bytes: &[u8], name: &str, what: &str) -> Result<Digest, RepoError> {
        super::refs::check_name(name)?;
        Image::open(bytes)
            .and_then(|img| img.to_tree())
            .map_err(|source| RepoError::NotAnImage {
                what: what.to_owned(),
                source,
            })?;
        let _lock = self.lock(LockMode::Shared)?;
        self.add_image(bytes, name, what)
    }

    /// The objects the image `id` names that the store does not have.
    pub fn missing_objects(&self, id: &Digest) -> Result<Vec<Digest>, RepoError> {
        Ok(self
            .image_objects(id)?
            .into_iter()
            .filter(|o| !self.objects.contains(o))
            .collect())
    }
}
