//! `cfs mount`, `cfs unmount`, and `mount.composefs` (the helper `mount -t
//! composefs` runs, with C `mount.composefs`'s `-o` options).

use anyhow::{bail, Context};
use cfs_mount::options::parse_composefs_options;
use cfs_mount::server::ServerArgs;
use cfs_mount::{FuseChoice, MountConfig, MountMode, Server, ServerCommand, Upper, Verity};
use cfs_repo::repository::PendingMount;
use clap::Args;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Options of `cfs mount`.
#[derive(Args, Debug)]
pub struct MountArgs {
    /// An image name (a ref or a 64-hex image id) in the repository
    /// (`--repo`, `CFS_REPO`, or the default repository), or an image file
    /// spelled as a path (`./image.cfs`, `/path/image.cfs`; `-`: standard
    /// input, a file). A bare word is always a name.
    image: String,
    /// Where to mount it.
    mountpoint: PathBuf,
    /// Object directory (repeatable; default `REPO/objects` with --repo).
    #[arg(long, value_name = "DIR")]
    basedir: Vec<PathBuf>,
    /// Content checking against the image's digests.
    #[arg(long, value_enum, default_value_t)]
    verity: Verity,
    /// The image's expected fs-verity digest (64 hex). Without fs-verity on
    /// the file, a sealed private copy is checked and mounted.
    #[arg(long, value_name = "HEX")]
    digest: Option<cfs_format::Digest>,
    /// Directory receiving changes, with --workdir: the mount is writable
    /// (--upperdir implies --read-write).
    #[arg(long, value_name = "DIR", requires = "workdir")]
    upperdir: Option<PathBuf>,
    /// overlayfs work directory, on the upper dir's filesystem.
    #[arg(long, value_name = "DIR", requires = "upperdir")]
    workdir: Option<PathBuf>,
    /// Mount writable: what --upperdir does anyway; without --upperdir
    /// there is nowhere to write, and it is refused.
    #[arg(long, requires = "upperdir")]
    read_write: bool,
    /// Mount even when objects the image names are missing from the object
    /// directories (opening their files then fails: ENOENT through the
    /// kernel overlay, EIO through FUSE). By default each is looked up
    /// first, and a missing one refuses the mount.
    #[arg(long)]
    no_check_objects: bool,
    /// An idmapped mount (kernel mode): owners in the image show through
    /// the mapping of the user namespace at PATH (`/proc/PID/ns/user`), as
    /// `mount.composefs -o idmap=PATH`.
    #[arg(long, value_name = "PATH")]
    idmap: Option<PathBuf>,
    /// How the kernel mode attaches the image to erofs: `auto` (a loop
    /// device where one can be had, else the file), `file` (straight from
    /// the file, as C `mount.composefs` does: no loop device), or `loop`.
    #[arg(long, value_enum, value_name = "HOW", default_value_t)]
    erofs_backing: cfs_mount::ErofsBacking,
    /// Whether to mount with FUSE: auto picks the kernel mount with
    /// CAP_SYS_ADMIN in the initial user namespace, else the mount service's
    /// kernel mount where it answers, else fuse+overlay in a user namespace
    /// and standalone FUSE otherwise; no insists on a kernel mount (the
    /// service's, without the privilege).
    #[arg(long, value_enum, default_value_t, value_name = "WHEN")]
    fuse: FuseChoice,
    /// Print the chosen mode and why (on stdout) before mounting.
    #[arg(long)]
    explain: bool,
    #[command(flatten)]
    server: ServerFlags,
}

/// How a FUSE server runs: shared by `cfs mount` and `cfs fuse-serve`.
#[derive(Args, Debug, Clone)]
pub struct ServerFlags {
    /// Keep the FUSE server attached: serve in this process until unmounted
    /// (or SIGTERM/SIGINT, which unmount).
    #[arg(long)]
    pub foreground: bool,
    #[command(flatten)]
    pub tuning: cfs_mount::Tuning,
    /// Print `ready` on stdout once mounted (with --foreground).
    #[arg(long, hide = true)]
    pub notify_ready: bool,
}

