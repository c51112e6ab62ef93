//! The overlayfs xattrs composefs images carry, and the escaping rules for them.
//!
//! overlayfs reads `trusted.overlay.*` on its lower layers (or `user.overlay.*`
//! when mounted with `userxattr`). A user's own `trusted.overlay.X` is stored
//! escaped as `trusted.overlay.overlay.X`, which overlayfs shows as the original.

/// Prefix of the xattrs overlayfs interprets.
pub const PREFIX: &[u8] = b"trusted.overlay.";
/// Prefix of an escaped user xattr: `trusted.overlay.overlay.`.
pub const ESCAPE_PREFIX: &[u8] = b"trusted.overlay.overlay.";
/// Prefix overlayfs reads under `userxattr`.
pub const USER_PREFIX: &[u8] = b"user.overlay.";
/// Metacopy marker with the fs-verity digest of the content.
pub const METACOPY: &[u8] = b"trusted.overlay.metacopy";
/// Path of the content object in the data-only lower layer.
pub const REDIRECT: &[u8] = b"trusted.overlay.redirect";
/// Marks the root directory opaque.
pub const OPAQUE: &[u8] = b"trusted.overlay.opaque";
/// A whiteout stored as an escaped xattr on an empty regular file.
pub const ESCAPED_WHITEOUT: &[u8] = b"trusted.overlay.overlay.whiteout";
/// Marks a directory holding escaped whiteouts.
pub const ESCAPED_WHITEOUTS: &[u8] = b"trusted.overlay.overlay.whiteouts";
/// Escaped opaque marker (format version 1: value `x`).
pub const ESCAPED_OPAQUE: &[u8] = b"trusted.overlay.overlay.opaque";
/// Whiteout marker as overlayfs reads it under `userxattr`.
pub const USERXATTR_WHITEOUT: &[u8] = b"user.overlay.whiteout";
/// Directory-holds-whiteouts marker under `userxattr`.
pub const USERXATTR_WHITEOUTS: &[u8] = b"user.overlay.whiteouts";
/// Opaque marker under `userxattr`.
pub const USERXATTR_OPAQUE: &[u8] = b"user.overlay.opaque";

/// True for an overlay whiteout: a character device with device number 0/0
/// (`mode` is a full `st_mode`, `rdev` a Linux `dev_t`). overlayfs hides the
/// name it is found under, and so does every reader of a layer.
pub const fn is_whiteout(mode: u32, rdev: u64) -> bool {
    mode & crate::tree::mode::S_IFMT == crate::tree::mode::S_IFCHR && rdev == 0
}

/// The metacopy xattr value for a digest: version 0, length 36, flags 0,
/// hash algorithm 1 (sha256), then the 32 digest bytes.
pub fn metacopy_value(digest: &crate::Digest) -> [u8; 36] {
    let mut v = [0u8; 36];
    v[1] = 36;
    v[3] = 1;
    v[4..].copy_from_slice(&digest.0);
    v
}

/// The digest in a metacopy value, if it carries one.
pub fn metacopy_digest(value: &[u8]) -> Option<crate::Digest> {
    if value.len() == 36 {
        let mut d = [0u8; 32];
        d.copy_from_slice(&value[4..]);
        Some(crate::Digest(d))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteouts_are_char_devices_0_0() {
        // (mode, rdev, is a whiteout)
        let table: &[(u32, u64, bool)] = &[
            (0o020000, 0, true),
            (0o020644, 0, true),
            (0o027777, 0, true),
            (0o020644, 0x0103, false),
            (0o020644, 1, false),
            (0o020644, 1 << 8, false),
            (0o020644, 1 << 32, false),
            (0o060000, 0, false),
            (0o100644, 0, false),
            (0o040755, 0, false),
            (0o010644, 0, false),
            (0o120777, 0, false),
            (0o140755, 0, false),
            (0, 0, false),
            (0o170000, 0, false),
        ];
        for &(mode, rdev, want) in table {
            assert_eq!(is_whiteout(mode, rdev), want, "{mode:o} {rdev:#x}");
        }
    }
}
