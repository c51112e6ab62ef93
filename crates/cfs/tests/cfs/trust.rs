//! cfs on a shared host (issue 14): what a plain user can and cannot do to
//! root's imports, repositories and mounts.
//!
//! - `race`: the user swaps names and directories of a tree for symlinks
//!   while root imports it over every import path; no root-only byte lands
//!   anywhere, each run succeeds or fails naming the path.
//! - `private`: repositories are private; the user can't read them or hold
//!   their lock; planted symlinks in a user's repository aren't followed.
//! - `pins`: a mounted image keeps its objects through `rm` and `gc`, in
//!   every mode, as root and as the user, and only while the mount exists.
//! - `names`: a file the user leaves in a shared directory never stands in
//!   for one of root's image names.

mod names;
mod pins;
mod private;
mod race;
