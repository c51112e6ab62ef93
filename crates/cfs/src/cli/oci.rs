//! `cfs oci …` (pull, images, inspect, rm/untag, tag, mount, compute-id) and
//! `cfs import-tar`. The work is in `cfs_oci`; this prints.

use super::json::{OciImage, OciInspect, OciLayer};
use super::mount::{self, MountArgs};
use anyhow::Context;
use cfs_oci::layout::{parse_json, Config, Manifest};
use cfs_oci::pull::{self, Event, PullOptions};
use cfs_oci::{store, OciError};
use cfs_repo::Repository;
use clap::{Args, Subcommand};
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// `cfs oci` subcommands.
#[derive(Subcommand, Debug)]
pub enum OciCommand {
    /// Pull an image (oci:DIR, oci:DIR:TAG, oci-archive:FILE, docker://HOST/REPO:TAG,
    /// docker-archive:FILE) into the repository and tag it NAME.
    Pull(PullArgs),
    /// List the OCI images: NAME, manifest digest, image id.
    Images {
        /// Print a JSON array instead (docs/json.md).
        #[arg(long)]
        json: bool,
    },
    /// Show an image's manifest, config and layers.
    Inspect {
        /// The image's NAME.
        name: String,
        /// Print a JSON object instead (docs/json.md).
        #[arg(long)]
        json: bool,
    },
    /// Remove an image's NAME: its tag and its image `oci:NAME` (objects go
    /// at the next `cfs gc`).
    #[command(visible_alias = "untag")]
    Rm {
        /// The image's NAME.
        name: String,
    },
    /// Give an image another NAME: SRC is a NAME or a manifest digest
    /// (`sha256:…`) some tag points to; NEW gets its tag and its image.
    Tag {
        /// The existing NAME, or a manifest digest.
        src: String,
        /// The new NAME.
        new: String,
        /// Replace what NEW names now.
        #[arg(long)]
        force: bool,
    },
    /// Mount an image by NAME (as `cfs mount oci:NAME`; same options).
    Mount(MountArgs),
    /// Print the composefs image id of an image: a NAME in the repository,
    /// or a reference (its layers are stored, nothing is tagged).
    ComputeId {
        /// NAME or transport reference.
        reference: String,
        /// Verify TLS certificates of registries.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        tls_verify: bool,
    },
}

/// Options of `cfs oci pull`.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// What to pull.
    reference: String,
    /// The tag in the repository (default: the image's name and tag).
    name: Option<String>,
    /// Verify TLS certificates of registries (`--tls-verify=false` for a
    /// registry on loopback without TLS).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    tls_verify: bool,
}

/// Options of `cfs import-tar`.
#[derive(Args, Debug)]
pub struct ImportTarArgs {
    /// The tar (plain, gzip or zstd; `-` for stdin).
    file: PathBuf,
    /// The image's name.
    name: String,
}

fn open(repo: &Path) -> anyhow::Result<Repository> {
    // The first import creates the repository; init opens an existing one.
    super::repo::init_repo(repo)
}

/// Runs `cfs import-tar`.
pub fn import_tar(repo: &Path, a: &ImportTarArgs) -> anyhow::Result<()> {
    let r = open(repo)?;
    let (id, stats) = pull::import_tar(&r, &a.file, &a.name, &Default::default())
        .with_context(|| format!("cannot import {}", a.file.display()))?;
    if std::io::stderr().is_terminal() {
        eprintln!(
            "{} entries, {} files, {} bytes, {} new objects",
            stats.entries, stats.files, stats.bytes, stats.new_objects
        );
    }
    println!("{id}");
    Ok(())
}

