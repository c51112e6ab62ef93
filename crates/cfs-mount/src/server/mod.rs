//! Running the FUSE server of a mount: in a thread of the mounting process
//! (`--foreground`), or detached in a re-executed `cfs` (the default).
//!
//! ## Handing over
//! Everything the server reads is opened by the mounting process before the
//! mount exists and handed over as fds: the mounted `/dev/fuse`, the image
//! (the very file that was checked, or its sealed copy), the objects
//! directory. So the server opens no path, and a mount over the image's own
//! directory can't make it wait on itself.
//!
//! The detached server is `EXE __serve --mountpoint … --mode … …` (the
//! CLI's hidden [`SERVE_SUBCOMMAND`], whose arguments are [`ServerArgs`],
//! parsed with clap), given its fds open across exec at the numbers they
//! had in `cfs mount`, named in `CFS_HANDED_FDS=fuse=N:control=N:image=N[:objects=N]`
//! ([`crate::sys::hand_over_at_exec`]): the FUSE connection, a control
//! socket, the image, the objects directory. (Not renumbered to 3, 4, … as
//! socket activation does: `dup2` between fork and exec could close the
//! pipe through which the standard library reports a failed exec.)
//!
//! The control socket carries two lines. The server writes `ready` once it
//! has answered FUSE_INIT (or `error: …` if it could not start); `cfs mount`
//! waits for that, attaches the mount, and answers `attached ID`, the
//! attached mount's identity ([`crate::identity::MountId`]), which is how
//! the server knows its own mount later (on SIGTERM) without holding it,
//! then closes the socket. `cfs mount` returns once the mount answers a
//! stat, or with the server's error.
//!
//! The detached server has no stdin or stdout, and its stderr is
//! `$CFS_SERVER_LOG` (appended) or nothing: a daemon holding its caller's
//! stdio would keep a pipe reader such as `$(cfs mount …)` waiting until
//! unmount. It runs in a process group of its own (terminal signals to the
//! caller's job don't reach it) and from `/` (it pins no directory of the
//! caller's). How it ends: [`lifetime`].

pub mod lifetime;

use crate::error::MountError;
use crate::identity::MountId;
use cfs_fuse::{ServeFds, ServeOptions};
use rustix::fd::OwnedFd;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

/// The hidden `cfs` subcommand that runs a detached server.
pub const SERVE_SUBCOMMAND: &str = "__serve";

/// Environment variable naming a file the detached server logs to.
pub const LOG_ENV: &str = "CFS_SERVER_LOG";

/// The detached server's arguments (`cfs __serve …`): the server's own
/// options, shared with the public commands' types, plus what it needs to
/// know about the hand-over.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct ServerArgs {
    /// How to serve.
    #[command(flatten)]
    pub serve: ServeOptions,
    /// The mount point: names the mount in messages, and is where the
    /// server looks for its own mount (by identity) when told to stop.
    #[arg(long, value_name = "PATH")]
    pub mountpoint: PathBuf,
    /// An objects directory is handed over (fd 6).
    #[arg(long)]
    pub objects: bool,
}

impl ServerArgs {
    /// The arguments that parse back to these.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut a = self.serve.to_args();
        a.push("--mountpoint".into());
        a.push(self.mountpoint.clone().into());
        if self.objects {
            a.push("--objects".into());
        }
        a
    }

    /// The fd names the server expects, in order.
    fn fd_names(&self) -> &'static [&'static str] {
        if self.objects {
            &["fuse", "control", "image", "objects"]
        } else {
            &["fuse", "control", "image"]
        }
    }
}

/// How the FUSE server of a mount runs.
pub enum Server {
    /// In a thread of the calling process: mounting returns once the mount
    /// has gone away (unmounted, or SIGTERM/SIGINT/SIGHUP, which unmount it).
    /// `on_ready` runs once the mount answers.
    Foreground {
        /// Called once the mount is in place and answers.
        on_ready: Option<Box<dyn FnOnce() + Send>>,
    },
    /// In a child process that outlives the caller.
    Detached(ServerCommand),
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Server::Foreground { on_ready } => f
                .debug_struct("Foreground")
                .field("on_ready", &on_ready.is_some())
                .finish(),
            Server::Detached(c) => f.debug_tuple("Detached").field(c).finish(),
        }
    }
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

