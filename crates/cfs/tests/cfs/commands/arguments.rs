//! `--repo` means something on every command that takes it, or is refused
//! there; an IMAGE argument is a file, `-` (stdin) or a name in the
//! repository; `-` is stdin or stdout wherever a file is read or written.

use crate::cfs;
use cfs_testkit::{err, ok, os};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `cmd` with `input` on its stdin.
fn with_stdin(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let o = child.wait_with_output().unwrap();
    let _ = writer.join();
    o
}

/// A repository `repo` with the image `doc` of a small tree; the tree.
fn repo_with_doc(t: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let src = t.join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("small"), b"inline\n").unwrap();
    std::fs::write(src.join("d/big"), b"external\n".repeat(100)).unwrap();
    let repo = t.join("repo");
    cfs()
        .repo(&repo)
        .ok([os("create-image"), src.as_os_str(), os("doc")]);
    (repo, src)
}

#[test]
fn names_resolve_in_the_repository() {
    let t = tempfile::tempdir().unwrap();
    let (repo, _) = repo_with_doc(t.path());
    let r = cfs().repo(&repo);
    let image = repo.join("images/refs/doc");
    let by_file = r.ok([os("dump"), image.as_os_str()]);
    // `cfs --repo R dump doc` and the flag after the command alike.
    assert_eq!(r.ok(["dump", "doc"]), by_file);
    assert_eq!(
        cfs().ok([os("dump"), os("--repo"), repo.as_os_str(), os("doc")]),
        by_file
    );
    assert_eq!(r.ok(["ls", "doc"]), r.ok([os("ls"), image.as_os_str()]));
    let objects = r.ok(["objects", "doc"]);
    assert_eq!(objects.lines().count(), 1, "{objects}");
    assert_eq!(r.ok(["image-objects", "doc"]), objects);
    // missing-objects defaults --basedir to the repository's objects.
    assert_eq!(r.ok(["missing-objects", "doc"]), "");
    std::fs::remove_file(repo.join("objects").join(objects.trim())).unwrap();
    assert_eq!(r.ok(["missing-objects", "doc"]), objects);
    // A name it does not have: the error names the repository.
    let e = r.fails(["dump", "nosuch"]);
    assert!(
        e.contains(&format!(
            "no image named \"nosuch\" in the repository {}",
            repo.display()
        )),
        "{e}"
    );
    // Something spelled as a path is a file, whatever the repository holds.
    let e = r.fails(["dump", "./doc"]);
    assert!(e.contains("could not read ./doc"), "{e}");
    // A file of that name in the working directory wins over the name.
    std::fs::copy(&image, t.path().join("doc")).unwrap();
    let o = r
        .command(["dump", "doc"])
        .current_dir(t.path())
        .output()
        .unwrap();
    assert_eq!(ok(o), by_file);
}

#[test]
fn repo_is_refused_where_it_means_nothing() {
    let t = tempfile::tempdir().unwrap();
    let (repo, src) = repo_with_doc(t.path());
    let r = cfs().repo(&repo);
    let out = t.path().join("x.cfs");
    let small = src.join("small");
    for (args, why) in [
        (
            vec![os("mkfs"), src.as_os_str(), out.as_os_str()],
            "mkfs writes an image file",
        ),
        (
            vec![os("digest"), small.as_os_str()],
            "digest measures files",
        ),
        (
            vec![os("unmount"), t.path().as_os_str()],
            "unmount takes a mount point",
        ),
        (vec![os("mounts")], "mounts lists every cfs mount"),
        (
            vec![os("compute-id"), src.as_os_str()],
            "compute-id reads a directory",
        ),
    ] {
        let e = r.fails(&args);
        assert!(
            e.starts_with("cfs: --repo: ") && e.contains(why),
            "{args:?}: {e}"
        );
    }
    assert!(!out.exists());
    // CFS_REPO is only a default: commands without a repository ignore it.
    let o = cfs()
        .command([os("mkfs"), src.as_os_str(), out.as_os_str()])
        .env("CFS_REPO", &repo)
        .output()
        .unwrap();
    ok(o);
    assert!(out.exists());
}

#[test]
fn dash_is_stdin_and_stdout() {
    let t = tempfile::tempdir().unwrap();
    let (repo, src) = repo_with_doc(t.path());
    let r = cfs().repo(&repo);
    let image = std::fs::read(repo.join("images/refs/doc")).unwrap();
    let dump = r.ok(["dump", "doc"]);
    assert_eq!(ok(with_stdin(cfs().command(["dump", "-"]), &image)), dump);
    assert_eq!(
        ok(with_stdin(cfs().command(["ls", "-"]), &image)),
        r.ok(["ls", "doc"])
    );
    assert_eq!(
        ok(with_stdin(cfs().command(["objects", "-"]), &image)),
        r.ok(["objects", "doc"])
    );
    let id = r.ok(["images"]);
    let id = id.split('\t').nth(1).unwrap().trim();
    assert_eq!(
        ok(with_stdin(cfs().command(["digest", "-"]), &image)),
        format!("{id}  -\n")
    );
    // mkfs --from-file - -: a dumpfile in, the image out.
    let built = with_stdin(
        cfs().command(["mkfs", "--from-file", "-", "-"]),
        dump.as_bytes(),
    );
    assert!(built.status.success(), "{built:?}");
    assert_eq!(built.stdout, image);
    // create-dumpfile: a directory, an image on stdin, to stdout or a file.
    let of_dir = cfs().ok([os("create-dumpfile"), src.as_os_str()]);
    assert_eq!(of_dir, dump);
    assert_eq!(
        ok(with_stdin(
            cfs().command(["create-dumpfile", "-", "-"]),
            &image
        )),
        dump
    );
    let out = t.path().join("out.dump");
    r.ok([os("create-dumpfile"), os("doc"), out.as_os_str()]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), dump);
    // import-image -: the image on stdin.
    let o = with_stdin(r.command(["import-image", "-", "again"]), &image);
    assert_eq!(ok(o).trim(), id);
    // Bytes that are no image: refused, nothing stored.
    let o = with_stdin(r.command(["import-image", "-", "junk"]), b"not an image\n");
    let e = err(o);
    assert!(e.contains("stdin is not a valid composefs image"), "{e}");
    assert!(!r.ok(["images"]).contains("junk"));
}
