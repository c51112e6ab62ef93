//! OCI images: tar layers into trees, layers merged into one composefs image,
//! OCI image layouts read with every blob's digest checked, pulls through
//! skopeo, and what the repository records about them. See `docs/oci.md`.
//!
//! - [`tar`]: one layer tar (plain, gzip or zstd) into a layer [`Tree`]
//!   whose files are stored in the object store as they stream past; OCI
//!   whiteouts become overlay whiteouts (char device 0/0, opaque xattr).
//! - [`merge`]: layer trees applied bottom to top with OCI whiteout semantics.
//! - [`layout`]: an OCI image layout (`index.json`, manifests, configs, blobs).
//! - [`pull`]: transports (`oci:`, `oci-archive:`, `docker://`, `docker-archive:`).
//! - [`store`]: the repository records (tags, manifests, configs, layers) and
//!   what gc keeps.
//! - [`limits`]: the budget of an import (entries, nodes, memory, sizes).
//! - [`compression`]: a layer's gzip or zstd stream, every member or frame.
//!
//! Tar entries never touch the host file system: every entry goes into an
//! in-memory [`Tree`] and every file's bytes into the object store under a
//! name that is their digest, so a hostile tar cannot write outside the
//! repository by construction. What it can do is try to produce an image
//! whose tree is not what a careful unpacker would make; [`tar`] rejects or
//! normalises each such entry, naming it.
//!
//! [`Tree`]: cfs_format::Tree

pub mod compression;
pub mod layout;
pub mod limits;
pub mod merge;
pub mod pull;
pub mod store;
pub mod tar;

use std::path::PathBuf;

/// Why an OCI operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OciError {
    /// A tar entry that is rejected, naming the layer and the entry.
    #[error("{layer}: entry {path:?}: {reason}")]
    Entry {
        /// The layer (blob digest or file).
        layer: String,
        /// The entry's path as the tar spells it.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The tar stream itself is broken (bad header, truncated, bad compression).
    #[error("{layer}: {what}: {source}")]
    Stream {
        /// The layer (blob digest or file).
        layer: String,
        /// What was being read.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A blob whose content does not match the digest or size that names it.
    #[error("blob {digest}: {what}")]
    Digest {
        /// The blob's digest (`sha256:…`).
        digest: String,
        /// expected/found.
        what: String,
    },
    /// Applying a layer failed.
    #[error("layer {layer} ({digest}): {path:?}: {reason}")]
    Merge {
        /// Index of the layer, from 0 at the bottom.
        layer: usize,
        /// Its digest.
        digest: String,
        /// The path concerned.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// An OCI layout, manifest, index or config that is invalid.
    #[error("{what}: {reason}")]
    Invalid {
        /// Which file or blob.
        what: String,
        /// Why.
        reason: String,
    },
    /// A file operation failed.
    #[error("could not {op} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// An external tool (skopeo) failed.
    #[error("{tool} failed: {message}")]
    Tool {
        /// The tool and its arguments.
        tool: String,
        /// Its error output.
        message: String,
    },
    /// An image reference this code does not understand.
    #[error("invalid image reference {0:?}: use oci:DIR[:TAG], oci-archive:FILE[:TAG], docker://HOST/REPO[:TAG], docker-archive:FILE")]
    BadReference(String),
    /// No OCI image of that name in the repository.
    #[error("no OCI image named {0:?} (see `cfs oci images`)")]
    UnknownImage(String),
    /// A repository error.
    #[error(transparent)]
    Repo(#[from] cfs_repo::RepoError),
    /// An object store error.
    #[error(transparent)]
    Store(#[from] cfs_repo::store::StoreError),
    /// The merged tree can't be written as an image.
    #[error("cannot write image: {0}")]
    Write(#[from] cfs_format::writer::WriteError),
}

impl OciError {
    pub(crate) fn io<'a>(
        op: &'static str,
        path: &'a std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> OciError + 'a {
        move |source| OciError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Reserved xattr prefix for markers the layer trees carry between [`tar`]
/// and [`merge`]; tar input naming it is rejected, the merged image never has it.
pub const MARKER_PREFIX: &[u8] = b"trusted.cfs.oci.";
/// Marker on a directory the tar never described (created as a parent of
/// an entry): in a merge it takes the lower layer's metadata.
pub const MARKER_IMPLICIT: &[u8] = b"trusted.cfs.oci.implicit";
/// Marker on a hard link whose target is not in its layer: the value is the
/// target's path, resolved against the layers below when merging.
pub const MARKER_HARDLINK: &[u8] = b"trusted.cfs.oci.hardlink";
