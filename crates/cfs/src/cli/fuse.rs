//! `cfs fuse-serve`: mount an image with the cfs FUSE server alone, as
//! `cfs mount --fuse=standalone` does, with a choice of what to show
//! (`--mode overlay-lower` mounts the metadata view an overlay with
//! `userxattr` expects). A thin entry to the one mount path: the FUSE mount
//! is made by `cfs-mount` (`fsopen("fuse")` with privilege, `fusermount3`
//! without), the server is handed the open image and objects, and
//! `cfs unmount` (or `umount`) ends it.

use super::mount::{locate_image, mount_config, ServerFlags};
use anyhow::Context;
use cfs_mount::{FuseChoice, MountConfig, ServeMode, Verity};
use clap::Args;
use std::path::{Path, PathBuf};

/// Arguments of `cfs fuse-serve`.
#[derive(Args, Debug)]
pub struct FuseServeArgs {
    /// The image: a ref name or an image id in the repository, or a file
    /// spelled as a path (`./image.cfs`; a bare word is always a name).
    pub image: String,
    /// Where to mount it.
    pub mountpoint: PathBuf,
    /// Object directory (`ab/cdef…`), instead of `REPO/objects`.
    #[arg(long, value_name = "DIR")]
    pub basedir: Option<PathBuf>,
    /// What to serve.
    #[arg(long, value_enum, default_value_t)]
    pub mode: ServeMode,
    /// When to check file contents against the image's fs-verity digests
    /// (the values of `cfs mount --verity`; the old spellings `auto` and
    /// `none` still work, hidden).
    #[arg(long, value_enum, default_value_t)]
    pub verity: Verity,
    /// The image's expected fs-verity digest (64 hex).
    #[arg(long, value_name = "HEX")]
    pub digest: Option<cfs_format::Digest>,
    /// Mount even when objects the image names are missing (opening their
    /// files then fails with EIO).
    #[arg(long)]
    pub no_check_objects: bool,
    #[command(flatten)]
    pub server: ServerFlags,
}

/// Runs `cfs fuse-serve`. `repo` is the global `--repo`: objects in
/// `REPO/objects`, images by name in `REPO/images`.
pub fn run(args: &FuseServeArgs, repo: Option<&Path>) -> anyhow::Result<()> {
    let (image, basedirs, pending) = locate_image(&args.image, repo)
        .with_context(|| format!("could not find image {}", args.image))?;
    let mut cfg = MountConfig {
        basedirs: args.basedir.clone().map_or(basedirs, |b| vec![b]),
        verity: args.verity,
        expected_digest: args.digest,
        serve_mode: args.mode,
        check_objects: !args.no_check_objects,
        ..MountConfig::new(image, PathBuf::new())
    };
    args.server.apply(&mut cfg);
    mount_config(
        &cfg,
        &args.mountpoint,
        FuseChoice::Standalone,
        &args.server,
        false,
        pending,
    )
}