impl ServerFlags {
    /// Sets the server's options in `cfg`.
    pub fn apply(&self, cfg: &mut MountConfig) {
        cfg.tuning = self.tuning.clone();
    }

    /// The server: in this process with --foreground, else detached.
    pub fn server(&self) -> anyhow::Result<Server> {
        if !self.foreground {
            let cmd = ServerCommand::this_exe().context("could not find the cfs executable")?;
            return Ok(Server::Detached(cmd));
        }
        let notify = self.notify_ready;
        Ok(Server::Foreground {
            on_ready: Some(Box::new(move || {
                if notify {
                    use std::io::Write;
                    let mut out = std::io::stdout();
                    let _ = writeln!(out, "ready").and_then(|()| out.flush());
                }
            })),
        })
    }
}

/// Options of `cfs unmount`.
#[derive(Args, Debug)]
pub struct UnmountArgs {
    /// The mount point.
    mountpoint: PathBuf,
    /// Detach a busy mount now; it goes away once its open files close.
    #[arg(long)]
    lazy: bool,
}

/// Options of `cfs mounts`.
#[derive(Args, Debug)]
pub struct MountsArgs {
    /// Print a JSON array instead: mode, mount point, mount id, filesystem
    /// type of each (docs/json.md).
    #[arg(long)]
    json: bool,
}

impl MountArgs {
    /// The image argument as given.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// Replaces the image argument (`cfs oci mount NAME` mounts `oci:NAME`).
    pub fn set_image(&mut self, image: String) {
        self.image = image;
    }
}

/// An image argument, a file or a name in the repository: the image file,
/// the object directories it goes with (the repository's, if any), and for
/// a name the pending pin that holds the repository lock until the mount is
/// recorded (see `super::pin`).
pub fn locate_image(
    image: &str,
    repo: Option<&Path>,
) -> anyhow::Result<(PathBuf, Vec<PathBuf>, Option<PendingMount>)> {
    use super::input::ImageArg;
    // A file (`-`: standard input, when it is a file), or a name (see `input`).
    let file = match ImageArg::parse(Path::new(image)) {
        ImageArg::Stdin => Some(PathBuf::from("/dev/stdin")),
        ImageArg::File(f) => Some(f),
        ImageArg::Name(_) => None,
    };
    if let Some(file) = file {
        // With a repository, its objects are the default basedir.
        let objects = repo
            .map(cfs_repo::repository::objects_dir)
            .into_iter()
            .collect();
        return Ok((file, objects, None));
    }
    let hint = |e: anyhow::Error| super::input::with_file_hint(e, image);
    let repo = super::repo::open_repo(&super::repo::repo_path(repo)?).map_err(hint)?;
    let objects = repo.objects().path().to_path_buf();
    let pending = repo.begin_mount(image).map_err(|e| hint(e.into()))?;
    Ok((
        pending.image_file().to_path_buf(),
        vec![objects],
        Some(pending),
    ))
}

/// `cfs mount`.
pub fn mount(a: MountArgs, repo: Option<&Path>) -> anyhow::Result<()> {
    let (image, mut basedirs, pending) = locate_image(&a.image, repo)?;
    if !a.basedir.is_empty() {
        basedirs = a.basedir.clone();
    }
    if basedirs.is_empty() {
        bail!("no object directory: give --basedir DIR, or --repo REPO to mount an image by name");
    }
    let upper = a
        .upperdir
        .zip(a.workdir)
        .map(|(upperdir, workdir)| Upper { upperdir, workdir });
    let mut cfg = MountConfig {
        basedirs,
        // --upperdir makes the mount writable (--read-write requires it).
        read_only: upper.is_none(),
        upper,
        check_objects: !a.no_check_objects,
        idmap: a.idmap,
        verity: a.verity,
        expected_digest: a.digest,
        backing: a.erofs_backing,
        ..MountConfig::new(image, PathBuf::new())
    };
    a.server.apply(&mut cfg);
    mount_config(&cfg, &a.mountpoint, a.fuse, &a.server, a.explain, pending)
        .with_context(|| format!("cannot mount {}", a.image))
}

