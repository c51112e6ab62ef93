//! A late-exiting server must not unmount the next mount at its path.
//!
//! fuser's own session unmounts its mount point by path when it ends, so a
//! server that is slow to exit after its mount was removed from outside
//! unmounted whatever had been mounted at the same path since (upstream
//! composefs's `test-random-fuse.sh`, which unmounts and remounts at one
//! path, tripped on it). A cfs server never unmounts on its way out: it
//! ends with its connection.

use super::{run_ok, setup, FUSE_MODES};
use cfs_testkit::need;
use cfs_testkit::require;

/// For every FUSE mode, and `cfs fuse-serve` (which failed this before:
/// the resumed server unmounted the new mount): the first server is stopped
/// (SIGSTOP), its mount removed from outside, a second mount made at the same path, and the
/// first server resumed: it exits, and the second mount stays, answering.
#[test]
fn a_late_exiting_server_leaves_the_next_mount_at_its_path_alone() {
    require!(need::rootless(super::TOOLS));
    let s = setup();
    let _resume = Resume(&s.tag);
    // `cfs fuse-serve` too: it is where fuser's unmount-by-path used to live.
    let fuse_serve = (
        cfs_testkit::users::As::Root,
        r#"$CFS fuse-serve --basedir "$OBJECTS""#,
        "$CFS unmount",
        "root fuse-serve",
    );
    for (i, &(who, mount, unmount, what)) in FUSE_MODES
        .iter()
        .chain(std::iter::once(&fuse_serve))
        .enumerate()
    {
        let script = format!(
            r#"
            m="$PWD/stale{i}"; mkdir "$m"
            {mount} "$IMAGE" "$m"
            old=$(pgrep -f -- "__serve .*--mountpoint $m( |\$)" | head -n1)
            [ -n "$old" ] || {{ echo "no server found"; exit 1; }}
            trap 'kill -CONT "$old" 2>/dev/null || true' EXIT INT TERM
            kill -STOP "$old"
            {unmount} "$m"
            {mount} "$IMAGE" "$m"
            new=$(pgrep -f -- "__serve .*--mountpoint $m( |\$)" | grep -vx "$old" | head -n1)
            kill -CONT "$old"
            n=0
            while kill -0 "$old" 2>/dev/null; do
                n=$((n + 1)); [ $n -lt 200 ] || {{ echo "the old server never exited"; exit 1; }}
                sleep 0.05
            done
            sleep 0.3
            grep -q " $m " /proc/self/mountinfo || {{ echo "the new mount is gone"; exit 1; }}
            kill -0 "$new" || {{ echo "the new server is gone"; exit 1; }}
            cat "$m/inline"
            $CFS unmount "$m"
            "#
        );
        let out = run_ok(who, &s, &script);
        assert_eq!(out, "inline A\n", "{what}");
    }
    s.tag.assert_none_left(std::time::Duration::from_secs(10));
}

/// Resumes every process of the test (SIGCONT) when dropped, so that a
/// failed test leaves no stopped server behind a mount.
struct Resume<'a>(&'a cfs_testkit::users::Tag);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        for (pid, _) in self.0.processes() {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::CONT);
            }
        }
    }
}
