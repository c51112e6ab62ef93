//! What the service accepts as an image, decided from the bytes alone: the
//! image is read with the bounds-checked reader into a tree (limits on
//! size, entries, depth and bytes), every rule below is checked on the
//! tree, and the tree is written again with the writer. Only an image the
//! writer reproduces **byte for byte** is accepted, so what the kernel's
//! erofs parses is the writer's output, never bytes a client chose, and
//! the image id (the fs-verity digest of the bytes) is unchanged.
//!
//! The rules, beyond what the reader already refuses:
//! - every external file's redirect is exactly `/xx/` and 62 lowercase hex
//!   digits ([`Digest::from_object_path`] is the rule's home): overlayfs
//!   resolves it beneath the object directory, and nothing else may be
//!   named (no `..`, no other directory, no suffix);
//! - a file with a metacopy digest has a redirect (overlayfs would fail it
//!   with EIO; better said at mount time);
//! - the byte-identity check covers the rest: xattrs overlayfs would obey
//!   that the writer never writes (a redirect on a directory, an opaque
//!   marker), inodes no directory reaches, padding, a superblock field.
//!
//! Device nodes are not refused here (a plain user's mount is `nodev`, which
//! the user can't undo); the count is kept for the clients who could undo
//! it (see `handle.rs`).

use cfs_format::reader::{Headers, Image, OpenOptions, TreeLimits};
use cfs_format::tree::mode;
use cfs_format::writer::{self, WriteOptions};
use cfs_format::{Digest, FileType, Tree};

/// Bounds on an image the service will read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest image, in bytes.
    pub max_bytes: u64,
    /// Most directory entries in all.
    pub max_entries: u64,
    /// Deepest directory nesting.
    pub max_depth: usize,
}

impl Default for ImageLimits {
    /// 256 MiB (an image of a million files is about 100 MiB), 4 Mi
    /// entries, 256 levels.
    fn default() -> Self {
        ImageLimits {
            max_bytes: 256 << 20,
            max_entries: 4 << 20,
            max_depth: 256,
        }
    }
}

/// What the service learned about an accepted image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageFacts {
    /// Its id.
    pub id: Digest,
    /// Whether its header says it holds POSIX ACLs.
    pub has_acl: bool,
    /// Character and block devices in it (overlay whiteouts, stored as
    /// escaped regular files, are not counted).
    pub devices: u64,
    /// Inodes in its tree.
    pub inodes: u64,
}

/// Why an image is refused: a sentence naming what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Checks `bytes` as an image (see the module doc).
pub fn validate(bytes: &[u8], limits: &ImageLimits) -> Result<ImageFacts, Refused> {
    let size = bytes.len() as u64;
    if size > limits.max_bytes {
        return Err(Refused(format!(
            "the image is {size} bytes, over the service's limit of {}",
            limits.max_bytes
        )));
    }
    let headers = Headers::check(bytes, size, OpenOptions::new())
        .map_err(|e| Refused(format!("not a composefs image: {e}")))?;
    let image = Image::open(bytes).map_err(|e| Refused(format!("not a composefs image: {e}")))?;
    let version = image
        .composefs_version()
        .ok_or_else(|| Refused("not a composefs image: no composefs header".into()))?;
    let mut tree_limits = TreeLimits::default();
    tree_limits.max_depth = limits.max_depth;
    tree_limits.max_entries = Some(limits.max_entries);
    let tree = image
        .to_tree_as_written(tree_limits)
        .map_err(|e| Refused(format!("the image does not read back: {e}")))?;
    let devices = check_tree(&tree)?;
    let options = WriteOptions {
        min_version: version,
        max_version: version,
    };
    let again = writer::write_image(&tree, &options)
        .map_err(|e| Refused(format!("the image can't be written again: {e}")))?;
    if again != bytes {
        let at = again
            .iter()
            .zip(bytes)
            .position(|(a, b)| a != b)
            .unwrap_or(again.len().min(bytes.len()));
        return Err(Refused(format!(
            "the image is not in the form cfs and mkcomposefs write: written again from what it \
             holds, it differs from byte {at} on ({} bytes against {}); the kernel would parse \
             bytes the service did not write",
            again.len(),
            bytes.len()
        )));
    }
    Ok(ImageFacts {
        id: cfs_format::fsverity::digest(bytes),
        has_acl: headers.has_acl(),
        devices,
        inodes: tree.len() as u64,
    })
}

