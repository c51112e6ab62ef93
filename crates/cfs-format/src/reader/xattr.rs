//! Extended attributes: an inode's inline entries and its shared ones, with
//! full names, and lookup by name with the name filter as a fast negative.
//!
//! The xattr body right after an inode (`i_xattr_icount` > 0) is an
//! `erofs_xattr_ibody_header` (name filter, `h_shared_count`), then
//! `h_shared_count` `__le32` ids of shared entries (each at
//! `xattr_blkaddr * 4096 + 4 * id`), then inline entries to the end of the
//! body. An entry is an `erofs_xattr_entry` (name length, prefix index, value
//! size), the name suffix, the value, padded to 4 bytes. Iteration yields
//! inline entries first, then shared ones, as the kernel's `listxattr` and C
//! composefs do.
//!
//! With `EROFS_FEATURE_COMPAT_XATTR_FILTER`, `h_name_filter` has bit
//! `xxh32(suffix, SEED + index) % 32` *clear* for every name present; a set bit
//! proves a name absent without reading the entries.

use super::{corrupt, Image, Inode, Nid, ReadError};
use crate::erofs::{
    xattr_prefix, xxh32, XattrBodyHeader, XattrEntry, XATTR_BODY_HEADER_SIZE, XATTR_ENTRY_SIZE,
    XATTR_FILTER_BITS, XATTR_FILTER_SEED, XATTR_PREFIXES,
};
use std::ops::Deref;
use zerocopy::FromBytes;

/// One xattr, its name suffix and value borrowed from the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XattrRef<'a> {
    index: u8,
    prefix: &'static [u8],
    suffix: &'a [u8],
    value: &'a [u8],
    shared: bool,
}

impl<'a> XattrRef<'a> {
    /// The name prefix index (`e_name_index`, see [`crate::erofs::xattr_index`]).
    pub fn index(&self) -> u8 {
        self.index
    }

    /// The prefix the index stands for (`user.`, `trusted.`, ...; empty for 0).
    pub fn prefix(&self) -> &'static [u8] {
        self.prefix
    }

    /// The rest of the name after the prefix.
    pub fn suffix(&self) -> &'a [u8] {
        self.suffix
    }

    /// The value.
    pub fn value(&self) -> &'a [u8] {
        self.value
    }

    /// True for an entry in the shared xattr area, false for an inline one.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Length of the full name.
    pub fn name_len(&self) -> usize {
        self.prefix.len() + self.suffix.len()
    }

    /// Whether the full name is `name`, without building it.
    pub fn name_eq(&self, name: &[u8]) -> bool {
        name.len() == self.name_len()
            && name.starts_with(self.prefix)
            && &name[self.prefix.len()..] == self.suffix
    }

    /// Appends the full name (prefix and suffix) to `out`.
    pub fn write_name(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.prefix);
        out.extend_from_slice(self.suffix);
    }

    /// The full name.
    pub fn name(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.name_len());
        self.write_name(&mut out);
        out
    }
}

/// Iterator over an inode's xattrs, inline ones first, made by [`Image::xattrs`].
/// After an error, yields nothing more.
pub struct Xattrs<'a, T: Deref<Target = [u8]>> {
    image: &'a Image<T>,
    nid: Nid,
    /// Inline entries not yet read.
    inline: &'a [u8],
    /// Shared ids (4 bytes each) not yet read.
    shared: &'a [u8],
    done: bool,
}

impl<'a, T: Deref<Target = [u8]>> Iterator for Xattrs<'a, T> {
    type Item = Result<XattrRef<'a>, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = if !self.inline.is_empty() {
            parse_entry(self.nid, self.inline, Area::Inline).map(|(x, size)| {
                // parse_entry checked the entry fits; its padding may be cut short.
                self.inline = &self.inline[size.min(self.inline.len())..];
                x
            })
        } else if let Some((id, rest)) = self.shared.split_first_chunk::<4>() {
            self.shared = rest;
            self.image.shared_xattr(self.nid, u32::from_le_bytes(*id))
        } else {
            self.done = true;
            return None;
        };
        self.done = item.is_err();
        Some(item)
    }
}

/// Where an entry is, for error messages.
#[derive(Clone, Copy)]
enum Area {
    Inline,
    Shared(u32),
}

impl std::fmt::Display for Area {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Area::Inline => f.write_str("inline xattr"),
            Area::Shared(id) => write!(f, "shared xattr {id}"),
        }
    }
}

