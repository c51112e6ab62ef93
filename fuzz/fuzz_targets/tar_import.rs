//! Invariant: nothing lands outside the repository. The input describes up
//! to three tar layers entry by entry (hostile paths with `..`, `/`, long
//! names through GNU records, PAX or a ustar prefix; every entry type,
//! OCI whiteouts, PAX xattrs, lying sizes, bad checksums, raw blocks; see
//! `fuzz/harness/tar_import/input.rs`). They are imported into a fresh
//! repository `T/repo` the ways `cfs` imports tars: as an OCI layout pull
//! (layers merged with their whiteouts), then, for one layer, with `cfs
//! import-tar`, else with a second pull that reads the layers back from
//! their stored records. Then, whether the imports succeeded or not:
//! - `T` holds only `repo`, the sentinel directory `outside` and the source
//!   layout `src`; the last two are byte for byte as they were, and no file
//!   in the repository is a hard link to one of theirs;
//! - the repository holds only directories, files and symlinks whose
//!   targets stay inside it, and `fsck` finds it clean;
//! - the second import agrees with the pull: the same image, or (for
//!   `import-tar`) the same refusal; that image is named, reads back,
//!   dumps, carries no internal marker xattr, and every file's redirect
//!   names an object the repository has, with the matching digest.
//!
//! Errors are fine; panics, hangs and a broken invariant are bugs.
#![no_main]

#[path = "../harness/tar_import/mod.rs"]
mod tar_import;

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        // One rayon thread, the fuzzer's own: no idle workers spinning
        // between the imports' many small parallel sections, and the same
        // coverage for the same input.
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .use_current_thread()
            .build_global()
            .expect("the global rayon pool is not built yet");
    },
    |data: &[u8]| tar_import::check(data)
);
