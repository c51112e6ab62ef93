use super::*;
use crate::source::Identity;

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn insert_file_names_object_by_digest_and_dedups() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ObjectStore::create(&tmp.path().join("objects")).unwrap();
    let content = data(300_000, 1);
    let src = tmp.path().join("src");
    std::fs::write(&src, &content).unwrap();
    let file = std::fs::File::open(&src).unwrap();
    let source = SourceFile {
        file: &file,
        path: &src,
        seen: Identity::of(&file).unwrap(),
    };
    let first = store.insert_file(source).unwrap();
    assert!(first.new);
    assert_eq!(first.digest, cfs_format::fsverity::digest(&content));
    assert_eq!(
        std::fs::read(store.object_path(&first.digest)).unwrap(),
        content
    );
    let mode = std::fs::metadata(store.object_path(&first.digest)).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o644
    );
    let again = store.insert_file(source).unwrap();
    assert_eq!((again.digest, again.new), (first.digest, false));
    assert_eq!(store.hash_object(&first.digest).unwrap(), first.digest);
    // Only the object: no temporary left behind.
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].kind, EntryKind::Object(first.digest));
}

#[test]
fn insert_bytes_and_list_classify_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ObjectStore::create(tmp.path()).unwrap();
    let ins = store.insert_bytes(b"hello world\n").unwrap();
    assert!(ins.new && store.contains(&ins.digest));
    assert!(!store.insert_bytes(b"hello world\n").unwrap().new);
    std::fs::write(tmp.path().join("junk"), b"x").unwrap();
    std::fs::write(tmp.path().join(".tmp-1-2"), b"x").unwrap();
    std::fs::write(
        tmp.path()
            .join(&ins.digest.object_path()[..2])
            .join("short"),
        b"x",
    )
    .unwrap();
    let kinds: Vec<(String, EntryKind)> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|e| (e.path.display().to_string(), e.kind))
        .collect();
    assert!(kinds.contains(&(".tmp-1-2".into(), EntryKind::Temporary)));
    assert!(kinds.contains(&("junk".into(), EntryKind::Stray)));
    assert!(kinds.contains(&(ins.digest.object_path(), EntryKind::Object(ins.digest))));
    assert_eq!(
        kinds.iter().filter(|(_, k)| *k == EntryKind::Stray).count(),
        2
    );
}

#[test]
fn size_differing_from_the_scan_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ObjectStore::create(&tmp.path().join("o")).unwrap();
    let src = tmp.path().join("grew");
    std::fs::write(&src, data(100, 2)).unwrap();
    let file = std::fs::File::open(&src).unwrap();
    let seen = Identity::of(&file).unwrap();
    std::fs::write(&src, data(5000, 2)).unwrap();
    let err = store
        .insert_file(SourceFile {
            file: &file,
            path: &src,
            seen,
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::SourceChanged { .. }), "{err}");
    assert!(err.to_string().contains("grew"), "{err}");
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn verity_unavailable_is_remembered_not_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ObjectStore::create(tmp.path()).unwrap();
    let v = store.probe_verity().unwrap();
    assert_ne!(v, VeritySupport::Unknown);
    assert!(store.list().unwrap().is_empty());
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop; `None`
/// (with a message) when this process can't mount one.
struct SmallFs(tempfile::TempDir);

