//! What each serving mode shows: which xattr names a client sees (and which
//! image xattr answers for a name it asks), and which directory entries are
//! hidden. Pure functions over names, so the rules are unit-tested here and
//! the server only applies them.
//!
//! **Standalone** shows the tree exactly as the kernel's overlayfs shows a
//! composefs image mounted with `lowerdir=EROFS::OBJECTS` (checked against it
//! by the differential test):
//! - `trusted.overlay.overlay.X` (a user's own `trusted.overlay.X`, escaped by
//!   the image writer) is shown unescaped as `trusted.overlay.X`;
//! - every other `trusted.overlay.*` (metacopy, redirect, opaque, ...) is
//!   overlayfs' own and hidden;
//! - a character device 0/0 is an overlay whiteout: the entry is hidden
//!   (composefs puts 256 of them, `00`..`ff`, in the root of format-1 images).
//!
//! **Overlay-lower** serves metadata for an overlayfs mounted with `userxattr`
//! on top (objects as its data-only lower layer), which reads `user.overlay.*`
//! where the kernel mount reads `trusted.overlay.*`:
//! - `trusted.overlay.X` is shown as `user.overlay.X` (escaped ones included:
//!   `trusted.overlay.overlay.X` becomes `user.overlay.overlay.X`, which
//!   overlayfs unescapes to `user.overlay.X`, just as the kernel mount shows
//!   `trusted.overlay.X`);
//! - the image's own `user.overlay.X` (composefs writes `user.overlay.opaque`,
//!   `whiteout`, `whiteouts` as markers for a *nested* userxattr overlay) is
//!   shown escaped as `user.overlay.overlay.X`, so the overlay on top shows it
//!   as `user.overlay.X` instead of acting on it; where that name is already
//!   produced by a `trusted.overlay.overlay.X` (composefs writes both, with
//!   the same value) it is shown once;
//! - `user.*` names are not listed on inodes other than regular files and
//!   directories, where Linux refuses to read them ([`ServeMode::hides_xattr`]);
//! - nothing is hidden: whiteouts are for the overlay on top to act on.

use cfs_format::overlay::{self, Namespace, PREFIX, USER_PREFIX};
use std::borrow::Cow;

/// What the server presents: contents too, or metadata for an overlay on top.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ServeMode {
    /// Serve metadata and file contents (from the image or the object store),
    /// showing the tree as the kernel overlay mount of the image shows it.
    #[default]
    Standalone,
    /// Serve metadata only, with `trusted.overlay.*` as `user.overlay.*`, as the
    /// lower layer of an overlayfs mounted with `userxattr`; opening a file whose
    /// content lives in the object store is refused.
    OverlayLower,
}

fn concat(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(a.len() + b.len());
    v.extend_from_slice(a);
    v.extend_from_slice(b);
    v
}

