//! Records other crates keep in the repository, under `streams/NAME/`,
//! that keep objects alive: the seam between the repository and the crates
//! that write them (`cfs-oci` keeps OCI tags, manifests and layer records in
//! `streams/oci/`).
//!
//! The repository does not read those records: their format belongs to the
//! crate that writes them. Whoever runs [`gc`](Repository::gc) or
//! [`fsck`](Repository::fsck) hands over a [`StreamRoots`] for each kind it
//! knows; gc keeps what they reach and removes the record links they no
//! longer need, fsck reports what they find wrong. A caller that forgot
//! one can't lose data: gc refuses to run while `streams/` holds records
//! that no [`StreamRoots`] claimed, and fsck reports them as unchecked.

use super::{RepoError, Repository};
use cfs_format::Digest;
use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

/// Directories under `streams/` the repository itself reserves (composefs-rs
/// splitstream refs), which need no [`StreamRoots`] while they are empty.
const RESERVED: &[&str] = &["refs"];

/// What one kind of record reaches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marked {
    /// Objects the records reach: gc keeps them.
    pub objects: HashSet<Digest>,
    /// Record files nothing reaches any more (relative to the repository,
    /// under the records' own `streams/NAME/`): gc removes them.
    pub unreached: Vec<PathBuf>,
}

/// Records under `streams/NAME/` that keep objects alive.
pub trait StreamRoots: Sync {
    /// `NAME`: the directory under `streams/` these records live in.
    fn name(&self) -> &str;

    /// Everything the records reach. An error stops gc before it removes
    /// anything: records that can't be read mean gc can't know what is live.
    fn mark(&self, repo: &Repository) -> Result<Marked, Box<dyn std::error::Error + Send + Sync>>;

    /// What is wrong with the records, as (path relative to the repository,
    /// what); `present` holds every object the store has.
    fn check(&self, repo: &Repository, present: &HashSet<Digest>) -> Vec<(PathBuf, String)>;
}

impl Repository {
    /// The directories under `streams/` that hold something and that no
    /// root in `roots` claims (a reserved one only when it is not empty).
    pub(super) fn unclaimed_streams(
        &self,
        roots: &[&dyn StreamRoots],
    ) -> Result<Vec<PathBuf>, RepoError> {
        let dir = self.path.join("streams");
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(RepoError::std_io("read", &dir)(e)),
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e.map_err(RepoError::std_io("read", &dir))?;
            let name = e.file_name();
            if roots.iter().any(|r| name == r.name()) {
                continue;
            }
            let reserved = RESERVED.iter().any(|r| name == *r);
            let empty = std::fs::read_dir(e.path()).is_ok_and(|mut d| d.next().is_none());
            if !(reserved && empty) {
                out.push(Path::new("streams").join(name));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Marks what every root reaches; a link a root gives up must lie in
    /// its own `streams/NAME/` (checked, so that no root can have gc remove
    /// anything else).
    pub(super) fn mark_streams(&self, roots: &[&dyn StreamRoots]) -> Result<Marked, RepoError> {
        let unclaimed = self.unclaimed_streams(roots)?;
        if let Some(first) = unclaimed.first() {
            return Err(RepoError::Streams {
                name: first.display().to_string(),
                message: "records this gc can't read (no reader for them was given); \
                          nothing removed"
                    .into(),
            });
        }
        let mut all = Marked::default();
        for root in roots {
            let marked = root.mark(self).map_err(|e| RepoError::Streams {
                name: format!("streams/{}", root.name()),
                message: e.to_string(),
            })?;
            let own = Path::new("streams").join(root.name());
            for rel in &marked.unreached {
                let inside = rel.starts_with(&own)
                    && rel.components().all(|c| matches!(c, Component::Normal(_)));
                if !inside {
                    return Err(RepoError::Streams {
                        name: own.display().to_string(),
                        message: format!(
                            "asks gc to remove {}, outside its records",
                            rel.display()
                        ),
                    });
                }
            }
            all.objects.extend(marked.objects);
            all.unreached.extend(marked.unreached);
        }
        Ok(all)
    }
}
