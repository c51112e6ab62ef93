//! The mount service (issue 18): `cfs mount-service` started by the test as
//! root on a socket of its own, and the plain user `cfs-test` (as itself
//! and as root of `unshare -Urm`) getting kernel mounts from it.
//! - `mount`: `cfs mount NAME MNT` (and an image file) is a kernel overlay
//!   over erofs made by the service, its walk equals the source, the user
//!   unmounts it and another user can't; in a user namespace the image's
//!   root-owned files show as that namespace's root;
//! - `setuid`: a setuid-root `id` in the image runs as the user; its device
//!   nodes can't be opened; a user namespace gets no image with devices;
//! - `hostile`: mutated images, redirects out of the store, fds of the
//!   wrong kind, a mount point not the user's or a symlink, malformed and
//!   slow requests, objects the user can't read (in a root-only directory,
//!   hard-linked, symlinked, bind-mounted): each refused or unreadable, the
//!   service alive and its other mounts intact; limits hold;
//! - `limits`: a user's subordinate uids are that user to the limits;
//!   parallel mounts can't pass the mount limit together; parallel large
//!   images are read one validation slot at a time; a pin of a mount gone
//!   unmounts nothing;
//! - `fallback`: without a service, `cfs mount` mounts with FUSE as
//!   before; a refused mount falls back too;
//! - `units`: the service socket-activated (`systemd-socket-activate`)
//!   under the restrictions `dist/systemd/cfs-mount.service` sets that can
//!   be had without systemd: its capability bounding set, no new
//!   privileges, a private mount namespace with `/` read-only and no
//!   `/home`; the units pass `systemd-analyze verify`.

mod fallback;
mod hostile;
mod limits;
mod mount;
mod setuid;
mod units;

use crate::cfs;
use cfs_testkit::users::{As, Script, Tag, TEST_USER};
use cfs_testkit::{need, os, stderr};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

/// What these tests need besides root and the file systems.
const TOOLS: &[&str] = &[
    "setpriv",
    "unshare",
    "fusermount3",
    "timeout",
    "getfattr",
    "stat",
];

/// How long a test script may run.
const LIMIT: Duration = Duration::from_secs(90);

/// Why these tests can't run here, if they can't: root, the tools, the
/// file systems (then the test user exists and `/dev/fuse` is usable), and a
/// kernel with what the service needs (`SO_PEERPIDFD`, pidfd namespace
/// ioctls, `statmount` with namespaces: Linux 6.11).
fn unavailable() -> Option<String> {
    need::rootless(TOOLS).or_else(|| {
        let f = std::fs::File::open("/").ok()?;
        cfs_repo::sys::mount_of(&f)
            .err()
            .map(|e| format!("this kernel has no statmount with namespaces ({e})"))
    })
}

/// A mount service the test started, as root, with its socket and cache in
/// a directory of its own (reachable by every user); killed on drop.
struct Service {
    child: Child,
    dir: tempfile::TempDir,
}

impl Service {
    /// Starts `cfs mount-service` with `extra` flags and waits for its
    /// socket. It carries a tag of its own: a test's own tag finds the
    /// processes its scripts leave, which the service is not.
    fn start(extra: &[&str]) -> Service {
        Service::start_with(|dir| {
            let mut cmd = cfs().command([
                os("mount-service"),
                os("--socket"),
                dir.join("mount.sock").as_os_str(),
                os("--cache"),
                dir.join("cache").as_os_str(),
            ]);
            cmd.args(extra);
            cmd
        })
    }

    /// Starts the command `make` returns for the service's directory (which
    /// must end up listening on `DIR/mount.sock`, with the cache in
    /// `DIR/cache`), and waits for its socket.
    fn start_with(make: impl FnOnce(&Path) -> std::process::Command) -> Service {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        let socket = dir.path().join("mount.sock");
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let mut cmd = make(dir.path());
        cmd.stdout(Stdio::null()).stderr(log);
        Tag::new().mark(&mut cmd);
        let mut s = Service {
            child: cmd.spawn().unwrap(),
            dir,
        };
        let up = cfs_testkit::mounts::wait_until(Duration::from_secs(20), || {
            socket.exists() || !s.alive()
        });
        assert!(up && s.alive(), "the service did not start: {}", s.log());
        s
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("mount.sock")
    }

    /// What clients are told: `CFS_MOUNT_SERVICE=socket`.
    fn env(&self) -> (&'static str, std::ffi::OsString) {
        ("CFS_MOUNT_SERVICE", self.socket().into_os_string())
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// The service's cache (a cfs repository).
    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
}

/// A directory the test user owns, inside one everyone may enter; what is
/// still mounted under it is unmounted (lazily) on drop.
struct Home {
    t: tempfile::TempDir,
    dir: PathBuf,
    tag: Tag,
}

fn home() -> Home {
    let t = tempfile::tempdir().unwrap();
    chmod(t.path(), 0o755);
    let dir = t.path().join("home");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o755);
    cfs_testkit::command::run_ok(
        std::process::Command::new("chown").args([os(TEST_USER), dir.as_os_str()]),
    );
    Home {
        t,
        dir,
        tag: Tag::new(),
    }
}

