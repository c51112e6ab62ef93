//! Where an image's bytes come from: [`ImageSource`].
//!
//! The reader never needs the whole image as one slice. Every read is a
//! bounded range, `len` bytes at `offset`, checked against [`ImageSource::size`]
//! first; the source only has to hand out that range as a `&[u8]` living as
//! long as the source. A `Vec<u8>`, a `&[u8]` or an mmap does that for free
//! (the blanket impl below: a sub-slice, no copy). A source that reads the
//! file on demand (the FUSE server's `pread` block cache) pins what it read so
//! the borrow stays valid, and can serve a range inside one of its blocks
//! without copying but must copy a range that straddles two.
//!
//! File data is the one place where a caller takes less than it asked for:
//! [`ImageSource::prefix_at`] lets a source stop at its own boundary (the end
//! of a block), so that reading a large file through a block cache walks its
//! blocks instead of copying the file. Metadata reads (inodes, xattrs,
//! directory blocks) always ask for exact ranges.

use std::ops::Deref;

/// Where an image's bytes come from. Implemented for every
/// `Deref<Target = [u8]>` (a `Vec<u8>`, a `&[u8]`, an mmap).
///
/// The reader calls it only with ranges it has checked to lie within
/// `0..len()`. Returning `None` for such a range (an I/O error, say) makes
/// that read fail with [`super::ReadError::Corrupt`]; the image stays usable.
pub trait ImageSource {
    /// The image size in bytes, fixed for the life of the source.
    fn size(&self) -> u64;

    /// Exactly `len` bytes at `offset`, or `None` if they are outside the
    /// image or can't be read. The same range always yields the same bytes.
    fn bytes_at(&self, offset: u64, len: usize) -> Option<&[u8]>;

    /// Between 1 and `len` bytes at `offset` (none when `len` is 0): as long
    /// a prefix as the source serves without copying. `None` as for
    /// [`ImageSource::bytes_at`]. The default serves all of it.
    fn prefix_at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        self.bytes_at(offset, len)
    }
}

impl<T: Deref<Target = [u8]>> ImageSource for T {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn bytes_at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        self.get(start..start.checked_add(len)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_serve_exact_ranges_or_none() {
        let v: Vec<u8> = (0..10).collect();
        let cases: &[(u64, usize, Option<&[u8]>)] = &[
            (0, 0, Some(&[])),
            (0, 3, Some(&[0, 1, 2])),
            (7, 3, Some(&[7, 8, 9])),
            (10, 0, Some(&[])),
            (8, 3, None),
            (11, 0, None),
            (u64::MAX, 1, None),
            (1, usize::MAX, None),
        ];
        for &(offset, len, want) in cases {
            assert_eq!(v.bytes_at(offset, len), want, "{offset}+{len}");
            assert_eq!(v.prefix_at(offset, len), want, "{offset}+{len}");
        }
        assert_eq!((&v[..4]).size(), 4);
    }
}
