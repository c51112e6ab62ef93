#!/bin/bash
# Builds the fuzz targets with libFuzzer's coverage instrumentation on the stable
# toolchain (the flags cargo-fuzz passes, minus sanitizers that need nightly) and
# runs one: fuzz/run.sh TARGET [SECONDS] [libFuzzer args...]
# Seeds: the conformance dumps, images our writer builds from them, and (for
# tar_import) tar layers made from them by the tar_import_seeds bin.
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?usage: run.sh erofs_walk|dumpfile_roundtrip|tar_import|fuse_request [seconds] [libfuzzer args]}
secs=${2:-60}
shift $(( $# > 1 ? 2 : 1 ))
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps these flags off build scripts and proc macros.
triple=$(rustc -vV | sed -n "s/^host: //p")
bins=(--bin "$target")
case $target in
    erofs_walk | tar_import) bins+=(--bin "${target}_seeds");;
esac
cargo build --release --target "$triple" "${bins[@]}" >&2
conf=../../shared/conformance
corpus=corpus/$target
mkdir -p "$corpus" artifacts/"$target"
if [ -z "$(ls -A "$corpus")" ]; then
    case $target in
        dumpfile_roundtrip)
            for f in "$conf"/assets/* "$conf"/should-fail/*; do
                case $f in *.gz) { zcat "$f" | head -c 65536 > "$corpus/$(basename "$f" .gz)"; } || true;; *) cp "$f" "$corpus/";; esac
            done;;
        erofs_walk)
            # Images our writer builds from the dumps, up to 1 MiB (-max_len).
            seeds=target/"$triple"/release/erofs_walk_seeds
            for f in "$conf"/assets/*; do
                n=$(basename "$f" .gz)
                case $f in
                    *.gz) zcat "$f" | "$seeds" - "$corpus/$n.img" 2>/dev/null || true;;
                    *) "$seeds" "$f" "$corpus/$n.img" 2>/dev/null || true;;
                esac
            done;;
        fuse_request)
            # Requests as the kernel sends them (fuse-request-*.bin).
            cp seeds/fuse_request/* "$corpus"/;;
        tar_import)
            seeds=target/"$triple"/release/tar_import_seeds
            "$seeds" --examples "$corpus"
            for f in "$conf"/assets/*; do
                case $f in
                    *.gz) zcat "$f" | "$seeds" - "$corpus" "$(basename "$f" .gz)" || true;;
                    *) "$seeds" "$f" "$corpus" "$(basename "$f")" || true;;
                esac
            done;;
    esac
fi
exec target/"$triple"/release/"$target" "$corpus" -artifact_prefix=artifacts/"$target"/ \
    -max_total_time="$secs" -max_len=1048576 -timeout=10 -rss_limit_mb=2048 "$@"
