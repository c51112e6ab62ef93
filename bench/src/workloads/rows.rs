//! The mounts compared: cfs in each mode, composefs-rs's `cfsctl` in each of
//! its modes, squashfuse and erofsfuse; each a mount and unmount script, who
//! runs them, and how to find the FUSE server.

use crate::cfs;
use crate::workloads::setup::Bench;
use crate::workloads::who::Who;

/// How to find a row's FUSE server once mounted.
#[derive(Debug, Clone)]
pub struct ServerMatch {
    /// Executable names.
    pub names: Vec<&'static str>,
    /// An argument it was started with, if not the mount point.
    pub arg: Option<String>,
}

/// One mount to measure.
#[derive(Debug, Clone)]
pub struct Row {
    /// Short name (`CFS_BENCH_ROWS` selects by it).
    pub id: String,
    /// What the tables call it.
    pub label: String,
    /// Who mounts and runs the workloads.
    pub who: Who,
    /// Mount script, the mount point written [`MNT`] (see [`Row::mount_at`]).
    pub mount: String,
    /// Unmount script, the mount point written [`MNT`].
    pub unmount: String,
    /// Its FUSE server, if it has one.
    pub server: Option<ServerMatch>,
    /// Whether it needs `fuse.enable_uring` on.
    pub uring: bool,
    /// The only workloads it can run (all when `None`).
    pub only: Option<&'static [&'static str]>,
}

/// How the scripts of a [`Row`] write its mount point, filled in by
/// [`Row::mount_at`] and [`Row::unmount_at`]: the sequential bench mounts
/// every row at `DIR/mnt`, the interleaved one each at a place of its own.
pub const MNT: &str = "@MNT@";

impl Row {
    /// The mount script for a mount at `mnt`.
    pub fn mount_at(&self, mnt: &std::path::Path) -> String {
        self.mount.replace(MNT, &mnt.display().to_string())
    }

    /// The unmount script for a mount at `mnt`.
    pub fn unmount_at(&self, mnt: &std::path::Path) -> String {
        self.unmount.replace(MNT, &mnt.display().to_string())
    }
}

/// Whether the cfs measured has the io_uring transport (`cfs mount --help`
/// mentions `--fuse-transport`; an older `CFS_BENCH_CFS` build does not).
/// Then its FUSE rows say `--fuse-transport dev` (the default, `auto`, would
/// take io_uring whenever `enable_uring` is on), and each has an io_uring
/// twin.
fn has_transports() -> bool {
    std::process::Command::new(cfs())
        .args(["mount", "--help"])
        .output()
        .is_ok_and(|help| String::from_utf8_lossy(&help.stdout).contains("--fuse-transport"))
}

const DEV: &str = " --fuse-transport dev ";
/// The socket of the mount service the `service` rows use.
pub const SERVICE_SOCKET: &str = "/run/cfs-bench-service/mount.sock";
const URING: &str = " --fuse-transport uring ";

