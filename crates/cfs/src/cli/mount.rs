//! `cfs mount`, `cfs unmount`, and `mount.composefs` (the helper `mount -t
//! composefs` runs, with C `mount.composefs`'s `-o` options).

use anyhow::{bail, Context};
use cfs_mount::options::parse_composefs_options;
use cfs_mount::{
    ErofsBacking, FuseChoice, MountConfig, MountMode, Server, ServerCommand, Upper, Verity,
};
use clap::{Args, ValueEnum};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// `--verity` values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerityArg {
    /// No content checks (C `noverity`).
    Off,
    /// Check contents where the object store has fs-verity (C `tryverity`).
    Try,
    /// Refuse to mount without fs-verity on the object store (C `verity`).
    Require,
}

/// Options of `cfs mount`.
#[derive(Args, Debug)]
pub struct MountArgs {
    /// An image file, or an image name (a ref or a 64-hex image id) in the
    /// repository (`--repo`, `CFS_REPO`, or the default repository).
    image: String,
    /// Where to mount it.
    mountpoint: PathBuf,
    /// Object directory (repeatable; default `REPO/objects` with --repo).
    #[arg(long, value_name = "DIR")]
    basedir: Vec<PathBuf>,
    /// Content checking against the image's digests.
    #[arg(long, value_enum, default_value = "try")]
    verity: VerityArg,
    /// The image's expected fs-verity digest (64 hex).
    #[arg(long, value_name = "HEX")]
    digest: Option<cfs_format::Digest>,
    /// Directory receiving changes (with --workdir and --read-write).
    #[arg(long, value_name = "DIR", requires = "workdir")]
    upperdir: Option<PathBuf>,
    /// overlayfs work directory, on the upper dir's filesystem.
    #[arg(long, value_name = "DIR", requires = "upperdir")]
    workdir: Option<PathBuf>,
    /// Mount writable (needs --upperdir and --workdir).
    #[arg(long, requires = "upperdir")]
    read_write: bool,
    /// Attach the image through a loop device even where erofs can mount files.
    #[arg(long, hide = true)]
    loop_device: bool,
    /// Whether to mount with FUSE: auto picks the kernel mount with
    /// CAP_SYS_ADMIN in the initial user namespace, fuse+overlay in a user
    /// namespace, standalone FUSE otherwise.
    #[arg(long, value_enum, default_value = "auto", value_name = "WHEN")]
    fuse: FuseArg,
    /// Print the chosen mode and why (on stdout) before mounting.
    #[arg(long)]
    explain: bool,
    /// Keep the FUSE server attached: serve in this process until unmounted
    /// (or SIGTERM/SIGINT, which unmount).
    #[arg(long)]
    foreground: bool,
}

/// `--fuse` values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FuseArg {
    /// The best mode this process's privileges allow.
    Auto,
    /// A FUSE mode: fuse+overlay where overlayfs allows it, else standalone.
    Yes,
    /// The kernel mount only.
    No,
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

/// `cfs mount`.
pub fn mount(a: MountArgs, repo: Option<&Path>) -> anyhow::Result<()> {
    let as_file = Path::new(&a.image);
    // A path (existing, or spelled as one) is an image file; anything else a name.
    let is_path = as_file.exists() || a.image.starts_with('/') || a.image.starts_with('.');
    let (image, mut basedirs) = if is_path {
        // An image file; with a repository, its objects are the default basedir.
        let objects = repo.map(|r| r.join("objects")).into_iter().collect();
        (as_file.to_path_buf(), objects)
    } else {
        let repo = match repo {
            Some(r) => r.to_path_buf(),
            None => cfs_repo::repository::default_path()
                .context("no repository: give --repo or set CFS_REPO")?,
        };
        let repo = cfs_repo::Repository::open(&repo)?;
        let image = repo.image_file(&a.image)?;
        (image, vec![repo.objects().path().to_path_buf()])
    };
    if !a.basedir.is_empty() {
        basedirs = a.basedir.clone();
    }
    if basedirs.is_empty() {
        bail!("no object directory: give --basedir DIR, or --repo REPO to mount an image by name");
    }
    let cfg = MountConfig {
        image,
        basedirs,
        upper: a
            .upperdir
            .zip(a.workdir)
            .map(|(upperdir, workdir)| Upper { upperdir, workdir }),
        read_only: !a.read_write,
        verity: match a.verity {
            VerityArg::Off => Verity::Off,
            VerityArg::Try => Verity::Try,
            VerityArg::Require => Verity::Require,
        },
        expected_digest: a.digest,
        backing: if a.loop_device {
            ErofsBacking::Loop
        } else {
            ErofsBacking::Auto
        },
    };
    let choice = match a.fuse {
        FuseArg::Auto => FuseChoice::Auto,
        FuseArg::Yes => FuseChoice::Yes,
        FuseArg::No => FuseChoice::No,
    };
    mount_config(&cfg, &a.mountpoint, choice, a.foreground, a.explain)
}

