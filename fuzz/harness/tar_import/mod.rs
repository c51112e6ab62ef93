//! What the `tar_import` fuzz target runs, shared with its seed generator
//! (`fuzz/seeds/tar_import.rs`) and its regression replay
//! (`crates/cfs-oci/tests/cfs-oci/fuzz_regressions.rs`), which include this
//! directory with `#[path]`: [`input`] is the byte format and its tar
//! serialisation, [`check`] the import and its invariants, [`examples`]
//! hand-written escape attempts.
// Each includer uses a different part.
#![allow(dead_code)]

pub mod check;
pub mod examples;
pub mod input;

/// Decodes `data` as an input and runs [`check::check_layers`] on its tars.
pub fn check(data: &[u8]) {
    check::check_layers(&input::Input::decode(data).tars());
}
