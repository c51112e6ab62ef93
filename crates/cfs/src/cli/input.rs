//! What an IMAGE argument names, the one rule every command that reads an
//! image shares (`dump`, `ls`, `objects`, `missing-objects`, `mount`,
//! `fuse-serve`, `create-dumpfile`): `-` is standard input; anything spelled
//! as a path (a `/` in it, or a leading `.`) is an image file; an image name
//! or id is looked up in the repository (`--repo`, `CFS_REPO` or the default
//! one), **whatever the current directory holds**; anything else is a file
//! (that then can't be read, and the error says so).
//!
//! The spelling alone decides, never what exists: if a file could shadow a
//! name, root running `cfs mount app /mnt` in a directory others can write
//! (`/tmp`) would mount the image a plain user left there as `app` (setuid
//! files, devices and all) instead of the repository's. A file in the
//! current directory is `./NAME`; when a name is not found and such a file
//! exists, the error says so.

use anyhow::Context;
use cfs_format::reader::Image;
use cfs_format::Tree;
use cfs_repo::input::{self, MAX_IMAGE_BYTES};
use std::path::{Path, PathBuf};

/// An IMAGE argument, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageArg {
    /// `-`: the image's bytes on standard input.
    Stdin,
    /// An image file.
    File(PathBuf),
    /// A name or an image id in the repository.
    Name(String),
}

impl ImageArg {
    /// Classifies `arg` (see the module doc).
    pub fn parse(arg: &Path) -> ImageArg {
        if arg == Path::new("-") {
            return ImageArg::Stdin;
        }
        match arg.to_str() {
            Some(t) if !t.contains('/') && !t.starts_with('.') && is_name_or_id(t) => {
                ImageArg::Name(t.to_owned())
            }
            _ => ImageArg::File(arg.to_path_buf()),
        }
    }
}

/// `err`, met looking up the image name `name`, told (when the current
/// directory has an entry of that name, which the user may have meant)
/// how to name that file instead.
pub fn with_file_hint(err: anyhow::Error, name: &str) -> anyhow::Error {
    if std::fs::symlink_metadata(name).is_ok() {
        err.context(format!(
            "{name:?} is an image name; for the file {name} here, write ./{name}"
        ))
    } else {
        err
    }
}

/// True for a valid image name or a 64-hex image id.
fn is_name_or_id(s: &str) -> bool {
    cfs_repo::repository::check_name(s).is_ok()
        || cfs_format::Digest::from_hex(s.as_bytes()).is_ok()
}

/// Reads an image argument's bytes: the file, standard input, or the
/// image `NAME` in the repository `repo` (the default one when `None`).
pub fn read_image(arg: &Path, repo: Option<&Path>) -> anyhow::Result<(String, Vec<u8>)> {
    match ImageArg::parse(arg) {
        ImageArg::Stdin | ImageArg::File(_) => read_file(arg),
        ImageArg::Name(name) => {
            let path = super::repo::repo_path(repo)?;
            let r = super::repo::open_repo(&path)
                .with_context(|| {
                    format!("the repository to look up image {name:?} in can't be opened")
                })
                .map_err(|e| with_file_hint(e, &name))?;
            let (id, mut file) = r
                .open_image(&name)
                .map_err(|e| with_file_hint(e.into(), &name))?;
            let bytes = input::read_file_capped(&mut file, MAX_IMAGE_BYTES)
                .with_context(|| format!("could not read image {id} ({name})"))?;
            Ok((name, bytes))
        }
    }
}

/// Reads an image file, or standard input for `-`: what it is called in
/// messages (`stdin` or the path), and its bytes. Only a regular file is
/// read (a FIFO or device is refused, without blocking on it), and at most
/// [`MAX_IMAGE_BYTES`]: a larger file is refused by its size before it is
/// read, standard input once it passes the cap.
pub fn read_file(path: &Path) -> anyhow::Result<(String, Vec<u8>)> {
    if path == Path::new("-") {
        let bytes = input::read_capped(&mut std::io::stdin().lock(), None, MAX_IMAGE_BYTES)
            .context("could not read stdin")?;
        return Ok(("stdin".into(), bytes));
    }
    let bytes = input::open_regular(path)
        .and_then(|mut f| input::read_file_capped(&mut f, MAX_IMAGE_BYTES))
        .with_context(|| format!("could not read {}", path.display()))?;
    Ok((path.display().to_string(), bytes))
}

/// [`read_image`], read into a tree.
pub fn load_tree(arg: &Path, repo: Option<&Path>) -> anyhow::Result<Tree> {
    let (shown, bytes) = read_image(arg, repo)?;
    Image::open(bytes)
        .and_then(|img| img.to_tree())
        .with_context(|| format!("failed to load {shown}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_arguments_by_spelling() {
        let id = "a".repeat(64);
        let table: &[(&str, ImageArg)] = &[
            ("-", ImageArg::Stdin),
            ("doc", ImageArg::Name("doc".into())),
            (
                "oci:busybox:latest",
                ImageArg::Name("oci:busybox:latest".into()),
            ),
            (&id, ImageArg::Name(id.clone())),
            ("./doc", ImageArg::File("./doc".into())),
            ("/no/such/image", ImageArg::File("/no/such/image".into())),
            ("dir/image.cfs", ImageArg::File("dir/image.cfs".into())),
            (".hidden", ImageArg::File(".hidden".into())),
            ("-dash", ImageArg::File("-dash".into())),
            ("a b", ImageArg::File("a b".into())),
            ("/", ImageArg::File("/".into())),
            // What exists doesn't matter: `src` is this crate's directory
            // when the tests run, and still a name.
            ("src", ImageArg::Name("src".into())),
            ("./src", ImageArg::File("./src".into())),
        ];
        for (arg, want) in table {
            assert_eq!(&ImageArg::parse(Path::new(arg)), want, "{arg}");
        }
    }
}
