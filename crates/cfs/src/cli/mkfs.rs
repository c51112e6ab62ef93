//! `cfs mkfs` / `mkcomposefs`: build an image from a directory or a dumpfile,
//! with the options and output of C `mkcomposefs` (composefs 1.0.x).

use super::output::write_output;
use anyhow::{bail, Context};
use cfs_format::dumpfile::{self, ParseMode};
use cfs_format::writer::{self, WriteOptions};
use cfs_format::Tree;
use cfs_repo::scan::{self, ScanOptions, XattrMode};
use clap::{Args, Parser};
use std::ffi::OsString;
use std::num::NonZeroUsize;
use std::path::PathBuf;

/// Options of `mkcomposefs` (and `cfs mkfs`).
#[derive(Args, Debug, Clone)]
pub struct MkfsArgs {
    /// SOURCE is a dumpfile (`-` for stdin), not a directory.
    #[arg(long)]
    from_file: bool,
    /// Parse the dumpfile strictly (also when CFS_PARSE_STRICT is set, as in C).
    #[arg(long)]
    strict: bool,
    /// Print the fs-verity digest of the image.
    #[arg(long)]
    print_digest: bool,
    /// Print the fs-verity digest of the image; don't write it (no IMAGE argument).
    #[arg(long)]
    print_digest_only: bool,
    /// Lowest format version to use (default 0).
    #[arg(long, value_name = "N")]
    min_version: Option<u32>,
    /// Highest format version to use (default 1; 0 when only --min-version is given, as in C).
    #[arg(long, value_name = "N")]
    max_version: Option<u32>,
    #[command(flatten)]
    scan: ScanFlags,
    /// Keep hard links as hard links (C mkcomposefs 1.0.x splits them into separate inodes).
    #[arg(long)]
    hardlinks: bool,
    /// Copy external file contents into this object directory, named by digest.
    #[arg(long, value_name = "PATH")]
    digest_store: Option<PathBuf>,
    /// Threads used to compute digests (default: all CPUs).
    #[arg(long, value_name = "N")]
    threads: Option<NonZeroUsize>,
    /// A directory, or with --from-file a dumpfile (`-` for stdin).
    source: PathBuf,
    /// The image to write (`-` for stdout); omitted with --print-digest-only.
    image: Option<PathBuf>,
}

/// `mkcomposefs` as its own program.
#[derive(Parser, Debug)]
#[command(
    name = "mkcomposefs",
    version = super::VERSION,
    about = "Create a composefs image",
    override_usage = "mkcomposefs [OPTIONS] SOURCE IMAGE\n       \
                      mkcomposefs --print-digest-only [OPTIONS] SOURCE",
    long_about = "Create a composefs image (an EROFS metadata image whose larger files \
                  point, by fs-verity digest, into an object directory) from a directory, \
                  or with --from-file from a dumpfile (composefs-dump(5)); byte for byte \
                  the image C mkcomposefs 1.0.x writes for the same input and options."
)]
struct Mkcomposefs {
    #[command(flatten)]
    args: MkfsArgs,
}

/// The clap definition of `mkcomposefs` (for its manual page).
pub fn mkcomposefs_command() -> clap::Command {
    <Mkcomposefs as clap::CommandFactory>::command()
}

/// Entry point for the `mkcomposefs` personality.
pub fn main_mkcomposefs(argv: Vec<OsString>) -> anyhow::Result<()> {
    run(&Mkcomposefs::parse_from(argv).args)
}

/// Builds the image as the arguments say.
pub fn run(a: &MkfsArgs) -> anyhow::Result<()> {
    if a.source.as_os_str().is_empty() {
        bail!("Empty source path specified");
    }
    let print_digest = a.print_digest || a.print_digest_only;
    match (&a.image, a.print_digest_only) {
        (None, false) => bail!("No destination path specified"),
        (Some(_), true) => bail!("Cannot specify destination path with --print-digest-only"),
        _ => {}
    }

    let tree = if a.from_file {
        read_dumpfile(a)?
    } else {
        scan_dir(a)?
    };

    // C: without either flag the range is 0..=1; with one of them the other defaults to 0,
    // and a max below the min is raised to it.
    let (min, max) = match (a.min_version, a.max_version) {
        (None, None) => (0, 1),
        (min, max) => (min.unwrap_or(0), max.unwrap_or(0)),
    };
    let options = WriteOptions {
        min_version: min,
        max_version: max.max(min),
    };
    let image = writer::write_image(&tree, &options).context("cannot write image")?;

    if let Some(path) = &a.image {
        write_output(path, &image)?;
    }
    if print_digest {
        println!("{}", cfs_format::fsverity::digest(&image));
    }
    Ok(())
}

