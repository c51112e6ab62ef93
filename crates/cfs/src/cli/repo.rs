//! Repository commands: `init`, `create-image`, `images`, `image-objects`,
//! `rm`, `fsck`, `gc`, `info`. The repository is `--repo`, else `$CFS_REPO`,
//! else the default location (`/var/lib/cfs` for the machine's root,
//! `$XDG_DATA_HOME/cfs` or `~/.local/share/cfs` for others, root of a user
//! namespace included).

use anyhow::{bail, Context};
use cfs_repo::import::{ImportStats, Progress};
use cfs_repo::repository::{self, Contention, CreateOptions, FsckReport, LockWait};
use cfs_repo::store::VeritySupport;
use cfs_repo::Repository;
use clap::{Args, Subcommand};
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The records other crates keep under `streams/` that gc and fsck must
/// read: OCI tags, manifests and layer records (`streams/oci/`).
const STREAMS: &[&dyn repository::StreamRoots] = &[&cfs_oci::store::OciRoots];

/// The repository subcommands.
#[derive(Subcommand, Debug)]
pub enum RepoCommand {
    /// Create a repository (or finish creating one).
    Init,
    /// Store a directory's files and an image of it under NAME.
    CreateImage(CreateArgs),
    /// Print the image id `create-image` would store for a directory
    /// (nothing is stored).
    ComputeId {
        #[command(flatten)]
        tree: TreeFlags,
        /// The directory.
        dir: PathBuf,
    },
    /// Write a directory's or an image's composefs dumpfile (`mkfs
    /// --from-file` builds the image back).
    CreateDumpfile(DumpfileArgs),
    /// Store a composefs image file (`-` for stdin) under NAME, after
    /// checking that it is one; its objects may be missing (it says how many).
    ImportImage {
        /// The image file, or `-`.
        file: PathBuf,
        /// The image's name.
        name: String,
        /// Replace the image NAME names now.
        #[arg(long)]
        force: bool,
    },
    /// List the images: NAME and image id (unnamed images as `-`).
    Images {
        /// Print a JSON array instead (docs/json.md).
        #[arg(long)]
        json: bool,
    },
    /// List the objects an image needs (`ab/cdef…`), sorted.
    ImageObjects {
        /// Image name or id.
        name: String,
    },
    /// Remove an image name (objects go at the next `gc`); `oci:NAME` also
    /// removes the OCI tag NAME, as `cfs oci rm NAME` does.
    Rm {
        /// Image name or id.
        name: String,
    },
    /// Check every object, image and name; non-zero exit on any problem.
    Fsck {
        /// Print the report as a JSON object (docs/json.md).
        #[arg(long)]
        json: bool,
    },
    /// Remove everything no image name reaches.
    Gc {
        /// Only print what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the repository's location, format, size and fs-verity support.
    Info {
        /// Print a JSON object instead (docs/json.md).
        #[arg(long)]
        json: bool,
    },
}

/// How a directory becomes an image: `create-image`, `compute-id` and
/// `create-dumpfile` share these, so they agree on the id.
#[derive(Args, Debug)]
pub struct TreeFlags {
    #[command(flatten)]
    scan: super::mkfs::ScanFlags,
    /// Split hard links into separate inodes (as C mkcomposefs 1.0.x does).
    #[arg(long)]
    no_hardlinks: bool,
}

impl TreeFlags {
    /// The repository's build options these flags select.
    fn options(&self) -> CreateOptions {
        let mut options = CreateOptions::default();
        self.scan.apply(&mut options.scan);
        options.scan.hardlinks = !self.no_hardlinks;
        options
    }
}

/// Options of `cfs create-dumpfile`.
#[derive(Args, Debug)]
pub struct DumpfileArgs {
    #[command(flatten)]
    tree: TreeFlags,
    /// A directory or an image file, spelled as a path (`./dir`), `-` for stdin, or
    /// an image name in the repository (a bare word is always a name).
    source: PathBuf,
    /// Where to write the dumpfile (default `-`, stdout).
    out: Option<PathBuf>,
}

/// Options of `cfs create-image`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    tree: TreeFlags,
    /// Replace the image NAME names now (without it, an existing NAME is refused).
    #[arg(long)]
    force: bool,
    /// Print the summary line even when stderr is not a terminal.
    #[arg(long)]
    stats: bool,
    /// Threads hashing and copying (default: 4 per CPU; each object's fsync
    /// waits on the disk, and more threads overlap those waits).
    #[arg(long, value_name = "N")]
    threads: Option<std::num::NonZeroUsize>,
    /// The directory to import.
    dir: PathBuf,
    /// The image's name.
    name: String,
}

