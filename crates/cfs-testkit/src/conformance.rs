//! C composefs's reference data in `../shared/conformance` (see its README):
//! dumpfile assets with the image and dump digests C produces from them,
//! inputs that must fail, and fs-verity test vectors. Golden values come only
//! from here, never from cfs's own output; the data is read in place, never
//! copied into the project.

use std::io::Read as _;
use std::path::{Path, PathBuf};

/// The conformance directory: `shared/conformance` beside the checkout.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance")
}

/// One row of `expected.tsv`: what C makes of one asset.
#[derive(Debug, Clone)]
pub struct Row {
    /// File name in `assets/` (`.gz` ones are gzip-compressed dumpfiles).
    pub asset: String,
    /// `mkcomposefs` version arguments (`--min-version=V`, …), maybe none.
    pub version_args: Vec<String>,
    /// Parse in strict mode.
    pub strict: bool,
    /// sha256 of the image C writes.
    pub image_sha256: String,
    /// fs-verity digest of that image: its id.
    pub fsverity_digest: String,
    /// sha256 of `composefs-info dump` of that image.
    pub info_dump_sha256: String,
}

impl Row {
    /// The `(min, max)` format versions the row's arguments ask for, each
    /// `None` when not given.
    pub fn versions(&self) -> (Option<u32>, Option<u32>) {
        let mut out = (None, None);
        for arg in &self.version_args {
            let (k, v) = arg.split_once('=').expect("--flag=value");
            let v = v.parse().expect("version number");
            match k {
                "--min-version" => out.0 = Some(v),
                "--max-version" => out.1 = Some(v),
                other => panic!("unknown version argument {other}"),
            }
        }
        out
    }

    /// The asset's dumpfile text.
    pub fn dumpfile(&self) -> Vec<u8> {
        asset(&self.asset)
    }

    /// The asset's name without `.gz`.
    pub fn name(&self) -> &str {
        self.asset.strip_suffix(".gz").unwrap_or(&self.asset)
    }
}

/// Every row of `expected.tsv`.
pub fn rows() -> Vec<Row> {
    let path = dir().join("expected.tsv");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 6, "expected.tsv row: {l}");
            Row {
                asset: f[0].into(),
                version_args: match f[1] {
                    "-" => vec![],
                    a => a.split_whitespace().map(String::from).collect(),
                },
                strict: f[2] == "1",
                image_sha256: f[3].into(),
                fsverity_digest: f[4].into(),
                info_dump_sha256: f[5].into(),
            }
        })
        .collect()
}

/// An asset's bytes, gunzipped when its name ends in `.gz`.
pub fn asset(name: &str) -> Vec<u8> {
    read_maybe_gz(&dir().join("assets").join(name))
}

/// A file's bytes, gunzipped when its name ends in `.gz`.
pub fn read_maybe_gz(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .unwrap_or_else(|e| panic!("gunzip {}: {e}", path.display()));
        out
    } else {
        raw
    }
}

/// The asset as a plain dumpfile path: itself, or gunzipped into `tmp`.
pub fn asset_path(name: &str, tmp: &Path) -> PathBuf {
    match name.strip_suffix(".gz") {
        None => dir().join("assets").join(name),
        Some(base) => {
            let dest = tmp.join(base);
            std::fs::write(&dest, asset(name)).unwrap();
            dest
        }
    }
}

/// The path of C's printed-back dump of an asset, `expected-dumps/NAME.dump`:
/// every asset that is not gzipped has one.
pub fn expected_dump_path(asset: &str) -> Option<PathBuf> {
    if asset.ends_with(".gz") {
        return None;
    }
    let stem = asset.strip_suffix(".dump").unwrap_or(asset);
    Some(dir().join("expected-dumps").join(format!("{stem}.dump")))
}

/// The inputs in `should-fail/`, sorted by name: `(name, bytes)`.
pub fn should_fail() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir().join("should-fail"))
        .expect("should-fail/")
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, read_maybe_gz(&p))
        })
        .collect();
    out.sort();
    out
}

/// The rows of `fsverity-vectors.tsv`, each a list of its fields (the
/// header line left out).
pub fn fsverity_vectors() -> Vec<Vec<String>> {
    std::fs::read_to_string(dir().join("fsverity-vectors.tsv"))
        .expect("fsverity-vectors.tsv")
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').map(String::from).collect())
        .collect()
}

/// The first differing lines (up to five) of two texts, for a readable
/// failure message; empty when they are equal.
pub fn first_diff(expected: &[u8], found: &[u8]) -> String {
    let e: Vec<&[u8]> = expected.split(|&b| b == b'\n').collect();
    let f: Vec<&[u8]> = found.split(|&b| b == b'\n').collect();
    let show = |x: Option<&&[u8]>| {
        x.map_or("<none>".to_owned(), |l| {
            String::from_utf8_lossy(l).into_owned()
        })
    };
    let mut out = String::new();
    let mut shown = 0;
    for i in 0..e.len().max(f.len()) {
        let (a, b) = (e.get(i), f.get(i));
        if a != b {
            out += &format!(
                "  line {}:\n    expected: {}\n    found:    {}\n",
                i + 1,
                show(a),
                show(b)
            );
            shown += 1;
            if shown == 5 {
                break;
            }
        }
    }
    out
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of bytes, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex(&sha2::Sha256::digest(bytes))
}

/// The inputs kept under `fuzz/regressions/TARGET/` (crashes once found,
/// replayed by the tests so a fixed crash stays fixed), sorted: `(path,
/// bytes)`. Fails when there are none.
pub fn fuzz_regressions(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no inputs in {}", dir.display());
    out
}
