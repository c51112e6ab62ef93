//! End-to-end conformance: the real `cfs` binary (also run as `mkcomposefs` and
//! `composefs-info`) against the C composefs reference data in
//! `../shared/conformance` (see its README). Golden values come only from there.
//!
//! Each test walks every row and reports all failures at once.

#[path = "conformance/kernel.rs"]
mod kernel;

use sha2::{Digest as _, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The shared conformance directory.
fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance")
}

/// A directory holding `mkcomposefs` and `composefs-info` symlinks to the binary.
fn tools_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        for name in ["mkcomposefs", "composefs-info"] {
            std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_cfs"), d.path().join(name)).unwrap();
        }
        d
    })
    .path()
}

/// Runs `mkcomposefs`, `composefs-info` or `cfs` with arguments.
fn run(tool: &str, args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Output {
    let exe = if tool == "cfs" {
        PathBuf::from(env!("CARGO_BIN_EXE_cfs"))
    } else {
        tools_dir().join(tool)
    };
    let mut cmd = Command::new(exe);
    cmd.args(args).env_remove("CFS_PARSE_STRICT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run the cfs binary")
}

fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One row of expected.tsv.
struct Row {
    asset: String,
    version_args: Vec<String>,
    strict: bool,
    image_sha256: String,
    fsverity_digest: String,
    info_dump_sha256: String,
}

fn rows() -> Vec<Row> {
    let text = std::fs::read_to_string(data_dir().join("expected.tsv")).unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 6, "expected.tsv row: {l}");
            Row {
                asset: f[0].into(),
                version_args: match f[1] {
                    "-" => vec![],
                    a => a.split(' ').map(String::from).collect(),
                },
                strict: f[2] == "1",
                image_sha256: f[3].into(),
                fsverity_digest: f[4].into(),
                info_dump_sha256: f[5].into(),
            }
        })
        .collect()
}

/// The asset as a plain dumpfile path (gunzipped into `tmp` when needed).
fn asset_path(asset: &str, tmp: &Path) -> PathBuf {
    let src = data_dir().join("assets").join(asset);
    match asset.strip_suffix(".gz") {
        None => src,
        Some(base) => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(std::fs::File::open(&src).unwrap())
                .read_to_end(&mut out)
                .unwrap();
            let dest = tmp.join(base);
            std::fs::write(&dest, out).unwrap();
            dest
        }
    }
}

/// The first differing lines of two texts, for a readable failure.
fn first_diff(expected: &[u8], found: &[u8]) -> String {
    let e: Vec<&[u8]> = expected.split(|&b| b == b'\n').collect();
    let f: Vec<&[u8]> = found.split(|&b| b == b'\n').collect();
    let mut out = String::new();
    let mut shown = 0;
    for i in 0..e.len().max(f.len()) {
        let (a, b) = (e.get(i), f.get(i));
        if a != b {
            let show = |x: Option<&&[u8]>| {
                x.map_or("<none>".into(), |l| String::from_utf8_lossy(l).into_owned())
            };
            out += &format!(
                "  line {}:\n    expected: {}\n    found:    {}\n",
                i + 1,
                show(a),
                show(b)
            );
            shown += 1;
            if shown == 5 {
                break;
            }
        }
    }
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_owned()
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
            let base = name.strip_suffix(".gz").unwrap_or(name);
            if let Ok(expected) = std::fs::read(
                data_dir()
                    .join("expected-dumps")
                    .join(format!("{base}.dump")),
            ) {
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
    let mut entries: Vec<_> = std::fs::read_dir(data_dir().join("should-fail"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    assert!(!entries.is_empty());
    let mut failures = Vec::new();
    for input in entries {
        let name = input.file_name().unwrap().to_string_lossy().into_owned();
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
    let text = std::fs::read_to_string(data_dir().join("fsverity-vectors.tsv")).unwrap();
    let mut files = Vec::new();
    let mut expected = Vec::new();
    for (i, line) in text.lines().skip(1).enumerate() {
        let f: Vec<&str> = line.split('\t').collect();
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
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cfs"));
    cmd.arg("digest");
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
