//! OCI image layouts (`oci-layout`, `index.json`, `blobs/sha256/…`): the
//! JSON documents we read from them, and blobs read with their digest and
//! size checked while they stream.
//!
//! Only what an import needs is decoded (serde ignores the rest). Every
//! document is a blob named by its digest, except `index.json`; JSON blobs
//! are read whole (capped at [`MAX_JSON`]) and checked before they are
//! parsed, layers are checked as they stream into the tar reader
//! ([`Verify`]): a layer whose digest turns out wrong is never recorded.

use crate::OciError;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Largest JSON document read (index, manifest, config).
pub const MAX_JSON: u64 = 16 << 20;

/// Media types of image indexes (OCI) and manifest lists (Docker).
const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// A content descriptor.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type.
    #[serde(default)]
    pub media_type: String,
    /// `sha256:…`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Annotations (the tag is `org.opencontainers.image.ref.name`).
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// Platform, in an index.
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// The platform of a manifest in an index.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Platform {
    /// `amd64`, `arm64`, ...
    pub architecture: String,
    /// `linux`, ...
    pub os: String,
    /// `v8`, ...
    #[serde(default)]
    pub variant: Option<String>,
}

/// An image index (or Docker manifest list), and `index.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Media type, when given.
    #[serde(default)]
    pub media_type: Option<String>,
    /// The manifests.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// An image manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Media type, when given.
    #[serde(default)]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers, bottom first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// The parts of an image config we use.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Config {
    /// CPU architecture.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// The layers' uncompressed digests.
    #[serde(default)]
    pub rootfs: RootFs,
}

/// `rootfs` of a config.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    /// `sha256:…` of each layer's uncompressed tar, bottom first.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// The 64 hex digits of a `sha256:` digest; other algorithms are refused.
pub fn sha256_hex(digest: &str) -> Result<&str, OciError> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
            Ok(h)
        }
        _ => Err(OciError::Invalid {
            what: format!("digest {digest:?}"),
            reason: "not sha256:<64 lowercase hex digits>".into(),
        }),
    }
}

/// Parses a JSON document, naming it in errors.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, OciError> {
    serde_json::from_slice(bytes).map_err(|e| OciError::Invalid {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

/// A reader that hashes and counts what passes through; [`finish`](Self::finish)
/// compares with the expected digest and size.
#[derive(Debug)]
pub struct Verify<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    limit: Option<u64>,
}

impl<R: Read> Verify<R> {
    /// Wraps `inner`; with `limit`, reading more than that many bytes is an error.
    pub fn new(inner: R, limit: Option<u64>) -> Self {
        Verify {
            inner,
            hasher: Sha256::new(),
            count: 0,
            limit,
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Reads what is left, then checks digest and (if given) size.
    pub fn finish(mut self, digest: &str, size: Option<u64>) -> Result<(), OciError> {
        io::copy(&mut self, &mut io::sink()).map_err(|e| OciError::Digest {
            digest: digest.to_owned(),
            what: format!("reading to the end: {e}"),
        })?;
        let found = format!("sha256:{:x}", self.hasher.finalize());
        if let Some(size) = size {
            if size != self.count {
                return Err(OciError::Digest {
                    digest: digest.to_owned(),
                    what: format!("size is {} bytes, the manifest says {size}", self.count),
                });
            }
        }
        if found != digest {
            return Err(OciError::Digest {
                digest: digest.to_owned(),
                what: format!("content has digest {found}"),
            });
        }
        Ok(())
    }
}

impl<R: Read> Read for Verify<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        if self.limit.is_some_and(|l| self.count > l) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "blob longer than its descriptor says",
            ));
        }
        Ok(n)
    }
}

/// An OCI image layout directory, kept open: its files are opened beneath
/// it (`openat2` `RESOLVE_BENEATH`), so a symlink in a layout someone else
/// owns can't make cfs read a file outside it. Blob contents are checked
/// against their digests anyway.
#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
    fd: std::sync::Arc<std::os::fd::OwnedFd>,
}

impl Layout {
    /// Opens a layout, checking its `oci-layout` marker.
    pub fn open(dir: &Path) -> Result<Layout, OciError> {
        let fd = rustix::fs::open(
            dir,
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| OciError::io("open", dir)(e.into()))?;
        let layout = Layout {
            dir: dir.to_path_buf(),
            fd: std::sync::Arc::new(fd),
        };
        let marker = dir.join("oci-layout");
        let text = layout.read_document("oci-layout")?;
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Marker {
            image_layout_version: String,
        }
        let m: Marker = parse_json(&text, &marker.display().to_string())?;
        if !m.image_layout_version.starts_with("1.") {
            return Err(OciError::Invalid {
                what: marker.display().to_string(),
                reason: format!("unknown layout version {:?}", m.image_layout_version),
            });
        }
        Ok(layout)
    }

