#!/bin/bash
# Mounts that are none of the tests' business, as another user of a shared
# machine would have them, so that a CI run proves the tests look only at
# what they made themselves:
#   - a composefs kernel mount by root (`cfs mount --fuse=no`),
#   - a cfs standalone FUSE mount by the plain user cfs-test, its server
#     running as that user,
#   - a FUSE mount that is not cfs's (squashfuse), where squashfuse and
#     mksquashfs are installed.
#
#   scripts/neighbours.sh start CFS   prints the directory holding them
#   scripts/neighbours.sh stop DIR    fails if any of them went away during the
#                                     run (a test touched what wasn't its own),
#                                     then unmounts them and removes DIR
#
# Needs root, erofs, overlayfs and fuse; with something missing it makes
# what it can and says what it left out.
set -euo pipefail

user=cfs-test

start() {
    local cfs=$1 dir
    dir=$(mktemp -d /tmp/cfs-neighbours.XXXXXX)
    chmod 0755 "$dir"
    mkdir -p "$dir/src/sub" "$dir/kernel" "$dir/user" "$dir/squash"
    echo "a neighbour's file" > "$dir/src/small"
    head -c 100000 /dev/zero | tr '\0' n > "$dir/src/sub/big"
    "$cfs" mkfs --digest-store "$dir/objects" "$dir/src" "$dir/image.cfs" >/dev/null
    chmod -R a+rX "$dir"
    if "$cfs" mount --fuse=no --basedir "$dir/objects" "$dir/image.cfs" "$dir/kernel"; then
        echo "neighbour: root's kernel cfs mount on $dir/kernel" >&2
        touch "$dir/made-kernel"
    else
        echo "neighbour: no kernel cfs mount" >&2
    fi
    chmod 0666 /dev/fuse 2>/dev/null || true
    id "$user" >/dev/null 2>&1 || useradd -m "$user"
    chown "$user" "$dir/user"
    if setpriv --reuid "$user" --regid "$user" --init-groups \
            "$cfs" mount --basedir "$dir/objects" "$dir/image.cfs" "$dir/user" </dev/null; then
        echo "neighbour: $user's cfs FUSE mount on $dir/user" >&2
        touch "$dir/made-user"
    else
        echo "neighbour: no FUSE mount by $user" >&2
    fi
    if command -v squashfuse >/dev/null && command -v mksquashfs >/dev/null &&
            mksquashfs "$dir/src" "$dir/src.sqfs" -quiet -noappend >/dev/null &&
            squashfuse "$dir/src.sqfs" "$dir/squash"; then
        echo "neighbour: squashfuse mount on $dir/squash" >&2
        touch "$dir/made-squash"
    else
        echo "neighbour: no squashfuse mount (apt-get install squashfuse squashfs-tools)" >&2
    fi
    echo "$dir"
}

# Whether DIR is a mount point in this namespace (by the mount table, not a
# stat: root may not enter another user's FUSE mount).
mounted() {
    awk -v d="$1" '$5 == d { found = 1 } END { exit !found }' /proc/self/mountinfo
}

stop() {
    local dir=$1 lost=0
    case $dir in /tmp/cfs-neighbours.*) ;; *) echo "not a neighbours directory: $dir" >&2; exit 2;; esac
    # Each one still mounted, and still serving its file to its owner.
    for m in kernel user squash; do
        [ -e "$dir/made-$m" ] || continue
        local as=()
        [ "$m" = user ] && as=(setpriv --reuid "$user" --regid "$user" --init-groups)
        if ! mounted "$dir/$m" || ! "${as[@]}" timeout 10 cat "$dir/$m/small" >/dev/null; then
            echo "neighbour: the $m mount on $dir/$m did not survive the run" >&2
            lost=1
        fi
    done
    for m in kernel user squash; do
        if mounted "$dir/$m"; then
            umount "$dir/$m" 2>/dev/null || umount -l "$dir/$m"
        fi
    done
    rm -rf "$dir"
    return "$lost"
}

case ${1:-} in
    start) start "${2:?usage: neighbours.sh start CFS}";;
    stop) stop "${2:?usage: neighbours.sh stop DIR}";;
    *) echo "usage: neighbours.sh start CFS | stop DIR" >&2; exit 2;;
esac
