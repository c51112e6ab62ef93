#!/bin/bash
# cfs demo: build an image from a directory and from a dumpfile, print its
# digest, dump it, and (as root) mount it with `cfs mount` (erofs + overlayfs),
# read files through it and `cfs unmount` it. Everything happens in a temporary directory, cleaned up on exit.
set -euo pipefail
cd "$(dirname "$0")"

cargo build -p cfs
cfs="$PWD/target/debug/cfs"

work=$(mktemp -d)
mounts=()
cleanup() {
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        "$cfs" unmount "${mounts[i]}" 2>/dev/null || "$cfs" unmount --lazy "${mounts[i]}" || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

step "a small directory"
src="$work/src"
mkdir -p "$src/etc" "$src/usr/share/doc"
echo "hello from an inline file" > "$src/etc/motd"
for i in $(seq 1 200); do echo "line $i of a file stored by digest"; done > "$src/usr/share/doc/README"
ln -s ../usr/share/doc/README "$src/etc/readme-link"
find "$src" | sed "s|$work/||"

step "cfs mkfs DIR IMAGE (objects copied into objects/ab/cdef... by digest)"
"$cfs" mkfs --digest-store="$work/objects" --print-digest "$src" "$work/dir.cfs"
find "$work/objects" -type f | sed "s|$work/||"

step "cfs dump"
"$cfs" dump "$work/dir.cfs"

step "cfs ls / objects / missing-objects"
"$cfs" ls "$work/dir.cfs"
"$cfs" objects "$work/dir.cfs"
echo "missing: $("$cfs" missing-objects --basedir "$work/objects" "$work/dir.cfs" | wc -l)"

step "an image from a dumpfile (mkcomposefs --from-file)"
readme_digest=$("$cfs" digest "$src/usr/share/doc/README" | cut -d' ' -f1)
readme_size=$(stat -c %s "$src/usr/share/doc/README")
obj="${readme_digest:0:2}/${readme_digest:2}"
cat > "$work/demo.dump" <<DUMP
/ 4096 40755 2 0 0 0 0.0 - - -
/hello 6 100644 1 0 0 0 0.0 - hello\n -
/README $readme_size 100644 1 0 0 0 0.0 $obj - $readme_digest
DUMP
ln -sf "$cfs" "$work/mkcomposefs"
"$work/mkcomposefs" --print-digest --from-file "$work/demo.dump" "$work/dump.cfs"
"$cfs" dump "$work/dump.cfs"

if [ "$(id -u)" != 0 ]; then
    step "not root: skipping the mount"
    exit 0
fi

step "cfs mount: erofs from the image file + overlayfs over objects/ (data-only layer)"
mkdir "$work/mnt"
"$cfs" mount "$work/dir.cfs" "$work/mnt" --basedir "$work/objects"
mounts+=("$work/mnt")
grep " $work/mnt " /proc/self/mountinfo
ls -l "$work/mnt" "$work/mnt/etc"
step "cat etc/motd (inline) and the head of usr/share/doc/README (from objects/)"
cat "$work/mnt/etc/motd"
head -3 "$work/mnt/usr/share/doc/README"
step "cfs unmount"
"$cfs" unmount "$work/mnt"
mounts=()
if grep -q " $work/" /proc/self/mountinfo; then echo "still mounted!"; exit 1; else echo "nothing left mounted"; fi
