//! Answers: what a request's handler produces ([`Answer`]) and the bytes of
//! each kind of answer, built into a reusable buffer. The transports add the
//! [`OutHeader`](crate::abi::OutHeader) and send it.

use crate::abi::{self, Attr, Dirent, EntryOut};
use rustix::io::Errno;
use std::time::Duration;
use zerocopy::IntoBytes;

/// The outcome of a request: answer with the bytes in the reply buffer, with
/// an error, or not at all (FORGET).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Success; the answer's bytes are in the buffer.
    Data,
    /// Failure with this errno.
    Error(Errno),
    /// The kernel expects no answer.
    None,
}

/// Writes `value`'s bytes to the buffer.
pub fn put<T: IntoBytes + zerocopy::Immutable>(out: &mut Vec<u8>, value: &T) {
    out.extend_from_slice(value.as_bytes());
}

/// A cache timeout as (seconds, nanoseconds).
fn timeout(ttl: Duration) -> (u64, u32) {
    (ttl.as_secs(), ttl.subsec_nanos())
}

/// The LOOKUP answer (and READDIRPLUS entry) for `attr`; node id 0 (a
/// negative entry the kernel caches for `ttl`) when `attr` is `None`.
pub fn entry_out(attr: Option<&Attr>, ttl: Duration) -> EntryOut {
    let (secs, nsecs) = timeout(ttl);
    EntryOut {
        nodeid: attr.map_or(0, |a| a.ino.get()).into(),
        generation: 0.into(),
        entry_valid: secs.into(),
        attr_valid: secs.into(),
        entry_valid_nsec: nsecs.into(),
        attr_valid_nsec: nsecs.into(),
        attr: attr.copied().unwrap_or_default(),
    }
}

/// The GETATTR answer.
pub fn attr(out: &mut Vec<u8>, attr: &Attr, ttl: Duration) -> Answer {
    let (secs, nsecs) = timeout(ttl);
    put(
        out,
        &abi::AttrOut {
            attr_valid: secs.into(),
            attr_valid_nsec: nsecs.into(),
            dummy: 0.into(),
            attr: *attr,
        },
    );
    Answer::Data
}

/// The OPEN answer.
pub fn open(out: &mut Vec<u8>, fh: u64, flags: u32, backing_id: i32) -> Answer {
    put(
        out,
        &abi::OpenOut {
            fh: fh.into(),
            open_flags: flags.into(),
            backing_id: backing_id.into(),
        },
    );
    Answer::Data
}

/// Raw bytes (READ, READLINK, an xattr value or list).
pub fn data(out: &mut Vec<u8>, bytes: &[u8]) -> Answer {
    out.extend_from_slice(bytes);
    Answer::Data
}

/// A GETXATTR/LISTXATTR answer: the size when asked with size 0, the bytes
/// when they fit in `size`, else ERANGE.
pub fn xattr(out: &mut Vec<u8>, bytes: &[u8], size: u32) -> Answer {
    if size == 0 {
        put(
            out,
            &abi::GetxattrOut {
                size: (bytes.len() as u32).into(),
                padding: 0.into(),
            },
        );
        Answer::Data
    } else if bytes.len() > size as usize {
        Answer::Error(Errno::RANGE)
    } else {
        data(out, bytes)
    }
}

/// A READDIR or READDIRPLUS answer being filled, at most `size` bytes.
pub struct Dir<'b> {
    out: &'b mut Vec<u8>,
    limit: usize,
}

impl<'b> Dir<'b> {
    /// An empty listing of at most `size` bytes into `out`.
    pub fn new(out: &'b mut Vec<u8>, size: u32) -> Self {
        let limit = out.len() + size as usize;
        Dir { out, limit }
    }

    /// Appends a READDIR entry; false (and nothing appended) when it doesn't fit.
    pub fn add(&mut self, ino: u64, next: u64, mode: u32, name: &[u8]) -> bool {
        self.add_record(None, ino, next, mode, name)
    }

    /// Appends a READDIRPLUS entry; false when it doesn't fit.
    pub fn add_plus(&mut self, entry: &EntryOut, next: u64, name: &[u8]) -> bool {
        let attr = entry.attr;
        self.add_record(Some(entry), attr.ino.get(), next, attr.mode.get(), name)
    }

    fn add_record(
        &mut self,
        entry: Option<&EntryOut>,
        ino: u64,
        next: u64,
        mode: u32,
        name: &[u8],
    ) -> bool {
        let head = entry.map_or(0, |_| size_of::<EntryOut>()) + size_of::<Dirent>();
        let len = (head + name.len()).next_multiple_of(8);
        if self.out.len() + len > self.limit {
            return false;
        }
        if let Some(e) = entry {
            put(self.out, e);
        }
        put(
            self.out,
            &Dirent {
                ino: ino.into(),
                off: next.into(),
                namelen: (name.len() as u32).into(),
                kind: ((mode & 0o170000) >> 12).into(),
            },
        );
        self.out.extend_from_slice(name);
        self.out.resize(self.out.len() + len - head - name.len(), 0);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirents_are_padded_and_bounded() {
        let mut out = Vec::new();
        let mut dir = Dir::new(&mut out, 64);
        assert!(dir.add(5, 1, 0o040755, b"abc")); // 24 + 3 → 32
        assert!(dir.add(6, 2, 0o100644, b"12345678")); // 24 + 8 → 32
        assert!(!dir.add(7, 3, 0o100644, b"x"), "a third doesn't fit in 64");
        assert_eq!(out.len(), 64);
        assert_eq!(&out[24..27], b"abc");
        assert_eq!(&out[27..32], &[0; 5]);
        assert_eq!(
            u32::from_ne_bytes(out[20..24].try_into().unwrap()),
            4,
            "S_IFDIR >> 12"
        );

        let mut out = Vec::new();
        let mut dir = Dir::new(&mut out, 4096);
        let attr = Attr {
            ino: 9.into(),
            mode: 0o120777.into(),
            ..Default::default()
        };
        assert!(dir.add_plus(&entry_out(Some(&attr), Duration::from_secs(1)), 1, b"link"));
        assert_eq!(out.len(), (128 + 24 + 4usize).next_multiple_of(8));
    }

    #[test]
    fn xattr_answers() {
        let mut out = Vec::new();
        assert_eq!(xattr(&mut out, b"value", 0), Answer::Data);
        assert_eq!(
            out,
            5u32.to_ne_bytes()
                .iter()
                .chain(&[0; 4])
                .copied()
                .collect::<Vec<_>>()
        );
        out.clear();
        assert_eq!(xattr(&mut out, b"value", 4), Answer::Error(Errno::RANGE));
        assert_eq!(xattr(&mut out, b"value", 5), Answer::Data);
        assert_eq!(out, b"value");
    }
}
