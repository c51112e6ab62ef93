//! A read-only FUSE server over a composefs image, read in place.
//!
//! Serving starts once the superblock is checked ([`Image::open`]): there is
//! no tree walk, no inode numbering pass, no copy of the image beyond the
//! one mapping or a pread block cache (see [`source`]). FUSE inode numbers are EROFS nids
//! ([`attr`]); every request reads the inode it names, bounds-checked, from
//! the shared image bytes, on several worker threads each with its own
//! cloned `/dev/fuse` fd.
//!
//! **The server only serves a connection it is handed** ([`serve_fd`]): a
//! `/dev/fuse` fd already mounted by its caller (`cfs-mount` is the only
//! code that mounts and unmounts), the open image file, and the open objects
//! directory. It opens no path of its own, so whatever the mount covers
//! (even the image's own directory) can't get in its way, and it never
//! mounts or unmounts anything: it returns when its connection ends, that
//! is when the mount has gone away, whoever removed it.
//!
//! Two modes ([`ServeMode`]): **standalone** serves contents too (inline
//! from the image, external files from the object store, verified against
//! their fs-verity digest, handed to the kernel with FUSE passthrough when
//! privileged) and shows the tree as the kernel overlay mount would;
//! **overlay-lower** serves metadata only, renamed for an overlayfs mounted
//! with `userxattr` that reads contents from the object store itself.
//!
//! **The transport is its own** ([`FuseTransport`]): the FUSE protocol
//! ([`abi`] wire structs, [`request`] parsing, [`reply`] encoding) is
//! spoken here, over `/dev/fuse` worker threads that spin briefly for the
//! next request before they sleep (`dev`), or over FUSE io_uring queues, one
//! per CPU with a thread bound to it, when the kernel offers them (`uring`);
//! `session` does the INIT handshake and picks.
//!
//! Modules: [`server`] (requests → answers), [`mode`] (presentation
//! rules), [`objects`] (safe object opens and verification), [`attr`]
//! (inode → attributes), [`errors`] (errno mapping), [`source`] (image
//! bytes), [`caller`] (who may see `trusted.*` names), [`sys`] (every
//! `unsafe`: the mapping, the `/dev/fuse` ioctls, io_uring buffers).

pub mod abi;
pub mod attr;
pub mod caller;
mod dev;
pub mod errors;
pub mod mode;
pub mod objects;
pub mod reply;
pub mod request;
pub mod server;
mod session;
pub mod source;
pub mod sys;
mod uring;

pub use mode::ServeMode;
pub use objects::Verity;

use cfs_format::reader::{Image, ReadError};
use objects::ObjectStore;
use source::ImageBytes;
use std::ffi::OsString;
use std::fs::File;
use std::num::NonZeroUsize;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The longest spin [`Tuning::fuse_spin_us`] accepts: 10 ms.
pub const MAX_SPIN_US: u32 = 10_000;

/// The default of [`Tuning::fuse_spin_us`]: no spin. Measured on the
/// project's 2-CPU machine (bench/README.md, "Rootless FUSE speed"), a 50 µs
/// spin doubled the cold fuse+overlay walk of `/usr` (8.5 s against 4.7 s)
/// and the GETXATTR round trip with 2 workers, and saved nothing on an idle
/// machine: the spinner takes the CPU the requester needs.
pub const DEFAULT_SPIN_US: u32 = 0;

