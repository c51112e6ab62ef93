//! Mount-mode benchmarks (root only): the same image walked and read in all
//! three `cfs mount` modes, beside `fuse-overlayfs` (what rootless podman
//! uses today) over the same unpacked tree. Prints a markdown table.
//!
//! - **kernel**: `cfs mount --fuse=no` (erofs + overlayfs), walked as root;
//! - **fuse+overlay**: `cfs mount --fuse=yes` as root: the same code path as
//!   auto in a user namespace (FUSE server for metadata under an overlay with
//!   `userxattr`), measured from the initial namespace so caches can be dropped;
//! - **service**: the plain user `cfs-test`'s `cfs mount` answered by the
//!   mount service (`cfs mount-service` on a socket of the bench's own): a
//!   kernel erofs + overlayfs mount of the service's validated copy;
//! - **fuse**: standalone (`--fuse=yes`), mounted and walked by the plain user
//!   `cfs-test` (fusermount3, no passthrough: what a user gets without the
//!   service);
//! - **fuse-overlayfs**: `fuse-overlayfs -o lowerdir=TREE`, walked as root.
//!
//! Walk: `find -printf '%s'` (readdir + lstat of every entry). Read: `cat`
//! of every regular file. Each cold (after `drop_caches`) and warm. Tree:
//! `/usr/share` or the first argument. Uses `../target/release/cfs`.

use cfs_bench::{cfs, drop_caches, run};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// `sh -c script` as root or as the plain user, timed.
fn timed(user: bool, script: &str) -> Duration {
    let mut cmd = if user {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid",
            "cfs-test",
            "--regid",
            "cfs-test",
            "--init-groups",
            "sh",
            "-c",
            script,
        ]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    };
    let t = Instant::now();
    run(&mut cmd);
    t.elapsed()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Median of `n` runs of `f`.
fn median(n: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut v: Vec<Duration> = (0..n).map(|_| f()).collect();
    v.sort();
    v[n / 2]
}

fn main() {
    let tree = PathBuf::from(std::env::args().nth(1).unwrap_or("/usr/share".into()));
    let work = tempfile_dir();
    let (image, objects) = (work.join("image.cfs"), work.join("objects"));
    let t = Instant::now();
    run(Command::new(cfs())
        .args(["mkfs", "--hardlinks", "--digest-store"])
        .arg(&objects)
        .arg(&tree)
        .arg(&image));
    eprintln!("image of {} built in {:?}", tree.display(), t.elapsed());
    let _ = Command::new("chmod").arg("0666").arg("/dev/fuse").status();
    let _ = Command::new("useradd").args(["-m", "cfs-test"]).status();
    run(Command::new("chmod").arg("-R").arg("a+rX").arg(&work));
    let mnt = work.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    run(Command::new("chown").arg("cfs-test").arg(&mnt));
    let m = mnt.display().to_string();
    let walk = format!("find {m} -printf '%s\\n' > /dev/null");
    let read = format!("find {m} -type f -print0 | xargs -0 -r cat > /dev/null");
    let mount_args = format!("--basedir {} {} {m}", objects.display(), image.display());
    let cfs = cfs().display().to_string();
    let service_dir = work.join("service");
    std::fs::create_dir(&service_dir).unwrap();
    let socket = service_dir.join("mount.sock");
    let service = Command::new(&cfs)
        .arg("mount-service")
        .arg("--socket")
        .arg(&socket)
        .arg("--cache")
        .arg(service_dir.join("cache"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(work.join("service.log")).unwrap())
        .spawn()
        .expect("cfs mount-service");
    let service = KillOnDrop(service);
    let start = Instant::now();
    while !socket.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no service socket"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let service_env = format!("CFS_MOUNT_SERVICE={}", socket.display());
    let modes: [(&str, bool, String, String); 5] = [
        (
            "kernel",
            false,
            format!("{cfs} mount --fuse=no {mount_args}"),
            format!("{cfs} unmount {m}"),
        ),
        (
            "fuse+overlay",
            false,
            format!("{cfs} mount --fuse=yes {mount_args}"),
            format!("{cfs} unmount {m}"),
        ),
        (
            "service (plain user)",
            true,
            format!("{service_env} {cfs} mount --fuse=no {mount_args}"),
            format!("{service_env} {cfs} unmount {m}"),
        ),
        (
            "fuse (plain user)",
            true,
            format!("{cfs} mount --fuse=yes {mount_args}"),
            format!("{cfs} unmount {m}"),
        ),
        (
            "fuse-overlayfs",
            false,
            format!("fuse-overlayfs -o lowerdir={} {m}", tree.display()),
            format!("umount {m}"),
        ),
    ];
    println!("| mode | mount | walk cold | walk warm | read-all cold | read-all warm |");
    println!("|---|---|---|---|---|---|");
    for (name, user, mount, unmount) in &modes {
        let tool = mount.split_whitespace().next().unwrap_or_default();
        if !tool.starts_with('/') && !tool.contains('=') && which(tool).is_none() {
            println!("| {name} | ({tool} not installed) | | | | |");
            continue;
        }
        drop_caches();
        let mounted = timed(*user, mount);
        let cold = |s: &str| {
            median(3, || {
                drop_caches();
                timed(*user, s)
            })
        };
        let warm = |s: &str| {
            timed(*user, s);
            median(3, || timed(*user, s))
        };
        let (wc, ww, rc, rw) = (cold(&walk), warm(&walk), cold(&read), warm(&read));
        timed(*user, unmount);
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            ms(mounted),
            ms(wc),
            ms(ww),
            ms(rc),
            ms(rw)
        );
    }
    drop(service);
    let _ = std::fs::remove_dir_all(&work);
}

/// Where `tool` is on `$PATH`.
fn which(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(tool))
        .find(|p| p.exists())
}

/// A child killed when this goes, the bench panicking included.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tempfile_dir() -> PathBuf {
    let p = std::env::temp_dir().join(format!("cfs-bench-modes-{}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    p
}
