//! Running `cfs --repo REPO …` and checking a repository, from the
//! repository, OCI and fault tests: generated trees, the expected image id,
//! objects re-hashed against their names, fsck.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

const CFS: &str = env!("CARGO_BIN_EXE_cfs");

/// `cfs --repo REPO ARGS…`, with `CFS_REPO` cleared.
pub fn cfs(repo: &Path, args: &[&dyn AsRef<OsStr>]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cfs"));
    c.arg("--repo").arg(repo);
    for a in args {
        c.arg(a.as_ref());
    }
    c.env_remove("CFS_REPO").output().unwrap()
}

/// Stdout of a command that must succeed.
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Stderr of a command that must fail.
pub fn err(o: Output) -> String {
    assert!(
        !o.status.success(),
        "unexpected success: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A small deterministic PRNG (xorshift), seeded from the clock unless given.
pub struct Rng(pub u64);
impl Rng {
    /// Seeded from `CFS_TEST_SEED`, else the clock; the seed is printed.
    pub fn new() -> Rng {
        let seed = std::env::var("CFS_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("seed {seed} (CFS_TEST_SEED)");
        Rng(seed)
    }
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A tree of `files` files in nested directories: sizes from 0 to `max`
/// bytes, every seventh file a duplicate, some hard links and symlinks.
pub fn generate(root: &Path, files: usize, max: usize, salt: u8) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(salt));
    for i in 0..files {
        let dir = root.join(format!("d{}/e{}", i % 17, i % 5));
        std::fs::create_dir_all(&dir).unwrap();
        let size = match i % 10 {
            0 => 0,
            1 | 2 => rng.below(65) as usize,
            3 => max,
            _ => rng.below(max as u64) as usize,
        };
        let seed = if i % 7 == 0 {
            7
        } else {
            i as u64 * 31 + u64::from(salt)
        };
        let data: Vec<u8> = (0..size)
            .map(|j| ((j as u64).wrapping_mul(seed) >> 3) as u8)
            .collect();
        let p = dir.join(format!("f{i}"));
        std::fs::write(&p, data).unwrap();
        if i % 50 == 1 {
            std::fs::hard_link(&p, dir.join(format!("hl{i}"))).unwrap();
        }
        if i % 40 == 2 {
            std::os::unix::fs::symlink(format!("f{i}"), dir.join(format!("sl{i}"))).unwrap();
        }
    }
}

/// The image id `mkcomposefs --hardlinks` computes for a directory.
pub fn expected_id(dir: &Path) -> String {
    let o = Command::new(CFS)
        .args(["mkfs", "--hardlinks", "--print-digest-only"])
        .arg(dir)
        .output()
        .unwrap();
    ok(o).trim().to_owned()
}

/// Every object's content hashes to its name (checked with `cfs digest`, not fsck).
pub fn objects_match_names(repo: &Path) {
    let mut files = Vec::new();
    for d in std::fs::read_dir(repo.join("objects")).unwrap() {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            files.push(f.unwrap().path());
        }
    }
    for chunk in files.chunks(500) {
        let out = ok(Command::new(CFS)
            .arg("digest")
            .args(chunk)
            .output()
            .unwrap());
        for line in out.lines() {
            let (digest, path) = line.split_once("  ").unwrap();
            let p = Path::new(path);
            let name = format!(
                "{}{}",
                p.parent().unwrap().file_name().unwrap().to_str().unwrap(),
                p.file_name().unwrap().to_str().unwrap()
            );
            assert_eq!(digest, name, "{path}");
        }
    }
}

/// `cfs fsck --json`: whether it found the repository clean, and the report.
pub fn fsck_json(repo: &Path) -> (bool, String) {
    let o = cfs(repo, &[&"fsck", &"--json"]);
    (o.status.success(), String::from_utf8(o.stdout).unwrap())
}
