//! cfs-format's integration tests, one binary (`cargo test -p cfs-format
//! --test cfs-format [AREA::]`), a module per area:
//! - `dumpfile`: parsing and printing against C's reference dumps;
//! - `writer`: every conformance image byte-identical to C's;
//! - `reader`: the reader against `mkfs.erofs` images and their sources,
//!   and hostile mutations;
//! - `fuzz_regressions`: kept fuzz inputs replayed.
//!
//! Shared helpers live in `cfs-testkit`; conformance data is read from
//! `../shared/conformance`.

mod dumpfile;
mod fuzz_regressions;
mod reader;
mod writer;
