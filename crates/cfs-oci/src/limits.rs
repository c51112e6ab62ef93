//! The budget of an import: what one layer, and one image made of layers,
//! may hold, and what the trees built from them may cost in memory. Every
//! limit of the OCI import is here, with its default; `docs/oci.md`
//! ("Budget") lists them. An input over one is refused with an error naming
//! the limit (by its field name here) and the entry.
//!
//! **Why both counts and bytes.** A tar entry costs 512 bytes of archive,
//! but its path can imply up to 2048 directories (`a/b/c/…`), each a node
//! of the layer tree, and compression makes the archive smaller still. So
//! nodes are counted, implicit directories included, and every node is
//! charged [`NODE_COST`] bytes plus the bytes it holds (name, xattrs, inline
//! content, symlink target or object path): that estimate of the tree's
//! memory is what `max_layer_bytes` and `max_image_bytes` bound. Peak memory
//! of an import is a small multiple of the image's charge (the layer trees,
//! the merged tree, then the image being written), measured by the tar-bomb
//! tests (`crates/cfs/tests/cfs/oci/bombs.rs`).

use cfs_format::tree::DirEntry;
use cfs_format::{Node, Xattr};
use std::sync::atomic::{AtomicU64, Ordering};

/// What one node of a tree is charged besides the bytes it holds: the node,
/// its directory entry (twice: a directory's entries grow by doubling), and
/// allocator overhead on the few vectors each has. Measured against the
/// peak RSS of the tar-bomb tests: a node costs at most this in a layer tree.
pub const NODE_COST: u64 =
    (std::mem::size_of::<Node>() + 2 * std::mem::size_of::<DirEntry>() + 64) as u64;

/// What one xattr is charged besides its name and value: the entry and the
/// allocator overhead of its two vectors.
const XATTR_COST: usize = std::mem::size_of::<Xattr>() + 32;

/// The budget of one import. [`Limits::default`] is what the CLI uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Tar entries in one layer (extension headers not counted).
    pub max_entries: u64,
    /// Nodes of one layer tree: its entries and every directory their paths
    /// imply (`a/b/c/f` alone makes four).
    pub max_layer_nodes: u64,
    /// Memory of one layer tree: [`NODE_COST`] per node plus the bytes it holds.
    pub max_layer_bytes: u64,
    /// Nodes of all the layer trees of one image together (the merged image
    /// has at most that many).
    pub max_image_nodes: u64,
    /// Memory of all the layer trees of one image together, counted as for
    /// `max_layer_bytes`.
    pub max_image_bytes: u64,
    /// Bytes of one path, after PAX and GNU long names (Linux `PATH_MAX`).
    pub max_path: usize,
    /// Components of one path.
    pub max_depth: usize,
    /// Bytes of the extension headers before one entry: PAX records and GNU
    /// long names, which are read into memory whole (as are GNU sparse maps).
    pub max_extension: u64,
    /// Size of one file.
    pub max_file_size: u64,
    /// Bytes of one entry's xattrs (names and values).
    pub max_xattr_bytes: usize,
    /// Zeros the holes of one layer's sparse files add to what it stores
    /// (objects are written whole: a few bytes of sparse map could
    /// otherwise ask for terabytes of disk and hashing).
    pub max_sparse_holes: u64,
    /// Size of a stored layer record (and of one read back).
    pub max_record_bytes: u64,
    /// Bytes a layer may have after its tar's end-of-archive block. A tar
    /// is padded with zeros to a whole record (10 KiB by default, larger
    /// with a larger blocking factor, `tar -b 8192` making 4 MiB records);
    /// OCI tools write none. Without a bound, an endless stream of zeros
    /// (`/dev/zero`, or a pipe that never closes) is an empty archive read
    /// forever.
    pub max_trailer: u64,
    /// How many times its compressed bytes the layers of one image may
    /// decompress to, once they have decompressed to more than
    /// `expansion_floor`: past it, the layer being read is refused. Real
    /// layers compress 2 to 10 times; a compressed stream of zeros expands
    /// about 1,000 times (gzip) or 30,000 times (zstd), so that a 263 KiB
    /// `.tar.zst` holding a file of zeros would write 8 GiB. 1000 still
    /// takes a gzip'd file of zeros (a `lastlog`) in an image that holds
    /// data besides (`docs/oci.md`, "Why 1000 and 64 MiB").
    pub max_expansion_ratio: u64,
    /// Decompressed bytes the layers of one image may always reach,
    /// whatever their ratio (small layers are never refused for it).
    pub expansion_floor: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 1 << 21,
            max_layer_nodes: 1 << 21,
            max_layer_bytes: 1 << 30,
            max_image_nodes: 1 << 22,
            max_image_bytes: 2 << 30,
            max_path: 4096,
            max_depth: 1024,
            max_extension: 1 << 20,
            max_file_size: 1 << 40,
            max_xattr_bytes: 1 << 20,
            max_sparse_holes: 4 << 30,
            max_record_bytes: 1 << 30,
            max_trailer: 4 << 20,
            max_expansion_ratio: 1000,
            expansion_floor: 64 << 20,
        }
    }
}

