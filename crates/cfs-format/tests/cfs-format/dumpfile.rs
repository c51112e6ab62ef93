//! Dumpfile parsing and printing against C composefs's reference data in
//! `../shared/conformance` (see its README): every asset parses in its mode,
//! every canonical dump prints back byte for byte, every should-fail input is
//! rejected with a line number.

use cfs_format::dumpfile::{self, ParseMode};
use cfs_testkit::conformance::{self, first_diff, Row};

/// The parse mode of a row.
fn mode(row: &Row) -> ParseMode {
    if row.strict {
        ParseMode::Strict
    } else {
        ParseMode::Lenient
    }
}

#[test]
fn every_asset_parses_in_its_mode() {
    let mut failures = Vec::new();
    let rows = conformance::rows();
    assert!(
        rows.len() >= 10,
        "expected.tsv has only {} rows",
        rows.len()
    );
    for row in rows {
        match dumpfile::parse(&row.dumpfile(), mode(&row)) {
            Ok(tree) => assert!(!tree.is_empty()),
            Err(e) => failures.push(format!("{} ({:?}): {e}", row.asset, mode(&row))),
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
    for row in conformance::rows() {
        let Some(path) = conformance::expected_dump_path(&row.asset) else {
            continue;
        };
        let name = path.display();
        let want = std::fs::read(&path).unwrap_or_else(|e| panic!("read {name}: {e}"));
        let tree = match dumpfile::parse(&want, mode(&row)) {
            Ok(tree) => tree,
            Err(e) => {
                failures.push(format!("{name} ({:?}) does not parse: {e}", mode(&row)));
                continue;
            }
        };
        let mut got = Vec::new();
        dumpfile::print(&tree, &mut got).expect("print to a Vec");
        let diff = first_diff(&want, &got);
        if !diff.is_empty() {
            failures.push(format!("{name}:\n{diff}"));
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(checked >= 10, "only {checked} expected dumps checked");
}

#[test]
fn every_should_fail_input_is_rejected_with_a_line() {
    let entries = conformance::should_fail();
    assert!(
        entries.len() >= 10,
        "only {} should-fail inputs",
        entries.len()
    );
    let mut failures = Vec::new();
    for (name, input) in entries {
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
    for row in conformance::rows() {
        let tree = dumpfile::parse(&row.dumpfile(), mode(&row)).expect("asset parses");
        let mut printed = Vec::new();
        dumpfile::print(&tree, &mut printed).expect("print to a Vec");
        let again = dumpfile::parse(&printed, ParseMode::Lenient)
            .unwrap_or_else(|e| panic!("{}: printed dump does not parse: {e}", row.asset));
        let mut printed_again = Vec::new();
        dumpfile::print(&again, &mut printed_again).expect("print to a Vec");
        let diff = first_diff(&printed, &printed_again);
        assert!(diff.is_empty(), "{}:\n{diff}", row.asset);
    }
}