fn read_dumpfile(a: &MkfsArgs) -> anyhow::Result<Tree> {
    use cfs_repo::input::{self, MAX_DUMPFILE_BYTES};
    let name = a.source.display();
    let input = if a.source.as_os_str() == "-" {
        input::read_capped(&mut std::io::stdin().lock(), None, MAX_DUMPFILE_BYTES)
            .context("could not read stdin")?
    } else {
        // Opened without blocking, and refused unless a regular file: a
        // FIFO would block the open.
        let mut file =
            input::open_regular(&a.source).with_context(|| format!("could not open {name}"))?;
        input::read_file_capped(&mut file, MAX_DUMPFILE_BYTES)
            .with_context(|| format!("could not read {name}"))?
    };
    let strict = a.strict || std::env::var_os("CFS_PARSE_STRICT").is_some();
    let mode = if strict {
        ParseMode::Strict
    } else {
        ParseMode::Lenient
    };
    dumpfile::parse(&input, mode).with_context(|| format!("{name}"))
}

fn scan_dir(a: &MkfsArgs) -> anyhow::Result<Tree> {
    let mut options = ScanOptions {
        hardlinks: a.hardlinks,
        // With a digest store, content is read once, while it is stored.
        skip_content: a.digest_store.is_some(),
        ..ScanOptions::default()
    };
    a.scan.apply(&mut options);
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(n) = a.threads {
        pool = pool.num_threads(n.get());
    }
    let pool = pool.build().context("could not start worker threads")?;
    pool.install(|| {
        let mut scanned = scan::scan(&a.source, &options)?;
        if let Some(store) = &a.digest_store {
            fill_store(store, &mut scanned).context("cannot fill store")?;
        }
        Ok(scanned.tree)
    })
}

/// `--digest-store=DIR`: a repository's `objects/` (under its shared lock,
/// so a concurrent gc can't remove what this run stores before it is named),
/// or else DIR itself as a plain object directory, created if missing.
fn fill_store(dir: &std::path::Path, scanned: &mut scan::Scan) -> anyhow::Result<()> {
    let progress = cfs_repo::import::Progress::default();
    if cfs_repo::Repository::is_repository(dir) {
        let repo = super::repo::open_repo(dir)?;
        let _lock = repo.lock(cfs_repo::repository::LockMode::Shared)?;
        cfs_repo::import::store_contents(scanned, repo.objects(), &progress)?;
        repo.objects().sync()?;
    } else {
        let store = cfs_repo::store::ObjectStore::create(dir)?;
        cfs_repo::import::store_contents(scanned, &store, &progress)?;
        store.sync()?;
    }
    Ok(())
}

/// The directory-scan flags `cfs mkfs`, `mkcomposefs` and `cfs create-image` share.
#[derive(Args, Debug, Clone)]
pub struct ScanFlags {
    /// Make all mtimes zero.
    #[arg(long)]
    use_epoch: bool,
    /// Don't store xattrs.
    #[arg(long, conflicts_with = "user_xattrs")]
    skip_xattrs: bool,
    /// Only store `user.*` xattrs.
    #[arg(long)]
    user_xattrs: bool,
    /// Don't store block and character devices.
    #[arg(long)]
    skip_devices: bool,
}

impl ScanFlags {
    /// Sets these flags' fields of `options`.
    pub fn apply(&self, options: &mut ScanOptions) {
        options.use_epoch = self.use_epoch;
        options.skip_devices = self.skip_devices;
        options.xattrs = if self.skip_xattrs {
            XattrMode::None
        } else if self.user_xattrs {
            XattrMode::UserOnly
        } else {
            XattrMode::All
        };
    }
}