/// What a node costs: [`NODE_COST`] plus the bytes it holds, its name included.
pub fn node_cost(node: &Node, name_len: usize) -> u64 {
    let xattrs: usize = node
        .xattrs
        .iter()
        .map(|x| XATTR_COST + x.name.len() + x.value.len())
        .sum();
    let held = name_len
        + xattrs
        + node.payload.as_ref().map_or(0, Vec::len)
        + node.content.as_ref().map_or(0, Vec::len);
    NODE_COST + held as u64
}

/// A limit that was exceeded: its field name in [`Limits`] and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    /// The field of [`Limits`].
    pub limit: &'static str,
    /// Its value.
    pub value: u64,
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "over the limit {} = {}", self.limit, self.value)
    }
}

/// The nodes and bytes charged so far to the layers of one image, and the
/// bytes their compressed streams were read and decompressed to, shared by
/// the layers read in parallel.
#[derive(Debug)]
pub struct ImageCharge {
    limits: Limits,
    nodes: AtomicU64,
    bytes: AtomicU64,
    compressed: AtomicU64,
    decompressed: AtomicU64,
}

impl ImageCharge {
    /// Nothing charged yet, against `limits`.
    pub fn new(limits: &Limits) -> ImageCharge {
        ImageCharge {
            limits: *limits,
            nodes: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            compressed: AtomicU64::new(0),
            decompressed: AtomicU64::new(0),
        }
    }

    /// Charges `compressed` bytes read from a compressed layer and the
    /// `decompressed` bytes they gave; past `max_expansion_ratio` (once past
    /// `expansion_floor`), says so. Returns the image's totals so far:
    /// (compressed, decompressed).
    pub fn expand(&self, compressed: u64, decompressed: u64) -> Result<(u64, u64), Exceeded> {
        let c = self.compressed.fetch_add(compressed, Ordering::Relaxed) + compressed;
        let d = self.decompressed.fetch_add(decompressed, Ordering::Relaxed) + decompressed;
        let ratio = self.limits.max_expansion_ratio;
        if d > self.limits.expansion_floor && d > c.saturating_mul(ratio) {
            return Err(Exceeded {
                limit: "max_expansion_ratio",
                value: ratio,
            });
        }
        Ok((c, d))
    }

    /// The limits charged against.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Charges `nodes` nodes of `bytes` bytes; past a limit, says which.
    pub fn charge(&self, nodes: u64, bytes: u64) -> Result<(), Exceeded> {
        let n = self.nodes.fetch_add(nodes, Ordering::Relaxed) + nodes;
        if n > self.limits.max_image_nodes {
            return Err(Exceeded {
                limit: "max_image_nodes",
                value: self.limits.max_image_nodes,
            });
        }
        let b = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if b > self.limits.max_image_bytes {
            return Err(Exceeded {
                limit: "max_image_bytes",
                value: self.limits.max_image_bytes,
            });
        }
        Ok(())
    }

