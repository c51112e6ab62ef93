//! Numbers in tar headers and PAX records, read strictly: what does not
//! parse, or does not fit the field, is an error naming the field, never a
//! silent 0 or a wrapped value.
//!
//! Header fields are octal ASCII (leading and trailing spaces and NULs
//! allowed, the digits cut at the first NUL, as GNU tar and Go's
//! `archive/tar` read them) or, when the first byte has its top bit set,
//! base-256: big-endian two's complement over the whole field with that bit
//! cleared (GNU tar writes `0x80…` for large positive and `0xff…` for
//! negative values). PAX values are decimal; times are `[-]SECONDS[.FRACTION]`.

use cfs_format::Timespec;

/// A numeric header field: `Ok(None)` when it is blank (spaces and NULs).
pub fn header_field(raw: &[u8]) -> Result<Option<i64>, String> {
    if raw.first().is_some_and(|&b| b & 0x80 != 0) {
        return base256(raw).map(Some);
    }
    let trimmed = trim(raw);
    let digits = match trimmed.iter().position(|&b| b == 0) {
        Some(end) => &trimmed[..end],
        None => trimmed,
    };
    if digits.is_empty() {
        return Ok(None);
    }
    if !digits.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return Err(format!(
            "{:?} is not an octal number",
            String::from_utf8_lossy(trimmed)
        ));
    }
    let mut v: i64 = 0;
    for &d in digits {
        v = v
            .checked_mul(8)
            .and_then(|v| v.checked_add(i64::from(d - b'0')))
            .ok_or("octal number overflows 63 bits")?;
    }
    Ok(Some(v))
}

/// The field without leading and trailing spaces and NULs.
fn trim(raw: &[u8]) -> &[u8] {
    let pad = |b: &u8| *b == b' ' || *b == 0;
    let start = raw.iter().position(|b| !pad(b)).unwrap_or(raw.len());
    let end = raw.iter().rposition(|b| !pad(b)).map_or(start, |e| e + 1);
    &raw[start..end]
}

/// A base-256 field (Go's `parseNumeric`): bit 6 of the first byte is the sign.
fn base256(raw: &[u8]) -> Result<i64, String> {
    let inv: u8 = if raw[0] & 0x40 != 0 { 0xff } else { 0 };
    let mut x: u64 = 0;
    for (i, &b) in raw.iter().enumerate() {
        let mut c = b ^ inv;
        if i == 0 {
            c &= 0x7f;
        }
        if x >> 56 != 0 {
            return Err("base-256 number overflows 64 bits".into());
        }
        x = (x << 8) | u64::from(c);
    }
    if x >> 63 != 0 {
        return Err("base-256 number overflows 63 bits".into());
    }
    let x = x as i64;
    Ok(if inv == 0xff { !x } else { x })
}

/// A header field that must not be negative and must fit `max`.
pub fn header_unsigned(raw: &[u8], max: u64) -> Result<Option<u64>, String> {
    match header_field(raw)? {
        None => Ok(None),
        Some(v) if v < 0 => Err(format!("negative value {v}")),
        Some(v) if v as u64 > max => Err(format!("{v} is over {max}")),
        Some(v) => Ok(Some(v as u64)),
    }
}

/// A PAX decimal that must not be negative and must fit `max`.
pub fn pax_unsigned(v: &[u8], max: u64) -> Result<u64, String> {
    let s = std::str::from_utf8(v).map_err(|_| "not UTF-8".to_owned())?;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a decimal number"));
    }
    let n: u64 = s.parse().map_err(|_| format!("{s:?} overflows 64 bits"))?;
    if n > max {
        return Err(format!("{n} is over {max}"));
    }
    Ok(n)
}

