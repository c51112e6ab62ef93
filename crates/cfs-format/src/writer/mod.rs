//! Writes a [`Tree`](crate::Tree) as a composefs EROFS image, byte for byte as C `mkcomposefs` does.
//!
//! Three passes: [`prepare`] (overlay xattrs, whiteouts, breadth-first
//! numbering), [`layout`] (where each inode, xattr and block goes), [`emit`]
//! (the bytes). The whole image is built in memory: it holds metadata only.

mod emit;
mod layout;
mod prepare;

use crate::Tree;

/// The composefs format versions to choose from: the lowest version in the
/// range that can express the tree is used (1 is needed for whiteouts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// Lowest format version to write (default 0).
    pub min_version: u32,
    /// Highest format version to write (default 1).
    pub max_version: u32,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            min_version: 0,
            max_version: 1,
        }
    }
}

/// Why a tree can't be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// A requested format version this writer does not know.
    #[error("unsupported composefs format version {0} (supported: 0 and 1)")]
    UnsupportedVersion(u32),
    /// A node that can't be represented, naming the path and the reason.
    #[error("{path}: {reason}")]
    Invalid {
        /// Path of the node.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Writes the tree as an image; returns its bytes and the format version chosen.
pub fn write_image(tree: &Tree, options: &WriteOptions) -> Result<Vec<u8>, WriteError> {
    let prepared = prepare::prepare(tree, options.min_version, options.max_version)?;
    let layout = layout::layout(&prepared);
    Ok(emit::emit(&prepared, &layout))
}
