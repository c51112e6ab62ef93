//! Command-line entry: picks the personality from `argv[0]` (`mkcomposefs`,
//! `composefs-info`, `mount.composefs`, or `cfs` with subcommands), runs it, and turns errors into
//! `PROG: message` on stderr and a non-zero exit. A closed stdout (broken pipe,
//! as in `cfs dump x | head`) ends the program quietly.

mod completions;
mod fuse;
mod info;
mod input;
mod json;
mod man;
mod mkfs;
mod mount;
mod oci;
mod output;
mod pin;
mod repo;
mod service;

use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What `--version` prints after the program's name: the crate's version
/// and the git commit it was built from (`unknown` outside a git checkout;
/// see `build.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CFS_GIT_COMMIT"),
    ")"
);

/// Build, inspect and mount composefs images.
#[derive(Parser, Debug)]
#[command(name = "cfs", version = VERSION, about)]
struct Cfs {
    /// The repository (default: /var/lib/cfs for root, else $XDG_DATA_HOME/cfs
    /// or ~/.local/share/cfs; root of a user namespace is the user who made it).
    #[arg(long, global = true, env = "CFS_REPO", value_name = "PATH")]
    repo: Option<PathBuf>,
    /// Give up when the repository lock is still busy after SECONDS
    /// (default: wait, saying who holds it).
    #[arg(long, global = true, env = "CFS_LOCK_TIMEOUT", value_name = "SECONDS", value_parser = repo::parse_seconds)]
    lock_timeout: Option<std::time::Duration>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build an image from a directory or a dumpfile (as `mkcomposefs`).
    Mkfs(mkfs::MkfsArgs),
    /// Print an image as a canonical dumpfile (as `composefs-info dump`).
    Dump {
        /// Images to dump, one after the other: names in the repository,
        /// files spelled as paths (`./image.cfs`), or `-` for stdin.
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// List the paths in an image, with symlink targets and backing objects.
    Ls {
        /// Images to list (names in the repository, files spelled as paths, or `-`).
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// List the backing objects images refer to, sorted, each once.
    Objects {
        /// Images to read (names in the repository, files spelled as paths, or `-`).
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// List the backing objects not present in an object directory.
    MissingObjects {
        /// The object directory (`ab/cdef…` layout), or a repository
        /// (default: the repository's objects).
        #[arg(long)]
        basedir: Option<PathBuf>,
        /// Images to read (names in the repository, files spelled as paths, or `-`).
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Mount an image with the cfs FUSE server alone (`cfs mount
    /// --fuse=standalone`), showing it as the kernel mount does or as an
    /// overlay lower layer.
    FuseServe(fuse::FuseServeArgs),
    /// Print the fs-verity digest (sha256, 4 KiB blocks) of files: `DIGEST  PATH`.
    Digest {
        /// Files to measure (`-` for stdin).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Mount an image: kernel erofs + overlayfs as root, FUSE (under
    /// overlayfs in a user namespace) otherwise; see --fuse.
    Mount(mount::MountArgs),
    /// Unmount a composefs mount (any mode).
    Unmount(mount::UnmountArgs),
    /// List cfs mounts and their modes (kernel, fuse+overlay, fuse, service).
    Mounts(mount::MountsArgs),
    /// Run the mount service (as root): kernel mounts of validated images
    /// for unprivileged users, on a unix socket (see docs/mount-service.md).
    MountService(cfs_service::ServiceArgs),
    /// The FUSE server `cfs mount` starts (fds handed over by LISTEN_FDS).
    #[command(name = "__serve", hide = true)]
    Serve(cfs_mount::server::ServerArgs),
    #[command(flatten)]
    Repo(repo::RepoCommand),
    /// Import one tar (plain, gzip or zstd) as an image NAME.
    ImportTar(oci::ImportTarArgs),
    /// OCI images: pull, list, inspect, remove, mount.
    Oci {
        #[command(subcommand)]
        command: oci::OciCommand,
    },
    /// Print a shell completion script for cfs on stdout.
    Completions(completions::CompletionsArgs),
    /// Write the manual pages: cfs(1), one per subcommand, mkcomposefs(1),
    /// composefs-info(1) and mount.composefs(8), under DIR/man1 and DIR/man8.
    Man(man::ManArgs),
}

/// Runs the program named by `argv[0]`.
pub fn main() -> ExitCode {
    raise_fd_limit();
    let args: Vec<OsString> = std::env::args_os().collect();
    let prog = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("cfs")
        .to_owned();
    let result = match prog.as_str() {
        "mkcomposefs" => mkfs::main_mkcomposefs(args),
        "composefs-info" => info::main_composefs_info(args),
        "mount.composefs" => mount::main_mount_composefs(args),
        _ => run_cfs(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let name = match prog.as_str() {
                "mkcomposefs" | "composefs-info" | "mount.composefs" => prog.as_str(),
                _ => "cfs",
            };
            eprintln!("{name}: {}", for_terminal(&error_message(&e)));
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft limit on open files to the hard limit, as the Go runtime
/// does and systemd advises (systemd keeps the soft limit at 1,024 only for
/// programs that still use `select()`; cfs and the programs it starts,
/// `fusermount3`, `skopeo` and itself, do not). The scan holds a constant
/// number of fds, but the import's store step holds a few per worker thread
/// (4 per CPU) plus up to 256 `objects/XX/` directories, which passes 1,024
/// on a large machine. Failure changes nothing: the limit stays as it was.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.maximum.is_some() && limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        let _ = setrlimit(Resource::Nofile, raised);
    }
}

/// The `cfs` command line, as clap sees it (for completions and manual pages).
fn cfs_command() -> clap::Command {
    <Cfs as clap::CommandFactory>::command()
}

fn run_cfs(args: Vec<OsString>) -> anyhow::Result<()> {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cfs::command().get_matches_from(args);
    let cli = Cfs::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // `--repo` given on the command line must mean something; `CFS_REPO`
    // from the environment is only a default, and commands without a
    // repository ignore it.
    if matches.value_source("repo") == Some(clap::parser::ValueSource::CommandLine) {
        if let Some(why) = cli.command.without_repository() {
            anyhow::bail!("--repo: {why}");
        }
    }
    repo::set_lock_timeout(cli.lock_timeout);
    let repo = cli.repo.as_deref();
    match cli.command {
        Command::Mkfs(a) => mkfs::run(&a),
        Command::Dump { images } => info::dump(&images, repo),
        Command::Ls { images } => info::ls(&images, repo),
        Command::Objects { images } => info::objects(&images, None, repo),
        Command::MissingObjects { basedir, images } => {
            let basedir = match basedir {
                Some(b) => b,
                None => cfs_repo::Repository::object_dir_of(&repo::repo_path(repo)?),
            };
            info::objects(&images, Some(&basedir), repo)
        }
        Command::Digest { files } => info::measure(&files, true),
        Command::Mount(a) => mount::mount(a, repo),
        Command::Unmount(a) => mount::unmount(&a),
        Command::Mounts(a) => mount::mounts(&a),
        Command::MountService(a) => service::run(&a),
        Command::Serve(a) => mount::serve(&a),
        Command::Repo(c) => repo::run(repo, c),
        Command::FuseServe(a) => fuse::run(&a, repo),
        Command::ImportTar(a) => repo::with_pool(|| oci::import_tar(&repo::repo_path(repo)?, &a)),
        Command::Oci { command } => repo::with_pool(|| oci::run(&repo::repo_path(repo)?, command)),
        Command::Completions(a) => completions::run(&a),
        Command::Man(a) => man::run(&a),
    }
}

impl Command {
    /// For a command that has no use for a repository, why `--repo` is
    /// refused there.
    fn without_repository(&self) -> Option<&'static str> {
        match self {
            Command::Mkfs(_) => Some(
                "mkfs writes an image file and stores nothing in a repository: \
                 use `cfs create-image DIR NAME` to store an image, or \
                 `mkfs --digest-store REPO` to store only the objects",
            ),
            Command::Digest { .. } => Some("digest measures files, not repository images"),
            Command::Unmount(_) => Some("unmount takes a mount point, whatever it mounts"),
            Command::Mounts(_) => Some("mounts lists every cfs mount, whatever it mounts"),
            Command::Completions(_) => Some("completions prints a shell's completion script"),
            Command::Man(_) => Some("man writes manual pages"),
            Command::Repo(repo::RepoCommand::ComputeId { .. }) => {
                Some("compute-id reads a directory and stores nothing")
            }
            _ => None,
        }
    }
}

/// The error and its causes joined by ": ", as `{e:#}` prints them, except
/// that a cause the message so far already ends with is not repeated (the
/// library errors that say "could not {op} {path}: {source}" also return
/// that source as their cause).
pub(crate) fn error_message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.is_empty() {
            out = text;
        } else if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

/// Longest error message printed, in characters: errors may quote input
/// (a tar header, a name), and a terminal is no place for kilobytes of it.
const MAX_MESSAGE: usize = 2000;

/// An error message made safe to print: control characters (which input
/// quoted in an error may hold: escape sequences, backspaces, NULs) shown as
/// `\xHH` / `\u{…}` escapes, and the whole cut to [`MAX_MESSAGE`]
/// characters by leaving out its middle: the end says why (the cause, an
/// errno), and a long quoted path must not push it out. Invalid UTF-8 was
/// already replaced when the message was made.
fn for_terminal(message: &str) -> String {
    let chars: Vec<char> = message.chars().collect();
    let (head, tail, left_out) = if chars.len() > MAX_MESSAGE {
        let half = MAX_MESSAGE / 2;
        (
            &chars[..half],
            &chars[chars.len() - half..],
            chars.len() - 2 * half,
        )
    } else {
        (&chars[..], &chars[..0], 0)
    };
    let mut out = String::new();
    escape_into(&mut out, head);
    if left_out > 0 {
        out.push_str(&format!(" … ({left_out} characters left out) … "));
        escape_into(&mut out, tail);
    }
    out
}

fn escape_into(out: &mut String, chars: &[char]) {
    for &c in chars {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
}

/// True when the error comes from writing to a closed pipe.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::error_message;

    /// A library error that prints its cause and also returns it as its source.
    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "could not write to /r/objects: {}", self.0)
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn messages_quote_input_harmlessly() {
        use super::for_terminal;
        assert_eq!(for_terminal("plain: text ü"), "plain: text ü");
        assert_eq!(
            for_terminal("a\x1b[2Jb\nc\td\x00e\x7f\u{9b}f"),
            "a\\x1b[2Jb\\nc\\td\\x00e\\x7f\\u{9b}f"
        );
        // A long message loses its middle, never its end: the cause.
        let long = format!(
            "could not open /t/{}f: File name too long (os error 36)",
            "d/".repeat(super::MAX_MESSAGE)
        );
        let shown = for_terminal(&long);
        assert!(shown.starts_with("could not open /t/d/d/"), "{shown}");
        assert!(
            shown.ends_with("d/d/f: File name too long (os error 36)"),
            "{shown}"
        );
        assert!(shown.contains(" characters left out) … "), "{shown}");
        assert!(shown.chars().count() < super::MAX_MESSAGE + 40, "{shown}");
    }

    #[test]
    fn error_message_names_a_repeated_cause_once() {
        let enospc = || std::io::Error::from_raw_os_error(28);
        let e = anyhow::Error::new(Outer(enospc())).context("cannot import src");
        assert_eq!(
            error_message(&e),
            "cannot import src: could not write to /r/objects: No space left on device (os error 28)"
        );
        // Causes that the message does not already hold are all printed.
        let e = anyhow::Error::new(enospc()).context("could not store x");
        assert_eq!(
            error_message(&e),
            "could not store x: No space left on device (os error 28)"
        );
    }
}
