//! cfs-oci's integration tests, one binary (`cargo test -p cfs-oci --test
//! cfs-oci`): the kept `tar_import` fuzz inputs replayed through the fuzz
//! target's own check, which is compiled in from `fuzz/harness/`. The
//! end-to-end OCI tests drive the `cfs` binary and live in its crate
//! (`crates/cfs/tests/cfs/oci/`).

#[path = "../../../../fuzz/harness/tar_import/mod.rs"]
mod tar_import;

mod fuzz_regressions;
