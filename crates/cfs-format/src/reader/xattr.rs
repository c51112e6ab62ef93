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

use super::{corrupt, Image, ImageSource, Inode, Nid, ReadError};
use crate::erofs::{
    xattr_prefix, xxh32, XattrBodyHeader, XattrEntry, XATTR_BODY_HEADER_SIZE, XATTR_ENTRY_SIZE,
    XATTR_FILTER_BITS, XATTR_FILTER_SEED, XATTR_PREFIXES,
};
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
pub struct Xattrs<'a, T: ImageSource> {
    image: &'a Image<T>,
    nid: Nid,
    /// Inline entries not yet read.
    inline: &'a [u8],
    /// Shared ids (4 bytes each) not yet read.
    shared: &'a [u8],
    done: bool,
}

impl<'a, T: ImageSource> Iterator for Xattrs<'a, T> {
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

impl<T: ImageSource> Image<T> {
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
        // Exactly the entry: its 4-byte header, then the name and value it
        // gives, each cut at the end of the image for parse_entry to report.
        let avail = self
            .size()
            .checked_sub(at)
            .ok_or_else(|| corrupt(Some(nid), format!("{what}: past the end of the image")))?;
        let head = self.slice(
            Some(nid),
            at,
            avail.min(XATTR_ENTRY_SIZE as u64),
            "shared xattr",
        )?;
        let len = match XattrEntry::read_from_bytes(head) {
            Ok(e) => {
                XATTR_ENTRY_SIZE + usize::from(e.e_name_len) + usize::from(e.e_value_size.get())
            }
            Err(_) => head.len(),
        };
        let bytes = self.slice(Some(nid), at, avail.min(len as u64), "shared xattr")?;
        parse_entry(nid, bytes, what).map(|(x, _)| x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::erofs::{
        ComposefsHeader, InodeCompact, Superblock, COMPOSEFS_HEADER_VERSION, COMPOSEFS_MAGIC,
        FEATURE_COMPAT_XATTR_FILTER, SUPER_MAGIC, XATTR_FILTER_DEFAULT,
    };
    use zerocopy::IntoBytes;

    /// An xattr entry: header, suffix, value, padding.
    fn entry(index: u8, suffix: &[u8], value: &[u8]) -> Vec<u8> {
        let mut e = vec![suffix.len() as u8, index];
        e.extend_from_slice(&(value.len() as u16).to_le_bytes());
        e.extend_from_slice(suffix);
        e.extend_from_slice(value);
        e.resize(e.len().next_multiple_of(4), 0);
        e
    }

    /// The filter C composefs writes for these (index, suffix) names.
    fn filter(names: &[(u8, &[u8])]) -> u32 {
        let present = names.iter().fold(0u32, |f, (i, s)| {
            f | 1 << (xxh32(s, XATTR_FILTER_SEED + u32::from(*i)) % XATTR_FILTER_BITS)
        });
        XATTR_FILTER_DEFAULT & !present
    }

    /// A composefs image whose root (nid 36, an empty inline directory) has
    /// this xattr body; shared entries live at 4096.
    fn image(
        compat: u32,
        filter: u32,
        shared_ids: &[u32],
        inline: &[u8],
        shared: &[u8],
    ) -> Vec<u8> {
        let mut img = vec![0u8; 8192];
        let mut h = ComposefsHeader::default();
        h.magic.set(COMPOSEFS_MAGIC);
        h.version.set(COMPOSEFS_HEADER_VERSION);
        img[..32].copy_from_slice(h.as_bytes());
        let mut sb = Superblock::default();
        sb.magic.set(SUPER_MAGIC);
        sb.feature_compat.set(compat);
        sb.blkszbits = 12;
        sb.root_nid.set(36);
        sb.xattr_blkaddr.set(1);
        img[1024..1152].copy_from_slice(sb.as_bytes());
        let mut body = filter.to_le_bytes().to_vec();
        body.push(shared_ids.len() as u8);
        body.extend_from_slice(&[0; 7]);
        for id in shared_ids {
            body.extend_from_slice(&id.to_le_bytes());
        }
        body.extend_from_slice(inline);
        let dirents = [
            &36u64.to_le_bytes()[..],
            &24u16.to_le_bytes(),
            &[2, 0],
            &36u64.to_le_bytes(),
            &25u16.to_le_bytes(),
            &[2, 0],
            b"...",
        ]
        .concat();
        let mut ino = InodeCompact::default();
        ino.i_format.set(2 << 1);
        ino.i_xattr_icount.set(((body.len() - 12) / 4 + 1) as u16);
        ino.i_mode.set(0o40755);
        ino.i_nlink.set(2);
        ino.i_size.set(dirents.len() as u32);
        let mut at = 1152;
        for part in [ino.as_bytes(), &body, &dirents] {
            img[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        img[4096..4096 + shared.len()].copy_from_slice(shared);
        img
    }

    /// Name, value, and whether shared, of every xattr of the root.
    type Listed = Vec<(Vec<u8>, Vec<u8>, bool)>;

    fn all(img: &Image<Vec<u8>>) -> Result<Listed, ReadError> {
        img.xattrs(img.root_nid())?
            .map(|x| x.map(|x| (x.name(), x.value().to_vec(), x.is_shared())))
            .collect()
    }

    #[test]
    fn inline_then_shared_with_full_names() {
        let inline = [entry(1, b"foo", b"bar"), entry(4, b"x", b"12345")].concat();
        let shared = [entry(6, b"selinux", b"label"), entry(2, b"", b"acl")].concat();
        let img = Image::open(image(0, 0, &[4, 0], &inline, &shared)).unwrap();
        let got = all(&img).unwrap();
        let want = [
            (&b"user.foo"[..], &b"bar"[..], false),
            (b"trusted.x", b"12345", false),
            (b"system.posix_acl_access", b"acl", true),
            (b"security.selinux", b"label", true),
        ];
        assert_eq!(got, want.map(|(n, v, s)| (n.to_vec(), v.to_vec(), s)));
        let root = img.root_nid();
        for (n, v, _) in want {
            assert_eq!(img.get_xattr(root, n).unwrap(), Some(v));
        }
        assert_eq!(img.get_xattr(root, b"user.fo").unwrap(), None);
        assert_eq!(img.get_xattr(root, b"user.fooo").unwrap(), None);
        // The directory still reads: the xattr body is skipped correctly.
        let names: Vec<_> = img
            .readdir(root, 0)
            .unwrap()
            .map(|e| e.unwrap().name)
            .collect();
        assert_eq!(names, [&b"."[..], b".."]);
    }

    #[test]
    fn name_filter_is_a_fast_negative() {
        let inline = [entry(1, b"foo", b"bar"), entry(1, b"hidden", b"h")].concat();
        // The filter claims only user.foo is present.
        let f = filter(&[(1, b"foo")]);
        let hidden_bit = xxh32(b"hidden", XATTR_FILTER_SEED + 1) % XATTR_FILTER_BITS;
        let foo_bit = xxh32(b"foo", XATTR_FILTER_SEED + 1) % XATTR_FILTER_BITS;
        assert_ne!(hidden_bit, foo_bit);
        let with = Image::open(image(FEATURE_COMPAT_XATTR_FILTER, f, &[], &inline, &[])).unwrap();
        let without = Image::open(image(0, f, &[], &inline, &[])).unwrap();
        let root = with.root_nid();
        assert_eq!(
            with.get_xattr(root, b"user.foo").unwrap(),
            Some(&b"bar"[..])
        );
        assert_eq!(with.get_xattr(root, b"user.hidden").unwrap(), None);
        assert_eq!(all(&with).unwrap().len(), 2);
        assert_eq!(
            without.get_xattr(root, b"user.hidden").unwrap(),
            Some(&b"h"[..])
        );
    }

    #[test]
    fn corrupt_xattr_bodies() {
        let ok = entry(1, b"a", b"b");
        let mut long_value = entry(1, b"a", b"b");
        long_value[2] = 200;
        // What, inline entries, shared ids, shared area, expected error.
        type Case<'a> = (&'a str, Vec<u8>, &'a [u32], &'a [u8], &'a str);
        let cases: &[Case<'_>] = &[
            (
                "unknown index",
                entry(9, b"a", b"b"),
                &[],
                &[],
                "unknown e_name_index 9",
            ),
            (
                "long prefix",
                entry(0x80, b"a", b"b"),
                &[],
                &[],
                "unknown e_name_index 128",
            ),
            (
                "value too long",
                long_value,
                &[],
                &[],
                "run past the xattr area",
            ),
            ("cut header", vec![5, 1, 0, 0], &[], &[], "run past"),
            (
                "shared past end",
                ok.clone(),
                &[u32::MAX],
                &[],
                "shared xattr 4294967295",
            ),
            (
                "shared index",
                ok.clone(),
                &[0],
                &entry(77, b"z", b""),
                "unknown e_name_index 77",
            ),
        ];
        for (what, inline, ids, shared, msg) in cases {
            let img = Image::open(image(0, 0, ids, inline, shared)).unwrap();
            let err = all(&img).expect_err(what).to_string();
            assert!(
                err.contains(msg) && err.contains("inode 36"),
                "{what}: {err}"
            );
        }
        // h_shared_count larger than the body.
        let mut img = image(0, 0, &[], &ok, &[]);
        img[1152 + 32 + 4] = 200;
        let img = Image::open(img).unwrap();
        assert!(all(&img)
            .unwrap_err()
            .to_string()
            .contains("h_shared_count 200"));
    }
}
