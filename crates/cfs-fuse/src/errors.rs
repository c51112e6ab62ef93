//! The one place errors become errno values, and where a corrupt inode is
//! logged: once per nid, so a client retrying a bad path can't flood the log.

use crate::objects::ObjectError;
use cfs_format::reader::{Nid, ReadError};
use rustix::io::Errno;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Anything a request can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Reading the image failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Serving an object failed.
    #[error(transparent)]
    Object(#[from] ObjectError),
    /// An I/O error while serving data.
    #[error("could not {op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// A directory entry names an inode number FUSE can't use (nid 0 or 1).
    #[error("directory entry names nid {0}, which can't be an inode")]
    BadNid(u64),
    /// An inode without a valid file type.
    #[error("inode mode {0:#o} has no file type")]
    BadMode(u32),
}

/// At most this many distinct nids are remembered as logged; past it, every
/// further error is still answered but no longer logged.
const MAX_LOGGED: usize = 4096;

/// Maps errors to errno values and logs the ones worth logging, once per nid.
#[derive(Debug, Default)]
pub struct ErrorLog {
    logged: Mutex<HashSet<(u64, u8)>>,
    suppressed: AtomicUsize,
}

impl ErrorLog {
    /// The errno for `err`, met while serving inode `nid`. Corrupt data and
    /// refused objects answer EIO and are logged (once per nid and kind).
    pub fn errno(&self, nid: Nid, err: &ServeError) -> Errno {
        let (errno, kind) = match err {
            ServeError::Read(ReadError::NotADirectory { .. }) => return Errno::NOTDIR,
            ServeError::Read(ReadError::NotASymlink { .. }) => return Errno::INVAL,
            ServeError::Io { source, .. } => {
                return source
                    .raw_os_error()
                    .map(Errno::from_raw_os_error)
                    .unwrap_or(Errno::IO)
            }
            ServeError::Read(_) | ServeError::BadNid(_) | ServeError::BadMode(_) => (Errno::IO, 0),
            ServeError::Object(_) => (Errno::IO, 1),
        };
        self.log_once(nid, kind, err);
        errno
    }

    fn log_once(&self, nid: Nid, kind: u8, err: &ServeError) {
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        if logged.len() >= MAX_LOGGED {
            if self.suppressed.fetch_add(1, Ordering::Relaxed) == 0 {
                eprintln!("cfs-fuse: too many bad inodes; no longer logging them");
            }
            return;
        }
        if logged.insert((nid.0, kind)) {
            eprintln!("cfs-fuse: inode {nid}: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos() {
        let log = ErrorLog::default();
        let corrupt = ServeError::Read(ReadError::Corrupt {
            nid: Some(5),
            what: "x".into(),
        });
        assert_eq!(log.errno(Nid(5), &corrupt), Errno::IO);
        assert_eq!(log.errno(Nid(5), &corrupt), Errno::IO);
        assert_eq!(log.logged.lock().unwrap().len(), 1);
        let notdir = ServeError::Read(ReadError::NotADirectory { nid: 5 });
        assert_eq!(log.errno(Nid(5), &notdir), Errno::NOTDIR);
        let io = ServeError::Io {
            op: "read",
            source: std::io::Error::from_raw_os_error(libc_enoent()),
        };
        assert_eq!(log.errno(Nid(6), &io), Errno::NOENT);
        let bad = ServeError::Object(ObjectError::BadRedirect("/../x".into()));
        assert_eq!(log.errno(Nid(7), &bad), Errno::IO);
    }

    fn libc_enoent() -> i32 {
        rustix::io::Errno::NOENT.raw_os_error()
    }
}
