#!/bin/bash
# The project's test command: formatting, lints, then every test, and one
# closing line with the totals. Kernel, FUSE and rootless tests run when this
# is root with the tools .ci/run installs; they skip with a message otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { passed += $4; failed += $6 }
     END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
