//! The image writer against C composefs's own output: every row of the
//! conformance set's `expected.tsv` must give the same image bytes and digest.

use cfs_format::dumpfile::{self, ParseMode};
use cfs_format::writer::{write_image, WriteOptions};
use cfs_testkit::conformance::{self, sha256_hex};

#[test]
fn every_conformance_image_is_byte_identical() {
    let mut failures = Vec::new();
    for row in conformance::rows() {
        let mode = if row.strict {
            ParseMode::Strict
        } else {
            ParseMode::Lenient
        };
        let mut options = WriteOptions::default();
        let (min, max) = row.versions();
        options.min_version = min.unwrap_or(options.min_version);
        options.max_version = max.unwrap_or(options.max_version);
        let tree = match dumpfile::parse(&row.dumpfile(), mode) {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{}: parse failed: {e}", row.asset));
                continue;
            }
        };
        let image = match write_image(&tree, &options) {
            Ok(i) => i,
            Err(e) => {
                failures.push(format!("{}: write failed: {e}", row.asset));
                continue;
            }
        };
        let sha = sha256_hex(&image);
        if sha != row.image_sha256 {
            failures.push(format!(
                "{}: image sha256 {sha}, expected {}",
                row.asset, row.image_sha256
            ));
            continue;
        }
        let verity = cfs_format::fsverity::digest(&image).to_hex();
        if verity != row.fsverity_digest {
            failures.push(format!(
                "{}: fs-verity {verity}, expected {}",
                row.asset, row.fsverity_digest
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
