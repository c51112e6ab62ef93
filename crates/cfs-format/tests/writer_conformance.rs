//! The image writer against C composefs's own output: every row of the
//! conformance set's `expected.tsv` must give the same image bytes and digest.

use cfs_format::dumpfile::{self, ParseMode};
use cfs_format::writer::{write_image, WriteOptions};
use sha2::{Digest as _, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

fn conformance() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance")
}

struct Row {
    asset: String,
    options: WriteOptions,
    mode: ParseMode,
    image_sha256: String,
    fsverity: String,
}

fn rows() -> Vec<Row> {
    let tsv = std::fs::read_to_string(conformance().join("expected.tsv")).expect("expected.tsv");
    tsv.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let mut options = WriteOptions::default();
            for arg in f[1].split_whitespace().filter(|a| *a != "-") {
                let (k, v) = arg.split_once('=').expect("--flag=value");
                let v: u32 = v.parse().expect("version number");
                match k {
                    "--min-version" => options.min_version = v,
                    "--max-version" => options.max_version = v,
                    other => panic!("unknown version arg {other}"),
                }
            }
            Row {
                asset: f[0].to_string(),
                options,
                mode: if f[2] == "1" { ParseMode::Strict } else { ParseMode::Lenient },
                image_sha256: f[3].to_string(),
                fsverity: f[4].to_string(),
            }
        })
        .collect()
}

/// Reads an asset, gunzipping `.gz` ones.
pub fn read_asset(name: &str) -> Vec<u8> {
    let raw = std::fs::read(conformance().join("assets").join(name)).expect("asset");
    if name.ends_with(".gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out).expect("gunzip");
        out
    } else {
        raw
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn every_conformance_image_is_byte_identical() {
    let mut failures = Vec::new();
    for row in rows() {
        let tree = match dumpfile::parse(&read_asset(&row.asset), row.mode) {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{}: parse failed: {e}", row.asset));
                continue;
            }
        };
        let image = match write_image(&tree, &row.options) {
            Ok(i) => i,
            Err(e) => {
                failures.push(format!("{}: write failed: {e}", row.asset));
                continue;
            }
        };
        let sha = hex(&Sha256::digest(&image));
        if sha != row.image_sha256 {
            std::fs::write(format!("/tmp/cfs-{}.img", row.asset), &image).ok();
            failures.push(format!("{}: image sha256 {sha}, expected {}", row.asset, row.image_sha256));
            continue;
        }
        let verity = cfs_format::fsverity::digest(&image).to_hex();
        if verity != row.fsverity {
            failures.push(format!("{}: fs-verity {verity}, expected {}", row.asset, row.fsverity));
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}
