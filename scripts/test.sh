#!/bin/bash
# The project's test command: formatting, lints, then every test.
# Kernel tests run when this is root and the kernel has erofs; they skip otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast
