//! The `tar_import` fuzz input: a small self-describing byte format that
//! describes up to three tar layers, entry by entry, and its serialisation
//! into real tar bytes.
//!
//! **Why a format of our own** (and not `arbitrary`): seeds come from the
//! conformance dumpfiles, so the format needs an encoder as well as a
//! decoder ([`Input::encode`] is the exact inverse of [`Input::decode`] on
//! what it produces), and kept regression inputs must keep meaning the same
//! thing whatever version of `arbitrary` is around. Decoding is total: any
//! bytes give an input (a field cut short reads as zeros), so the fuzzer
//! never wastes an execution on a parse error.
//!
//! **Layout.** A sequence of operations, each starting with one byte:
//!
//! ```text
//! op == 0xff  start the next layer (at most three; later breaks are ignored)
//! else op % 12:
//!   0..=8     an entry of type '0' '5' '2' '1' '3' '4' '6' '7' NUL (regular, directory,
//!             symlink, hard link, char, block, fifo, contiguous, old regular)
//!   9         an entry whose type byte follows (anything: 'x', 'L', 'S', 'V', unknown)
//!   10        a PAX global header: records
//!   11        raw bytes appended as they are: u16 length, bytes
//!
//! entry   := [type byte, op 9 only] path:PATH link:PATH mode:u32 uid:u64 gid:u64 mtime:u64
//!            flags:u8 [lie:i16, when flags & LIE] content major:u32 minor:u32 records
//! content := length:u16, then that many bytes (at most 8192), or, for length 0xffff,
//!            16 bytes repeated to a file of over 4 MiB (once per input: it streams
//!            into the store instead of being read into memory, and costs time)
//! records := count:u8, then count % 8 times
//! record  := kind:u8 key:u8-length bytes value:u16-length bytes
//!            kind % 8: 0 SCHILY.xattr.KEY, 1 path, 2 linkpath, 3 size, 4 mtime, 5 uid,
//!            6 gid, 7 KEY itself, except that a one-byte KEY below 11 names one of
//!            [`NAMED_KEYS`] (the GNU sparse records, atime, ctime)
//! PATH    := flags:u8 (bit 0: leading '/', bit 1: leading './') count:u8 (% 64) components
//! comp    := tag:u8, tag % 8: 0 `..`, 1 `.`, 2 empty, 3 `.wh..wh..opq`, 4 `.wh.`+u8-length
//!            bytes, 5 u8-length bytes, 6 a long name (byte:u8, length:u16), 7 WORDS[u8]
//! ```
//! Integers are little-endian. Entry `flags` choose how the header is
//! written (see the `F_*` constants): GNU or POSIX magic, GNU `L`/`K`
//! records or PAX for long names (or a ustar prefix split, or both kinds of
//! extension at once), a wrong checksum, a size field that lies, blank or
//! base-256 numeric fields, and extension records that are slightly off.

/// Components the fuzzer can name with one byte: names that collide, and
/// names of what sits around the repository in the scratch directory.
pub const WORDS: [&[u8]; 16] = [
    b"a",
    b"b",
    b"etc",
    b"passwd",
    b"bin",
    b"sh",
    b"usr",
    b"lib",
    b"tmp",
    b"outside",
    b"sentinel",
    b"repo",
    b"objects",
    b"images",
    b"src",
    b"proc",
];

/// PAX keys a record of kind 7 names with a one-byte key (its index): the
/// sparse-file records of every GNU format, and the times only checked.
pub const NAMED_KEYS: [&[u8]; 11] = [
    b"GNU.sparse.major",
    b"GNU.sparse.minor",
    b"GNU.sparse.size",
    b"GNU.sparse.realsize",
    b"GNU.sparse.numblocks",
    b"GNU.sparse.offset",
    b"GNU.sparse.numbytes",
    b"GNU.sparse.map",
    b"GNU.sparse.name",
    b"atime",
    b"ctime",
];