/// The repository path from `--repo`/`CFS_REPO` or the default: the real
/// user's (root of a user namespace is the user who made it, see
/// `cfs_repo::repository::default_path`).
pub fn repo_path(repo: Option<&Path>) -> anyhow::Result<PathBuf> {
    match repo {
        Some(p) => Ok(p.to_path_buf()),
        None => {
            let ns = if cfs_mount::detect::in_initial_userns() {
                repository::UserNamespace::Initial
            } else {
                repository::UserNamespace::Child
            };
            repository::default_path(ns)
                .context("no repository location: set --repo, CFS_REPO, XDG_DATA_HOME or HOME")
        }
    }
}

fn open(repo: Option<&Path>) -> anyhow::Result<Repository> {
    open_repo(&repo_path(repo)?)
}

/// How long to wait for a busy repository lock (`--lock-timeout`, or
/// `CFS_LOCK_TIMEOUT` for the `mkcomposefs` personality); unset waits.
static LOCK_TIMEOUT: OnceLock<Option<Duration>> = OnceLock::new();

/// Sets the lock timeout for every repository this process opens.
pub fn set_lock_timeout(timeout: Option<Duration>) {
    let _ = LOCK_TIMEOUT.set(timeout);
}

/// Parses `--lock-timeout SECONDS` (a non-negative number, fractions allowed).
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("{s:?} is not a number of seconds"))
}

fn lock_wait() -> LockWait {
    let timeout = *LOCK_TIMEOUT.get_or_init(|| {
        std::env::var("CFS_LOCK_TIMEOUT")
            .ok()
            .and_then(|v| parse_seconds(&v).ok())
    });
    LockWait {
        timeout,
        on_wait: Some(say_waiting),
    }
}

/// Tells the terminal that the lock is busy, and who holds it.
fn say_waiting(c: &Contention<'_>) {
    eprintln!("{}", waiting_message(c));
}

/// The line [`say_waiting`] prints. The holder's command line is another
/// process's, maybe another user's (whose `argv[0]` can hold terminal escape
/// sequences): it is escaped as error messages are.
fn waiting_message(c: &Contention<'_>) -> String {
    let until = match c.timeout {
        Some(t) => format!("for up to {:.1}s", t.as_secs_f64()),
        None => "(--lock-timeout SECONDS to give up)".to_owned(),
    };
    super::for_terminal(&format!(
        "cfs: {} is {}; waiting {until}",
        c.path.display(),
        repository::describe_holders(c.holders)
    ))
}

/// Opens a repository with this process's lock policy.
pub fn open_repo(path: &Path) -> anyhow::Result<Repository> {
    let mut r = Repository::open(path)?;
    r.set_lock_wait(lock_wait());
    Ok(r)
}

/// Creates or opens a repository with this process's lock policy; says on
/// stderr when its top directory was made private.
pub fn init_repo(path: &Path) -> anyhow::Result<Repository> {
    let mut r = Repository::init(path)?;
    if let Some(mode) = r.made_private_from() {
        eprintln!(
            "cfs: {} was mode {mode:04o}, readable by others; made it 0700 (private to its owner)",
            path.display()
        );
    }
    r.set_lock_wait(lock_wait());
    Ok(r)
}

/// Runs `f` on a pool of 4 threads per CPU (see [`run`]).
pub fn with_pool<T>(f: impl FnOnce() -> anyhow::Result<T> + Send) -> anyhow::Result<T>
where
    T: Send,
{
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get() * 4);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("could not start worker threads")?
        .install(f)
}

