//! Running the FUSE server for a mount: in a thread of the mounting process
//! (`--foreground`), or detached in a re-executed `cfs` (the default).
//!
//! ## Handing over
//! The detached server is `EXE ARGS… --mode … --image …` (the CLI's hidden
//! [`SERVE_SUBCOMMAND`]), given its fds by the systemd socket-activation
//! protocol (sd_listen_fds(3)): fd 3 is the mounted `/dev/fuse`, fd 4 the
//! write end of a readiness pipe, `LISTEN_FDS=2`, `LISTEN_FDNAMES=fuse:ready`.
//! `LISTEN_PID` is left unset: its value, the child's pid, exists only after
//! fork, and the environment can't be changed safely between fork and exec;
//! the names are what the child checks ([`serve_handed_over`]). The server
//! writes `ready` on the pipe once it has answered FUSE_INIT (or `error: …`
//! if it could not start), and the mounting process waits for that line, so
//! `cfs mount` returns only once the mount answers, or with the server's
//! error. The server's stderr goes to `$CFS_SERVER_LOG` when set (appended),
//! else nowhere: a daemon holding its caller's stderr would keep a pipe
//! reader such as `$(cfs mount …)` waiting until unmount.
//!
//! ## Ending
//! The server ends when its FUSE session does (the mount went away: `cfs
//! unmount`, `umount`, `fusermount3 -u`). SIGTERM, SIGINT or SIGHUP make it
//! unmount its mount point (lazily: open files keep being served until they
//! close) and so end the same way; a second signal exits at once. If it dies
//! anyway, the kernel fails requests with ENOTCONN and `cfs unmount` still
//! removes the mount.

use crate::error::MountError;
use crate::MountMode;
use cfs_fuse::{ServeMode, ServeOptions, VerityPolicy};
use nix::sys::signal::{SigSet, Signal};
use rustix::fd::{AsFd, OwnedFd};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

/// The hidden `cfs` subcommand that runs a detached server.
pub const SERVE_SUBCOMMAND: &str = "__serve";

/// Environment variable naming a file the detached server logs to.
pub const LOG_ENV: &str = "CFS_SERVER_LOG";

/// How the FUSE server of a mount runs.
#[derive(Debug, Clone)]
pub enum Server {
    /// In a thread of the calling process: `mount` returns once the mount
    /// has gone away (unmounted, or SIGTERM/SIGINT/SIGHUP).
    Foreground,
    /// In a child process that outlives the caller.
    Detached(ServerCommand),
}

/// The program and leading arguments that run [`serve_handed_over`].
#[derive(Debug, Clone)]
pub struct ServerCommand {
    /// The executable.
    pub exe: PathBuf,
    /// Arguments before the server options (the subcommand).
    pub args: Vec<OsString>,
}

impl ServerCommand {
    /// This executable with [`SERVE_SUBCOMMAND`]: right for the `cfs` binary.
    pub fn this_exe() -> std::io::Result<ServerCommand> {
        Ok(ServerCommand {
            exe: std::env::current_exe()?,
            args: vec![SERVE_SUBCOMMAND.into()],
        })
    }
}

/// A started server.
pub(crate) enum Running {
    Thread(JoinHandle<Result<(), cfs_fuse::ServeFailed>>),
    Child,
}

impl Running {
    /// The mount is in place: a detached server carries on alone; a
    /// foreground one is waited for, with signals turned into an unmount.
    pub(crate) fn finish(self, mode: MountMode, target: &Path) -> Result<(), MountError> {
        match self {
            Running::Child => Ok(()),
            Running::Thread(handle) => {
                watch_signals(target.to_path_buf(), mode);
                join(handle, target)
            }
        }
    }

    /// The mount failed after the server started; its session ends with the
    /// FUSE mount, which the caller has dropped.
    pub(crate) fn abandon(self) {
        if let Running::Thread(h) = self {
            let _ = h.join();
        }
    }
}