/// POSIX (`ustar\0` `00`) magic, else GNU (`ustar  \0`).
pub const F_POSIX: u8 = 1 << 0;
/// Long names: bits 1-2 pick 0 PAX, 1 GNU `L`/`K`, 2 ustar prefix split
/// (else cut at 100 bytes), 3 both PAX and GNU records, even for short names.
pub const F_LONG_SHIFT: u8 = 1;
/// A checksum off by one.
pub const F_BAD_CKSUM: u8 = 1 << 3;
/// The size field is the content length plus `lie`.
pub const F_LIE: u8 = 1 << 4;
/// uid, gid and mtime fields all blank (spaces).
pub const F_BLANK: u8 = 1 << 5;
/// Numeric fields in base-256 even when octal would fit.
pub const F_BASE256: u8 = 1 << 6;
/// GNU long-name records without their NUL, PAX record lengths one short.
pub const F_ODD_EXT: u8 = 1 << 7;

/// The layer break operation.
pub const OP_LAYER: u8 = 0xff;
/// Entry types of operations 0..=8.
const TYPES: [u8; 9] = [b'0', b'5', b'2', b'1', b'3', b'4', b'6', b'7', 0];
const OP_TYPED: u8 = 9;
const OP_GLOBAL: u8 = 10;
const OP_RAW: u8 = 11;
const OPS: u8 = 12;

/// Caps that keep one execution fast.
pub const MAX_OPS: usize = 256;
/// Content bytes of one entry.
pub const MAX_CONTENT: usize = 8192;
/// Bytes of one built path.
pub const MAX_PATH: usize = 16384;
/// Length of a "long name" component.
pub const MAX_LONG: usize = 8192;
/// Size of the large file (at least).
pub const BIG: usize = (4 << 20) + 1;
/// The content length that asks for the large file.
const BIG_LEN: u16 = 0xffff;
/// Bytes of the large file's pattern.
pub const BIG_PATTERN: usize = 16;
/// Most layers.
pub const MAX_LAYERS: usize = 3;

/// One component of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Comp {
    /// `..`
    DotDot,
    /// `.`
    Dot,
    /// Nothing (two slashes in a row, or a trailing slash).
    Empty,
    /// `.wh..wh..opq`
    Opaque,
    /// `.wh.NAME`
    Whiteout(Vec<u8>),
    /// A name (up to 255 bytes).
    Name(Vec<u8>),
    /// `len` times `byte`.
    Long(u8, u16),
    /// `WORDS[i % WORDS.len()]`.
    Word(u8),
}

/// A path: components joined by `/`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathSpec {
    /// Bit 0: leading `/`; bit 1: leading `./`.
    pub flags: u8,
    /// The components (at most 63).
    pub comps: Vec<Comp>,
}

/// A PAX record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pax {
    /// Which key (see the module doc).
    pub kind: u8,
    /// Key bytes (the xattr name for kind 0, the key for kind 7).
    pub key: Vec<u8>,
    /// Value.
    pub value: Vec<u8>,
}

/// One tar entry as the fuzzer describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// The tar type byte.
    pub typeflag: u8,
    /// Its path.
    pub path: PathSpec,
    /// Link target (written for every type; read for symlinks and hard links).
    pub link: PathSpec,
    /// The mode field.
    pub mode: u32,
    /// uid field.
    pub uid: u64,
    /// gid field.
    pub gid: u64,
    /// mtime field.
    pub mtime: u64,
    /// `F_*` bits.
    pub flags: u8,
    /// With [`F_LIE`], added to the size field.
    pub lie: i16,
    /// Data (at most [`MAX_CONTENT`] bytes), or with `big` the pattern
    /// ([`BIG_PATTERN`] bytes) of a file of over [`BIG`] bytes.
    pub content: Vec<u8>,
    /// A large file.
    pub big: bool,
    /// devmajor field.
    pub major: u32,
    /// devminor field.
    pub minor: u32,
    /// PAX records written in an `x` header before it (at most 7).
    pub pax: Vec<Pax>,
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// An entry, with its extension headers.
    Entry(Entry),
    /// A PAX global header.
    Global(Vec<Pax>),
    /// Bytes appended as they are (at most [`MAX_CONTENT`]).
    Raw(Vec<u8>),
    /// The next layer starts.
    Layer,
}