/// Runs a `cfs oci` command.
pub fn run(repo: &Path, cmd: OciCommand) -> anyhow::Result<()> {
    match cmd {
        OciCommand::Pull(a) => {
            let r = open(repo)?;
            let options = PullOptions {
                tag: a.name,
                insecure: !a.tls_verify,
                ..PullOptions::default()
            };
            let report = with_progress(|events| pull::pull(&r, &a.reference, &options, events))
                .with_context(|| format!("cannot pull {}", a.reference))?;
            let fetched = report.layers.iter().filter(|l| !l.reused).count();
            eprintln!(
                "{}: {} layers ({} fetched, {} already present), image {} bytes",
                report.tag.as_deref().unwrap_or("-"),
                report.layers.len(),
                fetched,
                report.layers.len() - fetched,
                report.image_size
            );
            println!("{}", report.image_id);
            Ok(())
        }
        OciCommand::Images { json } => {
            let r = super::repo::open_repo(repo)?;
            let mut list = Vec::new();
            for (name, manifest) in store::tags(&r)? {
                let image_id = r.read_ref(&store::image_name(&name))?.map(|d| d.to_hex());
                list.push(OciImage {
                    name,
                    manifest,
                    image_id,
                });
            }
            if json {
                return super::json::print(&list);
            }
            let mut out = BufWriter::new(std::io::stdout().lock());
            for i in list {
                let id = i.image_id.as_deref().unwrap_or("-");
                writeln!(out, "{}\t{}\t{id}", i.name, i.manifest)?;
            }
            Ok(out.flush()?)
        }
        OciCommand::Inspect { name, json } => {
            let report = inspect(&super::repo::open_repo(repo)?, &name)?;
            if json {
                super::json::print(&report)
            } else {
                print_inspect(&report)
            }
        }
        OciCommand::Rm { name } => {
            let r = super::repo::open_repo(repo)?;
            store::remove_tag(&r, &name).map_err(|e| match e {
                OciError::UnknownImage(n) => no_such_image(&r, &n),
                e => e.into(),
            })?;
            eprintln!("removed {name}; run `cfs gc` to free its objects");
            Ok(())
        }
        OciCommand::Tag { src, new, force } => {
            tag(&super::repo::open_repo(repo)?, &src, &new, force)
        }
        OciCommand::Mount(mut a) => {
            let name = a.image().to_owned();
            let r = super::repo::open_repo(repo)?;
            if store::read_tag(&r, &name)?.is_none() {
                return Err(no_such_image(&r, &name));
            }
            a.set_image(store::image_name(&name));
            mount::mount(a, Some(repo))
        }
        OciCommand::ComputeId {
            reference,
            tls_verify,
        } => {
            let r = open(repo)?;
            if pull::is_transport(&reference) {
                let options = PullOptions {
                    dry: true,
                    insecure: !tls_verify,
                    ..PullOptions::default()
                };
                let report = with_progress(|events| pull::pull(&r, &reference, &options, events))?;
                println!("{}", report.image_id);
            } else {
                if store::read_tag(&r, &reference)?.is_none() {
                    return Err(no_such_image(&r, &reference));
                }
                println!("{}", r.resolve(&store::image_name(&reference))?);
            }
            Ok(())
        }
    }
}

/// `cfs oci tag SRC NEW`: NEW's image name first, then its tag (the order
/// a pull records them in), under the shared lock so gc can't run between.
fn tag(r: &Repository, src: &str, new: &str, force: bool) -> anyhow::Result<()> {
    store::check_tag(new)?;
    let tags = store::tags(r)?;
    let (manifest, id) = if src.starts_with("sha256:") {
        let tagged = tags.iter().find(|(_, m)| m == src).ok_or_else(|| {
            anyhow::anyhow!(
                "no tag points to manifest {src} in {}, so its image is not stored: pull it",
                r.path().display()
            )
        })?;
        (src.to_owned(), r.resolve(&store::image_name(&tagged.0))?)
    } else {
        let manifest = store::read_tag(r, src)?.ok_or_else(|| no_such_image(r, src))?;
        (manifest, r.resolve(&store::image_name(src))?)
    };
    if !force && store::read_tag(r, new)?.is_some() {
        anyhow::bail!(
            "{new:?} already names an OCI image in {}: --force replaces it",
            r.path().display()
        );
    }
    let _lock = r.lock(cfs_repo::repository::LockMode::Shared)?;
    r.set_ref(&store::image_name(new), &id)?;
    store::set_tag(r, new, &manifest)?;
    eprintln!("tagged {new} ({manifest}, image {id})");
    Ok(())
}

/// The OCI tags whose image removing the image name or id `name` removes
/// (`cfs rm oci:NAME`, or `cfs rm ID` of an OCI image): so that `cfs rm`
/// leaves no tag without its image.
pub fn tags_removed_with(r: &Repository, name: &str) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = match cfs_format::Digest::from_hex(name.as_bytes()) {
        Ok(id) => r
            .refs()?
            .into_iter()
            .filter(|(_, target)| *target == id)
            .map(|(n, _)| n)
            .collect(),
        Err(_) => vec![name.to_owned()],
    };
    let mut tags = Vec::new();
    for n in names {
        if let Some(tag) = n.strip_prefix("oci:") {
            if store::check_tag(tag).is_ok() && store::read_tag(r, tag)?.is_some() {
                tags.push(tag.to_owned());
            }
        }
    }
    Ok(tags)
}

/// Removes OCI tags whose image name is already gone (see [`tags_removed_with`]).
pub fn remove_tags(r: &Repository, tags: &[String]) -> anyhow::Result<()> {
    for tag in tags {
        store::remove_tag(r, tag)?;
    }
    Ok(())
}

/// No OCI image `name` in `r`: the error names the repository searched.
fn no_such_image(r: &Repository, name: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "no OCI image named {name:?} in the repository {} (see `cfs oci images`)",
        r.path().display()
    )
}

