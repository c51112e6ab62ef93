//! Files a user names as input (a tar to import, an image file, a dumpfile,
//! the documents and blobs of an OCI layout): opened so that nothing
//! someone else controls can stall or flood the reader.
//!
//! - **Opening never blocks.** A FIFO given as a file would block `open`
//!   until some writer comes, forever if none does; and a FIFO or device
//!   read as a file never ends (`/dev/zero`) or ends when its writer says.
//!   So files are opened `O_NONBLOCK | O_NOCTTY` and refused unless they
//!   are regular files ([`open_regular`], [`regular`]); the flag is cleared
//!   once they are. Standard input (`-`) may be a pipe: the callers bound
//!   what they read from it.
//! - **What is read whole has a cap.** An image is read into memory whole;
//!   [`MAX_IMAGE_BYTES`] bounds it (a file by its size, before reading; a
//!   stream when the cap is passed): [`read_capped`].

use rustix::fs::{FileType, Mode, OFlags};
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Largest composefs image read into memory (`cfs dump`, `cfs import-image`,
/// an image of the repository): 1 GiB. Real images are far smaller: a
/// 133k-entry `/usr` is tens of MB, a million files about 100 MiB, and the
/// largest tree the OCI import lets an image have (4 Mi nodes) about
/// 400 MiB; the mount service takes at most 256 MiB.
pub const MAX_IMAGE_BYTES: u64 = 1 << 30;

/// Largest dumpfile read into memory (`mkfs --from-file`): 1 GiB, some
/// five million entries (a line is about 200 bytes with a digest).
pub const MAX_DUMPFILE_BYTES: u64 = 1 << 30;

/// Opens `path` for reading without blocking (a FIFO would block a plain
/// open) and refuses anything but a regular file (see the module doc).
pub fn open_regular(path: &Path) -> io::Result<File> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    regular(File::from(fd))
}

/// `file` (opened with `O_NONBLOCK`), when it is a regular file, with the
/// flag cleared; an error naming what it is otherwise.
pub fn regular(file: File) -> io::Result<File> {
    let st = rustix::fs::fstat(&file)?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file (a {})", kind_name(kind)),
        ));
    }
    rustix::fs::fcntl_setfl(&file, OFlags::empty())?;
    Ok(file)
}

fn kind_name(kind: FileType) -> &'static str {
    match kind {
        FileType::Directory => "directory",
        FileType::Fifo => "FIFO",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Socket => "socket",
        FileType::Symlink => "symlink",
        _ => "file of unknown type",
    }
}

/// Reads `input` whole, refusing it once it holds more than `cap` bytes.
/// With `size` (a file's size, from `fstat`), a file over the cap is
/// refused before anything is read.
pub fn read_capped(input: &mut dyn Read, size: Option<u64>, cap: u64) -> io::Result<Vec<u8>> {
    let over = |what: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what}, over the limit of {cap} bytes"),
        )
    };
    if let Some(size) = size.filter(|&s| s > cap) {
        return Err(over(format!("{size} bytes")));
    }
    let mut bytes = Vec::with_capacity(size.unwrap_or(0) as usize);
    input.take(cap.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(over(format!("more than {cap} bytes")));
    }
    Ok(bytes)
}

/// Reads the regular file `file` whole, up to `cap` bytes (see [`read_capped`]).
pub fn read_file_capped(file: &mut File, cap: u64) -> io::Result<Vec<u8>> {
    let size = file.metadata()?.len();
    read_capped(file, Some(size), cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endless_and_oversized_input_is_refused() {
        // (input, its declared size, the cap, accepted)
        let table: &[(Option<u64>, Option<u64>, u64, bool)] = &[
            (Some(10), Some(10), 10, true),
            (Some(10), None, 10, true),
            (Some(11), None, 10, false),
            // Declared over the cap: refused before reading (the input is endless).
            (None, Some(40 << 30), 10, false),
            // Endless without a size: refused once the cap is passed.
            (None, None, 4096, false),
        ];
        for &(len, size, cap, ok) in table {
            let zeros = io::repeat(0);
            let mut input: Box<dyn Read> = match len {
                Some(n) => Box::new(zeros.take(n)),
                None => Box::new(zeros),
            };
            let r = read_capped(&mut input, size, cap);
            assert_eq!(r.is_ok(), ok, "{len:?} {size:?} {cap}: {r:?}");
            if let Err(e) = r {
                assert!(
                    e.to_string().contains(&format!("limit of {cap} bytes")),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn only_regular_files_are_opened() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        // (path, the error's words or None)
        let table: &[(&Path, Option<&str>)] = &[
            (&file, None),
            // Would block in open(2) without O_NONBLOCK: no writer ever comes.
            (&fifo, Some("not a regular file (a FIFO)")),
            (dir.path(), Some("not a regular file (a directory)")),
            (Path::new("/dev/zero"), Some("(a character device)")),
        ];
        for &(path, want) in table {
            let r = open_regular(path);
            match want {
                None => {
                    let mut f = r.unwrap();
                    let flags = rustix::fs::fcntl_getfl(&f).unwrap();
                    assert!(!flags.contains(OFlags::NONBLOCK));
                    assert_eq!(read_file_capped(&mut f, 1).unwrap(), b"x");
                }
                Some(w) => assert!(r.unwrap_err().to_string().contains(w), "{path:?}"),
            }
        }
    }
}
