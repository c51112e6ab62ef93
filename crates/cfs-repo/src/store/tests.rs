use super::*;

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
    let source = SourceFile {
        path: &src,
        size: Some(content.len() as u64),
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
    std::fs::write(&src, data(5000, 2)).unwrap();
    let err = store
        .insert_file(SourceFile {
            path: &src,
            size: Some(100),
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
