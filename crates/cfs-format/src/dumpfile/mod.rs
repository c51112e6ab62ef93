//! The composefs dumpfile: one line per path, as `mkcomposefs --from-file`
//! reads it and `composefs-info dump` prints it.
//!
//! A line is `PATH SIZE MODE NLINK UID GID RDEV MTIME PAYLOAD CONTENT DIGEST
//! [XATTR...]` with fields separated by single spaces and escaped as
//! described in [`escape`]; `MODE` is octal and starts with `@` on a hard
//! link, `MTIME` is `SEC.NSEC`, `PAYLOAD` is a symlink's target, a regular
//! file's backing object path or a hard link's target path, and each xattr is
//! `NAME=VALUE`. The reference is C composefs (`tools/mkcomposefs.c` for
//! reading, `tools/composefs-info.c` for printing); [`parse`] documents how
//! its quirks carry over into the [`Tree`].

pub mod escape;
mod parse;
mod print;

pub use parse::{MAX_EXTERNAL_FILE_SIZE, MAX_XATTR_FIELDS_LEN, MAX_XATTR_SPACE};

use crate::{Node, Tree};

/// How strictly to parse (see the conformance README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParseMode {
    /// Trailing newline required, symlink size must equal the target length,
    /// no content on symlinks, no rdev on non-devices
    /// (C `mkcomposefs` with `CFS_PARSE_STRICT` set).
    Strict,
    /// What C `mkcomposefs --from-file` accepts.
    #[default]
    Lenient,
}

/// A dumpfile that could not be parsed: the line (1-based) and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct DumpfileError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, naming the field.
    pub message: String,
}

/// Parses a whole dumpfile into a tree, node for node as C `mkcomposefs`
/// builds it before writing an image.
///
/// The first line must be the root `/`; every other path's parent must come
/// before it. Hard links (`@` modes) may name targets anywhere in the file;
/// their entries are marked `hardlink` and name the target's node. Inputs C
/// rejects, whether in its parser or later in its image writer, are errors.
pub fn parse(input: &[u8], mode: ParseMode) -> Result<Tree, DumpfileError> {
    parse::parse(input, mode, None)
}

/// [`parse`] of a dumpfile printed by [`print_omitting`]: a parent directory
/// that has no line of its own is created as a copy of `implicit_parent`
/// (C refuses such a file). Everything else is as in [`parse`].
pub fn parse_with_parents(
    input: &[u8],
    mode: ParseMode,
    implicit_parent: &Node,
) -> Result<Tree, DumpfileError> {
    parse::parse(input, mode, Some(implicit_parent))
}

/// Prints a tree as a canonical dumpfile (what `composefs-info dump` prints
/// for an image holding it).
///
/// Stat fields are printed as the tree holds them; normalising them the way
/// an image does (directory nlink, symlink and device sizes) is the image
/// writer's and reader's job.
pub fn print(tree: &Tree, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    print::print(tree, out, &|_| false)
}

