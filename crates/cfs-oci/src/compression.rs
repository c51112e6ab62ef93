//! A layer's stream, decompressed: gzip and zstd are recognised by their
//! magic bytes (media types are not trusted: docker archives say nothing),
//! anything else is read as a plain tar.
//!
//! A compressed layer is read to its end, all of it: gzip members and zstd
//! frames back to back are one stream (`zstd:chunked` layers are many
//! frames), skippable zstd frames carry nothing, and bytes after the last
//! member or frame that are not another one are an error. (`ruzstd`'s own
//! reader decodes one frame and stops there, silently: a layer cut to its
//! first frame, which the `tar_import` fuzz target found as `cfs import-tar`
//! and `cfs oci pull` disagreeing on one input.)

use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
use std::io::{self, BufRead, BufReader, Read};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The decompressed stream of a layer (see the module doc).
pub fn decompress<'a, R: Read + 'a>(reader: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut buf = BufReader::with_capacity(256 * 1024, reader);
    let head = buf.fill_buf()?;
    if head.starts_with(&GZIP_MAGIC) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(buf)))
    } else if head.starts_with(&ZSTD_MAGIC) {
        Ok(Box::new(ZstdFrames::new(buf)))
    } else {
        Ok(Box::new(buf))
    }
}

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {what}"))
}

/// Every frame of a zstd stream, one after the other (RFC 8878, section 3:
/// a stream is frames back to back).
pub struct ZstdFrames<R> {
    input: R,
    decoder: FrameDecoder,
    /// A frame is being decoded (else: between frames).
    in_frame: bool,
}

impl<R: BufRead> ZstdFrames<R> {
    /// The frames of `input`, which starts with one.
    pub fn new(input: R) -> ZstdFrames<R> {
        ZstdFrames {
            input,
            decoder: FrameDecoder::new(),
            in_frame: false,
        }
    }

    /// Between frames: starts the next one, skipping skippable frames;
    /// false at the end of the input.
    fn next_frame(&mut self) -> io::Result<bool> {
        loop {
            if self.input.fill_buf()?.is_empty() {
                return Ok(false);
            }
            match self.decoder.init(&mut self.input) {
                Ok(()) => return Ok(true),
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    let skipped =
                        io::copy(&mut (&mut self.input).take(length.into()), &mut io::sink())?;
                    if skipped != u64::from(length) {
                        return Err(invalid("a skippable frame ends early"));
                    }
                }
                Err(e) => return Err(invalid(format!("after a frame, not another one: {e}"))),
            }
        }
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if !self.next_frame()? {
                    return Ok(0);
                }
                self.in_frame = true;
            }
            // As ruzstd's StreamingDecoder reads one frame.
            while self.decoder.can_collect() < buf.len() && !self.decoder.is_finished() {
                let want = buf.len() - self.decoder.can_collect();
                self.decoder
                    .decode_blocks(&mut self.input, BlockDecodingStrategy::UptoBytes(want))
                    .map_err(invalid)?;
            }
            let n = self.decoder.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if self.decoder.is_finished() && self.decoder.can_collect() == 0 {
                self.in_frame = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruzstd::encoding::{compress_to_vec, CompressionLevel};

    fn zstd(data: &[u8]) -> Vec<u8> {
        compress_to_vec(data, CompressionLevel::Fastest)
    }

    /// A skippable frame (magic 0x184D2A5?) holding `n` bytes.
    fn skippable(n: u32) -> Vec<u8> {
        let mut f = 0x184D_2A53u32.to_le_bytes().to_vec();
        f.extend_from_slice(&n.to_le_bytes());
        f.extend(std::iter::repeat_n(0xaa, n as usize));
        f
    }

    fn read_all(stream: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        decompress(stream)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn every_zstd_frame_is_read() {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        // (stream, what it decompresses to)
        let table: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (zstd(b"one"), b"one".to_vec()),
            ([zstd(b"one"), zstd(b"two")].concat(), b"onetwo".to_vec()),
            (
                [zstd(b"a"), skippable(10), zstd(b"b")].concat(),
                b"ab".to_vec(),
            ),
            (
                [zstd(&big), zstd(b""), zstd(&big)].concat(),
                [&big[..], &big[..]].concat(),
            ),
            ([zstd(b"x"), skippable(0)].concat(), b"x".to_vec()),
        ];
        for (stream, want) in table {
            assert_eq!(read_all(&stream).unwrap(), want);
        }
    }

    #[test]
    fn bytes_after_the_last_frame_are_an_error() {
        for stream in [
            [zstd(b"one"), vec![0u8; 100]].concat(),
            [zstd(b"one"), b"garbage".to_vec()].concat(),
            [zstd(b"one"), skippable(10)[..12].to_vec()].concat(),
            zstd(b"one")[..6].to_vec(),
        ] {
            assert!(read_all(&stream).is_err(), "{stream:?}");
        }
    }

    #[test]
    fn gzip_members_and_plain_tars() {
        use flate2::write::GzEncoder;
        use std::io::Write;
        let gz = |d: &[u8]| {
            let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(d).unwrap();
            e.finish().unwrap()
        };
        assert_eq!(read_all(&[gz(b"a"), gz(b"b")].concat()).unwrap(), b"ab");
        assert!(read_all(&[gz(b"a"), b"garbage".to_vec()].concat()).is_err());
        assert_eq!(read_all(b"plain").unwrap(), b"plain");
    }
}
