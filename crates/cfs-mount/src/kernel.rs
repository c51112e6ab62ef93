//! Mode 1, the kernel mount (CAP_SYS_ADMIN in the initial user namespace).
//!
//! 1. The image is opened once, its headers checked, and (with `digest=`) its
//!    fs-verity digest measured; the same open file is what erofs mounts,
//!    through `/proc/self/fd/N`, so the file measured is the file mounted.
//! 2. erofs mounts it straight from the file (Linux 6.12+); a kernel without
//!    file-backed erofs answers ENOTBLK, and only then is a loop device used.
//!    The erofs mount stays detached: an fd, never in any mount table.
//! 3. overlayfs stacks it (`lowerdir+=/proc/self/fd/M`) over the object
//!    directories (`datadir+`), and the overlay alone is attached at the mount
//!    point. When the erofs fd closes, the overlay holds the only reference,
//!    so unmounting the overlay frees everything.
//!
//! Every resource is an owned fd: an error at any step drops them, and a
//! detached mount or autoclear loop device vanishes with its last fd.

use crate::error::MountError;
use crate::options::{self, ErofsBacking, MountConfig};
use crate::syscalls::{self, FsContext, Measured};
use cfs_format::fsverity::digest_reader;
use cfs_format::reader::{HeaderError, Headers, OpenOptions, HEADERS_LEN};
use cfs_format::Digest;
use rustix::fd::{AsFd, OwnedFd};
use rustix::io::Errno;
use rustix::mount::MountAttrFlags;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Mounts the image `cfg` describes at `target` with erofs + overlayfs.
pub fn mount(cfg: &MountConfig, target: &Path) -> Result<(), MountError> {
    cfg.validate().map_err(MountError::Config)?;
    // overlayfs keeps the layer strings for /proc/self/mountinfo: make them absolute.
    let cfg = &absolute_paths(cfg)?;
    let image = File::open(&cfg.image).map_err(|source| MountError::Io {
        op: "open image",
        path: cfg.image.clone(),
        source,
    })?;
    let has_acl = check_image(&image, &cfg.image)?;
    if let Some(expected) = cfg.expected_digest {
        check_digest(&image, &cfg.image, expected)?;
    }
    check_basedirs(cfg)?;
    let (store_verity, why) = probe_store_verity(&cfg.basedirs[0], &image)?;
    let verity = cfg
        .verity
        .resolve(store_verity)
        .map_err(|_| MountError::NoVerity {
            store: cfg.basedirs[0].clone(),
            why,
        })?;

    let erofs_mnt = mount_erofs(&image, &cfg.image, cfg.backing, has_acl)?;
    let lower = syscalls::fd_path(erofs_mnt.as_fd());
    let overlay_err = |source| MountError::Overlay {
        path: cfg.image.clone(),
        source,
    };
    let ctx = FsContext::open("overlay").map_err(overlay_err)?;
    for p in options::overlay_params(&lower, cfg, verity) {
        ctx.set(&p).map_err(overlay_err)?;
    }
    let attrs = if cfg.read_only {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    } else {
        MountAttrFlags::empty()
    };
    let overlay = ctx.create_and_mount(attrs).map_err(overlay_err)?;
    drop(erofs_mnt);
    syscalls::attach(overlay.as_fd(), target).map_err(|source| MountError::Attach {
        path: target.to_path_buf(),
        source,
    })
}

/// What every mode checks before mounting: the options, the image's headers
/// (and `digest=`), the object directories. Returns the configuration with
/// absolute paths, as the FUSE modes hand them to a server.
pub(crate) fn prepare(cfg: &MountConfig) -> Result<MountConfig, MountError> {
    cfg.validate().map_err(MountError::Config)?;
    let mut cfg = absolute_paths(cfg)?;
    cfg.image = std::path::absolute(&cfg.image).map_err(|source| MountError::Io {
        op: "make absolute",
        path: cfg.image.clone(),
        source,
    })?;
    let image = File::open(&cfg.image).map_err(|source| MountError::Io {
        op: "open image",
        path: cfg.image.clone(),
        source,
    })?;
    check_image(&image, &cfg.image)?;
    if let Some(expected) = cfg.expected_digest {
        check_digest(&image, &cfg.image, expected)?;
    }
    check_basedirs(&cfg)?;
    Ok(cfg)
}

fn check_basedirs(cfg: &MountConfig) -> Result<(), MountError> {
    for dir in &cfg.basedirs {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(MountError::MissingBasedir {
                    path: dir.clone(),
                    source: None,
                })
            }
            Err(e) => {
                return Err(MountError::MissingBasedir {
                    path: dir.clone(),
                    source: Some(e),
                })
            }
        }
    }
    Ok(())
}

