//! The first check GNU tar makes of an archive, before reading on: is it
//! one at all? An empty stream, one shorter than a block, or a first block
//! that is neither all zeros (an empty archive) nor a header whose checksum
//! holds is refused here, naming the layer; without this an empty file
//! would import as an empty image and a random one fail deep in the tar
//! reader, quoting its bytes.

use crate::OciError;
use std::io::Read;

/// Reads the first 512-byte block of `input` and returns it if the stream
/// is a tar archive; `layer` names it in the error.
pub(super) fn read(input: &mut dyn Read, layer: &str) -> Result<Vec<u8>, OciError> {
    let mut block = Vec::with_capacity(512);
    input
        .take(512)
        .read_to_end(&mut block)
        .map_err(|source| OciError::Stream {
            layer: layer.to_owned(),
            what: "could not read the tar".into(),
            source,
        })?;
    let not_tar = |reason: String| OciError::Invalid {
        what: layer.to_owned(),
        reason: format!("not a tar archive: {reason}"),
    };
    match block.len() {
        0 => return Err(not_tar("it is empty".into())),
        n if n < 512 => {
            return Err(not_tar(format!(
                "{n} bytes, less than one 512-byte tar block"
            )))
        }
        _ => {}
    }
    if block.iter().all(|&b| b == 0) || header_checksum_holds(&block) {
        Ok(block)
    } else {
        Err(not_tar(
            "its first 512 bytes are no tar header (the checksum does not match)".into(),
        ))
    }
}

/// The ustar/GNU header checksum: the sum of the header's bytes with the
/// checksum field (bytes 148..156) counted as spaces equals the octal
/// number in that field (unsigned sums; some old tars used signed ones).
pub(super) fn header_checksum_holds(header: &[u8]) -> bool {
    let field = &header[148..156];
    let text: String = field
        .iter()
        .map(|&b| b as char)
        .take_while(|c| *c != '\0')
        .collect();
    let Ok(stored) = u32::from_str_radix(text.trim(), 8) else {
        return false;
    };
    let sum = |signed: bool| -> i64 {
        header
            .iter()
            .enumerate()
            .map(|(i, &b)| match (i, signed) {
                (148..=155, _) => i64::from(b' '),
                (_, true) => i64::from(b as i8),
                (_, false) => i64::from(b),
            })
            .sum()
    };
    i64::from(stored) == sum(false) || i64::from(stored) == sum(true)
}
