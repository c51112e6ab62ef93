//! Escaping of dumpfile fields, as C composefs reads (`mkcomposefs`'s
//! `unescape_string`) and writes them (`composefs-info`'s `print_escaped`).
//!
//! A dumpfile is a line per inode with fields separated by single spaces, so
//! every byte that could be read as a separator or is not printable is written
//! as an escape: `\\`, `\n`, `\r`, `\t`, or `\xHH` for anything outside the
//! graphic ASCII range (`0x21..=0x7e`), which includes the space. Reading
//! accepts exactly those escapes (hex digits in either case) and rejects any
//! other backslash sequence. Optional fields hold a lone `-` for "none", so a
//! value that is exactly `-` is written `\x2d`; xattr names and values escape
//! `=` as `\x3d` because the first `=` separates the two.

use std::fmt;

/// A backslash escape that C composefs would not accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnescapeError {
    /// The field ends right after a backslash.
    TrailingBackslash,
    /// `\x` is not followed by two more bytes.
    ShortHexEscape,
    /// `\x` is followed by something other than two hex digits.
    InvalidHexEscape,
    /// A backslash followed by a byte with no escape meaning.
    UnknownEscape(u8),
}

impl fmt::Display for UnescapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnescapeError::TrailingBackslash => f.write_str("no character after escape"),
            UnescapeError::ShortHexEscape => f.write_str("no hex characters after hex escape"),
            UnescapeError::InvalidHexEscape => {
                f.write_str("invalid hex characters after hex escape")
            }
            UnescapeError::UnknownEscape(c) => {
                write!(
                    f,
                    "unsupported escape \\{}",
                    char::from(*c).escape_default()
                )
            }
        }
    }
}

impl std::error::Error for UnescapeError {}

/// Decodes the escapes of one field.
pub fn unescape(field: &[u8]) -> Result<Vec<u8>, UnescapeError> {
    let mut out = Vec::with_capacity(field.len());
    let mut bytes = field.iter().copied();
    while let Some(c) = bytes.next() {
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let kind = bytes.next().ok_or(UnescapeError::TrailingBackslash)?;
        out.push(match kind {
            b'\\' => b'\\',
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'x' => {
                let hi = bytes.next().ok_or(UnescapeError::ShortHexEscape)?;
                let lo = bytes.next().ok_or(UnescapeError::ShortHexEscape)?;
                match (hex_value(hi), hex_value(lo)) {
                    (Some(hi), Some(lo)) => hi << 4 | lo,
                    _ => return Err(UnescapeError::InvalidHexEscape),
                }
            }
            other => return Err(UnescapeError::UnknownEscape(other)),
        });
    }
    Ok(out)
}

/// Decodes an optional field: a lone `-` is `None`. An empty field is
/// `Some` of nothing, as in C.
pub fn unescape_optional(field: &[u8]) -> Result<Option<Vec<u8>>, UnescapeError> {
    if field == b"-" {
        Ok(None)
    } else {
        unescape(field).map(Some)
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Which extra escaping a field gets on top of the standard rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Style {
    /// Leave spaces unescaped (`composefs-info ls` only; never in a dump).
    pub keep_space: bool,
    /// Escape `=` (xattr names and values).
    pub equal: bool,
    /// Write a value that is exactly `-` as `\x2d` (optional fields).
    pub lone_dash: bool,
}

impl Style {
    /// Paths: only the standard escapes.
    pub const PATH: Style = Style {
        keep_space: false,
        equal: false,
        lone_dash: false,
    };
    /// Optional fields (payload, content): a lone `-` is escaped.
    pub const OPTIONAL: Style = Style {
        keep_space: false,
        equal: false,
        lone_dash: true,
    };
    /// Xattr names and values: `=` is escaped.
    pub const XATTR: Style = Style {
        keep_space: false,
        equal: true,
        lone_dash: false,
    };
}

/// Appends `value` to `out` escaped as `composefs-info dump` writes it.
pub fn escape_into(out: &mut Vec<u8>, value: &[u8], style: Style) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if style.lone_dash && value == b"-" {
        out.extend_from_slice(b"\\x2d");
        return;
    }
    for &c in value {
        let printable = if style.keep_space {
            (0x20..=0x7e).contains(&c)
        } else {
            (0x21..=0x7e).contains(&c)
        };
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'=' if style.equal => out.extend_from_slice(b"\\x3d"),
            _ if printable => out.push(c),
            _ => out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 15)],
            ]),
        }
    }
}

