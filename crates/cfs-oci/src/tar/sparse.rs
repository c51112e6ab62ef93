//! Sparse files, in the formats GNU tar writes, read as the file they
//! describe: data segments where the map puts them, zeros in the holes.
//!
//! - **GNU old** (`--format=gnu`, type `S`): the map is in the header and
//!   its extension blocks; the `tar` crate reads it and hands out the
//!   expanded file, so only its holes are counted here.
//! - **PAX 0.0**: records `GNU.sparse.size` (the real size), then
//!   `GNU.sparse.offset` / `GNU.sparse.numbytes` pairs, in order; the
//!   entry keeps its name.
//! - **PAX 0.1**: `GNU.sparse.size`, `GNU.sparse.map=OFF,LEN,OFF,LEN,…` and
//!   `GNU.sparse.name` (the header holds `…/GNUSparseFile.N/NAME`).
//! - **PAX 1.0**: `GNU.sparse.major=1`, `GNU.sparse.minor=0`,
//!   `GNU.sparse.name`, `GNU.sparse.realsize`; the map is at the start of
//!   the entry's data (`COUNT\nOFF\nLEN\n…`, padded to 512 bytes).
//!
//! The data stored in the tar is the segments, back to back. A map is
//! checked before anything is read: segments in order, not overlapping,
//! inside the real size, their lengths adding up to the data stored.

use std::io::{self, Read};

/// A segment of data in a sparse file: its offset in the file and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Offset in the file.
    pub offset: u64,
    /// Bytes of data.
    pub len: u64,
}

/// A sparse file's map: where its data goes, and its real size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseMap {
    /// Data segments, in order.
    pub segments: Vec<Segment>,
    /// Size of the file described.
    pub real_size: u64,
}

impl SparseMap {
    /// Checks the map against `stored`, the bytes of data the entry holds.
    pub fn check(&self, stored: u64) -> Result<(), String> {
        let mut end = 0u64;
        let mut data = 0u64;
        for s in &self.segments {
            if s.offset < end {
                return Err(format!(
                    "sparse map: segment at {} overlaps or precedes the one before",
                    s.offset
                ));
            }
            end = s
                .offset
                .checked_add(s.len)
                .filter(|&e| e <= self.real_size)
                .ok_or_else(|| {
                    format!(
                        "sparse map: segment {}+{} ends past the real size {}",
                        s.offset, s.len, self.real_size
                    )
                })?;
            data += s.len;
        }
        if data != stored {
            return Err(format!(
                "sparse map: segments hold {data} bytes, the entry stores {stored}"
            ));
        }
        Ok(())
    }

    /// Zeros the holes add to the data.
    pub fn holes(&self) -> u64 {
        let data: u64 = self.segments.iter().map(|s| s.len).sum();
        self.real_size.saturating_sub(data)
    }
}

/// The `GNU.sparse.*` PAX records of one entry, gathered in order.
#[derive(Debug, Default)]
pub struct SparseRecords {
    any: bool,
    major: Option<u64>,
    minor: Option<u64>,
    size: Option<u64>,
    realsize: Option<u64>,
    numblocks: Option<u64>,
    /// `offset` and `numbytes` values (0.0), alternating.
    pairs: Vec<u64>,
    /// `map` values (0.1).
    map: Option<Vec<u64>>,
    name: Option<Vec<u8>>,
}

/// A PAX sparse file: its real name (0.1 and 1.0 hide it under
/// `GNUSparseFile.N/`), and its map, which for 1.0 is still to be read
/// from the data (`map_in_data`, `map.segments` empty until then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaxSparse {
    /// `GNU.sparse.name`.
    pub name: Option<Vec<u8>>,
    /// The map (segments from the records, or to be read) and real size.
    pub map: SparseMap,
    /// Format 1.0: the map is at the start of the data.
    pub map_in_data: bool,
}

impl SparseRecords {
    /// True when no `GNU.sparse.*` record was seen.
    pub fn is_empty(&self) -> bool {
        !self.any
    }

