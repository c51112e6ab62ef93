//! containers-storage compatibility: its composefs backend runs exactly
//! `mkcomposefs --from-file - -` and writes a dumpfile on stdin in the
//! order it walks a layer's tar (every parent before its children, a hard
//! link as an `@` entry after its target), reading the image from stdout.
//! Each conformance asset, its lines shuffled in such an order, must give
//! byte for byte the image C made of it (`image_sha256`).

use crate::cfs;
use cfs_testkit::conformance::{rows, sha256_hex};
use cfs_testkit::Rng;
use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

/// The escaped path of a dumpfile line, and what it must come after: its
/// parent's line and, for a hard link (`@` mode), its target's line.
fn path_and_needs(line: &[u8]) -> (&[u8], Vec<&[u8]>) {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let path = fields[0];
    let mut needs = Vec::new();
    if path != b"/" {
        let cut = path.iter().rposition(|&b| b == b'/').unwrap();
        needs.push(if cut == 0 { &path[..1] } else { &path[..cut] });
    }
    if fields.get(2).is_some_and(|m| m.starts_with(b"@")) {
        needs.push(fields[8]);
    }
    (path, needs)
}

/// The lines of `dump` in a random order in which every line comes after
/// the last earlier line of each path it needs, and after earlier lines of
/// its own path (a redefinition stays a redefinition).
fn tar_order(dump: &[u8], rng: &mut Rng) -> Vec<u8> {
    let ends_with_newline = dump.ends_with(b"\n");
    let lines: Vec<&[u8]> = dump
        .strip_suffix(b"\n")
        .unwrap_or(dump)
        .split(|&b| b == b'\n')
        .collect();
    // deps[i]: the lines line i must follow.
    let mut last: HashMap<&[u8], usize> = HashMap::new();
    let mut deps: Vec<Vec<usize>> = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let (path, needs) = path_and_needs(line);
        let mut d: Vec<usize> = needs.iter().filter_map(|n| last.get(n).copied()).collect();
        d.extend(last.get(path).copied());
        deps.push(d);
        last.insert(path, i);
    }
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut followers: Vec<Vec<usize>> = vec![Vec::new(); lines.len()];
    for (i, d) in deps.iter().enumerate() {
        for &j in d {
            followers[j].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..lines.len()).filter(|&i| waiting[i] == 0).collect();
    let mut out = Vec::new();
    let mut emitted = 0;
    while !ready.is_empty() {
        let i = ready.swap_remove(rng.below(ready.len()));
        if emitted > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(lines[i]);
        emitted += 1;
        for &f in &followers[i] {
            waiting[f] -= 1;
            if waiting[f] == 0 {
                ready.push(f);
            }
        }
    }
    assert_eq!(emitted, lines.len(), "every line placed");
    if ends_with_newline {
        out.push(b'\n');
    }
    out
}

#[test]
fn tar_order_keeps_parents_and_link_targets_first() {
    let dump = b"/ 0 40755 2 0 0 0 0.0 - - -\n\
                 /a 0 40755 2 0 0 0 0.0 - - -\n\
                 /a/f 3 100644 2 0 0 0 0.0 - abc -\n\
                 /b 0 40755 2 0 0 0 0.0 - - -\n\
                 /b/l 0 @100644 2 0 0 0 0.0 /a/f - -\n";
    for seed in 0..50 {
        let shuffled = tar_order(dump, &mut Rng::seeded(seed));
        let text = String::from_utf8(shuffled).unwrap();
        let at = |p: &str| {
            text.lines()
                .position(|l| l.starts_with(&format!("{p} ")))
                .unwrap()
        };
        assert_eq!(at("/"), 0, "{text}");
        assert!(at("/a") < at("/a/f") && at("/b") < at("/b/l"), "{text}");
        assert!(at("/a/f") < at("/b/l"), "{text}");
        assert_eq!(text.lines().count(), 5);
    }
}

/// `mkcomposefs --from-file - -` of each asset in three tar orders gives
/// C's image.
#[test]
fn stdin_dumpfiles_in_tar_order_give_cs_images() {
    let names = cfs().personalities();
    let mkcomposefs = names.path().join("mkcomposefs");
    let mut failures = Vec::new();
    for row in rows() {
        let dump = row.dumpfile();
        for seed in 0..3u64 {
            let input = tar_order(&dump, &mut Rng::seeded(seed));
            let mut child = Command::new(&mkcomposefs)
                .args(&row.version_args)
                .args(["--from-file", "-", "-"])
                .env_remove("CFS_PARSE_STRICT")
                .envs(row.strict.then_some(("CFS_PARSE_STRICT", "1")))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            let writer = std::thread::spawn(move || stdin.write_all(&input));
            let o = child.wait_with_output().unwrap();
            writer.join().unwrap().unwrap();
            if !o.status.success() {
                failures.push(format!(
                    "{} (seed {seed}): {}",
                    row.asset,
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
            } else if sha256_hex(&o.stdout) != row.image_sha256 {
                failures.push(format!(
                    "{} (seed {seed}): image sha256 {}, C's {}",
                    row.asset,
                    sha256_hex(&o.stdout),
                    row.image_sha256
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