/// The entry at the start of `bytes` and its padded size.
fn parse_entry(nid: Nid, bytes: &[u8], what: Area) -> Result<(XattrRef<'_>, usize), ReadError> {
    let shared = matches!(what, Area::Shared(_));
    let (entry, rest) = XattrEntry::read_from_prefix(bytes)
        .map_err(|_| corrupt(Some(nid), format!("{what}: entry header is cut short")))?;
    let name_len = usize::from(entry.e_name_len);
    let value_len = usize::from(entry.e_value_size.get());
    let prefix = xattr_prefix(entry.e_name_index).ok_or_else(|| {
        corrupt(
            Some(nid),
            format!("{what}: unknown e_name_index {}", entry.e_name_index),
        )
    })?;
    if rest.len() < name_len + value_len {
        return Err(corrupt(
            Some(nid),
            format!("{what}: name ({name_len}) and value ({value_len}) run past the xattr area"),
        ));
    }
    let size = (XATTR_ENTRY_SIZE + name_len + value_len).next_multiple_of(4);
    Ok((
        XattrRef {
            index: entry.e_name_index,
            prefix,
            suffix: &rest[..name_len],
            value: &rest[name_len..name_len + value_len],
            shared,
        },
        size,
    ))
}

/// The prefix index and suffix C composefs and the kernel use for `name`.
fn split_name(name: &[u8]) -> (u8, &[u8]) {
    XATTR_PREFIXES
        .iter()
        .find(|(p, _)| name.starts_with(p))
        .map_or((0, name), |(p, i)| (*i, &name[p.len()..]))
}

impl<T: Deref<Target = [u8]>> Image<T> {
    /// The xattrs of inode `nid`: inline entries, then shared ones.
    pub fn xattrs(&self, nid: Nid) -> Result<Xattrs<'_, T>, ReadError> {
        let inode = self.inode(nid)?;
        self.xattrs_inode(&inode)
    }

    /// [`Image::xattrs`] for an inode already looked up.
    pub fn xattrs_inode(&self, inode: &Inode) -> Result<Xattrs<'_, T>, ReadError> {
        self.xattrs_and_filter(inode).map(|(x, _)| x)
    }

    /// The xattrs with the body header's name filter (`None` without an xattr body).
    fn xattrs_and_filter(&self, inode: &Inode) -> Result<(Xattrs<'_, T>, Option<u32>), ReadError> {
        let nid = inode.nid();
        let mut it = Xattrs {
            image: self,
            nid,
            inline: &[],
            shared: &[],
            done: false,
        };
        let size = inode.xattr_body_size();
        if size == 0 {
            return Ok((it, None));
        }
        let body = self.slice(Some(nid), inode.xattr_body_offset(), size, "xattr body")?;
        let (header, rest) = XattrBodyHeader::read_from_prefix(body)
            .map_err(|_| corrupt(Some(nid), "xattr body header is cut short"))?;
        let shared_len = usize::from(header.h_shared_count) * 4;
        if shared_len > rest.len() {
            return Err(corrupt(
                Some(nid),
                format!(
                    "xattr h_shared_count {} does not fit the {} byte xattr body",
                    header.h_shared_count,
                    XATTR_BODY_HEADER_SIZE + rest.len()
                ),
            ));
        }
        (it.shared, it.inline) = rest.split_at(shared_len);
        Ok((it, Some(header.h_name_filter.get())))
    }

    /// The value of the xattr with full name `name` on inode `nid`, if any.
    /// The name filter, when the image has one, answers most misses without
    /// reading the entries.
    pub fn get_xattr(&self, nid: Nid, name: &[u8]) -> Result<Option<&[u8]>, ReadError> {
        let inode = self.inode(nid)?;
        self.get_xattr_inode(&inode, name)
    }

    /// [`Image::get_xattr`] for an inode already looked up.
    pub fn get_xattr_inode(&self, inode: &Inode, name: &[u8]) -> Result<Option<&[u8]>, ReadError> {
        let (xattrs, filter) = self.xattrs_and_filter(inode)?;
        let Some(filter) = filter else {
            return Ok(None);
        };
        if self.xattr_filter {
            let (index, suffix) = split_name(name);
            let bit =
                xxh32(suffix, XATTR_FILTER_SEED.wrapping_add(u32::from(index))) % XATTR_FILTER_BITS;
            if filter & (1 << bit) != 0 {
                return Ok(None);
            }
        }
        for x in xattrs {
            let x = x?;
            if x.name_eq(name) {
                return Ok(Some(x.value));
            }
        }
        Ok(None)
    }

    /// The shared xattr with id `id` (at `xattr_blkaddr * 4096 + 4 * id`).
    fn shared_xattr(&self, nid: Nid, id: u32) -> Result<XattrRef<'_>, ReadError> {
        let what = Area::Shared(id);
        let at = self
            .xattr_offset
            .checked_add(4 * u64::from(id))
            .ok_or_else(|| corrupt(Some(nid), format!("{what}: offset overflows")))?;
        let bytes = self
            .bytes()
            .get(usize::try_from(at).unwrap_or(usize::MAX)..)
            .ok_or_else(|| corrupt(Some(nid), format!("{what}: past the end of the image")))?;
        parse_entry(nid, bytes, what).map(|(x, _)| x)
    }
}