/// `value` escaped as `composefs-info dump` writes it.
pub fn escape(value: &[u8], style: Style) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    escape_into(&mut out, value, style);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    type Case = (&'static [u8], Result<&'static [u8], UnescapeError>);

    #[test]
    fn unescape_table() {
        let cases: &[Case] = &[
            (b"", Ok(b"")),
            (b"plain", Ok(b"plain")),
            (b"a\\\\b", Ok(b"a\\b")),
            (b"\\n\\r\\t", Ok(b"\n\r\t")),
            (b"\\x00\\xff\\xAb", Ok(b"\x00\xff\xab")),
            (b"\\x20", Ok(b" ")),
            (b"-", Ok(b"-")),
            (b"a\\", Err(UnescapeError::TrailingBackslash)),
            (b"\\x", Err(UnescapeError::ShortHexEscape)),
            (b"\\x4", Err(UnescapeError::ShortHexEscape)),
            (b"\\xg0", Err(UnescapeError::InvalidHexEscape)),
            (b"\\x0g", Err(UnescapeError::InvalidHexEscape)),
            (b"\\a", Err(UnescapeError::UnknownEscape(b'a'))),
            (b"\\0", Err(UnescapeError::UnknownEscape(b'0'))),
            (b"\\=", Err(UnescapeError::UnknownEscape(b'='))),
        ];
        for (input, want) in cases {
            let got = unescape(input);
            assert_eq!(
                got.as_deref().map_err(Clone::clone),
                want.clone(),
                "unescape({:?})",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn optional_fields() {
        assert_eq!(unescape_optional(b"-"), Ok(None));
        assert_eq!(unescape_optional(b""), Ok(Some(vec![])));
        assert_eq!(unescape_optional(b"\\x2d"), Ok(Some(b"-".to_vec())));
        assert_eq!(unescape_optional(b"--"), Ok(Some(b"--".to_vec())));
    }

    #[test]
    fn escape_table() {
        let cases: &[(&[u8], Style, &[u8])] = &[
            (b"/a b", Style::PATH, b"/a\\x20b"),
            (b"a=b", Style::PATH, b"a=b"),
            (b"a=b", Style::XATTR, b"a\\x3db"),
            (b"-", Style::PATH, b"-"),
            (b"-", Style::XATTR, b"-"),
            (b"-", Style::OPTIONAL, b"\\x2d"),
            (b"--", Style::OPTIONAL, b"--"),
            (b"\\\n\r\t", Style::PATH, b"\\\\\\n\\r\\t"),
            (
                b"\x00\x1f\x7f\x80\xff",
                Style::PATH,
                b"\\x00\\x1f\\x7f\\x80\\xff",
            ),
            (b"~!", Style::PATH, b"~!"),
            (
                b"a b",
                Style {
                    keep_space: true,
                    ..Style::PATH
                },
                b"a b",
            ),
        ];
        for (input, style, want) in cases {
            assert_eq!(
                escape(input, *style),
                want.to_vec(),
                "escape({:?}, {style:?})",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        for style in [Style::PATH, Style::OPTIONAL, Style::XATTR] {
            let escaped = escape(&all, style);
            assert!(!escaped.contains(&b' ') && !escaped.contains(&b'\n'));
            assert_eq!(unescape(&escaped).unwrap(), all);
        }
        for style in [Style::PATH, Style::OPTIONAL, Style::XATTR] {
            for b in 0..=255u8 {
                assert_eq!(unescape(&escape(&[b], style)).unwrap(), [b]);
            }
        }
        assert_eq!(
            unescape_optional(&escape(b"-", Style::OPTIONAL)).unwrap(),
            Some(b"-".to_vec())
        );
    }
}
