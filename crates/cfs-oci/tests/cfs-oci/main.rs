//! cfs-repo's integration tests, one binary (`cargo test -p cfs-repo --test
//! cfs-repo`): the kept `tar_import` fuzz inputs replayed through the fuzz
//! target's own check, which is compiled in from `fuzz/harness/`. The
//! repository's end-to-end tests drive the `cfs` binary and live in its crate.

#[path = "../../../../fuzz/harness/tar_import/mod.rs"]
mod tar_import;

mod fuzz_regressions;
