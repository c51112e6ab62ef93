#!/bin/bash
# The project's test command: formatting, lints, docs, then every test, and
# one closing line with the totals. Kernel, FUSE and rootless tests run when
# this is root with the tools .ci/run installs; otherwise each says on stdout
# why it skips (`SKIPPED: <test>: <why>`), and is counted as skipped, not
# passed.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# libtest counts a skipped test as passed; a test that skipped (all of it, or
# a part it could not run here) printed `SKIPPED: <test>: <why>`.
skipped=$(grep -o 'SKIPPED: [^ ]*:' "$log" | sort -u | wc -l || true)
awk -v skipped="$skipped" '/^test result:/ { passed += $4; failed += $6 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", passed - skipped, failed, skipped }' "$log"
exit "$status"
