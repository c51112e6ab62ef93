//! Where an image's bytes come from: [`ImageSource`].
//!
//! The reader never needs the whole image as one slice. Every read is a
//! bounded range, `len` bytes at `offset`, checked against [`ImageSource::len`]
//! first; the source only has to hand out that range as a `&[u8]` living as
//! long as the source. A `Vec<u8>`, a `&[u8]` or an mmap does that for free
//! (the blanket impl below: a sub-slice, no copy). A source that reads the
//! file on demand (the FUSE server's `pread` block cache) pins what it read so
//! the borrow stays valid, and can serve a range inside one of its blocks
//! without copying but must copy a range that straddles two.
//!
//! File data is the one place where a caller takes less than it asked for:
//! [`ImageSource::get_prefix`] lets a source stop at its own boundary (the end
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
    fn len(&self) -> u64;

    /// True for an empty source (which no image is).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Exactly `len` bytes at `offset`, or `None` if they are outside the
    /// image or can't be read. The same range always yields the same bytes.
    fn get(&self, offset: u64, len: usize) -> Option<&[u8]>;

    /// Between 1 and `len` bytes at `offset` (none when `len` is 0): as long
    /// a prefix as the source serves without copying. `None` as for
    /// [`ImageSource::get`]. The default serves all of it.
    fn get_prefix(&self, offset: u64, len: usize) -> Option<&[u8]> {
        self.get(offset, len)
    }
}

impl<T: Deref<Target = [u8]>> ImageSource for T {
    fn len(&self) -> u64 {
        (**self).len() as u64
    }

    fn get(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        (**self).get(start..start.checked_add(len)?)
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
            assert_eq!(ImageSource::get(&v, offset, len), want, "{offset}+{len}");
            assert_eq!(v.get_prefix(offset, len), want, "{offset}+{len}");
        }
        assert_eq!(ImageSource::len(&&v[..4]), 4);
    }
}