/// Runs a repository command on a pool of 4 threads per CPU (or
/// `create-image --threads`): storing and removing objects mostly waits on
/// the disk (an fsync per new object, journal commits for unlinks), and more
/// threads overlap those waits.
pub fn run(repo: Option<&Path>, cmd: RepoCommand) -> anyhow::Result<()> {
    let threads = match &cmd {
        RepoCommand::CreateImage(CreateArgs {
            threads: Some(n), ..
        }) => n.get(),
        _ => std::thread::available_parallelism().map_or(4, |n| n.get() * 4),
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("could not start worker threads")?
        .install(|| dispatch(repo, cmd))
}

fn dispatch(repo: Option<&Path>, cmd: RepoCommand) -> anyhow::Result<()> {
    match cmd {
        RepoCommand::Init => {
            let r = init_repo(&repo_path(repo)?)?;
            println!("{}", r.path().display());
            Ok(())
        }
        RepoCommand::CreateImage(a) => create_image(repo, &a),
        RepoCommand::ComputeId { tree, dir } => {
            let id = repository::compute_id(&dir, &tree.options())
                .with_context(|| format!("cannot read {}", dir.display()))?;
            println!("{id}");
            Ok(())
        }
        RepoCommand::CreateDumpfile(a) => create_dumpfile(repo, &a),
        RepoCommand::ImportImage { file, name, force } => import_image(repo, &file, &name, force),
        RepoCommand::Images { json } => {
            let r = open(repo)?;
            if json {
                return super::json::print(&super::json::images(&r.images()?));
            }
            let mut out = BufWriter::new(std::io::stdout().lock());
            for img in r.images()? {
                if img.names.is_empty() {
                    writeln!(out, "-\t{}", img.id)?;
                }
                for n in &img.names {
                    writeln!(out, "{n}\t{}", img.id)?;
                }
            }
            Ok(out.flush()?)
        }
        RepoCommand::ImageObjects { name } => {
            let r = open(repo)?;
            let id = r.resolve(&name)?;
            let mut out = BufWriter::new(std::io::stdout().lock());
            for o in r.image_objects(&id)? {
                writeln!(out, "{}", o.object_path())?;
            }
            Ok(out.flush()?)
        }
        RepoCommand::Rm { name } => {
            let r = open(repo)?;
            // One name space: `oci:NAME` goes with its OCI tag, as `cfs oci rm NAME`.
            let tags = super::oci::tags_removed_with(&r, &name)?;
            let id = r.remove(&name)?;
            super::oci::remove_tags(&r, &tags)?;
            for tag in &tags {
                eprintln!("removed the OCI tag {tag} with its image oci:{tag}");
            }
            let mounts = r.mounts_of(&id)?;
            if mounts.is_empty() {
                eprintln!("removed {name} ({id}); run `cfs gc` to free its objects");
            } else {
                let at: Vec<&str> = mounts.iter().map(|p| p.mountpoint.as_str()).collect();
                eprintln!(
                    "removed {name} ({id}); it is still mounted (at {}): its objects stay \
                     until it is unmounted, then `cfs gc` frees them",
                    at.join(", ")
                );
            }
            Ok(())
        }
        RepoCommand::Fsck { json } => fsck(repo, json),
        RepoCommand::Gc { dry_run } => gc(repo, dry_run),
        RepoCommand::Info { json } => info(repo, json),
    }
}

fn create_image(repo: Option<&Path>, a: &CreateArgs) -> anyhow::Result<()> {
    let path = repo_path(repo)?;
    // The first import creates the repository; init opens an existing one.
    let r = init_repo(&path)?;
    refuse_replacing(&r, &a.name, a.force)?;
    let options = a.tree.options();
    let progress = Progress::default();
    let terminal = std::io::stderr().is_terminal();
    let start = Instant::now();
    let done = std::sync::atomic::AtomicBool::new(false);
    let report = std::thread::scope(|s| {
        if terminal {
            s.spawn(|| show_progress(&progress, &done));
        }
        let r = r.create_image(&a.dir, &a.name, &options, &progress);
        done.store(true, Ordering::Relaxed);
        r
    })
    .with_context(|| format!("cannot import {}", a.dir.display()))?;
    if terminal || a.stats {
        eprintln!("{}", summary(&report.stats, start.elapsed()));
    }
    println!("{}", report.id);
    Ok(())
}

/// Without `force`, refuses a name that already names an image (checked
/// before importing, so nothing is stored for nothing).
fn refuse_replacing(r: &Repository, name: &str, force: bool) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    if let Some(id) = r.read_ref(name)? {
        bail!(
            "{name:?} already names image {id} in {}: --force replaces it (the old image \
             then goes with the next `cfs gc`, unless another name or a mount keeps it)",
            r.path().display()
        );
    }
    Ok(())
}

