//! The cfs repository and its importers.
//!
//! - [`scan`]: reads a live directory tree into a [`cfs_format::Tree`], as `mkcomposefs DIR` does.
//! - [`source`]: reads the scanned tree's files again through its root fd, checking each is
//!   the inode the scan saw (safe on a tree someone else is changing).
//! - [`store`]: a content-addressed object directory (`XX/REST`, named by fs-verity
//!   digest): crash-safe, deduplicating inserts; listing and re-hashing.
//! - [`input`]: files named as input, opened without blocking, regular files only; what is
//!   read whole is capped ([`input::MAX_IMAGE_BYTES`]).
//! - [`import`]: completes a content-less scan by storing each file once, hashing while copying.
//! - [`repository`]: the repository (objects, images, names), with fsck, gc, locking and the
//!   pins that keep mounted images alive; records other crates keep under
//!   `streams/` (OCI: `cfs-oci`) reach it through [`repository::StreamRoots`].
//! - [`sys`]: the one system call rustix lacks (`statmount`) and the fs-verity ioctl, the crate's only `unsafe`.
#![deny(unsafe_code)]

pub mod import;
pub mod input;
pub mod repository;
pub mod scan;
pub mod source;
pub mod store;
pub mod sys;

pub use repository::{RepoError, Repository};
