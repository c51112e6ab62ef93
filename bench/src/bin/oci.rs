//! OCI benchmark: `cfs oci pull docker://…` (fetch, check, import, merge,
//! image) beside `skopeo copy docker://… oci:DIR` (fetch and check only) and
//! `umoci unpack` of that layout (unpack only), for the same image served by
//! a `docker-registry` on loopback. Prints a markdown table.
//!
//! `cargo run --release --bin oci [ROOTFS.tar]`, as root, with the release
//! `cfs` built in the main workspace (or `CFS_BIN=…`). The default image is a
//! debootstrapped Debian minbase root cached as
//! `/var/cache/cfs-test/minbase.tar` (built by `debootstrap --variant=minbase
//! bookworm` when missing); it is pushed as one gzip layer with skopeo.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn run(what: &str, cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let o = cmd.output().expect(what);
    let d = t.elapsed();
    assert!(
        o.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!("{what}: {:.2}s", d.as_secs_f64());
    d
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let tar = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/cfs-test/minbase.tar"));
    if !tar.exists() {
        let root = Path::new("/var/cache/cfs-test/rootfs.tmp");
        std::fs::create_dir_all("/var/cache/cfs-test").unwrap();
        run(
            "debootstrap",
            Command::new("debootstrap")
                .args(["--variant=minbase", "bookworm"])
                .arg(root)
                .arg("http://deb.debian.org/debian"),
        );
        run(
            "tar",
            Command::new("tar")
                .arg("-C")
                .arg(root)
                .args(["--numeric-owner", "--xattrs", "-cf"])
                .arg(&tar)
                .arg("."),
        );
    }
    let cfs = std::env::var("CFS_BIN").unwrap_or_else(|_| "../target/release/cfs".into());
    let work = PathBuf::from(
        std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp/cfs-bench-oci".into()),
    );
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    // A one-layer image of the tar, via umoci (new + raw add-layer).
    let layout = work.join("layout");
    run(
        "umoci init",
        Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout),
    );
    let img = format!("{}:bench", layout.display());
    run(
        "umoci new",
        Command::new("umoci").args(["new", "--image", &img]),
    );
    run(
        "umoci raw add-layer",
        Command::new("umoci")
            .args(["raw", "add-layer", "--image", &img])
            .arg(&tar),
    );
    // The registry.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = work.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            work.join("registry").display()
        ),
    )
    .unwrap();
    let mut reg = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(100));
    }
    let remote = format!("docker://127.0.0.1:{port}/bench/minbase:latest");
    run(
        "skopeo push",
        Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{img}"))
            .arg(&remote),
    );
    let size = std::fs::metadata(&tar).unwrap().len();
    let (mut pull, mut copy, mut unpack, mut repull) = (vec![], vec![], vec![], vec![]);
    for i in 0..3 {
        let repo = work.join(format!("repo{i}"));
        pull.push(run(
            "cfs oci pull",
            Command::new(&cfs).arg("--repo").arg(&repo).args([
                "oci",
                "pull",
                "--tls-verify=false",
                &remote,
                "minbase",
            ]),
        ));
        repull.push(run(
            "cfs oci pull (again)",
            Command::new(&cfs).arg("--repo").arg(&repo).args([
                "oci",
                "pull",
                "--tls-verify=false",
                &remote,
                "minbase2",
            ]),
        ));
        let dir = work.join(format!("copy{i}"));
        copy.push(run(
            "skopeo copy",
            Command::new("skopeo")
                .args(["copy", "--quiet", "--src-tls-verify=false", &remote])
                .arg(format!("oci:{}:x", dir.display())),
        ));
        let bundle = work.join(format!("bundle{i}"));
        unpack.push(run(
            "umoci unpack",
            Command::new("umoci")
                .args(["unpack", "--image", &format!("{}:x", dir.display())])
                .arg(&bundle),
        ));
    }
    let _ = reg.kill();
    let _ = reg.wait();
    let mib = size as f64 / (1 << 20) as f64;
    let row = |name: &str, d: Duration| {
        println!(
            "| {name} | {:.2} s | {:.0} MiB/s |",
            d.as_secs_f64(),
            mib / d.as_secs_f64()
        )
    };
    println!(
        "image: {} ({mib:.0} MiB uncompressed tar), median of 3\n",
        tar.display()
    );
    println!("| job | time | uncompressed rate |\n|---|---|---|");
    let (p, c, u) = (median(pull), median(copy), median(unpack));
    row("cfs oci pull (fetch + check + import + image)", p);
    row("cfs oci pull again (all layers present)", median(repull));
    row("skopeo copy to an OCI dir (fetch + check)", c);
    row("umoci unpack of that dir", u);
    row("skopeo copy + umoci unpack", c + u);
    println!(
        "\ncfs pull / (skopeo copy + umoci unpack) = {:.2}",
        p.as_secs_f64() / (c + u).as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&work);
}
