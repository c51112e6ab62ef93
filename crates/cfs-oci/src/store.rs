//! What the repository records about OCI images, beside its images:
//!
//! ```text
//! REPO/streams/oci/blobs/sha256/HEX    → ../../../../objects/XX/REST   manifests and configs, verbatim
//! REPO/streams/oci/layers/sha256/HEX   → ../../../../objects/XX/REST   a layer's tree as a dumpfile
//! REPO/streams/oci/refs/NAME           → ../blobs/sha256/HEX           a tag: its manifest
//! REPO/images/refs/oci:NAME            the merged image of the tag, mountable by name
//! ```
//!
//! A layer is keyed by the digest the manifest names it by (the compressed
//! blob), so a pull knows before fetching that it has it. Its record is the
//! layer tree ([`crate::tar`]) printed as a composefs dumpfile: whiteouts as
//! char devices 0/0, opaque directories with `trusted.overlay.opaque=y`, file
//! contents by object, so reading it back gives exactly the tree that was
//! merged. Links are made only after the objects they name are durable; the
//! tag is set last. gc keeps every object a tag reaches (manifest, config,
//! layer records and the objects they name) and drops the links nothing
//! reaches: the repository's gc and fsck reach these records through
//! [`OciRoots`], which whoever runs them passes in. Every path here is
//! opened beneath the repository's fd without following symlinks (the links
//! are read, never followed).

use crate::layout::{parse_json, sha256_hex, Manifest};
use crate::limits::Limits;
use crate::tar::{implicit_dir, implied_by_paths_below};
use crate::OciError;
use cfs_format::dumpfile::{self, ParseMode};
use cfs_format::writer::{self, WriteOptions};
use cfs_format::{Digest, FileType, Tree};
use cfs_repo::repository::{Marked, StreamRoots};
use cfs_repo::Repository;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

const BLOBS: &str = "streams/oci/blobs/sha256";
const LAYERS: &str = "streams/oci/layers/sha256";
const REFS: &str = "streams/oci/refs";

/// The image name (`images/refs/…`) of an OCI tag's merged image.
pub fn image_name(tag: &str) -> String {
    format!("oci:{tag}")
}

/// Checks an OCI tag name (the image name `oci:NAME` must be valid too).
pub fn check_tag(tag: &str) -> Result<(), OciError> {
    cfs_repo::repository::check_name(tag)?;
    cfs_repo::repository::check_name(&image_name(tag))?;
    Ok(())
}

/// Creates the `streams/oci/` directories.
pub fn ensure_dirs(repo: &Repository) -> Result<(), OciError> {
    for d in [BLOBS, LAYERS, REFS] {
        repo.create_dirs(d)?;
    }
    Ok(())
}

/// Replaces the link `dir/name` with a symlink to `target` (temporary name, rename).
fn set_link(repo: &Repository, dir: &str, name: &str, target: &str) -> Result<(), OciError> {
    Ok(repo.replace_link(dir, name, target)?)
}

fn object_link(obj: &Digest) -> String {
    format!("../../../../objects/{}", obj.object_path())
}

/// The object a `blobs/` or `layers/` link names (`rel` inside the repository).
fn read_object_link(repo: &Repository, rel: &Path) -> Result<Option<Digest>, OciError> {
    Ok(repo.read_link(rel)?.and_then(|t| {
        t.strip_prefix(b"../../../../objects/")
            .and_then(Digest::from_object_path)
    }))
}

/// The layer record of a blob digest, if this repository has it.
pub fn layer_object(repo: &Repository, digest: &str) -> Result<Option<Digest>, OciError> {
    let rel = Path::new(LAYERS).join(sha256_hex(digest)?);
    match read_object_link(repo, &rel)? {
        Some(d) if repo.objects().contains(&d) => Ok(Some(d)),
        _ => Ok(None),
    }
}

/// The UTF-8 names in the repository directory `dir` (others can't be
/// digests or tags); none if `dir` does not exist yet.
fn utf8_names(repo: &Repository, dir: &str) -> Result<Vec<String>, OciError> {
    match repo.names_in(dir) {
        Ok(names) => Ok(names
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .collect()),
        Err(cfs_repo::RepoError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(Vec::new())
        }
        Err(e) => Err(e.into()),
    }
}

