#!/bin/bash
# cfs demo: build an image from a directory and from a dumpfile, print its
# digest, dump it, and (as root) mount it in all three modes: kernel (erofs +
# overlayfs), fuse+overlay, and as a plain user standalone FUSE and, in a user
# namespace, fuse+overlay, and the kernel mount a mount service makes for
# that plain user; read files through each and `cfs unmount` it. Everything
# happens in a temporary directory, cleaned up on exit.
set -euo pipefail
cd "$(dirname "$0")"

cargo build -p cfs
cfs="$PWD/target/debug/cfs"

work=$(mktemp -d)
mounts=()
service=
cleanup() {
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        "$cfs" unmount "${mounts[i]}" 2>/dev/null || "$cfs" unmount --lazy "${mounts[i]}" || true
    done
    if [ -n "$service" ]; then kill "$service" 2>/dev/null || true; wait "$service" 2>/dev/null || true; fi
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

step "mode 1, kernel (root, --fuse=auto): erofs from the image file + overlayfs over objects/"
mkdir "$work/mnt"
"$cfs" mount --explain "$work/dir.cfs" "$work/mnt" --basedir "$work/objects"
mounts+=("$work/mnt")
"$cfs" mounts
ls -l "$work/mnt" "$work/mnt/etc"
step "cat etc/motd (inline) and the head of usr/share/doc/README (from objects/)"
cat "$work/mnt/etc/motd"
head -3 "$work/mnt/usr/share/doc/README"
"$cfs" unmount "$work/mnt"
mounts=()

step "mode 2, fuse+overlay (root, --fuse=yes): FUSE for metadata, overlayfs reads objects/"
"$cfs" mount --fuse=yes --explain "$work/dir.cfs" "$work/mnt" --basedir "$work/objects"
mounts+=("$work/mnt")
"$cfs" mounts
head -3 "$work/mnt/usr/share/doc/README"
"$cfs" unmount "$work/mnt"
mounts=()

# The rootless modes need a plain user: cfs-demo, created here if missing,
# and /dev/fuse usable by everyone as distributions ship it (fuse3 for fusermount3).
if ! command -v fusermount3 >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    step "installing fuse3 (fusermount3) for the rootless modes"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends fuse3 >/dev/null ||
        echo "note: could not install fuse3"
fi
if command -v fusermount3 >/dev/null && command -v setpriv >/dev/null; then
    id cfs-demo >/dev/null 2>&1 || useradd -m cfs-demo
    chmod 0666 /dev/fuse
    chmod -R a+rX "$work"
    chmod a+x "$work"
    mkdir "$work/user" && chown cfs-demo "$work/user"
    as_user() { setpriv --reuid cfs-demo --regid cfs-demo --init-groups "$@"; }
    script='
        cd "$1"; mkdir -p mnt
        "$CFS" mount --explain "$2/dir.cfs" mnt --basedir "$2/objects"
        "$CFS" mounts
        ls -l mnt/etc; head -2 mnt/usr/share/doc/README
        "$CFS" unmount mnt'
    # No mount service for these two (one may run on this machine).
    nosvc="CFS_MOUNT_SERVICE=$work/no-service"
    step "mode 3, standalone FUSE (plain user cfs-demo, --fuse=auto, through fusermount3)"
    as_user env "$nosvc" CFS="$cfs" sh -eu -c "$script" sh "$work/user" "$work"
    step "mode 2 rootless (cfs-demo in unshare -Urm, --fuse=auto): fuse+overlay, writable with --upperdir"
    as_user unshare -Urm env "$nosvc" CFS="$cfs" sh -eu -c "$script"'
        mkdir -p up work
        "$CFS" mount --upperdir up --workdir work --read-write "$2/dir.cfs" mnt --basedir "$2/objects"
        echo "written by cfs-demo" > mnt/etc/motd
        cat mnt/etc/motd
        "$CFS" unmount mnt
        echo "upper dir holds: $(ls up/etc)"' sh "$work/user" "$work"
    step "mode 4, the mount service (root runs cfs mount-service; cfs-demo's --fuse=auto gets a kernel mount from it)"
    mkdir "$work/service"
    "$cfs" mount-service --socket "$work/service/mount.sock" --cache "$work/service/cache" \
        2> "$work/service/log" &
    service=$!
    for _ in $(seq 100); do [ -S "$work/service/mount.sock" ] && break; sleep 0.1; done
    as_user env CFS_MOUNT_SERVICE="$work/service/mount.sock" CFS="$cfs" sh -eu -c "$script" sh "$work/user" "$work"
    echo "the service's log:"; sed 's/^/  /' "$work/service/log"
    kill "$service"; wait "$service" 2>/dev/null || true; service=
    sleep 0.3
    if ps -u cfs-demo -o stat= | grep -qv '^Z'; then echo "cfs-demo processes left!"; exit 1; fi
else
    step "no fusermount3 or setpriv: skipping the rootless modes (apt-get install fuse3 util-linux)"
fi
if grep -q " $work/" /proc/self/mountinfo; then echo "still mounted!"; exit 1; else echo "nothing left mounted"; fi