/// What a user may tune about a FUSE server. One struct for the public
/// commands (flattened into `cfs mount` and `cfs fuse-serve`), the mount
/// configuration and the server's own command line, so that a new tuning
/// knob is a field here (and its line in [`Tuning::to_args`]) and the code
/// that uses it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct Tuning {
    /// The FUSE server's worker threads (default: one per CPU, at most 8).
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub threads: Option<NonZeroUsize>,
    /// Read file contents in the FUSE server even where the kernel could
    /// read them directly (FUSE passthrough, used when serving with
    /// CAP_SYS_ADMIN in the initial user namespace).
    #[cfg_attr(feature = "clap", arg(long))]
    pub no_passthrough: bool,
    /// How the FUSE server takes requests: `uring` (FUSE over io_uring, one
    /// queue per CPU; fails when the kernel doesn't offer it), `dev`
    /// (reading `/dev/fuse`), or `auto` (io_uring when the kernel offers it:
    /// root enables it with `echo Y > /sys/module/fuse/parameters/enable_uring`).
    #[cfg_attr(
        feature = "clap",
        arg(long, value_enum, default_value_t, env = "CFS_FUSE_TRANSPORT")
    )]
    pub fuse_transport: FuseTransport,
    /// How long, at most, a `/dev/fuse` worker that has just answered keeps
    /// polling for the next request before it sleeps, in microseconds
    /// (default 0: never). Adaptive: it spins only while spinning finds
    /// requests, one worker at a time. At most 10000 (10 ms): a spin is for
    /// the gap between two requests of one burst, not for an idle server.
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            value_name = "MICROSECONDS",
            env = "CFS_FUSE_SPIN_US",
            value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_SPIN_US))
        )
    )]
    pub fuse_spin_us: Option<u32>,
}

/// How a FUSE server takes requests from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum FuseTransport {
    /// io_uring when the kernel offers it, else `/dev/fuse`.
    #[default]
    Auto,
    /// Worker threads reading `/dev/fuse`.
    Dev,
    /// FUSE over io_uring, or fail.
    Uring,
}

impl FuseTransport {
    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            FuseTransport::Auto => "auto",
            FuseTransport::Dev => "dev",
            FuseTransport::Uring => "uring",
        }
    }
}

impl Tuning {
    /// The options as arguments that parse back to them.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        if let Some(n) = self.threads {
            a.push("--threads".into());
            a.push(n.to_string().into());
        }
        if self.no_passthrough {
            a.push("--no-passthrough".into());
        }
        a.push("--fuse-transport".into());
        a.push(self.fuse_transport.as_str().into());
        if let Some(us) = self.fuse_spin_us {
            a.push("--fuse-spin-us".into());
            a.push(us.to_string().into());
        }
        a
    }

    /// The longest a `/dev/fuse` worker spins for the next request (at most
    /// [`MAX_SPIN_US`], however the value was made).
    pub fn spin(&self) -> std::time::Duration {
        let us = self
            .fuse_spin_us
            .unwrap_or(DEFAULT_SPIN_US)
            .min(MAX_SPIN_US);
        std::time::Duration::from_micros(us.into())
    }

    /// The worker threads to run: as asked, else one per CPU, at most 8
    /// (past that, requests wait on the kernel's queue, not on threads).
    pub fn worker_threads(&self) -> NonZeroUsize {
        self.threads.unwrap_or_else(|| {
            let cpus = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
            NonZeroUsize::new(cpus.clamp(1, 8)).unwrap_or(NonZeroUsize::MIN)
        })
    }
}

/// How to serve: the server's own options, also its command line (`cfs
/// __serve` parses them with clap, sharing the value types with the public
/// commands; [`ServeOptions::to_args`] writes them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct ServeOptions {
    /// What to serve.
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t))]
    pub mode: ServeMode,
    /// When to check object contents against the image's digests.
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t))]
    pub verity: Verity,
    /// What the user tuned.
    #[cfg_attr(feature = "clap", command(flatten))]
    pub tuning: Tuning,
    /// The server may hand opened objects to the kernel (FUSE
    /// passthrough): set by the mounting process from its one privilege
    /// probe (passthrough needs `CAP_SYS_ADMIN` in the initial user
    /// namespace); the server doesn't probe again. Used unless
    /// `--no-passthrough`; if the kernel refuses anyway, reads fall back to
    /// `pread`.
    #[cfg_attr(feature = "clap", arg(long))]
    pub may_passthrough: bool,
}

