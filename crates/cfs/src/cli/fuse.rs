//! `cfs fuse-serve`: mount an image with the cfs FUSE server (the low-level
//! entry; automatic mount modes come with rootless mounting).
//!
//! Without `--foreground` the command runs itself again in the foreground as
//! a child in its own session, waits until that child reports the mount
//! ready (one line on a pipe), and exits: the child keeps serving. The
//! child's stderr stays the caller's, for its log lines.

use anyhow::{bail, Context};
use cfs_fuse::locate::locate_image;
use cfs_fuse::{ServeMode, ServeOptions, VerityPolicy};
use clap::{Args, ValueEnum};
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Serving mode, as on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Mode {
    /// Serve metadata and contents, as the kernel overlay mount shows the image.
    Standalone,
    /// Serve metadata only, with `user.overlay.*` xattrs, as the lower layer
    /// of an overlayfs mounted with `userxattr`.
    OverlayLower,
}

/// Content verification, as on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Verity {
    /// Check each object that has a digest in the image (default).
    Auto,
    /// Check each object; a file without a digest can't be read.
    Require,
    /// Check nothing.
    None,
}

/// Arguments of `cfs fuse-serve`.
#[derive(Args, Debug)]
pub struct FuseServeArgs {
    /// The image: a path, or with `--repo` an image id or a ref name.
    pub image: PathBuf,
    /// Where to mount it.
    pub mountpoint: PathBuf,
    /// Object directory (`ab/cdef…`), instead of `R/objects`.
    #[arg(long, value_name = "DIR")]
    pub basedir: Option<PathBuf>,
    /// What to serve.
    #[arg(long, value_enum, default_value = "standalone")]
    pub mode: Mode,
    /// When to check file contents against the image's fs-verity digests.
    #[arg(long, value_enum, default_value = "auto")]
    pub verity: Verity,
    /// Stay in the foreground (and serve in this process).
    #[arg(long)]
    pub foreground: bool,
    /// Worker threads.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Read file contents in the server even where the kernel could read
    /// them directly (FUSE passthrough, used when serving with
    /// `CAP_SYS_ADMIN`): every read is then a request to the server.
    #[arg(long)]
    pub no_passthrough: bool,
    /// Print `ready` on stdout once mounted (used by the background mode).
    #[arg(long, hide = true)]
    pub notify_ready: bool,
}

/// Runs `cfs fuse-serve`.
/// `repo` is the global `--repo`: objects in `R/objects`, images in `R/images`.
pub fn run(args: &FuseServeArgs, repo: Option<&Path>) -> anyhow::Result<()> {
    if !args.foreground {
        return background();
    }
    // An existing path is an image file; with a repository, anything else
    // is an image name or id.
    let file = match repo {
        Some(r) if !args.image.exists() => {
            let name = args
                .image
                .to_str()
                .with_context(|| format!("{:?} is neither a file nor an image name", args.image))?;
            cfs_repo::Repository::open(r)?.image_file(name)?
        }
        _ => args.image.clone(),
    };
    let located = locate_image(&file, repo)
        .with_context(|| format!("could not open image {}", file.display()))?;
    let mut opts = ServeOptions::new(located.path, &args.mountpoint);
    opts.immutable = located.immutable;
    opts.objects = args
        .basedir
        .clone()
        .or_else(|| repo.map(|r| r.join("objects")));
    opts.mode = match args.mode {
        Mode::Standalone => ServeMode::Standalone,
        Mode::OverlayLower => ServeMode::OverlayLower,
    };
    opts.verity = match args.verity {
        Verity::Auto => VerityPolicy::Auto,
        Verity::Require => VerityPolicy::Require,
        Verity::None => VerityPolicy::None,
    };
    opts.threads = args.threads;
    opts.passthrough = !args.no_passthrough;
    let notify = args.notify_ready;
    cfs_fuse::serve(&opts, || {
        if notify {
            let mut out = std::io::stdout();
            let _ = writeln!(out, "ready").and_then(|()| out.flush());
        }
    })?;
    Ok(())
}

/// Runs this command again in the foreground, detached, and returns once it
/// reports the mount ready (or fails if it exits first).
fn background() -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("could not find the cfs executable")?;
    let mut argv: Vec<_> = std::env::args_os().skip(1).collect();
    argv.push("--foreground".into());
    argv.push("--notify-ready".into());
    let mut child = Command::new(exe)
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .context("could not start the FUSE server")?;
    let mut line = String::new();
    let stdout = child.stdout.take().context("no pipe to the FUSE server")?;
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    if line.trim() == "ready" {
        return Ok(());
    }
    let status = child.wait()?;
    bail!("the FUSE server exited before the mount was ready ({status})")
}