    /// Takes the record `GNU.sparse.KEY=value` (`key` without the prefix).
    pub fn record(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        use super::numeric::pax_unsigned;
        self.any = true;
        let shown = String::from_utf8_lossy(key);
        let number = |v: &[u8]| {
            pax_unsigned(v, u64::MAX).map_err(|e| format!("PAX record GNU.sparse.{shown}: {e}"))
        };
        match key {
            b"major" => self.major = Some(number(value)?),
            b"minor" => self.minor = Some(number(value)?),
            b"size" => self.size = Some(number(value)?),
            b"realsize" => self.realsize = Some(number(value)?),
            b"numblocks" => self.numblocks = Some(number(value)?),
            b"offset" | b"numbytes" => {
                let want = if self.pairs.len().is_multiple_of(2) {
                    &b"offset"[..]
                } else {
                    b"numbytes"
                };
                if key != want {
                    return Err(format!(
                        "PAX record GNU.sparse.{shown} where GNU.sparse.{} was due",
                        String::from_utf8_lossy(want)
                    ));
                }
                self.pairs.push(number(value)?);
            }
            b"map" => {
                let numbers = if value.is_empty() {
                    Vec::new()
                } else {
                    value
                        .split(|&b| b == b',')
                        .map(number)
                        .collect::<Result<_, _>>()?
                };
                self.map = Some(numbers);
            }
            b"name" => self.name = Some(value.to_vec()),
            _ => return Err(format!("unknown PAX record GNU.sparse.{shown}")),
        }
        Ok(())
    }

    /// The sparse file the records describe, if any, in whichever format
    /// they are; incomplete or mixed records are an error.
    pub fn finish(self) -> Result<Option<PaxSparse>, String> {
        if !self.any {
            return Ok(None);
        }
        let (map_in_data, real_size, numbers) = match (self.major, self.minor) {
            (Some(1), Some(0)) => {
                if self.map.is_some() || !self.pairs.is_empty() || self.size.is_some() {
                    return Err("sparse format 1.0 with records of format 0.x".into());
                }
                let size = self
                    .realsize
                    .ok_or("sparse format 1.0 without GNU.sparse.realsize")?;
                (true, size, Vec::new())
            }
            (None, None) => {
                let numbers = match (self.map, self.pairs.is_empty()) {
                    (Some(map), true) => map,
                    (None, false) => self.pairs,
                    (Some(_), false) => {
                        return Err("sparse map given both as GNU.sparse.map and as offsets".into())
                    }
                    (None, true) => return Err("sparse records without a map".into()),
                };
                let size = self
                    .size
                    .ok_or("sparse format 0.x without GNU.sparse.size")?;
                if let Some(n) = self.numblocks {
                    if n.checked_mul(2) != Some(numbers.len() as u64) {
                        return Err(format!(
                            "GNU.sparse.numblocks is {n}, the map has {} numbers",
                            numbers.len()
                        ));
                    }
                }
                (false, size, numbers)
            }
            (major, minor) => {
                return Err(format!(
                    "unsupported sparse format {}.{}",
                    major.map_or("?".into(), |v| v.to_string()),
                    minor.map_or("?".into(), |v| v.to_string())
                ))
            }
        };
        Ok(Some(PaxSparse {
            name: self.name,
            map: SparseMap {
                segments: segments(&numbers)?,
                real_size,
            },
            map_in_data,
        }))
    }
}

/// Segments from a flat list `OFF, LEN, OFF, LEN, …` (PAX 0.0 and 0.1).
pub fn segments(numbers: &[u64]) -> Result<Vec<Segment>, String> {
    if !numbers.len().is_multiple_of(2) {
        return Err("sparse map: an offset without a length".into());
    }
    Ok(numbers
        .chunks_exact(2)
        .map(|p| Segment {
            offset: p[0],
            len: p[1],
        })
        .collect())
}

/// Reads the PAX 1.0 map at the start of an entry's data: a count, then
/// that many offset and length pairs, one decimal number per line, padded
/// with anything to the next 512-byte boundary. At most `max_bytes` are
/// read. Returns the segments and the bytes the map took (padding included).
pub fn read_v1_map(input: &mut dyn Read, max_bytes: u64) -> Result<(Vec<Segment>, u64), String> {
    let mut used = 0u64;
    let mut line = Vec::new();
    let mut next_number = |what: &str| -> Result<u64, String> {
        line.clear();
        loop {
            let mut b = [0u8];
            input
                .read_exact(&mut b)
                .map_err(|e| format!("sparse map: {what}: {e}"))?;
            used += 1;
            if used > max_bytes {
                return Err(format!(
                    "sparse map over the limit max_extension = {max_bytes} bytes"
                ));
            }
            if b[0] == b'\n' {
                break;
            }
            line.push(b[0]);
        }
        super::numeric::pax_unsigned(&line, u64::MAX)
            .map_err(|e| format!("sparse map: {what}: {e}"))
    };
    let count = next_number("segment count")?;
    let mut numbers = Vec::new();
    for _ in 0..count {
        numbers.push(next_number("offset")?);
        numbers.push(next_number("length")?);
    }
    let padding = (512 - used % 512) % 512;
    io::copy(&mut input.take(padding), &mut io::sink())
        .map_err(|e| format!("sparse map: padding: {e}"))?;
    Ok((segments(&numbers)?, used + padding))
}