/// Every layer digest recorded (as `sha256:HEX`).
pub fn layer_digests(repo: &Repository) -> Result<Vec<String>, OciError> {
    Ok(utf8_names(repo, LAYERS)?
        .into_iter()
        .map(|n| format!("sha256:{n}"))
        .filter(|d| sha256_hex(d).is_ok())
        .collect())
}

/// Stores a layer tree as its record; the caller syncs and then links it.
///
/// The record is the tree as a dumpfile without the directories the tar
/// never described ([`crate::tar`]'s implicit ones, nothing but a marker)
/// that hold something: they come back from the paths below them when it
/// is read (an empty one keeps its line, or it would not come back). A dumpfile
/// line holds its whole path, so printing every directory of a chain of
/// implicit ones would cost the square of its depth; this way the record
/// grows with what the tar holds. It is held to `max_record_bytes`.
pub fn store_layer(repo: &Repository, tree: &Tree, limits: &Limits) -> Result<Digest, OciError> {
    let mut text = Capped {
        bytes: Vec::new(),
        max: limits.max_record_bytes,
    };
    dumpfile::print_omitting(tree, &mut text, &implied_by_paths_below).map_err(|e| {
        OciError::Invalid {
            what: "layer tree".into(),
            reason: e.to_string(),
        }
    })?;
    Ok(repo.objects().insert_bytes(&text.bytes)?.digest)
}

