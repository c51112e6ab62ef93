//! Dumpfile parsing and printing against C composefs's reference data in
//! `../shared/conformance` (see its README): every asset parses in its mode,
//! every canonical dump prints back byte for byte, every should-fail input is
//! rejected with a line number.

use std::io::Read;
use std::path::{Path, PathBuf};

use cfs_format::dumpfile::{self, ParseMode};

fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance")
}

/// One row of `expected.tsv`.
struct Asset {
    name: String,
    mode: ParseMode,
}

fn assets() -> Vec<Asset> {
    let tsv =
        std::fs::read_to_string(conformance_dir().join("expected.tsv")).expect("read expected.tsv");
    let rows: Vec<Asset> = tsv
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            assert!(cols.len() >= 3, "short row in expected.tsv: {l}");
            Asset {
                name: cols[0].to_string(),
                mode: if cols[2] == "1" {
                    ParseMode::Strict
                } else {
                    ParseMode::Lenient
                },
            }
        })
        .collect();
    assert!(
        rows.len() >= 10,
        "expected.tsv has only {} rows",
        rows.len()
    );
    rows
}

fn read_asset(name: &str) -> Vec<u8> {
    let path = conformance_dir().join("assets").join(name);
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    if name.ends_with(".gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .unwrap_or_else(|e| panic!("gunzip {}: {e}", path.display()));
        out
    } else {
        raw
    }
}

/// The name of the canonical dump for an asset, if it has one.
fn expected_dump_name(asset: &str) -> Option<String> {
    if asset.ends_with(".gz") {
        return None;
    }
    let stem = asset.strip_suffix(".dump").unwrap_or(asset);
    Some(format!("{stem}.dump"))
}

/// A short description of where two dumps first differ.
fn first_difference(want: &[u8], got: &[u8]) -> Option<String> {
    let mut want_lines = want.split_inclusive(|&b| b == b'\n');
    let mut got_lines = got.split_inclusive(|&b| b == b'\n');
    let mut n = 0;
    loop {
        n += 1;
        match (want_lines.next(), got_lines.next()) {
            (None, None) => return None,
            (w, g) if w == g => continue,
            (w, g) => {
                let show = |l: Option<&[u8]>| match l {
                    None => "<end of file>".to_string(),
                    Some(l) => {
                        let s = String::from_utf8_lossy(&l[..l.len().min(300)]);
                        if l.len() > 300 {
                            format!("{s}... ({} bytes)", l.len())
                        } else {
                            s.into_owned()
                        }
                    }
                };
                return Some(format!(
                    "first difference at line {n}:\n  want: {}\n  got:  {}",
                    show(w),
                    show(g)
                ));
            }
        }
    }
}

#[test]
fn every_asset_parses_in_its_mode() {
    let mut failures = Vec::new();
    for asset in assets() {
        let input = read_asset(&asset.name);
        match dumpfile::parse(&input, asset.mode) {
            Ok(tree) => assert!(!tree.is_empty()),
            Err(e) => failures.push(format!("{} ({:?}): {e}", asset.name, asset.mode)),
        }
    }
    assert!(
        failures.is_empty(),
        "assets rejected:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_expected_dump_prints_back_identically() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for asset in assets() {
        let Some(name) = expected_dump_name(&asset.name) else {
            continue;
        };
        let path = conformance_dir().join("expected-dumps").join(&name);
        let want = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let tree = match dumpfile::parse(&want, asset.mode) {
            Ok(tree) => tree,
            Err(e) => {
                failures.push(format!("{name} ({:?}) does not parse: {e}", asset.mode));
                continue;
            }
        };
        let mut got = Vec::new();
        dumpfile::print(&tree, &mut got).expect("print to a Vec");
        if let Some(diff) = first_difference(&want, &got) {
            failures.push(format!("{name}: {diff}"));
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(checked >= 10, "only {checked} expected dumps checked");
}

#[test]
fn every_should_fail_input_is_rejected_with_a_line() {
    let dir = conformance_dir().join("should-fail");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    assert!(
        entries.len() >= 10,
        "only {} should-fail inputs",
        entries.len()
    );
    let mut failures = Vec::new();
    for path in entries {
        let input = std::fs::read(&path).expect("read should-fail input");
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for mode in [ParseMode::Lenient, ParseMode::Strict] {
            match dumpfile::parse(&input, mode) {
                Ok(_) => failures.push(format!("{name} ({mode:?}) was accepted")),
                Err(e) if e.line == 0 || e.message.is_empty() => {
                    failures.push(format!("{name} ({mode:?}): error without a line: {e:?}"))
                }
                Err(e) => println!("{name} ({mode:?}): {e}"),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Printing a parsed asset and parsing that again gives the same tree.
#[test]
fn parse_print_parse_is_stable() {
    for asset in assets() {
        let input = read_asset(&asset.name);
        let tree = dumpfile::parse(&input, asset.mode).expect("asset parses");
        let mut printed = Vec::new();
        dumpfile::print(&tree, &mut printed).expect("print to a Vec");
        let again = dumpfile::parse(&printed, ParseMode::Lenient)
            .unwrap_or_else(|e| panic!("{}: printed dump does not parse: {e}", asset.name));
        let mut printed_again = Vec::new();
        dumpfile::print(&again, &mut printed_again).expect("print to a Vec");
        if let Some(diff) = first_difference(&printed, &printed_again) {
            panic!("{}: {diff}", asset.name);
        }
    }
}