/// [`print()`] without a line for each directory (other than the root) that
/// `omit` picks; what is in it is printed as usual. Such a file reads back
/// with [`parse_with_parents`], the omitted directories recreated from one
/// template: so a deep chain of directories that all look alike costs no
/// line, and no path, of its own. (A dumpfile line repeats its whole path,
/// so printing every directory of a chain `d` deep costs `d²` bytes.)
pub fn print_omitting(
    tree: &Tree,
    out: &mut dyn std::io::Write,
    omit: &dyn Fn(&Node) -> bool,
) -> std::io::Result<()> {
    print::print(tree, out, omit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{FileType, NodeId};

    const ROOT: &str = "/ 4096 40755 2 0 0 0 0.0 - - -\n";

    fn parse_ok(input: &str, mode: ParseMode) -> Tree {
        parse(input.as_bytes(), mode).unwrap_or_else(|e| panic!("{input:?}: {e}"))
    }

    fn printed(tree: &Tree) -> String {
        let mut out = Vec::new();
        print(tree, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Inputs C rejects: (what, input, mode, line, part of the message).
    #[test]
    fn rejected() {
        use ParseMode::{Lenient, Strict};
        let long_name = format!("{ROOT}/{} 0 100644 1 0 0 0 0.0 - - -\n", "n".repeat(256));
        let long_payload = format!("{ROOT}/f 1 100644 1 0 0 0 0.0 {} - -\n", "p".repeat(4096));
        let long_xattr = format!(
            "{ROOT}/f 0 100644 1 0 0 0 0.0 - - - {}=v\n",
            "k".repeat(256)
        );
        let cases: &[(&str, &str, ParseMode, usize, &str)] = &[
            ("empty input", "", Lenient, 1, "no root"),
            ("no newline, strict", "/ 0 40755 2 0 0 0 0.0 - - -", Strict, 1, "newline"),
            ("blank line", "/ 0 40755 2 0 0 0 0.0 - - -\n\n", Lenient, 2, "path: empty"),
            ("child first", "/a 0 100644 1 0 0 0 0.0 - - -\n", Lenient, 1, "before the root"),
            ("relative", "a 0 40755 1 0 0 0 0.0 - - -\n", Lenient, 1, "before the root"),
            ("two roots", &format!("{ROOT}{ROOT}"), Lenient, 2, "second root"),
            ("root not a dir", "/ 0 100644 1 0 0 0 0.0 - - -\n", Lenient, 1, "root must"),
            ("parent missing", &format!("{ROOT}/a/b 0 40755 2 0 0 0 0.0 - - -\n"), Lenient, 2, "parent directory"),
            (
                "parent not a dir",
                &format!("{ROOT}/f 0 100644 1 0 0 0 0.0 - - -\n/f/x 0 100644 1 0 0 0 0.0 - - -\n"),
                Lenient, 3, "not a directory",
            ),
            (
                "duplicate",
                &format!("{ROOT}/f 0 100644 1 0 0 0 0.0 - - -\n/f 0 100644 1 0 0 0 0.0 - - -\n"),
                Lenient, 3, "already exists",
            ),
            ("trailing slash", &format!("{ROOT}/d/ 0 40755 2 0 0 0 0.0 - - -\n"), Lenient, 2, "parent directory"),
            ("name too long", &long_name, Lenient, 2, "longer than 255"),
            ("bad escape", &format!("{ROOT}/a\\q 0 100644 1 0 0 0 0.0 - - -\n"), Lenient, 2, "path: unsupported escape"),
            ("bad size", &format!("{ROOT}/f x 100644 1 0 0 0 0.0 - - -\n"), Lenient, 2, "size: invalid integer"),
            ("bad mode", &format!("{ROOT}/f 0 100844 1 0 0 0 0.0 - - -\n"), Lenient, 2, "mode: invalid integer"),
            ("no file type", &format!("{ROOT}/f 0 644 1 0 0 0 0.0 - - -\n"), Lenient, 2, "file type"),
            ("bad nlink", &format!("{ROOT}/f 0 100644 - 0 0 0 0.0 - - -\n"), Lenient, 2, "nlink: invalid"),
            ("bad uid", &format!("{ROOT}/f 0 100644 1 u 0 0 0.0 - - -\n"), Lenient, 2, "uid: invalid"),
            ("bad gid", &format!("{ROOT}/f 0 100644 1 0 g 0 0.0 - - -\n"), Lenient, 2, "gid: invalid"),
            ("bad rdev", &format!("{ROOT}/f 0 100644 1 0 0 r 0.0 - - -\n"), Lenient, 2, "rdev: invalid"),
            ("mtime without nsec", &format!("{ROOT}/f 0 100644 1 0 0 0 5 - - -\n"), Lenient, 2, "mtime: invalid"),
            ("mtime two dots", &format!("{ROOT}/f 0 100644 1 0 0 0 5.1.2 - - -\n"), Lenient, 2, "mtime: invalid"),
            ("missing fields", &format!("{ROOT}/f 0 100644\n"), Lenient, 2, "nlink: invalid"),
            ("content size", &format!("{ROOT}/f 4 100644 1 0 0 0 0.0 - abc -\n"), Lenient, 2, "but size is 4"),
            ("rdev on a file, strict", &format!("{ROOT}/f 0 100644 1 0 0 5 0.0 - - -\n"), Strict, 2, "rdev: 5"),
            ("symlink size, strict", &format!("{ROOT}/l 9 120777 1 0 0 0 0.0 abc - -\n"), Strict, 2, "size: 9"),
            ("symlink content, strict", &format!("{ROOT}/l 3 120777 1 0 0 0 0.0 abc abc -\n"), Strict, 2, "symlink can't have content"),
            ("symlink without target", &format!("{ROOT}/l 0 120777 1 0 0 0 0.0 - - -\n"), Lenient, 2, "needs a target"),
            ("long payload", &long_payload, Lenient, 2, "payload: 4096 bytes"),
            ("short digest", &format!("{ROOT}/f 1 100644 1 0 0 0 0.0 - - abcd\n"), Lenient, 2, "digest:"),
            ("xattr without =", &format!("{ROOT}/f 0 100644 1 0 0 0 0.0 - - - user.a\n"), Lenient, 2, "missing '='"),
            ("two spaces before xattr", &format!("{ROOT}/f 0 100644 1 0 0 0 0.0 - - -  a=b\n"), Lenient, 2, "missing '='"),
            ("long xattr name", &long_xattr, Lenient, 2, "xattr name: 256 bytes"),
            ("xattr name cut by NUL", &format!("{ROOT}/f 0 100644 1 0 0 0 0.0 - - - \\x00a=b\n"), Lenient, 2, "xattr name: empty"),
            (
                "hard link to a directory",
                &format!("{ROOT}/d 0 40755 2 0 0 0 0.0 - - -\n/h 0 @100644 1 0 0 0 0.0 /d - -\n"),
                Lenient, 3, "to a directory",
            ),
            ("hard link to the root", &format!("{ROOT}/h 0 @100644 1 0 0 0 0.0 / - -\n"), Lenient, 2, "to a directory"),
            ("hard link to nothing", &format!("{ROOT}/h 0 @100644 1 0 0 0 0.0 /x - -\n"), Lenient, 2, "does not exist"),
            ("hard link without target", &format!("{ROOT}/h 0 @100644 1 0 0 0 0.0 - - -\n"), Lenient, 2, "needs a target"),
            ("hard link to itself", &format!("{ROOT}/h 0 @100644 1 0 0 0 0.0 //h - -\n"), Lenient, 2, "itself"),
            (
                "hard link loop",
                &format!("{ROOT}/a 0 @100644 1 0 0 0 0.0 /b - -\n/b 0 @100644 1 0 0 0 0.0 /a - -\n"),
                Lenient, 2, "loop",
            ),
            (
                "path through a hard link",
                &format!("{ROOT}/f 0 100644 1 0 0 0 0.0 - - -\n/h 0 @100644 1 0 0 0 0.0 /f - -\n/h/x 0 100644 1 0 0 0 0.0 - - -\n"),
                Lenient, 4, "not a directory",
            ),
            (
                "hard link target through a hard link",
                &format!("{ROOT}/f 0 100644 1 0 0 0 0.0 - - -\n/h 0 @100644 1 0 0 0 0.0 /f - -\n/g 0 @100644 1 0 0 0 0.0 /h/x - -\n"),
                Lenient, 4, "does not exist",
            ),
            ("too big", &format!("{ROOT}/f 9007199254740993 100644 1 0 0 0 0.0 - - -\n"), Lenient, 2, "larger than"),
        ];
        for (what, input, mode, line, message) in cases {
            match parse(input.as_bytes(), *mode) {
                Ok(_) => panic!("{what}: accepted"),
                Err(e) => {
                    assert_eq!(e.line, *line, "{what}: {e}");
                    assert!(e.message.contains(message), "{what}: {e}");
                }
            }
        }
    }

    /// What C accepts that strict mode would not, and the quirks it keeps.
    #[test]
    fn lenient_quirks() {
        let input = format!(
            "{ROOT}/dev 0 10644 1 0 0 7 0.0 - - -\n\
             /l 3 120777 1 0 0 0 0.0 target xyz -\n\
             /last 0 100644 1 0 0 0 0.0 - - -"
        );
        let tree = parse_ok(&input, ParseMode::Lenient);
        let fifo = tree.node(tree.lookup_path(b"/dev").unwrap());
        assert_eq!(fifo.stat.rdev, 0, "rdev is kept only on devices");
        let link = tree.node(tree.lookup_path(b"/l").unwrap());
        assert_eq!(link.stat.size, 6, "a symlink's size is its target's length");
        assert_eq!(link.payload.as_deref(), Some(&b"target"[..]));
        assert_eq!(link.content, None);
        assert!(tree.lookup_path(b"/last").is_some());
        assert!(parse(input.as_bytes(), ParseMode::Strict).is_err());
    }

    #[test]
    fn fields_land_where_c_puts_them() {
        let digest = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789ABCDEF";
        let input = format!(
            "/ 4096 40755 7 0 0 0 1.2 - - -\n\
             /blk 0 60600 1 1 2 2049 -1.999999999 - - -\n\
             /chr 0 20600 1 0 0 0 0.0 - - -\n\
             /f 5 100640 3 +1000 4294967297 0 1700000000.123456789 ab/cd - {digest} user.b=1 user.a=2\n\
             /inline 3 100644 1 0 0 0 0.0 - \\x00\\n= -\n\
             /empty 0 100644 1 0 0 0 0.0 \\x2d  -\n\
             /cut\\x00tail 0 100644 1 0 0 0 0.0 - - -\n"
        );
        let tree = parse_ok(&input, ParseMode::Strict);
        let root = tree.node(NodeId::ROOT);
        assert_eq!(
            root.stat.nlink, 7,
            "nlink as written; the writer recounts dirs"
        );
        assert_eq!(root.stat.mtime.sec, 1);
        assert_eq!(root.stat.mtime.nsec, 2);

        let blk = tree.node(tree.lookup_path(b"/blk").unwrap());
        assert_eq!(blk.file_type(), Some(FileType::BlockDevice));
        assert_eq!((blk.stat.uid, blk.stat.gid, blk.stat.rdev), (1, 2, 2049));
        assert_eq!(blk.stat.mtime.sec, -1);
        assert_eq!(blk.stat.mtime.nsec, 999_999_999);

        let f = tree.node(tree.lookup_path(b"/f").unwrap());
        assert_eq!(f.stat.mode, 0o100640);
        assert_eq!(f.stat.nlink, 3);
        assert_eq!(f.stat.uid, 1000);
        assert_eq!(f.stat.gid, 1, "C keeps the low 32 bits");
        assert_eq!(f.stat.size, 5);
        assert_eq!(f.payload.as_deref(), Some(&b"ab/cd"[..]));
        assert_eq!(f.digest.unwrap().to_hex(), digest.to_ascii_lowercase());
        let names: Vec<&[u8]> = f.xattrs.iter().map(|x| x.name.as_slice()).collect();
        assert_eq!(names, [&b"user.b"[..], b"user.a"], "file order kept");

        let inline = tree.node(tree.lookup_path(b"/inline").unwrap());
        assert_eq!(inline.content.as_deref(), Some(&b"\0\n="[..]));

        let empty = tree.node(tree.lookup_path(b"/empty").unwrap());
        assert_eq!(empty.payload.as_deref(), Some(&b"-"[..]));
        assert_eq!(empty.content, None, "empty content is no content");

        assert!(
            tree.lookup_path(b"/cut").is_some(),
            "an escaped NUL ends the path"
        );
    }

    #[test]
    fn xattrs_set_twice_move_as_in_c() {
        let input = format!("{ROOT}/f 0 100644 1 0 0 0 0.0 - - - a=1 b=2 c=3 a=4\n");
        let tree = parse_ok(&input, ParseMode::Strict);
        let f = tree.node(tree.lookup_path(b"/f").unwrap());
        let got: Vec<(&[u8], &[u8])> = f
            .xattrs
            .iter()
            .map(|x| (x.name.as_slice(), x.value.as_slice()))
            .collect();
        assert_eq!(
            got,
            [(&b"c"[..], &b"3"[..]), (b"b", b"2"), (b"a", b"4")],
            "the last xattr fills the removed slot; the new value goes last"
        );
    }

    #[test]
    fn xattr_space_limit_is_cs() {
        // One xattr costs 12 + 7 + name + value; 32767 is the most allowed.
        let fits = 32767 - 12 - 7 - 1;
        let ok = format!(
            "{ROOT}/f 0 100644 1 0 0 0 0.0 - - - k={}\n",
            "v".repeat(fits)
        );
        parse_ok(&ok, ParseMode::Strict);
        let over = format!(
            "{ROOT}/f 0 100644 1 0 0 0 0.0 - - - k={}\n",
            "v".repeat(fits + 1)
        );
        let e = parse(over.as_bytes(), ParseMode::Strict).unwrap_err();
        assert!(e.message.contains("32767"), "{e}");
    }

    #[test]
    fn limits_at_the_edge_are_accepted() {
        let name = "n".repeat(255);
        let target = "t".repeat(4095);
        let content = "c".repeat(5000);
        let input = format!(
            "{ROOT}/{name} 0 100644 1 0 0 0 0.0 - - -\n\
             /l 4095 120777 1 0 0 0 0.0 {target} - -\n\
             /c 5000 100644 1 0 0 0 0.0 - {content} -\n\
             /big 9007199254740992 100644 1 0 0 0 0.0 - - -\n"
        );
        let tree = parse_ok(&input, ParseMode::Strict);
        assert_eq!(tree.len(), 5);
    }

    #[test]
    fn hard_links_name_their_target() {
        // Links before and after the target, and a link to a link.
        let input = format!(
            "{ROOT}/a 0 @100755 9 9 9 9 9.9 /t - -\n\
             /t 5 100644 3 0 0 0 0.0 ab/cd - -\n\
             /z 0 @100644 1 0 0 0 0.0 /a - -\n"
        );
        let tree = parse_ok(&input, ParseMode::Strict);
        assert_eq!(tree.len(), 2, "links are not inodes");
        let root = tree.node(NodeId::ROOT);
        let t = root.entry(b"t").unwrap();
        assert!(!t.hardlink);
        for name in [&b"a"[..], b"z"] {
            let e = root.entry(name).unwrap();
            assert!(e.hardlink);
            assert_eq!(e.node, t.node);
        }
        assert_eq!(tree.node(t.node).stat.nlink, 3, "nlink as written");
        assert_eq!(
            printed(&tree),
            format!(
                "{ROOT}/a 5 @100644 3 0 0 0 0.0 /t - -\n\
                 /t 5 100644 3 0 0 0 0.0 ab/cd - -\n\
                 /z 5 @100644 3 0 0 0 0.0 /t - -\n"
            )
        );
    }

    /// Canonical dumps print back byte for byte.
    #[test]
    fn round_trips() {
        let cases: &[&str] = &[
            "/ 4096 40755 2 0 0 0 0.0 - - -\n",
            "/ 4096 40755 2 0 0 0 0.0 - - - trusted.overlay.opaque=x user.a\\x3db=\\x00\\xff\\x20\\x3d\\\\\n",
            "/ 0 40755 3 0 0 0 0.0 - - -\n\
             /a\\x20b 0 40755 2 0 0 0 0.0 - - -\n\
             /a\\x20b/\\xe2\\x98\\x83\\n 0 100644 1 0 0 0 1.999999999 - - -\n\
             /b 3 100600 1 0 0 0 0.0 - -\\t- -\n\
             /c 1 100600 1 0 0 0 0.0 - \\x2d -\n\
             /d 0 20000 1 0 0 1234567890 0.0 - - - user.empty=\n\
             /e 0 100644 2 4294967295 4294967295 0 -5.0 \\x2d - -\n\
             /f 6 120777 1 0 0 0 0.0 ../x\\x20y - -\n\
             /g 0 @100644 2 4294967295 4294967295 0 -5.0 /e - -\n",
            "/ 0 40755 2 0 0 0 0.0 - - -\n\
             /x 1048576 100644 1 0 0 0 0.0 01/23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef - 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
        ];
        for want in cases {
            let tree = parse_ok(want, ParseMode::Strict);
            assert_eq!(&printed(&tree), want);
        }
    }

    /// Directories left out by `print_omitting` come back from their
    /// template, and the tree reads back equal; a plain `parse` refuses the
    /// same file. The dump of a chain `n` deep grows linearly, not as `n²`.
    #[test]
    fn omitted_directories_come_back() {
        let marked = |n: &Node| n.xattrs.len() == 1 && n.xattr(b"user.implicit").is_some();
        let input = "/ 4096 40755 2 0 0 0 0.0 - - -\n\
             /a 0 40755 2 0 0 0 0.0 - - - user.implicit=\n\
             /a/b 0 40755 2 0 0 0 0.0 - - - user.implicit=\n\
             /a/b/c 0 40755 2 0 0 0 0.0 - - - user.implicit=\n\
             /a/b/c/f 3 100644 2 0 0 0 0.0 - abc -\n\
             /a/b/d 0 40700 2 0 0 0 0.0 - - -\n\
             /a/b/d/l 3 @100644 2 0 0 0 0.0 /a/b/c/f - -\n\
             /a/x 0 40755 2 0 0 0 0.0 - - - user.implicit= user.more=1\n";
        let tree = parse_ok(input, ParseMode::Strict);
        let mut out = Vec::new();
        print_omitting(&tree, &mut out, &marked).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            "/ 4096 40755 2 0 0 0 0.0 - - -\n\
             /a/b/c/f 3 100644 2 0 0 0 0.0 - abc -\n\
             /a/b/d 0 40700 2 0 0 0 0.0 - - -\n\
             /a/b/d/l 3 @100644 2 0 0 0 0.0 /a/b/c/f abc -\n\
             /a/x 0 40755 2 0 0 0 0.0 - - - user.implicit= user.more=1\n"
        );
        assert!(parse(out.as_bytes(), ParseMode::Strict).is_err());
        let template = tree.node(tree.lookup_path(b"/a").unwrap()).clone();
        let back = parse_with_parents(out.as_bytes(), ParseMode::Strict, &template).unwrap();
        assert_eq!(printed(&back), printed(&tree));

        // A chain 1000 deep: its dump without the chain is one line long.
        let mut deep = String::from(ROOT);
        let mut path = String::new();
        for _ in 0..1000 {
            path.push_str("/d");
            deep.push_str(&format!(
                "{path} 0 40755 2 0 0 0 0.0 - - - user.implicit=\n"
            ));
        }
        deep.push_str(&format!("{path}/f 0 100644 1 0 0 0 0.0 - - -\n"));
        let tree = parse_ok(&deep, ParseMode::Strict);
        let mut out = Vec::new();
        print_omitting(&tree, &mut out, &marked).unwrap();
        assert_eq!(
            out.len(),
            ROOT.len() + path.len() + "/f 0 100644 1 0 0 0 0.0 - - -\n".len()
        );
        let template = tree.node(tree.lookup_path(b"/d").unwrap()).clone();
        let back = parse_with_parents(&out, ParseMode::Strict, &template).unwrap();
        assert_eq!(printed(&back), printed(&tree));
        // What parse refuses for other reasons it still refuses.
        for bad in [
            "/f/x 0 100644 1 0 0 0 0.0 - - -\n",
            "/a/../x 0 100644 1 0 0 0 0.0 - - -\n",
        ] {
            let input = format!("{ROOT}/f 0 100644 1 0 0 0 0.0 - - -\n{bad}");
            assert!(parse_with_parents(input.as_bytes(), ParseMode::Strict, &template).is_err());
        }
    }
}