impl SmallFs {
    fn mount(size: &str) -> Option<SmallFs> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = rustix::process::geteuid().is_root()
            && std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
        if !mounted {
            cfs_testkit::report_skip("needs root to mount a tmpfs");
            return None;
        }
        Some(SmallFs(dir))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

#[test]
fn full_file_system_is_an_error_naming_the_file_and_stores_nothing() {
    let Some(fs) = SmallFs::mount("1m") else {
        return;
    };
    let store = ObjectStore::create(&fs.0.path().join("objects")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("too-big");
    std::fs::write(&src, data(2 << 20, 3)).unwrap();
    let enospc = |e: &StoreError, want_what: &str| match e {
        StoreError::Store {
            what, op, source, ..
        } => {
            assert!(what.contains(want_what), "{e}");
            assert_eq!(*op, "write", "{e}");
            assert_eq!(source.raw_os_error(), Some(28), "{e}");
        }
        e => panic!("not a store error: {e}"),
    };
    let file = std::fs::File::open(&src).unwrap();
    let e = store
        .insert_file(SourceFile {
            file: &file,
            path: &src,
            seen: Identity::of(&file).unwrap(),
        })
        .unwrap_err();
    enospc(&e, "too-big");
    assert!(e.to_string().contains("No space left on device"), "{e}");
    let e = store
        .insert_bytes_as(&data(2 << 20, 4), "the image of x")
        .unwrap_err();
    enospc(&e, "the image of x");
    let e = store
        .insert_reader(&mut &data(2 << 20, 5)[..], 2 << 20, Path::new("layer:f"))
        .unwrap_err();
    enospc(&e, "layer:f");
    // Nothing half-written is left, and the store still takes what fits.
    assert!(store.list().unwrap().is_empty());
    let ins = store.insert_bytes(&data(100_000, 6)).unwrap();
    assert_eq!(store.hash_object(&ins.digest).unwrap(), ins.digest);
    assert_eq!(store.list().unwrap().len(), 1);
}

/// A source that never ends (its owner extending it as fast as it is read)
/// fails one byte past the size scanned: it is not copied until the store's
/// file system is full. `/dev/zero` plays the file, claimed to be 8 KiB.
#[test]
fn a_file_that_keeps_growing_fails_instead_of_filling_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(ObjectStore::create(&tmp.path().join("objects")).unwrap());
    let (done, result) = std::sync::mpsc::channel();
    let store2 = store.clone();
    std::thread::spawn(move || {
        let file = std::fs::File::open("/dev/zero").unwrap();
        let seen = Identity {
            size: 8192,
            ..Identity::of(&file).unwrap()
        };
        let path = std::path::Path::new("/dev/zero");
        let _ = done.send(store2.insert_file(SourceFile {
            file: &file,
            path,
            seen,
        }));
    });
    let e = result
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("insert_file still copying after 20 s")
        .unwrap_err();
    assert!(matches!(e, StoreError::SourceChanged { .. }), "{e}");
    assert!(
        e.to_string().contains("grew past the 8192 bytes scanned"),
        "{e}"
    );
    assert!(store.list().unwrap().is_empty());
}

/// A sparse source (32 MiB said, a few KiB written) and a stream of zeros
/// (a tar entry of compressed zeros) are stored sparse: holes in the
/// object, the digest and the bytes those of the whole content.
#[test]
fn zeros_are_stored_as_holes() {
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;
    const SIZE: u64 = 32 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let store = ObjectStore::create(&tmp.path().join("objects")).unwrap();
    let src = tmp.path().join("sparse");
    let mut f = std::fs::File::create(&src).unwrap();
    for (at, bytes) in [
        (0, &b"head"[..]),
        (SIZE / 2 + 1, b"middle"),
        (SIZE - 3, b"end"),
    ] {
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(bytes).unwrap();
    }
    drop(f);
    let mut want = vec![0u8; SIZE as usize];
    want[..4].copy_from_slice(b"head");
    want[(SIZE / 2 + 1) as usize..][..6].copy_from_slice(b"middle");
    want[(SIZE - 3) as usize..].copy_from_slice(b"end");
    let file = std::fs::File::open(&src).unwrap();
    let from_file = store
        .insert_file(SourceFile {
            file: &file,
            path: &src,
            seen: Identity::of(&file).unwrap(),
        })
        .unwrap();
    let zeros_then_end = std::io::repeat(0).take(SIZE - 3).chain(&b"end"[..]);
    let from_stream = store
        .insert_reader(&mut zeros_then_end.take(SIZE), SIZE, Path::new("layer:z"))
        .unwrap();
    let mut stream_want = vec![0u8; SIZE as usize];
    stream_want[(SIZE - 3) as usize..].copy_from_slice(b"end");
    for (ins, content) in [(from_file, &want), (from_stream, &stream_want)] {
        assert_eq!(ins.digest, cfs_format::fsverity::digest(content));
        let path = store.object_path(&ins.digest);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), SIZE);
        assert!(
            meta.blocks() * 512 < 1 << 20,
            "{} bytes on disk for {SIZE}",
            meta.blocks() * 512
        );
        assert!(std::fs::read(&path).unwrap() == *content);
        assert_eq!(store.hash_object(&ins.digest).unwrap(), ins.digest);
    }
}
