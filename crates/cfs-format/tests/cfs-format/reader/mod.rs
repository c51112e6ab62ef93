//! The image reader.
//!
//! Images come from `mkfs.erofs` (erofs-utils), built at run time from source
//! trees made here, and are compared against those trees as std sees them.
//! Each test skips with a message when `mkfs.erofs` is not installed.
//! `mkfs.erofs` writes no composefs header; where a test needs [`Image::open`]
//! (strict) it writes one into the image's zeroed first 32 bytes.
//!
//! The hostile-image test mutates real images thousands of times and checks
//! that every read returns `Ok` or `Err`: errors are fine, panics and hangs are bugs.

mod api;
mod common;
mod hostile;
mod to_tree;
