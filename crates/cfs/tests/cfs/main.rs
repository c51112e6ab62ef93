//! The `cfs` binary's integration tests: one test binary (`cargo test -p cfs
//! --test cfs [AREA::]`) driving the real binary, real mounts, real users
//! and namespaces, a module per area:
//! - `conformance`: `mkcomposefs`/`composefs-info` against C's reference
//!   data, and the kernel's own view of every conformance image;
//! - `repo`: the repository commands; `oci`: OCI import, pull and mount;
//! - `mount`: kernel mounts; `fuse`: `cfs fuse-serve`; `rootless`: every
//!   mode as root, a plain user and a user namespace;
//! - `differential`: random trees mounted three ways, compared;
//! - `faults`: load, a killed server, full disks, a killed gc;
//! - `serve`: the one mount and serve path under attack: stale servers,
//!   unmount races, changed images, lifetimes, upstream's FUSE round trip;
//! - `trust`: a plain user against root's imports, repositories and mounts;
//! - `conventions`: JSON output, completions, manual pages, `--version`, the
//!   install step;
//! - `service`: the mount service: kernel mounts for unprivileged users,
//!   and everything a hostile one could try.
//!
//! Shared helpers: `cfs-testkit` (running the binary, walks, guards, users,
//! skips) and [`support`] (what only these tests need). A test that can't
//! run here prints `SKIPPED: <test>: <why>` on stdout.

mod commands;
mod conformance;
mod conventions;
mod differential;
mod faults;
mod fuse;
mod mount;
mod oci;
mod repo;
mod rootless;
mod serve;
mod service;
mod support;
mod trust;

/// The `cfs` binary under test.
pub fn cfs() -> cfs_testkit::Cfs {
    cfs_testkit::Cfs::new(env!("CARGO_BIN_EXE_cfs"))
}