/// What `cfs oci inspect` shows of the image tagged `name`.
fn inspect(r: &Repository, name: &str) -> anyhow::Result<OciInspect> {
    let manifest_digest = store::read_tag(r, name)?.ok_or_else(|| no_such_image(r, name))?;
    let mbytes = store::get_blob(r, &manifest_digest)?;
    let m: Manifest = parse_json(&mbytes, &manifest_digest)?;
    let cbytes = store::get_blob(r, &m.config.digest)?;
    let c: Config = parse_json(&cbytes, &m.config.digest)?;
    let mut layers = Vec::new();
    for (l, diff) in m.layers.iter().zip(c.rootfs.diff_ids.iter()) {
        layers.push(OciLayer {
            digest: l.digest.clone(),
            size: l.size,
            media_type: l.media_type.clone(),
            diff_id: diff.clone(),
            record: store::layer_object(r, &l.digest)?.map(|d| d.to_hex()),
        });
    }
    Ok(OciInspect {
        name: name.to_owned(),
        image_id: r.read_ref(&store::image_name(name))?.map(|d| d.to_hex()),
        manifest: manifest_digest,
        config: m.config.digest,
        os: c.os,
        architecture: c.architecture,
        layers,
    })
}

/// `cfs oci inspect` as text.
fn print_inspect(i: &OciInspect) -> anyhow::Result<()> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    out.write_all(inspect_text(i).as_bytes())?;
    Ok(out.flush()?)
}

/// What [`print_inspect`] prints. The platform and media types are the
/// image's own strings (a registry's, or the owner's of a layout), checked
/// by nothing: they are escaped as error messages are, so an image can't
/// send escape sequences to the terminal. Names and digests were checked.
fn inspect_text(i: &OciInspect) -> String {
    let shown = super::for_terminal;
    let mut out = String::new();
    out.push_str(&format!("name:      {}\n", i.name));
    let id = i.image_id.as_deref().unwrap_or("-");
    out.push_str(&format!("image id:  {id}\n"));
    out.push_str(&format!("manifest:  {}\n", i.manifest));
    out.push_str(&format!("config:    {}\n", i.config));
    let (os, arch) = (shown(&i.os), shown(&i.architecture));
    out.push_str(&format!("platform:  {os}/{arch}\nlayers:\n"));
    for l in &i.layers {
        out.push_str(&format!(
            "  {} {:>12} {}\n    diff_id {}\n    record  {}\n",
            l.digest,
            l.size,
            shown(&l.media_type),
            l.diff_id,
            l.record.as_deref().unwrap_or("missing")
        ));
    }
    out
}

/// Runs a pull with per-layer progress bars when stderr is a terminal.
fn with_progress<T>(
    f: impl FnOnce(&(dyn Fn(Event) + Sync)) -> Result<T, OciError>,
) -> Result<T, OciError> {
    if !std::io::stderr().is_terminal() {
        return f(&|_| {});
    }
    let multi = indicatif::MultiProgress::new();
    let bars: Mutex<Vec<indicatif::ProgressBar>> = Mutex::new(Vec::new());
    let style = indicatif::ProgressStyle::with_template(
        "{prefix} {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    let events = |e: Event| {
        let mut bars = bars.lock().unwrap_or_else(|p| p.into_inner());
        match e {
            Event::Step(s) => {
                let _ = multi.println(s);
            }
            Event::Layers(layers) => {
                for l in layers {
                    let b = multi.add(indicatif::ProgressBar::new(l.size));
                    b.set_style(style.clone());
                    b.set_prefix(l.digest.chars().take(19).collect::<String>());
                    bars.push(b);
                }
            }
            Event::Progress { index, read } => {
                if let Some(b) = bars.get(index) {
                    b.set_position(read);
                }
            }
            Event::LayerDone { index, reused } => {
                if let Some(b) = bars.get(index) {
                    b.finish_with_message(if reused { "already present" } else { "done" });
                }
            }
        }
    };
    let r = f(&events);
    for b in bars.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        b.finish();
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image's config and manifest are someone else's JSON: `"os":
    /// "linux\u001b]0;title\u0007"` must reach the terminal escaped.
    #[test]
    fn inspect_escapes_the_images_own_strings() {
        let i = OciInspect {
            name: "esc".into(),
            image_id: None,
            manifest: "sha256:m".into(),
            config: "sha256:c".into(),
            os: "linux\x1b]0;PWN\x07".into(),
            architecture: "amd64\x1b[31m".into(),
            layers: vec![OciLayer {
                digest: "sha256:l".into(),
                size: 1,
                media_type: "application/x\x1b[2J".into(),
                diff_id: "sha256:d".into(),
                record: None,
            }],
        };
        let text = inspect_text(&i);
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(
            text.contains("platform:  linux\\x1b]0;PWN\\x07/amd64\\x1b[31m\n"),
            "{text}"
        );
        assert!(text.contains(" application/x\\x1b[2J\n"), "{text}");
    }
}
