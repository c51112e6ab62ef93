//! Random trees the way upstream composefs's `tests/gendir` makes them (the
//! generator its FUSE round trip uses), written anew here: 30 to 50
//! directories placed at random under the root and each other, each with 0
//! to 25 entries (1 in 20 directories is large), named `adjective_nounN`;
//! entries are regular files (70%: small, 1 in 20 large, 1 in 20 a copy
//! of an earlier file), symlinks (15%), fifos, device nodes (as root) and
//! whiteouts (5% each); files and directories get 0 to 2 `user.` xattrs and
//! one of gendir's modes.

use cfs_testkit::walk::{mknod, set_xattr};
use cfs_testkit::Rng;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const ADJECTIVES: &[&str] = &[
    "adorable", "brave", "calm", "dizzy", "eager", "fancy", "gentle", "happy", "itchy", "jolly",
    "kind", "lazy", "misty", "nutty", "odd", "proud", "quaint", "rich", "shy", "tame", "ugly",
    "vast", "wild", "zany",
];
const NOUNS: &[&str] = &[
    "apple",
    "bear",
    "cabin",
    "dolphin",
    "egg",
    "fox",
    "guitar",
    "hat",
    "jacket",
    "koala",
    "lamp",
    "mango",
    "nose",
    "ocean",
    "panda",
    "radio",
    "sofa",
    "tiger",
    "umbrella",
    "violin",
    "whale",
    "xylophone",
    "zebra",
];

/// The generator's state: its random numbers and the files made so far
/// (copied from now and then).
pub struct GenDir {
    rng: Rng,
    files: Vec<PathBuf>,
    /// Device nodes need root.
    privileged: bool,
    /// The largest "large" file (gendir's is 4 MiB).
    large: usize,
}

impl GenDir {
    /// A generator for `seed`.
    pub fn new(seed: u64, privileged: bool, large: usize) -> GenDir {
        GenDir {
            rng: Rng::seeded(seed),
            files: Vec::new(),
            privileged,
            large,
        }
    }

    fn name(&mut self) -> String {
        format!(
            "{}_{}{}",
            self.rng.pick(ADJECTIVES),
            self.rng.pick(NOUNS),
            self.rng.range(1, 1000)
        )
    }

    fn xattrs(&mut self, path: &Path) {
        for _ in 0..self.rng.below(3) {
            let name = format!("user.{}{}", self.rng.pick(NOUNS), self.rng.range(1, 10));
            let value = format!("{}{}", self.rng.pick(ADJECTIVES), self.rng.range(1, 10));
            set_xattr(path, &name, value.as_bytes());
        }
    }

    /// Makes the tree at `root` (which must not exist).
    pub fn generate(&mut self, root: &Path) {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for _ in 0..self.rng.range(30, 50) {
            let parent = if dirs.is_empty() || self.rng.below(dirs.len() + 3) < 3 {
                root.to_path_buf()
            } else {
                self.rng.pick(&dirs).clone()
            };
            let name = self.name();
            dirs.push(parent.join(name));
        }
        dirs.sort();
        dirs.dedup();
        self.dir(root, &dirs);
        for d in dirs.clone() {
            self.dir(&d, &dirs);
        }
    }

    fn dir(&mut self, path: &Path, dirs: &[PathBuf]) {
        std::fs::create_dir(path).unwrap();
        self.xattrs(path);
        let n = if self.rng.percent(5) {
            self.rng.below(400)
        } else {
            self.rng.below(25)
        };
        let mut names: Vec<String> = (0..n).map(|_| self.name()).collect();
        names.sort();
        names.dedup();
        for name in names {
            let child = path.join(name);
            if !dirs.contains(&child) {
                self.entry(&child);
            }
        }
        let mode = *self.rng.pick(&[0o777, 0o755, 0o750, 0o700]);
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn entry(&mut self, path: &Path) {
        use rustix::fs::FileType as T;
        let mode = *self.rng.pick(&[0o644, 0o666, 0o755, 0o777]);
        match self.rng.below(100) {
            0..70 => self.file(path, mode),
            70..85 => {
                let target = self.name();
                std::os::unix::fs::symlink(target, path).unwrap();
            }
            85..90 => mknod(path, T::Fifo, mode, 0),
            90..95 if self.privileged => {
                let kind = *self.rng.pick(&[T::CharacterDevice, T::BlockDevice]);
                let dev = rustix::fs::makedev(
                    self.rng.range(1, 255) as u32,
                    self.rng.range(1, 255) as u32,
                );
                mknod(path, kind, mode, dev);
            }
            90..95 => {}
            _ => mknod(path, T::CharacterDevice, mode, 0),
        }
    }

    fn file(&mut self, path: &Path, mode: u32) {
        if !self.files.is_empty() && self.rng.percent(5) {
            let from = self.rng.pick(&self.files).clone();
            std::fs::copy(from, path).unwrap();
        } else {
            let size = if self.rng.percent(5) {
                self.rng.below(self.large)
            } else {
                self.rng.below(256)
            };
            std::fs::write(path, self.rng.bytes(size)).unwrap();
            self.files.push(path.to_path_buf());
            self.xattrs(path);
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}
