//! OCI test inputs written byte by byte, so that every header field is
//! ours: tar layers (ustar headers, PAX records, GNU long names), gzip, OCI
//! layouts, and a sample image exercising whiteouts, opaque directories,
//! hard links across layers, xattrs and devices.

use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::path::Path;

/// A tar under construction: raw ustar headers, PAX records, data.
#[derive(Default)]
pub struct Tar(pub Vec<u8>);

pub fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0w$o}\0", v, w = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

/// Sets a header's checksum field for its other bytes.
pub fn fix_checksum(h: &mut [u8]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

impl Tar {
    /// A raw entry; `size` is written to the header even if `data` differs.
    #[allow(clippy::too_many_arguments)]
    pub fn raw(
        &mut self,
        name: &[u8],
        kind: u8,
        size: u64,
        data: &[u8],
        link: &[u8],
        mode: u32,
        dev: (u64, u64),
    ) {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name);
        octal(&mut h[100..108], mode as u64);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], size);
        octal(&mut h[136..148], 1_700_000_000);
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        octal(&mut h[329..337], dev.0);
        octal(&mut h[337..345], dev.1);
        fix_checksum(&mut h);
        self.0.extend_from_slice(&h);
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
    }
    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.raw(
            name.as_bytes(),
            b'0',
            data.len() as u64,
            data,
            b"",
            0o644,
            (0, 0),
        );
        self
    }
    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.raw(name.as_bytes(), b'5', 0, b"", b"", 0o755, (0, 0));
        self
    }
    pub fn link(&mut self, kind: u8, name: &str, target: &str) -> &mut Self {
        self.raw(
            name.as_bytes(),
            kind,
            0,
            b"",
            target.as_bytes(),
            0o777,
            (0, 0),
        );
        self
    }
    pub fn dev(&mut self, kind: u8, name: &str, major: u64, minor: u64) -> &mut Self {
        self.raw(name.as_bytes(), kind, 0, b"", b"", 0o600, (major, minor));
        self
    }
    /// A GNU long name (`././@LongLink`, type `L`) for the next entry.
    pub fn long_name(&mut self, name: &[u8]) -> &mut Self {
        self.raw(
            b"././@LongLink",
            b'L',
            name.len() as u64,
            name,
            b"",
            0o644,
            (0, 0),
        );
        self
    }
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let body = cfs_testkit::tar::pax_records(records);
        self.raw(
            b"PaxHeader",
            b'x',
            body.len() as u64,
            &body.clone(),
            b"",
            0o644,
            (0, 0),
        );
        self
    }
    pub fn done(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.0);
        v.extend([0u8; 1024]);
        v
    }
}

pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(b))
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

pub fn put_blob(dir: &Path, b: &[u8]) -> String {
    let d = sha256(b);
    let p = dir.join("blobs/sha256");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join(&d[7..]), b).unwrap();
    d
}

/// Writes an OCI layout at `dir` with one image tagged `tag` made of `layers`
/// (uncompressed tars; stored gzipped).
pub fn write_layout(dir: &Path, tag: &str, layers: &[Vec<u8>]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let arch = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    let mut descs = Vec::new();
    let mut diffs = Vec::new();
    for l in layers {
        diffs.push(format!("\"{}\"", sha256(l)));
        let gz = gzip(l);
        let d = put_blob(dir, &gz);
        descs.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":{}}}"#,
            gz.len()
        ));
    }
    let config = format!(
        r#"{{"architecture":"{arch}","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diffs.join(",")
    );
    let cd = put_blob(dir, config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[{}]}}"#,
        config.len(),
        descs.join(",")
    );
    let md = put_blob(dir, manifest.as_bytes());
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"{tag}"}}}}]}}"#,
            manifest.len()
        ),
    )
    .unwrap();
}

/// Three layers exercising whiteouts, opaque directories, hard links within
/// and across layers, xattrs, devices, long names and overwrites.
pub fn sample_layers() -> Vec<Vec<u8>> {
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let long = format!("deep/{}", "n".repeat(150));
    let l1 = Tar::default()
        .dir("etc/")
        .file("etc/hostname", b"base\n")
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        .dir("usr/")
        .dir("usr/bin/")
        .file("usr/bin/tool", &big)
        .link(b'1', "usr/bin/tool-link", "usr/bin/tool")
        .link(b'2', "usr/bin/sh", "tool")
        .dir("opq/")
        .file("opq/old1", b"old")
        .file("opq/old2", b"old")
        .dir("gone/")
        .file("gone/a", b"a")
        .file("removed", b"bye")
        .dev(b'3', "null", 1, 3)
        .dev(b'4', "blk", 8, 1)
        .dev(b'6', "fifo", 0, 0)
        .pax(&[
            ("SCHILY.xattr.user.color", b"blue"),
            ("path", long.as_bytes()),
        ])
        .file("ignored-name", b"long named")
        .done();
    let l2 = Tar::default()
        .file(".wh.removed", b"")
        .file(".wh.gone", b"")
        .dir("opq/")
        .file("opq/.wh..wh..opq", b"")
        .file("opq/new", b"new")
        .file("etc/hostname", b"layer two\n")
        .link(b'1', "etc/tool-hardlink", "usr/bin/tool")
        .done();
    let l3 = Tar::default()
        .dir("gone/")
        .file("gone/b", b"back")
        .file("/abs-normalised", b"abs")
        .done();
    vec![l1, l2, l3]
}