    /// Opens the file `rel` of the layout, beneath it (no `..`, absolute
    /// path or symlink leading out), and only if it is a regular file
    /// (opened `O_NONBLOCK`, so a FIFO can't stall us, and refused then).
    fn open_file(&self, rel: &str) -> Result<std::fs::File, OciError> {
        use rustix::fs::{OFlags, ResolveFlags};
        rustix::fs::openat2(
            &*self.fd,
            rel,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(io::Error::from)
        .and_then(|fd| cfs_repo::input::regular(fd.into()))
        .map_err(OciError::io("open", &self.dir.join(rel)))
    }

    /// Reads the document `rel` of the layout whole: at most [`MAX_JSON`]
    /// bytes (a larger file is refused by its size, before it is read).
    fn read_document(&self, rel: &str) -> Result<Vec<u8>, OciError> {
        let mut f = self.open_file(rel)?;
        cfs_repo::input::read_file_capped(&mut f, MAX_JSON)
            .map_err(OciError::io("read", &self.dir.join(rel)))
    }

    /// The layout's `index.json`.
    pub fn index(&self) -> Result<Index, OciError> {
        let bytes = self.read_document("index.json")?;
        parse_json(&bytes, &self.dir.join("index.json").display().to_string())
    }

    /// Where a blob lives (checking the digest's syntax).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, OciError> {
        Ok(self.dir.join("blobs/sha256").join(sha256_hex(digest)?))
    }

    /// Opens a blob for streaming; the caller checks it with [`Verify::finish`].
    pub fn open_blob(&self, desc: &Descriptor) -> Result<Verify<std::fs::File>, OciError> {
        let rel = format!("blobs/sha256/{}", sha256_hex(&desc.digest)?);
        let f = self.open_file(&rel).map_err(|e| OciError::Digest {
            digest: desc.digest.clone(),
            what: e.to_string(),
        })?;
        Ok(Verify::new(f, Some(desc.size)))
    }

    /// Reads a small blob whole, checked.
    pub fn read_blob(&self, desc: &Descriptor) -> Result<Vec<u8>, OciError> {
        if desc.size > MAX_JSON {
            return Err(OciError::Invalid {
                what: desc.digest.clone(),
                reason: format!("document of {} bytes, over {MAX_JSON}", desc.size),
            });
        }
        let mut r = self.open_blob(desc)?;
        let mut bytes = Vec::with_capacity(desc.size as usize);
        r.read_to_end(&mut bytes).map_err(|e| OciError::Digest {
            digest: desc.digest.clone(),
            what: e.to_string(),
        })?;
        r.finish(&desc.digest, Some(desc.size))?;
        Ok(bytes)
    }

    /// The image manifest for `tag` (or the only one, without a tag),
    /// following an image index to this machine's platform. Returns its
    /// descriptor, its bytes and the parsed manifest.
    pub fn manifest(&self, tag: Option<&str>) -> Result<(Descriptor, Vec<u8>, Manifest), OciError> {
        let index = self.index()?;
        let tags: Vec<&str> = index
            .manifests
            .iter()
            .filter_map(|d| d.annotations.get("org.opencontainers.image.ref.name"))
            .map(String::as_str)
            .collect();
        let chosen = match tag {
            Some(t) => index.manifests.iter().find(|d| {
                d.annotations
                    .get("org.opencontainers.image.ref.name")
                    .map(String::as_str)
                    == Some(t)
            }),
            None if index.manifests.len() == 1 => index.manifests.first(),
            None => None,
        };
        let Some(desc) = chosen else {
            return Err(OciError::Invalid {
                what: self.dir.join("index.json").display().to_string(),
                reason: match tag {
                    Some(t) => format!("no image tagged {t:?} (tags: {})", tags.join(", ")),
                    None => format!(
                        "{} images: name one with :TAG (tags: {})",
                        index.manifests.len(),
                        tags.join(", ")
                    ),
                },
            });
        };
        self.follow(desc.clone(), 0)
    }

    fn follow(
        &self,
        desc: Descriptor,
        depth: u32,
    ) -> Result<(Descriptor, Vec<u8>, Manifest), OciError> {
        let bytes = self.read_blob(&desc)?;
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            #[serde(default)]
            media_type: Option<String>,
            #[serde(default)]
            manifests: Option<serde_json::Value>,
        }
        let probe: Probe = parse_json(&bytes, &desc.digest)?;
        let is_index = INDEX_TYPES.contains(&desc.media_type.as_str())
            || probe
                .media_type
                .as_deref()
                .is_some_and(|m| INDEX_TYPES.contains(&m))
            || probe.manifests.is_some();
        if !is_index {
            let m: Manifest = parse_json(&bytes, &format!("manifest {}", desc.digest))?;
            return Ok((desc, bytes, m));
        }
        if depth > 2 {
            return Err(OciError::Invalid {
                what: desc.digest,
                reason: "image indexes nested too deep".into(),
            });
        }
        let index: Index = parse_json(&bytes, &format!("index {}", desc.digest))?;
        let arch = host_arch();
        let pick = index
            .manifests
            .iter()
            .find(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == arch)
            })
            .cloned();
        match pick {
            Some(d) => self.follow(d, depth + 1),
            None => Err(OciError::Invalid {
                what: format!("index {}", desc.digest),
                reason: format!("no manifest for linux/{arch}"),
            }),
        }
    }
}

/// This machine's architecture as OCI names it.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        a => a,
    }
}
