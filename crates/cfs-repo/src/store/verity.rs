//! Enabling fs-verity on objects (`FS_IOC_ENABLE_VERITY`, see
//! <https://docs.kernel.org/filesystems/fsverity.html>).
//!
//! Object names are always computed in userspace; the kernel's fs-verity is an
//! extra guarantee (the kernel then refuses to read tampered blocks, and
//! overlayfs `verity=require` can check the digests). Kernels or file systems
//! without it answer `ENOTTY`/`EOPNOTSUPP`; the store then remembers that
//! digests are userspace-only and stops asking.

use super::{ObjectStore, StoreError};
use rustix::fs::{Mode, OFlags};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;

/// Whether objects get kernel fs-verity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VeritySupport {
    /// Not yet known: nothing was inserted or probed.
    Unknown,
    /// The file system enables fs-verity on objects.
    Enabled,
    /// Not available (kernel or file system): digests are userspace-only.
    Unavailable,
}

impl VeritySupport {
    pub(super) fn from_u8(v: u8) -> Self {
        match v {
            1 => VeritySupport::Enabled,
            2 => VeritySupport::Unavailable,
            _ => VeritySupport::Unknown,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            VeritySupport::Unknown => 0,
            VeritySupport::Enabled => 1,
            VeritySupport::Unavailable => 2,
        }
    }
}

impl ObjectStore {
    /// Enables fs-verity on a fully written temporary object unless the store
    /// already knows it can't. `file` is the writable fd; it is reopened
    /// read-only through `/proc/self/fd` and the read-only fd is returned (the
    /// kernel refuses while a writable fd is open). Returns `file` unchanged
    /// when fs-verity is unavailable.
    pub(super) fn maybe_enable_verity(&self, file: OwnedFd) -> Result<OwnedFd, StoreError> {
        if self.verity_support() == VeritySupport::Unavailable {
            return Ok(file);
        }
        let proc = format!("/proc/self/fd/{}", file.as_raw_fd());
        let ro = rustix::fs::open(
            proc.as_str(),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(StoreError::io("reopen", self.path()))?;
        drop(file);
        match crate::sys::enable_verity(ro.as_fd()) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {
                self.set_verity(VeritySupport::Enabled);
            }
            Err(
                rustix::io::Errno::NOTTY
                | rustix::io::Errno::OPNOTSUPP
                | rustix::io::Errno::INVAL
                | rustix::io::Errno::NOSYS,
            ) => self.set_verity(VeritySupport::Unavailable),
            Err(e) => return Err(StoreError::io("enable fs-verity in", self.path())(e)),
        }
        Ok(ro)
    }

    fn set_verity(&self, v: VeritySupport) {
        self.verity.store(v.to_u8(), Ordering::Relaxed);
    }

    /// Finds out whether fs-verity can be enabled here by trying it on an
    /// anonymous temporary file in the store (nothing is left behind).
    pub fn probe_verity(&self) -> Result<VeritySupport, StoreError> {
        if self.verity_support() != VeritySupport::Unknown {
            return Ok(self.verity_support());
        }
        let (file, tmp) = self.temp_file("a fs-verity probe")?;
        rustix::io::write(&file, b"probe").map_err(StoreError::io("write", self.path()))?;
        let result = self.maybe_enable_verity(file);
        tmp.remove(self);
        result?;
        Ok(self.verity_support())
    }

    /// Whether the object `sample` has fs-verity enabled (`statx`
    /// `STATX_ATTR_VERITY`): what a store that writes nothing can tell
    /// about its fs-verity, since every insert enables it where it can
    /// ([`Unknown`](VeritySupport::Unknown) without a sample, or when the
    /// object can't be looked at).
    pub fn observed_verity(&self, sample: Option<&cfs_format::Digest>) -> VeritySupport {
        let Some(file) = sample.and_then(|d| self.open_object(d).ok()) else {
            return VeritySupport::Unknown;
        };
        match rustix::fs::statx(
            &file,
            "",
            rustix::fs::AtFlags::EMPTY_PATH,
            rustix::fs::StatxFlags::BASIC_STATS,
        ) {
            Ok(st)
                if st
                    .stx_attributes
                    .contains(rustix::fs::StatxAttributes::VERITY) =>
            {
                VeritySupport::Enabled
            }
            Ok(_) => VeritySupport::Unavailable,
            Err(_) => VeritySupport::Unknown,
        }
    }
}