impl Home {
    /// The directory holding the home (root's, for root's files).
    fn top(&self) -> &Path {
        self.t.path()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        for line in cfs_testkit::mounts::mounted_under(self.t.path()) {
            if let Some(row) = cfs_mount::mounts::parse_row(&line) {
                cfs_testkit::mounts::umount(&row.mountpoint);
            }
        }
    }
}

/// Runs `script` as `who` in the home with the service's socket (and
/// `vars`) in its environment.
fn run(who: As, h: &Home, svc: Option<&Service>, vars: &[(&str, &OsStr)], script: &str) -> Output {
    let socket = svc.map(|s| s.env());
    let mut env: Vec<(&str, &OsStr)> = vars.to_vec();
    let absent = std::ffi::OsString::from("/nonexistent/cfs-mount.sock");
    match &socket {
        Some((k, v)) => env.push((k, v.as_os_str())),
        None => env.push(("CFS_MOUNT_SERVICE", absent.as_os_str())),
    }
    env.push(("HOME_DIR", h.dir.as_os_str()));
    Script {
        cfs: &cfs(),
        who,
        dir: &h.dir,
        env: &env,
        limit: LIMIT,
        tag: Some(&h.tag),
    }
    .run(&format!("{LIST}\n{script}"))
}

fn run_ok(
    who: As,
    h: &Home,
    svc: Option<&Service>,
    vars: &[(&str, &OsStr)],
    script: &str,
) -> String {
    let o = run(who, h, svc, vars, script);
    assert!(
        o.status.success(),
        "{who:?} script failed:\n{script}\nstdout: {}\nstderr: {}\nservice log:\n{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o),
        svc.map(|s| s.log()).unwrap_or_default()
    );
    String::from_utf8(o.stdout).unwrap()
}

/// `list DIR`: types, modes, owners, link counts, sizes, mtimes, symlink
/// targets, sha256 of every regular file, user xattrs (directory sizes
/// and link counts are layout, left out); `mountline DIR`: the mount on
/// DIR as `FSTYPE SOURCE`.
const LIST: &str = r#"
list() (
    cd "$1"
    find . -type d -printf '%p d %m %U %G %T@\n' | sort
    find . ! -type d -printf '%p %y %m %U %G %n %s %T@ %l\n' | sort
    find . -type f -print0 | sort -z | xargs -0 -r sha256sum
    find . | sort | while read -r p; do getfattr -h -d -m '^user\.' -- "$p" 2>/dev/null || true; done
)
mountline() {
    awk -v m="$(cd "$1" && pwd -P)" '$5 == m { for (i = 7; $i != "-"; i++); print $(i+1), $(i+2) }' /proc/self/mountinfo
}
"#;

/// A tree of the test user's, every kind of file an image holds without a
/// device: inline and external files, a hard link, symlinks, a fifo, user
/// xattrs, an empty directory.
const MAKE_SRC: &str = r#"
make_src() {
    mkdir -p src/dir/sub src/empty
    printf 'small enough to live in the image\n' > src/inline
    head -c 300007 /dev/urandom > src/ext1
    head -c 70001 /dev/urandom > src/dir/ext2
    head -c 4096 /dev/urandom > src/dir/sub/ext3
    ln src/ext1 src/dir/hardlink
    ln -s ../inline src/dir/rel-link
    ln -s /absolute/target src/abs-link
    mkfifo src/fifo
    setfattr -n user.comment -v hello src/inline 2>/dev/null || true
    touch -d @1000000000 src/dir/sub
}
"#;

/// The variables scripts find an image and its objects by: `IMAGE`,
/// `OBJECTS`.
fn image_vars<'a>(image: &'a Path, objects: &'a Path) -> [(&'static str, &'a OsStr); 2] {
    [
        ("IMAGE", image.as_os_str()),
        ("OBJECTS", objects.as_os_str()),
    ]
}

/// A small tree (external and inline files) built by root into `dir` as
/// `image.cfs` and `objects/`, readable by all.
fn small_image(dir: &Path) -> (PathBuf, PathBuf) {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("ext1"), vec![7u8; 300_000]).unwrap();
    std::fs::write(
        src.join("d/ext2"),
        (0..70_000u32).map(|i| i as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(src.join("inline"), b"inline\n").unwrap();
    let (image, objects, _) = crate::support::build(dir, &src);
    cfs_testkit::command::run_ok(std::process::Command::new("chmod").args([
        cfs_testkit::os("-R"),
        cfs_testkit::os("a+rX"),
        dir.as_os_str(),
    ]));
    (image, objects)
}

/// The test user's uid and gid.
fn test_user_ids() -> (u32, u32) {
    let id = |flag| {
        let o =
            cfs_testkit::command::run_ok(std::process::Command::new("id").args([flag, TEST_USER]));
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse::<u32>()
            .unwrap()
    };
    (id("-u"), id("-g"))
}

/// Runs `f` on a thread that is the test user (uid, gid, groups; no
/// capabilities): a client the service identifies as that user.
fn as_test_user<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use rustix::process::{Gid, Uid};
    let (uid, gid) = test_user_ids();
    std::thread::scope(|s| {
        s.spawn(move || {
            let g = Gid::from_raw(gid);
            rustix::thread::set_thread_groups(&[g]).unwrap();
            rustix::thread::set_thread_res_gid(g, g, g).unwrap();
            let u = Uid::from_raw(uid);
            rustix::thread::set_thread_res_uid(u, u, u).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}
