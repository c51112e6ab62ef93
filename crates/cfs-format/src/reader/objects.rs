//! The backing objects an image names: [`Image::backing_objects`], the one
//! home of that rule (gc and fsck keep and check them, a mount checks they
//! are there).
//!
//! A walk over the directories that reads, for each regular file with
//! external content (non-empty and chunk based, so not inline), only its
//! `trusted.overlay.redirect` and, lacking one, its metacopy digest; no
//! tree is built, so it costs a fraction of [`Image::to_tree`]. The redirect
//! is read as `to_tree` reads it into the payload: a leading `/` dropped,
//! cut at a NUL. Bounded like `to_tree`: every directory is entered once (a
//! directory met twice is corrupt, which covers cycles), and entries are
//! capped by the image size.

use super::{corrupt, Image, ImageSource, Nid, ReadError};
use crate::erofs::DataLayout;
use crate::tree::FileType;
use std::collections::{BTreeSet, HashSet};

impl<T: ImageSource> Image<T> {
    /// The object paths (`ab/cdef…`, relative to an object directory) that
    /// the image's external files name, each once, sorted.
    pub fn backing_objects(&self) -> Result<BTreeSet<Vec<u8>>, ReadError> {
        let mut out = BTreeSet::new();
        let mut entries_left = self.size() / 12;
        let root = self.root_nid();
        let mut dirs: HashSet<Nid> = HashSet::from([root]);
        let mut files: HashSet<Nid> = HashSet::new();
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            for entry in self.readdir(dir, 0)? {
                let entry = entry?;
                entries_left = entries_left
                    .checked_sub(1)
                    .ok_or_else(|| ReadError::Limit {
                        what: "more directory entries than the image size allows".into(),
                    })?;
                if entry.is_dot_or_dotdot() {
                    continue;
                }
                let inode = self.inode(entry.nid)?;
                match inode.file_type() {
                    Some(FileType::Directory) => {
                        if !dirs.insert(entry.nid) {
                            return Err(corrupt(Some(entry.nid), "directory is referenced twice"));
                        }
                        stack.push(entry.nid);
                    }
                    Some(FileType::Regular)
                        if inode.size() != 0
                            && inode.layout() == DataLayout::ChunkBased
                            && files.insert(entry.nid) =>
                    {
                        if let Some(path) = self.object_of(entry.nid)? {
                            out.insert(path);
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// The object path of one external file: its redirect, or the object
    /// path of its metacopy digest.
    fn object_of(&self, nid: Nid) -> Result<Option<Vec<u8>>, ReadError> {
        if let Some(mut v) = self.redirect(nid)? {
            if v.len() > 1 && v[0] == b'/' {
                v = &v[1..];
            }
            let v = v.split(|&b| b == 0).next().unwrap_or_default();
            return Ok(Some(v.to_vec()));
        }
        Ok(self.digest(nid)?.map(|d| d.object_path().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use crate::dumpfile::{self, ParseMode};
    use crate::reader::Image;
    use crate::writer::{self, WriteOptions};

    const A: &str = "aa00000000000000000000000000000000000000000000000000000000000000";
    const B: &str = "bb00000000000000000000000000000000000000000000000000000000000000";

    fn image(dump: &str) -> Vec<u8> {
        let tree = dumpfile::parse(dump.as_bytes(), ParseMode::Lenient).unwrap();
        writer::write_image(&tree, &WriteOptions::default()).unwrap()
    }

    #[test]
    fn external_files_each_once_inline_and_empty_none() {
        let dump = format!(
            "/ 4096 40755 3 0 0 0 0.0 - - -\n\
             /a 5000 100644 2 0 0 0 0.0 aa/{a} - {A}\n\
             /d 4096 40755 2 0 0 0 0.0 - - -\n\
             /d/b 7000 100644 1 0 0 0 0.0 bb/{b} - {B}\n\
             /d/same 5000 100644 1 0 0 0 0.0 aa/{a} - {A}\n\
             /link 5000 @100644 2 0 0 0 0.0 /a - -\n\
             /inline 3 100644 1 0 0 0 0.0 - abc -\n\
             /empty 0 100644 1 0 0 0 0.0 - - -\n\
             /wh 0 20000 1 0 0 0 0.0 - - -\n",
            a = &A[2..],
            b = &B[2..],
        );
        let objects = Image::open(image(&dump))
            .unwrap()
            .backing_objects()
            .unwrap();
        let want: Vec<Vec<u8>> = vec![
            format!("aa/{}", &A[2..]).into_bytes(),
            format!("bb/{}", &B[2..]).into_bytes(),
        ];
        assert_eq!(objects.into_iter().collect::<Vec<_>>(), want);
    }

    #[test]
    fn an_image_without_files_names_nothing() {
        let img = image("/ 4096 40755 2 0 0 0 0.0 - - -\n");
        assert!(Image::open(img)
            .unwrap()
            .backing_objects()
            .unwrap()
            .is_empty());
    }
}