/// A started server, ready (it answered FUSE_INIT).
pub(crate) enum Running {
    Thread {
        handle: JoinHandle<Result<(), cfs_fuse::ServeFailed>>,
        mine: Arc<OnceLock<MountId>>,
        on_ready: Option<Box<dyn FnOnce() + Send>>,
        mountpoint: PathBuf,
    },
    Child {
        control: UnixStream,
    },
}

impl Running {
    /// The mount is attached: tells the server which mount is its own.
    pub(crate) fn attached(&mut self, id: Option<MountId>) {
        match self {
            Running::Thread { mine, .. } => {
                if let Some(id) = id {
                    let _ = mine.set(id);
                }
            }
            Running::Child { control } => {
                if let Some(id) = id {
                    let _ = writeln!(control, "attached {id}");
                }
                let _ = control.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// The mount is in place and answers: a detached server carries on
    /// alone; a foreground one is waited for, with signals turned into an
    /// unmount of its own mount.
    pub(crate) fn finish(self) -> Result<(), MountError> {
        match self {
            Running::Child { .. } => Ok(()),
            Running::Thread {
                handle,
                mine,
                on_ready,
                mountpoint,
            } => {
                if let Some(f) = on_ready {
                    f();
                }
                lifetime::watch_signals(mountpoint.clone(), mine);
                join(handle, &mountpoint)
            }
        }
    }

    /// The mount failed after the server started; its session ends with the
    /// FUSE mount, which the caller has dropped (or unmounted).
    pub(crate) fn abandon(self) {
        match self {
            Running::Thread { handle, .. } => {
                let _ = handle.join();
            }
            Running::Child { control } => drop(control),
        }
    }
}

fn join(
    handle: JoinHandle<Result<(), cfs_fuse::ServeFailed>>,
    mountpoint: &Path,
) -> Result<(), MountError> {
    match handle.join() {
        Ok(r) => r.map_err(|e| MountError::Server {
            path: mountpoint.to_path_buf(),
            message: error_chain(&e),
        }),
        Err(_) => Err(MountError::Server {
            path: mountpoint.to_path_buf(),
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

/// Starts the server on the handed-over `fds` and waits until it is ready.
pub(crate) fn start(args: &ServerArgs, fds: ServeFds, how: Server) -> Result<Running, MountError> {
    match how {
        Server::Foreground { on_ready } => {
            // Blocked here, blocked in every thread spawned from here on.
            lifetime::block_signals();
            let (tx, rx) = std::sync::mpsc::channel();
            let opts = args.serve.clone();
            let mountpoint = args.mountpoint.clone();
            let handle = std::thread::Builder::new()
                .name("cfs-fuse".into())
                .spawn(move || {
                    cfs_fuse::serve_fd(&opts, fds, &mountpoint, move || {
                        let _ = tx.send(());
                    })
                })
                .map_err(|source| MountError::Io {
                    op: "start the FUSE server thread for",
                    path: args.mountpoint.clone(),
                    source,
                })?;
            match rx.recv() {
                Ok(()) => Ok(Running::Thread {
                    handle,
                    mine: Arc::new(OnceLock::new()),
                    on_ready,
                    mountpoint: args.mountpoint.clone(),
                }),
                Err(_) => Err(join(handle, &args.mountpoint).err().unwrap_or_else(|| {
                    MountError::Server {
                        path: args.mountpoint.clone(),
                        message: "the server ended before it was ready".into(),
                    }
                })),
            }
        }
        Server::Detached(cmd) => spawn_detached(args, fds, &cmd),
    }
}

fn spawn_detached(
    args: &ServerArgs,
    fds: ServeFds,
    cmd: &ServerCommand,
) -> Result<Running, MountError> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let io = |op: &'static str| {
        let path = args.mountpoint.clone();
        move |e: std::io::Error| MountError::Io {
            op,
            path,
            source: e,
        }
    };
    let (control, theirs) = UnixStream::pair().map_err(io("create a control socket for"))?;
    let stderr = match std::env::var_os(LOG_ENV) {
        Some(p) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map(Stdio::from)
            .map_err(io("open the server log for"))?,
        None => Stdio::null(),
    };
    let mut handed: Vec<(&'static str, OwnedFd)> = vec![
        ("fuse", fds.dev),
        ("control", theirs.into()),
        ("image", fds.image.into()),
    ];
    if let Some(objects) = fds.objects {
        handed.push(("objects", objects));
    }
    let mut command = Command::new(&cmd.exe);
    command
        .args(&cmd.args)
        .args(args.to_args())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .process_group(0);
    let keep = crate::sys::hand_over_at_exec(&mut command, handed)
        .map_err(io("pass fds to the server for"))?;
    let mut child = command.spawn().map_err(io("start the FUSE server for"))?;
    drop(keep);
    let mut said = String::new();
    let _ = BufReader::new(&control).read_line(&mut said);
    let said = said.trim();
    if said == "ready" {
        // Not waited for: the server outlives us (and init reaps it).
        drop(child);
        return Ok(Running::Child { control });
    }
    drop(control);
    let status = child.wait().map_err(io("wait for the FUSE server of"))?;
    Err(MountError::Server {
        path: args.mountpoint.clone(),
        message: match said.strip_prefix("error: ") {
            Some(m) => m.to_string(),
            None => format!("it exited before it was ready ({status})"),
        },
    })
}

/// The detached server (`cfs __serve`): takes the handed-over fds, serves,
/// says `ready`, learns its mount's identity. Returns when the connection
/// ends (the mount went away).
pub fn serve_handed_over(args: &ServerArgs) -> Result<(), String> {
    let mut fds = crate::sys::take_handed_over(args.fd_names())?.into_iter();
    let mut next = || fds.next().ok_or("missing handed-over fd");
    let (dev, control, image) = (next()?, UnixStream::from(next()?), next()?);
    let objects = if args.objects { Some(next()?) } else { None };
    let say = |msg: &str| {
        let _ = writeln!(&control, "{msg}");
    };
    lifetime::block_signals();
    let mine = Arc::new(OnceLock::new());
    lifetime::watch_signals(args.mountpoint.clone(), mine.clone());
    lifetime::watch_namespace(args.mountpoint.clone());
    let fds = ServeFds {
        dev,
        image: image.into(),
        objects,
    };
    let r = cfs_fuse::serve_fd(&args.serve, fds, &args.mountpoint, || {
        say("ready");
        // The mounting process answers once it has attached the mount.
        if let Ok(reader) = control.try_clone() {
            let _ = std::thread::Builder::new()
                .name("cfs-control".into())
                .spawn(move || {
                    let mut line = String::new();
                    let _ = BufReader::new(reader).read_line(&mut line);
                    if let Some(Ok(id)) = line.trim().strip_prefix("attached ").map(str::parse) {
                        let _ = mine.set(id);
                    }
                });
        }
    });
    if let Err(e) = &r {
        say(&format!("error: {}", error_chain(e)));
    }
    r.map_err(|e| error_chain(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::num::NonZeroUsize;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        args: ServerArgs,
    }

    #[test]
    fn server_args_round_trip_through_clap() {
        let mut a = ServerArgs {
            serve: ServeOptions::default(),
            mountpoint: "/mnt/with space/-x".into(),
            objects: false,
        };
        let parse = |a: &ServerArgs| {
            let argv = std::iter::once(OsString::from("serve")).chain(a.to_args());
            Cmd::try_parse_from(argv).map(|c| c.args)
        };
        assert_eq!(parse(&a).unwrap(), a);
        a.serve.mode = cfs_fuse::ServeMode::OverlayLower;
        a.serve.verity = cfs_fuse::Verity::Off;
        a.serve.tuning.threads = NonZeroUsize::new(3);
        a.serve.tuning.no_passthrough = true;
        a.serve.may_passthrough = true;
        a.objects = true;
        assert_eq!(parse(&a).unwrap(), a);
        let bogus = Cmd::try_parse_from(["serve", "--mountpoint", "/m", "--bogus"]);
        assert!(bogus.is_err());
        let legacy = Cmd::try_parse_from(["serve", "--mountpoint", "/m", "--verity", "none"]);
        assert_eq!(legacy.unwrap().args.serve.verity, cfs_fuse::Verity::Off);
    }
}
