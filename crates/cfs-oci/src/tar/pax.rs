//! An entry's PAX records, read as a strict reader reads them: xattrs
//! within their limits, numbers that parse (see [`super::numeric`]), GNU
//! sparse records gathered for [`super::sparse`].

use super::{numeric, sparse, LayerReader};
use crate::{OciError, MARKER_PREFIX};
use cfs_format::tree::{set_xattr, MAX_XATTR_NAME_LEN};
use cfs_format::{Timespec, Xattr};
use std::io::Read;

/// What an entry's PAX records add to its header.
#[derive(Default)]
pub(super) struct PaxRecords {
    /// `SCHILY.xattr.NAME` records, a repeated name replacing the value.
    pub(super) xattrs: Vec<Xattr>,
    /// `mtime`, with its nanoseconds.
    pub(super) mtime: Option<Timespec>,
    /// `size`: the bytes the entry stores.
    pub(super) size: Option<u64>,
    /// `uid`.
    pub(super) uid: Option<u32>,
    /// `gid`.
    pub(super) gid: Option<u32>,
    /// `GNU.sparse.*`.
    pub(super) sparse: sparse::SparseRecords,
}

impl LayerReader<'_> {
    /// What the entry's PAX records say: xattrs (`SCHILY.xattr.NAME`, within
    /// the limits, none reserved), numbers (read strictly) and sparse maps.
    /// A record the `tar` crate also reads (path, linkpath, size, uid, gid)
    /// may appear once, so that both read the same value.
    pub(super) fn pax_records<R: Read>(
        &self,
        entry: &mut ::tar::Entry<'_, R>,
        shown: &str,
    ) -> Result<PaxRecords, OciError> {
        let mut pax = PaxRecords::default();
        let mut xattr_bytes = 0usize;
        let Some(records) = entry
            .pax_extensions()
            .map_err(|e| self.err(shown, format!("bad PAX records: {e}")))?
        else {
            return Ok(pax);
        };
        let mut seen: Vec<&'static str> = Vec::new();
        for ext in records {
            let ext = ext.map_err(|e| self.err(shown, format!("bad PAX record: {e}")))?;
            let key = ext.key_bytes();
            let value = ext.value_bytes();
            let number = |r: Result<u64, String>| {
                r.map_err(|e| {
                    self.err(
                        shown,
                        format!("PAX record {}: {e}", String::from_utf8_lossy(key)),
                    )
                })
            };
            if let Some(once) = ["path", "linkpath", "size", "uid", "gid", "mtime"]
                .into_iter()
                .find(|k| k.as_bytes() == key)
            {
                if seen.contains(&once) {
                    return Err(self.err(shown, format!("PAX record {once} given twice")));
                }
                seen.push(once);
            }
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                if name.is_empty() || name.len() > MAX_XATTR_NAME_LEN || name.contains(&0) {
                    return Err(self.err(shown, "invalid xattr name"));
                }
                if name.starts_with(MARKER_PREFIX) {
                    return Err(self.err(
                        shown,
                        format!("xattr {} is reserved", String::from_utf8_lossy(name)),
                    ));
                }
                xattr_bytes += name.len() + value.len();
                if xattr_bytes > self.limits.max_xattr_bytes {
                    return Err(self.err(
                        shown,
                        format!(
                            "xattrs over the limit max_xattr_bytes = {}",
                            self.limits.max_xattr_bytes
                        ),
                    ));
                }
                set_xattr(&mut pax.xattrs, name, value);
            } else if let Some(sparse_key) = key.strip_prefix(b"GNU.sparse.") {
                pax.sparse
                    .record(sparse_key, value)
                    .map_err(|e| self.err(shown, e))?;
            } else {
                match key {
                    b"mtime" => {
                        pax.mtime = Some(
                            numeric::pax_time(value)
                                .map_err(|e| self.err(shown, format!("PAX record mtime: {e}")))?,
                        )
                    }
                    b"atime" | b"ctime" => {
                        numeric::pax_time(value).map_err(|e| {
                            self.err(
                                shown,
                                format!("PAX record {}: {e}", String::from_utf8_lossy(key)),
                            )
                        })?;
                    }
                    b"size" => pax.size = Some(number(numeric::pax_unsigned(value, u64::MAX))?),
                    b"uid" => {
                        pax.uid =
                            Some(number(numeric::pax_unsigned(value, u32::MAX.into()))? as u32)
                    }
                    b"gid" => {
                        pax.gid =
                            Some(number(numeric::pax_unsigned(value, u32::MAX.into()))? as u32)
                    }
                    _ => {}
                }
            }
        }
        Ok(pax)
    }
}
