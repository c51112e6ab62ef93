//! Who runs a command: root, the plain user `cfs-test`, or `cfs-test` as root
//! of its own user and mount namespace (`unshare -Urm`), entered from outside
//! with `nsenter` so that root can drop caches between runs.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// The plain user the unprivileged rows run as.
pub const USER: &str = "cfs-test";

/// Where a row's commands run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// root in the initial namespaces.
    Root,
    /// `cfs-test`, plain (setpriv).
    User,
    /// `cfs-test` as root of `unshare -Urm`.
    UserNs,
}

impl Who {
    /// A short label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Who::Root => "root",
            Who::User => "user",
            Who::UserNs => "user, unshare -Urm",
        }
    }
}

/// `setpriv` prefix turning root into the plain user.
fn as_user(cmd: &mut Command) -> &mut Command {
    cmd.args([
        "--reuid",
        USER,
        "--regid",
        USER,
        "--init-groups",
        "--reset-env",
    ])
}

/// A shell, alive for as long as a row's mount is, in the namespace the row's
/// commands run in. For [`Who::UserNs`] it is the `unshare -Urm` shell that
/// mounted (the mount lives in its namespace); otherwise it is only a name.
pub struct Place {
    who: Who,
    holder: Option<(Child, ChildStdin)>,
}

impl Place {
    /// Runs `mount` (a shell script) as `who`; returns the place and how long
    /// the mount took (to its command's exit, or to `ready` in a namespace).
    pub fn mount(who: Who, mount: &str) -> Result<(Place, Duration), String> {
        let t = Instant::now();
        if who != Who::UserNs {
            // A detached server may keep the stdio it was started with:
            // files, never pipes, or waiting for the command's output would
            // wait for the server's end.
            let err_path =
                std::env::temp_dir().join(format!("cfs-bench-mount-{}.err", std::process::id()));
            let err = std::fs::File::create(&err_path).map_err(|e| format!("{err_path:?}: {e}"))?;
            let status = command(who, None, mount)
                .stdout(Stdio::null())
                .stderr(err)
                .status()
                .map_err(|e| format!("{mount}: {e}"))?;
            let took = t.elapsed();
            let msg = std::fs::read_to_string(&err_path).unwrap_or_default();
            let _ = std::fs::remove_file(&err_path);
            if !status.success() {
                return Err(format!("{mount}: {status}: {}", msg.trim()));
            }
            return Ok((Place { who, holder: None }, took));
        }
        let script = format!("{mount} && echo ready && read _ ");
        let mut cmd = Command::new("setpriv");
        as_user(&mut cmd)
            .args(["unshare", "-Urm", "sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("unshare: {e}"))?;
        let stdin = child.stdin.take().expect("piped");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line);
        let took = t.elapsed();
        if line.trim() != "ready" {
            drop(stdin);
            let st = child.wait();
            return Err(format!("{mount} in unshare -Urm failed: {st:?}"));
        }
        Ok((
            Place {
                who,
                holder: Some((child, stdin)),
            },
            took,
        ))
    }

    /// The pid whose namespaces commands enter, if any.
    fn ns_pid(&self) -> Option<u32> {
        self.holder.as_ref().map(|(c, _)| c.id())
    }

    /// Runs a shell script here; its output.
    pub fn run(&self, script: &str) -> std::process::Output {
        sh(self.who, self.ns_pid(), script)
    }

    /// Runs `unmount` here, then ends the namespace's shell.
    pub fn unmount(mut self, unmount: &str) -> Result<(), String> {
        let out = self.run(unmount);
        if let Some((mut child, mut stdin)) = self.holder.take() {
            let _ = stdin.write_all(b"\n");
            drop(stdin);
            let _ = child.wait();
        }
        check(&out, unmount)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some((mut child, stdin)) = self.holder.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// `sh -c script` as `who` (entering `ns_pid`'s user and mount namespaces).
fn sh(who: Who, ns_pid: Option<u32>, script: &str) -> std::process::Output {
    command(who, ns_pid, script)
        .stdin(Stdio::null())
        .output()
        .expect("spawn sh")
}

/// The command running `sh -c script` as `who`.
fn command(who: Who, ns_pid: Option<u32>, script: &str) -> Command {
    let mut cmd = match (who, ns_pid) {
        (Who::Root, _) => Command::new("sh"),
        (Who::User, _) => {
            let mut c = Command::new("setpriv");
            as_user(&mut c).arg("sh");
            c
        }
        (Who::UserNs, Some(pid)) => {
            let mut c = Command::new("nsenter");
            c.args(["-t", &pid.to_string(), "-U", "-m", "--", "sh"]);
            c
        }
        (Who::UserNs, None) => unreachable!("a user namespace row runs in its holder"),
    };
    cmd.args(["-c", script]).stdin(Stdio::null());
    cmd
}

/// Ok when `out` succeeded, else an error with its stderr.
pub fn check(out: &std::process::Output, what: &str) -> Result<(), String> {
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
