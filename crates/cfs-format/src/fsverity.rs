//! fs-verity digests (sha256, 4096-byte blocks, no salt) computed in userspace,
//! exactly as the kernel's `FS_IOC_MEASURE_VERITY` reports them.
//!
//! The file is cut into 4096-byte blocks (the last one zero-padded); each level
//! of the Merkle tree hashes the blocks of the level below into 32-byte hashes
//! packed 128 to a block, until one block remains. The root hash is the sha256
//! of that block (all zeros for an empty file). The digest is the sha256 of the
//! 256-byte `fsverity_descriptor` holding the root hash and the file size.
//! `sha2` picks the SHA-NI instructions at run time where the CPU has them.
//!
//! [`digest_reader`] (and [`FsVerityHasher::update_from`]) is the one way a
//! file or stream is measured: it drives a caller's [`Read`] and does no I/O
//! of its own.

use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

/// The Merkle tree block size.
pub const BLOCK_SIZE: usize = 4096;
const HASH_SIZE: usize = 32;
/// Bytes [`FsVerityHasher::update_from`] asks for at a time: a multiple of
/// [`BLOCK_SIZE`], so that full reads are hashed where they land, never copied.
const READ_CHUNK: usize = 64 * BLOCK_SIZE;

/// A sha256 fs-verity digest: names an object and verifies its content.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest as 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        s
    }

    /// The object path relative to an object store: `ab/cdef...` (62 hex characters after the slash).
    pub fn object_path(&self) -> String {
        let hex = self.to_hex();
        format!("{}/{}", &hex[..2], &hex[2..])
    }

    /// Parses 64 hex characters (either case).
    pub fn from_hex(s: &[u8]) -> Result<Self, DigestParseError> {
        if s.len() != 64 {
            return Err(DigestParseError::Length(s.len()));
        }
        let mut out = [0u8; 32];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or(DigestParseError::NotHex)?;
            let lo = hex_val(pair[1]).ok_or(DigestParseError::NotHex)?;
            out[i] = hi << 4 | lo;
        }
        Ok(Digest(out))
    }

    /// Parses an object path: exactly what [`Digest::object_path`] writes,
    /// 2 lowercase hex digits, `/`, the other 62, and nothing else (no
    /// leading `/`, no uppercase, no suffix). An overlay redirect is `/`
    /// followed by an object path; a payload is an object path.
    pub fn from_object_path(path: &[u8]) -> Option<Self> {
        if path.len() != 65 || path[2] != b'/' {
            return None;
        }
        let mut hex = path[..2].iter().chain(&path[3..]).copied();
        let mut out = [0u8; 32];
        for b in &mut out {
            let hi = lower_hex_val(hex.next()?)?;
            let lo = lower_hex_val(hex.next()?)?;
            *b = hi << 4 | lo;
        }
        Some(Digest(out))
    }

    /// Parses an object path that may name its object with a suffix, as
    /// ostree's object store does (`ab/cdef….file`, which ostree's composefs
    /// images redirect to): the object path proper ([`Self::from_object_path`])
    /// and the suffix, empty or `.` and 1 to 15 lowercase letters or digits.
    /// With a suffix the hex names the object and need not be its fs-verity
    /// digest (the metacopy xattr holds that).
    pub fn from_object_path_with_suffix(path: &[u8]) -> Option<(Self, &[u8])> {
        let (name, suffix) = path.split_at_checked(65)?;
        let suffix_ok = match suffix {
            [] => true,
            [b'.', rest @ ..] => {
                (1..16).contains(&rest.len())
                    && rest
                        .iter()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            }
            _ => false,
        };
        suffix_ok.then_some(())?;
        Some((Self::from_object_path(name)?, suffix))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => lower_hex_val(c),
    }
}

/// A digit of the lowercase hex objects are named in.
fn lower_hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl FromStr for Digest {
    type Err = DigestParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::from_hex(s.as_bytes())
    }
}

/// A digest string that is not 64 hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestParseError {
    /// Wrong length.
    #[error("a digest has 64 hex characters, not {0}")]
    Length(usize),
    /// A character that is not hex.
    #[error("a digest holds only hex characters")]
    NotHex,
}

/// One level of the Merkle tree being built: hashes not yet packed into a full block.
#[derive(Default, Clone)]
struct Level {
    pending: Vec<u8>,
    blocks_done: u64,
}

/// Streaming fs-verity hasher: feed bytes with [`update`](Self::update), get the
/// digest from [`finish`](Self::finish). Memory is one block per tree level.
#[derive(Clone)]
pub struct FsVerityHasher {
    block: Vec<u8>,
    size: u64,
    levels: Vec<Level>,
}

impl Default for FsVerityHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl FsVerityHasher {
    /// A hasher for an empty stream.
    pub fn new() -> Self {
        FsVerityHasher {
            block: Vec::with_capacity(BLOCK_SIZE),
            size: 0,
            levels: Vec::new(),
        }
    }

