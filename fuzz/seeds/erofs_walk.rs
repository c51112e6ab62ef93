//! Seeds for the `erofs_walk` fuzz target: `erofs_walk_seeds DUMPFILE|-
//! IMAGE` writes the image cfs's writer builds from a composefs dumpfile
//! (a conformance asset), with the default format versions, as `cfs mkfs
//! --from-file` would; nothing when the dumpfile does not parse or the
//! image would be over 1 MiB (libFuzzer's `-max_len` in `run.sh`). Built in
//! the fuzz workspace, so seeding needs no second build of `cfs`.

// run.sh builds this with the fuzz targets' instrumentation, whose coverage
// hooks live in libFuzzer: link it (its `main` stays out, this bin has one).
use libfuzzer_sys as _;

use cfs_format::dumpfile::{parse, ParseMode};
use cfs_format::writer::{write_image, WriteOptions};
use std::io::Read;

/// The largest seed kept: `run.sh`'s `-max_len`.
const MAX_SEED: usize = 1 << 20;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dump, image] = args.as_slice() else {
        eprintln!("usage: erofs_walk_seeds DUMPFILE|- IMAGE");
        std::process::exit(2);
    };
    let text = if dump == "-" {
        let mut v = Vec::new();
        std::io::stdin()
            .read_to_end(&mut v)
            .unwrap_or_else(|e| panic!("stdin: {e}"));
        v
    } else {
        std::fs::read(dump).unwrap_or_else(|e| panic!("{dump}: {e}"))
    };
    let Ok(tree) = parse(&text, ParseMode::Lenient) else {
        eprintln!("{dump}: does not parse, no seed");
        return;
    };
    match write_image(&tree, &WriteOptions::default()) {
        Ok(bytes) if bytes.len() <= MAX_SEED => {
            std::fs::write(image, bytes).unwrap_or_else(|e| panic!("{image}: {e}"))
        }
        Ok(_) => eprintln!("{dump}: image over {MAX_SEED} bytes, no seed"),
        Err(e) => eprintln!("{dump}: {e}, no seed"),
    }
}
