//! Pulling an image into the repository, from any transport users know.
//!
//! - `oci:DIR[:TAG]` is read in place ([`crate::layout`]).
//! - `docker://HOST/REPO[:TAG]`, `oci-archive:FILE[:TAG]`,
//!   `docker-archive:FILE[:REF]` go through `skopeo copy` into a temporary
//!   OCI layout, which is then read like the first. skopeo brings registry
//!   auth (`auth.json`, credential helpers), mirrors and `registries.conf`,
//!   TLS settings, signature policy and every archive format, and it checks
//!   each blob's digest while downloading. The image-proxy API
//!   (`skopeo experimental-image-proxy`) would stream blobs without the
//!   temporary copy, at the cost of a private fd-passing protocol marked
//!   experimental; the copy costs disk space for the compressed layers only
//!   while a pull runs, and is the robust choice for now.
//!
//! Layers already in the repository are not fetched again: the temporary
//! layout is seeded with an empty placeholder for every layer the repository
//! has, which skopeo's OCI destination takes as "blob present" and skips
//! (we never read those placeholders; if a skopeo refuses them, the copy is
//! retried without). From a layout, present layers are simply not read.
//!
//! Every blob read from a layout is checked against its digest and size as
//! it streams, and each layer's uncompressed stream against its `diff_id`;
//! layers import in parallel (rayon), each storing its files as they pass.
//! Only once everything is checked and durable are layer records, manifest,
//! config, image and finally the tag linked: a failed pull tags nothing.

use crate::compression;
use crate::layout::{parse_json, Config, Descriptor, Layout, Verify};
use crate::limits::{charge_tree, ImageCharge, LayerCharge, Limits};
use crate::merge::{LayerRef, Merge};
use crate::tar::{self, LayerStats};
use crate::{store, OciError};
use cfs_format::{Digest, Tree};
use cfs_repo::repository::LockMode;
use cfs_repo::Repository;
use rayon::prelude::*;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An OCI layout directory and an optional tag.
    Layout {
        /// The directory.
        dir: PathBuf,
        /// `org.opencontainers.image.ref.name`.
        tag: Option<String>,
    },
    /// Anything skopeo copies (`docker://…`, `oci-archive:…`, `docker-archive:…`).
    Skopeo(String),
}

/// Parses a transport reference.
pub fn parse_reference(r: &str) -> Result<Source, OciError> {
    if let Some(rest) = r.strip_prefix("oci:") {
        let (dir, tag) = match rest.split_once(':') {
            Some((d, t)) => (d, Some(t.to_owned())),
            None => (rest, None),
        };
        if dir.is_empty() {
            return Err(OciError::BadReference(r.to_owned()));
        }
        return Ok(Source::Layout {
            dir: PathBuf::from(dir),
            tag,
        });
    }
    for p in ["docker://", "oci-archive:", "docker-archive:"] {
        if r.strip_prefix(p).is_some_and(|rest| !rest.is_empty()) {
            return Ok(Source::Skopeo(r.to_owned()));
        }
    }
    Err(OciError::BadReference(r.to_owned()))
}

/// True when `r` names a transport rather than a tag in the repository.
pub fn is_transport(r: &str) -> bool {
    parse_reference(r).is_ok()
}

/// The tag a pull gets when none is given: the image's last path component
/// and tag (`docker://h/library/debian:12` → `debian:12`), characters a name
/// can't hold replaced by `_`.
pub fn default_tag(r: &str) -> String {
    let (base, tag) = match parse_reference(r) {
        Ok(Source::Layout { dir, tag }) => (
            dir.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            tag,
        ),
        _ => {
            let rest = r
                .split_once(':')
                .map_or(r, |(_, x)| x)
                .trim_start_matches('/');
            let rest = rest.split('@').next().unwrap_or(rest);
            let last = rest.rsplit('/').next().unwrap_or(rest);
            match last.split_once(':') {
                Some((b, t)) => (b.to_owned(), Some(t.to_owned())),
                None => (last.to_owned(), None),
            }
        }
    };
    let base = base
        .trim_end_matches(".tar")
        .trim_end_matches(".tar.gz")
        .to_owned();
    let s = format!("{base}:{}", tag.as_deref().unwrap_or("latest"));
    let mut s: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-+@:".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    while s.starts_with(['.', '-']) {
        s.replace_range(..1, "_");
    }
    s
}