/// `cfs import-image FILE NAME`: a composefs image made elsewhere, checked
/// with the reader and stored like any image; says which objects are missing.
fn import_image(repo: Option<&Path>, file: &Path, name: &str, force: bool) -> anyhow::Result<()> {
    let r = init_repo(&repo_path(repo)?)?;
    refuse_replacing(&r, name, force)?;
    let (shown, bytes) = super::input::read_file(file)?;
    let id = r.import_image(&bytes, name, &shown)?;
    let missing = r.missing_objects(&id)?;
    if !missing.is_empty() {
        let needed = r.image_objects(&id)?.len();
        eprintln!(
            "cfs: {} of the {needed} objects image {id} needs are missing from {} \
             (`cfs image-objects {name}` lists them; mounting it checks them)",
            missing.len(),
            r.objects().path().display()
        );
    }
    println!("{id}");
    Ok(())
}

/// `cfs create-dumpfile DIR|IMAGE [OUT|-]`.
fn create_dumpfile(repo: Option<&Path>, a: &DumpfileArgs) -> anyhow::Result<()> {
    // A directory only when spelled as a path, as an image file is
    // (`super::input`): a bare word is an image name.
    let is_dir = matches!(
        super::input::ImageArg::parse(&a.source),
        super::input::ImageArg::File(_)
    ) && a.source.is_dir();
    let tree = if is_dir {
        // Through the image and back: the dump of a directory is the dump
        // of the image `create-image` makes of it, as `cfs dump` prints it.
        let options = a.tree.options();
        let tree = repository::tree_of_directory(&a.source, &options)
            .with_context(|| format!("cannot read {}", a.source.display()))?;
        let image =
            cfs_format::writer::write_image(&tree, &options.write).context("cannot write image")?;
        cfs_format::reader::Image::open(image)
            .and_then(|img| img.to_tree())
            .context("could not read the image back")?
    } else {
        super::input::load_tree(&a.source, repo)?
    };
    let mut text = Vec::new();
    cfs_format::dumpfile::print(&tree, &mut text)?;
    match a.out.as_deref() {
        None => write_stdout(&text),
        Some(p) if p == Path::new("-") => write_stdout(&text),
        Some(p) => super::output::write_file(p, &text),
    }
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).context("could not write to stdout")?;
    out.flush().context("could not write to stdout")
}