fn join(
    handle: JoinHandle<Result<(), cfs_fuse::ServeFailed>>,
    target: &Path,
) -> Result<(), MountError> {
    match handle.join() {
        Ok(r) => r.map_err(|e| MountError::Server {
            path: target.to_path_buf(),
            message: error_chain(&e),
        }),
        Err(_) => Err(MountError::Server {
            path: target.to_path_buf(),
            message: "the server thread panicked".into(),
        }),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

/// Waits for a termination signal in a thread (the signals must already be
/// blocked in every thread), then unmounts `target` if our mount is still
/// there. A second signal exits.
fn watch_signals(target: PathBuf, mode: MountMode) {
    let _ = std::thread::Builder::new()
        .name("cfs-signals".into())
        .spawn(move || {
            let set = signals();
            if set.wait().is_err() {
                return;
            }
            if let Some(Some(m)) = crate::mounts::at(&target) {
                if m.mode == mode {
                    if let Err(e) = crate::unmount::unmount(&target, true) {
                        eprintln!("cfs server: on signal: {e}");
                    }
                }
            }
            let _ = set.wait();
            std::process::exit(1);
        });
}

/// Starts the server on the mounted `dev` and waits until it is ready.
pub(crate) fn start(
    opts: &ServeOptions,
    dev: OwnedFd,
    how: &Server,
) -> Result<Running, MountError> {
    match how {
        Server::Foreground => {
            // Blocked here, blocked in every thread spawned from here on.
            let _ = signals().thread_block();
            let (tx, rx) = std::sync::mpsc::channel();
            let o = opts.clone();
            let handle = std::thread::Builder::new()
                .name("cfs-fuse".into())
                .spawn(move || {
                    cfs_fuse::serve_fd(&o, dev, move || {
                        let _ = tx.send(());
                    })
                })
                .map_err(|source| MountError::Io {
                    op: "start the FUSE server thread for",
                    path: opts.mountpoint.clone(),
                    source,
                })?;
            match rx.recv() {
                Ok(()) => Ok(Running::Thread(handle)),
                Err(_) => Err(join(handle, &opts.mountpoint).err().unwrap_or_else(|| {
                    MountError::Server {
                        path: opts.mountpoint.clone(),
                        message: "the server ended before it was ready".into(),
                    }
                })),
            }
        }
        Server::Detached(cmd) => spawn_detached(opts, dev, cmd),
    }
}

#[allow(unsafe_code)]
fn spawn_detached(
    opts: &ServeOptions,
    dev: OwnedFd,
    cmd: &ServerCommand,
) -> Result<Running, MountError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let io = |op: &'static str| {
        let path = opts.mountpoint.clone();
        move |e: std::io::Error| MountError::Io {
            op,
            path,
            source: e,
        }
    };
    let (mut ready_r, ready_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map(|(r, w)| (std::fs::File::from(r), w))
        .map_err(|e| io("create a readiness pipe for")(e.into()))?;
    // Copies above the numbers they move to, so neither dup2 below clobbers the other.
    let dup = |fd: rustix::fd::BorrowedFd<'_>| rustix::io::fcntl_dupfd_cloexec(fd, 10);
    let (dev_hi, ready_hi) = dup(dev.as_fd())
        .and_then(|d| Ok((d, dup(ready_w.as_fd())?)))
        .map_err(|e| io("pass fds to the server for")(e.into()))?;
    drop((dev, ready_w));
    let (dev_raw, ready_raw) = (dev_hi.as_raw_fd(), ready_hi.as_raw_fd());
    let stderr = match std::env::var_os(LOG_ENV) {
        Some(p) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map(Stdio::from)
            .map_err(io("open the server log for"))?,
        None => Stdio::null(),
    };
    let mut command = Command::new(&cmd.exe);
    command
        .args(&cmd.args)
        .args(server_args(opts))
        .env("LISTEN_FDS", "2")
        .env("LISTEN_FDNAMES", "fuse:ready")
        .env_remove("LISTEN_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .process_group(0);
    // SAFETY: the closure runs in the forked child before exec and only calls
    // dup2(2), which is async-signal-safe and allocates nothing. Its sources
    // are fds this process owns (dev_hi, ready_hi stay open until after
    // spawn) numbered 10 or more, so dup2 onto 3 and 4 can't close either
    // source; dup2 leaves the copies without FD_CLOEXEC, so they survive exec.
    unsafe {
        command.pre_exec(move || {
            for (from, to) in [(dev_raw, 3), (ready_raw, 4)] {
                if libc::dup2(from, to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(io("start the FUSE server for"))?;
    drop((dev_hi, ready_hi));
    let mut said = String::new();
    let _ = ready_r.read_to_string(&mut said);
    let said = said.trim();
    if said == "ready" {
        // Not waited for: the server outlives us (and init reaps it).
        drop(child);
        return Ok(Running::Child);
    }
    let status = child.wait().map_err(io("wait for the FUSE server of"))?;
    Err(MountError::Server {
        path: opts.mountpoint.clone(),
        message: match said.strip_prefix("error: ") {
            Some(m) => m.to_string(),
            None => format!("it exited before it was ready ({status})"),
        },
    })
}

/// The server options as arguments, read back by [`parse_server_args`].
pub fn server_args(o: &ServeOptions) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "--mode".into(),
        match o.mode {
            ServeMode::Standalone => "standalone",
            ServeMode::OverlayLower => "overlay-lower",
        }
        .into(),
        "--image".into(),
        o.image.clone().into(),
        "--mountpoint".into(),
        o.mountpoint.clone().into(),
        "--verity".into(),
        match o.verity {
            VerityPolicy::None => "none",
            VerityPolicy::Require => "require",
            _ => "auto",
        }
        .into(),
        "--threads".into(),
        o.threads.to_string().into(),
    ];
    if let Some(obj) = &o.objects {
        a.push("--objects".into());
        a.push(obj.clone().into());
    }
    a
}

/// Reads what [`server_args`] wrote.
pub fn parse_server_args(args: &[OsString]) -> Result<ServeOptions, String> {
    let mut o = ServeOptions::new(PathBuf::new(), PathBuf::new());
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let v = it
            .next()
            .ok_or_else(|| format!("{} needs a value", k.to_string_lossy()))?;
        let s = || v.to_str().ok_or_else(|| format!("{v:?} is not UTF-8"));
        match k.to_str() {
            Some("--mode") => {
                o.mode = match s()? {
                    "standalone" => ServeMode::Standalone,
                    "overlay-lower" => ServeMode::OverlayLower,
                    m => return Err(format!("unknown mode {m}")),
                }
            }
            Some("--image") => o.image = v.into(),
            Some("--mountpoint") => o.mountpoint = v.into(),
            Some("--objects") => o.objects = Some(v.into()),
            Some("--verity") => {
                o.verity = match s()? {
                    "none" => VerityPolicy::None,
                    "require" => VerityPolicy::Require,
                    "auto" => VerityPolicy::Auto,
                    m => return Err(format!("unknown verity policy {m}")),
                }
            }
            Some("--threads") => o.threads = s()?.parse().map_err(|e| format!("--threads: {e}"))?,
            _ => return Err(format!("unknown server option {}", k.to_string_lossy())),
        }
    }
    if o.image.as_os_str().is_empty() || o.mountpoint.as_os_str().is_empty() {
        return Err("--image and --mountpoint are required".into());
    }
    Ok(o)
}

/// Takes fds 3 (`fuse`) and 4 (`ready`) handed over by [`spawn_detached`].
#[allow(unsafe_code)]
fn take_listen_fds() -> Result<(OwnedFd, std::fs::File), String> {
    use std::os::fd::FromRawFd;
    let var = |k| std::env::var(k).unwrap_or_default();
    if var("LISTEN_FDS") != "2" || var("LISTEN_FDNAMES") != "fuse:ready" {
        return Err(
            "no fds handed over (LISTEN_FDS=2, LISTEN_FDNAMES=fuse:ready): \
                    this command is run by `cfs mount`"
                .into(),
        );
    }
    if let Ok(pid) = std::env::var("LISTEN_PID") {
        if pid != std::process::id().to_string() {
            return Err(format!("LISTEN_PID {pid} is not this process"));
        }
    }
    for k in ["LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID"] {
        std::env::remove_var(k);
    }
    for fd in [3, 4] {
        // SAFETY: only borrowed for the check; fcntl on a closed fd fails.
        let borrowed = unsafe { rustix::fd::BorrowedFd::borrow_raw(fd) };
        rustix::io::fcntl_setfd(borrowed, rustix::io::FdFlags::CLOEXEC)
            .map_err(|e| format!("handed-over fd {fd}: {e}"))?;
    }
    // SAFETY: LISTEN_FDS/LISTEN_FDNAMES (checked above, then removed so this
    // runs once) say fds 3 and 4 were opened for this process by its parent
    // and are open (fcntl succeeded); nothing else in this process refers to
    // them, so taking ownership closes them exactly once.
    let (dev, ready) = unsafe { (OwnedFd::from_raw_fd(3), std::fs::File::from_raw_fd(4)) };
    Ok((dev, ready))
}

/// The detached server: takes the handed-over fds, serves, says `ready`.
/// Returns when the mount has gone away.
pub fn serve_handed_over(args: &[OsString]) -> Result<(), String> {
    let (dev, ready) = take_listen_fds()?;
    let ready = std::sync::Mutex::new(Some(ready));
    let say = |msg: &str| {
        if let Some(mut f) = ready.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = writeln!(f, "{msg}");
        }
    };
    let opts = match parse_server_args(args) {
        Ok(o) => o,
        Err(e) => {
            say(&format!("error: {e}"));
            return Err(e);
        }
    };
    let mode = match opts.mode {
        ServeMode::Standalone => MountMode::Fuse,
        _ => MountMode::FuseOverlay,
    };
    let _ = signals().thread_block();
    watch_signals(opts.mountpoint.clone(), mode);
    let r = cfs_fuse::serve_fd(&opts, dev, || say("ready"));
    if let Err(e) = &r {
        say(&format!("error: {}", error_chain(e)));
    }
    r.map_err(|e| error_chain(&e))
}

/// The name of `mode` as users see it (`kernel`, `fuse+overlay`, `fuse`).
pub fn mode_name(mode: MountMode) -> &'static str {
    match mode {
        MountMode::Kernel => "kernel",
        MountMode::FuseOverlay => "fuse+overlay",
        MountMode::Fuse => "fuse",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn server_args_round_trip() {
        let mut o = ServeOptions::new("/r/images/x", "/mnt/with space");
        o.mode = ServeMode::OverlayLower;
        o.verity = VerityPolicy::None;
        o.threads = 3;
        o.objects = Some("/r/objects".into());
        let back = parse_server_args(&server_args(&o)).unwrap();
        assert_eq!(format!("{back:?}"), format!("{o:?}"));
        assert!(parse_server_args(&["--mode".into()]).is_err());
        assert!(parse_server_args(&[OsStr::new("--bogus").into(), "x".into()]).is_err());
    }
}