/// A PAX time, `[-]SECONDS[.FRACTION]`: nanoseconds kept, further digits dropped.
pub fn pax_time(v: &[u8]) -> Result<Timespec, String> {
    let s = std::str::from_utf8(v).map_err(|_| "not UTF-8".to_owned())?;
    let bad = || format!("{s:?} is not a time (SECONDS[.FRACTION])");
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    let (negative, digits) = match sec.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, sec),
    };
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (s.contains('.') && frac.is_empty())
    {
        return Err(bad());
    }
    let sec: i64 = sec
        .parse()
        .map_err(|_| format!("{s:?} overflows 64 bits"))?;
    let nsec: u32 = format!("{:0<9}", &frac[..frac.len().min(9)])
        .parse()
        .map_err(|_| bad())?;
    Ok(if negative && nsec > 0 {
        Timespec {
            sec: sec.checked_sub(1).ok_or_else(bad)?,
            nsec: 1_000_000_000 - nsec,
        }
    } else {
        Timespec { sec, nsec }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields() {
        // (field bytes, value or the start of the error)
        type Case<'a> = (&'a [u8], Result<Option<i64>, &'a str>);
        let table: &[Case] = &[
            (b"0000644\0", Ok(Some(0o644))),
            (b"  644 \0", Ok(Some(0o644))),
            (b"\0\0\x30644\0", Ok(Some(0o644))),
            (b"12\0abc", Ok(Some(0o12))),
            (b"\0\0\0\0\0\0\0\0", Ok(None)),
            (b"        ", Ok(None)),
            (b"", Ok(None)),
            (b"12abc\0\0\0", Err("\"12abc\" is not an octal")),
            (b"-1\0\0\0\0\0", Err("\"-1\" is not an octal")),
            (b"0008\0", Err("\"0008\" is not an octal")),
            (b"12 34\0", Err("\"12 34\" is not an octal")),
            (b"777777777777777777777777", Err("octal number overflows")),
            // base-256: 0x80 positive, 0xff negative
            (&[0x80, 0, 0, 0, 0, 0, 0, 42], Ok(Some(42))),
            (&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0], Ok(Some(256))),
            (&[0xff; 8], Ok(Some(-1))),
            (
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe],
                Ok(Some(-2)),
            ),
            (
                &[0x80, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                Err("base-256 number overflows 64"),
            ),
            (
                &[0x80, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0],
                Err("base-256 number overflows 63"),
            ),
        ];
        for (raw, want) in table {
            let got = header_field(raw);
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(w, g, "{raw:?}"),
                (Err(w), Err(g)) => assert!(g.starts_with(w), "{raw:?}: {g}"),
                _ => panic!("{raw:?}: {got:?}, want {want:?}"),
            }
        }
        assert_eq!(header_unsigned(b"17\0", 100), Ok(Some(15)));
        assert!(header_unsigned(&[0xff; 8], u64::MAX)
            .unwrap_err()
            .contains("negative"));
        assert!(header_unsigned(b"77777777777\0", u32::MAX.into())
            .unwrap_err()
            .contains("over"));
    }

    #[test]
    fn pax_numbers_and_times() {
        assert_eq!(pax_unsigned(b"12", u64::MAX), Ok(12));
        for bad in [
            &b"12abc"[..],
            b"-1",
            b"",
            b"+1",
            b" 1",
            b"1e3",
            b"99999999999999999999",
        ] {
            assert!(pax_unsigned(bad, u64::MAX).is_err(), "{bad:?}");
        }
        assert!(pax_unsigned(b"4294967296", u32::MAX.into()).is_err());
        let t = |sec, nsec| Ok(Timespec { sec, nsec });
        // (value, time or error)
        let table: &[(&str, Result<Timespec, ()>)] = &[
            ("1700000000", t(1_700_000_000, 0)),
            ("1700000000.123456789", t(1_700_000_000, 123_456_789)),
            ("1700000000.1234567891234", t(1_700_000_000, 123_456_789)),
            ("12.5", t(12, 500_000_000)),
            ("-1.25", t(-2, 750_000_000)),
            ("-1", t(-1, 0)),
            ("1e300", Err(())),
            ("", Err(())),
            (".5", Err(())),
            ("5.", Err(())),
            ("1.x", Err(())),
            ("--1", Err(())),
            ("99999999999999999999", Err(())),
        ];
        for (v, want) in table {
            assert_eq!(pax_time(v.as_bytes()).map_err(|_| ()), *want, "{v}");
        }
    }
}
