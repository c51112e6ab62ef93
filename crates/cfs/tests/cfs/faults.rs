//! Load and faults, end to end with the real binary (the "Hardening" issue):
//! many readers on FUSE mounts for as long as asked, the FUSE server killed
//! mid-read, the repository's file system full mid-import, gc killed
//! mid-sweep. The promise under test: no fault makes cfs panic, hang, lose
//! data or write where it shouldn't. What each test proves, the numbers of a
//! long run and how to rerun it: `docs/hardening.md`. The FUSE tests are in
//! `faults/fuse.rs`, the repository's in `faults/repo.rs`; what they share
//! (bounded `cfs` runs, scratch file systems) is here.
//!
//! Needs root (mounts, `/proc/sys/vm/drop_caches`); each test says why it
//! skips otherwise. Every wait is bounded, so a hang fails a test instead of
//! hanging CI. `CFS_FUSE_LOAD_SECS` sets the load test's duration (12 s by
//! default), `CFS_GC_KILLS` the number of gc kills (6), `CFS_TEST_SEED` the
//! seed of the kill delays.

mod fuse;
mod repo;

use crate::cfs;
use crate::support::{build, expected_id, fsck_json, generate, objects_match_names};
use cfs_testkit::mounts::{bounded, umount, FuseMount};
use cfs_testkit::rng::env_number as env_u64;
use cfs_testkit::walk::{walk_recording, walk_recording_bounded, Contents, Entry, Recorded};
use cfs_testkit::{need, ok, require, stderr, Rng};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a walk of a mount may take before the test fails.
const WALK_LIMIT: Duration = Duration::from_secs(120);

/// `cfs ARGS…`, failing the test if it takes longer than `limit`.
fn cfs_bounded(args: &[&OsStr], limit: Duration) -> Output {
    let args: Vec<_> = args.iter().map(|a| a.to_os_string()).collect();
    let what = format!("cfs {args:?}");
    bounded(limit, &what, move || cfs().run(&args))
}

/// `cfs --repo REPO ARGS…`, failing the test if it takes longer than two minutes.
fn repo_bounded(repo: &Path, args: &[&str]) -> Output {
    let mut all = vec![OsStr::new("--repo"), repo.as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    cfs_bounded(&all, Duration::from_secs(120))
}

/// A small file system mounted on a fresh directory, unmounted on drop.
struct ScratchFs {
    dir: tempfile::TempDir,
    mounted: bool,
    /// The ext4 image file's directory.
    _backing: Option<tempfile::TempDir>,
}

impl ScratchFs {
    /// A tmpfs of `mib` MiB.
    fn tmpfs(mib: u64) -> Result<ScratchFs, String> {
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path()))?;
        Ok(ScratchFs {
            dir,
            mounted: true,
            _backing: None,
        })
    }

    /// Room for test trees: a tmpfs of `mib` MiB where this process can mount
    /// one, else a plain temporary directory. (Creating thousands of files
    /// on a busy disk takes milliseconds each; what these tests look at does
    /// not depend on the file system.)
    fn fast(mib: u64) -> ScratchFs {
        let tmpfs = rustix::process::geteuid()
            .is_root()
            .then(|| ScratchFs::tmpfs(mib).ok())
            .flatten();
        tmpfs.unwrap_or_else(|| ScratchFs {
            dir: tempfile::tempdir().unwrap(),
            mounted: false,
            _backing: None,
        })
    }

    /// An ext4 of `mib` MiB (no blocks reserved for root) on a loop device.
    fn ext4(mib: u64) -> Result<ScratchFs, String> {
        let backing = tempfile::tempdir().unwrap();
        let file = backing.path().join("ext4.img");
        File::create(&file).unwrap().set_len(mib << 20).unwrap();
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&file))?;
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&file)
            .arg(dir.path()))?;
        Ok(ScratchFs {
            dir,
            mounted: true,
            _backing: Some(backing),
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes free for root.
    fn free(&self) -> u64 {
        let st = rustix::fs::statvfs(self.path()).unwrap();
        st.f_bfree * st.f_frsize
    }

    /// Fills the file system with `filler` until `left` bytes are free.
    fn fill_leaving(&self, left: u64) -> PathBuf {
        let filler = self.path().join("filler");
        let mut f = File::create(&filler).unwrap();
        let chunk = vec![0xA5u8; 1 << 20];
        while self.free() > left {
            let n = (self.free() - left).min(chunk.len() as u64) as usize;
            if std::io::Write::write_all(&mut f, &chunk[..n]).is_err() {
                break;
            }
            f.sync_all().unwrap();
        }
        filler
    }
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        if self.mounted {
            umount(self.dir.path());
        }
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let o = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?}: {}", stderr(&o)))
    }
}