/// What a pull reports as it goes.
#[derive(Debug, Clone)]
pub enum Event {
    /// A step that is not per layer (copying with skopeo, merging, ...).
    Step(String),
    /// The image's layers are known.
    Layers(Vec<Descriptor>),
    /// Layer `index` has `read` of its bytes read.
    Progress {
        /// The layer.
        index: usize,
        /// Compressed bytes read so far.
        read: u64,
    },
    /// Layer `index` is done; `reused` when it was already in the repository.
    LayerDone {
        /// The layer.
        index: usize,
        /// Already present: not fetched or read.
        reused: bool,
    },
}

/// Options of a pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// The tag (default: [`default_tag`]).
    pub tag: Option<String>,
    /// Compute the image id only: layers are stored, nothing is tagged.
    pub dry: bool,
    /// Skip TLS verification (for a loopback registry): `--src-tls-verify=false`.
    pub insecure: bool,
    /// The budget of each layer and of the image.
    pub limits: Limits,
}

/// One layer of a pull.
#[derive(Debug, Clone)]
pub struct LayerReport {
    /// Blob digest.
    pub digest: String,
    /// Compressed size.
    pub size: u64,
    /// Already in the repository (not fetched).
    pub reused: bool,
    /// What importing it did (zero when reused).
    pub stats: LayerStats,
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct PullReport {
    /// The tag (None when dry).
    pub tag: Option<String>,
    /// The manifest digest.
    pub manifest: String,
    /// The config digest.
    pub config: String,
    /// The merged image id.
    pub image_id: Digest,
    /// Its size.
    pub image_size: u64,
    /// The layers, bottom first.
    pub layers: Vec<LayerReport>,
}

type Sink<'a> = &'a (dyn Fn(Event) + Sync);

/// Pulls `reference` into the repository and tags it; see the module doc.
pub fn pull(
    repo: &Repository,
    reference: &str,
    options: &PullOptions,
    events: Sink<'_>,
) -> Result<PullReport, OciError> {
    let source = parse_reference(reference)?;
    let tag = match &options.tag {
        Some(t) => t.clone(),
        None => default_tag(reference),
    };
    store::check_tag(&tag)?;
    let _lock = repo.lock(LockMode::Shared)?;
    store::ensure_dirs(repo)?;
    let mut _tmp = None;
    let (layout, layout_tag) = match source {
        Source::Layout { dir, tag } => (Layout::open(&dir)?, tag),
        Source::Skopeo(r) => {
            events(Event::Step(format!("copying {r} with skopeo")));
            let tmp = tempfile::Builder::new()
                .prefix("cfs-pull-")
                .tempdir()
                .map_err(OciError::io(
                    "create a temporary directory in",
                    &std::env::temp_dir(),
                ))?;
            skopeo_copy(repo, &r, tmp.path(), options.insecure)?;
            let l = Layout::open(tmp.path())?;
            _tmp = Some(tmp);
            (l, Some("cfs".to_owned()))
        }
    };
    import(repo, &layout, layout_tag.as_deref(), &tag, options, events)
}

fn skopeo_copy(repo: &Repository, r: &str, dir: &Path, insecure: bool) -> Result<(), OciError> {
    let run = |seed: bool| -> Result<(), OciError> {
        if seed {
            let blobs = dir.join("blobs/sha256");
            std::fs::create_dir_all(&blobs).map_err(OciError::io("create", &blobs))?;
            for d in store::layer_digests(repo)? {
                let p = blobs.join(crate::layout::sha256_hex(&d)?);
                std::fs::write(&p, b"").map_err(OciError::io("create", &p))?;
            }
        }
        let mut cmd = Command::new("skopeo");
        cmd.arg("copy").arg("--quiet");
        if insecure && r.starts_with("docker://") {
            cmd.arg("--src-tls-verify=false");
        }
        cmd.arg(r).arg(format!("oci:{}:cfs", dir.display()));
        let shown = format!("skopeo copy {r}");
        let out = cmd.output().map_err(|e| OciError::Tool {
            tool: shown.clone(),
            message: format!("could not run skopeo (is it installed?): {e}"),
        })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(OciError::Tool {
                tool: shown,
                message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    };
    match run(true) {
        Ok(()) => Ok(()),
        Err(first) => {
            // Placeholders refused? Start over without them; report the
            // original error if that fails too.
            let _ = std::fs::remove_dir_all(dir);
            std::fs::create_dir_all(dir).map_err(OciError::io("create", dir))?;
            run(false).map_err(|_| first)
        }
    }
}

/// Imports the image `layout_tag` of a layout under `tag`.
pub fn import(
    repo: &Repository,
    layout: &Layout,
    layout_tag: Option<&str>,
    tag: &str,
    options: &PullOptions,
    events: Sink<'_>,
) -> Result<PullReport, OciError> {
    let (mdesc, mbytes, manifest) = layout.manifest(layout_tag)?;
    let config_bytes = layout.read_blob(&manifest.config)?;
    let config: Config = parse_json(&config_bytes, &format!("config {}", manifest.config.digest))?;
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != manifest.layers.len() {
        return Err(OciError::Invalid {
            what: format!("config {}", manifest.config.digest),
            reason: format!(
                "{} diff_ids for {} layers",
                diff_ids.len(),
                manifest.layers.len()
            ),
        });
    }
    events(Event::Layers(manifest.layers.clone()));
    let present: Vec<Option<Digest>> = manifest
        .layers
        .iter()
        .map(|l| store::layer_object(repo, &l.digest))
        .collect::<Result<_, _>>()?;
    let image = ImageCharge::new(&options.limits);
    let imported: Vec<(usize, Digest, LayerStats, Tree)> = (0..manifest.layers.len())
        .into_par_iter()
        .filter(|&i| present[i].is_none())
        .map(|i| {
            let l = &manifest.layers[i];
            let (tree, stats) = import_layer(repo, layout, l, &diff_ids[i], i, &image, events)?;
            let obj = store::store_layer(repo, &tree, &options.limits)?;
            events(Event::LayerDone {
                index: i,
                reused: false,
            });
            Ok((i, obj, stats, tree))
        })
        .collect::<Result<_, OciError>>()?;
    repo.objects().sync()?;
    let mut trees: Vec<Option<Tree>> = vec![None; manifest.layers.len()];
    let mut reports: Vec<LayerReport> = manifest
        .layers
        .iter()
        .map(|l| LayerReport {
            digest: l.digest.clone(),
            size: l.size,
            reused: true,
            stats: LayerStats::default(),
        })
        .collect();
    for (i, obj, stats, tree) in imported {
        store::link_layer(repo, &manifest.layers[i].digest, &obj)?;
        trees[i] = Some(tree);
        reports[i].reused = false;
        reports[i].stats = stats;
    }
    for (i, p) in present.iter().enumerate() {
        if let Some(obj) = p {
            let digest = &manifest.layers[i].digest;
            let tree = store::load_layer(repo, digest, obj, &options.limits)?;
            charge_tree(&mut LayerCharge::new(&image), &tree).map_err(|e| OciError::Invalid {
                what: format!("layer {digest}"),
                reason: format!("its tree is {e}"),
            })?;
            trees[i] = Some(tree);
            events(Event::LayerDone {
                index: i,
                reused: true,
            });
        }
    }
    events(Event::Step("merging layers".into()));
    // Each layer tree goes as soon as it is applied.
    let mut merge = Merge::new();
    for (tree, l) in trees.iter_mut().zip(&manifest.layers) {
        if let Some(tree) = tree.take() {
            merge.apply(LayerRef {
                digest: &l.digest,
                tree: &tree,
            })?;
        }
    }
    let merged = merge.finish();
    let image_name = store::image_name(tag);
    let (image_id, image_size) = if options.dry {
        store::store_image(repo, &merged, None)?
    } else {
        store::put_blob(repo, &manifest.config.digest, &config_bytes)?;
        store::put_blob(repo, &mdesc.digest, &mbytes)?;
        let r = store::store_image(repo, &merged, Some(&image_name))?;
        store::set_tag(repo, tag, &mdesc.digest)?;
        r
    };
    Ok(PullReport {
        tag: (!options.dry).then(|| tag.to_owned()),
        manifest: mdesc.digest,
        config: manifest.config.digest,
        image_id,
        image_size,
        layers: reports,
    })
}

/// Counts bytes for progress events.
struct Counting<'a, R> {
    inner: R,
    index: usize,
    read: u64,
    reported: u64,
    events: Sink<'a>,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read - self.reported >= 1 << 20 || n == 0 {
            self.reported = self.read;
            (self.events)(Event::Progress {
                index: self.index,
                read: self.read,
            });
        }
        Ok(n)
    }
}

