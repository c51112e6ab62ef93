//! What people expect of a command-line tool (issue 16, conventions):
//!
//! - `json`: every `--json` output parsed and checked field by field against
//!   what the test made (repository images, info, fsck findings, mounts, OCI
//!   tags and layers);
//! - `completions`: `cfs completions SHELL` for each shell, bash's script
//!   sourced and asked to complete;
//! - `man`: `cfs man DIR` writes a page per command and C name, each
//!   rendered by `man -l` without a warning;
//! - `version`: `--version` names the commit, on `cfs` and the C names;
//!   `mount.composefs` usage errors exit 1, as mount(8) expects;
//! - `install`: the README's install command into a temporary prefix, then
//!   the installed names, `man -M` and `mount -t composefs` through the
//!   installed helper.

mod completions;
mod install;
mod json;
mod man;
mod version;
