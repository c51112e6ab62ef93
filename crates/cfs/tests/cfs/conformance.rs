//! End-to-end conformance: the real `cfs` binary (also run as `mkcomposefs` and
//! `composefs-info`) against the C composefs reference data in
//! `../shared/conformance` (see its README). Golden values come only from there.
//!
//! Each test walks every row and reports all failures at once.

mod kernel;
mod storage;

use crate::cfs;
use cfs_testkit::conformance::{self, asset_path, first_diff, rows, sha256_hex};
use cfs_testkit::os;
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Runs `mkcomposefs`, `composefs-info` (the binary under those names) or
/// `cfs` with arguments and environment.
fn run(tool: &str, args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Output {
    static NAMES: OnceLock<tempfile::TempDir> = OnceLock::new();
    let mut cmd = if tool == "cfs" {
        cfs().command(args)
    } else {
        let dir = NAMES.get_or_init(|| cfs().personalities());
        let mut c = Command::new(dir.path().join(tool));
        c.args(args).env_remove("CFS_PARSE_STRICT");
        c
    };
    cmd.envs(env.iter().copied());
    cmd.output().expect("run the cfs binary")
}

/// A command's stderr, trimmed.
fn stderr(o: &Output) -> String {
    cfs_testkit::stderr(o).trim().to_owned()
}

/// Builds, digests, dumps and rebuilds every asset of expected.tsv.
#[test]
fn images_match_c_mkcomposefs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for row in rows() {
        let name = &row.asset;
        let input = asset_path(name, tmp.path());
        let out = tmp.path().join(format!("{name}.img"));
        let env: &[(&str, &str)] = if row.strict {
            &[("CFS_PARSE_STRICT", "1")]
        } else {
            &[]
        };
        let mut args: Vec<&std::ffi::OsStr> = row.version_args.iter().map(os).collect();
        args.extend([os("--print-digest"), os("--from-file"), input.as_os_str()]);
        args.push(out.as_os_str());
        let o = run("mkcomposefs", &args, env);
        if !o.status.success() {
            failures.push(format!("{name}: mkcomposefs failed: {}", stderr(&o)));
            continue;
        }
        let printed = String::from_utf8_lossy(&o.stdout).trim().to_owned();
        if printed != row.fsverity_digest {
            failures.push(format!(
                "{name}: --print-digest {printed}, expected {}",
                row.fsverity_digest
            ));
        }
        let image = std::fs::read(&out).unwrap();
        if sha256_hex(&image) != row.image_sha256 {
            failures.push(format!(
                "{name}: image sha256 {}, expected {}",
                sha256_hex(&image),
                row.image_sha256
            ));
        }

        let o = run("composefs-info", &[os("dump"), out.as_os_str()], &[]);
        if !o.status.success() {
            failures.push(format!(
                "{name}: composefs-info dump failed: {}",
                stderr(&o)
            ));
            continue;
        }
        let dump = o.stdout;
        if sha256_hex(&dump) != row.info_dump_sha256 {
            let mut msg = format!("{name}: dump sha256 differs");
            if let Some(expected) =
                conformance::expected_dump_path(name).and_then(|p| std::fs::read(p).ok())
            {
                msg += &format!("\n{}", first_diff(&expected, &dump));
            }
            failures.push(msg);
        }

        // Round trip: the dump builds the same image again.
        let dump_path = tmp.path().join(format!("{name}.redump"));
        std::fs::write(&dump_path, &dump).unwrap();
        let again = tmp.path().join(format!("{name}.again.img"));
        let mut args: Vec<&std::ffi::OsStr> = row.version_args.iter().map(os).collect();
        args.extend([os("--from-file"), dump_path.as_os_str(), again.as_os_str()]);
        let o = run("mkcomposefs", &args, &[]);
        if !o.status.success() {
            failures.push(format!("{name}: rebuild from dump failed: {}", stderr(&o)));
        } else if std::fs::read(&again).unwrap() != image {
            failures.push(format!("{name}: rebuild from its dump gives another image"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every should-fail dumpfile is refused with a line number and leaves no output.
#[test]
fn should_fail_dumpfiles_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = tempfile::tempdir().unwrap();
    let entries = conformance::should_fail();
    assert!(!entries.is_empty());
    let mut failures = Vec::new();
    for (name, bytes) in entries {
        let input = inputs.path().join(&name);
        std::fs::write(&input, bytes).unwrap();
        let out = tmp.path().join(format!("{name}.img"));
        let o = run(
            "mkcomposefs",
            &[os("--from-file"), input.as_os_str(), out.as_os_str()],
            &[],
        );
        let err = stderr(&o);
        if o.status.success() {
            failures.push(format!("{name}: accepted"));
        }
        if o.status.code().is_none() {
            failures.push(format!("{name}: killed by a signal (crash?)"));
        }
        if !err.contains("line ") {
            failures.push(format!("{name}: error names no line: {err:?}"));
        }
        if !err.starts_with("mkcomposefs: ") {
            failures.push(format!(
                "{name}: error not prefixed by the program: {err:?}"
            ));
        }
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        if out.exists() || !left.is_empty() {
            failures.push(format!("{name}: output or temporary file left behind"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The fs-verity vectors: byte i of a file is (i*7+3)%251, plus `hello world\n`.
#[test]
fn measure_file_matches_fsverity_vectors() {
    let tmp = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut expected = Vec::new();
    for (i, f) in conformance::fsverity_vectors().iter().enumerate() {
        let size: usize = f[0].parse().unwrap();
        let data: Vec<u8> = if f[1] == "'hello world\\n'" {
            b"hello world\n".to_vec()
        } else {
            assert_eq!(f[1], "byte[i]=(i*7+3)%251", "unknown content rule");
            (0..size).map(|i| ((i * 7 + 3) % 251) as u8).collect()
        };
        assert_eq!(data.len(), size);
        let path = tmp.path().join(format!("v{i}-{size}"));
        std::fs::write(&path, data).unwrap();
        files.push(path);
        expected.push(f[2].to_owned());
    }
    let mut args = vec![os("measure-file")];
    args.extend(files.iter().map(|p| p.as_os_str()));
    let o = run("composefs-info", &args, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let found: Vec<&str> = std::str::from_utf8(&o.stdout).unwrap().lines().collect();
    assert_eq!(found, expected);

    // `cfs digest` prints the same digests, each followed by its path.
    let mut args = vec![os("digest")];
    args.extend(files.iter().map(|p| p.as_os_str()));
    let o = run("cfs", &args, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    for ((line, want), path) in text.lines().zip(&expected).zip(&files) {
        assert_eq!(line, format!("{want}  {}", path.display()));
    }
}

/// Errors name the file and exit non-zero; a closed stdout is not an error.
#[test]
fn errors_and_broken_pipe() {
    let o = run("cfs", &[os("digest"), os("/nonexistent/file")], &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.starts_with("cfs: ") && err.contains("/nonexistent/file"),
        "{err}"
    );

    let o = run(
        "composefs-info",
        &[os("measure-file"), os("/nonexistent")],
        &[],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).starts_with("composefs-info: "), "{}", stderr(&o));

    let o = run(
        "mkcomposefs",
        &[os("--print-digest-only"), os("a"), os("b")],
        &[],
    );
    assert!(!o.status.success());

    // Many lines into a pipe closed at once: quiet success.
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("f");
    std::fs::write(&f, b"x").unwrap();
    let mut cmd = cfs().command(["digest"]);
    for _ in 0..20000 {
        cmd.arg(&f);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "");
}
