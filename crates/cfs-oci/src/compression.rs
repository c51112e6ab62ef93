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
//!
//! **What it expands to is bounded.** A few bytes of zstd can stand for
//! gigabytes of zeros, which the import would hash and store. So the bytes
//! a compressed layer decompresses to are charged to its image, with the
//! compressed bytes read so far ([`ImageCharge::expand`]): past
//! [`Limits::max_expansion_ratio`](crate::limits::Limits::max_expansion_ratio)
//! (once past `expansion_floor`) the stream fails, naming the layer and the
//! ratio.

use crate::limits::ImageCharge;
use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
use std::cell::Cell;
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The decompressed stream of the layer `layer` (see the module doc), its
/// expansion charged to `image`.
pub fn decompress<'a, R: Read + 'a>(
    reader: R,
    layer: &str,
    image: &'a ImageCharge,
) -> io::Result<Box<dyn Read + 'a>> {
    let read = Rc::new(Cell::new(0));
    let counted = Counted {
        inner: reader,
        read: read.clone(),
    };
    let mut buf = BufReader::with_capacity(256 * 1024, counted);
    let head = buf.fill_buf()?;
    let bounded = |inner: Box<dyn Read + 'a>| -> Box<dyn Read + 'a> {
        Box::new(Expansion {
            inner,
            layer: layer.to_owned(),
            read,
            charged: 0,
            decompressed: 0,
            image,
        })
    };
    if head.starts_with(&GZIP_MAGIC) {
        Ok(bounded(Box::new(flate2::bufread::MultiGzDecoder::new(buf))))
    } else if head.starts_with(&ZSTD_MAGIC) {
        Ok(bounded(Box::new(ZstdFrames::new(buf))))
    } else {
        Ok(Box::new(buf))
    }
}

/// Counts the compressed bytes read.
struct Counted<R> {
    inner: R,
    read: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// Charges what a decompressor gives, and the compressed bytes read for it,
/// to the image (see the module doc).
struct Expansion<'a> {
    inner: Box<dyn Read + 'a>,
    layer: String,
    /// Compressed bytes read ([`Counted`]).
    read: Rc<Cell<u64>>,
    /// Of those, already charged.
    charged: u64,
    /// Bytes this layer decompressed to.
    decompressed: u64,
    image: &'a ImageCharge,
}

impl Read for Expansion<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let read = self.read.get();
        self.decompressed += n as u64;
        let charged = self.image.expand(read - self.charged, n as u64);
        self.charged = read;
        charged.map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "layer {} decompresses to more than {} times its compressed size \
                     ({} bytes from {read}): {e} (checked once the image's layers \
                     decompress to more than expansion_floor = {} bytes)",
                    self.layer,
                    self.image.limits().max_expansion_ratio,
                    self.decompressed,
                    self.image.limits().expansion_floor,
                ),
            )
        })?;
        Ok(n)
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
    use crate::limits::Limits;
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
        read_with(stream, &Limits::default())
    }

    fn read_with(stream: &[u8], limits: &Limits) -> io::Result<Vec<u8>> {
        let image = ImageCharge::new(limits);
        let mut out = Vec::new();
        decompress(stream, "L", &image)?.read_to_end(&mut out)?;
        Ok(out)
    }

    /// The 263 KiB `.tar.zst` that wrote 8 GiB, scaled down to the limits.
    #[test]
    fn expansion_over_the_ratio_is_refused() {
        let limits = Limits {
            max_expansion_ratio: 100,
            expansion_floor: 1 << 20,
            ..Limits::default()
        };
        let zeros = vec![0u8; 4 << 20];
        let gzip = |d: &[u8]| {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            e.write_all(d).unwrap();
            e.finish().unwrap()
        };
        let varied: Vec<u8> = (0..4u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        // (stream, refused)
        let table: Vec<(Vec<u8>, bool)> = vec![
            (zstd(&zeros), true),
            (gzip(&zeros), true),
            // Under the floor, any ratio.
            (zstd(&zeros[..1 << 20]), false),
            // Real data compresses far less.
            (zstd(&varied), false),
            (gzip(&varied), false),
            // A plain stream does not expand.
            (zeros.clone(), false),
        ];
        for (stream, refused) in table {
            let r = read_with(&stream, &limits);
            assert_eq!(r.is_err(), refused, "{} bytes: {r:?}", stream.len());
            if let Err(e) = r {
                let e = e.to_string();
                assert!(
                    e.contains("layer L") && e.contains("max_expansion_ratio = 100"),
                    "{e}"
                );
            }
        }
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
