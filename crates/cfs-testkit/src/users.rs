//! Tests as real users in real namespaces: the plain user [`TEST_USER`],
//! scripts run as it (and as root of a user namespace), and the processes a
//! test started, found by a tag in their environment, so that a test checks
//! its own processes and never anyone else's.

use crate::command::{stderr, Cfs};
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The plain user the rootless tests run as (`.ci/run` creates it).
pub const TEST_USER: &str = "cfs-test";

/// Makes `/dev/fuse` usable by everyone (0666, as distributions ship it)
/// and creates [`TEST_USER`] if it doesn't exist: what `.ci/run` does.
pub fn setup_test_user() -> Result<(), String> {
    let _ = Command::new("chmod").args(["0666", "/dev/fuse"]).status();
    let exists = Command::new("id")
        .arg(TEST_USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if exists {
        return Ok(());
    }
    let o = Command::new("useradd")
        .args(["-m", TEST_USER])
        .output()
        .map_err(|e| format!("useradd: {e}"))?;
    // Two tests may race to create it: what counts is that it exists.
    let exists_now = Command::new("id")
        .arg(TEST_USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if o.status.success() || exists_now {
        Ok(())
    } else {
        Err(format!("useradd {TEST_USER}: {}", stderr(&o)))
    }
}

/// Who runs a test script.
#[derive(Clone, Copy, Debug)]
pub enum As {
    /// This process's user (root).
    Root,
    /// [`TEST_USER`], through `setpriv`.
    User,
    /// [`TEST_USER`] as root of a new user and mount namespace (`unshare
    /// -Urm`), where only its own ids are mapped (to 0).
    UserNs,
    /// As `UserNs`, with the user's subordinate ids mapped too: `uids` from
    /// `/etc/subuid` (and `gids` from `/etc/subgid`), each `(start, count)`,
    /// appear as `1..=count` in the namespace, through `newuidmap`.
    UserNsAllIds {
        /// Subordinate uid range.
        uids: (u32, u32),
        /// Subordinate gid range.
        gids: (u32, u32),
    },
}

/// The first subordinate id range `(start, count)` of [`TEST_USER`] in
/// `/etc/subuid` or `/etc/subgid`.
pub fn subordinate_ids(file: &str) -> Option<(u32, u32)> {
    std::fs::read_to_string(file).ok()?.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == TEST_USER).then_some(())?;
        Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
    })
}

/// A mark in the environment of the processes a test starts
/// (`CFS_TEST_TAG=<unique>`), inherited by what they start in turn (FUSE
/// servers): how a test finds its own processes among everyone's.
#[derive(Debug, Clone)]
pub struct Tag(String);

/// The environment variable holding a [`Tag`].
pub const TAG_VAR: &str = "CFS_TEST_TAG";

impl Tag {
    /// A tag no other test (in this or another run) uses.
    pub fn new() -> Tag {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Tag(format!(
            "{}-{now}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// The tag's value.
    pub fn value(&self) -> &str {
        &self.0
    }

    /// Marks a command (and so what it starts).
    pub fn mark<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env(TAG_VAR, &self.0)
    }

    /// The live (not zombie) processes carrying this tag: `(pid, command line)`.
    pub fn processes(&self) -> Vec<(u32, String)> {
        let want = format!("{TAG_VAR}={}", self.0).into_bytes();
        let mut out = Vec::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return out;
        };
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(env) = std::fs::read(e.path().join("environ")) else {
                continue;
            };
            if !env.split(|&b| b == 0).any(|v| v == want) {
                continue;
            }
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let state = stat.rsplit_once(") ").map(|(_, s)| s.chars().next());
            if state == Some(Some('Z')) {
                continue;
            }
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            out.push((pid, cmdline));
        }
        out
    }

    /// Fails unless every tagged process has ended within `limit`.
    pub fn assert_none_left(&self, limit: Duration) {
        let mut left = Vec::new();
        let gone = crate::mounts::wait_until(limit, || {
            left = self.processes();
            left.is_empty()
        });
        assert!(
            gone,
            "processes this test started are still running: {left:#?}"
        );
    }
}

impl Default for Tag {
    fn default() -> Tag {
        Tag::new()
    }
}

/// A script to run under `sh -eu` as someone, with a time limit
/// (`timeout`, so a hung server fails the test instead of hanging it).
pub struct Script<'a> {
    /// The binary under test, as `$CFS`.
    pub cfs: &'a Cfs,
    /// Who runs it.
    pub who: As,
    /// Its working directory.
    pub dir: &'a Path,
    /// More environment.
    pub env: &'a [(&'a str, &'a OsStr)],
    /// Its time limit.
    pub limit: Duration,
    /// Marks it and its children, when given.
    pub tag: Option<&'a Tag>,
}

impl Script<'_> {
    /// Runs `script`; fails the test if it timed out.
    pub fn run(&self, script: &str) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5"]).arg(self.limit.as_secs().to_string());
        if !matches!(self.who, As::Root) {
            cmd.args([
                "setpriv",
                "--reuid",
                TEST_USER,
                "--regid",
                TEST_USER,
                "--init-groups",
            ]);
        }
        match self.who {
            As::Root | As::User => {}
            As::UserNs => {
                cmd.args(["unshare", "-Urm"]);
            }
            As::UserNsAllIds { uids, gids } => {
                cmd.args(["unshare", "-Urm"])
                    .arg(format!("--map-users={},1,{}", uids.0, uids.1))
                    .arg(format!("--map-groups={},1,{}", gids.0, gids.1));
            }
        }
        cmd.args(["sh", "-eu", "-c", script])
            .env("CFS", self.cfs.exe())
            .envs(self.env.iter().copied())
            .env_remove("CFS_REPO")
            .current_dir(self.dir)
            .stdin(Stdio::null());
        if let Some(tag) = self.tag {
            tag.mark(&mut cmd);
        }
        let out = cmd.output().expect("run a test script");
        assert_ne!(
            out.status.code(),
            Some(124),
            "{:?} script timed out:\n{script}\nstderr: {}",
            self.who,
            stderr(&out)
        );
        out
    }
}
