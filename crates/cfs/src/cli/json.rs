//! What `--json` prints: one serde struct per command, whose field names are
//! the stable interface documented in `docs/json.md` (within a major version
//! fields are only added, never renamed or removed). Each command prints one
//! JSON value, an array or an object, on one line ending in a newline.
//!
//! Digests are lowercase hex (a composefs image id or object: 64 digits; an
//! OCI digest: `sha256:` and 64 digits). Paths are strings; a path that is
//! not UTF-8 is given with U+FFFD in place of the bytes that aren't, except
//! where a field says otherwise.

use serde::Serialize;
use std::io::Write;

/// Prints `value` as one line of JSON on stdout.
pub fn print<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    // Serialised first, so a closed stdout surfaces as the io::Error that
    // `is_broken_pipe` recognises.
    let mut line = serde_json::to_vec(value)?;
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    out.write_all(&line)?;
    Ok(out.flush()?)
}

/// A path as a JSON string.
fn path_string(path: &std::path::Path) -> String {
    path.to_string_lossy().into_owned()
}

/// `cfs images --json`: one per image in the repository.
#[derive(Serialize, Debug)]
pub struct Image {
    /// The image id (64 hex).
    pub id: String,
    /// Its names, sorted; empty for an unnamed image.
    pub names: Vec<String>,
}

/// `cfs images --json`.
pub fn images(list: &[cfs_repo::repository::ImageInfo]) -> Vec<Image> {
    list.iter()
        .map(|i| Image {
            id: i.id.to_hex(),
            names: i.names.clone(),
        })
        .collect()
}

/// `cfs info --json`.
#[derive(Serialize, Debug)]
pub struct Info {
    /// The repository's path.
    pub path: String,
    /// Its top directory's permission bits, in octal (`"0700"`).
    pub mode: String,
    /// Whether only its owner can reach it (no group or other bits).
    pub private: bool,
    /// The repository format version.
    pub format_version: u32,
    /// Objects in the store.
    pub objects: u64,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Images (named or not).
    pub images: u64,
    /// fs-verity on objects: `enabled`, `unavailable` or `unknown`.
    pub verity: &'static str,
}

impl Info {
    /// The report of the repository at `path` with mode `mode`.
    pub fn new(path: &std::path::Path, mode: u32, s: &cfs_repo::repository::RepoStats) -> Self {
        use cfs_repo::store::VeritySupport;
        Info {
            path: path_string(path),
            mode: format!("{:04o}", mode & 0o7777),
            private: mode & 0o077 == 0,
            format_version: cfs_repo::repository::FORMAT_VERSION,
            objects: s.objects,
            bytes: s.bytes,
            images: s.images,
            verity: match s.verity {
                VeritySupport::Enabled => "enabled",
                VeritySupport::Unavailable => "unavailable",
                VeritySupport::Unknown => "unknown",
            },
        }
    }
}

/// `cfs fsck --json`.
#[derive(Serialize, Debug)]
pub struct Fsck {
    /// No problem of any kind was found.
    pub clean: bool,
    /// Objects checked.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Images checked.
    pub images: u64,
    /// Names checked.
    pub refs: u64,
    /// Objects whose content doesn't hash to their name.
    pub corrupt: Vec<FsckCorrupt>,
    /// Objects images need that are not in the store.
    pub missing: Vec<FsckMissing>,
    /// Files that don't belong in the repository.
    pub stray: Vec<FsckProblem>,
    /// Names, images and records that are unusable.
    pub broken: Vec<FsckProblem>,
}

/// A corrupt object.
#[derive(Serialize, Debug)]
pub struct FsckCorrupt {
    /// Its path, relative to the repository.
    pub path: String,
    /// The digest it is named by.
    pub expected: String,
    /// The digest of its content (null when it could not be read).
    pub found: Option<String>,
    /// Why it could not be read (null when it could).
    pub error: Option<String>,
}

/// An object an image needs and the store lacks.
#[derive(Serialize, Debug)]
pub struct FsckMissing {
    /// The image id.
    pub image: String,
    /// The object's digest.
    pub object: String,
}

/// A stray or broken file.
#[derive(Serialize, Debug)]
pub struct FsckProblem {
    /// Its path, relative to the repository.
    pub path: String,
    /// What is wrong.
    pub what: String,
}

