//! Checking a repository: every object re-hashed (in parallel) against its
//! name, every image parsed and every object it names present, every name
//! pointing somewhere valid, every OCI tag's records complete, and nothing in the repository that does not
//! belong there. Holds the shared lock, so it waits for a running gc but not
//! for imports (whose unnamed objects are complete and are simply counted).

use super::image::objects_of_image;
use super::open::TOP_LEVEL;
use super::{LockMode, RepoError, Repository, StreamRoots};
use crate::store::EntryKind;
use cfs_format::Digest;
use rayon::prelude::*;
use std::collections::HashSet;
use std::path::PathBuf;

/// An object whose content does not hash to its name (or can't be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt {
    /// Path of the object, relative to the repository.
    pub path: PathBuf,
    /// The digest its name says.
    pub expected: Digest,
    /// The digest of its content, if it could be read.
    pub found: Option<Digest>,
    /// Why it could not be read.
    pub error: Option<String>,
}

/// An object an image needs that is not in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The image (its id).
    pub image: Digest,
    /// The missing object.
    pub object: Digest,
}

/// A stray entry or a broken name: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Path relative to the repository.
    pub path: PathBuf,
    /// What is wrong.
    pub what: String,
}

/// Everything fsck found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsckReport {
    /// Objects checked.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Images checked.
    pub images: u64,
    /// Names checked.
    pub refs: u64,
    /// Objects whose content does not match their name.
    pub corrupt: Vec<Corrupt>,
    /// Objects images need but the store lacks.
    pub missing: Vec<Missing>,
    /// Entries that do not belong (badly named files, leftover temporaries).
    pub stray: Vec<Problem>,
    /// Images that don't parse, names that point nowhere.
    pub broken: Vec<Problem>,
}

impl FsckReport {
    /// True when nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty()
            && self.missing.is_empty()
            && self.stray.is_empty()
            && self.broken.is_empty()
    }
}

impl Repository {
    /// Checks the whole repository; see the module doc. An `Err` means fsck
    /// itself could not run (e.g. a directory is unreadable); what it finds
    /// wrong is in the report.
    /// `streams` reads the records other crates keep under `streams/`; what
    /// none of them claims is reported, unchecked.
    pub fn fsck(&self, streams: &[&dyn StreamRoots]) -> Result<FsckReport, RepoError> {
        let _lock = self.lock(LockMode::Shared)?;
        let mut report = FsckReport::default();
        let objects = self.fsck_objects(&mut report)?;
        self.fsck_top_level(&mut report)?;
        let ids = self.fsck_image_links(&mut report)?;
        report.images = ids.len() as u64;
        self.fsck_refs(&ids, &mut report)?;
        let images = self.fsck_images(&ids, &objects);
        // Records under streams/ (OCI: tags down to the objects their layers name).
        for root in streams {
            for (path, what) in root.check(self, &objects.present) {
                report.broken.push(Problem { path, what });
            }
        }
        for path in self.unclaimed_streams(streams)? {
            report.stray.push(Problem {
                path,
                what: "records no reader was given for (not checked)".into(),
            });
        }
        for (id, r) in images {
            match r {
                Ok(missing) => report.missing.extend(
                    missing
                        .into_iter()
                        .map(|object| Missing { image: id, object }),
                ),
                Err(what) => report.broken.push(Problem {
                    path: PathBuf::from("images").join(id.to_hex()),
                    what,
                }),
            }
        }
        Ok(report)
    }

    /// Lists `objects/`: counts the objects, reports temporaries and strays,
    /// and re-hashes every object (in parallel) against its name.
    fn fsck_objects(&self, report: &mut FsckReport) -> Result<Objects, RepoError> {
        let objects_rel = PathBuf::from("objects");
        let mut present = HashSet::new();
        let mut to_hash = Vec::new();
        for e in self.objects.list()? {
            let rel = objects_rel.join(&e.path);
            match e.kind {
                EntryKind::Object(d) => {
                    present.insert(d);
                    report.objects += 1;
                    report.bytes += e.size;
                    to_hash.push((d, rel));
                }
                EntryKind::Temporary => report.stray.push(Problem {
                    path: rel,
                    what: "temporary file left by an interrupted import (gc removes it)".into(),
                }),
                EntryKind::Stray => report.stray.push(Problem {
                    path: rel,
                    what: "not an object (name is not a digest, or not a regular file)".into(),
                }),
            }
        }
        report.corrupt = to_hash
            .par_iter()
            .filter_map(|(d, rel)| {
                let (found, error) = match self.objects.hash_object(d) {
                    Ok(found) if found == *d => return None,
                    Ok(found) => (Some(found), None),
                    Err(e) => (None, Some(e.to_string())),
                };
                Some(Corrupt {
                    path: rel.clone(),
                    expected: *d,
                    found,
                    error,
                })
            })
            .collect();
        let corrupt = report.corrupt.iter().map(|c| c.expected).collect();
        Ok(Objects { present, corrupt })
    }