/// A whole input: operations, split into layers by [`Op::Layer`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Input {
    /// The operations in order.
    pub ops: Vec<Op>,
}

/// A cursor over the input that reads zeros past its end.
struct Cursor<'a> {
    data: &'a [u8],
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let got = self.take(N);
        out[..got.len()].copy_from_slice(got);
        out
    }
    fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
    fn bytes8(&mut self) -> Vec<u8> {
        let n = usize::from(self.u8());
        self.take(n).to_vec()
    }
    fn bytes16(&mut self, max: usize) -> Vec<u8> {
        let n = usize::from(self.u16()).min(max);
        self.take(n).to_vec()
    }
}

fn put8(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len().min(255);
    out.push(n as u8);
    out.extend_from_slice(&b[..n]);
}

fn put16(out: &mut Vec<u8>, b: &[u8], max: usize) {
    let n = b.len().min(max);
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend_from_slice(&b[..n]);
}

impl PathSpec {
    fn decode(c: &mut Cursor<'_>) -> PathSpec {
        let flags = c.u8();
        let count = c.u8() % 64;
        let mut comps = Vec::new();
        for _ in 0..count {
            if c.data.is_empty() {
                break;
            }
            comps.push(match c.u8() % 8 {
                0 => Comp::DotDot,
                1 => Comp::Dot,
                2 => Comp::Empty,
                3 => Comp::Opaque,
                4 => Comp::Whiteout(c.bytes8()),
                5 => Comp::Name(c.bytes8()),
                6 => Comp::Long(c.u8(), c.u16().min(MAX_LONG as u16)),
                _ => Comp::Word(c.u8()),
            });
        }
        PathSpec { flags, comps }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.flags);
        let comps = &self.comps[..self.comps.len().min(63)];
        out.push(comps.len() as u8);
        for comp in comps {
            match comp {
                Comp::DotDot => out.push(0),
                Comp::Dot => out.push(1),
                Comp::Empty => out.push(2),
                Comp::Opaque => out.push(3),
                Comp::Whiteout(n) => {
                    out.push(4);
                    put8(out, n);
                }
                Comp::Name(n) => {
                    out.push(5);
                    put8(out, n);
                }
                Comp::Long(b, n) => {
                    out.push(6);
                    out.push(*b);
                    out.extend_from_slice(&n.to_le_bytes());
                }
                Comp::Word(i) => {
                    out.push(7);
                    out.push(*i);
                }
            }
        }
    }

    /// The path's bytes (capped at [`MAX_PATH`]).
    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.flags & 1 != 0 {
            out.push(b'/');
        }
        if self.flags & 2 != 0 {
            out.extend_from_slice(b"./");
        }
        for (i, comp) in self.comps.iter().enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            match comp {
                Comp::DotDot => out.extend_from_slice(b".."),
                Comp::Dot => out.push(b'.'),
                Comp::Empty => {}
                Comp::Opaque => out.extend_from_slice(b".wh..wh..opq"),
                Comp::Whiteout(n) => {
                    out.extend_from_slice(b".wh.");
                    out.extend_from_slice(n);
                }
                Comp::Name(n) => out.extend_from_slice(n),
                Comp::Long(b, n) => out.resize(out.len() + usize::from(*n), *b),
                Comp::Word(i) => out.extend_from_slice(WORDS[usize::from(*i) % WORDS.len()]),
            }
            if out.len() > MAX_PATH {
                break;
            }
        }
        out.truncate(MAX_PATH);
        out
    }

    /// A path from its bytes, one name per component (for seeds).
    pub fn from_bytes(path: &[u8]) -> PathSpec {
        let (flags, rest) = match path.strip_prefix(b"/") {
            Some(r) => (1, r),
            None => (0, path),
        };
        let comps = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split(|&b| b == b'/')
                .map(|c| match c {
                    b"" => Comp::Empty,
                    c => Comp::Name(c.to_vec()),
                })
                .collect()
        };
        PathSpec { flags, comps }
    }
}

