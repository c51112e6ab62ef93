//! Runs the tar import code on an input's layers in a scratch directory and
//! checks what it did; a broken invariant panics (naming it).
//!
//! ```text
//! T/outside/sentinel, T/outside/dir/   what must stay untouched
//! T/src/                               an OCI layout holding the layers (written here)
//! T/repo/                              the repository the imports write to
//! ```
//! `T` is a fresh directory under `/dev/shm` (tmpfs: the store's fsyncs cost
//! nothing there), or the system temp directory where there is none, and is
//! removed afterwards.

use cfs_format::reader::{Image, Nid};
use cfs_format::{dumpfile, Digest, FileType};
use cfs_oci::limits::Limits;
use cfs_oci::pull::{self, PullOptions, PullReport};
use cfs_oci::store::OciRoots;
use cfs_oci::tar::LayerStats;
use cfs_oci::{OciError, MARKER_PREFIX};
use cfs_repo::Repository;
use sha2::{Digest as _, Sha256};
use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The scratch directory `T`, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let t = base.join(format!(
            "cfs-fuzz-tar-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&t);
        std::fs::create_dir(&t).expect("create the scratch directory");
        Scratch(t)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a path outside the repository looks like (contents included).
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Dir(u32),
    File(u32, Vec<u8>),
    Symlink(PathBuf),
    Other(u32),
}

/// Every path under `dir` (not following symlinks), relative to it and
/// sorted, with its inode number. `full`: modes and file contents too (else
/// modes are 0 and contents empty: the types come from `readdir`, no stat).
fn snapshot(dir: &Path, full: bool) -> Vec<(PathBuf, Seen, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read a scratch directory") {
            let e = e.expect("read a scratch directory");
            let p = e.path();
            let ft = e.file_type().expect("file type");
            let mode = if full {
                std::fs::symlink_metadata(&p).expect("lstat").mode()
            } else {
                0
            };
            let seen = if ft.is_dir() {
                stack.push(p.clone());
                Seen::Dir(mode)
            } else if ft.is_file() {
                let bytes = if full {
                    std::fs::read(&p).expect("read")
                } else {
                    Vec::new()
                };
                Seen::File(mode, bytes)
            } else if ft.is_symlink() {
                Seen::Symlink(std::fs::read_link(&p).expect("readlink"))
            } else {
                Seen::Other(mode)
            };
            let rel = p.strip_prefix(dir).expect("under dir").to_path_buf();
            out.push((rel, seen, e.ino()));
        }
    }
    out.sort_by(|a, b| a.0.as_os_str().as_bytes().cmp(b.0.as_os_str().as_bytes()));
    out
}

/// Whether `link`'s `target`, resolved by its text alone from the directory
/// holding the link, stays under `root` (an absolute target never does).
fn lexically_inside(root: &Path, link: &Path, target: &Path) -> bool {
    let rel = link
        .parent()
        .and_then(|p| p.strip_prefix(root).ok())
        .expect("a link under the root");
    let mut depth: Vec<Component<'_>> = rel.components().collect();
    for c in target.components() {
        match c {
            Component::Normal(_) => depth.push(c),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

fn sha256(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

/// Writes `T/src` as an OCI layout whose image has `layers` (uncompressed,
/// so each layer's digest is also its diff_id); returns the first layer's file.
fn write_layout(src: &Path, layers: &[Vec<u8>]) -> PathBuf {
    let blobs = src.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("create blobs/");
    let put = |b: &[u8]| {
        let h = sha256(b);
        std::fs::write(blobs.join(&h), b).expect("write a blob");
        h
    };
    let digests: Vec<String> = layers.iter().map(|l| put(l)).collect();
    let diff_ids: Vec<String> = digests.iter().map(|d| format!("\"sha256:{d}\"")).collect();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diff_ids.join(",")
    );
    let layer_descs: Vec<String> = digests
        .iter()
        .zip(layers)
        .map(|(d, l)| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{d}","size":{}}}"#,
                l.len()
            )
        })
        .collect();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":{}}},"layers":[{}]}}"#,
        put(config.as_bytes()),
        config.len(),
        layer_descs.join(",")
    );
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}","size":{}}}]}}"#,
        put(manifest.as_bytes()),
        manifest.len()
    );
    std::fs::write(src.join("index.json"), index).expect("write index.json");
    std::fs::write(src.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("write oci-layout");
    blobs.join(&digests[0])
}