/// A `Vec` that refuses to grow past `max` bytes.
struct Capped {
    bytes: Vec<u8>,
    max: u64,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if (self.bytes.len() + buf.len()) as u64 > self.max {
            return Err(std::io::Error::other(format!(
                "its record is over the limit max_record_bytes = {}",
                self.max
            )));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Links a (durable) layer record under its blob digest.
pub fn link_layer(repo: &Repository, digest: &str, obj: &Digest) -> Result<(), OciError> {
    set_link(repo, LAYERS, sha256_hex(digest)?, &object_link(obj))
}

/// Reads a layer record back into its tree (a record of any size up to
/// `max_record_bytes`; older records, which list every directory, too).
pub fn load_layer(
    repo: &Repository,
    digest: &str,
    obj: &Digest,
    limits: &Limits,
) -> Result<Tree, OciError> {
    use std::io::Read;
    let what = || format!("layer record of {digest} (object {obj})");
    let mut text = Vec::new();
    repo.objects()
        .open_object(obj)?
        .take(limits.max_record_bytes.saturating_add(1))
        .read_to_end(&mut text)
        .map_err(|e| OciError::Invalid {
            what: what(),
            reason: e.to_string(),
        })?;
    if text.len() as u64 > limits.max_record_bytes {
        return Err(OciError::Invalid {
            what: what(),
            reason: format!(
                "over the limit max_record_bytes = {}",
                limits.max_record_bytes
            ),
        });
    }
    dumpfile::parse_with_parents(&text, ParseMode::Strict, &implicit_dir()).map_err(|e| {
        OciError::Invalid {
            what: what(),
            reason: e.to_string(),
        }
    })
}

/// Stores a JSON document (manifest, config) and links it by its sha256.
pub fn put_blob(repo: &Repository, digest: &str, bytes: &[u8]) -> Result<(), OciError> {
    let hex = sha256_hex(digest)?;
    let obj = repo.objects().insert_bytes(bytes)?.digest;
    repo.objects().sync()?;
    set_link(repo, BLOBS, hex, &object_link(&obj))
}

/// Reads a stored JSON document back (checked against its sha256).
pub fn get_blob(repo: &Repository, digest: &str) -> Result<Vec<u8>, OciError> {
    let rel = Path::new(BLOBS).join(sha256_hex(digest)?);
    let obj = read_object_link(repo, &rel)?.ok_or_else(|| OciError::Invalid {
        what: repo.path().join(&rel).display().to_string(),
        reason: "missing or malformed blob link".into(),
    })?;
    let bytes = repo.objects().read_object(&obj, crate::layout::MAX_JSON)?;
    let v = crate::layout::Verify::new(&bytes[..], None);
    v.finish(digest, Some(bytes.len() as u64))?;
    Ok(bytes)
}

/// Points a tag at a manifest (stored with [`put_blob`]).
pub fn set_tag(repo: &Repository, tag: &str, manifest: &str) -> Result<(), OciError> {
    check_tag(tag)?;
    let target = format!("../blobs/sha256/{}", sha256_hex(manifest)?);
    set_link(repo, REFS, tag, &target)
}

/// The manifest digest a tag points to.
pub fn read_tag(repo: &Repository, tag: &str) -> Result<Option<String>, OciError> {
    check_tag(tag)?;
    let rel = Path::new(REFS).join(tag);
    let Some(t) = repo.read_link(&rel)? else {
        return Ok(None);
    };
    let t = String::from_utf8_lossy(&t).into_owned();
    match t.strip_prefix("../blobs/sha256/") {
        Some(h) if sha256_hex(&format!("sha256:{h}")).is_ok() => Ok(Some(format!("sha256:{h}"))),
        _ => Err(OciError::Invalid {
            what: repo.path().join(&rel).display().to_string(),
            reason: format!("points to {t:?}"),
        }),
    }
}

/// Every tag with its manifest digest, sorted.
pub fn tags(repo: &Repository) -> Result<Vec<(String, String)>, OciError> {
    let mut out = Vec::new();
    for name in utf8_names(repo, REFS)? {
        if check_tag(&name).is_err() {
            continue;
        }
        if let Ok(Some(m)) = read_tag(repo, &name) {
            out.push((name, m));
        }
    }
    out.sort();
    Ok(out)
}

/// Removes a tag and its image name; objects go at the next gc.
pub fn remove_tag(repo: &Repository, tag: &str) -> Result<(), OciError> {
    if read_tag(repo, tag)?.is_none() {
        return Err(OciError::UnknownImage(tag.to_owned()));
    }
    repo.remove_file(&Path::new(REFS).join(tag))?;
    repo.sync_dir(REFS)?;
    match repo.remove(&image_name(tag)) {
        Ok(_) | Err(cfs_repo::RepoError::UnknownImage { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Writes a merged tree as an image, stores it and names it `name` (when given).
pub fn store_image(
    repo: &Repository,
    tree: &Tree,
    name: Option<&str>,
) -> Result<(Digest, u64), OciError> {
    let image = writer::write_image(tree, &WriteOptions::default())?;
    let size = image.len() as u64;
    let Some(name) = name else {
        return Ok((cfs_format::fsverity::digest(&image), size));
    };
    let id = repo.add_image(&image, name, &format!("the image {name}"))?;
    Ok((id, size))
}

/// The OCI records as the repository's gc and fsck see them
/// ([`StreamRoots`] for `streams/oci/`): what the tags reach is live, blob
/// and layer links no tag reaches go.
#[derive(Debug, Clone, Copy, Default)]
pub struct OciRoots;

impl StreamRoots for OciRoots {
    fn name(&self) -> &str {
        "oci"
    }

    fn mark(&self, repo: &Repository) -> Result<Marked, Box<dyn std::error::Error + Send + Sync>> {
        Ok(gc_mark(repo)?)
    }

    fn check(&self, repo: &Repository, present: &HashSet<Digest>) -> Vec<(PathBuf, String)> {
        check(repo, present)
    }
}

/// Marks what the OCI tags reach: their manifests, configs, layer records
/// and the objects those name; and lists the blob and layer links no tag
/// reaches. A tag whose manifest or layers can't be read is an error: gc
/// must not guess what is live.
pub fn gc_mark(repo: &Repository) -> Result<Marked, OciError> {
    let mut live = Marked::default();
    let mut blobs = HashSet::new();
    let mut layers = HashSet::new();
    for (tag, mdigest) in tags(repo)? {
        let mbytes = get_blob(repo, &mdigest)?;
        let m: Manifest = parse_json(&mbytes, &format!("manifest {mdigest} of {tag}"))?;
        for d in [&mdigest, &m.config.digest] {
            let rel = Path::new(BLOBS).join(sha256_hex(d)?);
            if let Some(o) = read_object_link(repo, &rel)? {
                live.objects.insert(o);
            }
            blobs.insert(sha256_hex(d)?.to_owned());
        }
        for l in &m.layers {
            layers.insert(sha256_hex(&l.digest)?.to_owned());
            if let Some(o) = layer_object(repo, &l.digest)? {
                live.objects.insert(o);
                let tree = load_layer(repo, &l.digest, &o, &Limits::default())?;
                for (_, n) in tree.nodes() {
                    if n.file_type() == Some(FileType::Regular) && n.content.is_none() {
                        if let Some(d) = n.digest {
                            live.objects.insert(d);
                        }
                    }
                }
            }
        }
    }
    for (dir, keep) in [(BLOBS, &blobs), (LAYERS, &layers)] {
        let Ok(names) = repo.names_in(dir) else {
            continue;
        };
        for n in names {
            let keep_it = n.to_str().is_some_and(|n| keep.contains(n));
            if !keep_it {
                live.unreached.push(Path::new(dir).join(n));
            }
        }
    }
    Ok(live)
}

/// What fsck finds wrong in the OCI records: `(path, what)`, paths relative
/// to the repository. Every tag must reach a manifest and config whose bytes
/// match their sha256, a record for each layer that parses, every object
/// those records name, and its merged image `oci:TAG`; every blob and layer
/// link must have the shape `../../../../objects/XX/REST`. Objects named by
/// `present` are in the store; their contents are checked by fsck itself.
pub fn check(repo: &Repository, present: &HashSet<Digest>) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    for dir in [BLOBS, LAYERS] {
        let Ok(names) = repo.names_in(dir) else {
            continue;
        };
        for n in names {
            let rel = Path::new(dir).join(&n);
            let named = n
                .to_str()
                .is_some_and(|n| sha256_hex(&format!("sha256:{n}")).is_ok());
            if !named {
                found.push((rel, "not a sha256 digest name".into()));
            } else if !matches!(read_object_link(repo, &rel), Ok(Some(_))) {
                found.push((rel, "not a link to an object".into()));
            }
        }
    }
    if let Ok(names) = repo.names_in(REFS) {
        for n in names {
            let rel = Path::new(REFS).join(&n);
            let tag = n.to_str().map(str::to_owned);
            match tag.as_deref().map(|t| (t, read_tag(repo, t))) {
                Some((tag, Ok(Some(manifest)))) => {
                    if let Err(what) = check_tag_records(repo, tag, &manifest, present) {
                        found.push((rel, what));
                    }
                }
                Some((_, Ok(None))) => {}
                Some((_, Err(e))) => found.push((rel, e.to_string())),
                None => found.push((rel, "not a valid tag name".into())),
            }
        }
    }
    found
}

/// One tag's records, down to the objects its layers name.
fn check_tag_records(
    repo: &Repository,
    tag: &str,
    manifest: &str,
    present: &HashSet<Digest>,
) -> Result<(), String> {
    let bytes = get_blob(repo, manifest).map_err(|e| format!("manifest: {e}"))?;
    let m: Manifest =
        parse_json(&bytes, &format!("manifest {manifest}")).map_err(|e| e.to_string())?;
    get_blob(repo, &m.config.digest).map_err(|e| format!("config: {e}"))?;
    for l in &m.layers {
        let obj = layer_object(repo, &l.digest)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("layer {}: no record, or its object is missing", l.digest))?;
        let tree =
            load_layer(repo, &l.digest, &obj, &Limits::default()).map_err(|e| e.to_string())?;
        for (_, n) in tree.nodes() {
            if n.file_type() == Some(FileType::Regular) && n.content.is_none() {
                match n.digest {
                    Some(d) if !present.contains(&d) => {
                        return Err(format!("layer {}: object {d} is missing", l.digest))
                    }
                    _ => {}
                }
            }
        }
    }
    match repo.resolve(&image_name(tag)) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("its image {}: {e}", image_name(tag))),
    }
}