/// Every row this machine can run, in order.
pub fn all(b: &Bench) -> Vec<Row> {
    let cfs = cfs().display().to_string();
    let mnt = MNT;
    let repo = b.cfs_repo().display().to_string();
    let transports = has_transports();
    let cfs_mount = |flags: &str| format!("{cfs} --repo {repo} mount {flags} usr {mnt}");
    // A FUSE row's mount, over /dev/fuse.
    let fuse_mount = |flags: &str| {
        let transport = if transports { DEV.trim() } else { "" };
        cfs_mount(&format!("{flags} {transport}"))
    };
    let cfs_unmount = format!("{cfs} unmount {mnt}");
    let cfs_server = || {
        Some(ServerMatch {
            names: vec!["cfs"],
            arg: None,
        })
    };
    let row = |id: &str, label: &str, who, mount: String, unmount: &str, server| Row {
        id: id.into(),
        label: label.into(),
        who,
        mount,
        unmount: unmount.into(),
        server,
        uring: false,
        only: None,
    };
    let mut rows = vec![
        row(
            "kernel",
            "cfs kernel (erofs + overlay)",
            Who::Root,
            cfs_mount("--fuse=no"),
            &cfs_unmount,
            None,
        ),
        row(
            "kernel-file",
            "cfs kernel, erofs file-backed (--erofs-backing file)",
            Who::Root,
            cfs_mount("--fuse=no --erofs-backing file"),
            &cfs_unmount,
            None,
        ),
        row(
            "fuse-overlay",
            "cfs fuse+overlay (root, --fuse=yes)",
            Who::Root,
            fuse_mount("--fuse=yes"),
            &cfs_unmount,
            cfs_server(),
        ),
        row(
            "fuse-overlay-userns",
            "cfs fuse+overlay (user, unshare -Urm)",
            Who::UserNs,
            fuse_mount(""),
            &cfs_unmount,
            cfs_server(),
        ),
        row(
            "standalone",
            "cfs standalone FUSE (user)",
            Who::User,
            fuse_mount(""),
            &cfs_unmount,
            cfs_server(),
        ),
    ];
    // The mount service's kernel mount for a plain user, in and out of a
    // user namespace (issue 18); the service is the bench's own
    // (`SERVICE_SOCKET`, started by `workloads` when a row needs it).
    let service_mount = format!(
        "CFS_MOUNT_SERVICE={} {}",
        SERVICE_SOCKET,
        cfs_mount("--fuse=no")
    );
    let service_unmount = format!("CFS_MOUNT_SERVICE={SERVICE_SOCKET} {cfs_unmount}");
    rows.push(row(
        "service",
        "cfs service (user): the mount service's kernel mount",
        Who::User,
        service_mount.clone(),
        &service_unmount,
        None,
    ));
    rows.push(row(
        "service-userns",
        "cfs service (user, unshare -Urm)",
        Who::UserNs,
        service_mount,
        &service_unmount,
        None,
    ));
    // The same image served mapped (issue 15): `--digest` makes a sealed
    // memfd copy, which the server maps; otherwise a repository image goes
    // through the pread block cache.
    if let Some(id) = image_id(&b.cfs_repo()) {
        rows.push(row(
            "standalone-mapped",
            "cfs standalone FUSE (user), --digest: sealed copy, mapped",
            Who::User,
            fuse_mount(&format!("--digest {id}")),
            &cfs_unmount,
            cfs_server(),
        ));
        rows.push(row(
            "fuse-overlay-mapped",
            "cfs fuse+overlay (root), --digest: sealed copy, mapped",
            Who::Root,
            fuse_mount(&format!("--fuse=yes --digest {id}")),
            &cfs_unmount,
            cfs_server(),
        ));
    }
    if transports {
        // The /dev/fuse workers with a 50 µs adaptive spin (off by
        // default), to weigh it.
        for id in ["fuse-overlay", "standalone"] {
            if let Some(r) = rows.iter().find(|r| r.id == id).cloned() {
                rows.push(Row {
                    id: format!("{id}-spin"),
                    label: format!("{}, spin 50 µs", r.label),
                    mount: r
                        .mount
                        .replace(DEV, " --fuse-transport dev --fuse-spin-us 50 "),
                    ..r
                });
            }
        }
        for r in rows.clone() {
            if r.id.ends_with("-spin") {
                continue;
            }
            if r.server.is_some() {
                rows.push(Row {
                    id: format!("{}-uring", r.id),
                    label: format!("{}, io_uring", r.label),
                    mount: r.mount.replace(DEV, URING),
                    uring: true,
                    ..r
                });
            }
        }
    }
    let ctl = b.cfsctl().display().to_string();
    let ctl_repo = b.cfsctl_repo().display().to_string();
    // By image id: cfsctl 0.9.4 asks for fs-verity on anything mounted by a
    // ref name, even in an `--insecure` repository (this kernel has none).
    let ctl_id = image_id(&b.cfsctl_repo()).unwrap_or_else(|| "usr".into());
    let ctl_mount =
        |fuse: &str| format!("{ctl} --repo {ctl_repo} mount --fuse={fuse} {ctl_id} {mnt}");
    let ctl_server = || {
        Some(ServerMatch {
            names: vec!["cfsctl"],
            arg: None,
        })
    };
    rows.extend([
        row(
            "cfsctl-kernel",
            "cfsctl kernel",
            Who::Root,
            ctl_mount("no"),
            &format!("umount {mnt}"),
            None,
        ),
        row(
            "cfsctl-fuse-overlay",
            "cfsctl fuse+overlay (root, --fuse=yes)",
            Who::Root,
            ctl_mount("yes"),
            &format!("umount {mnt}"),
            ctl_server(),
        ),
        row(
            "cfsctl-fuse-overlay-userns",
            "cfsctl fuse+overlay (user, unshare -Urm)",
            Who::UserNs,
            ctl_mount("auto"),
            &format!("umount {mnt}"),
            ctl_server(),
        ),
        row(
            "cfsctl-standalone",
            "cfsctl standalone FUSE (user)",
            Who::User,
            ctl_mount("yes"),
            &format!("fusermount3 -u {mnt}"),
            ctl_server(),
        ),
        row(
            "squashfuse",
            "squashfuse_ll 0.1.105 (user)",
            Who::User,
            format!("squashfuse_ll {} {mnt}", b.sqsh().display()),
            &format!("fusermount3 -u {mnt}"),
            Some(ServerMatch {
                names: vec!["squashfuse_ll"],
                arg: None,
            }),
        ),
    ]);
    if let Some(c_mount) = b.c_mount() {
        // C's mount of cfs's image (the same bytes mkcomposefs writes) over
        // the same objects.
        rows.push(row(
            "c-kernel",
            "C mount.composefs (kernel)",
            Who::Root,
            format!(
                "LD_LIBRARY_PATH={c}/lib/x86_64-linux-gnu:{c}/lib {} -o basedir={repo}/objects {} {mnt}",
                c_mount.display(),
                b.cfs_image().display(),
                c = b.c_prefix().display(),
            ),
            &format!("umount {mnt}"),
            None,
        ));
    }
    if let Some(erofsfuse) = b.erofsfuse() {
        // erofsfuse shows the image alone: its metadata, external files
        // without contents (there is no overlay to find them), so only the
        // walk is comparable.
        let mut r = row(
            "erofsfuse",
            "erofsfuse 1.9.3 (user; the image alone: walk only)",
            Who::User,
            format!("{} {} {mnt}", erofsfuse.display(), b.cfs_image().display()),
            &format!("fusermount3 -u {mnt}"),
            Some(ServerMatch {
                names: vec!["erofsfuse"],
                arg: None,
            }),
        );
        r.only = Some(&["walk"]);
        rows.push(r);
    }
    rows
}

/// The image id `REPO/images/refs/usr` names.
fn image_id(repo: &std::path::Path) -> Option<String> {
    let target = std::fs::read_link(repo.join("images/refs/usr")).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}
