//! Pieces of tar archives that tests write by hand.

/// The body of a PAX extended header (`x`/`g`) holding `records`, each
/// `"LEN KEY=VALUE\n"` where LEN counts the whole record, its own digits
/// included.
pub fn pax_records(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in records {
        let rest = k.len() + v.len() + 3;
        let mut len = rest + 1;
        while format!("{len}").len() + rest != len {
            len += 1;
        }
        body.extend_from_slice(format!("{len} {k}=").as_bytes());
        body.extend_from_slice(v);
        body.push(b'\n');
    }
    body
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_record_counts_its_own_length() {
        assert_eq!(super::pax_records(&[("path", b"a")]), b"9 path=a\n");
        // 99 bytes besides the length: two digits would make 101, which
        // has three, so the record is 102 bytes long.
        let v = vec![b'v'; 95];
        let body = super::pax_records(&[("k", &v)]);
        assert_eq!(&body[..4], b"102 ");
        assert_eq!(body.len(), 102);
    }
}
