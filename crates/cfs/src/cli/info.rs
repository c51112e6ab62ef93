//! Inspecting images: `dump`, `ls`, `objects`, `missing-objects`, and measuring
//! files (`measure-file` / `cfs digest`), as C `composefs-info` does them.

use super::input::load_tree;
use anyhow::{bail, Context};
use cfs_format::dumpfile;
use cfs_format::fsverity::digest_reader;
use cfs_format::reader::Image;
use cfs_format::{FileType, NodeId, Tree};
use clap::{Parser, ValueEnum};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// `composefs-info` commands.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum InfoCommand {
    /// Each path in the images, with its symlink target or backing object.
    Ls,
    /// The images as dumpfiles (composefs-dump(5)), which mkcomposefs
    /// --from-file reads back.
    Dump,
    /// The backing objects the images refer to, sorted, each once.
    Objects,
    /// The backing objects missing from --basedir, sorted.
    MissingObjects,
    /// The fs-verity digest of each file given (not an image).
    MeasureFile,
}

/// `composefs-info` as its own program.
#[derive(Parser, Debug)]
#[command(
    name = "composefs-info",
    version = super::VERSION,
    about = "Inspect composefs images",
    override_usage = "composefs-info [--basedir DIR] [--filter NAME]... \
                      ls|dump|objects|missing-objects|measure-file PATH...",
    long_about = "Inspect composefs images: list their files, print them as dumpfiles, \
                  list the backing objects they need (or those an object directory lacks), \
                  or measure files' fs-verity digests, with the command line and output of \
                  C composefs-info."
)]
struct ComposefsInfo {
    /// Object directory for `missing-objects`.
    #[arg(long)]
    basedir: Option<PathBuf>,
    /// Only read these top-level entries (repeatable; a single name, no `/`).
    #[arg(long, value_name = "NAME")]
    filter: Vec<String>,
    /// What to do.
    #[arg(value_enum)]
    command: InfoCommand,
    /// Images (files for `measure-file`).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

/// The clap definition of `composefs-info` (for its manual page).
pub fn composefs_info_command() -> clap::Command {
    <ComposefsInfo as clap::CommandFactory>::command()
}

/// Entry point for the `composefs-info` personality.
pub fn main_composefs_info(argv: Vec<OsString>) -> anyhow::Result<()> {
    let a = ComposefsInfo::parse_from(argv);
    if let Some(f) = a.filter.iter().find(|f| f.contains('/')) {
        bail!("Filter must be a single name: {f}");
    }
    let load = |p: &Path| load_filtered(p, &a.filter);
    match a.command {
        InfoCommand::Ls => for_each_image(&a.paths, load, print_ls),
        InfoCommand::Dump => for_each_image(&a.paths, load, print_dump),
        InfoCommand::Objects => objects_with(&a.paths, load, None),
        InfoCommand::MissingObjects => {
            let Some(basedir) = &a.basedir else {
                bail!("missing-objects needs --basedir");
            };
            objects_with(&a.paths, load, Some(basedir))
        }
        InfoCommand::MeasureFile => measure(&a.paths, false),
    }
}

/// Reads an image file into a tree (a plain read; mmap comes later): a
/// regular file only, opened without blocking, of at most
/// [`MAX_IMAGE_BYTES`](cfs_repo::input::MAX_IMAGE_BYTES).
pub fn load(path: &Path) -> anyhow::Result<Tree> {
    use cfs_repo::input;
    let bytes = input::open_regular(path)
        .and_then(|mut f| input::read_file_capped(&mut f, input::MAX_IMAGE_BYTES))
        .with_context(|| format!("could not read {}", path.display()))?;
    Image::open(bytes)
        .and_then(|img| img.to_tree())
        .with_context(|| format!("failed to load {}", path.display()))
}

/// [`load`], keeping only the named top-level entries when `filter` is not empty.
fn load_filtered(path: &Path, filter: &[String]) -> anyhow::Result<Tree> {
    let mut tree = load(path)?;
    if !filter.is_empty() {
        tree.node_mut(NodeId::ROOT)
            .entries
            .retain(|e| filter.iter().any(|f| f.as_bytes() == e.name));
    }
    Ok(tree)
}

fn for_each_image(
    paths: &[PathBuf],
    load: impl Fn(&Path) -> anyhow::Result<Tree>,
    print: fn(&Tree, &mut dyn Write) -> io::Result<()>,
) -> anyhow::Result<()> {
    let mut out = BufWriter::new(io::stdout().lock());
    for p in paths {
        let tree = load(p)?;
        print(&tree, &mut out).context("could not write to stdout")?;
    }
    out.flush().context("could not write to stdout")
}

/// `cfs dump`: each image (a file, `-`, or a name in `repo`) as a canonical dumpfile.
pub fn dump(images: &[PathBuf], repo: Option<&Path>) -> anyhow::Result<()> {
    for_each_image(images, |p| load_tree(p, repo), print_dump)
}

/// `cfs ls`: each image's paths.
pub fn ls(images: &[PathBuf], repo: Option<&Path>) -> anyhow::Result<()> {
    for_each_image(images, |p| load_tree(p, repo), print_ls)
}

fn print_dump(tree: &Tree, out: &mut dyn Write) -> io::Result<()> {
    dumpfile::print(tree, out)
}

/// C `composefs-info ls`: one line per path below the root, depth first in
/// name order: `PATH/` + tab for directories, `PATH<tab>-> TARGET` for
/// symlinks, `PATH<tab>@ OBJECT` for files with a backing object.
fn print_ls(tree: &Tree, out: &mut dyn Write) -> io::Result<()> {
    fn walk(tree: &Tree, dir: NodeId, prefix: &mut Vec<u8>, out: &mut dyn Write) -> io::Result<()> {
        for e in &tree.node(dir).entries {
            let len = prefix.len();
            prefix.push(b'/');
            prefix.extend_from_slice(&e.name);
            let node = tree.node(e.node);
            write_escaped(out, prefix, Escape::KeepSpace)?;
            match (node.file_type(), &node.payload) {
                (Some(FileType::Directory), _) => out.write_all(b"/\t")?,
                (Some(FileType::Symlink), Some(target)) => {
                    out.write_all(b"\t-> ")?;
                    write_escaped(out, target, Escape::Standard)?;
                }
                (Some(FileType::Regular), Some(object)) => {
                    out.write_all(b"\t@ ")?;
                    write_escaped(out, object, Escape::Standard)?;
                }
                _ => {}
            }
            out.write_all(b"\n")?;
            if node.file_type() == Some(FileType::Directory) && !e.hardlink {
                walk(tree, e.node, prefix, out)?;
            }
            prefix.truncate(len);
        }
        Ok(())
    }
    walk(tree, tree.root(), &mut Vec::new(), out)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Escape {
    /// Hex-escape everything that is not graphic ASCII (C `isgraph`).
    Standard,
    /// Like `Standard`, but a space stays a space (C `isprint`).
    KeepSpace,
}

/// C `composefs-info`'s `print_escaped`: `\\`, `\n`, `\r`, `\t`, and `\xHH` for the rest.
fn write_escaped(out: &mut dyn Write, bytes: &[u8], mode: Escape) -> io::Result<()> {
    for &c in bytes {
        match c {
            b'\\' => out.write_all(b"\\\\")?,
            b'\n' => out.write_all(b"\\n")?,
            b'\r' => out.write_all(b"\\r")?,
            b'\t' => out.write_all(b"\\t")?,
            b' ' if mode == Escape::KeepSpace => out.write_all(b" ")?,
            0x21..=0x7e => out.write_all(&[c])?,
            _ => write!(out, "\\x{c:02x}")?,
        }
    }
    Ok(())
}

/// `cfs objects` / `cfs missing-objects`, images by file, `-` or name in `repo`.
pub fn objects(
    images: &[PathBuf],
    missing_in: Option<&Path>,
    repo: Option<&Path>,
) -> anyhow::Result<()> {
    objects_with(images, |p| load_tree(p, repo), missing_in)
}

/// Backing objects of all images, sorted, each once; with `missing_in`, only
/// those with nothing at that path under the object directory.
fn objects_with(
    images: &[PathBuf],
    load: impl Fn(&Path) -> anyhow::Result<Tree>,
    missing_in: Option<&Path>,
) -> anyhow::Result<()> {
    // A repository's objects are in its objects/ directory.
    let missing_in = missing_in.map(cfs_repo::Repository::object_dir_of);
    let missing_in = missing_in.as_deref();
    if let Some(dir) = missing_in {
        if !dir.is_dir() {
            bail!("Can't open basedir `{}`", dir.display());
        }
    }
    let mut objects = BTreeSet::new();
    for p in images {
        let tree = load(p)?;
        for (_, node) in tree.nodes() {
            let Some(payload) = &node.payload else {
                continue;
            };
            if node.file_type() != Some(FileType::Regular) {
                continue;
            }
            if let Some(dir) = missing_in {
                let rel = payload.strip_prefix(b"/").unwrap_or(payload);
                let rel =
                    Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(rel));
                if std::fs::metadata(dir.join(rel)).is_ok() {
                    continue;
                }
            }
            objects.insert(payload.clone());
        }
    }
    let mut out = BufWriter::new(io::stdout().lock());
    for o in objects {
        out.write_all(&o)?;
        out.write_all(b"\n")?;
    }
    out.flush().context("could not write to stdout")
}

/// Prints the fs-verity digest of each file: alone (`measure-file`) or as
/// `DIGEST  PATH` (`cfs digest`).
pub fn measure(files: &[PathBuf], with_path: bool) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    for path in files {
        let digest = measure_file(path)
            .with_context(|| format!("failed to measure '{}'", path.display()))?;
        if with_path {
            writeln!(out, "{digest}  {}", path.display())?;
        } else {
            writeln!(out, "{digest}")?;
        }
    }
    Ok(())
}

/// Streams one file (`-`: standard input) through the fs-verity hasher.
fn measure_file(path: &Path) -> io::Result<cfs_format::Digest> {
    if path == Path::new("-") {
        return digest_reader(io::stdin().lock());
    }
    // Opened without blocking, and refused unless a regular file: a FIFO
    // would block the open, a device might never end.
    digest_reader(cfs_repo::input::open_regular(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(b: &[u8], m: Escape) -> String {
        let mut v = Vec::new();
        write_escaped(&mut v, b, m).unwrap();
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn escaping_matches_c() {
        assert_eq!(esc(b"a b\\c\n\t\r", Escape::KeepSpace), "a b\\\\c\\n\\t\\r");
        assert_eq!(esc(b"a b=\x7f\xff", Escape::Standard), "a\\x20b=\\x7f\\xff");
    }
}
