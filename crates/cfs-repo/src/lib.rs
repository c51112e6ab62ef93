//! The cfs repository and its importers.
//!
//! - [`scan`]: reads a live directory tree into a [`cfs_format::Tree`], as `mkcomposefs DIR` does.
//! - [`objects`]: a plain object directory (`--digest-store`) filled from a scan.
#![deny(unsafe_code)]

pub mod objects;
pub mod scan;