    /// Feeds more bytes of the stream.
    pub fn update(&mut self, mut data: &[u8]) {
        self.size += data.len() as u64;
        if !self.block.is_empty() {
            let take = (BLOCK_SIZE - self.block.len()).min(data.len());
            self.block.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.block.len() == BLOCK_SIZE {
                let h = hash_block(&self.block);
                self.push_hash(0, &h);
                self.block.clear();
            }
        }
        let mut chunks = data.chunks_exact(BLOCK_SIZE);
        for chunk in &mut chunks {
            let h = hash_block(chunk);
            self.push_hash(0, &h);
        }
        self.block.extend_from_slice(chunks.remainder());
    }

    /// Feeds everything `reader` yields, up to its end (a read interrupted by
    /// a signal is retried); returns how many bytes that was.
    pub fn update_from(&mut self, mut reader: impl Read) -> io::Result<u64> {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut total = 0u64;
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => {
                    self.update(&buf[..n]);
                    total += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn push_hash(&mut self, level: usize, hash: &[u8; HASH_SIZE]) {
        if self.levels.len() <= level {
            self.levels.resize(level + 1, Level::default());
        }
        let l = &mut self.levels[level];
        l.pending.extend_from_slice(hash);
        if l.pending.len() == BLOCK_SIZE {
            let h = hash_block(&l.pending);
            l.pending.clear();
            l.blocks_done += 1;
            self.push_hash(level + 1, &h);
        }
    }

    /// The Merkle tree root hash of everything fed so far.
    fn root_hash(mut self) -> [u8; HASH_SIZE] {
        if self.size == 0 {
            return [0; HASH_SIZE];
        }
        if !self.block.is_empty() {
            let h = hash_block(&self.block);
            self.push_hash(0, &h);
        }
        let mut i = 0;
        loop {
            let top = i + 1 == self.levels.len();
            let l = &self.levels[i];
            if top && l.blocks_done == 0 && l.pending.len() == HASH_SIZE {
                let mut root = [0; HASH_SIZE];
                root.copy_from_slice(&l.pending);
                return root;
            }
            if !l.pending.is_empty() {
                let h = hash_block(&l.pending);
                self.levels[i].pending.clear();
                self.levels[i].blocks_done += 1;
                self.push_hash(i + 1, &h);
            }
            i += 1;
        }
    }

    /// The fs-verity digest of everything fed so far.
    pub fn finish(self) -> Digest {
        let size = self.size;
        let root = self.root_hash();
        // struct fsverity_descriptor
        let mut desc = [0u8; 256];
        desc[0] = 1; // version
        desc[1] = 1; // FS_VERITY_HASH_ALG_SHA256
        desc[2] = 12; // log2(block size)
        desc[3] = 0; // salt size
        desc[8..16].copy_from_slice(&size.to_le_bytes());
        desc[16..16 + HASH_SIZE].copy_from_slice(&root);
        Digest(Sha256::digest(desc).into())
    }
}

/// sha256 of one block, zero-padded to [`BLOCK_SIZE`].
fn hash_block(data: &[u8]) -> [u8; HASH_SIZE] {
    let mut h = Sha256::new();
    h.update(data);
    if data.len() < BLOCK_SIZE {
        const ZEROS: [u8; BLOCK_SIZE] = [0; BLOCK_SIZE];
        h.update(&ZEROS[data.len()..]);
    }
    h.finalize().into()
}

/// The fs-verity digest of a byte slice.
pub fn digest(data: &[u8]) -> Digest {
    let mut h = FsVerityHasher::new();
    h.update(data);
    h.finish()
}

/// The fs-verity digest of everything `reader` yields, read to its end: how
/// a file or stream is measured (an object, an image, `cfs measure`).
pub fn digest_reader(reader: impl Read) -> io::Result<Digest> {
    let mut h = FsVerityHasher::new();
    h.update_from(reader)?;
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `piece` bytes a read and is
    /// interrupted before every other one, then fails if `fail` is set.
    struct Awkward<'a> {
        data: &'a [u8],
        piece: usize,
        interrupt: bool,
        fail: bool,
    }

    impl Read for Awkward<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(io::ErrorKind::Interrupted.into());
            }
            if self.data.is_empty() && self.fail {
                return Err(io::Error::other("disk on fire"));
            }
            let n = self.piece.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn reader_digest_equals_slice_digest() {
        let data: Vec<u8> = (0..1_100_000u32).map(|i| (i * 31 + 7) as u8).collect();
        // (length, bytes per read)
        let table = [
            (0, 1),
            (1, 1),
            (12, 5),
            (BLOCK_SIZE - 1, 4096),
            (BLOCK_SIZE, 4096),
            (BLOCK_SIZE + 1, 1000),
            (128 * BLOCK_SIZE, READ_CHUNK),
            (128 * BLOCK_SIZE + 1, 4093),
            (READ_CHUNK + 17, usize::MAX),
            (data.len(), 65_537),
        ];
        for (len, piece) in table {
            let data = &data[..len];
            let reader = Awkward {
                data,
                piece,
                interrupt: false,
                fail: false,
            };
            let got = digest_reader(reader).unwrap();
            assert_eq!(got, digest(data), "{len} bytes, {piece} a read");
            let mut h = FsVerityHasher::new();
            assert_eq!(h.update_from(data).unwrap(), len as u64);
            assert_eq!(h.finish(), digest(data));
        }
        let known = digest_reader(&b"hello world\n"[..]).unwrap();
        assert_eq!(
            known.to_hex(),
            "37061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92"
        );
    }