/// Mounts `cfg` at `target` in the mode `choice` leads to, the server run
/// as `flags` say; with `explain`, first prints the mode and why; with
/// `pending`, pins the repository image once mounted. The entry every
/// `cfs … mount` command (and `cfs fuse-serve`) shares.
pub fn mount_config(
    cfg: &MountConfig,
    target: &Path,
    choice: FuseChoice,
    flags: &ServerFlags,
    explain: bool,
    pending: Option<PendingMount>,
) -> anyhow::Result<()> {
    // A repository image is mounted from the file opened beneath the
    // repository when its name was resolved, never from its path again.
    let mut cfg = cfg.clone();
    if let Some(p) = &pending {
        let file = p
            .opened_image()
            .try_clone()
            .context("duplicate the image's fd")?;
        cfg.opened_image = Some(cfs_mount::OpenedImage::new(file));
    }
    let cfg = &cfg;
    let decision = cfs_mount::decide(cfg, choice)?;
    if explain {
        explain_decision(&decision, None)?;
    }
    // A foreground server returns only once unmounted: a watcher pins its
    // mount when it appears. Any other mount is pinned by the id it returns.
    let (pinning, pending) = match pending {
        Some(p) if flags.foreground => (Some(super::pin::when_mounted(p, target)), None),
        p => (None, p),
    };
    let mount = |d: &cfs_mount::Decision| {
        flags
            .server()
            .and_then(|server| Ok(cfs_mount::mount_with(cfg, target, d, server)?))
    };
    let mut mounted = mount(&decision);
    // The service refused or failed: the FUSE mode the decision names.
    if let (Err(e), Some(fallback)) = (&mounted, &decision.fallback) {
        let why = super::error_message(e);
        if explain {
            explain_decision(fallback, Some(&why))?;
        } else {
            eprintln!("cfs: {why}; mounting with {} instead", fallback.mode);
        }
        mounted = mount(fallback);
    }
    if let Some(p) = pinning {
        p.finish(mounted.is_ok());
    }
    if let (Some(p), Ok(m)) = (pending, &mounted) {
        super::pin::mounted(p, m);
    }
    mounted.map(drop)
}

/// `--explain`: the mode and why (on stdout, flushed before mounting);
/// `failed` is why the mode tried first did not mount.
fn explain_decision(d: &cfs_mount::Decision, failed: Option<&str>) -> anyhow::Result<()> {
    use std::io::Write;
    println!("mode: {}", d.mode);
    match failed {
        Some(f) => println!("why: {f}; so {}", d.why),
        None => println!("why: {}", d.why),
    }
    if let Some(fallback) = &d.fallback {
        println!(
            "fallback: {} (if the service does not mount it)",
            fallback.mode
        );
    }
    std::io::stdout().flush()?;
    Ok(())
}

/// `cfs unmount`.
pub fn unmount(a: &UnmountArgs) -> anyhow::Result<()> {
    cfs_mount::unmount(&a.mountpoint, a.lazy)?;
    Ok(())
}

/// `cfs mounts`: `MODE<TAB>MOUNTPOINT` for each cfs mount this process sees,
/// the mount point escaped as mountinfo does (`\040` for a space, `\012`
/// for a newline, …), so every mount is one line; or a JSON array.
pub fn mounts(a: &MountsArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let list = cfs_mount::mounts::list().context("could not read /proc/self/mountinfo")?;
    if a.json {
        let list: Vec<super::json::Mount> = list.iter().map(Into::into).collect();
        return super::json::print(&list);
    }
    let mut out = std::io::stdout().lock();
    for m in list {
        writeln!(
            out,
            "{}\t{}",
            m.mode,
            cfs_mount::mounts::escape(&m.mountpoint)
        )?;
    }
    Ok(())
}