impl std::fmt::Display for ServeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Verity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ServeOptions {
    /// The options as arguments that parse back to them.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "--mode".into(),
            self.mode.as_str().into(),
            "--verity".into(),
            self.verity.as_str().into(),
        ];
        a.extend(self.tuning.to_args());
        if self.may_passthrough {
            a.push("--may-passthrough".into());
        }
        a
    }

    /// Whether to use FUSE passthrough: allowed, and not declined.
    pub fn passthrough(&self) -> bool {
        self.may_passthrough && !self.tuning.no_passthrough
    }
}

/// What a server is handed: everything it reads, already open.
#[derive(Debug)]
pub struct ServeFds {
    /// The mounted `/dev/fuse` connection (`fsopen("fuse")` with `fd=N`,
    /// or what `fusermount3` sent back).
    pub dev: OwnedFd,
    /// The image file: the very file that was checked (and, with a digest,
    /// measured). Mapped only where the kernel keeps it from changing.
    pub image: File,
    /// The objects directory (`ab/cdef…`), for standalone mode.
    pub objects: Option<OwnedFd>,
}

/// Why serving could not start or ended with an error. Messages name the
/// mount and the step; the cause is the error's `source()`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeFailed {
    /// The image file could not be read.
    #[error("could not read the image for {mount}")]
    ReadImage {
        /// The mount point the image was to be served at.
        mount: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The image's headers are bad.
    #[error("bad image for {mount}")]
    Image {
        /// The mount point.
        mount: PathBuf,
        /// The error.
        source: ReadError,
    },
    /// FUSE over io_uring was asked for and can't be had.
    #[error("FUSE over io_uring is not available for {mount}: {why}")]
    UringUnavailable {
        /// The mount point.
        mount: PathBuf,
        /// Why not.
        why: String,
    },
    /// The FUSE session failed.
    #[error("could not {op} {mount}")]
    Session {
        /// What was being done.
        op: &'static str,
        /// The mount point.
        mount: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Builds the filesystem over the handed-over image and object store.
fn filesystem(
    opts: &ServeOptions,
    image: File,
    objects: Option<OwnedFd>,
    dev: Arc<OwnedFd>,
    mount: &Path,
) -> Result<server::CfsFs, ServeFailed> {
    let bytes = ImageBytes::open(image).map_err(|source| ServeFailed::ReadImage {
        mount: mount.to_path_buf(),
        source,
    })?;
    let image = Image::open(bytes).map_err(|source| ServeFailed::Image {
        mount: mount.to_path_buf(),
        source,
    })?;
    let objects = match opts.mode {
        ServeMode::Standalone => objects.map(|dir| ObjectStore::new(dir, opts.verity)),
        ServeMode::OverlayLower => None,
    };
    Ok(server::CfsFs::new(
        image,
        opts.mode,
        objects,
        opts.passthrough(),
        dev,
    ))
}

/// Serves the image on the handed-over connection until it ends (the mount
/// went away). `mount` only names the mount in errors. `ready` is called once
/// the kernel handshake (FUSE_INIT) is answered, when the mount answers
/// requests. Nothing is mounted, unmounted or opened by path here (but
/// `/dev/fuse`, to give each worker its own fd on the connection).
pub fn serve_fd(
    opts: &ServeOptions,
    fds: ServeFds,
    mount: &Path,
    ready: impl FnOnce(),
) -> Result<(), ServeFailed> {
    let dev = Arc::new(fds.dev);
    let fs = filesystem(opts, fds.image, fds.objects, dev.clone(), mount)?;
    session::serve(fs, dev, &opts.tuning, mount, ready)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spin_is_bounded_however_it_was_asked_for() {
        let spin = |us| {
            Tuning {
                fuse_spin_us: us,
                ..Tuning::default()
            }
            .spin()
        };
        assert_eq!(
            spin(None),
            std::time::Duration::from_micros(DEFAULT_SPIN_US.into())
        );
        assert_eq!(spin(Some(50)), std::time::Duration::from_micros(50));
        assert_eq!(spin(Some(u32::MAX)), std::time::Duration::from_millis(10));
    }
}