    #[test]
    fn reader_errors_are_returned() {
        let reader = Awkward {
            data: b"some bytes",
            piece: 3,
            interrupt: false,
            fail: true,
        };
        let e = digest_reader(reader).unwrap_err();
        assert_eq!(e.to_string(), "disk on fire");
    }

    #[test]
    fn hello_world_vector() {
        assert_eq!(
            digest(b"hello world\n").to_hex(),
            "37061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92"
        );
    }

    #[test]
    fn empty_file_is_kernel_value() {
        assert_eq!(
            digest(b"").to_hex(),
            "3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95"
        );
    }

    #[test]
    fn streaming_in_odd_pieces_equals_one_shot() {
        let data: Vec<u8> = (0..600_000u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut h = FsVerityHasher::new();
        for piece in data.chunks(4093) {
            h.update(piece);
        }
        assert_eq!(h.finish(), digest(&data));
    }

    #[test]
    fn hex_round_trip_and_object_path() {
        for data in [&b""[..], b"x", b"hello world\n"] {
            let d = digest(data);
            assert_eq!(Digest::from_hex(d.to_hex().as_bytes()), Ok(d));
            assert_eq!(
                Digest::from_hex(d.to_hex().to_uppercase().as_bytes()),
                Ok(d)
            );
            assert_eq!(
                Digest::from_object_path(d.object_path().as_bytes()),
                Some(d)
            );
        }
        assert_eq!(Digest::from_hex(b"12"), Err(DigestParseError::Length(2)));
        assert_eq!(Digest::from_hex(&[b'g'; 64]), Err(DigestParseError::NotHex));
    }

    #[test]
    fn object_paths_table() {
        const HEX62: &str = "9a256e79a69a2acb500de542f004320630257f9481c2ec3d41ca4635106a11";
        let want = Digest::from_hex(format!("b0{HEX62}").as_bytes()).unwrap();
        let upper = HEX62.to_uppercase();
        // (path, parses)
        let table: &[(String, bool)] = &[
            (format!("b0/{HEX62}"), true),
            (format!("B0/{HEX62}"), false),
            (format!("b0/{upper}"), false),
            (format!("b0/{}A", &HEX62[..61]), false),
            (format!("/b0/{HEX62}"), false),
            (format!("//b0/{HEX62}"), false),
            (format!("b0{HEX62}"), false),
            (format!("b0{HEX62}0"), false),
            (format!("b0/{}", &HEX62[1..]), false),
            (format!("b0/{HEX62}0"), false),
            (format!("b/0{HEX62}"), false),
            (format!("b0//{HEX62}"), false),
            (format!("b0/{HEX62}/"), false),
            (format!("b0/{HEX62}/x"), false),
            (format!("x/b0/{HEX62}"), false),
            (format!("b0/{}/{}", &HEX62[..2], &HEX62[2..]), false),
            (format!("b0/{HEX62}.file"), false),
            (format!("b0/{}\0", &HEX62[..61]), false),
            (format!("b0/{}g", &HEX62[..61]), false),
            (format!("../{HEX62}"), false),
            ("../../etc/passwd".to_owned(), false),
            ("/".to_owned(), false),
            (String::new(), false),
        ];
        for (path, ok) in table {
            let got = Digest::from_object_path(path.as_bytes());
            assert_eq!(got, ok.then_some(want), "{path:?}");
            let with_suffix = Digest::from_object_path_with_suffix(path.as_bytes());
            if *ok {
                assert_eq!(with_suffix, Some((want, &b""[..])), "{path:?}");
            }
        }
        // (suffix, accepted)
        for (suffix, ok) in [
            (".file", true),
            (".dirtree9", true),
            (".", false),
            (".File", false),
            ("file", false),
            (".a/b", false),
            ("./", false),
            (".x\0", false),
            (".sixteen-letters", false),
            (".fifteenletters", true),
        ] {
            let path = format!("b0/{HEX62}{suffix}");
            let got = Digest::from_object_path_with_suffix(path.as_bytes());
            assert_eq!(got, ok.then_some((want, suffix.as_bytes())), "{path:?}");
        }
    }
}
