//! The cfs repository and its importers.
//!
//! - [`scan`]: reads a live directory tree into a [`cfs_format::Tree`], as `mkcomposefs DIR` does.
#![deny(unsafe_code)]

pub mod scan;