/// Imports `layers` (tar streams, bottom first) every way `cfs` can and
/// checks the invariants of the `tar_import` fuzz target (see its doc).
pub fn check_layers(layers: &[Vec<u8>]) {
    check_layers_then(layers, &|_| {});
}

/// [`check_layers`], running `meddle` on `T` between the imports and the
/// checks (to test that the checks see what it does).
pub fn check_layers_then(layers: &[Vec<u8>], meddle: &dyn Fn(&Path)) {
    let t = Scratch::new();
    let (outside, src, repo_dir) = (t.0.join("outside"), t.0.join("src"), t.0.join("repo"));
    std::fs::create_dir_all(outside.join("dir")).expect("create outside/");
    std::fs::write(outside.join("sentinel"), b"must stay as it is\n").expect("write sentinel");
    let first_layer = write_layout(&src, layers);
    let outside_before = snapshot(&outside, true);
    let src_before = snapshot(&src, true);

    // `cfs oci pull oci:T/src`; then, with one layer, `cfs import-tar` of
    // it, else a second pull, which reads the layers back from their
    // records instead of the tars. (Two imports per input, not three:
    // each costs about a third of an execution.)
    let repo = Repository::init(&repo_dir).expect("init the repository");
    let reference = format!("oci:{}", src.display());
    let options = |tag: &str| PullOptions {
        tag: Some(tag.to_owned()),
        ..PullOptions::default()
    };
    let pulled = pull::pull(&repo, &reference, &options("fuzz"), &|_| {});
    let imported: Option<Result<(Digest, LayerStats), OciError>> = (layers.len() == 1)
        .then(|| pull::import_tar(&repo, &first_layer, "tar", &Limits::default()));
    let repulled = (layers.len() > 1 && pulled.is_ok())
        .then(|| pull::pull(&repo, &reference, &options("again"), &|_| {}));
    if std::env::var_os("CFS_FUZZ_DEBUG").is_some() {
        let id = |r: &Result<PullReport, OciError>| match r {
            Ok(r) => r.image_id.to_hex(),
            Err(e) => format!("error: {e}"),
        };
        eprintln!("{} layer(s): pull {}", layers.len(), id(&pulled));
        if let Some(r) = &imported {
            match r {
                Ok((id, _)) => eprintln!("import-tar {id}"),
                Err(e) => eprintln!("import-tar error: {e}"),
            }
        }
        if let Some(r) = &repulled {
            eprintln!("pull again {}", id(r));
        }
    }

    meddle(&t.0);

    // Nothing outside the repository changed or appeared.
    let mut top: Vec<String> = std::fs::read_dir(&t.0)
        .expect("read T")
        .map(|e| {
            e.expect("read T")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    top.sort();
    assert_eq!(
        top,
        ["outside", "repo", "src"],
        "new entries beside the repository"
    );
    assert!(
        outside_before == snapshot(&outside, true),
        "the sentinel directory changed"
    );
    assert!(
        src_before == snapshot(&src, true),
        "the source layout changed"
    );
    // (T is one file system: inode numbers identify files.)
    let foreign: HashSet<u64> = outside_before
        .iter()
        .chain(&src_before)
        .map(|(_, _, ino)| *ino)
        .collect();
    for (rel, seen, ino) in snapshot(&repo_dir, false) {
        let path = repo_dir.join(&rel);
        assert!(
            !matches!(seen, Seen::File(..)) || !foreign.contains(&ino),
            "{}: a hard link to a file outside the repository",
            rel.display()
        );
        match seen {
            Seen::Symlink(target) => assert!(
                lexically_inside(&repo_dir, &path, &target),
                "{}: a symlink pointing out of the repository ({})",
                rel.display(),
                target.display()
            ),
            Seen::Other(_) => panic!("{}: a special file in the repository", rel.display()),
            Seen::Dir(_) | Seen::File(..) => {}
        }
    }

    // Every way of importing agrees on the image.
    match (&imported, &pulled) {
        (Some(Ok((id, _))), Ok(report)) => assert_eq!(
            *id, report.image_id,
            "import-tar and a pull of the same layer made different images"
        ),
        (Some(Ok(_)), Err(e)) => panic!("import-tar took the layer, the pull refused it: {e}"),
        (Some(Err(e)), Ok(_)) => panic!("the pull took the layer, import-tar refused it: {e}"),
        _ => {}
    }
    match &repulled {
        Some(Ok(again)) => {
            assert!(
                again.layers.iter().all(|l| l.reused),
                "a stored layer was read again"
            );
            assert_eq!(
                pulled.as_ref().ok().map(|r| r.image_id),
                Some(again.image_id),
                "pulling again, from the stored layer records, made a different image"
            );
        }
        Some(Err(e)) => panic!("pulling again, from the stored layer records, failed: {e}"),
        None => {}
    }
    // That image is named, reads back and names only the repository's objects.
    if let Ok(report) = &pulled {
        let names = if imported.is_some() {
            ["oci:fuzz", "tar"]
        } else {
            ["oci:fuzz", "oci:again"]
        };
        for name in names {
            assert_eq!(
                repo.resolve(name).expect("the image name resolves"),
                report.image_id,
                "image name {name}"
            );
        }
        check_image(&repo, &report.image_id);
    }
    let fsck = repo.fsck(&[&OciRoots]).expect("fsck runs");
    assert!(fsck.is_clean(), "fsck after the imports: {fsck:?}");
}

/// The image `id` reads, dumps, and every file's content redirect names an
/// object of this repository (with the matching digest).
fn check_image(repo: &Repository, id: &Digest) {
    let bytes = repo.read_image(id).expect("the image reads");
    assert_eq!(cfs_format::fsverity::digest(&bytes), *id, "image id");
    let img = Image::open(&bytes[..]).expect("the image opens");
    let tree = img.to_tree().expect("the image reads as a tree");
    let mut dump = Vec::new();
    dumpfile::print(&tree, &mut dump).expect("the image dumps");
    for (_, n) in tree.nodes() {
        assert!(
            n.xattrs.iter().all(|x| !x.name.starts_with(MARKER_PREFIX)),
            "an internal marker xattr reached the image"
        );
    }
    let mut stack = vec![img.root_nid()];
    let mut seen: HashSet<Nid> = HashSet::new();
    while let Some(nid) = stack.pop() {
        if !seen.insert(nid) {
            continue;
        }
        let ino = img.inode(nid).expect("an inode reads");
        match ino.file_type() {
            Some(FileType::Directory) => {
                for e in img.readdir(nid, 0).expect("readdir") {
                    let e = e.expect("a directory entry reads");
                    if !e.is_dot_or_dotdot() {
                        stack.push(e.nid);
                    }
                }
            }
            Some(FileType::Regular) => {
                let redirect = img.redirect(nid).expect("redirect reads");
                let digest = img.digest(nid).expect("metacopy reads");
                if let Some(r) = redirect {
                    let obj = r
                        .strip_prefix(b"/")
                        .and_then(Digest::from_object_path)
                        .unwrap_or_else(|| {
                            panic!(
                                "a redirect that is not an object path: {:?}",
                                String::from_utf8_lossy(r)
                            )
                        });
                    assert!(r.starts_with(b"/"), "a relative redirect");
                    assert!(
                        repo.objects().contains(&obj),
                        "the image names object {obj}, which the repository lacks"
                    );
                    assert_eq!(digest, Some(obj), "metacopy digest and redirect differ");
                }
            }
            _ => {}
        }
    }
}