fn absolute_paths(cfg: &MountConfig) -> Result<MountConfig, MountError> {
    let abs = |p: &Path| {
        std::path::absolute(p).map_err(|source| MountError::Io {
            op: "make absolute",
            path: p.to_path_buf(),
            source,
        })
    };
    let mut out = cfg.clone();
    for d in &mut out.basedirs {
        *d = abs(d)?;
    }
    if let Some(up) = &mut out.upper {
        up.upperdir = abs(&up.upperdir)?;
        up.workdir = abs(&up.workdir)?;
    }
    Ok(out)
}

/// Checks the composefs header and EROFS superblock, and that the file holds
/// every block the superblock counts. Returns whether the image has ACLs.
fn check_image(file: &File, path: &Path) -> Result<bool, MountError> {
    let bad = |e: HeaderError| MountError::BadImage {
        path: path.to_path_buf(),
        what: e.to_string(),
    };
    let io = |source| MountError::Io {
        op: "read image",
        path: path.to_path_buf(),
        source,
    };
    let len = file.metadata().map_err(io)?.len();
    // At most HEADERS_LEN, so it fits a usize.
    let mut start = vec![0u8; len.min(HEADERS_LEN as u64) as usize];
    file.read_exact_at(&mut start, 0).map_err(io)?;
    let headers = Headers::check(&start, len, OpenOptions::new()).map_err(bad)?;
    headers.check_complete(len).map_err(bad)?;
    Ok(headers.has_acl())
}

/// `digest=`: the kernel measures where the file has fs-verity; elsewhere
/// (as on kernels without it) the digest is computed here, from the same fd.
fn check_digest(file: &File, path: &Path, expected: Digest) -> Result<(), MountError> {
    let io = |source: std::io::Error| MountError::Io {
        op: "measure",
        path: path.to_path_buf(),
        source,
    };
    let (found, how) = match syscalls::measure_verity(file.as_fd()).map_err(|e| io(e.into()))? {
        Measured::Sha256(d) => (d, "measured by the kernel"),
        _ => (digest_reader(file).map_err(io)?, "computed in userspace"),
    };
    if found != expected {
        return Err(MountError::DigestMismatch {
            path: path.to_path_buf(),
            expected,
            found,
            how,
        });
    }
    Ok(())
}

/// Whether the object store can back `verity=require`, and if not, why.
/// One object stands for all (stores enable fs-verity on every object or on
/// none); a store with no objects is judged by the image file's filesystem.
fn probe_store_verity(store: &Path, image: &File) -> Result<(bool, String), MountError> {
    let (what, measured) = match first_object(store) {
        Some(obj) => {
            let f = File::open(&obj).map_err(|source| MountError::Io {
                op: "open object",
                path: obj.clone(),
                source,
            })?;
            (obj, syscalls::measure_verity(f.as_fd()))
        }
        None => (store.to_path_buf(), syscalls::measure_verity(image.as_fd())),
    };
    Ok(match measured {
        Ok(Measured::Sha256(_) | Measured::OtherAlgorithm) => (true, String::new()),
        Ok(Measured::NotEnabled) => (
            false,
            format!("{} has no fs-verity enabled", what.display()),
        ),
        Ok(Measured::Unsupported) => (
            false,
            format!(
                "fs-verity is not supported for {} by this kernel or filesystem",
                what.display()
            ),
        ),
        Err(e) => (false, format!("measuring {}: {e}", what.display())),
    })
}

/// Some object `XX/REST` in a store, if it has any.
fn first_object(store: &Path) -> Option<PathBuf> {
    for sub in std::fs::read_dir(store).ok()?.flatten() {
        let name = sub.file_name();
        if name.len() != 2 || !sub.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        for obj in std::fs::read_dir(sub.path()).ok()?.flatten() {
            if obj.file_type().is_ok_and(|t| t.is_file()) {
                return Some(obj.path());
            }
        }
    }
    None
}

/// A detached, read-only erofs mount of the image.
fn mount_erofs(
    image: &File,
    path: &Path,
    backing: ErofsBacking,
    has_acl: bool,
) -> Result<OwnedFd, MountError> {
    let err = |source| MountError::Erofs {
        path: path.to_path_buf(),
        source,
    };
    if backing == ErofsBacking::Auto {
        match erofs_from(&syscalls::fd_path(image.as_fd()), has_acl) {
            Err(e) if e.errno == Errno::NOTBLK => {} // no file-backed erofs: use a loop device
            r => return r.map_err(err),
        }
    }
    let dev = syscalls::loop_attach(image.as_fd(), path).map_err(err)?;
    // On success the superblock holds the device; on failure dropping `dev`
    // closes its last fd and autoclear frees it.
    erofs_from(dev.path.as_os_str(), has_acl).map_err(err)
}

fn erofs_from(source: &std::ffi::OsStr, has_acl: bool) -> Result<OwnedFd, syscalls::KernelError> {
    let ctx = FsContext::open("erofs")?;
    for p in options::erofs_params(source, has_acl) {
        ctx.set(&p)?;
    }
    ctx.create_and_mount(MountAttrFlags::MOUNT_ATTR_RDONLY)
}
