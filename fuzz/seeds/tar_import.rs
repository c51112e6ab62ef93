//! Seeds for the `tar_import` fuzz target, in its input format
//! (`fuzz/harness/tar_import/input.rs`):
//!
//! - `tar_import_seeds DUMPFILE OUTDIR NAME`: the tree of a composefs
//!   dumpfile (a conformance asset; `-` reads standard input) as tar
//!   entries, parents first, in two seeds:
//!   `NAME.1` one layer with GNU headers and PAX records for long names,
//!   `NAME.2` the same entries split into two layers with POSIX headers and
//!   GNU long-name records. Hard links become tar hard links, xattrs PAX
//!   `SCHILY.xattr.` records, whiteouts (char 0/0) `.wh.NAME` entries, opaque
//!   directories `.wh..wh..opq` entries; file contents are the inline content
//!   or a filler of the file's size (at most 128 bytes). At most 64 entries, to
//!   keep executions fast.
//! - `tar_import_seeds --examples OUTDIR`: the hand-written escape attempts
//!   (`fuzz/harness/tar_import/examples.rs`) as `NAME.bin`.

// run.sh builds this with the fuzz targets' instrumentation, whose coverage
// hooks live in libFuzzer: link it (its `main` stays out, this bin has one).
use libfuzzer_sys as _;

#[path = "../harness/tar_import/mod.rs"]
mod tar_import;

use cfs_format::dumpfile::{parse, ParseMode};
use cfs_format::{overlay, FileType, NodeId, Tree};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use tar_import::input::{Entry, Input, Op, PathSpec, Pax, F_LONG_SHIFT, F_POSIX};

const MAX_ENTRIES: usize = 64;
const MAX_FILLER: u64 = 128;

fn entries(tree: &Tree) -> Vec<Entry> {
    let mut out = Vec::new();
    let root = tree.node(NodeId::ROOT);
    out.push(Entry {
        typeflag: b'5',
        path: PathSpec {
            flags: 2,
            comps: Vec::new(),
        },
        mode: root.stat.mode & 0o7777,
        uid: root.stat.uid.into(),
        gid: root.stat.gid.into(),
        mtime: root.stat.mtime.sec.max(0) as u64,
        ..Entry::default()
    });
    let mut first: HashMap<NodeId, Vec<u8>> = HashMap::new();
    walk(tree, NodeId::ROOT, b"", &mut first, &mut out);
    out.truncate(MAX_ENTRIES);
    out
}

fn walk(
    tree: &Tree,
    dir: NodeId,
    prefix: &[u8],
    first: &mut HashMap<NodeId, Vec<u8>>,
    out: &mut Vec<Entry>,
) {
    for e in &tree.node(dir).entries {
        if out.len() >= MAX_ENTRIES {
            return;
        }
        let path = [prefix, &e.name].concat();
        let n = tree.node(e.node);
        let mut entry = Entry {
            path: PathSpec::from_bytes(&path),
            mode: n.stat.mode & 0o7777,
            uid: n.stat.uid.into(),
            gid: n.stat.gid.into(),
            mtime: n.stat.mtime.sec.max(0) as u64,
            pax: n
                .xattrs
                .iter()
                .filter(|x| x.name != overlay::OPAQUE)
                .take(7)
                .map(|x| Pax::xattr(&x.name, &x.value))
                .collect(),
            ..Entry::default()
        };
        if let Some(target) = first.get(&e.node) {
            entry.typeflag = b'1';
            entry.link = PathSpec::from_bytes(target);
            entry.pax.clear();
            out.push(entry);
            continue;
        }
        match n.file_type() {
            Some(FileType::Directory) => {
                entry.typeflag = b'5';
                out.push(entry);
                if n.xattr(overlay::OPAQUE) == Some(b"y") {
                    out.push(Entry {
                        typeflag: b'0',
                        path: PathSpec::from_bytes(&[&path[..], b"/.wh..wh..opq"].concat()),
                        ..Entry::default()
                    });
                }
                walk(tree, e.node, &[&path[..], b"/"].concat(), first, out);
                continue;
            }
            Some(FileType::Regular) => {
                entry.typeflag = b'0';
                entry.content = match &n.content {
                    Some(c) => c.clone(),
                    None => (0..n.stat.size.min(MAX_FILLER)).map(|i| i as u8).collect(),
                };
            }
            Some(FileType::Symlink) => {
                entry.typeflag = b'2';
                entry.link = PathSpec::from_bytes(n.payload.as_deref().unwrap_or_default());
            }
            _ if overlay::is_whiteout(n.stat.mode, n.stat.rdev) => {
                entry.typeflag = b'0';
                entry.path = PathSpec::from_bytes(&[prefix, b".wh.", &e.name].concat());
                entry.pax.clear();
            }
            Some(t @ (FileType::CharDevice | FileType::BlockDevice)) => {
                entry.typeflag = if t == FileType::CharDevice {
                    b'3'
                } else {
                    b'4'
                };
                let rdev = n.stat.rdev;
                entry.major = (((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff)) as u32;
                entry.minor = (((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff)) as u32;
            }
            Some(FileType::Fifo) => entry.typeflag = b'6',
            Some(FileType::Socket) | None => continue,
        }
        first.insert(e.node, path);
        out.push(entry);
    }
}

fn write(dir: &Path, name: &str, input: &Input) {
    let p = dir.join(name);
    std::fs::write(&p, input.encode()).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, out] if flag == "--examples" => {
            for (name, input) in tar_import::examples::all() {
                write(Path::new(out), &format!("{name}.bin"), &input);
            }
        }
        [dump, out, name] => {
            let text = if dump == "-" {
                let mut v = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut v)
                    .unwrap_or_else(|e| panic!("stdin: {e}"));
                v
            } else {
                std::fs::read(dump).unwrap_or_else(|e| panic!("{dump}: {e}"))
            };
            let Ok(tree) = parse(&text, ParseMode::Lenient) else {
                eprintln!("{name}: does not parse, no seeds");
                return;
            };
            let name = name.trim_end_matches(".dump");
            let es = entries(&tree);
            let one = Input {
                ops: es.iter().cloned().map(Op::Entry).collect(),
            };
            write(Path::new(out), &format!("{name}.1"), &one);
            let gnu = F_POSIX | (1 << F_LONG_SHIFT);
            let mut ops: Vec<Op> = es
                .into_iter()
                .map(|e| Op::Entry(Entry { flags: gnu, ..e }))
                .collect();
            ops.insert(ops.len() / 2, Op::Layer);
            write(Path::new(out), &format!("{name}.2"), &Input { ops });
        }
        _ => {
            eprintln!("usage: tar_import_seeds DUMPFILE|- OUTDIR NAME | --examples OUTDIR");
            std::process::exit(2);
        }
    }
}