impl Pax {
    fn decode(c: &mut Cursor<'_>) -> Pax {
        Pax {
            kind: c.u8(),
            key: c.bytes8(),
            value: c.bytes16(MAX_CONTENT),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.kind);
        put8(out, &self.key);
        put16(out, &self.value, MAX_CONTENT);
    }

    /// The record's key.
    pub fn key(&self) -> Vec<u8> {
        let fixed: &[u8] = match self.kind % 8 {
            0 => return [&b"SCHILY.xattr."[..], &self.key].concat(),
            1 => b"path",
            2 => b"linkpath",
            3 => b"size",
            4 => b"mtime",
            5 => b"uid",
            6 => b"gid",
            _ => match self.key[..] {
                [i] if usize::from(i) < NAMED_KEYS.len() => NAMED_KEYS[usize::from(i)],
                _ => return self.key.clone(),
            },
        };
        fixed.to_vec()
    }

    /// An xattr record (for seeds).
    pub fn xattr(name: &[u8], value: &[u8]) -> Pax {
        Pax {
            kind: 0,
            key: name.to_vec(),
            value: value.to_vec(),
        }
    }
}

fn decode_records(c: &mut Cursor<'_>) -> Vec<Pax> {
    let n = c.u8() % 8;
    (0..n).map(|_| Pax::decode(c)).collect()
}

fn encode_records(records: &[Pax], out: &mut Vec<u8>) {
    let records = &records[..records.len().min(7)];
    out.push(records.len() as u8);
    for r in records {
        r.encode(out);
    }
}

impl Entry {
    fn decode(c: &mut Cursor<'_>, typeflag: u8) -> Entry {
        let path = PathSpec::decode(c);
        let link = PathSpec::decode(c);
        let mode = c.u32();
        let uid = c.u64();
        let gid = c.u64();
        let mtime = c.u64();
        let flags = c.u8();
        let lie = if flags & F_LIE != 0 {
            c.u16() as i16
        } else {
            0
        };
        let (content, big) = match c.u16() {
            BIG_LEN => (c.take(BIG_PATTERN).to_vec(), true),
            n => (c.take(usize::from(n).min(MAX_CONTENT)).to_vec(), false),
        };
        Entry {
            typeflag,
            path,
            link,
            mode,
            uid,
            gid,
            mtime,
            flags,
            lie,
            content,
            big,
            major: c.u32(),
            minor: c.u32(),
            pax: decode_records(c),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match TYPES.iter().position(|&t| t == self.typeflag) {
            Some(i) => out.push(i as u8),
            None => out.extend_from_slice(&[OP_TYPED, self.typeflag]),
        }
        self.path.encode(out);
        self.link.encode(out);
        out.extend_from_slice(&self.mode.to_le_bytes());
        out.extend_from_slice(&self.uid.to_le_bytes());
        out.extend_from_slice(&self.gid.to_le_bytes());
        out.extend_from_slice(&self.mtime.to_le_bytes());
        out.push(self.flags);
        if self.flags & F_LIE != 0 {
            out.extend_from_slice(&self.lie.to_le_bytes());
        }
        if self.big {
            out.extend_from_slice(&BIG_LEN.to_le_bytes());
            let mut pattern = self.content.clone();
            pattern.resize(BIG_PATTERN, 0);
            out.extend_from_slice(&pattern);
        } else {
            put16(out, &self.content, MAX_CONTENT);
        }
        out.extend_from_slice(&self.major.to_le_bytes());
        out.extend_from_slice(&self.minor.to_le_bytes());
        encode_records(&self.pax, out);
    }
}

impl Input {
    /// Reads any bytes as an input.
    pub fn decode(data: &[u8]) -> Input {
        let mut c = Cursor { data };
        let mut ops = Vec::new();
        while !c.data.is_empty() && ops.len() < MAX_OPS {
            let op = c.u8();
            ops.push(if op == OP_LAYER {
                Op::Layer
            } else {
                match op % OPS {
                    OP_TYPED => {
                        let t = c.u8();
                        Op::Entry(Entry::decode(&mut c, t))
                    }
                    OP_GLOBAL => Op::Global(decode_records(&mut c)),
                    OP_RAW => Op::Raw(c.bytes16(MAX_CONTENT)),
                    i => Op::Entry(Entry::decode(&mut c, TYPES[usize::from(i)])),
                }
            });
        }
        Input { ops }
    }