/// The file a checked [`SparseMap`] describes, read from its data.
pub struct Expand<'r> {
    data: &'r mut dyn Read,
    map: SparseMap,
    next: usize,
    pos: u64,
}

impl<'r> Expand<'r> {
    /// Reads the file `map` describes from `data`, its segments back to back.
    pub fn new(data: &'r mut dyn Read, map: SparseMap) -> Expand<'r> {
        Expand {
            data,
            map,
            next: 0,
            pos: 0,
        }
    }
}

impl Read for Expand<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos >= self.map.real_size || buf.is_empty() {
                return Ok(0);
            }
            let seg = self.map.segments.get(self.next).copied();
            let (zeros_until, data_until) = match seg {
                Some(s) if self.pos < s.offset => (s.offset, None),
                Some(s) if self.pos < s.offset + s.len => (self.pos, Some(s.offset + s.len)),
                Some(_) => {
                    self.next += 1;
                    continue;
                }
                None => (self.map.real_size, None),
            };
            let until = data_until.unwrap_or(zeros_until);
            let want = usize::try_from(until - self.pos).map_or(buf.len(), |n| n.min(buf.len()));
            let n = if data_until.is_some() {
                let n = self.data.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "sparse file data ends early",
                    ));
                }
                n
            } else {
                buf[..want].fill(0);
                want
            };
            self.pos += n as u64;
            return Ok(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(offset: u64, len: u64) -> Segment {
        Segment { offset, len }
    }

    #[test]
    fn expands_holes_as_zeros() {
        let map = SparseMap {
            segments: vec![seg(0, 2), seg(5, 3), seg(10, 0)],
            real_size: 12,
        };
        map.check(5).unwrap();
        assert_eq!(map.holes(), 7);
        let mut data = &b"abcde"[..];
        let mut out = Vec::new();
        Expand::new(&mut data, map).read_to_end(&mut out).unwrap();
        assert_eq!(out, b"ab\0\0\0cde\0\0\0\0");
        // All holes.
        let map = SparseMap {
            segments: vec![seg(1 << 20, 0)],
            real_size: 1 << 20,
        };
        map.check(0).unwrap();
        let mut out = Vec::new();
        Expand::new(&mut &b""[..], map)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, vec![0u8; 1 << 20]);
    }

    #[test]
    fn bad_maps_are_refused() {
        // (segments, real size, stored bytes, part of the error)
        let table: &[(&[Segment], u64, u64, &str)] = &[
            (&[seg(4, 2), seg(2, 1)], 10, 3, "overlaps or precedes"),
            (&[seg(0, 4), seg(2, 4)], 10, 8, "overlaps or precedes"),
            (&[seg(8, 4)], 10, 4, "past the real size"),
            (&[seg(u64::MAX, 2)], u64::MAX, 2, "past the real size"),
            (&[seg(0, 4)], 10, 5, "hold 4 bytes, the entry stores 5"),
        ];
        for &(segments, real_size, stored, want) in table {
            let map = SparseMap {
                segments: segments.to_vec(),
                real_size,
            };
            let e = map.check(stored).unwrap_err();
            assert!(e.contains(want), "{segments:?}: {e}");
        }
        assert!(segments(&[1, 2, 3]).is_err());
    }

    #[test]
    fn v1_maps() {
        let mut data = b"2\n0\n4\n512\n3\n".to_vec();
        data.resize(512, 0);
        data.extend_from_slice(b"DATA");
        let mut r = &data[..];
        let (segs, used) = read_v1_map(&mut r, 4096).unwrap();
        assert_eq!(segs, [seg(0, 4), seg(512, 3)]);
        assert_eq!(used, 512);
        assert_eq!(r, b"DATA");
        for (bad, want) in [
            (&b"1\n0\n"[..], "length"),
            (b"x\n", "segment count"),
            (b"1\n-1\n2\n", "offset"),
            (b"99999999999999999999999\n", "segment count"),
        ] {
            let e = read_v1_map(&mut &bad[..], 4096).unwrap_err();
            assert!(e.contains(want), "{bad:?}: {e}");
        }
        let huge = format!("1\n{}\n", "1".repeat(5000));
        let e = read_v1_map(&mut huge.as_bytes(), 4096).unwrap_err();
        assert!(e.contains("max_extension"), "{e}");
    }
}
