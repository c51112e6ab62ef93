//! `cfs man DIR`: the manual pages, rendered by clap_mangen from the same
//! clap definitions that parse the command lines (synopsis, description,
//! options, subcommands), plus the few sections no flag carries (modes,
//! mount options, environment, files, see also), written here once.
//!
//! Pages: `cfs(1)`, one per subcommand (`cfs-mount(1)`, `cfs-oci-pull(1)`,
//! …; hidden ones left out), and the C-compatible names `mkcomposefs(1)`,
//! `composefs-info(1)` and `mount.composefs(8)`, each from its own clap
//! command. They go to `DIR/man1` and `DIR/man8`, a man directory's layout,
//! so `cfs man PREFIX/share/man` installs them and `man -M DIR cfs` reads
//! them.

use anyhow::Context;
use clap::Args;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;
use std::path::PathBuf;

/// Options of `cfs man`.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// The man directory to write into (its man1/ and man8/ are created).
    dir: PathBuf,
}

/// Writes every page, printing each file's path.
pub fn run(a: &ManArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for page in pages() {
        let dir = a.dir.join(format!("man{}", page.section));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
        let path = dir.join(format!("{}.{}", page.name, page.section));
        let text = page.render().context("could not render a manual page")?;
        super::output::write_output(&path, &text)?;
        writeln!(out, "{}", path.display())?;
    }
    Ok(out.flush()?)
}

/// One manual page: a clap command and what it adds.
struct Page {
    /// The page's name (`cfs-mount`).
    name: String,
    /// Its section (`1`, `8`).
    section: &'static str,
    cmd: clap::Command,
    extra: &'static [Section],
    see_also: &'static [&'static str],
}

/// A section of hand-written text.
#[derive(Clone, Copy)]
struct Section {
    title: &'static str,
    blocks: &'static [Block],
}

/// A paragraph, or a term and its explanation.
#[derive(Clone, Copy)]
enum Block {
    P(&'static str),
    Item(&'static str, &'static str),
}

/// Every page, `cfs(1)` first.
fn pages() -> Vec<Page> {
    let mut root = super::cfs_command().disable_help_subcommand(true);
    root.build();
    let mut pages = Vec::new();
    add_tree(&root, &mut pages);
    pages.push(Page {
        name: "mkcomposefs".into(),
        section: "1",
        cmd: super::mkfs::mkcomposefs_command(),
        extra: MKCOMPOSEFS,
        see_also: &[
            "composefs-info(1)",
            "mount.composefs(8)",
            "cfs(1)",
            "cfs-mkfs(1)",
        ],
    });
    pages.push(Page {
        name: "composefs-info".into(),
        section: "1",
        cmd: super::info::composefs_info_command(),
        extra: &[],
        see_also: &["mkcomposefs(1)", "mount.composefs(8)", "cfs(1)"],
    });
    pages.push(Page {
        name: "mount.composefs".into(),
        section: "8",
        cmd: super::mount::mount_composefs_command(),
        extra: MOUNT_COMPOSEFS,
        see_also: &[
            "mount(8)",
            "umount(8)",
            "mkcomposefs(1)",
            "composefs-info(1)",
            "cfs-mount(1)",
        ],
    });
    pages
}

/// `cmd`'s page and those of its visible subcommands, depth first.
fn add_tree(cmd: &clap::Command, pages: &mut Vec<Page>) {
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_owned();
    let (extra, see_also) = extras(&name);
    pages.push(Page {
        name,
        section: "1",
        cmd: cmd.clone(),
        extra,
        see_also,
    });
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        add_tree(sub, pages);
    }
}

