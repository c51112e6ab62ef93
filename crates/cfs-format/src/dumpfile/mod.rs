//! The composefs dumpfile: one line per path, as `mkcomposefs --from-file`
//! reads it and `composefs-info dump` prints it.
//!
//! A line is `PATH SIZE MODE NLINK UID GID RDEV MTIME PAYLOAD CONTENT DIGEST
//! [XATTR...]` with fields separated by single spaces and escaped as
//! described in [`escape`]; `MODE` is octal and starts with `@` on a hard
//! link, `MTIME` is `SEC.NSEC`, `PAYLOAD` is a symlink's target, a regular
//! file's backing object path or a hard link's target path, and each xattr is
//! `NAME=VALUE`. The reference is C composefs (`tools/mkcomposefs.c` for
//! reading, `tools/composefs-info.c` for printing); [`parse`] documents how
//! its quirks carry over into the [`Tree`].

pub mod escape;
mod parse;
mod print;

pub use parse::{
    MAX_EXTERNAL_FILE_SIZE, MAX_INLINE_CONTENT_LEN, MAX_PAYLOAD_LEN, MAX_XATTR_FIELDS_LEN,
    MAX_XATTR_NAME_LEN, MAX_XATTR_SPACE, MAX_XATTR_VALUE_LEN,
};

use crate::Tree;

/// How strictly to parse (see the conformance README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParseMode {
    /// Trailing newline required, symlink size must equal the target length,
    /// no content on symlinks, no rdev on non-devices
    /// (C `mkcomposefs` with `CFS_PARSE_STRICT` set).
    Strict,
    /// What C `mkcomposefs --from-file` accepts.
    #[default]
    Lenient,
}

/// A dumpfile that could not be parsed: the line (1-based) and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct DumpfileError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, naming the field.
    pub message: String,
}

/// Parses a whole dumpfile into a tree, node for node as C `mkcomposefs`
/// builds it before writing an image.
///
/// The first line must be the root `/`; every other path's parent must come
/// before it. Hard links (`@` modes) may name targets anywhere in the file;
/// their entries are marked `hardlink` and name the target's node. Inputs C
/// rejects, whether in its parser or later in its image writer, are errors.
pub fn parse(input: &[u8], mode: ParseMode) -> Result<Tree, DumpfileError> {
    parse::parse(input, mode)
}

/// Prints a tree as a canonical dumpfile (what `composefs-info dump` prints
/// for an image holding it).
///
/// Stat fields are printed as the tree holds them; normalising them the way
/// an image does (directory nlink, symlink and device sizes) is the image
/// writer's and reader's job.
pub fn print(tree: &Tree, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    print::print(tree, out)
}