/// The hidden `cfs __serve`: a detached FUSE server started by `cfs mount`.
pub fn serve(args: &ServerArgs) -> anyhow::Result<()> {
    cfs_mount::server::serve_handed_over(args).map_err(anyhow::Error::msg)
}

/// `mount.composefs` as its own program: the command line `mount(8)` gives
/// a helper (`mount.TYPE SOURCE TARGET [-sfnv] [-N NS] [-o OPTIONS] [-t
/// TYPE]`), with C `mount.composefs`'s `-o` options.
#[derive(clap::Parser, Debug)]
#[command(
    name = "mount.composefs",
    version = super::VERSION,
    about = "Mount a composefs image",
    override_usage = "mount.composefs IMAGE MOUNTPOINT [-o OPTIONS] [-t composefs] [-sfnv]\n       \
                      mount -t composefs IMAGE MOUNTPOINT [-o OPTIONS]",
    long_about = "Mount a composefs image: an EROFS metadata image whose files' contents \
                  live, by fs-verity digest, in one or more object directories (basedir=). \
                  mount(8) runs it for `mount -t composefs IMAGE MOUNTPOINT -o OPTIONS`; \
                  it can also be run directly. It mounts with the kernel's erofs and \
                  overlayfs, which needs CAP_SYS_ADMIN; `cfs mount` also mounts without \
                  privilege, with FUSE."
)]
pub struct MountComposefs {
    /// The composefs image file.
    image: PathBuf,
    /// The directory to mount it on.
    mountpoint: PathBuf,
    /// Mount options, comma-separated (repeatable): see MOUNT OPTIONS.
    #[arg(short = 'o', value_name = "OPTIONS", action = clap::ArgAction::Append)]
    options: Vec<String>,
    /// The filesystem type: composefs (mount(8) passes it).
    #[arg(short = 't', value_name = "TYPE")]
    fstype: Option<String>,
    /// Sloppy: accepted and ignored (mount(8) passes it).
    #[arg(short = 's')]
    sloppy: bool,
    /// Fake: check the options, mount nothing.
    #[arg(short = 'f')]
    fake: bool,
    /// Don't write /etc/mtab: accepted and ignored (there is none to write).
    #[arg(short = 'n')]
    no_mtab: bool,
    /// Verbose: print the mount configuration on stderr.
    #[arg(short = 'v')]
    verbose: bool,
    /// Mount in another mount namespace: not supported (refused).
    #[arg(short = 'N', value_name = "NS")]
    namespace: Option<OsString>,
}

/// The clap definition of `mount.composefs` (for its manual page).
pub fn mount_composefs_command() -> clap::Command {
    <MountComposefs as clap::CommandFactory>::command()
}

/// Entry point for the `mount.composefs` personality.
pub fn main_mount_composefs(argv: Vec<OsString>) -> anyhow::Result<()> {
    let a = match <MountComposefs as clap::Parser>::try_parse_from(argv) {
        Ok(a) => a,
        // mount(8) passes a helper's exit status on: 1 is "incorrect
        // invocation" (as C's helper exits), where clap's own 2 would read
        // as "system error".
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            std::process::exit(1);
        }
        Err(e) => e.exit(),
    };
    if let Some(t) = &a.fstype {
        if t != "composefs" {
            bail!("Unsupported fs type '{t}'");
        }
    }
    if a.namespace.is_some() {
        bail!("-N (mount namespace) is not supported");
    }
    let opts = a.options.join(",");
    let cfg = parse_composefs_options(&opts)
        .and_then(|o| o.into_config(a.image.clone()))
        .map_err(anyhow::Error::msg)?;
    if a.verbose {
        eprintln!("mount.composefs: {cfg:?}");
    }
    if a.fake {
        return Ok(());
    }
    cfs_mount::mount(&cfg, &a.mountpoint, MountMode::Kernel)
        .with_context(|| format!("Failed to mount composefs {}", cfg.image.display()))?;
    Ok(())
}
