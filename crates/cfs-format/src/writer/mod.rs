//! Writes a [`Tree`] as a composefs EROFS image, byte for byte as C `mkcomposefs` does.
//!
//! Three passes: `prepare` (overlay xattrs, whiteouts, breadth-first
//! numbering), `layout` (where each inode, xattr and block goes), `emit`
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
    let layout = layout::layout(&prepared)?;
    Ok(emit::emit(&prepared, &layout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{mode, Node, Stat, Xattr};

    /// A device number the image can't hold is refused, naming the path
    /// (cut to 32 bits it would be another device, or a whiteout).
    #[test]
    fn a_device_number_over_32_bits_is_refused() {
        let mut tree = Tree::new(Node::new(Stat {
            mode: mode::S_IFDIR | 0o755,
            ..Stat::default()
        }));
        let dev = tree.add_node(Node::new(Stat {
            mode: mode::S_IFCHR | 0o644,
            rdev: 0x5400_0000_u64 << 32,
            ..Stat::default()
        }));
        tree.link(crate::NodeId::ROOT, b"dev", dev, false).unwrap();
        let e = write_image(&tree, &WriteOptions::default()).unwrap_err();
        assert!(e.to_string().contains("/dev: device number"), "{e}");
    }

    /// A root holding `dir/f`, whose xattrs are `n` values of `len` bytes.
    fn tree_with_xattrs(n: usize, len: usize) -> Tree {
        let dir = |m| {
            Node::new(Stat {
                mode: mode::S_IFDIR | m,
                nlink: 2,
                ..Stat::default()
            })
        };
        let mut tree = Tree::new(dir(0o755));
        let d = tree.add_node(dir(0o700));
        tree.link(tree.root(), b"dir", d, false).unwrap();
        let mut f = Node::new(Stat {
            mode: mode::S_IFREG | 0o644,
            nlink: 1,
            ..Stat::default()
        });
        f.xattrs = (0..n)
            .map(|i| Xattr {
                name: format!("user.big{i}").into_bytes(),
                value: vec![i as u8; len],
            })
            .collect();
        let f = tree.add_node(f);
        tree.link(d, b"f", f, false).unwrap();
        tree
    }

    /// Regression: `i_xattr_icount` was truncated to 16 bits, so an inode
    /// with more than 256 KiB of xattrs (five 60000-byte values) gave an
    /// image the kernel refuses (EUCLEAN); found by the differential test.
    #[test]
    fn xattrs_over_the_icount_limit_are_refused_not_truncated() {
        let err = write_image(&tree_with_xattrs(5, 60_000), &WriteOptions::default()).unwrap_err();
        match err {
            WriteError::Invalid { path, reason } => {
                assert_eq!(path, "/dir/f");
                assert!(reason.contains("more than an inode holds"), "{reason}");
            }
            e => panic!("{e:?}"),
        }
        // Four fit (240 KiB), and read back whole.
        let image = write_image(&tree_with_xattrs(4, 60_000), &WriteOptions::default()).unwrap();
        let image = crate::reader::Image::open(image).unwrap();
        let back = image.to_tree().unwrap();
        let f = back.lookup_path(b"/dir/f").unwrap();
        assert_eq!(
            back.node(f).xattrs,
            tree_with_xattrs(4, 60_000).node(crate::NodeId(2)).xattrs
        );
    }
}