fn import_layer(
    repo: &Repository,
    layout: &Layout,
    l: &Descriptor,
    diff_id: &str,
    index: usize,
    image: &ImageCharge,
    events: Sink<'_>,
) -> Result<(Tree, LayerStats), OciError> {
    let blob = layout.open_blob(l)?;
    let mut counted = Counting {
        inner: blob,
        index,
        read: 0,
        reported: 0,
        events,
    };
    let result = (|| {
        let stream = compression::decompress(&mut counted, &l.digest, image).map_err(|source| {
            OciError::Stream {
                layer: l.digest.clone(),
                what: "could not start decompressing".into(),
                source,
            }
        })?;
        let mut diff = Verify::new(stream, None);
        let r = tar::read_layer(&mut diff, &l.digest, repo.objects(), image)?;
        diff.finish(diff_id, None).map_err(|e| match e {
            OciError::Digest { what, .. } => OciError::Digest {
                digest: l.digest.clone(),
                what: format!("uncompressed content does not match diff_id {diff_id}: {what}"),
            },
            e => e,
        })?;
        Ok(r)
    })();
    // A wrong blob is the cause to report, whatever else went wrong reading it.
    let checked = counted.inner.finish(&l.digest, Some(l.size));
    match (result, checked) {
        (_, Err(e)) => Err(e),
        (r, Ok(())) => r,
    }
}