/// The hand-written sections and cross references of a `cfs` page.
fn extras(name: &str) -> (&'static [Section], &'static [&'static str]) {
    match name {
        "cfs" => (
            CFS,
            &[
                "mkcomposefs(1)",
                "composefs-info(1)",
                "mount.composefs(8)",
                "mount(8)",
                "fusermount3(1)",
                "unshare(1)",
            ],
        ),
        "cfs-mount" => (
            MODES,
            &[
                "cfs(1)",
                "cfs-unmount(1)",
                "cfs-mounts(1)",
                "mount.composefs(8)",
            ],
        ),
        "cfs-fuse-serve" | "cfs-unmount" => (&[], &["cfs(1)", "cfs-mount(1)"]),
        "cfs-mkfs" => (&[], &["cfs(1)", "mkcomposefs(1)"]),
        "cfs-dump" | "cfs-ls" | "cfs-objects" | "cfs-missing-objects" | "cfs-digest" => {
            (&[], &["cfs(1)", "composefs-info(1)"])
        }
        "cfs-images" | "cfs-info" | "cfs-fsck" | "cfs-mounts" | "cfs-oci-images"
        | "cfs-oci-inspect" => (JSON, &["cfs(1)"]),
        _ => (&[], &["cfs(1)"]),
    }
}

impl Page {
    /// The SYNOPSIS: the command's own usage lines where it sets them (the
    /// C-compatible names, whose options are not all flags), else clap_mangen's.
    fn render_synopsis(&self, man: &Man, out: &mut Vec<u8>) -> std::io::Result<()> {
        let Some(usage) = self.cmd.get_overridden_usage() else {
            return man.render_synopsis_section(out);
        };
        let mut roff = Roff::new();
        roff.control("SH", ["SYNOPSIS"]);
        for (i, line) in usage.to_string().lines().enumerate() {
            if i > 0 {
                roff.control("br", []);
            }
            let line = line.trim();
            let (name, rest) = line.split_once(' ').unwrap_or((line, ""));
            roff.text([bold(name), roman(format!(" {rest}"))]);
        }
        roff.to_writer(out)
    }

    /// The page as roff.
    fn render(&self) -> std::io::Result<Vec<u8>> {
        let man = Man::new(self.cmd.clone())
            .title(self.name.clone())
            .section(self.section)
            .source(format!("cfs {}", super::VERSION))
            .manual("cfs manual");
        let mut out = Vec::new();
        man.render_title(&mut out)?;
        man.render_name_section(&mut out)?;
        self.render_synopsis(&man, &mut out)?;
        man.render_description_section(&mut out)?;
        if self.cmd.get_arguments().any(|a| !a.is_hide_set()) {
            man.render_options_section(&mut out)?;
        }
        if self.cmd.get_subcommands().any(|s| !s.is_hide_set()) {
            man.render_subcommands_section(&mut out)?;
        }
        let mut roff = Roff::new();
        for section in self.extra {
            roff.control("SH", [section.title]);
            for block in section.blocks {
                match block {
                    Block::P(text) => {
                        roff.control("PP", []).text([roman(*text)]);
                    }
                    Block::Item(term, text) => {
                        roff.control("TP", [])
                            .text([bold(*term)])
                            .text([roman(*text)]);
                    }
                }
            }
        }
        if !self.see_also.is_empty() {
            roff.control("SH", ["SEE ALSO"]);
            let mut refs = Vec::new();
            for (i, r) in self.see_also.iter().enumerate() {
                if i > 0 {
                    refs.push(roman(", "));
                }
                refs.push(bold(*r));
            }
            roff.text(refs);
        }
        roff.to_writer(&mut out)?;
        Ok(out)
    }
}

/// How `cfs mount` mounts, by who asks.
const MODES: &[Section] = &[Section {
    title: "MODES",
    blocks: &[
        Block::P(
            "With --fuse=auto (the default) the mode follows the caller's privilege; \
             --explain prints the one chosen and why.",
        ),
        Block::Item(
            "kernel",
            "With CAP_SYS_ADMIN in the initial user namespace (root): erofs mounts the \
             image, and overlayfs stacks it over the object directories as data-only \
             layers, checking contents with fs-verity where the objects have it.",
        ),
        Block::Item(
            "service",
            "Without that privilege, where the cfs mount service runs (cfs mount-service, \
             socket $CFS_MOUNT_SERVICE or /run/cfs/mount.sock): the same kernel mount, made \
             by the service from its validated copy of the image, reading the objects with \
             the caller's permissions; read-only, nosuid, nodev. If the service is absent or \
             refuses, the modes below (--explain says which and why); --fuse=no takes the \
             service without them.",
        ),
        Block::Item(
            "fuse+overlay",
            "As root of a user namespace (unshare -Urm, rootless containers): the cfs \
             FUSE server serves the metadata, and overlayfs (userxattr) reads contents \
             straight from the object directories; writable with --upperdir, --workdir \
             and --read-write.",
        ),
        Block::Item(
            "fuse",
            "As a plain user (/dev/fuse usable, fusermount3 installed), or with \
             --fuse=standalone: the cfs FUSE server serves metadata and contents, \
             checking each file against its digest; read-only.",
        ),
    ],
}];

/// `cfs(1)`'s own sections.
const CFS: &[Section] = &[
    MODES[0],
    Section {
        title: "REPOSITORY",
        blocks: &[Block::P(
            "A repository stores file contents as objects named by their fs-verity \
             digest, images by image id (the image's own fs-verity digest), and names \
             for images. --repo PATH or CFS_REPO picks it; the default is /var/lib/cfs \
             for root and $XDG_DATA_HOME/cfs (or ~/.local/share/cfs) for anyone else. \
             It is private to its owner (mode 0700), nothing in it is reached through \
             a symlink, and a mounted image keeps its objects through rm and gc until \
             it is unmounted.",
        )],
    },
    Section {
        title: "ENVIRONMENT",
        blocks: &[
            Block::Item("CFS_REPO", "The repository, as --repo."),
            Block::Item(
                "CFS_LOCK_TIMEOUT",
                "Seconds to wait for a busy repository lock, as --lock-timeout.",
            ),
            Block::Item(
                "CFS_SERVER_LOG",
                "A file collecting the messages of detached FUSE servers.",
            ),
            Block::Item(
                "CFS_MOUNT_SERVICE",
                "The mount service's socket (default /run/cfs/mount.sock).",
            ),
            Block::Item(
                "CFS_PARSE_STRICT",
                "When set, dumpfiles are parsed strictly (as mkfs --strict).",
            ),
            Block::Item(
                "XDG_DATA_HOME, HOME",
                "Where a user's default repository is.",
            ),
        ],
    },
    Section {
        title: "FILES",
        blocks: &[
            Block::Item("/var/lib/cfs", "root's default repository."),
            Block::Item(
                "~/.local/share/cfs",
                "a user's default repository (under $XDG_DATA_HOME when set).",
            ),
            Block::Item(
                "/sbin/mount.composefs",
                "the mount helper, the same binary under the name mount(8) runs.",
            ),
        ],
    },
    JSON[0],
    Section {
        title: "EXIT STATUS",
        blocks: &[Block::P(
            "0 on success; 1 on failure, with the reason on standard error (for fsck, \
             also when it found a problem); 2 when the command line is wrong.",
        )],
    },
];

/// The `--json` promise, on the pages of commands that have it.
const JSON: &[Section] = &[Section {
    title: "JSON OUTPUT",
    blocks: &[Block::P(
        "images, info, fsck, mounts, oci images and oci inspect take --json: one JSON \
         value (an array or an object) on one line. Its fields are documented in json.md \
         (installed under share/doc/cfs); within a major version fields are only added, \
         never renamed or removed.",
    )],
}];

/// `mkcomposefs(1)`'s own sections.
const MKCOMPOSEFS: &[Section] = &[
    Section {
        title: "FORMAT VERSIONS",
        blocks: &[
            Block::P(
                "Images are reproducible: the same input gives the same bytes, and so \
                 the same digest. The format version is the lowest of --min-version..\
                 --max-version (default 0..1) that can hold the image: version 0 is the \
                 original format, version 1 (composefs 1.0.3) can hold overlay whiteouts. \
                 Give both to pin the version.",
            ),
            Block::P(
                "-V and --version print the program's version. (C mkcomposefs's manual \
                 calls the lowest format version --version; its command line, and this \
                 one, take --min-version.)",
            ),
        ],
    },
    Section {
        title: "HARD LINKS AND OBJECTS",
        blocks: &[
            Block::P(
                "As C mkcomposefs 1.0.x does, hard links in a source directory become \
                 separate inodes; --hardlinks keeps them linked (a different image). \
                 Files of 64 bytes or less are stored in the image; larger ones are \
                 named by their fs-verity digest, and --digest-store=DIR copies them \
                 there as DIR/XX/REST (a cfs repository is accepted and filled under \
                 its lock). That directory is the basedir= to mount the image with.",
            ),
            Block::P(
                "mkcomposefs needs no privilege: run it as an unprivileged user where \
                 possible, for example `mkcomposefs --from-file - /proc/self/fd/3` \
                 with only the output open for writing.",
            ),
        ],
    },
    Section {
        title: "EXAMPLES",
        blocks: &[
            Block::P("mkcomposefs --digest-store=/srv/objects rootfs/ rootfs.cfs"),
            Block::P("mount -t composefs rootfs.cfs /mnt -o basedir=/srv/objects"),
        ],
    },
];

/// `mount.composefs(8)`'s own sections.
const MOUNT_COMPOSEFS: &[Section] = &[
    Section {
        title: "MOUNT OPTIONS",
        blocks: &[
            Block::P(
                "Given with -o, separated by commas; a backslash makes the next character \
                 literal (a comma in a path). Generic options mount(8) passes on \
                 (defaults, auto, noauto, nofail, _netdev, x-*) are ignored.",
            ),
            Block::Item(
                "basedir=DIR[:DIR...]",
                "The object directories holding the files' contents (what mkcomposefs \
                 --digest-store wrote, or a cfs repository's objects/). Required.",
            ),
            Block::Item(
                "digest=HEX",
                "The image's expected fs-verity digest (64 hex digits). The image is \
                 checked before anything is mounted: measured by the kernel where it has \
                 fs-verity, else copied while hashing into a sealed private copy that is \
                 what gets mounted, so changing the file afterwards changes nothing. \
                 Unlike C mount.composefs, it does not turn on verity for the contents.",
            ),
            Block::Item(
                "verity",
                "Every file's contents must be checked by fs-verity: refused where the \
                 object directory lacks it (overlayfs verity=require, Linux 6.6).",
            ),
            Block::Item(
                "tryverity",
                "Check contents with fs-verity where the object directory has it.",
            ),
            Block::Item("noverity", "Don't check contents (the default)."),
            Block::Item(
                "upperdir=DIR, workdir=DIR",
                "An overlayfs upper and work directory (both or neither): the mount \
                 becomes writable, changes going to DIR.",
            ),
            Block::Item(
                "ro, rw",
                "Read-only (the default without upperdir) or writable (needs upperdir).",
            ),
            Block::Item(
                "idmap=PATH",
                "An idmapped mount, as C mount.composefs makes it: the erofs layer, \
                 whose owners the files show, goes through the mapping of the user \
                 namespace at PATH (/proc/PID/ns/user), with mount_setattr(2) \
                 MOUNT_ATTR_IDMAP (the kernel's erofs must allow idmapped mounts).",
            ),
            Block::Item(
                "signed",
                "C mount.composefs's signature check: not implemented yet, refused.",
            ),
        ],
    },
    Section {
        title: "NOTES",
        blocks: &[
            Block::P(
                "mount.composefs mounts with the kernel's erofs and overlayfs and needs \
                 CAP_SYS_ADMIN. erofs mounts the image file directly (Linux 6.12; a loop \
                 device before), and overlayfs takes the object directories as data-only \
                 layers (Linux 6.5; added one at a time with lowerdir+ and datadir+, Linux 6.7). umount(8) or cfs \
                 unmount undo it. Without privilege, use cfs mount, which mounts with FUSE.",
            ),
            Block::P(
                "mount(8) runs helpers from /sbin only: install this binary (or a link to \
                 it) as /sbin/mount.composefs for mount -t composefs.",
            ),
        ],
    },
    Section {
        title: "EXAMPLES",
        blocks: &[
            Block::P("mount -t composefs rootfs.cfs /mnt -o basedir=/srv/objects,ro"),
            Block::P(
                "mount -t composefs rootfs.cfs /mnt -o basedir=/srv/objects,\
                 upperdir=/var/up,workdir=/var/work,rw",
            ),
        ],
    },
];
