//! The overlayfs xattrs composefs images carry, and the escaping rules for them.
//!
//! overlayfs reads `trusted.overlay.*` on its lower layers (or `user.overlay.*`
//! when mounted with `userxattr`). A user's own `trusted.overlay.X` is stored
//! escaped as `trusted.overlay.overlay.X`, which overlayfs shows as the original.
//! [`escape`], [`unescape`] and [`classify`] are that rule, for either
//! [`Namespace`]: the image writer escapes, the image reader and the FUSE
//! server unescape.

use std::borrow::Cow;

/// Prefix of the xattrs overlayfs interprets.
pub const PREFIX: &[u8] = b"trusted.overlay.";
/// Prefix of an escaped user xattr: `trusted.overlay.overlay.`.
pub const ESCAPE_PREFIX: &[u8] = b"trusted.overlay.overlay.";
/// Prefix overlayfs reads under `userxattr`.
pub const USER_PREFIX: &[u8] = b"user.overlay.";
/// Prefix of an escaped user xattr under `userxattr`: `user.overlay.overlay.`.
pub const USER_ESCAPE_PREFIX: &[u8] = b"user.overlay.overlay.";
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

/// The xattr namespace an overlayfs mount reads its own xattrs from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    /// `trusted.overlay.`: a mount without `userxattr` (the kernel mount of an image).
    Trusted,
    /// `user.overlay.`: a mount with `userxattr` (over the FUSE server).
    User,
}

impl Namespace {
    /// `trusted.overlay.` or `user.overlay.`.
    pub const fn prefix(self) -> &'static [u8] {
        match self {
            Namespace::Trusted => PREFIX,
            Namespace::User => USER_PREFIX,
        }
    }

    /// `trusted.overlay.overlay.` or `user.overlay.overlay.`.
    pub const fn escape_prefix(self) -> &'static [u8] {
        match self {
            Namespace::Trusted => ESCAPE_PREFIX,
            Namespace::User => USER_ESCAPE_PREFIX,
        }
    }
}

/// What overlayfs makes of an xattr name stored on a lower layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored<'a> {
    /// Outside the namespace: an ordinary xattr, shown as it is.
    Plain,
    /// `PREFIX` + `overlay.` + `X`: the user's own `PREFIX` + `X`, escaped;
    /// shown under that name. Holds `X`.
    Escaped(&'a [u8]),
    /// Any other `PREFIX` + `X`: overlayfs's own (metacopy, redirect, opaque,
    /// ...), acted on and never shown. Holds `X`.
    Private(&'a [u8]),
}

/// Classifies the stored xattr `name` for a mount reading namespace `ns`.
pub fn classify(ns: Namespace, name: &[u8]) -> Stored<'_> {
    if let Some(rest) = name.strip_prefix(ns.escape_prefix()) {
        Stored::Escaped(rest)
    } else if let Some(rest) = name.strip_prefix(ns.prefix()) {
        Stored::Private(rest)
    } else {
        Stored::Plain
    }
}

/// The name a user's xattr `name` is stored under so that overlayfs shows it
/// rather than acting on it: `PREFIX` + `X` becomes `PREFIX` + `overlay.` + `X`
/// (an already escaped name is escaped again); any other name is unchanged.
pub fn escape(ns: Namespace, name: &[u8]) -> Cow<'_, [u8]> {
    match name.strip_prefix(ns.prefix()) {
        Some(rest) => Cow::Owned([ns.escape_prefix(), rest].concat()),
        None => Cow::Borrowed(name),
    }
}