impl ServeMode {
    /// The name on the command line (`standalone`, `overlay-lower`).
    pub fn as_str(self) -> &'static str {
        match self {
            ServeMode::Standalone => "standalone",
            ServeMode::OverlayLower => "overlay-lower",
        }
    }

    /// The name a client sees for the image xattr `name`, or `None` when hidden.
    pub fn present_name<'a>(&self, name: &'a [u8]) -> Option<Cow<'a, [u8]>> {
        match self {
            // `trusted.overlay.overlay.` would show as the bare prefix, which
            // names no xattr: hidden.
            ServeMode::Standalone => {
                overlay::unescape(Namespace::Trusted, name).filter(|shown| shown.as_ref() != PREFIX)
            }
            ServeMode::OverlayLower => match name.strip_prefix(PREFIX) {
                Some(rest) => Some(Cow::Owned(concat(USER_PREFIX, rest))),
                None => Some(overlay::escape(Namespace::User, name)),
            },
        }
    }

    /// The image xattr names that answer a client's `getxattr(name)`, in order
    /// of preference (the first present wins). Empty when the name is hidden.
    /// The inverse of [`ServeMode::present_name`].
    pub fn image_names(&self, name: &[u8]) -> Vec<Vec<u8>> {
        match self {
            ServeMode::Standalone if name == PREFIX => vec![],
            ServeMode::Standalone => vec![overlay::escape(Namespace::Trusted, name).into_owned()],
            ServeMode::OverlayLower => match name.strip_prefix(USER_PREFIX) {
                Some(rest) => {
                    let mut names = vec![concat(PREFIX, rest)];
                    // An escaped name may also be the image's own user.overlay.X.
                    if let Some(Cow::Owned(own)) = overlay::unescape(Namespace::User, name) {
                        names.push(own);
                    }
                    names
                }
                // The image's trusted.overlay.* are all shown renamed.
                None if name.starts_with(PREFIX) => vec![],
                None => vec![name.to_vec()],
            },
        }
    }

    /// True when a directory entry for an inode of this `mode` and `rdev` is
    /// hidden: an overlay whiteout (character device 0/0) in standalone mode.
    pub fn hides_entry(&self, mode: u32, rdev: u64) -> bool {
        *self == ServeMode::Standalone && cfs_format::overlay::is_whiteout(mode, rdev)
    }

    /// True when the xattr `shown` (a name [`ServeMode::present_name`] gave)
    /// is left out of the list of an inode of this `mode`: in overlay-lower
    /// mode, `user.*` names of anything but regular files and directories.
    /// Linux never lets those be read (getxattr answers ENODATA before asking
    /// the filesystem: `xattr_permission` in `fs/xattr.c`), so listing them,
    /// as renaming a symlink's `trusted.overlay.overlay.X` to
    /// `user.overlay.overlay.X` would, breaks every reader that lists and
    /// then gets (`getfattr -d`, `cfs mkfs` of the mount, `tar --xattrs`).
    /// Standalone mode lists what the kernel's overlay mount lists.
    pub fn hides_xattr(&self, shown: &[u8], mode: u32) -> bool {
        let reg_or_dir = matches!(mode & 0o170000, 0o100000 | 0o040000);
        *self == ServeMode::OverlayLower && !reg_or_dir && shown.starts_with(b"user.")
    }

    /// True when this mode serves file contents from the object store.
    pub fn serves_contents(&self) -> bool {
        *self == ServeMode::Standalone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ServeMode::*;

    fn shown(mode: ServeMode, name: &str) -> Option<String> {
        mode.present_name(name.as_bytes())
            .map(|n| String::from_utf8(n.into_owned()).unwrap())
    }

    #[test]
    fn presentation_table() {
        let table: &[(ServeMode, &str, Option<&str>)] = &[
            (Standalone, "user.foo", Some("user.foo")),
            (Standalone, "security.selinux", Some("security.selinux")),
            (Standalone, "trusted.foo", Some("trusted.foo")),
            (Standalone, "trusted.overlay.metacopy", None),
            (Standalone, "trusted.overlay.redirect", None),
            (Standalone, "trusted.overlay.opaque", None),
            (
                Standalone,
                "trusted.overlay.overlay.foo",
                Some("trusted.overlay.foo"),
            ),
            (
                Standalone,
                "trusted.overlay.overlay.opaque",
                Some("trusted.overlay.opaque"),
            ),
            (Standalone, "trusted.overlay.overlay.", None),
            (
                Standalone,
                "user.overlay.opaque",
                Some("user.overlay.opaque"),
            ),
            (OverlayLower, "user.foo", Some("user.foo")),
            (OverlayLower, "trusted.foo", Some("trusted.foo")),
            (
                OverlayLower,
                "trusted.overlay.metacopy",
                Some("user.overlay.metacopy"),
            ),
            (
                OverlayLower,
                "trusted.overlay.redirect",
                Some("user.overlay.redirect"),
            ),
            (
                OverlayLower,
                "trusted.overlay.overlay.foo",
                Some("user.overlay.overlay.foo"),
            ),
            (
                OverlayLower,
                "user.overlay.opaque",
                Some("user.overlay.overlay.opaque"),
            ),
            (
                OverlayLower,
                "user.overlay.whiteout",
                Some("user.overlay.overlay.whiteout"),
            ),
        ];
        for &(mode, name, want) in table {
            assert_eq!(shown(mode, name).as_deref(), want, "{mode:?} {name}");
        }
    }

    /// Every name a client can see maps back to the image name it came from.
    #[test]
    fn image_names_invert_present_name() {
        let names = [
            "user.foo",
            "trusted.foo",
            "security.capability",
            "trusted.overlay.metacopy",
            "trusted.overlay.overlay.foo",
            "user.overlay.opaque",
            "user.overlay.whiteouts",
        ];
        for mode in [Standalone, OverlayLower] {
            for name in names {
                if let Some(shown) = mode.present_name(name.as_bytes()) {
                    let back = mode.image_names(&shown);
                    assert!(
                        back.iter().any(|b| b == name.as_bytes()),
                        "{mode:?}: {name} shown as {:?} maps back to {back:?}",
                        String::from_utf8_lossy(&shown)
                    );
                }
            }
        }
    }

    #[test]
    fn hidden_names_have_no_image_name() {
        assert!(Standalone.image_names(b"trusted.overlay.").is_empty());
        assert!(OverlayLower
            .image_names(b"trusted.overlay.redirect")
            .is_empty());
        // The unescaped name asks for the escaped one.
        assert_eq!(
            Standalone.image_names(b"trusted.overlay.redirect"),
            vec![b"trusted.overlay.overlay.redirect".to_vec()]
        );
        // user.overlay.overlay.X: first the escaped trusted one, then the image's user one.
        assert_eq!(
            OverlayLower.image_names(b"user.overlay.overlay.opaque"),
            vec![
                b"trusted.overlay.overlay.opaque".to_vec(),
                b"user.overlay.opaque".to_vec()
            ]
        );
    }

    /// Regression: overlay-lower listed `user.overlay.*` (renamed from an
    /// escaped `trusted.overlay.overlay.*`) on symlinks and special files,
    /// which Linux refuses to read: the fuse+overlay mount listed xattrs
    /// whose getxattr failed with ENODATA (found by the differential test).
    #[test]
    fn overlay_lower_lists_user_xattrs_only_where_linux_reads_them() {
        let table: &[(ServeMode, &str, u32, bool)] = &[
            (OverlayLower, "user.overlay.overlay.custom", 0o120777, true),
            (OverlayLower, "user.overlay.overlay.custom", 0o010644, true),
            (OverlayLower, "user.overlay.overlay.custom", 0o020644, true),
            (OverlayLower, "user.overlay.overlay.custom", 0o060644, true),
            (OverlayLower, "user.overlay.overlay.custom", 0o140755, true),
            (OverlayLower, "user.overlay.overlay.custom", 0o100644, false),
            (OverlayLower, "user.overlay.overlay.custom", 0o040755, false),
            (OverlayLower, "user.overlay.whiteout", 0o100000, false),
            (OverlayLower, "trusted.foo", 0o120777, false),
            (OverlayLower, "security.foo", 0o020644, false),
            (Standalone, "user.foo", 0o120777, false),
            (Standalone, "user.foo", 0o020644, false),
        ];
        for &(mode, name, file_mode, hidden) in table {
            assert_eq!(
                mode.hides_xattr(name.as_bytes(), file_mode),
                hidden,
                "{mode:?} {name} {file_mode:o}"
            );
        }
    }

    #[test]
    fn whiteouts_hidden_only_in_standalone() {
        assert!(Standalone.hides_entry(0o020000, 0));
        assert!(!Standalone.hides_entry(0o020644, 0x0103));
        assert!(!Standalone.hides_entry(0o060000, 0));
        assert!(!Standalone.hides_entry(0o100644, 0));
        assert!(!OverlayLower.hides_entry(0o020000, 0));
    }
}