    /// The bytes [`decode`](Self::decode) reads back as this input (fields
    /// over their caps are cut).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for op in &self.ops {
            match op {
                Op::Entry(e) => e.encode(&mut out),
                Op::Global(r) => {
                    out.push(OP_GLOBAL);
                    encode_records(r, &mut out);
                }
                Op::Raw(b) => {
                    out.push(OP_RAW);
                    put16(&mut out, b, MAX_CONTENT);
                }
                Op::Layer => out.push(OP_LAYER),
            }
        }
        out
    }

    /// The layers as tar streams (1 to [`MAX_LAYERS`]), each ending with the
    /// two zero blocks of a tar's end.
    pub fn tars(&self) -> Vec<Vec<u8>> {
        let mut layers = vec![Vec::new()];
        let mut big_done = false;
        for op in &self.ops {
            let out = layers.last_mut().expect("one layer at least");
            match op {
                Op::Layer => {
                    if layers.len() < MAX_LAYERS {
                        layers.push(Vec::new());
                    }
                }
                Op::Raw(b) => out.extend_from_slice(b),
                Op::Global(records) => {
                    let data = pax_data(records.iter().map(|r| (r.key(), r.value.clone())), false);
                    let h = Header {
                        typeflag: b'g',
                        name: b"pax_global_header",
                        mode: 0o644,
                        ..Header::default()
                    };
                    h.write(out, data.len() as u64, 0);
                    put_data(out, &data);
                }
                Op::Entry(e) => write_entry(out, e, &mut big_done),
            }
        }
        for t in &mut layers {
            t.extend_from_slice(&[0u8; 1024]);
        }
        layers
    }
}

/// PAX records `LEN key=value\n`, where LEN counts the whole record (or,
/// `odd`, one less).
fn pax_data(records: impl Iterator<Item = (Vec<u8>, Vec<u8>)>, odd: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let body = k.len() + v.len() + 3; // ' ', '=', '\n'
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        let len = if odd { len - 1 } else { len };
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(&k);
        out.push(b'=');
        out.extend_from_slice(&v);
        out.push(b'\n');
    }
    out
}

fn put_data(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
}

/// What goes in one 512-byte header.
#[derive(Default)]
struct Header<'a> {
    typeflag: u8,
    name: &'a [u8],
    prefix: &'a [u8],
    link: &'a [u8],
    mode: u64,
    uid: u64,
    gid: u64,
    mtime: u64,
    major: u64,
    minor: u64,
    flags: u8,
}

/// A numeric field: octal with a NUL when it fits (and base-256 is not
/// asked for), else base-256 (high bit set, big-endian, cut to the field).
fn put_num(field: &mut [u8], v: u64, base256: bool) {
    let digits = field.len() - 1;
    let octal = format!("{v:0digits$o}");
    if !base256 && octal.len() <= digits {
        field[..digits].copy_from_slice(octal.as_bytes());
        field[digits] = 0;
    } else {
        field.fill(0);
        let be = v.to_be_bytes();
        let n = be.len().min(field.len() - 1);
        let len = field.len();
        field[len - n..].copy_from_slice(&be[be.len() - n..]);
        field[0] |= 0x80;
    }
}