impl From<&cfs_repo::repository::FsckReport> for Fsck {
    fn from(r: &cfs_repo::repository::FsckReport) -> Self {
        let problems = |ps: &[cfs_repo::repository::Problem]| {
            ps.iter()
                .map(|p| FsckProblem {
                    path: path_string(&p.path),
                    what: p.what.clone(),
                })
                .collect()
        };
        Fsck {
            clean: r.is_clean(),
            objects: r.objects,
            bytes: r.bytes,
            images: r.images,
            refs: r.refs,
            corrupt: r
                .corrupt
                .iter()
                .map(|c| FsckCorrupt {
                    path: path_string(&c.path),
                    expected: c.expected.to_hex(),
                    found: c.found.map(|f| f.to_hex()),
                    error: c.error.clone(),
                })
                .collect(),
            missing: r
                .missing
                .iter()
                .map(|m| FsckMissing {
                    image: m.image.to_hex(),
                    object: m.object.to_hex(),
                })
                .collect(),
            stray: problems(&r.stray),
            broken: problems(&r.broken),
        }
    }
}

/// `cfs mounts --json`: one per cfs mount this process sees.
#[derive(Serialize, Debug)]
pub struct Mount {
    /// `kernel`, `service`, `fuse+overlay` or `fuse`.
    pub mode: &'static str,
    /// The mount point; null when it is not UTF-8 (see `mountpoint_escaped`).
    pub mountpoint: Option<String>,
    /// The mount point escaped as `/proc/self/mountinfo` escapes it (`\040`
    /// for a space, `\012` for a newline, …): always present, always exact.
    pub mountpoint_escaped: String,
    /// The mount id (mountinfo's first field, `STATX_MNT_ID`).
    pub mount_id: u64,
    /// The filesystem type (`overlay`, `fuse.cfs`).
    pub fstype: String,
}

impl From<&cfs_mount::mounts::CfsMount> for Mount {
    fn from(m: &cfs_mount::mounts::CfsMount) -> Self {
        Mount {
            mode: m.mode.as_str(),
            mountpoint: m.mountpoint.to_str().map(str::to_owned),
            mountpoint_escaped: cfs_mount::mounts::escape(&m.mountpoint),
            mount_id: m.mount_id,
            fstype: m.fstype.clone(),
        }
    }
}

/// `cfs oci images --json`: one per tag.
#[derive(Serialize, Debug)]
pub struct OciImage {
    /// The tag (`cfs oci mount NAME` mounts it).
    pub name: String,
    /// The manifest's digest (`sha256:…`).
    pub manifest: String,
    /// The composefs image id; null when the image is missing.
    pub image_id: Option<String>,
}

/// `cfs oci inspect --json`.
#[derive(Serialize, Debug)]
pub struct OciInspect {
    /// The tag.
    pub name: String,
    /// The composefs image id; null when the image is missing.
    pub image_id: Option<String>,
    /// The manifest's digest.
    pub manifest: String,
    /// The config's digest.
    pub config: String,
    /// The config's `os`.
    pub os: String,
    /// The config's `architecture`.
    pub architecture: String,
    /// The layers, bottom first.
    pub layers: Vec<OciLayer>,
}

/// One layer of `cfs oci inspect --json`.
#[derive(Serialize, Debug)]
pub struct OciLayer {
    /// The (compressed) blob's digest.
    pub digest: String,
    /// The blob's size in bytes.
    pub size: u64,
    /// Its media type.
    pub media_type: String,
    /// The digest of the uncompressed tar (the config's `diff_ids`).
    pub diff_id: String,
    /// The object holding cfs's record of the layer; null when missing.
    pub record: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stable names: a rename here breaks every script reading them.
    #[test]
    fn field_names_are_the_documented_ones() {
        let v = serde_json::to_value(Image {
            id: "ab".into(),
            names: vec!["n".into()],
        })
        .unwrap();
        assert_eq!(v, serde_json::json!({"id": "ab", "names": ["n"]}));
        let report = cfs_repo::repository::FsckReport::default();
        let v = serde_json::to_value(Fsck::from(&report)).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "broken", "bytes", "clean", "corrupt", "images", "missing", "objects", "refs",
                "stray"
            ]
        );
        assert_eq!(v["clean"], true);
    }
}
