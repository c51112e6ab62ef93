//! Errors that quote what they were given stay printable: no control
//! characters reach the terminal, and nothing runs on for kilobytes.

use crate::cfs;
use cfs_testkit::{err, os, Rng};

#[test]
fn errors_quoting_input_are_escaped_and_bounded() {
    let t = tempfile::tempdir().unwrap();
    let junk = t.path().join("junk");
    // Random bytes with terminal escapes in them.
    let mut bytes = Rng::seeded(7).bytes(20_000);
    bytes[..6].copy_from_slice(b"\x1b[2J\x07\x08");
    std::fs::write(&junk, &bytes).unwrap();
    let r = cfs().repo(t.path().join("repo"));
    for args in [
        vec![os("import-tar"), junk.as_os_str(), os("t")],
        vec![os("import-image"), junk.as_os_str(), os("i")],
        vec![os("dump"), junk.as_os_str()],
        vec![os("mkfs"), os("--from-file"), junk.as_os_str(), os("-")],
    ] {
        let e = err(r.run(&args));
        let body = e.strip_suffix('\n').unwrap_or(&e);
        assert!(
            !body.chars().any(|c| c.is_control()),
            "{args:?}: a control character reached stderr: {e:?}"
        );
        assert!(
            body.chars().count() <= 2100,
            "{args:?}: {} characters",
            body.len()
        );
    }
}

#[test]
fn import_tar_refuses_what_is_no_tar() {
    let t = tempfile::tempdir().unwrap();
    let r = cfs().repo(t.path().join("repo"));
    let file = t.path().join("input");
    for (data, why) in [
        (Vec::new(), "not a tar archive: it is empty"),
        (vec![b'x'; 10], "less than one 512-byte tar block"),
        (Rng::seeded(3).bytes(5000), "no tar header"),
    ] {
        std::fs::write(&file, &data).unwrap();
        let e = err(r.run([os("import-tar"), file.as_os_str(), os("t")]));
        assert!(e.contains(why), "{e}");
    }
    // An archive of zero blocks is an empty archive, as GNU tar has it.
    std::fs::write(&file, [0u8; 10240]).unwrap();
    r.ok([os("import-tar"), file.as_os_str(), os("empty")]);
    assert!(r.ok(["images"]).starts_with("empty\t"));
}