/// The per-node rules, each node checked once under its first path;
/// returns the number of device nodes.
fn check_tree(tree: &Tree) -> Result<u64, Refused> {
    let mut devices = 0;
    let mut stack = vec![(tree.root(), b"/".to_vec())];
    while let Some((id, path)) = stack.pop() {
        let node = tree.node(id);
        let name = || String::from_utf8_lossy(&path).into_owned();
        match node.file_type() {
            Some(FileType::Directory) => {
                for e in node.entries.iter().filter(|e| !e.hardlink) {
                    let mut p = path.clone();
                    if p.len() > 1 {
                        p.push(b'/');
                    }
                    p.extend_from_slice(&e.name);
                    stack.push((e.node, p));
                }
            }
            Some(FileType::Regular) => match (&node.payload, node.digest) {
                (Some(redirect), _) => {
                    if Digest::from_object_path(redirect).is_none() {
                        return Err(Refused(format!(
                            "{}: redirect {:?} is not an object path (/xx/ and 62 lowercase hex \
                             digits)",
                            name(),
                            String::from_utf8_lossy(redirect)
                        )));
                    }
                }
                (None, Some(_)) => {
                    return Err(Refused(format!(
                        "{}: a content digest but no redirect to an object",
                        name()
                    )))
                }
                (None, None) => {}
            },
            Some(FileType::CharDevice | FileType::BlockDevice) => {
                let whiteout =
                    node.stat.mode & mode::S_IFMT == mode::S_IFCHR && node.stat.rdev == 0;
                if !whiteout {
                    devices += 1;
                }
            }
            _ => {}
        }
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cfs_format::dumpfile::{self, ParseMode};

    fn image_of(dump: &str) -> Vec<u8> {
        let tree = dumpfile::parse(dump.as_bytes(), ParseMode::default()).unwrap();
        writer::write_image(&tree, &WriteOptions::default()).unwrap()
    }

    const OBJ: &str = "9e/3ba1d5d4e17d8a3d5bbb6ba5a4d1ec5b4d0b2b6c5a9b7b1f7d3ebc0e0e4d5f";

    #[test]
    fn a_writer_image_is_accepted_with_its_id() {
        let img = image_of(&format!(
            "/ 0 40755 2 0 0 0 0.0 - - -\n/f 100 100644 1 0 0 0 0.0 {OBJ} - -\n\
             /dev 0 20644 1 0 0 259 0.0 - - -\n/w 0 20000 1 0 0 0 0.0 - - -\n"
        ));
        let facts = validate(&img, &ImageLimits::default()).unwrap();
        assert_eq!(facts.id, cfs_format::fsverity::digest(&img));
        assert_eq!((facts.devices, facts.inodes), (1, 4));
    }

    #[test]
    fn redirects_out_of_the_store_are_refused() {
        for bad in [
            "../../etc/shadow",
            "/9e/3ba1d5d4e17d8a3d5bbb6ba5a4d1ec5b4d0b2b6c5a9b7b1f7d3ebc0e0e4d5fa",
            "9E/3BA1D5D4E17D8A3D5BBB6BA5A4D1EC5B4D0B2B6C5A9B7B1F7D3EBC0E0E4D5FA",
            "9e/3ba1d5d4e17d8a3d5bbb6ba5a4d1ec5b4d0b2b6c5a9b7b1f7d3ebc0e0e4d5fa.file",
            "9e/../3ba1d5d4e17d8a3d5bbb6ba5a4d1ec5b4d0b2b6c5a9b7b1f7d3ebc0e0e4d",
            "xx",
        ] {
            let img = image_of(&format!(
                "/ 0 40755 2 0 0 0 0.0 - - -\n/f 100 100644 1 0 0 0 0.0 {bad} - -\n"
            ));
            let e = validate(&img, &ImageLimits::default()).unwrap_err();
            assert!(e.0.contains("not an object path"), "{bad}: {e}");
            assert!(e.0.starts_with("/f:"), "{e}");
        }
    }

    #[test]
    fn limits_and_garbage_are_refused_naming_why() {
        let img = image_of("/ 0 40755 2 0 0 0 0.0 - - -\n/a 0 40755 2 0 0 0 0.0 - - -\n/a/b 0 40755 2 0 0 0 0.0 - - -\n");
        let tight = ImageLimits {
            max_depth: 1,
            ..ImageLimits::default()
        };
        let e = validate(&img, &tight).unwrap_err();
        assert!(e.0.contains("deeper than 1"), "{e}");
        let small = ImageLimits {
            max_bytes: 100,
            ..ImageLimits::default()
        };
        assert!(validate(&img, &small)
            .unwrap_err()
            .0
            .contains("over the service's limit"));
        let e = validate(&[0u8; 8192], &ImageLimits::default()).unwrap_err();
        assert!(e.0.contains("not a composefs image"), "{e}");
    }

    #[test]
    fn mutated_images_are_refused_or_are_exactly_the_writers_image_of_what_they_hold() {
        let img = image_of(&format!(
            "/ 0 40755 2 0 0 0 0.0 - - -\n/d 0 40755 2 0 0 0 0.0 - - -\n\
             /d/f 100 100644 1 0 0 0 0.0 {OBJ} - -\n"
        ));
        let id = validate(&img, &ImageLimits::default()).unwrap().id;
        // Flip each byte of the superblock and the first inodes in turn.
        // A change the reader reads as another valid tree (an mtime, a
        // mode) is that tree's image: accepted, under another id. Anything
        // else is refused, with a reason; nothing panics.
        let (mut refused, mut other) = (0, 0);
        for at in 0..img.len().min(2048) {
            let mut m = img.clone();
            m[at] ^= 0x5a;
            match validate(&m, &ImageLimits::default()) {
                Ok(f) => {
                    assert_ne!(f.id, id, "byte {at}");
                    assert_eq!(f.id, cfs_format::fsverity::digest(&m));
                    other += 1;
                }
                Err(Refused(why)) => {
                    assert!(!why.is_empty());
                    refused += 1;
                }
            }
        }
        assert!(
            refused > 0 && other > 0,
            "{refused} refused, {other} other images"
        );
        // Trailing bytes are not the writer's.
        let mut longer = img.clone();
        longer.extend_from_slice(&[0; 4096]);
        assert!(validate(&longer, &ImageLimits::default())
            .unwrap_err()
            .0
            .contains("differs from byte"));
    }

    /// An image carrying overlay xattrs the writer never writes (made by
    /// renaming an innocent `trusted.xverlay.*` xattr in the bytes):
    /// overlayfs would obey them, the service refuses them.
    #[test]
    fn overlay_xattrs_the_writer_would_not_write_are_refused() {
        for (node, xattr) in [
            ("/d", "redirect"),
            ("/d", "metacopy"),
            ("/d", "opaque"),
            ("/d/f", "redirect"),
        ] {
            let name = format!("trusted.xverlay.{xattr}");
            let mut tree = dumpfile::parse(
                format!(
                    "/ 0 40755 2 0 0 0 0.0 - - -\n/d 0 40755 2 0 0 0 0.0 - - -\n\
                     /d/f 100 100644 1 0 0 0 0.0 {OBJ} - -\n"
                )
                .as_bytes(),
                ParseMode::default(),
            )
            .unwrap();
            let id = tree.lookup_path(node.as_bytes()).unwrap();
            tree.node_mut(id).set_xattr(name.as_bytes(), b"/../../etc");
            let mut img = writer::write_image(&tree, &WriteOptions::default()).unwrap();
            validate(&img, &ImageLimits::default()).unwrap();
            let at = img
                .windows(7)
                .position(|w| w == b"xverlay")
                .expect("the xattr name in the image");
            img[at] = b'o';
            let e = validate(&img, &ImageLimits::default()).unwrap_err();
            assert!(
                e.0.contains("differs from byte") || e.0.contains("not an object path"),
                "{node} {xattr}: {e}"
            );
        }
    }

    #[test]
    fn every_conformance_image_with_object_redirects_round_trips() {
        let mut accepted = 0;
        for row in cfs_testkit::conformance::rows() {
            let mode = if row.strict {
                ParseMode::Strict
            } else {
                ParseMode::default()
            };
            let Ok(tree) = dumpfile::parse(&row.dumpfile(), mode) else {
                continue;
            };
            let (min, max) = row.versions();
            let options = WriteOptions {
                min_version: min.unwrap_or(0),
                max_version: max.unwrap_or(1),
            };
            let Ok(img) = writer::write_image(&tree, &options) else {
                continue;
            };
            match validate(&img, &ImageLimits::default()) {
                Ok(f) => {
                    assert_eq!(f.id.to_hex(), row.fsverity_digest, "{}", row.asset);
                    accepted += 1;
                }
                Err(Refused(why)) => assert!(
                    why.contains("not an object path") || why.contains("no redirect"),
                    "{}: {why}",
                    row.asset
                ),
            }
        }
        assert!(accepted > 0, "no conformance image was accepted");
    }
}
