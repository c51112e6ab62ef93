//! The composefs dumpfile: one line per path, as `mkcomposefs --from-file`
//! reads it and `composefs-info dump` prints it.

use crate::Tree;

/// How strictly to parse (see the conformance README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParseMode {
    /// Trailing newline required, symlink size must equal the target length,
    /// no content on symlinks, no rdev on non-devices.
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

/// Parses a whole dumpfile into a tree.
pub fn parse(input: &[u8], mode: ParseMode) -> Result<Tree, DumpfileError> {
    let _ = (input, mode);
    Err(DumpfileError {
        line: 0,
        message: "dumpfile parsing is not implemented yet".into(),
    })
}

/// Prints a tree as a canonical dumpfile (what `composefs-info dump` prints).
pub fn print(tree: &Tree, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let _ = (tree, out);
    Err(std::io::Error::other(
        "dumpfile printing is not implemented yet",
    ))
}
