//! Garbage collection: mark from the names, sweep the rest.
//!
//! Roots are the refs (`images/refs/NAME`), the images of live mounts
//! (pins, see `pins.rs`: stale pins are deleted here) and what the records
//! under `streams/` reach ([`StreamRoots`], given by the caller; gc refuses
//! to run while `streams/` holds records none of them claims). An image no
//! name or mount holds loses its `images/ID` link; every object not reachable from a named image (the
//! image object itself and the objects it names) is removed, as are
//! temporary files of interrupted imports. Stray files are left for a human
//! (fsck reports them). Runs under the exclusive lock, so no import is
//! between storing objects and naming its image. If any named image can't
//! be read, gc stops before removing anything.

use super::{LockMode, PinState, RepoError, Repository, StreamRoots};
use crate::store::EntryKind;
use cfs_format::Digest;
use rayon::prelude::*;
use std::collections::HashSet;
use std::path::PathBuf;

/// What gc removed (or, dry, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Images kept (named).
    pub images_kept: u64,
    /// `images/ID` links removed (images no name points to).
    pub images_removed: Vec<Digest>,
    /// Objects kept.
    pub objects_kept: u64,
    /// Objects removed.
    pub objects_removed: u64,
    /// Bytes of removed objects.
    pub bytes_freed: u64,
    /// Temporary files removed.
    pub temporaries_removed: u64,
    /// The paths removed, relative to the repository.
    pub removed: Vec<PathBuf>,
    /// Images kept only because they are mounted (no name points to them).
    pub mounted_only: Vec<Digest>,
    /// Pins whose mount is gone, removed.
    pub stale_pins_removed: u64,
    /// Pins whose mount could not be checked (kept): the pin and why.
    pub unverified_pins: Vec<(PathBuf, String)>,
}

impl Repository {
    /// Collects garbage; with `dry_run`, only reports what it would remove.
    /// `streams` reads the records other crates keep under `streams/` (see
    /// [`StreamRoots`]).
    pub fn gc(&self, streams: &[&dyn StreamRoots], dry_run: bool) -> Result<GcReport, RepoError> {
        let _lock = self.lock(LockMode::Exclusive)?;
        let mut report = GcReport::default();
        let named: HashSet<Digest> = self.refs()?.into_iter().map(|(_, id)| id).collect();
        let mut roots = named.clone();
        // Live mounts: their images stay, named or not.
        let mut stale = Vec::new();
        for pin in self.pins()? {
            match &pin.state {
                PinState::Live => {}
                PinState::Unknown(why) => {
                    report.unverified_pins.push((pin.path.clone(), why.clone()))
                }
                PinState::Stale => {
                    stale.push(pin);
                    continue;
                }
            }
            if !named.contains(&pin.image) && !report.mounted_only.contains(&pin.image) {
                report.mounted_only.push(pin.image);
            }
            roots.insert(pin.image);
        }

        // Mark. Every named image must be readable: a name pointing at an
        // unreadable image means we don't know what is live.
        let marked: Vec<Vec<Digest>> = roots
            .par_iter()
            .map(|id| {
                let mut objs: Vec<Digest> = self.image_objects(id)?.into_iter().collect();
                objs.push(*id);
                Ok(objs)
            })
            .collect::<Result<_, RepoError>>()?;
        let mut live: HashSet<Digest> = marked.into_iter().flatten().collect();
        // Records under streams/ (OCI tags: manifests, configs, layer records).
        let streamed = self.mark_streams(streams)?;
        live.extend(streamed.objects);
        report.images_kept = roots.len() as u64;

        // Sweep image links first, so no image ever names a removed object.
        for id in self.image_ids()? {
            if roots.contains(&id) {
                continue;
            }
            let rel = PathBuf::from("images").join(id.to_hex());
            if !dry_run {
                self.remove_file(&rel)?;
            }
            report.images_removed.push(id);
            report.removed.push(rel);
        }
        // Record links nothing reaches (OCI blobs and layers no tag uses).
        for rel in streamed.unreached {
            if !dry_run {
                self.remove_file(&rel)?;
            }
            report.removed.push(rel);
        }
        // Pins of mounts that are gone, and temporaries of killed mounts.
        for pin in stale {
            if !dry_run {
                self.remove_pin(&pin)?;
            }
            report.stale_pins_removed += 1;
            report.removed.push(pin.path);
        }
        report.removed.extend(self.remove_pin_temporaries(dry_run)?);
        // Leftover temporary ref names.
        for name in self.names_in("images/refs")? {
            if name.as_encoded_bytes().starts_with(b".tmp-") {
                let rel = PathBuf::from("images/refs").join(name);
                if !dry_run {
                    self.remove_file(&rel)?;
                }
                report.removed.push(rel);
            }
        }

        let mut doomed = Vec::new();
        for e in self.objects.list()? {
            let remove = match e.kind {
                EntryKind::Object(d) if live.contains(&d) => {
                    report.objects_kept += 1;
                    false
                }
                EntryKind::Object(_) => {
                    report.objects_removed += 1;
                    report.bytes_freed += e.size;
                    true
                }
                EntryKind::Temporary => {
                    report.temporaries_removed += 1;
                    true
                }
                EntryKind::Stray => false,
            };
            if remove {
                doomed.push(e.path);
            }
        }
        if !dry_run {
            // In parallel: each unlink mostly waits on the file system's journal.
            doomed
                .par_iter()
                .try_for_each(|p| self.objects.remove_entry(p))?;
        }
        report
            .removed
            .extend(doomed.iter().map(|p| PathBuf::from("objects").join(p)));
        // No sync: a removal lost in a crash only leaves garbage for the next gc.
        Ok(report)
    }
}