impl Header<'_> {
    fn write(&self, out: &mut Vec<u8>, size: u64, lie: i16) {
        let mut h = [0u8; 512];
        let cut = |f: &mut [u8], b: &[u8]| {
            let n = b.len().min(f.len());
            f[..n].copy_from_slice(&b[..n]);
        };
        let b256 = self.flags & F_BASE256 != 0;
        cut(&mut h[0..100], self.name);
        put_num(&mut h[100..108], self.mode, b256);
        if self.flags & F_BLANK != 0 {
            h[108..124].fill(b' ');
            h[136..148].fill(b' ');
        } else {
            put_num(&mut h[108..116], self.uid, b256);
            put_num(&mut h[116..124], self.gid, b256);
            put_num(&mut h[136..148], self.mtime, b256);
        }
        let size = size.saturating_add_signed(i64::from(lie));
        put_num(&mut h[124..136], size, b256);
        h[156] = self.typeflag;
        cut(&mut h[157..257], self.link);
        if self.flags & F_POSIX != 0 {
            h[257..263].copy_from_slice(b"ustar\0");
            h[263..265].copy_from_slice(b"00");
            cut(&mut h[345..500], self.prefix);
        } else {
            h[257..265].copy_from_slice(b"ustar  \0");
        }
        put_num(&mut h[329..337], self.major, b256);
        put_num(&mut h[337..345], self.minor, b256);
        h[148..156].fill(b' ');
        let mut sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        if self.flags & F_BAD_CKSUM != 0 {
            sum += 1;
        }
        h[148..155].copy_from_slice(format!("{:06o}\0", sum & 0o777777).as_bytes());
        out.extend_from_slice(&h);
    }
}

fn write_entry(out: &mut Vec<u8>, e: &Entry, big_done: &mut bool) {
    let path = e.path.build();
    let link = e.link.build();
    let style = (e.flags >> F_LONG_SHIFT) & 3;
    let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut name: &[u8] = &path;
    let mut prefix: &[u8] = &[];
    let mut gnu_name = false;
    let mut gnu_link = false;
    if path.len() > 100 || style == 3 {
        match style {
            0 => pax.push((b"path".to_vec(), path.clone())),
            1 => gnu_name = true,
            2 => {
                // ustar: prefix '/' name, with name ≤ 100 and prefix ≤ 155.
                if let Some(i) = (0..path.len())
                    .rev()
                    .find(|&i| path[i] == b'/' && i <= 155 && path.len() - i - 1 <= 100)
                {
                    prefix = &path[..i];
                    name = &path[i + 1..];
                }
            }
            _ => {
                pax.push((b"path".to_vec(), path.clone()));
                gnu_name = true;
            }
        }
    }
    if link.len() > 100 || style == 3 {
        match style {
            0 => pax.push((b"linkpath".to_vec(), link.clone())),
            1 => gnu_link = true,
            2 => {}
            _ => {
                pax.push((b"linkpath".to_vec(), link.clone()));
                gnu_link = true;
            }
        }
    }
    pax.extend(e.pax.iter().map(|r| (r.key(), r.value.clone())));
    let odd = e.flags & F_ODD_EXT != 0;
    let gnu = |out: &mut Vec<u8>, t: u8, value: &[u8]| {
        let mut data = value.to_vec();
        if !odd {
            data.push(0);
        }
        let h = Header {
            typeflag: t,
            name: b"././@LongLink",
            mode: 0o644,
            ..Header::default()
        };
        h.write(out, data.len() as u64, 0);
        put_data(out, &data);
    };
    if gnu_link {
        gnu(out, b'K', &link);
    }
    if gnu_name {
        gnu(out, b'L', &path);
    }
    if !pax.is_empty() {
        let data = pax_data(pax.into_iter(), odd);
        let h = Header {
            typeflag: b'x',
            name: b"PaxHeaders/x",
            mode: 0o644,
            flags: F_POSIX,
            ..Header::default()
        };
        h.write(out, data.len() as u64, 0);
        put_data(out, &data);
    }
    let mut data = e.content.clone();
    if e.big && !*big_done {
        *big_done = true;
        let seed = if data.is_empty() { vec![0x5a] } else { data };
        // `repeat` copies in doubling chunks: byte-wise iterators are slow
        // under coverage instrumentation.
        data = seed.repeat(BIG / seed.len() + 2);
        data.truncate(BIG + seed.len());
    }
    let h = Header {
        typeflag: e.typeflag,
        name,
        prefix,
        link: &link,
        mode: u64::from(e.mode),
        uid: e.uid,
        gid: e.gid,
        mtime: e.mtime,
        major: u64::from(e.major),
        minor: u64::from(e.minor),
        flags: e.flags,
    };
    h.write(
        out,
        data.len() as u64,
        if e.flags & F_LIE != 0 { e.lie } else { 0 },
    );
    put_data(out, &data);
}