/// The name overlayfs shows for the stored xattr `name`, the inverse of
/// [`escape`]: an escaped name loses one `overlay.`, an ordinary name is
/// unchanged, and overlayfs's own names are `None`.
pub fn unescape(ns: Namespace, name: &[u8]) -> Option<Cow<'_, [u8]>> {
    match classify(ns, name) {
        Stored::Plain => Some(Cow::Borrowed(name)),
        Stored::Escaped(rest) => Some(Cow::Owned([ns.prefix(), rest].concat())),
        Stored::Private(_) => None,
    }
}

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
    use Namespace::{Trusted, User};

    fn text(name: &[u8]) -> &str {
        std::str::from_utf8(name).unwrap()
    }

    #[test]
    fn escaping_table() {
        // (namespace, user's name, stored name)
        let table: &[(Namespace, &str, &str)] = &[
            (Trusted, "user.foo", "user.foo"),
            (Trusted, "trusted.foo", "trusted.foo"),
            (Trusted, "security.selinux", "security.selinux"),
            (Trusted, "trusted.overlay", "trusted.overlay"),
            (Trusted, "trusted.overlayx", "trusted.overlayx"),
            (Trusted, "trusted.overlay.", "trusted.overlay.overlay."),
            (
                Trusted,
                "trusted.overlay.foo",
                "trusted.overlay.overlay.foo",
            ),
            (
                Trusted,
                "trusted.overlay.opaque",
                "trusted.overlay.overlay.opaque",
            ),
            (
                Trusted,
                "trusted.overlay.overlay.foo",
                "trusted.overlay.overlay.overlay.foo",
            ),
            (Trusted, "user.overlay.opaque", "user.overlay.opaque"),
            (User, "trusted.overlay.foo", "trusted.overlay.foo"),
            (User, "user.overlay.", "user.overlay.overlay."),
            (User, "user.overlay.opaque", "user.overlay.overlay.opaque"),
            (
                User,
                "user.overlay.overlay.x",
                "user.overlay.overlay.overlay.x",
            ),
        ];
        for &(ns, name, stored) in table {
            let escaped = escape(ns, name.as_bytes());
            assert_eq!(text(&escaped), stored, "{ns:?} escape {name}");
            let back = unescape(ns, &escaped);
            assert_eq!(
                back.as_deref().map(text),
                Some(name),
                "{ns:?} unescape {stored}"
            );
        }
    }

    #[test]
    fn stored_names_table() {
        // (namespace, stored name, what it is, shown as)
        let table: &[(Namespace, &str, Stored, Option<&str>)] = &[
            (Trusted, "user.foo", Stored::Plain, Some("user.foo")),
            (
                Trusted,
                "trusted.overlay",
                Stored::Plain,
                Some("trusted.overlay"),
            ),
            (Trusted, "trusted.overlay.", Stored::Private(b""), None),
            (
                Trusted,
                "trusted.overlay.metacopy",
                Stored::Private(b"metacopy"),
                None,
            ),
            (
                Trusted,
                "trusted.overlay.overlay",
                Stored::Private(b"overlay"),
                None,
            ),
            (
                Trusted,
                "trusted.overlay.overlay.",
                Stored::Escaped(b""),
                Some("trusted.overlay."),
            ),
            (
                Trusted,
                "trusted.overlay.overlay.opaque",
                Stored::Escaped(b"opaque"),
                Some("trusted.overlay.opaque"),
            ),
            (
                Trusted,
                "user.overlay.opaque",
                Stored::Plain,
                Some("user.overlay.opaque"),
            ),
            (
                User,
                "trusted.overlay.redirect",
                Stored::Plain,
                Some("trusted.overlay.redirect"),
            ),
            (
                User,
                "user.overlay.whiteout",
                Stored::Private(b"whiteout"),
                None,
            ),
            (
                User,
                "user.overlay.overlay.whiteout",
                Stored::Escaped(b"whiteout"),
                Some("user.overlay.whiteout"),
            ),
        ];
        for &(ns, stored, what, shown) in table {
            assert_eq!(classify(ns, stored.as_bytes()), what, "{ns:?} {stored}");
            let got = unescape(ns, stored.as_bytes());
            assert_eq!(got.as_deref().map(text), shown, "{ns:?} {stored}");
        }
    }

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