    /// Reports anything at the top level that is not part of a repository.
    fn fsck_top_level(&self, report: &mut FsckReport) -> Result<(), RepoError> {
        for name in self.names_in(".")? {
            if !TOP_LEVEL.iter().any(|t| name == *t) {
                report.stray.push(Problem {
                    path: PathBuf::from(&name),
                    what: "not part of a repository".into(),
                });
            }
        }
        Ok(())
    }

    /// Checks each `images/ID` link points to its object; returns the ids
    /// of those that do.
    fn fsck_image_links(&self, report: &mut FsckReport) -> Result<Vec<Digest>, RepoError> {
        let images_dir = self.open_dir("images")?;
        let mut ids = Vec::new();
        for name in self.names_in("images")? {
            let rel = PathBuf::from("images").join(&name);
            if name == "refs" {
                continue;
            }
            let Ok(id) = Digest::from_hex(name.as_encoded_bytes()) else {
                report.stray.push(Problem {
                    path: rel,
                    what: "not an image id".into(),
                });
                continue;
            };
            let want = format!("../objects/{}", id.object_path());
            match rustix::fs::readlinkat(&images_dir, name.as_os_str(), Vec::new()) {
                Ok(t) if t.as_bytes() == want.as_bytes() => ids.push(id),
                Ok(t) => report.broken.push(Problem {
                    path: rel,
                    what: format!("points to {}, not {want}", t.to_string_lossy()),
                }),
                Err(_) => report.broken.push(Problem {
                    path: rel,
                    what: "not a symlink".into(),
                }),
            }
        }
        Ok(ids)
    }

    /// Checks each name in `images/refs` is valid and names an image in `ids`.
    fn fsck_refs(&self, ids: &[Digest], report: &mut FsckReport) -> Result<(), RepoError> {
        for name in self.names_in("images/refs")? {
            let rel = PathBuf::from("images/refs").join(&name);
            let Some(name) = name.to_str().filter(|n| super::refs::check_name(n).is_ok()) else {
                report.stray.push(Problem {
                    path: rel,
                    what: "not a valid image name (a leftover temporary name?)".into(),
                });
                continue;
            };
            report.refs += 1;
            match self.read_ref(name) {
                Ok(Some(id)) if ids.contains(&id) => {}
                Ok(Some(id)) => report.broken.push(Problem {
                    path: rel,
                    what: format!("names image {id}, which is not in images/"),
                }),
                Ok(None) => {}
                Err(e) => report.broken.push(Problem {
                    path: rel,
                    what: e.to_string(),
                }),
            }
        }
        Ok(())
    }

    /// For each image (in parallel): the objects it needs that are missing
    /// (the image itself, if its object is), or why it can't be read.
    fn fsck_images(&self, ids: &[Digest], objects: &Objects) -> Vec<ImageCheck> {
        ids.par_iter()
            .map(|id| {
                if !objects.present.contains(id) {
                    return (*id, Ok(vec![*id]));
                }
                if objects.corrupt.contains(id) {
                    return (*id, Err("image object is corrupt".into()));
                }
                let r = self
                    .read_image(id)
                    .map_err(|e| e.to_string())
                    .and_then(|b| objects_of_image(b).map_err(|e| e.to_string()))
                    .map(|objs| {
                        objs.into_iter()
                            .filter(|o| !objects.present.contains(o))
                            .collect()
                    });
                (*id, r)
            })
            .collect()
    }
}

/// The objects fsck found in the store.
struct Objects {
    /// Every object.
    present: HashSet<Digest>,
    /// Those whose content does not match their name (or can't be read).
    corrupt: HashSet<Digest>,
}

/// An image and the objects it lacks, or why it could not be checked.
type ImageCheck = (Digest, Result<Vec<Digest>, String>);
