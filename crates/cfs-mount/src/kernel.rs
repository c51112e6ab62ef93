//! Mode 1, the kernel mount (CAP_SYS_ADMIN in the initial user namespace).
//!
//! 1. The image is opened once, its headers checked, and (with `digest=`) its
//!    fs-verity digest measured ([`crate::image`]); the same open file (or
//!    its sealed copy) is what erofs mounts, through `/proc/self/fd/N`, so
//!    the bytes measured are the bytes mounted.
//! 2. erofs mounts it through a loop device (read-only, autoclear, buffered:
//!    its reads of the image go through the image file's page cache, with
//!    readahead, which file-backed erofs doesn't do for metadata), or
//!    straight from the file (Linux 6.12+) where no loop device can be had
//!    or [`ErofsBacking::File`] asks for it. The erofs mount stays detached:
//!    an fd, never in any mount table.
//! 3. overlayfs stacks it (`lowerdir+=/proc/self/fd/M`) over the object
//!    directories (`datadir+`), and the overlay alone is attached at the mount
//!    point. When the erofs fd closes, the overlay holds the only reference,
//!    so unmounting the overlay frees everything.
//!
//! Every resource is an owned fd: an error at any step drops them, and a
//! detached mount or autoclear loop device vanishes with its last fd.

use crate::error::MountError;
use crate::identity::MountTarget;
use crate::image::{CheckedImage, Frozen};
use crate::options::{self, ErofsBacking, MountConfig};
use crate::sys::{self, FsContext, Measured};
use rustix::fd::{AsFd, OwnedFd};
use rustix::io::Errno;
use rustix::mount::MountAttrFlags;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Mounts `image` (opened and checked by the caller) with the options of
/// `cfg` at `target` with erofs + overlayfs. Returns the attached overlay.
pub(crate) fn mount(
    cfg: &MountConfig,
    image: &CheckedImage,
    target: &MountTarget,
) -> Result<OwnedFd, MountError> {
    check_basedirs(cfg)?;
    let userns = cfg.idmap.as_deref().map(open_userns).transpose()?;
    let (store_verity, why) = probe_store_verity(&cfg.basedirs[0], &image.file)?;
    let verity =
        options::overlay_verity(cfg.verity, store_verity).map_err(|_| MountError::NoVerity {
            store: cfg.basedirs[0].clone(),
            why,
        })?;
    // A sealed copy lives in shmem, which file-backed erofs can't read.
    let backing = match image.frozen {
        Frozen::SealedCopy => ErofsBacking::Loop,
        _ => cfg.backing,
    };
    let erofs_mnt = mount_erofs(&image.file, &image.path, backing, image.has_acl)?;
    if let Some(userns) = &userns {
        // C idmaps the erofs layer (lcfs-mount.c): owners come from it.
        sys::set_idmap(erofs_mnt.as_fd(), userns.as_fd()).map_err(|source| MountError::Erofs {
            path: image.path.clone(),
            source,
        })?;
    }
    let lower = sys::fd_path(erofs_mnt.as_fd());
    let overlay_err = |source| MountError::Overlay {
        path: image.path.clone(),
        source,
    };
    let ctx = FsContext::open("overlay").map_err(overlay_err)?;
    crate::set_overlay_params(
        &ctx,
        options::overlay_params(&lower, cfg, verity),
        overlay_err,
    )?;
    let attrs = if cfg.read_only {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    } else {
        MountAttrFlags::empty()
    };
    let overlay = ctx.create_and_mount(attrs).map_err(overlay_err)?;
    drop(erofs_mnt);
    sys::attach_to_fd(overlay.as_fd(), target.fd.as_fd()).map_err(|source| MountError::Attach {
        path: target.path.clone(),
        source,
    })?;
    Ok(overlay)
}

