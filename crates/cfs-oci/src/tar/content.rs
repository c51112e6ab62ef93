//! An entry's content: how it is read (plain, PAX sparse, old GNU sparse),
//! checked against the sizes the header, the PAX records and the `tar`
//! crate give, and where it goes (inline, stored on the pool, streamed).

use super::sparse::{self, Expand};
use super::{numeric, set_object, LayerReader, PaxRecords, IN_FLIGHT_MAX, PARALLEL_MAX};
use crate::OciError;
use ::tar::EntryType;
use cfs_format::{Node, NodeId};
use cfs_repo::scan::INLINE_CONTENT_MAX;
use cfs_repo::store::StoreError;
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::Ordering;

/// What an entry's content is read as.
pub(super) enum Content {
    /// The entry's data as it is (`size` bytes).
    Plain,
    /// A PAX sparse file (0.0, 0.1 or 1.0): its map, read from the records
    /// or, for 1.0, from the start of the data.
    Sparse(sparse::PaxSparse),
    /// An old GNU sparse file (`S`), which the `tar` crate expands; its
    /// header's size field is what the tar stores.
    GnuSparse { stored: u64 },
}

impl<'a> LayerReader<'a> {
    /// How the entry's content is read, and the size the `tar` crate and
    /// the strict reading of the header and PAX records agree on. A sparse
    /// map (PAX) is checked here, before anything is read or stored.
    pub(super) fn content_kind<R: Read>(
        &mut self,
        entry: &mut ::tar::Entry<'_, R>,
        et: EntryType,
        pax: &mut PaxRecords,
        shown: &str,
    ) -> Result<Content, OciError> {
        let header_size = numeric::header_unsigned(&entry.header().as_old().size, u64::MAX)
            .map_err(|e| self.err(shown, format!("header field size: {e}")))?
            .unwrap_or(0);
        let stored = pax.size.unwrap_or(header_size);
        if et == EntryType::GNUSparse {
            if !pax.sparse.is_empty() {
                return Err(self.err(shown, "an old GNU sparse entry with PAX sparse records"));
            }
            // The crate reports the expanded size; the header, what is stored.
            return Ok(Content::GnuSparse { stored });
        }
        if stored != entry.size() {
            return Err(self.err(
                shown,
                format!("size field reads {stored}, the tar reader {}", entry.size()),
            ));
        }
        let Some(mut sparse) = std::mem::take(&mut pax.sparse)
            .finish()
            .map_err(|e| self.err(shown, e))?
        else {
            return Ok(Content::Plain);
        };
        if !matches!(et, EntryType::Regular | EntryType::Continuous) {
            return Err(self.err(
                shown,
                "sparse records on an entry that is not a regular file",
            ));
        }
        let mut data = stored;
        if sparse.map_in_data {
            let (segments, used) = sparse::read_v1_map(entry, self.limits.max_extension)
                .map_err(|e| self.err(shown, e))?;
            sparse.map.segments = segments;
            data = stored
                .checked_sub(used)
                .ok_or_else(|| self.err(shown, "sparse map: longer than the entry's data"))?;
        }
        sparse.map.check(data).map_err(|e| self.err(shown, e))?;
        Ok(Content::Sparse(sparse))
    }

    /// A regular file's content, plain or sparse (holes read as zeros,
    /// held to [`Limits::max_sparse_holes`]).
    pub(super) fn regular<R: Read>(
        &mut self,
        entry: &mut ::tar::Entry<'_, R>,
        content: Content,
        node: &mut Node,
        shown: &str,
    ) -> Result<Option<Vec<u8>>, OciError> {
        let (size, holes) = match &content {
            Content::Plain => (entry.size(), 0),
            Content::Sparse(s) => (s.map.real_size, s.map.holes()),
            Content::GnuSparse { stored } => (entry.size(), entry.size().saturating_sub(*stored)),
        };
        if size > self.limits.max_file_size {
            return Err(self.err(
                shown,
                format!(
                    "size {size} over the limit max_file_size = {}",
                    self.limits.max_file_size
                ),
            ));
        }
        self.holes = self.holes.saturating_add(holes);
        if self.holes > self.limits.max_sparse_holes {
            return Err(self.err(
                shown,
                format!(
                    "holes of sparse files over the limit max_sparse_holes = {}",
                    self.limits.max_sparse_holes
                ),
            ));
        }
        match content {
            Content::Sparse(s) => self.content(&mut Expand::new(entry, s.map), size, node, shown),
            _ => self.content(entry, size, node, shown),
        }
    }

    /// A regular file's content of `size` bytes from `input` (held to the
    /// size limit by [`Self::regular`], its only caller): a small file is kept inline, a mid-sized one is read
    /// into memory and returned to be stored on the pool (while the
    /// in-flight budget allows), a large one streams into the store here.
    fn content(
        &mut self,
        input: &mut dyn Read,
        size: u64,
        node: &mut Node,
        shown: &str,
    ) -> Result<Option<Vec<u8>>, OciError> {
        node.stat.size = size;
        if size == 0 {
            return Ok(None);
        }
        self.stats.files += 1;
        self.stats.bytes += size;
        let read_err = |e: io::Error| OciError::Stream {
            layer: self.layer.to_owned(),
            what: format!("reading the content of {shown:?}"),
            source: e,
        };
        if size <= INLINE_CONTENT_MAX {
            let mut data = vec![0u8; size as usize];
            input.read_exact(&mut data).map_err(read_err)?;
            set_object(node, cfs_format::fsverity::digest(&data), Some(data));
        } else if size <= PARALLEL_MAX
            && self.shared.in_flight.load(Ordering::Relaxed) + size <= IN_FLIGHT_MAX
        {
            let mut data = vec![0u8; size as usize];
            input.read_exact(&mut data).map_err(read_err)?;
            return Ok(Some(data));
        } else {
            let ins = self
                .shared
                .store
                .insert_reader(input, size, Path::new(shown))
                .map_err(|e| match e {
                    StoreError::SourceChanged { what, .. } => self.err(shown, what),
                    e => OciError::Store(e),
                })?;
            self.count_new(&ins);
            set_object(node, ins.digest, None);
        }
        Ok(None)
    }

    /// Stores `data`, the content of node `id`, on the rayon pool; the
    /// result is applied to the node when the layer is read.
    pub(super) fn store_on_pool(
        &self,
        id: NodeId,
        data: Vec<u8>,
        shown: &str,
        scope: &rayon::Scope<'a>,
    ) {
        let size = data.len() as u64;
        let shared = self.shared;
        let shown = shown.to_owned();
        shared.in_flight.fetch_add(size, Ordering::Relaxed);
        scope.spawn(move |_| {
            let r = shared.store.insert_bytes_as(&data, &shown);
            shared.in_flight.fetch_sub(size, Ordering::Relaxed);
            shared
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((id, r));
        });
    }
}