    /// What was charged: (nodes, bytes).
    pub fn charged(&self) -> (u64, u64) {
        (
            self.nodes.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// The charge of one layer tree being built, and of its image.
#[derive(Debug)]
pub struct LayerCharge<'a> {
    image: &'a ImageCharge,
    nodes: u64,
    bytes: u64,
}

impl<'a> LayerCharge<'a> {
    /// A layer of `image`, nothing charged yet.
    pub fn new(image: &'a ImageCharge) -> LayerCharge<'a> {
        LayerCharge {
            image,
            nodes: 0,
            bytes: 0,
        }
    }

    /// The limits charged against.
    pub fn limits(&self) -> &Limits {
        self.image.limits()
    }

    /// Charges one node of `bytes` bytes to the layer and the image.
    pub fn node(&mut self, bytes: u64) -> Result<(), Exceeded> {
        self.add(1, bytes)
    }

    /// Charges bytes added to a node already charged.
    pub fn bytes(&mut self, bytes: u64) -> Result<(), Exceeded> {
        self.add(0, bytes)
    }

    fn add(&mut self, nodes: u64, bytes: u64) -> Result<(), Exceeded> {
        let limits = self.image.limits();
        self.nodes += nodes;
        self.bytes += bytes;
        if self.nodes > limits.max_layer_nodes {
            return Err(Exceeded {
                limit: "max_layer_nodes",
                value: limits.max_layer_nodes,
            });
        }
        if self.bytes > limits.max_layer_bytes {
            return Err(Exceeded {
                limit: "max_layer_bytes",
                value: limits.max_layer_bytes,
            });
        }
        self.image.charge(nodes, bytes)
    }

    /// What this layer was charged: (nodes, bytes).
    pub fn charged(&self) -> (u64, u64) {
        (self.nodes, self.bytes)
    }
}

/// Charges a whole tree (a layer read back from its record) to `charge`.
pub fn charge_tree(charge: &mut LayerCharge<'_>, tree: &cfs_format::Tree) -> Result<(), Exceeded> {
    for (_, node) in tree.nodes() {
        let names: usize = node.entries.iter().map(|e| e.name.len()).sum();
        charge.node(node_cost(node, 0) + names as u64)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_is_bounded_past_its_floor() {
        let limits = Limits {
            max_expansion_ratio: 10,
            expansion_floor: 1000,
            ..Limits::default()
        };
        // (charges of (compressed, decompressed), refused at the last)
        let table: &[(&[(u64, u64)], bool)] = &[
            // Under the floor, any ratio.
            (&[(1, 1000)], false),
            (&[(1, 1001)], true),
            // Past it, the ratio of the totals.
            (&[(100, 900), (10, 200)], false),
            (&[(100, 900), (10, 201)], true),
            // Layers of one image share the floor.
            (&[(0, 600), (0, 600)], true),
        ];
        for &(charges, refused) in table {
            let image = ImageCharge::new(&limits);
            let results: Vec<_> = charges.iter().map(|&(c, d)| image.expand(c, d)).collect();
            let (last, before) = results.split_last().unwrap();
            assert!(before.iter().all(Result::is_ok), "{charges:?}");
            assert_eq!(
                last.err().map(|e| e.limit),
                refused.then_some("max_expansion_ratio"),
                "{charges:?}"
            );
        }
    }

    #[test]
    fn layer_and_image_limits_name_themselves() {
        let limits = Limits {
            max_layer_nodes: 3,
            max_layer_bytes: 1000,
            max_image_nodes: 5,
            max_image_bytes: 1500,
            ..Limits::default()
        };
        // (charges of layer A, of layer B, the limit hit first or None)
        let table: &[(&[u64], &[u64], Option<&str>)] = &[
            (&[1, 1, 1], &[1, 1], None),
            (&[1, 1, 1, 1], &[], Some("max_layer_nodes")),
            (&[600, 401], &[], Some("max_layer_bytes")),
            (&[1, 1, 1], &[1, 1, 1], Some("max_image_nodes")),
            (&[700], &[700, 101], Some("max_image_bytes")),
        ];
        for &(a, b, want) in table {
            let image = ImageCharge::new(&limits);
            let mut la = LayerCharge::new(&image);
            let mut lb = LayerCharge::new(&image);
            let hit = a
                .iter()
                .map(|&n| la.node(n))
                .chain(b.iter().map(|&n| lb.node(n)))
                .find_map(Result::err)
                .map(|e| e.limit);
            assert_eq!(hit, want, "{a:?} {b:?}");
        }
    }
}