/// Redraws a progress bar from the counters until `done`.
fn show_progress(progress: &Progress, done: &std::sync::atomic::AtomicBool) {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    while !done.load(Ordering::Relaxed) {
        let total = progress.total_bytes.load(Ordering::Relaxed);
        bar.set_length(total);
        bar.set_position(progress.bytes.load(Ordering::Relaxed));
        let total_files = progress.total_files.load(Ordering::Relaxed);
        if total_files == 0 {
            bar.set_message("scanning…");
        } else {
            bar.set_message(format!(
                "{}/{} files",
                progress.files.load(Ordering::Relaxed),
                total_files
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bar.finish_and_clear();
}

/// `N files, B read, N new objects (B), B saved by dedup, in Ts (R/s)`.
fn summary(s: &ImportStats, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-6);
    format!(
        "{} files, {} read, {} new objects ({}), {} saved by dedup, in {:.2}s ({}/s, {:.0} files/s)",
        s.files,
        human(s.bytes),
        s.new_objects,
        human(s.new_bytes),
        human(s.saved_bytes()),
        secs,
        human((s.bytes as f64 / secs) as u64),
        s.files as f64 / secs
    )
}

/// Bytes in binary units with one decimal.
fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn fsck(repo: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let r = open(repo)?;
    let report = r.fsck(STREAMS)?;
    if json {
        super::json::print(&super::json::Fsck::from(&report))?;
    } else {
        print_fsck(&report)?;
    }
    if !report.is_clean() {
        bail!(
            "fsck: {} corrupt, {} missing, {} stray, {} broken",
            report.corrupt.len(),
            report.missing.len(),
            report.stray.len(),
            report.broken.len()
        );
    }
    Ok(())
}

/// `cfs fsck`'s report as text: one line per problem, then a summary.
fn print_fsck(report: &FsckReport) -> anyhow::Result<()> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    for c in &report.corrupt {
        match (&c.found, &c.error) {
            (Some(found), _) => writeln!(
                out,
                "corrupt {}: content hashes to {found}",
                c.path.display()
            )?,
            (None, Some(e)) => writeln!(out, "corrupt {}: {e}", c.path.display())?,
            (None, None) => writeln!(out, "corrupt {}", c.path.display())?,
        }
    }
    for m in &report.missing {
        writeln!(
            out,
            "missing objects/{} (needed by image {})",
            m.object.object_path(),
            m.image
        )?;
    }
    for p in &report.stray {
        writeln!(out, "stray {}: {}", p.path.display(), p.what)?;
    }
    for p in &report.broken {
        writeln!(out, "broken {}: {}", p.path.display(), p.what)?;
    }
    writeln!(
        out,
        "{} objects ({}), {} images, {} names checked: {}",
        report.objects,
        human(report.bytes),
        report.images,
        report.refs,
        if report.is_clean() {
            "clean"
        } else {
            "PROBLEMS"
        }
    )?;
    Ok(out.flush()?)
}

fn gc(repo: Option<&Path>, dry_run: bool) -> anyhow::Result<()> {
    let r = open(repo)?;
    let report = r.gc(STREAMS, dry_run)?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    if dry_run {
        for p in &report.removed {
            writeln!(out, "would remove {}", p.display())?;
        }
    }
    for (pin, why) in &report.unverified_pins {
        writeln!(
            out,
            "kept {}: could not check whether its mount still exists ({why})",
            pin.display()
        )?;
    }
    if report.stale_pins_removed > 0 {
        writeln!(
            out,
            "{} {} pins of mounts that are gone",
            if dry_run { "would remove" } else { "removed" },
            report.stale_pins_removed
        )?;
    }
    if !report.mounted_only.is_empty() {
        writeln!(
            out,
            "kept {} unnamed images that are still mounted",
            report.mounted_only.len()
        )?;
    }
    writeln!(
        out,
        "{} {} objects ({}), {} unnamed images, {} temporary files; kept {} objects of {} images",
        if dry_run { "would remove" } else { "removed" },
        report.objects_removed,
        human(report.bytes_freed),
        report.images_removed.len(),
        report.temporaries_removed,
        report.objects_kept,
        report.images_kept
    )?;
    Ok(out.flush()?)
}

fn info(repo: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let r = open(repo)?;
    let s = r.stats()?;
    let mode = r.mode()?;
    if json {
        return super::json::print(&super::json::Info::new(r.path(), mode, &s));
    }
    println!("repository: {}", r.path().display());
    if mode & 0o077 == 0 {
        println!("access: private to its owner ({mode:04o})");
    } else {
        println!("access: readable by others ({mode:04o}): `cfs init` makes it private");
    }
    println!("format version: {}", repository::FORMAT_VERSION);
    println!("objects: {} ({})", s.objects, human(s.bytes));
    println!("images: {}", s.images);
    let verity = match s.verity {
        VeritySupport::Enabled => "enabled on objects (kernel-verified)",
        VeritySupport::Unavailable => {
            "objects have none (not available on this kernel or file system when they were \
             stored): digests are computed and checked in userspace only"
        }
        VeritySupport::Unknown => "not known until an object is stored",
    };
    println!("fs-verity: {verity}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
    }

    /// A lock holder's command line is another process's: a user holding
    /// the lock of a repository root works in can name its process
    /// `evil\e]0;title\a\e[31m` and must not reach root's terminal with it.
    #[test]
    fn the_waiting_line_escapes_the_holders_command_line() {
        let holders = [repository::LockHolder {
            pid: 42,
            mode: repository::LockMode::Exclusive,
            command: Some("evil\x1b]0;pwned\x07\x1b[31mRED sleep 30".into()),
        }];
        let c = Contention {
            path: Path::new("/r/lock"),
            wanted: repository::LockMode::Shared,
            holders: &holders,
            timeout: None,
        };
        let line = waiting_message(&c);
        assert!(!line.chars().any(|ch| ch.is_control()), "{line:?}");
        assert!(
            line.contains("pid 42 (exclusive, evil\\x1b]0;pwned\\x07\\x1b[31mRED sleep 30)"),
            "{line}"
        );
    }
}