/// Opens the user namespace an idmapped mount goes through.
fn open_userns(path: &Path) -> Result<OwnedFd, MountError> {
    rustix::fs::open(
        path,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::NOCTTY,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| MountError::Io {
        op: "open the user namespace for idmap",
        path: path.to_path_buf(),
        source: e.into(),
    })
}

/// Each object directory must exist and be a directory.
pub(crate) fn check_basedirs(cfg: &MountConfig) -> Result<(), MountError> {
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

/// Whether the object store can back `verity=require`, and if not, why.
/// One object stands for all (stores enable fs-verity on every object or on
/// none); a store with no objects is judged by the image file's filesystem,
/// and one whose object can't be opened is taken to have none.
pub(crate) fn probe_store_verity(store: &Path, image: &File) -> Result<(bool, String), MountError> {
    let (what, measured) = match first_object(store) {
        Some(obj) => match File::open(&obj) {
            Ok(f) => (obj, sys::measure_verity(f.as_fd())),
            // Not this process's to read (a service client's store may
            // not be): it can't vouch for fs-verity.
            Err(e) => return Ok((false, format!("could not open {}: {e}", obj.display()))),
        },
        None => (store.to_path_buf(), sys::measure_verity(image.as_fd())),
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

/// Some object of a store, if it has any: a regular file whose path in the
/// store is an object path (`Digest::from_object_path_with_suffix`, the one
/// home of that rule, with the suffixes stores may use).
fn first_object(store: &Path) -> Option<PathBuf> {
    for sub in std::fs::read_dir(store).ok()?.flatten() {
        if !sub.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        for obj in std::fs::read_dir(sub.path()).ok()?.flatten() {
            let rel = Path::new(&sub.file_name()).join(obj.file_name());
            let named = rel
                .to_str()
                .and_then(|r| cfs_format::Digest::from_object_path_with_suffix(r.as_bytes()))
                .is_some();
            if named && obj.file_type().is_ok_and(|t| t.is_file()) {
                return Some(obj.path());
            }
        }
    }
    None
}

/// A detached, read-only erofs mount of the image, attached as `backing`
/// says.
pub(crate) fn mount_erofs(
    image: &File,
    path: &Path,
    backing: ErofsBacking,
    has_acl: bool,
) -> Result<OwnedFd, MountError> {
    let err = |source| MountError::Erofs {
        path: path.to_path_buf(),
        source,
    };
    // The device by its fd, not its name in /dev. On success the superblock
    // holds it; on failure dropping it closes its last fd and autoclear
    // frees it.
    let from_loop =
        |dev: sys::LoopDevice| erofs_from(&sys::fd_path(dev.fd.as_fd()), has_acl).map_err(err);
    let from_file = || erofs_from(&sys::fd_path(image.as_fd()), has_acl);
    match backing {
        ErofsBacking::Loop => from_loop(sys::loop_attach(image.as_fd(), path).map_err(err)?),
        ErofsBacking::File => match from_file() {
            // No file-backed erofs here: a loop device after all.
            Err(e) if e.errno == Errno::NOTBLK => {
                from_loop(sys::loop_attach(image.as_fd(), path).map_err(err)?)
            }
            r => r.map_err(err),
        },
        // Without a loop device (none free, no /dev/loop-control in a
        // container), the file; a kernel that can't mount files either says
        // why a loop device was wanted.
        ErofsBacking::Auto => match sys::loop_attach(image.as_fd(), path) {
            Ok(dev) => from_loop(dev),
            Err(loop_err) => match from_file() {
                Err(e) if e.errno == Errno::NOTBLK => Err(err(loop_err)),
                r => r.map_err(err),
            },
        },
    }
}

fn erofs_from(source: &std::ffi::OsStr, has_acl: bool) -> Result<OwnedFd, sys::KernelError> {
    let ctx = FsContext::open("erofs")?;
    for p in options::erofs_params(source, has_acl) {
        ctx.set(&p)?;
    }
    ctx.create_and_mount(MountAttrFlags::MOUNT_ATTR_RDONLY)
}