/// Mounts `cfg` at `target` in the mode `choice` leads to, with the server
/// detached unless `foreground`; with `explain`, first prints the mode and
/// why. The entry every `cfs … mount` command shares.
pub fn mount_config(
    cfg: &MountConfig,
    target: &Path,
    choice: FuseChoice,
    foreground: bool,
    explain: bool,
) -> anyhow::Result<()> {
    let decision = cfs_mount::decide(cfg, choice)?;
    if explain {
        println!("mode: {}", decision.mode);
        println!("why: {}", decision.why);
        use std::io::Write;
        std::io::stdout().flush()?;
    }
    let server = if foreground {
        Server::Foreground
    } else {
        Server::Detached(ServerCommand::this_exe().context("could not find the cfs executable")?)
    };
    cfs_mount::mount_with(cfg, target, decision.mode, &server)?;
    Ok(())
}

/// `cfs unmount`.
pub fn unmount(a: &UnmountArgs) -> anyhow::Result<()> {
    cfs_mount::unmount(&a.mountpoint, a.lazy)?;
    Ok(())
}

/// `cfs mounts`: `MODE MOUNTPOINT` for each cfs mount this process sees.
pub fn mounts() -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for m in cfs_mount::mounts::list().context("could not read /proc/self/mountinfo")? {
        writeln!(out, "{}\t{}", m.mode, m.mountpoint.display())?;
    }
    Ok(())
}

/// The hidden `cfs __serve`: a detached FUSE server started by `cfs mount`.
pub fn serve(args: &[OsString]) -> anyhow::Result<()> {
    cfs_mount::server::serve_handed_over(args).map_err(anyhow::Error::msg)
}

/// `mount.composefs IMAGE MOUNTPOINT [-o OPTS] [-t composefs] [-s -f -n -v]`,
/// as `mount(8)` calls a helper.
pub fn main_mount_composefs(argv: Vec<OsString>) -> anyhow::Result<()> {
    let mut positional = Vec::new();
    let mut opts = String::new();
    let mut fake = false;
    let mut verbose = false;
    let mut args = argv.into_iter().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("-o") => {
                let o = args.next().context("-o needs an argument")?;
                let o = o
                    .into_string()
                    .map_err(|o| anyhow::anyhow!("options are not UTF-8: {o:?}"))?;
                if !opts.is_empty() {
                    opts.push(',');
                }
                opts.push_str(&o);
            }
            Some("-t") => {
                let t = args.next().context("-t needs an argument")?;
                if t != "composefs" {
                    bail!("Unsupported fs type '{}'", t.to_string_lossy());
                }
            }
            Some("-N") => bail!("-N (mount namespace) is not supported"),
            Some("-h" | "--help") => {
                println!(
                    "usage: mount.composefs IMAGE MOUNTPOINT [-o basedir=DIR[:DIR..],digest=HEX,\
                     verity|tryverity|noverity,upperdir=DIR,workdir=DIR,ro|rw]"
                );
                return Ok(());
            }
            Some(flags) if flags.starts_with('-') && flags.len() > 1 => {
                for c in flags[1..].chars() {
                    match c {
                        's' | 'n' => {} // sloppy, no mtab: nothing to do
                        'f' => fake = true,
                        'v' => verbose = true,
                        c => bail!("unknown flag -{c}"),
                    }
                }
            }
            _ => positional.push(arg),
        }
    }
    let [image, mountpoint]: [OsString; 2] =
        positional.try_into().map_err(|p: Vec<OsString>| {
            anyhow::anyhow!("expected IMAGE and MOUNTPOINT, got {} arguments", p.len())
        })?;
    let cfg = parse_composefs_options(&opts)
        .and_then(|o| o.into_config(image.into()))
        .map_err(anyhow::Error::msg)?;
    if verbose {
        eprintln!("mount.composefs: {cfg:?}");
    }
    if fake {
        return Ok(());
    }
    cfs_mount::mount(&cfg, mountpoint.as_ref(), MountMode::Kernel)
        .with_context(|| format!("Failed to mount composefs {}", cfg.image.display()))?;
    Ok(())
}