/// `cfs import-tar`: one tar (plain, gzip or zstd; `-` for stdin) as an
/// image named `name`. Whiteouts in it are applied (to nothing) and dropped.
/// The stream is read to its end (within [`Limits::max_trailer`]), as a
/// pull does. A file must be a regular file (it is opened without blocking:
/// a FIFO is refused); standard input may be a pipe.
pub fn import_tar(
    repo: &Repository,
    file: &Path,
    name: &str,
    limits: &Limits,
) -> Result<(Digest, LayerStats), OciError> {
    cfs_repo::repository::check_name(name)?;
    let _lock = repo.lock(LockMode::Shared)?;
    let input: Box<dyn Read> = if file == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(cfs_repo::input::open_regular(file).map_err(OciError::io("open", file))?)
    };
    let shown = if file == Path::new("-") {
        "stdin".to_owned()
    } else {
        file.display().to_string()
    };
    let image = ImageCharge::new(limits);
    let mut stream =
        compression::decompress(input, &shown, &image).map_err(|source| OciError::Stream {
            layer: shown.clone(),
            what: "could not start decompressing".into(),
            source,
        })?;
    let (tree, stats) = tar::read_layer(&mut stream, &shown, repo.objects(), &image)?;
    let mut merge = Merge::new();
    merge.apply(LayerRef {
        digest: &shown,
        tree: &tree,
    })?;
    drop(tree);
    let merged = merge.finish();
    let (id, _) = store::store_image(repo, &merged, Some(name))?;
    Ok((id, stats))
}
